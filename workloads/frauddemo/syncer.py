"""One directed active-active link: the target pulls the source's op log and merges it.

The loop overlaps the two servers' work: while the target merges batch k (one fd_merge call that
also stores the checkpoint), the source already answers a blocking read of batch k+1. The batch
size follows the backlog. Entries missing from the source's log (trimmed by retention, or a reset
source) make the merge report a gap, and the link does a full-state resync from the source.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field

import msgpack
import redis

from . import metrics
from .controls import partitioned_from, pause_key  # noqa: F401  (pause_key: importers of syncer.pause_key keep working)
from .store import LOG_KEY, Store, StoreError, wait_for_functions

log = logging.getLogger("frauddemo.syncer")
PAUSE_CHECK_S = 0.1
MERGES_IN_FLIGHT = 2  # merge calls queued at the target under backlog
PHOTO_KEY = "b:photo:"  # content-addressed: the key is the SHA-256 of the bytes


@dataclass
class LinkConfig:
    source_url: str
    target_url: str
    source_password: str | None = None
    target_password: str | None = None
    source_name: str | None = None  # replica ids: set on a new store, checked on a named one
    target_name: str | None = None
    retention: int | None = None  # op-log entries the named stores keep
    batch_min: int = 16
    batch_max: int = 512  # bigger batches cost the server more per entry (Lua GC, argument tables)
    block_ms: int = 500
    status_interval_s: float = 0.5
    backoff_max_s: float = 1.0  # a refused connection costs nothing; a longer wait delays convergence
    resync_keys_per_call: int = 500


@dataclass
class LinkStats:
    applied: int = 0
    duplicates: int = 0
    malformed: int = 0
    resyncs: int = 0
    batches: int = 0
    last_lag_us: int = 0
    backlog: int = 0
    state: str = "starting"
    blobs: int = 0  # blobs copied from the source (they travel by reference, not in the op log)
    # A partition on demand, for the dashboard: when it began (wall clock ms, 0 when not partitioned);
    # when the last one ended, how long it lasted and the backlog the link then had to merge.
    partitioned_since_ms: int = 0
    healed_ms: int = 0
    partition_ms: int = 0
    healed_backlog: int = 0
    clock_skew_us: int = 0  # the source server's clock minus the target's (clock_skew_s)
    lags_us: list | None = None  # filled only when a benchmark asks for raw samples
    malformed_ids: list = field(default_factory=list)


def pack_command(*args) -> list[bytes]:
    """One command encoded in RESP (as a one-element list, what send_packed_command takes): faster than
    the client's generic packer for big batches."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if not isinstance(a, bytes):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return [b"".join(out)]


def _field(fields: list, name: bytes):
    """A field of a raw stream entry [k1, v1, k2, v2, ...]; fd_write always writes c, s, o in order."""
    if len(fields) == 6 and fields[0] == b"c" and fields[2] == b"s" and fields[4] == b"o":
        return fields[{b"c": 1, b"s": 3, b"o": 5}[name]]
    return dict(zip(fields[::2], fields[1::2])).get(name)


def _merge_command(head: tuple, entries: list) -> list:
    args = list(head)
    for eid, fields in entries:
        if len(fields) == 6 and fields[0] == b"c" and fields[2] == b"s" and fields[4] == b"o":
            args += (eid, fields[1], fields[3], fields[5])
        else:  # not written by fd_write: the merge counts it as malformed and skips it
            args += (eid, _field(fields, b"c") or b"", _field(fields, b"s") or b"", _field(fields, b"o") or b"")
    return pack_command(*args)


BLOB_REF = b"\xa2br"  # msgpack's "br": only entries holding it can refer to a blob (no unpacking the rest)


def blob_refs(entries: list) -> list[str]:
    """Keys of the blobs that op-log entries refer to ("br" operations), in order, once each."""
    keys: dict[str, None] = {}
    for _eid, fields in entries:
        o = fields.get(b"o") if isinstance(fields, dict) else _field(fields, b"o")
        if not isinstance(o, bytes) or BLOB_REF not in o:
            continue
        try:
            operations = msgpack.unpackb(o, raw=True)
        except Exception:  # malformed: the merge skips and reports it
            continue
        for op in operations if isinstance(operations, list) else ():
            if isinstance(op, list) and len(op) >= 2 and op[0] == b"br" and isinstance(op[1], bytes):
                keys[op[1].decode(errors="replace")] = None
    return list(keys)


def clock_skew_s(source: Store, target: Store) -> float | None:
    """The source server's clock minus the target's, in seconds: each TIME read is placed at the middle
    of its round trip on this process's monotonic clock. None when a store does not answer."""
    try:
        t0 = time.monotonic()
        s_sec, s_us = source.r.time()
        t1 = time.monotonic()
        d_sec, d_us = target.r.time()
        t2 = time.monotonic()
    except (redis.RedisError, OSError):
        return None
    return (s_sec + s_us / 1e6) - (d_sec + d_us / 1e6) - ((t0 + t1) / 2 - (t1 + t2) / 2)


def fetch_blobs(source: Store, keys: list[str], name: str = "") -> list:
    """fd_blobs arguments (key, value, ttl_ms) for the blobs the source still holds. A photo whose
    bytes do not hash to its key is left out and logged (the store checked it at its origin; this is
    the copy's check)."""
    if not keys:
        return []
    pipe = source.r.pipeline(transaction=False)
    for k in keys:
        pipe.get(k)
        pipe.pttl(k)
    res = pipe.execute()
    out = []
    for i, k in enumerate(keys):
        value, ttl = res[2 * i], res[2 * i + 1]
        if value is None:
            continue  # expired or deleted at the source since: nothing to copy
        if k.startswith(PHOTO_KEY) and hashlib.sha256(value).hexdigest() != k[len(PHOTO_KEY) :]:
            log.error("link %s: blob %s at the source does not hash to its key: not copied", name, k)
            continue
        out += [k.encode(), value, max(0, int(ttl))]
    return out


def copy_blobs(source: Store, target: Store, entries: list, name: str = "") -> int:
    """Copy the blobs these entries refer to from the source to the target (before merging them)."""
    args = fetch_blobs(source, blob_refs(entries), name)
    return int(target.r.fcall("fd_blobs", 0, *args)) if args else 0


class _Reader:
    """Blocking reads of the source's op log, always one request ahead, batch size following load."""

    def __init__(self, conn, cfg: LinkConfig):
        self.conn = conn
        self.cfg = cfg
        self.count = cfg.batch_min
        self.conn.socket_timeout = cfg.block_ms / 1000 + 10
        self.in_flight = False
        self.behind = False  # the last read came back full: more entries are waiting

    def _send(self) -> None:
        self.conn.send_packed_command(
            pack_command(
                b"XREAD", b"COUNT", self.count, b"BLOCK", self.cfg.block_ms, b"STREAMS", LOG_KEY.encode(), self.last_id
            )
        )
        self.in_flight = True

    def start(self, last_id: bytes) -> None:
        self.last_id = last_id
        self._send()

    def next(self) -> list:
        """The next batch (possibly empty after the block timeout); the read after it is sent."""
        reply = self.conn.read_response()
        self.in_flight = False
        entries = reply[0][1] if reply else []
        self.behind = len(entries) >= self.count
        if entries:
            self.last_id = entries[-1][0]
            if len(entries) >= self.count:
                self.count = min(self.count * 2, self.cfg.batch_max)
            elif len(entries) < self.count // 4:
                self.count = max(self.count // 2, self.cfg.batch_min)
        self._send()
        return entries

    def ready(self) -> bool:
        return self.conn.can_read(timeout=0)

    def restart(self, last_id: bytes) -> None:
        """Drop the read in flight and read again from `last_id`."""
        if self.in_flight:
            self.conn.read_response()
        self.start(last_id)

    def close(self) -> None:
        if self.in_flight:
            self.conn.disconnect()


class Syncer:
    def __init__(self, cfg: LinkConfig, stats: LinkStats | None = None):
        self.cfg = cfg
        self.stats = stats or LinkStats()
        self.stop_event = threading.Event()
        self.source: Store | None = None
        self.target: Store | None = None
        self.name = f"{cfg.source_url} -> {cfg.target_url}"

    # -- connection management ------------------------------------------------------------------
    def _connect(self) -> bool:
        c = self.cfg
        self._close()  # a retry after a half-made connection (functions missing at the target)
        self.source = Store.connect(
            c.source_url, c.source_password, replica=c.source_name, retention=c.retention if c.source_name else None
        )
        self.target = Store.connect(
            c.target_url, c.target_password, replica=c.target_name, retention=c.retention if c.target_name else None
        )
        if self.source.replica == self.target.replica:
            raise ValueError(f"source and target are the same replica {self.source.replica!r}")
        self.name = f"{self.source.replica}->{self.target.replica}"
        self.labels = {"source": self.source.replica, "target": self.target.replica}
        metrics.init_link(self.source.replica, self.target.replica)
        return True

    def _close(self) -> None:
        for s in (self.source, self.target):
            if s is not None:
                try:
                    s.close()
                except Exception:
                    pass
        self.source = self.target = None

    def run(self) -> None:
        """Run until stop(): reconnect with backoff, resume from the target's checkpoint."""
        backoff = 0.1
        while not self.stop_event.is_set():
            try:
                if wait_for_functions(self._connect, self.stop_event, self.name, log) is None:
                    break  # stopped while waiting
                log.info(
                    "link %s connected (source %s, target %s)", self.name, self.cfg.source_url, self.cfg.target_url
                )
                backoff = 0.1
                self._pump()
            except redis.AuthenticationError as e:
                self._down(f"authentication refused: {e}")
            except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
                self._down(f"peer unreachable: {e}")
            except redis.RedisError as e:
                self._down(f"peer error: {e}")
            except StoreError as e:
                self._down(f"store refused: {e}")
            except ValueError as e:
                self._down(f"bad configuration: {e}")
            except Exception:  # never let one bad moment end the link: log it and retry
                log.exception("link %s failed unexpectedly", self.name)
                self._down("unexpected error (logged above)")
            finally:
                self._close()
            if self.stop_event.wait(backoff):
                break
            backoff = min(backoff * 2, self.cfg.backoff_max_s)

    def _down(self, why: str) -> None:
        self.stats.state = "down"
        log.warning("link %s down: %s; reconnecting with backoff", self.name, why)
        metrics.SYNCER_STATE.labels(**getattr(self, "labels", {"source": "?", "target": "?"})).set(0)

    def stop(self) -> None:
        self.stop_event.set()

    # -- the replication loop -------------------------------------------------------------------
    def _pump(self) -> None:
        """Three stages overlap: the source answers the next read, the target merges the previous
        batches (up to MERGES_IN_FLIGHT queued on its connection, so it never waits for this process
        between two), and this process encodes the current one."""
        src, dst = self.source, self.target
        self._hold_while_paused()
        ckpt = dst.checkpoint(src.replica)
        if ckpt and ckpt.get("epoch") != src.epoch:
            # the target holds the source's earlier life: the checkpoint keeps saying so for the link back,
            # which may not have seen the old epoch before this resync replaces it
            reborn = ("reborn_epoch", src.epoch) if int(ckpt.get("seq", 0)) > 0 else ()
            self._resync("the source was reset (new epoch)", reborn)
        elif not ckpt and self._target_came_back_empty():
            # The source's log holds only the source's own writes, so the target's own history, which
            # the source holds as merged state, travels only in a full-state transfer.
            self._resync("the target came back empty; its earlier writes are here")
        reader = _Reader(src.r.connection_pool.get_connection(), self.cfg)
        merge_conn = dst.r.connection_pool.get_connection()
        head = (b"FCALL", b"fd_merge", b"0", src.replica.encode(), src.epoch.encode())
        self.stats.state = "up"
        metrics.SYNCER_STATE.labels(**self.labels).set(1)
        pending: collections.deque = collections.deque()  # batches whose merge replies are unread

        def settle(keep: int) -> None:
            """Read merge replies until `keep` remain; after a gap, all of them, then resync."""
            gap = False
            while len(pending) > keep or (gap and pending):
                gap |= self._finish(merge_conn, pending.popleft())
            if gap:
                reader.restart(self._resync_from_gap())

        next_status = next_pause_check = 0.0
        try:
            reader.start(dst.checkpoint(src.replica).get("id", "0-0").encode())
            while not self.stop_event.is_set():
                if time.monotonic() >= next_pause_check:
                    next_pause_check = time.monotonic() + PAUSE_CHECK_S
                    if self.paused():
                        break  # the caller reconnects, and holds while paused
                entries = reader.next()
                if entries:
                    # Blobs travel by reference: copy those the batch refers to first, on the same
                    # connection, so the merge that refers to them finds them.
                    blobs = fetch_blobs(src, blob_refs(entries), self.name)
                    if blobs:
                        merge_conn.send_packed_command(pack_command(b"FCALL", b"fd_blobs", b"0", *blobs))
                    merge_conn.send_packed_command(_merge_command(head, entries))
                    pending.append((entries, bool(blobs)))
                # Under backlog keep merges queued at the target; a short batch means no backlog:
                # settle everything now rather than keep replies (and the lag figure) waiting.
                settle(MERGES_IN_FLIGHT - 1 if reader.behind or reader.ready() else 0)
                now = time.monotonic()
                if now >= next_status:
                    next_status = now + self.cfg.status_interval_s
                    self._publish_status()
        finally:
            reader.close()  # a blocked read may still be pending on its socket
            src.r.connection_pool.release(reader.conn)
            if pending:
                merge_conn.disconnect()
            dst.r.connection_pool.release(merge_conn)

    def paused(self) -> bool:
        return partitioned_from(self.target, self.source.replica)

    def _hold_while_paused(self) -> None:
        """A partition on demand (the demo's control): replicate nothing while the target holds
        `fd:pause:<source>`, and say so in the link status."""
        st = self.stats
        while self.paused() and not self.stop_event.is_set():
            if st.state != "partitioned":
                log.info("link %s partitioned on demand", self.name)
            st.state = "partitioned"
            if not st.partitioned_since_ms:  # kept across reconnections while the partition lasts
                st.partitioned_since_ms = int(time.time() * 1000)
            metrics.SYNCER_STATE.labels(**self.labels).set(0)
            self._publish_status()
            self.stop_event.wait(PAUSE_CHECK_S)
        if st.partitioned_since_ms and not self.stop_event.is_set():  # healed: what the link now merges
            st.healed_ms = int(time.time() * 1000)
            st.partition_ms = st.healed_ms - st.partitioned_since_ms
            st.partitioned_since_ms = 0
            st.healed_backlog = st.backlog  # as published while holding (every PAUSE_CHECK_S)

    def _resync_from_gap(self) -> bytes:
        self._resync("entries missing from the source's op log (retention or reset)")
        return self.target.checkpoint(self.source.replica)["id"].encode()

    def _finish(self, conn, item: tuple) -> bool:
        """Read one merge reply (and the blob copy's before it) and account for it; True when the
        target reports a gap."""
        entries, blobs = item
        if blobs:
            copied = conn.read_response()
            if isinstance(copied, redis.ResponseError):
                raise copied
            self.stats.blobs += int(copied)
        res = conn.read_response()
        if isinstance(res, redis.ResponseError):
            raise res
        applied, dups, now_us, gap = int(res[0]), int(res[1]), int(res[2]), int(res[3])
        bad = {x.decode() for x in res[4:]}
        st = self.stats
        st.batches += 1
        st.applied += applied
        st.duplicates += dups
        if bad:
            st.malformed += len(bad)
            st.malformed_ids = (st.malformed_ids + sorted(bad))[-100:]
            metrics.SYNCER_SKIPPED.labels(**self.labels).inc(len(bad))
            for b in sorted(bad):
                log.error("link %s skipped malformed op-log entry %s", self.name, b)
        metrics.SYNCER_APPLIED.labels(**self.labels).inc(applied)
        if gap:
            return True
        lags = []
        for eid, fields in entries[dups:]:  # duplicates can only lead a batch (ids ascend)
            if bad and eid.decode() in bad:
                continue
            try:
                lags.append(now_us - int(_field(fields, b"c")))
            except (TypeError, ValueError):
                continue
        if lags:
            st.last_lag_us = lags[-1]
            metrics.observe_many(metrics.REPLICATION_LAG.labels(**self.labels), [x / 1e6 for x in lags])
            if st.lags_us is not None:
                st.lags_us.extend(lags)
        return False

    def _publish_status(self) -> None:
        src, dst = self.source, self.target
        try:
            seq = src.seq()
        except redis.RedisError:
            seq = None
        ckpt = dst.checkpoint(src.replica)
        if seq is not None:
            self.stats.backlog = max(0, seq - int(ckpt.get("seq", 0)))
            metrics.SYNCER_BACKLOG.labels(**self.labels).set(self.stats.backlog)
        st = self.stats
        skew = clock_skew_s(src, dst)
        if skew is not None:
            st.clock_skew_us = round(skew * 1e6)
            metrics.CLOCK_SKEW.labels(**self.labels).set(skew)
        dst.r.fcall(
            "fd_link",
            0,
            src.replica,
            "state",
            st.state,
            "lag_us",
            st.last_lag_us,
            "clock_skew_us",
            st.clock_skew_us,
            "backlog",
            st.backlog,
            "applied",
            st.applied,
            "resyncs",
            st.resyncs,
            "malformed",
            st.malformed,
            "partitioned_since_ms",
            st.partitioned_since_ms,
            "healed_ms",
            st.healed_ms,
            "partition_ms",
            st.partition_ms,
            "healed_backlog",
            st.healed_backlog,
            "updated_ms",
            int(time.time() * 1000),
        )

    def _target_came_back_empty(self) -> bool:
        """The target restarted on an empty disk (a new epoch) after the source had merged from its
        earlier life: the source's checkpoint of the target is from another epoch, or (when the link the
        other way got there first and moved that checkpoint on) that link marked the rebirth."""
        src, dst = self.source, self.target
        mine = src.checkpoint(dst.replica)
        return mine.get("epoch", dst.epoch) != dst.epoch or mine.get("reborn_epoch") == dst.epoch

    def _resync(self, why: str, mark: tuple[str, ...] = ()) -> None:
        """Full-state transfer from the source, then resume from the position taken before it. `mark`:
        field/value pairs the target's checkpoint keeps beside the position."""
        src, dst = self.source, self.target
        t0 = time.monotonic()
        self.stats.state = "resyncing"
        log.warning("link %s: %s; full resync started", self.name, why)
        epoch, seq, sid = src.position()
        keys = sorted(src.data_keys())
        step = self.cfg.resync_keys_per_call
        for i in range(0, len(keys), step):
            dst.r.fcall("fd_import", 0, src.export(keys[i : i + step]))
        dst.r.fcall("fd_checkpoint", 0, src.replica, epoch, seq, sid, *mark)
        self.stats.resyncs += 1
        self.stats.state = "up"
        metrics.SYNCER_RESYNCS.labels(**self.labels).inc()
        log.warning("link %s: full resync of %d keys done in %.2fs", self.name, len(keys), time.monotonic() - t0)
