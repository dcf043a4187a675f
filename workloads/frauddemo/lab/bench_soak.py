"""`frauddemo bench soak`: a bounded load run at a fixed rate for a fixed time, watching for leaks.

The stack is `frauddemo up`'s (supervisor, two stores, a syncer per link, the detection service with
its photo pool, a POS per store and the hacked POS at their own rates), with op logs bounded by
`retention`. This process plays the tills through the same library the POS processes use
(`Till.purchase`, `Till.return_`, `HackedTill.refund`): mostly purchases, some returns with a fresh
photo (a fifth of them at the other store), a few hacked attempts. A scheduler offers one transaction
every 1/rate seconds to a few till threads; a slot that finds them all busy, or that the scheduler
itself reaches more than one slot late, is counted as missed, never made up in a burst. A
dashboard-like client follows `/api/events` and asks `/api/summary` once per interval.

Every interval it samples the RSS (VmRSS), open files and threads of every process in stack.json,
the detector's photo workers and itself, the length of every store's op log and event streams, the
stores' memory (INFO), the links' state, and it scrapes `/metrics`: replication lag and detection
latency percentiles per window come from the deltas of those histograms (interpolated within a
bucket, as PromQL's histogram_quantile does); till latency (the time a till call takes) is timed here.

Growth of a process: median RSS of the last `GROWTH_SAMPLES` samples against the median of the first
`GROWTH_SAMPLES` samples after the warm-up, in percent (medians, so one noisy sample moves nothing).
Stores keep every receipt, attempt and verdict they are given (records are the point of a store), so
their RSS grows with the data by design. For them `growth_pct` is the growth of their RSS per byte the
server has allocated (RSS / MEMORY STATS' total.allocated: Redis' fragmentation ratio): memory the
server holds beyond what it allocated, growing faster than the data, is what a leak or fragmentation
looks like. Its blind spot: a leak inside the server's own allocations (the op logs and event streams
are watched separately for that). Raw RSS, data and what is not data (RSS minus dataset bytes and
keyspace hash tables) are reported beside. `rss_flat`: no process grew by more than FLAT_PCT (a figure
that falls, as a store's ratio does while its data outgrows the allocator's fixed overhead, is no leak).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import multiprocessing
import os
import queue
import random
import statistics
import threading
import time
import urllib.request
from pathlib import Path

import redis
from prometheus_client.parser import text_string_to_metric_families

from ..attack_modes import AttackMode
from ..config import ConfigError, StoreRef
from ..local import Supervisor, read_stack
from ..photos.decode import PhotoRejected
from ..retail import TerminalKeys
from ..secretfiles import read_secret
from ..servers import free_port
from ..store import LOG_KEY, Store
from ..storeset import StoreSet
from ..till import HackedTill, Till, customer_id
from .attacks import attack_photo
from .faces import capture_of, enrol
from .stats import summary

GROWTH_SAMPLES = 3
FLAT_PCT = 10.0
EVENT_RETENTION = 200_000  # store.lua's default cap of every fd:ev:* stream
STREAMS = ("fd:ev:purchases", "fd:ev:returns", "fd:ev:verdicts", "fd:ev:alerts", "fd:ev:labels")
# The soak's hacked till: five attacks, each as likely. DOUBLE_RETURN is a receipt an honest till refunded,
# again: double-return-same-store or -other-store, by where that refund was.
DOUBLE_RETURN = "double-return"
HACKED_MODES = (
    AttackMode.NO_PHOTO,
    AttackMode.MISMATCHED_PHOTO,
    AttackMode.REPLAYED_PHOTO,
    DOUBLE_RETURN,
    AttackMode.UNKNOWN_RECEIPT,
)
RETURN_MIN_AGE_S = 1.0  # a receipt is returned once it has had time to replicate
MAX_ERROR_TEXTS = 10


@dataclasses.dataclass(frozen=True)
class SoakConfig:
    rate: float = 200.0  # transactions offered per second, all stores together
    duration: float = 600.0  # seconds of load
    warmup: float | None = None  # default: a fifth of the duration, at most 60 s
    interval: float | None = None  # default: 10 s, or less so that >= 6 samples follow the warm-up
    retention: int = 20_000  # op-log entries each store keeps
    identities: int = 150  # distinct faces (photos are rendered before the clock)
    customers: int = 5_000  # customers share the faces: velocity stays realistic
    return_captures: int = 2  # return photos rendered per face
    return_share: float = 0.08
    hacked_share: float = 0.02
    cross_store_share: float = 0.2
    tills: int = 6  # till threads
    pos_rate: float = 2.0  # the supervisor's own POS processes, as `frauddemo up` runs them
    hacked_pos_rate: float = 0.2
    seed: int = 11

    def resolved(self) -> SoakConfig:
        """Defaults filled in and every value checked; a ConfigError says what is wrong."""
        for name in ("rate", "duration", "interval", "warmup"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise ConfigError(f"--{name} must be a finite number, got {v!r}")
        if self.rate <= 0:
            raise ConfigError(f"--rate must be > 0 transactions per second, got {self.rate:g}")
        if self.duration <= 0:
            raise ConfigError(f"--duration must be > 0 seconds, got {self.duration:g}")
        warmup = min(60.0, self.duration / 5) if self.warmup is None else self.warmup
        if warmup < 0:
            raise ConfigError(f"--warmup must be >= 0 seconds, got {warmup:g}")
        if warmup >= self.duration:
            raise ConfigError(f"--warmup ({warmup:g} s) must be shorter than --duration ({self.duration:g} s)")
        interval = min(10.0, (self.duration - warmup) / 6) if self.interval is None else self.interval
        if interval <= 0:
            raise ConfigError(f"--interval must be > 0 seconds, got {interval:g}")
        if (self.duration - warmup) < 2 * interval:
            raise ConfigError(
                f"the run after the warm-up ({self.duration - warmup:g} s) must hold at least two "
                f"sampling intervals ({interval:g} s each)"
            )
        if self.identities < 2 or self.customers < self.identities:
            raise ConfigError("the soak needs at least two faces and at least as many customers as faces")
        if self.retention < 100:
            raise ConfigError(f"--retention must be at least 100 op-log entries, got {self.retention}")
        return dataclasses.replace(self, warmup=warmup, interval=interval)


# -- small measuring helpers ---------------------------------------------------------------------------
def proc_stats(pid: int) -> dict | None:
    """RSS (MB), threads and open files of a live process; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    f = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if f.get("State", "").strip().startswith("Z"):
        return None
    return {"rss_mb": int(f["VmRSS"].split()[0]) / 1024, "threads": int(f["Threads"]), "fds": fds}


def children_of(pids: set[int]) -> dict[int, int]:
    """{child pid: parent pid} of every live process whose parent is in `pids`."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid in pids:
            out[int(d)] = ppid
    return out


def child_kind(pid: int) -> str:
    """'resource-tracker' (multiprocessing's), 'fork' (a store's background save or AOF rewrite) or
    'worker' (anything else: the detector's photo pool)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "worker"
    if b"resource_tracker" in cmdline:
        return "resource-tracker"
    return "fork" if b"valkey" in cmdline or b"redis" in cmdline else "worker"


def data_mb(stats: dict) -> float:
    """What a store holds because of the records it was given (MEMORY STATS): the values and the
    keyspace's hash tables, which grow with the key count by design."""
    db = stats.get("db.0") or {}
    table = (
        db.get("overhead.hashtable.main", 0)
        + db.get("overhead.hashtable.expires", 0)
        + stats.get("overhead.db.hashtable.lut", 0)
    )
    return (stats["dataset.bytes"] + table) / 2**20


def bucket_quantile(q: float, bounds: list[float], counts: list[float]) -> float | None:
    """The q-quantile of a histogram's cumulative bucket counts (le bounds ascending, +Inf last),
    linearly interpolated within the bucket, as histogram_quantile does; None without observations."""
    total = counts[-1] if counts else 0
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in zip(bounds, counts):
        if count >= rank:
            if math.isinf(bound):
                return prev_bound  # above the highest finite bucket: its bound is all we know
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound


def histograms(text: str, names: tuple[str, ...]) -> dict[str, dict[float, float]]:
    """{histogram name: {le: cumulative count summed over every label set}} from /metrics text."""
    out: dict[str, dict[float, float]] = {n: collections.defaultdict(float) for n in names}
    for fam in text_string_to_metric_families(text):
        if fam.name in out:
            for s in fam.samples:
                if s.name.endswith("_bucket"):
                    out[fam.name][float(s.labels["le"])] += s.value
    return out


def window_quantiles(before: dict[float, float], after: dict[float, float]) -> dict:
    """p50/p95/p99 (ms) and the count of what a histogram observed between two scrapes."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    out = {}
    for label, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        v = bucket_quantile(q, bounds, counts)
        out[label] = None if v is None else round(v * 1000, 3)
    out["samples"] = int(counts[-1]) if counts else 0
    return out


def growth(samples: list[tuple[float, float]], after: float) -> dict:
    """Growth of a sampled value after `after` seconds: medians of the first and last few samples."""
    values = [v for t, v in samples if t >= after]
    if len(values) < 2:
        return {"after_warmup": None, "end": None, "growth_pct": None}
    k = max(1, min(GROWTH_SAMPLES, len(values) // 3))
    first, last = statistics.median(values[:k]), statistics.median(values[-k:])
    pct = (last - first) / first * 100 if first > 0 else None
    return {
        "after_warmup": round(first, 2),
        "end": round(last, 2),
        "growth_pct": None if pct is None else round(pct, 2),
    }


# -- the tills ----------------------------------------------------------------------------------------
class Tills:
    """Till threads at every store taking slots from a fixed-rate scheduler; per-window tallies."""

    def __init__(self, cfg: SoakConfig, stores: dict[str, Store], keys: TerminalKeys, photos: dict):
        self.cfg, self.stores = cfg, stores
        self.names = sorted(stores)
        self.tills = {n: Till(s, keys, f"{n}-soak-1") for n, s in stores.items()}
        hacked_at = self.names[1]
        self.hacked = HackedTill(stores[hacked_at], keys, f"{hacked_at}-soak-9")
        self.purchase_photo, self.return_photos = photos["purchase"], photos["returns"]
        self.fresh: collections.deque = collections.deque(maxlen=20_000)  # (t, rid, store, customer)
        self.returned: collections.deque = collections.deque(maxlen=2_000)  # (rid, store, customer)
        self.slots: queue.Queue = queue.Queue(maxsize=cfg.tills)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self._reset_window()
        self.totals = collections.Counter()
        self.error_texts: dict[str, int] = {}

    def _reset_window(self) -> None:
        self.latencies: list[float] = []
        self.counts = collections.Counter()

    def take_window(self) -> tuple[list[float], collections.Counter]:
        with self.lock:
            out = self.latencies, self.counts
            self._reset_window()
        return out

    def _record(self, kind: str, seconds: float | None, error: str | None = None) -> None:
        with self.lock:
            if error is None:
                self.latencies.append(seconds * 1e6)
                self.counts[kind] += 1
                self.totals[kind] += 1
            else:
                self.counts["errors"] += 1
                self.totals["errors"] += 1
                if error in self.error_texts or len(self.error_texts) < MAX_ERROR_TEXTS:
                    self.error_texts[error] = self.error_texts.get(error, 0) + 1

    def _missed(self, n: int) -> None:
        with self.lock:
            self.counts["missed"] += n
            self.totals["missed"] += n

    # -- one transaction of each kind ----------------------------------------------------------------
    def face(self, customer: str) -> int:
        return int(customer.split("-")[1]) % self.cfg.identities

    def purchase(self, rng: random.Random) -> str:
        store = rng.choice(self.names)
        customer = customer_id(rng.randrange(self.cfg.customers))
        items = {rng.choice(("shirt", "jeans", "jacket", "shoes", "scarf", "cap")): rng.randint(1, 2)}
        p = self.tills[store].purchase(customer, items, self.purchase_photo[self.face(customer)])
        self.fresh.append((time.monotonic(), p["receipt"], store, customer))
        return "purchase"

    def _old_receipt(self):
        try:
            t, *rest = self.fresh.popleft()
        except IndexError:
            return None
        if time.monotonic() - t < RETURN_MIN_AGE_S:
            self.fresh.appendleft((t, *rest))
            return None
        return rest

    def return_(self, rng: random.Random) -> str | None:
        got = self._old_receipt()
        if got is None:
            return None
        rid, store, customer = got
        if rng.random() < self.cfg.cross_store_share:
            store = rng.choice([n for n in self.names if n != store])
        photo = rng.choice(self.return_photos[self.face(customer)])
        self.tills[store].return_(rid, photo)
        self.returned.append((rid, store, customer))
        return "return"

    def hacked_attempt(self, rng: random.Random) -> str | None:
        mode = rng.choice(HACKED_MODES)
        here = self.hacked.store.replica
        if mode == AttackMode.UNKNOWN_RECEIPT:
            customer = customer_id(rng.randrange(self.cfg.customers))
            rid, sources = f"r-unknown-{rng.getrandbits(64):016x}", {}
        elif mode == DOUBLE_RETURN:
            if not self.returned:
                return None
            rid, first, customer = self.returned[rng.randrange(len(self.returned))]
            mode = AttackMode.DOUBLE_RETURN_SAME_STORE if first == here else AttackMode.DOUBLE_RETURN_OTHER_STORE
            sources = {"capture": rng.choice(self.return_photos[self.face(customer)])}
        else:
            got = self._old_receipt()
            if got is None:
                return None
            rid, _, customer = got
            face = self.face(customer)
            other = (face + 1 + rng.randrange(self.cfg.identities - 1)) % self.cfg.identities
            sources = {"purchase": self.purchase_photo[face], "other": self.purchase_photo[other]}
        self.hacked.refund(rid, customer, 4999, attack_photo(mode, **sources), mode)
        return "hacked"

    # -- threads -------------------------------------------------------------------------------------
    def till_thread(self, k: int) -> None:
        rng = random.Random(self.cfg.seed * 1000 + k)
        cfg = self.cfg
        while True:
            slot = self.slots.get()
            if slot is None:
                return
            u = rng.random()
            t0 = time.perf_counter()
            try:
                kind = None
                if u < cfg.hacked_share:
                    kind = self.hacked_attempt(rng)
                elif u < cfg.hacked_share + cfg.return_share:
                    kind = self.return_(rng)
                if kind is None:
                    kind = self.purchase(rng)
                self._record(kind, time.perf_counter() - t0)
            except (redis.RedisError, OSError, PhotoRejected, ValueError) as e:
                self._record("", None, f"{type(e).__name__}: {str(e)[:160]}")

    def schedule(self, t0: float, seconds: float) -> None:
        """Offer a slot every 1/rate s from t0 for `seconds`; late or unserved slots are missed."""
        gap = 1.0 / self.cfg.rate
        n = int(seconds * self.cfg.rate)
        i = 0
        while i < n and not self.stop.is_set():
            due = t0 + i * gap
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
                now = time.monotonic()
            late = int((now - due) / gap)
            if late >= 1:  # the scheduler itself fell behind: skip, never burst
                late = min(late, n - i)
                self._missed(late)
                i += late
                continue
            try:
                self.slots.put_nowait(i)
            except queue.Full:
                self._missed(1)
            i += 1


# -- the dashboard-like client ----------------------------------------------------------------------
class EventsClient:
    """Follows /api/events the way the dashboard does, counting what arrives."""

    def __init__(self, url: str):
        self.url, self.events, self.errors = url, 0, 0
        self.stop = threading.Event()
        self.resp = None

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.resp = urllib.request.urlopen(self.url + "/api/events", timeout=30)
                for line in self.resp:
                    if self.stop.is_set():
                        break
                    if line.startswith(b"event:"):
                        self.events += 1
            except (OSError, ValueError, AttributeError):
                if not self.stop.is_set():
                    self.errors += 1
                    self.stop.wait(1.0)

    def close(self) -> None:
        self.stop.set()
        if self.resp is not None:
            try:
                self.resp.close()
            except Exception:  # closing a socket another thread reads may raise anything
                pass


def _get(url: str, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


# -- the run ------------------------------------------------------------------------------------------
def render_photos(cfg: SoakConfig) -> dict:
    """Each face's purchase photo (a usable capture) and its return captures, rendered on every core
    before the clock starts (the synthetic camera stands for a physical one)."""
    faces = [customer_id(k) for k in range(cfg.identities)]
    jobs = [(f, 1000 + j) for f in faces for j in range(cfg.return_captures)]
    with multiprocessing.get_context("spawn").Pool() as pool:
        purchase = [jpeg for jpeg, _ in pool.map(enrol, faces, chunksize=4)]
        captures = pool.map(capture_of, jobs, chunksize=4)
    returns = [captures[k * cfg.return_captures : (k + 1) * cfg.return_captures] for k in range(cfg.identities)]
    return {"purchase": purchase, "returns": returns}


class Soak:
    def __init__(self, cfg: SoakConfig, log=lambda m: None):
        self.cfg, self.log = cfg, log
        self.samples: dict[str, list] = collections.defaultdict(list)  # name -> [(t, stats)]
        self.store_mem: dict[str, list] = collections.defaultdict(list)  # store -> [(t, info)]
        self.stream_len: dict[str, dict[str, list]] = collections.defaultdict(lambda: collections.defaultdict(list))
        self.windows: list[dict] = []
        self.worker_names: dict[int, str] = {}
        self.stack_names: set[str] = set()
        self.link_peaks = {"backlog": 0, "resyncs": 0, "not_up": 0}

    def start(self) -> None:
        cfg = self.cfg
        self.photos = render_photos(cfg)
        self.sup = Supervisor(
            ["a", "b"],
            port=free_port(),
            headless=True,
            retention=cfg.retention,
            rate=cfg.pos_rate,
            hacked_rate=cfg.hacked_pos_rate,
        )
        self.sup.start()
        self.sup.wait_ready()
        self.stores = {n: Store.connect(spec.url, spec.password) for n, spec in self.sup.servers.items()}
        self.node_entries = int(self.stores["a"].r.config_get("stream-node-max-entries")["stream-node-max-entries"])
        keys = TerminalKeys.from_secret(read_secret(self.sup.terminal_key_file))
        self.tills = Tills(cfg, self.stores, keys, self.photos)
        self.events = EventsClient(self.sup.service_url)
        self.links = StoreSet([StoreRef(n, spec.url, spec.password) for n, spec in self.sup.servers.items()])

    def stop(self) -> None:
        for s in getattr(self, "stores", {}).values():
            s.close()
        if hasattr(self, "links"):
            self.links.close()
        if hasattr(self, "sup"):
            self.sup.stop()
            self.sup.cleanup()

    # -- sampling ------------------------------------------------------------------------------------
    def processes(self) -> dict[str, int]:
        """name -> pid: stack.json's processes, the children they spawned (the detector's photo
        workers) and this process."""
        named = {name: p["pid"] for name, p in read_stack(self.sup.data_dir).items() if p["pid"]}
        self.stack_names.update(named)
        by_pid = {pid: name for name, pid in named.items()}
        for child, parent in sorted(children_of(set(by_pid)).items()):
            if child not in self.worker_names:
                kind = child_kind(child)
                n = sum(1 for v in self.worker_names.values() if v.startswith(f"{by_pid[parent]}.{kind}"))
                self.worker_names[child] = f"{by_pid[parent]}.{kind}-{n + 1}"
            named[self.worker_names[child]] = child
        named["bench"] = os.getpid()
        return named

    def sample(self, t: float) -> None:
        for name, pid in self.processes().items():
            st = proc_stats(pid)
            if st is not None:
                self.samples[name].append((t, {**st, "pid": pid}))
        for name, s in self.stores.items():
            try:
                stats = s.r.memory_stats()
                pipe = s.r.pipeline(transaction=False)
                for stream in (LOG_KEY,) + STREAMS:
                    pipe.xlen(stream)
                lens = pipe.execute()
            except (redis.RedisError, OSError):
                continue
            self.store_mem[name].append(
                (
                    t,
                    {
                        "used_memory_mb": stats["total.allocated"] / 2**20,
                        "data_mb": data_mb(stats),
                        "keys": stats["keys.count"],
                    },
                )
            )
            for stream, n in zip((LOG_KEY,) + STREAMS, lens):
                self.stream_len[name][stream].append((t, n))
        for link in self.links.status()["links"]:
            self.link_peaks["backlog"] = max(self.link_peaks["backlog"], link["backlog"])
            self.link_peaks["resyncs"] = max(self.link_peaks["resyncs"], link["resyncs"])
            self.link_peaks["not_up"] += link["state"] != "up"

    def scrape(self) -> dict:
        text = _get(self.sup.service_url + "/metrics").decode()
        return histograms(text, ("frauddemo_replication_lag_seconds", "frauddemo_detection_latency_seconds"))

    # -- the load --------------------------------------------------------------------------------------
    def run(self) -> dict:
        cfg = self.cfg
        tills = self.tills
        threads = [
            threading.Thread(target=tills.till_thread, args=(k,), daemon=True, name=f"till-{k}")
            for k in range(cfg.tills)
        ]
        ev_thread = threading.Thread(target=self.events.run, daemon=True, name="events")
        for th in threads + [ev_thread]:
            th.start()
        self.sample(0.0)
        hist = self.scrape()
        t0 = time.monotonic()
        sched = threading.Thread(target=tills.schedule, args=(t0, cfg.duration), daemon=True, name="scheduler")
        sched.start()
        summary_errors = 0
        k = 1
        while True:
            t_next = k * cfg.interval
            end = t_next >= cfg.duration - 1e-9
            t_next = min(t_next, cfg.duration)
            while (remaining := t0 + t_next - time.monotonic()) > 0:
                time.sleep(min(remaining, 0.5))
                self.sup.poll()  # a child that dies is restarted, and counted below
            t = round(time.monotonic() - t0, 2)
            lat, counts = tills.take_window()
            try:
                new_hist = self.scrape()
                _get(self.sup.service_url + "/api/summary")
            except OSError:
                summary_errors += 1
                new_hist = hist
            span = t - (self.windows[-1]["t"] if self.windows else 0.0)
            tx = sum(counts[k2] for k2 in ("purchase", "return", "hacked"))
            self.windows.append(
                {
                    "t": t,
                    "tx": tx,
                    "tx_per_s": round(tx / span, 1) if span > 0 else None,
                    "purchases": counts["purchase"],
                    "returns": counts["return"],
                    "hacked": counts["hacked"],
                    "errors": counts["errors"],
                    "missed": counts["missed"],
                    "latency_ms": summary(lat, scale=1e-3),
                    "lag_ms": window_quantiles(
                        hist["frauddemo_replication_lag_seconds"], new_hist["frauddemo_replication_lag_seconds"]
                    ),
                    "detection_ms": window_quantiles(
                        hist["frauddemo_detection_latency_seconds"], new_hist["frauddemo_detection_latency_seconds"]
                    ),
                }
            )
            hist = new_hist
            self.sample(t)
            w = self.windows[-1]
            self.log(
                f"t={t:.0f}s tx/s={w['tx_per_s']} lat p99={w['latency_ms']['p99']} ms "
                f"lag p99={w['lag_ms']['p99']} ms det p99={w['detection_ms']['p99']} ms "
                f"errors={w['errors']} missed={w['missed']}"
            )
            if end:
                break
            k += 1
        sched.join()
        load_s = time.monotonic() - t0
        for _ in threads:
            tills.slots.put(None)
        for th in threads:
            th.join(60)
        drain_s, unjudged = self.drain()
        self.events.close()
        self.sup.poll()
        return self.report(load_s, drain_s, unjudged, summary_errors)

    def drain(self, timeout: float = 120.0) -> tuple[float, int]:
        """Until the detector has consumed and acknowledged every event; what is left after `timeout`."""
        t0 = time.monotonic()
        while True:
            left = 0
            for s in self.stores.values():
                for g in (s.r.xinfo_groups(stream) for stream in ("fd:ev:purchases", "fd:ev:returns")):
                    for grp in g:
                        left += int(grp.get("pending", 0)) + int(grp.get("lag") or 0)
            if left == 0 or time.monotonic() - t0 > timeout:
                return round(time.monotonic() - t0, 2), left
            time.sleep(0.2)

    # -- the report ------------------------------------------------------------------------------------
    def report(self, load_s: float, drain_s: float, unjudged: int, summary_errors: int) -> dict:
        cfg = self.cfg
        after = cfg.warmup
        stores = set(self.stores)
        processes = {}
        for name, rows in sorted(self.samples.items()):
            rss = [(t, s["rss_mb"]) for t, s in rows]
            g = growth(rss, after)
            entry = {
                "pid": rows[-1][1]["pid"],
                "rss_mb_after_warmup": g["after_warmup"],
                "rss_mb_end": g["end"],
                "growth_pct": g["growth_pct"],
                "fds": growth([(t, s["fds"]) for t, s in rows], after),
                "threads": growth([(t, s["threads"]) for t, s in rows], after),
                "samples": [[t, round(v, 2)] for t, v in rss],
            }
            store = name.removeprefix("store-")
            if name.startswith("store-") and store in stores:
                mem = dict(self.store_mem[store])
                og = growth([(t, v - mem[t]["data_mb"]) for t, v in rss if t in mem], after)
                ratio = growth([(t, v / mem[t]["used_memory_mb"]) for t, v in rss if t in mem], after)
                entry.update(
                    {
                        "rss_growth_pct": g["growth_pct"],
                        "growth_pct": ratio["growth_pct"],
                        "rss_per_used_memory": ratio,
                        "non_data_mb": og,
                        "data_mb": growth([(t, m["data_mb"]) for t, m in mem.items()], after),
                        "used_memory_mb": growth([(t, m["used_memory_mb"]) for t, m in mem.items()], after),
                        "keys": growth([(t, m["keys"]) for t, m in mem.items()], after),
                    }
                )
            processes[name] = entry
        judged = {n: p["growth_pct"] for n, p in processes.items() if p["growth_pct"] is not None}
        worst = max(judged, key=lambda n: judged[n]) if judged else None
        # every process of the stack (and this one) must have a figure; a child seen in fewer than two
        # samples after the warm-up (a store's fork for an AOF rewrite) is listed, not judged
        required = set(self.stack_names) | {"bench"}
        transient = sorted(n for n in processes if n not in judged and n not in required)
        bound = cfg.retention + self.node_entries  # MAXLEN ~ trims whole stream nodes
        oplog = {}
        streams = {}
        for store, by_stream in sorted(self.stream_len.items()):
            lens = [n for _, n in by_stream[LOG_KEY]]
            oplog[store] = {"max": max(lens), "end": lens[-1], "retention": cfg.retention, "bound": bound}
            streams[store] = {
                s: {
                    "max": max(n for _, n in by_stream[s]),
                    "end": by_stream[s][-1][1],
                    "bound": EVENT_RETENTION + self.node_entries,
                }
                for s in STREAMS
            }
        totals = self.tills.totals
        tx = totals["purchase"] + totals["return"] + totals["hacked"]
        post = [w for w in self.windows if w["t"] > after]
        post_tx = sum(w["tx"] for w in post)
        post_s = post[-1]["t"] - after if post else 0
        restarts = {p.name: p.restarts for p in self.sup.children if p.restarts}
        return {
            "benchmark": "soak",
            "rate_tx_per_s": {
                "offered": cfg.rate,
                "achieved": round(tx / load_s, 1),
                "achieved_after_warmup": round(post_tx / post_s, 1) if post_s > 0 else None,
            },
            "duration_s": round(load_s, 1),
            "warmup_s": after,
            "interval_s": cfg.interval,
            "transactions": {
                "purchases": totals["purchase"],
                "returns": totals["return"],
                "hacked": totals["hacked"],
                "total": tx,
            },
            "processes": processes,
            "max_growth_pct": judged[worst] if worst else None,
            "max_growth_process": worst,
            "rss_flat": required <= set(judged) and all(v <= FLAT_PCT for v in judged.values()),
            "transient_processes": transient,
            "flat_within_pct": FLAT_PCT,
            "oplog_len": oplog,
            "oplog_bounded": all(o["max"] <= o["bound"] for o in oplog.values()),
            "event_streams": streams,
            "links": {
                "max_backlog": self.link_peaks["backlog"],
                "resyncs": self.link_peaks["resyncs"],
                "samples_not_up": self.link_peaks["not_up"],
            },
            "windows": self.windows,
            "drain_s": drain_s,
            "errors": {
                "failed": totals["errors"],
                "missed_slots": totals["missed"],
                "unjudged_events": unjudged,
                "restarts": restarts,
                "api_errors": summary_errors + self.events.errors,
                "messages": dict(self.tills.error_texts),
            },
            "sse_events": self.events.events,
            "config": {k: v for k, v in dataclasses.asdict(cfg).items()},
        }


def run(
    rate: float = 200.0,
    duration: float = 600.0,
    warmup: float | None = None,
    interval: float | None = None,
    retention: int = 20_000,
    log=lambda m: None,
    **kw,
) -> dict:
    cfg = SoakConfig(
        rate=rate, duration=duration, warmup=warmup, interval=interval, retention=retention, **kw
    ).resolved()
    soak = Soak(cfg, log)
    try:
        soak.start()
        return soak.run()
    finally:
        soak.stop()
