"""The store agent, `frauddemo store-agent`: a container beside each store in Kubernetes (the operator
runs it). It keeps the function library loaded and applies the mounted ACL file with ACL LOAD whenever
it changes (a rotated password, a new role), without restarting the server.
"""

from __future__ import annotations

import logging
from pathlib import Path

from . import acl
from .secretfiles import read_secret

log = logging.getLogger("frauddemo.store_agent")


def agent_step(admin, acl_file: Path, seen: bytes | None) -> bytes | None:
    """Load the function library if missing or stale, and apply the ACL file when it changed since
    `seen` (its content last applied). Returns the content now applied."""
    from .store import load_library

    load_library(admin)
    content = acl_file.read_bytes()
    if content != seen and not password_hashes(content).get(acl.ADMIN):
        # an empty or truncated file would leave `default` without a password: the store open to all
        log.error("ACL file %s gives the admin user no password: not applied", acl_file)
        return seen
    if content != seen:
        acl.load(admin)
        log.info("ACL file %s applied (%d users)", acl_file, content.count(b"\nuser ") + 1)
        # ACL LOAD leaves open connections authenticated: end those a retired password may have opened
        # (their processes reconnect with the password they hold now).
        for user in retired(seen, content):
            n = admin.execute_command("CLIENT", "KILL", "USER", user)
            log.info("a password of user %s was retired: %s of its connections closed", user, n)
    return content


def password_hashes(content: bytes) -> dict[str, set[str]]:
    out = {}
    for line in content.decode(errors="replace").splitlines():
        parts = line.split()
        if len(parts) > 1 and parts[0] == "user":
            out[parts[1]] = {p[1:] for p in parts[2:] if p.startswith("#")}
    return out


def retired(before: bytes | None, after: bytes) -> list[str]:
    """Client users that lost a password between two ACL files (the admin is never cut off: the
    supervisor and this agent use it)."""
    if before is None:
        return []
    old, new = password_hashes(before), password_hashes(after)
    return sorted(u for u, hashes in old.items() if u != acl.ADMIN and hashes - new.get(u, set()))


def run_agent(url: str, admin_password_files: list[str], acl_file: str, stop, interval: float = 2.0) -> None:
    """Keep a store's functions loaded and its ACL in step with the mounted file. The admin's current
    password may be the new or the previous one during a rotation: each file is tried in turn."""
    import redis

    seen = None
    while not stop.is_set():
        try:
            for i, f in enumerate(admin_password_files):
                try:
                    pw = read_secret(f)
                except OSError:
                    continue
                admin = redis.Redis.from_url(url, password=pw, socket_timeout=5, socket_connect_timeout=2)
                try:
                    seen = agent_step(admin, Path(acl_file), seen)
                    break
                except redis.AuthenticationError:
                    if i == len(admin_password_files) - 1:
                        raise
                finally:
                    admin.close()
        except (redis.RedisError, OSError) as e:
            log.warning("store agent: %s; retrying", e)
            seen = None
        stop.wait(interval)


def add_commands(sub) -> None:
    """Register `frauddemo store-agent` on the CLI's subparsers."""
    sa = sub.add_parser(
        "store-agent",
        help="beside a store: keep its functions loaded and apply its ACL file "
        "when it changes (the operator runs it in each store pod)",
    )
    sa.add_argument("--url", required=True, help="the store, e.g. redis://127.0.0.1:6379")
    sa.add_argument(
        "--password-file", action="append", required=True, help="the admin's password file (several: tried in turn)"
    )
    sa.add_argument("--acl-file", required=True, help="the ACL file the server was configured with")
    sa.add_argument("--interval", type=float, default=2.0, help="seconds between checks")
    sa.set_defaults(fn=cmd_store_agent)


def cmd_store_agent(a) -> int:
    import signal
    import threading

    if a.interval <= 0:
        from .config import ConfigError

        raise ConfigError(f"--interval {a.interval}: give a positive number of seconds")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run_agent(a.url, a.password_file, a.acl_file, stop, a.interval)
    return 0
