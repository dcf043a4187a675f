"""The detection service's engine: consumer groups on every store's event streams.

One reader thread per store pulls its purchase and return events (XREADGROUP, group `detectors`);
one thread judges them in batches: it reads each touched receipt's story from every store, verifies
new return photos in a process pool sized to the CPU quota (cgroup) or `--workers`, judges the receipt (detection.py) and writes
verdicts and alerts to the attempt's own store, then acknowledges. Delivery is at least once: an
event is acknowledged only after its verdict is written, a restarted or crashed detector's pending
events are claimed again, and verdicts and alerts are created with a guard (`hcreate`) and
deterministic ids (alert id = "al-" + attempt id), so a redelivery never duplicates one. Several
detectors share the work through the group. Metrics are counted by whoever created the verdict.
"""

from __future__ import annotations

import collections
import concurrent.futures
import gc
import json
import logging
import math
import multiprocessing
import os
import queue
import socket
import threading
import time

import redis

from . import metrics, single_threaded_numerics
from .config import StoreRef
from .detection import ALLOW, BLOCK, RANK, REVIEW, WEIGHTS, DetectionConfig, Judgement, judge_receipt
from .photos import index as photo_index
from .photos import verify as ver
from .photos.decode import PhotoRejected
from .photos.storage import EMB_PREFIX, PHOTO_PREFIX
from .procs import die_with_parent
from .retail import (
    ALERTS,
    HELD,
    PURCHASES,
    REFUSED,
    RETURNS,
    VERDICTS,
    Attempt,
    ReceiptStory,
    TerminalKeys,
    alert_key,
    customer_returns_key,
    read_stories,
    verdict_key,
)
from .store import Store, StoreUnavailable, ops, unavailable_reason
from .storeset import StoreSet

log = logging.getLogger("frauddemo.detector")
GROUP = "detectors"
STREAMS = (PURCHASES, RETURNS)
BATCH = 256
CLAIM_IDLE_MS = 30_000
RECONNECT_MAX_S = 1.0  # a reader's longest wait between attempts to reach its store (one connect a second)
JUDGES = 4  # batches judged at once
EMBEDDING_CACHE = 4096  # derived embeddings kept in this process (~1 KB each)


def cgroup_cpus(root: str = "/sys/fs/cgroup", proc_cgroup: str = "/proc/self/cgroup") -> float | None:
    """The CPUs this process may use by its cgroup's quota (v2 `cpu.max`, v1 `cpu.cfs_quota_us` /
    `cpu.cfs_period_us`), or None without a quota. A pod limited to 1 CPU on a 32-core node sees 32
    in os.cpu_count(), and a pool of 32 workers would only thrash (and use 32 times the memory)."""
    from pathlib import Path

    base = Path(root)
    v2, v1 = [], []
    try:
        for line in Path(proc_cgroup).read_text().splitlines():
            hid, ctrls, path = (line.split(":", 2) + ["", ""])[:3]
            path = path.strip().lstrip("/")
            if hid == "0" and ctrls == "":
                v2.append(base / path)
            elif "cpu" in ctrls.split(","):
                v1 += [base / c / path for c in ("cpu", "cpu,cpuacct", "cpuacct,cpu")]
    except OSError:
        pass
    v2.append(base)  # a container's own namespace: its cgroup is the root of the mount
    v1 += [base / "cpu", base / "cpu,cpuacct"]
    found = []
    for d in v2:
        try:
            quota, _, period = (d / "cpu.max").read_text().strip().partition(" ")
        except OSError:
            continue
        if quota != "max" and period:
            found.append(int(quota) / int(period))
        break
    for d in v1:
        try:
            quota = int((d / "cpu.cfs_quota_us").read_text())
            period = int((d / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        if quota > 0 and period > 0:
            found.append(quota / period)
        break
    return min(found) if found else None


def cpu_limit() -> int:
    """Photo workers by default: the cgroup CPU quota (rounded up), never more than the CPUs this
    process may run on (affinity), at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = cgroup_cpus()
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def alert_id(attempt: str) -> str:
    return f"al-{attempt}"


def outcome(local_decision: str, decision: str) -> str:
    """What happens to the money, decided when the first verdict is written."""
    if local_decision == REFUSED:
        return "refused"
    if decision == BLOCK:
        return "blocked"
    if decision == REVIEW or local_decision == HELD:
        return "held"
    return "refunded"


# -- photo verification in worker processes --------------------------------------------------------
def _worker_init(parent: int) -> None:
    import cv2

    die_with_parent()  # the pool's workers must not outlive a detector that is killed
    if os.getppid() != parent:
        os._exit(0)
    cv2.setNumThreads(1)
    ver.preload()  # load the cascades now, not during the first verification


def verify_photo(photo: bytes | None, purchase, earlier: list, cfg: ver.VerifyConfig) -> dict:
    """Runs in a pool worker: the return photo against the purchase photo. `purchase` and each of
    `earlier` is ("emb", embedding bytes) or ("photo", sha, JPEG bytes) for a photo whose embedding
    is derived here (tills never store embeddings); those come back under "embeddings" (sha -> bytes,
    or None for a photo without a usable face) for the caller to cache."""
    t0 = time.perf_counter()
    computed: dict[str, bytes | None] = {}

    def embedding(src):
        if src is None:
            return None
        if src[0] == "emb":
            return ver.Embedding.from_bytes(src[1])
        _, sha, jpeg = src
        try:
            emb = ver.analyze(jpeg, cfg).embedding
        except PhotoRejected:
            emb = None
        computed[sha] = emb.to_bytes() if emb is not None else None
        return emb

    purchase_emb = embedding(purchase)
    earlier_embs = [e for e in (embedding(x) for x in earlier) if e is not None]
    v = ver.verify(photo, purchase_emb, earlier_embs, cfg)
    return {
        "verdict": v.verdict,
        "similarity": v.similarity,
        "rejected": v.rejected,
        "replay": v.replay,
        "print": v.print,
        "seconds": time.perf_counter() - t0,
        "embeddings": computed,
    }


def photo_outcome(p: dict) -> str:
    return "rejected" if p.get("rejected") else p["verdict"]


class Detector:
    def __init__(
        self,
        refs: list[StoreRef],
        cfg: DetectionConfig = DetectionConfig(),
        keys: TerminalKeys = TerminalKeys(None),
        verify_cfg: ver.VerifyConfig = ver.VerifyConfig(),
        name: str | None = None,
        workers: int | None = None,
    ):
        self.refs, self.cfg, self.keys, self.verify_cfg = refs, cfg, keys, verify_cfg
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.workers = workers or cpu_limit()
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self.stores = StoreSet(refs, socket_timeout=5, connect_timeout=2)
        self._lock = threading.Lock()
        self._store_returns = 0  # how many times a store came back after its reader lost it
        self.inbox: queue.Queue = queue.Queue(maxsize=64)
        self.stop = threading.Event()
        self.processed = 0
        metrics.init_detector([r.name for r in refs], WEIGHTS)
        self._refusal = ""  # the last "store refuses writes" reason logged
        # photo sha -> embedding bytes (None: no usable face), derived by the pool workers
        self._embeddings: collections.OrderedDict[str, bytes | None] = collections.OrderedDict()
        self._describing: set[str] = set()  # purchase photos being described in the pool
        self._described: list[tuple[str, str, bytes | None]] = []  # (store, sha, print) not written yet

    def store(self, name: str) -> Store:
        return self.stores.get(name)

    # -- reading -----------------------------------------------------------------------------------
    def _reader(self, name: str) -> None:
        """Pull one store's events into the inbox; its own pending ones first, then new ones."""
        backoff = 0.2
        last_claim = 0.0
        failed = False
        while not self.stop.is_set():
            try:
                # A dedicated connection: XREADGROUP blocks it.
                ref = next(r for r in self.refs if r.name == name)
                conn = redis.Redis.from_url(
                    ref.url, password=ref.password, protocol=2, socket_timeout=10, socket_connect_timeout=2
                )
                for stream in STREAMS:
                    try:
                        conn.xgroup_create(stream, GROUP, id="0", mkstream=True)
                    except redis.ResponseError as e:
                        if "BUSYGROUP" not in str(e):
                            raise
                metrics.DETECTOR_UP.labels(name).set(1)
                if failed:  # back: what was judged without this store is judged again now (every reader)
                    failed = False
                    with self._lock:
                        self._store_returns += 1
                # Own pending entries first (after a restart under the same name), a page at a time:
                # an entry left pending on purpose (judged without some store) is read again when a
                # store comes back, else claimed once idle.
                cursors = {s: "0" for s in STREAMS}
                pending = True
                seen_returns = self._store_returns
                while not self.stop.is_set():
                    if self._store_returns != seen_returns:
                        seen_returns = self._store_returns
                        cursors, pending = {s: "0" for s in STREAMS}, True
                    res = conn.xreadgroup(GROUP, self.name, cursors, count=BATCH, block=None if pending else 500)
                    got = [(s.decode(), entries) for s, entries in res or [] if entries]
                    if pending and not got:
                        pending = False
                        cursors = {s: ">" for s in STREAMS}
                    for stream, entries in got:
                        self.inbox.put((name, stream, entries))
                        if pending:
                            cursors[stream] = entries[-1][0]
                    if pending and got:
                        self._wait_drained()
                    if time.monotonic() - last_claim > CLAIM_IDLE_MS / 3000:
                        last_claim = time.monotonic()
                        self._claim(conn, name)
                backoff = 0.2
            except (redis.RedisError, OSError) as e:
                # Logged once per outage; retried at least every RECONNECT_MAX_S: what a store took
                # while the detector could not see it (a partition's double return) waits no longer.
                (log.debug if failed else log.warning)("store %s: %s; retrying until it answers", name, e)
                failed = True
                metrics.DETECTOR_UP.labels(name).set(0)
                self.stores.drop(name)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, RECONNECT_MAX_S)
        metrics.DETECTOR_UP.labels(name).set(0)

    def _wait_drained(self) -> None:
        """Pending entries re-read with id 0 stay pending until acked: let them be processed before
        reading the next page, or the same page would be read again."""
        self.inbox.join()

    def _claim(self, conn: redis.Redis, name: str) -> None:
        """Take over entries another detector left unacknowledged for too long (it died)."""
        pending = 0
        for stream in STREAMS:
            start = "0-0"
            while True:
                nxt, entries, *_ = conn.xautoclaim(stream, GROUP, self.name, CLAIM_IDLE_MS, start, count=BATCH)
                entries = [e for e in entries if e and e[1] is not None]
                if entries:
                    log.info("claimed %d idle %s events of store %s", len(entries), stream, name)
                    self.inbox.put((name, stream, entries))
                start = nxt.decode() if isinstance(nxt, bytes) else nxt
                if start == "0-0":
                    break
            pending += conn.xpending(stream, GROUP)["pending"]
        metrics.DETECTOR_PENDING.labels(name).set(pending)

    # -- judging -----------------------------------------------------------------------------------
    def run(self) -> None:
        """Batches are judged by a few threads at once, so one slow photo (a hard face search can take
        ten times the usual) does not hold up the batches behind it. Two threads may judge the same
        receipt at once; that is safe for the same reason two detectors are (create-once writes)."""
        self._warm_pool()
        gc.freeze()  # the imports' objects (OpenCV, numpy, FastAPI) out of every later collection
        readers = [
            threading.Thread(target=self._reader, args=(r.name,), name=f"reader-{r.name}", daemon=True)
            for r in self.refs
        ]
        for t in readers:
            t.start()
        judges = concurrent.futures.ThreadPoolExecutor(JUDGES, thread_name_prefix="judge")
        slots = threading.BoundedSemaphore(JUDGES)
        try:
            while not self.stop.is_set():
                try:
                    first = self.inbox.get(timeout=0.2)
                except queue.Empty:
                    self._write_described()  # while idle (the purchase path writes them too)
                    continue
                items = [first]
                while len(items) < 16:
                    try:
                        items.append(self.inbox.get_nowait())
                    except queue.Empty:
                        break
                slots.acquire()
                judges.submit(self._judge_batch, items, slots)
        finally:
            self.stop.set()
            judges.shutdown(wait=True, cancel_futures=True)
            for t in readers:
                t.join(timeout=5)
            if self._pool is not None:
                self._pool.shutdown(cancel_futures=True)

    def _judge_batch(self, items: list, slots: threading.BoundedSemaphore) -> None:
        try:
            self.process(items)
        except StoreUnavailable as e:  # disk full, maxmemory: one line, no traceback; retried
            if str(e) != self._refusal:
                log.warning("%s: verdicts wait (their events stay pending and are retried)", e)
            self._refusal = str(e)
            self.stop.wait(1.0)
        except Exception:  # a bug or a store gone mid-batch: the events stay pending
            log.exception("batch failed; its events stay pending and are retried")
            self.stop.wait(1.0)
        finally:
            for _ in items:
                self.inbox.task_done()
            slots.release()

    def process(self, items: list[tuple[str, str, list]]) -> None:
        """Judge a batch of events (store, stream, entries) and acknowledge them."""
        receipts: dict[str, None] = {}
        acks: dict[tuple[str, str], list] = {}
        about: dict[bytes, str] = {}  # return event id -> its receipt
        for store, stream, entries in items:
            kind = "purchase" if stream == PURCHASES else "return"
            n_ret = {}
            for eid, fields in entries:
                acks.setdefault((store, stream), []).append(eid)
                if fields is None:
                    continue
                if kind == "return":
                    rid = fields.get(b"rcpt", b"").decode()
                    if rid:
                        receipts[rid] = None
                        about[eid] = rid
                    key = (fields.get(b"photo") == b"1", fields.get(b"decision", b"").decode() or "unknown")
                    n_ret[key] = n_ret.get(key, 0) + 1
            metrics.TRANSACTIONS.labels(store, kind).inc(len(entries))
            metrics.DETECTOR_EVENTS.labels(store, kind).inc(len(entries))
            if kind == "purchase":
                indexed = photo_index.index_purchase_events(self.store(store), entries)  # store-wide replays
                self._describe_purchase_photos(store, indexed)
            for (photo, decision), n in n_ret.items():
                metrics.RETURN_ATTEMPTS.labels(store, "present" if photo else "absent", decision).inc(n)
        partial = self.judge(list(receipts)) if receipts else set()
        for (store, stream), ids in acks.items():
            ids = [i for i in ids if about.get(i) not in partial]  # the others stay pending: judged again
            if ids:
                try:
                    self.store(store).r.xack(stream, GROUP, *ids)
                except redis.ResponseError as e:  # XACK writes: refused while the store cannot persist
                    why = unavailable_reason(store, e)
                    if why is None:
                        raise
                    raise StoreUnavailable(why) from None
        with self._lock:
            self.processed += sum(len(e) for _, _, e in items)
        if self._refusal:
            log.info("stores accept verdicts again")
            self._refusal = ""

    def judge(self, rids: list[str]) -> set[str]:
        """Judge receipts with what the reachable stores know; the receipts judged without some
        store are returned: their events stay pending and are judged again (claimed when idle), since
        an attempt at the missing store (the earlier refund of a double return) may change the verdict
        and no new event of the receipt may ever come to trigger it."""
        stores = self.stores.reachable()
        missing = [r.name for r in self.refs if r.name not in stores]
        stories = read_stories(stores, rids)
        for story in stories.values():
            story.unreachable = sorted(set(story.unreachable) | set(missing))
        attempts = [a for st in stories.values() for a in st.attempts.values()]
        stored, velocity = self._read_verdicts_and_velocity(stores, attempts)
        photos = self._photos(stores, stories, stored)
        writes: dict[str, list] = {}
        for story in stories.values():
            judged = judge_receipt(
                story, photos, {a: v["decision"] for a, v in stored.items()}, velocity, self.keys, self.cfg
            )
            for aid, j in judged.items():
                a = story.attempts[aid]
                for w in self._verdict_writes(a, j, stored.get(aid), photos.get(aid), story):
                    writes.setdefault(a.store, []).append(w)
        for store, batch in writes.items():
            if store not in stores:
                raise redis.ConnectionError(f"store {store} is unreachable: its verdicts wait")
            commits = stores[store].write_many([w[1] for w in batch])
            for (kind, _, a, j, extra), c in zip(batch, commits):
                if not c.skipped:
                    self._count(kind, a, j, extra, int(c.clock))
        return {rid for rid, story in stories.items() if story.unreachable}

    def _read_verdicts_and_velocity(self, stores: dict[str, Store], attempts: list[Attempt]):
        stored: dict[str, dict] = {}
        velocity: dict[str, int] = {}
        customers = sorted({a.customer for a in attempts})
        seen: dict[str, set] = {c: set() for c in customers}
        for name, s in stores.items():
            mine = [a for a in attempts if a.store == name]
            pipe = s.r.pipeline(transaction=False)
            for a in mine:
                pipe.hmget(verdict_key(a.id), "decision", "photo", "outcome")
            for c in customers:
                pipe.hvals(customer_returns_key(c))
            res = pipe.execute()
            for a, (decision, photo, out) in zip(mine, res[: len(mine)]):
                if decision:
                    stored[a.id] = {
                        "decision": decision.decode(),
                        "photo": json.loads(photo) if photo else None,
                        "outcome": (out or b"").decode(),
                    }
            for c, vals in zip(customers, res[len(mine) :]):
                seen[c].update(v.decode() for v in vals)
        window_ms = self.cfg.window_seconds * 1000
        for a in attempts:
            t = a.clock // 1000
            velocity[a.id] = sum(1 for v in seen.get(a.customer, ()) if t - window_ms <= _ms(v) <= t + 1000)
        return stored, velocity

    def _photos(
        self, stores: dict[str, Store], stories: dict[str, ReceiptStory], stored: dict[str, dict]
    ) -> dict[str, dict | None]:
        """Photo verdicts: stored ones reused, new ones computed in the worker pool (all at once)."""
        out: dict[str, dict | None] = {}
        todo: list[tuple[Attempt, ReceiptStory]] = []
        for story in stories.values():
            for a in story.attempts.values():
                if not a.photo:
                    continue
                if a.id in stored and stored[a.id]["photo"] is not None:
                    out[a.id] = stored[a.id]["photo"]
                else:
                    todo.append((a, story))
        if not todo:
            return out
        blobs = self._blobs(stores, todo)
        futures = {}
        for a, story in todo:
            purchase = story.receipt.photo if story.receipt else ""
            earlier = [b.photo for b in story.attempts.values() if b.photo and b.clock < a.clock]
            photo = blobs.get(PHOTO_PREFIX + a.photo)
            if photo is None:
                out[a.id] = None  # the photo has not reached any reachable store
                continue
            sources = [self._embedding_source(sha, blobs) for sha in earlier]
            futures[a.id] = self.pool().submit(
                verify_photo,
                photo,
                self._embedding_source(purchase, blobs) if purchase else None,
                [x for x in sources if x is not None],
                self.verify_cfg,
            )
        for aid, f in futures.items():
            p = f.result()
            metrics.PHOTO_VERIFICATION.labels(photo_outcome(p)).observe(p.pop("seconds"))
            for sha, emb in p.pop("embeddings").items():
                self._remember(sha, emb)
            out[aid] = p
        verified = [t for t in todo if t[0].id in futures]
        photo_index.judge_hook(stores, verified, out, self.verify_cfg, self.pool().submit, self.workers)
        return out

    def _describe_purchase_photos(self, store: str, shas: list[str]) -> None:
        """Work out a new purchase photo's embedding and replay print while nothing waits for them, so
        that a return of the receipt finds both instead of deriving them on its verdict's path (~20 ms
        of CPU). At most one photo per worker at a time: a burst of purchases is skipped, not queued
        ahead of return photos (a return derives what is missing, as before)."""
        self._write_described()
        with self._lock:
            room = self.workers - len(self._describing)
            shas = [s for s in dict.fromkeys(shas) if s not in self._embeddings and s not in self._describing]
            shas = shas[: max(0, room)]
            self._describing.update(shas)
        try:
            photos = photo_index.unprinted(self.store(store), shas)
        except (redis.RedisError, OSError) as e:
            log.warning("purchase photos not described at store %s: %s", store, e)
            photos = {}
        with self._lock:
            self._describing.difference_update(set(shas) - set(photos))
        for sha, jpeg in photos.items():
            fut = self.pool().submit(ver.describe_stored, jpeg, self.verify_cfg)
            fut.add_done_callback(lambda f, sha=sha: self._purchase_described(store, sha, f))

    def _purchase_described(self, store: str, sha: str, fut: concurrent.futures.Future) -> None:
        """The pool's callback: cache the embedding; the print is written by the next batch (no store
        round trip on the pool's own thread, which hands back every verification)."""
        prnt = None
        if not fut.cancelled():  # cancelled: the detector is stopping
            try:
                prnt, emb = fut.result()
            except Exception as e:  # a cache only: a return derives what is missing
                log.warning("purchase photo %s not described: %s", sha[:12], e)
            else:
                self._remember(sha, emb)
        with self._lock:
            self._describing.discard(sha)
            if prnt is not None:
                self._described.append((store, sha, prnt))

    def _write_described(self) -> None:
        with self._lock:
            done, self._described = self._described, []
        by_store: dict[str, list] = {}
        for store, sha, prnt in done:
            by_store.setdefault(store, []).append(photo_index.print_writes(prnt, sha))
        for store, writes in by_store.items():
            try:
                self.store(store).write_many(writes)
            except Exception as e:  # a cache: the print is derived again when needed
                log.warning("purchase photo prints not stored at %s: %s", store, e)

    def _embedding_source(self, sha: str, blobs: dict[str, bytes]):
        """What a worker needs for a photo's embedding: the embedding (cached here, or stored by an
        earlier version), else the photo to derive it from; None when neither is known."""
        with self._lock:
            if sha in self._embeddings:
                self._embeddings.move_to_end(sha)
                known = self._embeddings[sha]
                return ("emb", known) if known is not None else None
        if EMB_PREFIX + sha in blobs:
            return ("emb", blobs[EMB_PREFIX + sha])
        if PHOTO_PREFIX + sha in blobs:
            return ("photo", sha, blobs[PHOTO_PREFIX + sha])
        return None

    def _remember(self, sha: str, emb: bytes | None) -> None:
        with self._lock:
            self._embeddings[sha] = emb
            self._embeddings.move_to_end(sha)
            while len(self._embeddings) > EMBEDDING_CACHE:
                self._embeddings.popitem(last=False)

    def _blobs(self, stores: dict[str, Store], todo) -> dict[str, bytes]:
        """The return photos, and for the purchase and earlier photos whose embedding is not cached
        here: the stored embedding (written by earlier versions) and the photo."""
        keys = set()
        with self._lock:
            cached = set(self._embeddings)
        for a, story in todo:
            keys.add(PHOTO_PREFIX + a.photo)
            others = [b.photo for b in story.attempts.values() if b.photo]
            if story.receipt and story.receipt.photo:
                others.append(story.receipt.photo)
            for sha in others:
                if sha not in cached:
                    keys.update((EMB_PREFIX + sha, PHOTO_PREFIX + sha))
        keys = sorted(keys)
        found: dict[str, bytes] = {}
        for s in stores.values():
            missing = [k for k in keys if k not in found]
            if not missing:
                break
            for k, v in zip(missing, s.r.mget(missing)):
                if v is not None:
                    found[k] = v
        return found

    def _warm_pool(self) -> None:
        """Start every worker before the first event: a cold start (spawn, imports, cascades) costs
        about a second, which would land on the first photos' detection latency."""
        futures = [self.pool().submit(time.sleep, 0.2) for _ in range(self.workers)]
        concurrent.futures.wait(futures)

    def pool(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            single_threaded_numerics()  # again, in case the environment changed since the import
            # spawn, not fork: this process has threads (readers, redis connections) by now
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
                initargs=(os.getpid(),),
            )
        return self._pool

    # -- writing -----------------------------------------------------------------------------------
    def _verdict_writes(
        self, a: Attempt, j: Judgement, prior: dict | None, photo: dict | None, story: ReceiptStory
    ) -> list:
        """(kind, operations, attempt, judgement, extra) for each write this judgement needs."""
        reasons = json.dumps(j.reasons)
        fields = {
            "attempt": a.id,
            "receipt": a.receipt,
            "store": a.store,
            "score": j.score,
            "decision": j.decision,
            "reasons": reasons,
            "reason": j.main_reason,
            "detector": self.name,
        }
        ev = {"att": a.id, "rcpt": a.receipt, "decision": j.decision, "score": j.score, "reason": j.main_reason}
        attempts = json.dumps(sorted(story.attempts, key=lambda x: (story.attempts[x].clock, x)))
        alert = {
            **fields,
            "alert": alert_id(a.id),
            "customer": a.customer,
            "terminal": a.terminal,
            "amount": a.amount,
            "attempts": attempts,
        }
        alert_ev = {**ev, "alert": alert_id(a.id)}
        out = []
        if prior is None:
            money = outcome(a.decision, j.decision)
            verdict = {**fields, "photo": json.dumps(photo) if photo else "", "outcome": money}
            out.append(("verdict", [ops.hcreate(verdict_key(a.id), verdict), ops.event(VERDICTS, ev)], a, j, money))
            if j.decision != ALLOW:
                out.append(
                    (
                        "alert",
                        [ops.hcreate(alert_key(alert_id(a.id)), {**alert, "paid": "0"}), ops.event(ALERTS, alert_ev)],
                        a,
                        j,
                        None,
                    )
                )
        elif RANK[j.decision] > RANK.get(prior["decision"], 0):
            paid = "1" if prior.get("outcome") == "refunded" else "0"
            out.append(
                (
                    "escalation",
                    [
                        ops.hset(
                            verdict_key(a.id),
                            {
                                "decision": j.decision,
                                "score": j.score,
                                "reasons": reasons,
                                "reason": j.main_reason,
                                "escalated_from": prior["decision"],
                            },
                        ),
                        ops.event(VERDICTS, ev),
                    ],
                    a,
                    j,
                    prior["decision"],
                )
            )
            if prior["decision"] == ALLOW:
                out.append(
                    (
                        "alert",
                        [ops.hcreate(alert_key(alert_id(a.id)), {**alert, "paid": paid}), ops.event(ALERTS, alert_ev)],
                        a,
                        j,
                        None,
                    )
                )
            else:
                out.append(
                    (
                        "alert-update",
                        [ops.hset(alert_key(alert_id(a.id)), alert), ops.event(ALERTS, alert_ev)],
                        a,
                        j,
                        None,
                    )
                )
        return out

    def _count(self, kind: str, a: Attempt, j: Judgement, extra, clock_us: int) -> None:
        if kind == "verdict":
            metrics.DETECTION_DECISIONS.labels(a.store, j.decision).inc()
            metrics.REFUND_VALUE.labels(a.store, extra).inc(a.amount / 100)
            metrics.DETECTION_LATENCY.labels(a.store).observe(max(0, clock_us - a.clock) / 1e6)
        elif kind == "alert":
            metrics.FRAUD_ALERTS.labels(a.store, j.main_reason, j.decision).inc()


def _ms(element: str) -> int:
    try:
        return int(element.split(":", 1)[0])
    except ValueError:
        return 0
