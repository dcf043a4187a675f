"""Deleting every FraudDemo of some namespaces and waiting until they are gone, while the operator still
runs: the chart's pre-delete hook (`frauddemo delete-demos`).

kopf keeps a finalizer (handlers.FINALIZER) on every FraudDemo, because the operator's timers require one,
and removes it once their timers have stopped. `helm uninstall` deletes the operator's Deployment and RBAC
before the custom resources, so a FraudDemo the chart installed, deleted after them, would stay in
Terminating for ever. The hook deletes the FraudDemos first, and waits: the operator removes its finalizer,
the garbage collector their children. A FraudDemo whose finalizer nobody removes (no operator serves its
namespace) is reported by name when the timeout is up, with what to do about it; never waited on for ever.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterable

from . import crd, kube
from .handlers import FINALIZER

NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# What it does to the API, for the hook's Role (the chart tests check the two agree).
CALLS: list[tuple[str, str, list[str]]] = [(crd.GROUP, "frauddemos", ["list", "delete"])]


class StillThere(Exception):
    """Some FraudDemos were not gone within the timeout; the message says which and why."""


def check(namespaces: Iterable[str], timeout: float) -> tuple[str, ...]:
    """The namespaces, checked (one at least, each a namespace name, no repeats); a ValueError says what is wrong."""
    out: list[str] = []
    for ns in namespaces:
        if not (NAME.match(ns) and len(ns) <= 63):
            raise ValueError(f"{ns!r} is not a namespace name (lower-case letters, digits and '-', at most 63)")
        if ns not in out:
            out.append(ns)
    if not out:
        raise ValueError("no namespace given (--namespace NS, repeatable)")
    if not timeout > 0:
        raise ValueError(f"the timeout must be a positive number of seconds, not {timeout!r}")
    return tuple(out)


def why_left(fd: dict) -> str:
    """One line on a FraudDemo that is still there: what holds it."""
    meta = fd.get("metadata") or {}
    ref = f"FraudDemo {meta.get('namespace')}/{meta.get('name')}"
    finalizers = list(meta.get("finalizers") or [])
    if not meta.get("deletionTimestamp"):
        return f"{ref} is not being deleted (re-created since?)"
    if FINALIZER in finalizers:
        return (
            f"{ref} still has the operator's finalizer {FINALIZER}: no FraudDemo operator removed it, so none "
            f"serves namespace {meta.get('namespace')} (or it is not running). Start it, or, with no operator "
            f"to come, remove the finalizer by hand: kubectl patch fd {meta.get('name')} -n {meta.get('namespace')} "
            '--type=merge -p \'{"metadata":{"finalizers":null}}\''
        )
    if finalizers:
        return f"{ref} waits for other finalizers: {', '.join(finalizers)}"
    return f"{ref} is being deleted"


async def delete_demos(
    client: kube.Kube,
    namespaces: Iterable[str],
    timeout: float,
    poll: float = 0.5,
    say: Callable[[str], None] = lambda _line: None,
) -> list[str]:
    """Delete every FraudDemo in these namespaces and wait until each one is gone (or replaced by a new
    object of the same name). Returns "namespace/name" of those deleted; raises StillThere after `timeout`
    seconds with the ones left and why, kube.ApiError when the API refuses."""
    namespaces = check(namespaces, timeout)
    deadline = time.monotonic() + timeout

    async def listed(ns: str) -> list[dict]:
        """The FraudDemos of a namespace; none without the CRD; a transient API error is retried until
        the deadline."""
        while True:
            try:
                return await client.list(kube.FRAUDDEMO, ns)
            except kube.NotFound:
                return []
            except kube.ApiError as e:
                if not e.transient or time.monotonic() >= deadline:
                    raise
                say(f"listing FraudDemos in {ns} failed ({e}); again")
                await asyncio.sleep(poll)

    pending: dict[tuple[str, str], str] = {}  # (namespace, name) -> uid
    for ns in namespaces:
        for fd in await listed(ns):
            meta = fd["metadata"]
            key = (ns, meta["name"])
            if await client.delete(kube.FRAUDDEMO, ns, meta["name"]):
                say(f"deleting FraudDemo {ns}/{meta['name']}")
                pending[key] = meta.get("uid", "")
    deleted = [f"{ns}/{name}" for ns, name in pending]
    while True:
        left: dict[tuple[str, str], dict] = {}
        for ns in sorted({ns for ns, _ in pending}):
            for fd in await listed(ns):
                key = (ns, fd["metadata"]["name"])
                if pending.get(key) == fd["metadata"].get("uid"):
                    left[key] = fd
        for key in [k for k in pending if k not in left]:
            say(f"FraudDemo {key[0]}/{key[1]} is gone")
            del pending[key]
        if not pending:
            return deleted
        if time.monotonic() >= deadline:
            raise StillThere(
                f"{len(left)} FraudDemo(s) still there {timeout:g} s after their deletion:\n"
                + "\n".join(why_left(fd) for fd in left.values())
            )
        await asyncio.sleep(min(poll, max(0.0, deadline - time.monotonic())))


def run(namespaces: Iterable[str], timeout: float, kubeconfig: str | None, context: str | None, say=print) -> int:
    """`frauddemo delete-demos`: 0 when every FraudDemo is gone; 1 (and why, on stderr) when not."""
    import sys

    namespaces = check(namespaces, timeout)

    async def main() -> list[str]:
        client = kube.Kube(await kube.load_configuration(kubeconfig, context), 4)
        try:
            return await delete_demos(client, namespaces, timeout, say=say)
        finally:
            await client.close()

    from kubernetes_asyncio.config import ConfigException

    started = time.monotonic()
    try:
        deleted = asyncio.run(main())
    except (StillThere, kube.ApiError, ConfigException) as e:
        print(f"frauddemo delete-demos: error: {e}", file=sys.stderr)
        return 1
    say(f"{len(deleted)} FraudDemo(s) deleted in {', '.join(namespaces)}, gone in {time.monotonic() - started:.1f} s")
    return 0
