"""Connections to every store of a demo, shared by the detection service's API and its engine."""

from __future__ import annotations

import logging
import threading
import time

import redis

from . import metrics
from .config import StoreRef
from .store import FunctionsMissing, Store, unavailable_reason

log = logging.getLogger("frauddemo.stores")

LINK_FRESH_MS = 3000
PROBE_KEY = "fd:idem:~probe"  # never written: a DEL of it is refused only when the store refuses writes


class StoreStarting(redis.ConnectionError):
    """A store that answers but has no function library loaded yet (its agent has not run)."""


class StoreSet:
    """Connections to every store, opened lazily and retried, so the service starts before them."""

    def __init__(self, refs: list[StoreRef], socket_timeout: float = 2, connect_timeout: float = 1):
        self.refs = refs
        self.timeouts = {"socket_timeout": socket_timeout, "socket_connect_timeout": connect_timeout}
        self._stores: dict[str, Store] = {}
        self._lock = threading.Lock()
        self._waiting: set[str] = set()  # stores without their functions yet (logged once each)

    def get(self, name: str) -> Store:
        """The store's client; a store without its functions loaded yet raises StoreStarting (a
        redis.ConnectionError: every caller already treats it as a store not reachable yet)."""
        with self._lock:
            s = self._stores.get(name)
            if s is None:
                ref = next(r for r in self.refs if r.name == name)
                try:
                    s = self._stores[name] = ref.connect(**self.timeouts)
                except FunctionsMissing as e:
                    if name not in self._waiting:
                        self._waiting.add(name)
                        log.warning("store %s has no functions loaded yet: waiting for the store agent", name)
                    raise StoreStarting(f"store {name} is starting: {e}") from None
                if name in self._waiting:
                    self._waiting.discard(name)
                    log.info("store %s has its functions now", name)
            return s

    def reachable(self) -> dict[str, Store]:
        """The stores that answer a connection now (the others are dropped, to be retried)."""
        out = {}
        for ref in self.refs:
            try:
                out[ref.name] = self.get(ref.name)
            except (redis.RedisError, OSError):
                self.drop(ref.name)
        return out

    def drop(self, name: str) -> None:
        with self._lock:
            s = self._stores.pop(name, None)
        if s is not None:
            s.close()

    def status(self) -> dict:
        """Per store: up, op-log seq, memory (used, maxmemory, policy) and whether it accepts writes
        (persistence working, under maxmemory), with the reason when not; per directed link: state,
        lag, backlog, freshness. Also sets the stores' gauges (metrics.STORE_*)."""
        now_ms = int(time.time() * 1000)
        stores, links = {}, []
        for ref in self.refs:
            try:
                s = self.get(ref.name)
                stores[ref.name] = {"up": True, "seq": s.seq(), **store_health(s)}
                for src in self.refs:
                    if src.name == ref.name:
                        continue
                    st = s.link_status(src.name)
                    age = now_ms - int(st.get("updated_ms", 0))
                    links.append(
                        {
                            "source": src.name,
                            "target": ref.name,
                            "state": st.get("state", "unknown") if age <= LINK_FRESH_MS else "stale",
                            "lag_ms": int(st.get("lag_us", 0)) / 1000,
                            "backlog": int(st.get("backlog", 0)),
                            "resyncs": int(st.get("resyncs", 0)),
                            "updated_ms_ago": age,
                            **_partition(st, now_ms),
                        }
                    )
            except (redis.RedisError, OSError) as e:
                self.drop(ref.name)
                stores[ref.name] = {"up": False, "error": str(e)[:200]}
        for name, st in stores.items():
            metrics.STORE_UP.labels(name).set(1 if st["up"] else 0)
            if st["up"]:
                metrics.STORE_USED_MEMORY.labels(name).set(st["memory"]["used_bytes"])
                metrics.STORE_MAXMEMORY.labels(name).set(st["memory"]["max_bytes"])
                metrics.STORE_WRITABLE.labels(name).set(1 if st["writable"] else 0)
            else:
                metrics.STORE_WRITABLE.labels(name).set(0)
        return {"stores": stores, "links": links}

    def close(self) -> None:
        for name in list(self._stores):
            self.drop(name)


def _partition(st: dict, now_ms: int) -> dict:
    """A link's partition on demand as its syncer reports it: for how long it has lasted (None when
    not partitioned), and the last heal (how long ago, how long it had lasted, the backlog it merged)."""
    since, healed = int(st.get("partitioned_since_ms", 0)), int(st.get("healed_ms", 0))
    return {
        "partitioned_for_ms": max(0, now_ms - since) if since else None,
        "healed_ms_ago": max(0, now_ms - healed) if healed else None,
        "last_partition_ms": int(st.get("partition_ms", 0)) if healed else None,
        "healed_backlog": int(st.get("healed_backlog", 0)) if healed else None,
    }


def store_health(s: Store) -> dict:
    """A store's memory and whether it accepts writes, from INFO (and, only when persistence is
    failing, from the error a harmless write gets: INFO says that it fails, not why)."""
    info = s.r.info("memory", "persistence")
    used, limit = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
    memory = {
        "used_bytes": used,
        "max_bytes": limit,
        "policy": str(info.get("maxmemory_policy", "")),
        "used_ratio": round(used / limit, 4) if limit else None,
    }
    failing = [
        k
        for k in ("aof_last_write_status", "aof_last_bgrewrite_status", "rdb_last_bgsave_status")
        if info.get(k, "ok") != "ok"
    ]
    problem = None
    if failing:
        try:  # refused while the server cannot persist (MISCONF), whatever the key; deletes nothing
            s.r.delete(PROBE_KEY)  # accepted: a failed rewrite or snapshot that does not stop writes
        except redis.ResponseError as e:
            problem = unavailable_reason(s.replica, e) or f"store {s.replica}: {e}"
    elif limit and used >= limit:
        problem = f"store {s.replica} is full: maxmemory ({limit} bytes) reached"
    if problem and not problem.startswith("store "):
        problem = f"store {s.replica} {problem}"
    return {"memory": memory, "writable": problem is None, "problem": problem}
