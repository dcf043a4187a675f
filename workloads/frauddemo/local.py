"""The local supervisor behind `frauddemo up`: the same processes the pods run, on one machine.

It starts the stores (embedded servers), one syncer per directed link, the detection service, a
legitimate POS per store and a hacked POS at the second store, restarts any child that dies (with backoff, logged), describes every process in
`<data-dir>/stack.json`, and on Ctrl-C, SIGTERM or the end of `--duration` stops them all.
Children die with it even when it is killed -9 (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import acl
from .config import ConfigError, check_name
from .procs import child_preexec
from .secretfiles import write_secret
from .servers import MALLOC_ENV, ServerSpec, find_server, free_port, server_env
from .store import Store

log = logging.getLogger("frauddemo.up")

BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 10.0
HEALTHY_AFTER_S = 10.0  # a child that ran this long starts its next backoff from the minimum
STOP_GRACE_S = 5.0
LOCAL_DETECTOR = "local-detector"  # the detector's consumer name in the stores' `detectors` group


@dataclasses.dataclass
class Child:
    name: str
    role: str
    argv: list[str]
    env: dict
    url: str | None = None
    password_file: str | None = None  # a store's admin password (the `default` user)
    users: dict | None = None  # a store's password file per client role (acl.ROLES)
    log_file: Path | None = None
    to_terminal: bool = False
    proc: subprocess.Popen | None = None
    started: float = 0.0
    restarts: int = 0
    backoff: float = BACKOFF_MIN_S
    due: float | None = None  # when a crashed child is to be started again
    retired: bool = False  # stopped on purpose: not restarted

    def start(self) -> None:
        out = None if self.to_terminal else open(self.log_file, "ab")
        try:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT if out else None,
                preexec_fn=child_preexec,
            )
        finally:
            if out:
                out.close()
        self.started = time.monotonic()
        self.due = None

    def describe(self) -> dict:
        return {
            "name": self.name,
            "role": self.role,
            "pid": self.proc.pid if self.proc else None,
            "url": self.url,
            "password_file": self.password_file,
            "users": self.users,
            "restarts": self.restarts,
            "log": str(self.log_file) if self.log_file else None,
        }


DEFAULT_RETENTION = 100_000  # as the operator's replication.retention default
LOCK_FILE = "lock"  # in the data dir: held (flock) by the one supervisor that runs it
READY_TIMEOUT_S = 60.0


def default_data_dir() -> Path:
    """Where `frauddemo up` keeps its stores, logs and stack.json unless told otherwise, reused
    across runs: $FRAUDDEMO_DATA_DIR, else $XDG_STATE_HOME/frauddemo, else ~/.local/state/frauddemo."""
    if os.environ.get("FRAUDDEMO_DATA_DIR"):
        return Path(os.environ["FRAUDDEMO_DATA_DIR"]).expanduser()
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "frauddemo"


class DataDirLock:
    """An exclusive flock on `<data_dir>/lock` for as long as a supervisor runs that data dir: a
    second one on the same dir is refused before it touches the stores, the metrics or stack.json.
    The kernel drops the lock when the process dies, however it dies."""

    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.read(fd, 64).decode(errors="replace").strip()
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise ConfigError(f"cannot lock the data dir {self.path.parent}: {e.strerror}") from None
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise ConfigError(
                f"another frauddemo is already running on the data dir {self.path.parent}{who}: "
                "stop it first (Ctrl-C in its terminal) or give another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def held(data_dir: Path) -> bool:
    """True while a supervisor runs `data_dir` (holds its lock)."""
    try:
        fd = os.open(Path(data_dir) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def running_stack(data_dir: Path) -> dict | None:
    """stack.json of the supervisor running `data_dir` now; None when none runs it."""
    if not held(data_dir):
        return None
    try:
        return json.loads((Path(data_dir) / "stack.json").read_text())
    except (OSError, ValueError):
        return None


def check_port(host: str, port: int) -> None:
    """Refuse a port another program listens on, before anything starts (the detector would
    crash-loop on it while the dashboard's URL served someone else's app)."""
    if not 0 < port < 65536:
        raise ConfigError(f"--port must be between 1 and 65535, got {port}")
    if _bindable(host, port):
        return
    other = next((p for p in range(port + 1, min(port + 50, 65536)) if _bindable(host, p)), None)
    hint = f": try --port {other} or make demo PORT={other}" if other else ": give another --port"
    raise ConfigError(f"port {port} is in use{hint}")


class Supervisor:
    def __init__(
        self,
        stores: list[str],
        data_dir: str | None = None,
        port: int = 8080,
        redis_server: str | None = None,
        headless: bool = False,
        retention: int | None = None,
        rate: float = 2.0,
        host: str = "127.0.0.1",
        hacked_rate: float = 0.2,
        backoff: tuple[float, float] = (BACKOFF_MIN_S, BACKOFF_MAX_S),
    ):
        if len(stores) < 2:
            raise ConfigError("active-active needs at least two stores (--stores a,b)")
        if len(set(stores)) != len(stores):
            raise ConfigError(f"store names repeat: {','.join(stores)}")
        self.store_names = [check_name(s) for s in stores]
        self.own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="frauddemo-")).resolve()
        self.port, self.host, self.headless = port, host, headless
        self.binary = find_server(redis_server)
        # op-log entries each store keeps: the operator's default (a store's own library default, a
        # million ~330-byte entries, would hold ~330 MB of log); a link further behind resyncs in full
        self.retention = retention if retention is not None else DEFAULT_RETENTION
        self.rate, self.hacked_rate = rate, hacked_rate
        self.backoff_min, self.backoff_max = backoff  # `frauddemo chaos` restarts faster than a demo
        self.children: list[Child] = []
        self.store_env: dict[str, dict[str, str]] = {}  # a store's extra environment (restart_store)
        self.stopping = False
        self.lock = DataDirLock(self.data_dir)

    # -- building the stack ---------------------------------------------------------------------
    def _env(self) -> dict:
        env = dict(os.environ)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(self.metrics_dir)
        env["FRAUDDEMO_TERMINAL_KEY_FILE"] = str(self.terminal_key_file)
        env.pop("FRAUDDEMO_TERMINAL_KEY", None)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _server_env(self, name: str) -> dict:
        """Store `name`'s server environment: the stack's, its extra (restart_store), its allocator
        preloaded unless the extra says FRAUDDEMO_SERVER_MALLOC=libc."""
        env = {**self._env(), **self.store_env.get(name, {})}
        return env if env.get(MALLOC_ENV) == "libc" else server_env(self.binary, env)

    def _cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "frauddemo", *args]

    def preflight(self) -> None:
        """Before anything starts: the data dir is ours alone (locked) and the service's port is free;
        each failure is one line saying what to do."""
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(self.data_dir, 0o700)
        except OSError as e:
            raise ConfigError(f"cannot use the data dir {self.data_dir}: {e.strerror}") from None
        if self.lock.fd is None:
            self.lock.acquire()
        try:
            check_port(self.host, self.port)
        except ConfigError:
            self.lock.release()
            raise

    def plan(self) -> None:
        self.preflight()
        self.logs_dir = self.data_dir / "logs"
        self.logs_dir.mkdir(exist_ok=True)
        self.metrics_dir = self.data_dir / "metrics"
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        self.metrics_dir.mkdir()
        self.terminal_key_file = self.data_dir / "terminal.key"
        if not self.terminal_key_file.exists():  # the tills' provisioning secret, kept across runs
            write_secret(self.terminal_key_file, secrets.token_hex(32))
        env = self._env()
        self.servers = {
            n: ServerSpec.create(n, self.data_dir / "stores", self.binary, port=self._known_port(n))
            for n in self.store_names
        }
        for n, spec in self.servers.items():
            self.children.append(
                Child(
                    f"store-{n}",
                    "store",
                    spec.argv(),
                    self._server_env(n),
                    url=spec.url,
                    password_file=str(spec.password_file),
                    users={r: str(spec.role_password_file(r)) for r in acl.CLIENT_ROLES},
                    log_file=self.logs_dir / f"store-{n}.log",
                )
            )
        for s in self.store_names:
            for t in self.store_names:
                if s == t:
                    continue
                src, dst = self.servers[s], self.servers[t]
                argv = self._cmd(
                    "syncer",
                    "--source",
                    src.role_url("syncer"),
                    "--target",
                    dst.role_url("syncer"),
                    "--source-name",
                    s,
                    "--target-name",
                    t,
                    "--source-password-file",
                    str(src.role_password_file("syncer")),
                    "--target-password-file",
                    str(dst.role_password_file("syncer")),
                )
                self.children.append(
                    Child(f"syncer-{s}-{t}", "syncer", argv, env, log_file=self.logs_dir / f"syncer-{s}-{t}.log")
                )
        store_args = []
        for n, spec in self.servers.items():
            store_args += [
                "--store",
                f"{n}={spec.role_url('detector')}",
                "--password-file",
                f"{n}={spec.role_password_file('detector')}",
            ]
        self.service_url = f"http://{self.host}:{self.port}"
        # One consumer name across restarts: a restarted detector takes up the events its killed
        # predecessor left unacknowledged at once, rather than after the group's 30 s claim delay.
        self.children.append(
            Child(
                "detector",
                "detector",
                self._cmd(
                    "detector", *store_args, "--host", self.host, "--port", str(self.port), "--name", LOCAL_DETECTOR
                ),
                env,
                url=self.service_url,
                log_file=self.logs_dir / "detector.log",
            )
        )
        for n, spec in self.servers.items():
            if self.rate > 0:
                self.children.append(
                    Child(
                        f"pos-{n}",
                        "pos",
                        self._cmd(
                            "pos",
                            "--store",
                            n,
                            "--url",
                            spec.role_url("pos"),
                            "--password-file",
                            str(spec.role_password_file("pos")),
                            "--rate",
                            str(self.rate),
                        ),
                        env,
                        log_file=self.logs_dir / f"pos-{n}.log",
                    )
                )
        if self.hacked_rate > 0:
            first, second = self.store_names[0], self.store_names[1]
            spec, peer = self.servers[second], self.servers[first]
            self.children.append(
                Child(
                    "hacked-pos",
                    "hacked-pos",
                    self._cmd(
                        "hacked-pos",
                        "--store",
                        second,
                        "--url",
                        spec.role_url("pos"),
                        "--password-file",
                        str(spec.role_password_file("pos")),
                        "--rate",
                        str(self.hacked_rate),
                        "--peer",
                        f"{first}={peer.role_url('pos')}",
                        "--peer-password-file",
                        f"{first}={peer.role_password_file('pos')}",
                    ),
                    env,
                    log_file=self.logs_dir / "hacked-pos.log",
                    to_terminal=not self.headless,
                )
            )

    def _known_port(self, name: str) -> int:
        """Reuse a store's port from an earlier run of the same data dir (its AOF lives there)."""
        try:
            p = read_stack(self.data_dir).get(f"store-{name}")
            if p and p["url"]:
                port = int(p["url"].rsplit(":", 1)[1].split("/")[0])
                return port if _port_free(port) else free_port()
        except (OSError, ValueError, KeyError):
            pass
        return free_port()

    # -- running --------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the stores (each waited for), then everything else; a stop asked for meanwhile
        (Ctrl-C, SIGTERM: `stopping`) starts nothing more."""
        self.plan()
        for c in self.children:
            if c.role != "store" or self.stopping:
                continue
            c.start()
            spec = self.servers[c.name.removeprefix("store-")]
            spec.wait_ready(c.proc)
            st = Store.connect(spec.url, spec.password, replica=spec.name, retention=self.retention)
            st.close()
        for c in self.children:
            if c.role != "store" and not self.stopping:
                c.start()
        self.write_stack()
        if not self.stopping:
            log.info("every process started; the service will be at %s", self.service_url)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the stack replicates: the service answers, every store is up and every link is up
        (`stack_ready`; /readyz alone says only that the service can serve)."""
        deadline = time.monotonic() + timeout
        while True:
            if stack_ready(self.service_url):
                return
            if time.monotonic() > deadline:
                raise ConfigError(f"the stack was not ready within {timeout:g} s; logs: {self.logs_dir}")
            self.poll()
            time.sleep(0.2)

    def cleanup(self) -> None:
        """Remove the data directory when it was a temporary one made for this run."""
        if self.own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def write_stack(self) -> None:
        doc = {
            "data_dir": str(self.data_dir),
            "service_url": self.service_url,
            "supervisor_pid": os.getpid(),
            "stores": self.store_names,
            "processes": [c.describe() for c in self.children],
        }
        tmp = self.data_dir / "stack.json.tmp"
        tmp.write_text(json.dumps(doc, indent=2))
        tmp.replace(self.data_dir / "stack.json")

    def poll(self) -> None:
        """Restart children that died, with exponential backoff; log every death."""
        changed = False
        now = time.monotonic()
        for c in self.children:
            if c.proc is None or self.stopping or c.retired:
                continue
            code = c.proc.poll()
            if code is None:
                if c.due is None and now - c.started > HEALTHY_AFTER_S:
                    c.backoff = self.backoff_min
                continue
            if c.due is None:
                _mark_dead(c.proc.pid)
                c.backoff = min(max(c.backoff, self.backoff_min), self.backoff_max)
                c.due = now + c.backoff
                log.warning("%s (pid %d) exited with code %s; restarting in %.1fs", c.name, c.proc.pid, code, c.backoff)
                c.backoff = min(c.backoff * 2, self.backoff_max)
            elif now >= c.due:
                c.restarts += 1
                c.start()
                log.warning("%s restarted as pid %d (restart %d)", c.name, c.proc.pid, c.restarts)
                changed = True
        if changed:
            self.write_stack()

    def run(self, duration: float | None = None) -> None:
        deadline = time.monotonic() + duration if duration else None
        while not self.stopping:
            if deadline and time.monotonic() >= deadline:
                log.info("duration reached")
                break
            self.poll()
            time.sleep(0.2)

    def restart_store(self, name: str, env: dict[str, str] | None = None) -> int:
        """Stop store `name`'s server (SIGTERM: a clean shutdown, its data kept in its AOF) for poll() to
        start it again, on the same data dir and port, with `env` over the stack's environment from now
        on (None: the stack's own again). Returns the pid stopped."""
        (child,) = [c for c in self.children if c.name == f"store-{name}"]
        if env:
            self.store_env[name] = dict(env)
        else:
            self.store_env.pop(name, None)
        child.env = self._server_env(name)
        if child.proc is None:
            raise ConfigError(f"store {name} was never started")
        child.proc.terminate()
        return child.proc.pid

    def retire(self, roles: tuple[str, ...]) -> None:
        """Stop the children of these roles for good (SIGTERM, then SIGKILL after the grace)."""
        chosen = [c for c in self.children if c.role in roles]
        for c in chosen:
            c.retired = True
        _terminate(chosen)

    def stop(self) -> None:
        """Stop everything: clients first, stores last; SIGKILL whatever ignores SIGTERM."""
        self.stopping = True
        for group in (("pos", "hacked-pos", "detector", "syncer"), ("store",)):
            _terminate([c for c in self.children if c.role in group])
        if self.lock.fd is not None:  # stack.json is ours to write only while we hold the data dir
            self.write_stack()
            self.lock.release()
        if any(c.proc for c in self.children):
            log.info("stack stopped")


def stack_ready(service_url: str, timeout: float = 2.0) -> bool:
    """The service answers /readyz, and its /api/status has every store up and every link up or
    partitioned on purpose."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(service_url + "/readyz", timeout=timeout) as r:
            if r.status != 200:
                return False
        with urllib.request.urlopen(service_url + "/api/status", timeout=timeout) as r:
            st = json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return (
        all(s.get("up") for s in st["stores"].values())
        and all(link["state"] in ("up", "partitioned") for link in st["links"])
        and bool(st["links"])
    )


def read_stack(data_dir: Path) -> dict[str, dict]:
    """The processes of `<data_dir>/stack.json`, by name."""
    return {p["name"]: p for p in json.loads((Path(data_dir) / "stack.json").read_text())["processes"]}


def _terminate(children: list[Child]) -> None:
    """SIGTERM the running ones, then SIGKILL whatever has not exited after the grace."""
    procs = [c.proc for c in children if c.proc and c.proc.poll() is None]
    for p in procs:
        p.terminate()
    end = time.monotonic() + STOP_GRACE_S
    for p in procs:
        try:
            p.wait(max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _bindable(host: str, port: int) -> bool:
    """Whether a server could listen on host:port now (SO_REUSEADDR, as uvicorn binds)."""
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _mark_dead(pid: int) -> None:
    try:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
    except Exception:  # only gauges of dead processes would linger
        pass


def serving(url: str, timeout: float = 1.0) -> bool:
    """The service at `url` answers /readyz with 200."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/readyz", timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_serving(sup: Supervisor, timeout: float = READY_TIMEOUT_S) -> bool:
    """Until the detection service answers /readyz (True), or a stop is asked for (False). The
    service exiting before it ever answered, or no answer in time, is an error naming its log."""
    (det,) = [c for c in sup.children if c.role == "detector"]
    deadline = time.monotonic() + timeout
    while not sup.stopping:
        if serving(sup.service_url):
            return True
        code = det.proc.poll() if det.proc else None
        if code is not None:
            raise ConfigError(
                f"the detection service exited with code {code} before it answered"
                f"{_last_line(det.log_file)}; its log: {det.log_file}"
            )
        if time.monotonic() > deadline:
            raise ConfigError(
                f"the detection service did not answer {sup.service_url}/readyz within "
                f"{timeout:g} s; its log: {det.log_file}"
            )
        sup.poll()
        time.sleep(0.1)
    return False


def _last_line(path: Path | None) -> str:
    """': <the last line of the log>', or nothing."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except (OSError, TypeError):
        return ""
    return f": {lines[-1].strip()[:300]}" if lines else ""


def up(
    stores: list[str],
    data_dir: str | None,
    port: int,
    headless: bool,
    duration: float | None,
    redis_server: str | None,
    retention: int | None,
    rate: float,
    hacked_rate: float,
) -> int:
    """`frauddemo up`: preflight (the data dir locked, the port free), start, print the URL once the
    service answers, run until Ctrl-C, SIGTERM or `duration`. Nothing is printed as up after a stop
    was asked for. The data dir defaults to default_data_dir(), kept across runs."""
    data = Path(data_dir).expanduser() if data_dir else default_data_dir()
    sup = Supervisor(stores, str(data), port, redis_server, headless, retention, rate, hacked_rate=hacked_rate)

    def on_signal(signum, frame):
        sup.stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        sup.start()
        if not sup.stopping and wait_serving(sup) and not sup.stopping:
            url = sup.service_url
            print(
                f"FraudDemo is up: {url}/  (API description {url}/openapi.json, live events {url}/api/events, "
                f"health {url}/readyz, metrics {url}/metrics)",
                flush=True,
            )
            print(
                f"data: {sup.data_dir} (kept for the next run)  stack: {sup.data_dir / 'stack.json'}  "
                f"logs: {sup.logs_dir}",
                flush=True,
            )
            print(
                "Try: frauddemo scenario fraud | frauddemo status | frauddemo link partition. "
                "Ctrl-C stops every process.",
                flush=True,
            )
            sup.run(duration)
    finally:
        sup.stop()
    return 0
