"""The store layer: one Redis-protocol server per store, written only through server-side functions.

The Lua library (`store.lua`, beside this file) documents the key schema and the logged operations.
This module loads it idempotently (version check), builds operations, and reads CRDT values back.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Mapping
from pathlib import Path

import msgpack
import redis

from .ops import ops as ops  # the operation builders; callers import them from here

LIBRARY_PATH = Path(__file__).with_name("store.lua")
LIBRARY_CODE = LIBRARY_PATH.read_text()
LIBRARY_VERSION = LIBRARY_CODE.split("local VERSION = '", 1)[1].split("'", 1)[0]
LOG_KEY = "fd:log"
DATA_PREFIXES = ("h:", "s:", "c:", "b:")
MAX_WRITE_BYTES = 8 * 1024 * 1024


class StoreError(RuntimeError):
    """A store refused an operation (malformed op, wrong replica id, ...)."""


class FunctionsMissing(StoreError):
    """The store does not have this library version loaded yet (the supervisor or the operator's store
    agent loads it; a client that starts first waits for it: `wait_for_functions`)."""


@dataclasses.dataclass(frozen=True)
class Commit:
    clock: str  # 16-digit HLC microseconds
    seq: int
    id: str  # op-log stream id ("" when nothing was logged)
    skipped: bool = False  # an `hcreate` guard found its key: nothing was written

    @classmethod
    def from_reply(cls, res) -> Commit:
        return cls(res[0].decode(), int(res[1]), res[2].decode(), bool(int(res[3])))


def load_library(r: redis.Redis) -> None:
    """Load the function library unless the same version is already there. Only the admin may load
    it (FUNCTION LOAD); other roles find it loaded by the supervisor or the store agent."""
    try:
        if r.fcall_ro("fd_version", 0) == LIBRARY_VERSION.encode():
            return
    except redis.exceptions.NoPermissionError:
        raise
    except redis.ResponseError:
        pass
    try:
        r.function_load(LIBRARY_CODE, replace=True)
    except redis.exceptions.NoPermissionError:
        raise FunctionsMissing(
            f"the store does not have function library {LIBRARY_VERSION} loaded and "
            "this user may not load it (only the admin may; the supervisor or the "
            "operator's store agent loads it)"
        ) from None


class StoreUnavailable(StoreError):
    """The store refuses writes for now (it cannot persist: disk full; or maxmemory reached): retry
    later. The message says which store and why."""


def unavailable_reason(replica: str, err: Exception) -> str | None:
    """A human reason when `err` is a store refusing writes for now (MISCONF: persistence failing,
    OOM: maxmemory reached with noeviction), else None."""
    msg = str(err)
    if msg.startswith("MISCONF"):
        why = "disk full" if "No space left" in msg else msg.split(":", 1)[-1].strip() or msg
        return f"store {replica} cannot persist: {why}"
    if (
        msg.startswith("OOM")
        or isinstance(err, redis.exceptions.OutOfMemoryError)
        or "used memory > 'maxmemory'" in msg
    ):
        return f"store {replica} is full: maxmemory reached (writes refused, nothing evicted)"
    return None


def _refused(replica: str, err: Exception) -> StoreError:
    why = unavailable_reason(replica, err)
    return StoreUnavailable(why) if why else StoreError(str(err))


def wait_for_functions(connect, stop, what: str, log, backoff_max: float = 10.0):
    """`connect()` until it stops failing with FunctionsMissing, with backoff and one log line (a client
    that starts before the store agent loaded the functions waits for them instead of exiting).
    Other errors propagate. None when `stop` (a threading.Event) is set first."""
    backoff, told = 0.2, False
    while not stop.is_set():
        try:
            out = connect()
        except FunctionsMissing:
            if not told:
                log.warning(
                    "store %s has no function library %s loaded yet: waiting for the store agent", what, LIBRARY_VERSION
                )
                told = True
            stop.wait(backoff)
            backoff = min(backoff * 2, backoff_max)
            continue
        if told:
            log.info("store %s has its functions now", what)
        return out
    return None


class Store:
    """A client of one store (one replica of the active-active data set)."""

    def __init__(self, client: redis.Redis, replica: str, epoch: str):
        self.r = client
        self.replica = replica
        self.epoch = epoch

    @classmethod
    def connect(
        cls, url: str, password: str | None = None, replica: str | None = None, retention: int | None = None, **kw
    ) -> Store:
        """Connect, load the functions, and set (or check) the store's replica id.

        Without `replica`, the store must already be initialised and its id is read back.
        """
        kw.setdefault("protocol", 2)  # raw replies (XREAD in the syncer) keep the RESP2 shape
        kw.setdefault("socket_timeout", 10)
        kw.setdefault("socket_connect_timeout", 5)
        client = redis.Redis.from_url(url, password=password, **kw)
        load_library(client)
        if replica is None:
            rep, epoch = client.hmget("fd:meta", "replica", "epoch")
            if rep is None:
                raise StoreError(f"store at {url} has no replica id yet")
            return cls(client, rep.decode(), epoch.decode())
        args = [replica, secrets.token_hex(8)] + ([retention] if retention else [])
        try:
            rep, epoch = client.fcall("fd_init", 0, *args)
        except redis.ResponseError as e:
            raise StoreError(str(e)) from None
        return cls(client, rep.decode(), epoch.decode())

    def close(self) -> None:
        self.r.close()

    # -- writes ---------------------------------------------------------------------------------
    def write(self, operations: list) -> Commit:
        """Apply operations atomically and append them to this store's op log as one entry."""
        payload = pack_ops(operations)
        try:
            return Commit.from_reply(self.r.fcall("fd_write", 0, payload))
        except redis.ResponseError as e:
            raise _refused(self.replica, e) from None

    def write_many(self, batches: list[list]) -> list[Commit]:
        """Several independent writes in one round trip (each its own atomic op-log entry)."""
        pipe = self.r.pipeline(transaction=False)
        for operations in batches:
            pipe.fcall("fd_write", 0, pack_ops(operations))
        out = []
        for res in pipe.execute(raise_on_error=False):
            if isinstance(res, Exception):
                raise _refused(self.replica, res)
            out.append(Commit.from_reply(res))
        return out

    # -- maintenance (local, never logged) --------------------------------------------------------
    def reset(self, token_key: str, token: str) -> tuple[int, str, int, str]:
        """Wipe the demo's data at this store in one atomic call (fd_reset): data keys and idempotency
        records deleted, event streams emptied in place, `token_key` set to `token`. Returns (keys
        deleted, epoch, seq, op-log id): this store's op-log position at the reset, for the peers'
        checkpoints (`move_checkpoint`)."""
        n, epoch, seq, sid = self.r.fcall("fd_reset", 0, token_key, token)
        return int(n), _text(epoch), int(seq), _text(sid)

    def move_checkpoint(self, source: str, epoch: str, seq: int, sid: str) -> None:
        """Set this store's checkpoint of the link from `source` (fd_checkpoint): what `source` logged
        up to that position is never replayed here."""
        self.r.fcall("fd_checkpoint", 0, source, epoch, seq, sid)

    # -- reads ----------------------------------------------------------------------------------
    def hgetall(self, key: str) -> dict[str, str]:
        """The live fields of an LWW hash (tags, stored as "~field", left out)."""
        return {k.decode(): v.decode() for k, v in self.r.hgetall(key).items() if k[:1] != b"~"}

    def smembers(self, key: str) -> set[str]:
        return {v.decode() for v in self.r.hvals(key)}

    def counter(self, key: str) -> int:
        return counter_value(self.r.hgetall(key))

    def get_blob(self, key: str) -> bytes | None:
        return self.r.get(key)

    def seq(self) -> int:
        """Sequence number of the last entry this store appended to its op log."""
        return int(self.r.hget("fd:meta", "seq") or 0)

    def position(self) -> tuple[str, int, str]:
        epoch, seq, sid = self.r.fcall("fd_position", 0)
        return epoch.decode(), int(seq), sid.decode()

    def checkpoint(self, source: str) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.r.hgetall(f"fd:ckpt:{source}").items()}

    def link_status(self, source: str) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.r.hgetall(f"fd:link:{source}").items()}

    def data_keys(self, count: int = 1000) -> set[str]:
        """Canonical data keys (tag and tombstone keys folded into the key they belong to)."""
        keys = set()
        for k in self.r.scan_iter(count=count):
            k = k.decode()
            p = k[:2]
            if p in DATA_PREFIXES:
                keys.add(k)
            elif p == "x:":
                keys.add("s:" + k[2:])
        return keys

    def export(self, keys: list[str]) -> bytes:
        return self.r.fcall("fd_export", 0, *keys)

    def snapshot(self, batch: int = 500) -> dict:
        """The whole replicated state, canonicalised: what two converged stores must share."""
        keys = sorted(self.data_keys())
        state = {}
        for i in range(0, len(keys), batch):
            for st in msgpack.unpackb(self.export(keys[i : i + batch]), raw=True):
                kind, key = st[0].decode(), st[1].decode()
                if kind == "s":
                    state[key] = (_pairs(st[2]), frozenset(st[3]))
                elif kind in ("h", "c"):
                    state[key] = _pairs(st[2])
                else:
                    state[key] = st[2]  # blob value; the remaining TTL differs per store
        return state


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _pairs(flat) -> dict:
    if isinstance(flat, dict):  # cmsgpack packs an empty table as a map
        return dict(flat)
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


def counter_value(parts: Mapping) -> int:
    total = 0
    for k, v in parts.items():
        k = k.decode() if isinstance(k, bytes) else k
        total += int(v) if k.startswith("p:") else -int(v)
    return total


def pack_ops(operations: list) -> bytes:
    if not operations:
        raise ValueError("a write needs at least one operation")
    payload = msgpack.packb(operations, use_bin_type=False)
    if len(payload) > MAX_WRITE_BYTES:
        raise ValueError(f"write of {len(payload)} bytes exceeds the {MAX_WRITE_BYTES}-byte cap")
    return payload
