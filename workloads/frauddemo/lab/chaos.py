"""`frauddemo chaos`: fault injection against a local stack while tills trade, then a checker.

The stack is `frauddemo up`'s (local.Supervisor, restarting children fast). While this process plays
tills at every store, faults are injected at random (seeded) from `<data-dir>/stack.json`:
  kill_store     SIGKILL a store (the supervisor restarts it; it reloads its AOF)
  restart_store  SIGTERM a store (a clean shutdown; restarted from its AOF)
  pause_store    SIGSTOP a store for longer than the tills' socket timeout, then SIGCONT
  partition      set `fd:pause:<source>` on the target of one link (its syncer holds), then delete it
  kill_syncer, kill_detector, kill_pos   SIGKILL one such process (restarted by the supervisor)
  clock_skew     restart a store (SIGTERM, its AOF reloaded) with its clock `skew_s` off, ahead or behind
                 (libfaketime), for `skew_hold_s`, then restart it with the true clock; skipped with a
                 reason in the report when libfaketime is not installed, refused when asked for by name
Each kind gets the same number of faults (clock_skew its own, fewer: `skews_per_s`), spread over the
run with a random offset each; a store takes one store fault at a time, so faults of different targets
overlap freely. While a clock is off, a share of the tills' steps are window races (a receipt returned
at two stores at once, the accomplice's honest-looking return first): what a clock would order wrongly.

Acknowledged: a till call that returned success (a receipt or an attempt id back from the store's
fd_write). The stores run with `appendfsync always` here (the default `--fsync`): the server writes
and fsyncs the AOF before it replies, so nothing acknowledged can be lost by a kill -9 or a crash of
the machine. `--fsync everysec` (what `frauddemo up` uses) makes no such promise: measured here, a
120 s run with 107 store kills and restarts lost one acknowledged purchase at the store that took it
(it never reached the AOF) before any syncer had copied it.
A call that fails or times out is not acknowledged: it may or may not have been applied.

Ground truth of fraud (each the attempt of a receipt this process bought, acknowledged):
  no-photo, replayed-photo, unknown-receipt       a hacked till's refunds (facts: always blocked)
  double-return-other-store                        a hacked refund of a receipt refunded at another store
  window-race                                      an accomplice's return at one store, then at once a
                                                   hacked refund of the same receipt at another
  double-return-visible                            a second return at a legitimate till of a receipt
                                                   whose approved refund this store already holds; the
                                                   store must refuse it ("double_refunds" counts the
                                                   approvals), and the detector must still alert
  concurrent-return                                two tills of one store return a receipt at the same
                                                   moment: the one beside the refund (or held return)
                                                   is the fraud; two approvals are a double refund
Every fraud needs exactly one alert (`h:alert:al-<attempt>` on every store); no honest attempt (every
other one: legitimate returns, the accomplice's, the first of two concurrent ones) may be blocked
(`honest_blocked`; `attempts_during_skew` says how many attempts were acknowledged while a clock was off). Duplicated alerts are
alert events repeated in the stores' `fd:ev:alerts` streams (same alert id and decision): what a
person watching the dashboard would be shown twice.

After the last fault every paused store is continued, every partition healed and every killed
process restarted; `converge_s` runs from then until every store has merged everything every store
had logged by then. The tills' calls in flight at the heal return `tills_stop_s` later (photo checks
are slow on a loaded machine); `tills_converge_s` is the same measure from then. The detector,
catching up after its last kill, goes on writing verdicts for a while (`caught_up_s` waits for those
too). The checker then waits for the detector to finish and compares the stores field by field (every
h:/s:/x:/c:/b: key).
The tills' client resends nothing: redis-py 8 by default resends a command that failed on a
connection error or timeout up to 10 times (backing off up to 1 s), which would hide a paused store
from the tills and make a call take seconds to fail. `repeated_writes` counts purchases and attempts
whose event a store logged twice: one call applied twice (what such resends can do to a write).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import heapq
import logging
import math
import os
import random
import signal
import threading
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..attack_modes import AttackMode
from ..config import ConfigError, check_name
from ..ids import new_id
from ..local import Supervisor, read_stack
from ..photos.storage import PHOTO_PREFIX
from ..procs import alive
from ..retail import (
    ALERTS,
    APPROVED,
    PURCHASES,
    REFUSED,
    RETURNS,
    TerminalKeys,
    alert_key,
    attempt_key,
    attempts_key,
    price,
    receipt_key,
    verdict_key,
)
from ..secretfiles import read_secret, write_secret
from ..servers import free_port
from ..store import Store, StoreError
from ..syncer import pause_key
from ..till import HackedTill, Till
from .attacks import attack_photo
from .faces import usable_captures

log = logging.getLogger("frauddemo.chaos")

KINDS = (
    "kill_store",
    "kill_syncer",
    "kill_detector",
    "kill_pos",
    "pause_store",
    "partition",
    "restart_store",
    "clock_skew",
)
STORE_KINDS = ("kill_store", "pause_store", "restart_store", "clock_skew")
# libfaketime (tools/system-deps.sh installs it): where Debian and Ubuntu put it, or $FRAUDDEMO_FAKETIME_LIB
FAKETIME_ENV = "FRAUDDEMO_FAKETIME_LIB"
FAKETIME_LIBS = (
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
    "/usr/local/lib/faketime/libfaketime.so.1",
)
SKEW_RACE_P = 0.3  # while a clock is off, the share of till steps that are window races (two stores)
SKEW_START_S = 30.0  # a server that does not come back with its clock off in this long is restarted true
# the hacked till's attacks in chaos (mismatched photos and same-store double returns are left to the benches)
HACKED_MODES = (
    AttackMode.NO_PHOTO,
    AttackMode.REPLAYED_PHOTO,
    AttackMode.UNKNOWN_RECEIPT,
    AttackMode.DOUBLE_RETURN_OTHER_STORE,
    AttackMode.WINDOW_RACE,
)
DETECTOR_GROUP = "detectors"
TICK_S = 0.05
MAX_IDS = 10  # ids listed in the report per kind of failure


@dataclasses.dataclass(frozen=True)
class ChaosConfig:
    duration: float = 120.0  # seconds of faults and traffic
    seed: int = 1
    stores: tuple[str, ...] = ("a", "b")
    faults_per_s: float = 0.45  # of each kind: 54 of every kind in 120 s
    tx_rate: float = 16.0  # transactions per second offered by this process's tills, all stores
    pause_s: tuple[float, float] = (0.6, 1.0)  # SIGSTOP length; the tills' socket timeout is shorter
    partition_s: tuple[float, float] = (0.3, 1.2)
    till_timeout_s: float = 0.5
    fsync: str = "always"
    settle_s: float = 120.0  # how long the checker waits for convergence and the detector
    faces: int = 6
    customers: int = 300
    pos_rate: float = 2.0  # the supervisor's own POS processes (kill_pos targets)
    hacked_pos_rate: float = 0.2
    backoff: tuple[float, float] = (0.1, 0.4)  # the supervisor's restart backoff
    skew_s: float = 30.0  # clock_skew: how far off a store's clock runs (ahead or behind, seeded)
    skew_hold_s: tuple[float, float] = (2.0, 4.0)  # clock_skew: how long it runs so
    skews_per_s: float = 0.05  # clock_skew faults (each holds a store for seconds): 6 in 120 s
    kinds: tuple[str, ...] | None = None  # the fault kinds injected (None: every kind that can run here)
    data_dir: str | None = None

    def resolved(self) -> ChaosConfig:
        for name in ("duration", "faults_per_s", "skews_per_s", "tx_rate", "till_timeout_s", "settle_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ConfigError(f"{name.replace('_', '-')} must be a positive number, got {v!r}")
        if len(self.stores) < 2 or len(set(self.stores)) != len(self.stores):
            raise ConfigError("chaos needs at least two distinct stores (--stores a,b)")
        for s in self.stores:
            check_name(s)
        if self.fsync not in ("always", "everysec"):
            raise ConfigError(f"--fsync must be always or everysec, got {self.fsync!r}")
        if not 0 < self.pause_s[0] <= self.pause_s[1] or not 0 < self.partition_s[0] <= self.partition_s[1]:
            raise ConfigError("pause and partition lengths must be positive ranges")
        if self.data_dir and Path(self.data_dir).exists() and any(Path(self.data_dir).iterdir()):
            raise ConfigError(f"--data-dir {self.data_dir} is not empty: chaos checks a fresh stack")
        if self.pause_s[0] <= self.till_timeout_s:
            raise ConfigError("a store pause must last longer than the tills' socket timeout")
        if isinstance(self.skew_s, bool) or not isinstance(self.skew_s, (int, float)) or not 0 < self.skew_s < 1e8:
            raise ConfigError(f"skew-s must be a positive number of seconds, got {self.skew_s!r}")
        if not 0 < self.skew_hold_s[0] <= self.skew_hold_s[1]:
            raise ConfigError("the clock skew's length must be a positive range")
        if self.kinds is not None:
            unknown = [k for k in self.kinds if k not in KINDS]
            if unknown or not self.kinds:
                raise ConfigError(f"unknown fault kinds {unknown}: choose from {', '.join(KINDS)}")
            if "clock_skew" in self.kinds and faketime_lib() is None:
                raise ConfigError(f"clock_skew needs {SKIP_CLOCK_SKEW}")
        return self

    def active_kinds(self) -> tuple[tuple[str, ...], dict[str, str]]:
        """The kinds this run injects, and the kinds it skips with the reason (clock_skew without
        libfaketime, when no kinds were asked for)."""
        if self.kinds is not None:
            return tuple(dict.fromkeys(self.kinds)), {}
        if faketime_lib() is None:
            return tuple(k for k in KINDS if k != "clock_skew"), {"clock_skew": f"skipped: it needs {SKIP_CLOCK_SKEW}"}
        return KINDS, {}


SKIP_CLOCK_SKEW = (
    f"libfaketime, not found at {FAKETIME_LIBS[0]} or the like (tools/system-deps.sh installs it; "
    f"${FAKETIME_ENV} names another path)"
)


def faketime_lib() -> str | None:
    """libfaketime's path, or None when it is not installed."""
    env = os.environ.get(FAKETIME_ENV)
    return next((p for p in ((env,) if env else FAKETIME_LIBS) if os.path.isfile(p)), None)


def faketime_env(lib: str, skew_s: float) -> dict[str, str]:
    """A store server's extra environment for a clock `skew_s` seconds off (negative: behind). The
    allocator stays libc's: libfaketime and a preloaded mimalloc crash together."""
    return {
        "LD_PRELOAD": lib,
        "FAKETIME": f"{skew_s:+g}s",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",  # the server's timers keep time; its wall clock is off
        "FRAUDDEMO_SERVER_MALLOC": "libc",
    }


# -- the stack -------------------------------------------------------------------------------------------
class ChaosSupervisor(Supervisor):
    """`frauddemo up`'s supervisor with the stores' AOF fsync policy set for the run."""

    def __init__(self, *args, fsync: str = "always", **kw):
        super().__init__(*args, **kw)
        self.fsync = fsync

    def plan(self) -> None:
        super().plan()
        for spec in self.servers.values():
            text = spec.config_file.read_text().replace("appendfsync everysec", f"appendfsync {self.fsync}")
            if f"\nappendfsync {self.fsync}\n" not in text:
                raise ConfigError(f"cannot set appendfsync {self.fsync} in {spec.config_file}")
            write_secret(spec.config_file, text)


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def running(proc: dict) -> bool:
    """The process of a stack.json entry is alive and is what the entry says (not a reused pid)."""
    pid = proc.get("pid")
    if not pid or not alive(pid):
        return False
    argv = _cmdline(pid)
    if proc["role"] == "store":  # the server rewrites its title: "<binary> host:port"
        return bool(argv) and ("valkey-server" in argv[0] or "redis-server" in argv[0])
    return proc["role"] in argv


# -- faults ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Skew:
    """One clock_skew fault: the store, how far off its clock was meant to run, what was measured, and
    the window (monotonic seconds) from the fault's restart until the store ran with the true clock again."""

    store: str
    skew_s: float
    start: float
    end: float | None = None
    server_offset_s: float | None = None  # the skewed server's TIME minus this machine's clock
    link_skew_s: float | None = None  # the syncer's link status (clock_skew_us) at the other store, at the heal
    healed_offset_s: float | None = None  # the server's offset again once back with the true clock

    def covers(self, t: float) -> bool:
        return self.start <= t and (self.end is None or t <= self.end)

    def report(self) -> dict:
        return {
            "store": self.store,
            "skew_s": self.skew_s,
            "server_offset_s": _ms(self.server_offset_s),
            "link_skew_s": _ms(self.link_skew_s),
            "healed_offset_s": _ms(self.healed_offset_s),
            "window_s": _ms(None if self.end is None else self.end - self.start),
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def server_offset_s(r: redis.Redis) -> float:
    """The server's clock minus this machine's, its TIME placed at the middle of the round trip."""
    t0 = time.time()
    sec, usec = r.time()
    return sec + usec / 1e6 - (t0 + time.time()) / 2


class Injector:
    """Schedules and injects the faults, heals them, and keeps the supervisor polled (one thread)."""

    def __init__(self, sup: Supervisor, cfg: ChaosConfig, rng: random.Random, kinds: tuple[str, ...] = KINDS):
        self.sup, self.cfg, self.rng, self.kinds = sup, cfg, rng, kinds
        self.counts = collections.Counter({k: 0 for k in kinds})
        self.faketime = faketime_lib() if "clock_skew" in kinds else None
        self.skews: list[Skew] = []
        self.skewed: set[str] = set()  # stores whose server runs with its clock off now (read by the tills)
        self.healing = False  # heal_all: a clock skew now heals as soon as its server is up
        self.store_busy: dict[str, str] = {}  # store -> "paused" | "down:<old pid>" | "skew:<old pid>" | "skewed"
        self.partitioned: set[tuple[str, str]] = set()
        self.heals: list = []  # heap of (due, seq, kind, target)
        self.seq = 0
        self.last_heal = 0.0
        self.admin = {
            n: redis.Redis.from_url(s.url, password=s.password, socket_timeout=0.5, socket_connect_timeout=0.5)
            for n, s in sup.servers.items()
        }

    def plan(self, t0: float) -> list[tuple[float, str]]:
        """Every kind's faults spread evenly over the run but its last 5%, each at a random point of
        its slot (a fault whose target is busy waits for it, so the end leaves room for late ones).
        clock_skew, which holds its store for seconds, has its own rate."""
        due = []
        for k in self.kinds:
            n = max(
                1, round(self.cfg.duration * (self.cfg.skews_per_s if k == "clock_skew" else self.cfg.faults_per_s))
            )
            slot = self.cfg.duration * 0.95 / n
            due += [(t0 + (i + self.rng.random()) * slot, k) for i in range(n)]
        return sorted(due)

    def run(self, t0: float, stop: threading.Event) -> None:
        due = self.plan(t0)
        end = t0 + self.cfg.duration
        # Ends when the last planned fault has healed: the run's quiet tail would otherwise count
        # towards converge_s (measured from the end of the last fault).
        while not stop.is_set() and time.monotonic() < end and (due or self.heals):
            now = time.monotonic()
            self.tick(now)
            left = []
            # partitions first: they need their target store up for a moment, store faults take it
            for t, kind in sorted(due, key=lambda d: (d[1] != "partition", d[0])):
                if t > now or not self.inject(kind):
                    left.append((t, kind))
            due = sorted(left)
            time.sleep(TICK_S)
        if due:
            log.warning(
                "%d faults could not be injected before the end: %s",
                len(due),
                dict(collections.Counter(k for _, k in due)),
            )

    def tick(self, now: float) -> None:
        self.sup.poll()
        retry = []
        while self.heals and self.heals[0][0] <= now:
            item = heapq.heappop(self.heals)
            if not self.heal(item[2], item[3]):
                retry.append(item)
        for item in retry:
            heapq.heappush(self.heals, item)
        stack = read_stack(self.sup.data_dir)
        for name, state in list(self.store_busy.items()):
            if not state.startswith(("down:", "skew:")):
                continue
            p = stack[f"store-{name}"]
            if state.startswith("skew:") and now - self._open_skew(name).start > SKEW_START_S:
                log.error(
                    "store %s did not come back with its clock off within %g s: restarting it with the true "
                    "clock (its log: %s)",
                    name,
                    SKEW_START_S,
                    p["log"],
                )
                self.store_busy[name] = f"down:{self.sup.restart_store(name, None)}"
            elif str(p["pid"]) != state[5:] and running(p) and self._ping(name):
                if state.startswith("skew:"):
                    self._skewed(name)
                else:
                    self._back(name)

    def _back(self, name: str) -> None:
        """A store a fault (or a clock skew's heal) restarted answers again."""
        del self.store_busy[name]
        self.last_heal = time.monotonic()
        sk = next((sk for sk in self.skews if sk.store == name and sk.end is None), None)
        if sk is not None:  # back with the true clock
            sk.end = self.last_heal
            self.skewed.discard(name)
            try:
                sk.healed_offset_s = server_offset_s(self.admin[name])
            except (redis.RedisError, OSError):
                pass

    def _ping(self, store: str) -> bool:
        try:
            return bool(self.admin[store].ping())
        except (redis.RedisError, OSError):
            return False

    def _open_skew(self, name: str) -> Skew:
        return next(sk for sk in self.skews if sk.store == name and sk.end is None)

    def _skewed(self, name: str) -> None:
        """The store's server is back with its clock off: measure it, hold it so for a while."""
        sk = self._open_skew(name)
        try:
            sk.server_offset_s = server_offset_s(self.admin[name])
        except (redis.RedisError, OSError):
            return  # not answering yet: measured at the next tick
        self.store_busy[name] = "skewed"
        self.skewed.add(name)
        log.info("store %s runs with its clock %+.3f s off (asked %+g s)", name, sk.server_offset_s, sk.skew_s)
        self._later(0.0 if self.healing else self.rng.uniform(*self.cfg.skew_hold_s), "clock_skew", name)

    def _later(self, seconds: float, kind: str, target) -> None:
        self.seq += 1
        heapq.heappush(self.heals, (time.monotonic() + seconds, self.seq, kind, target))

    def inject(self, kind: str) -> bool:
        """One fault of `kind` on a random target that is free for it; False when none is."""
        stack = read_stack(self.sup.data_dir)
        if kind in STORE_KINDS:
            free = [n for n in self.sup.store_names if n not in self.store_busy and running(stack[f"store-{n}"])]
            if not free:
                return False
            name = self.rng.choice(free)
            pid = stack[f"store-{name}"]["pid"]
            if kind == "pause_store":
                os.kill(pid, signal.SIGSTOP)
                self.store_busy[name] = "paused"
                self._later(self.rng.uniform(*self.cfg.pause_s), "pause_store", (name, pid))
            elif kind == "clock_skew":
                if self.faketime is None:  # ChaosConfig.active_kinds leaves the kind out without it
                    raise ConfigError(f"clock_skew needs {SKIP_CLOCK_SKEW}")
                skew = self.rng.choice((-1, 1)) * self.cfg.skew_s
                self.skews.append(Skew(name, skew, time.monotonic()))
                self.store_busy[name] = f"skew:{self.sup.restart_store(name, faketime_env(self.faketime, skew))}"
            else:
                os.kill(pid, signal.SIGKILL if kind == "kill_store" else signal.SIGTERM)
                self.store_busy[name] = f"down:{pid}"
        elif kind == "partition":
            links = [
                (s, t)
                for s in self.sup.store_names
                for t in self.sup.store_names
                if s != t and (s, t) not in self.partitioned and t not in self.store_busy
            ]
            if not links:
                return False
            src, dst = self.rng.choice(links)
            try:
                self.admin[dst].set(pause_key(src), "1")
            except (redis.RedisError, OSError):
                return False
            self.partitioned.add((src, dst))
            self._later(self.rng.uniform(*self.cfg.partition_s), "partition", (src, dst))
        else:
            role = {"kill_syncer": ("syncer",), "kill_detector": ("detector",), "kill_pos": ("pos", "hacked-pos")}[kind]
            procs = [p for p in stack.values() if p["role"] in role and running(p)]
            if not procs:
                return False
            os.kill(self.rng.choice(procs)["pid"], signal.SIGKILL)
        self.counts[kind] += 1
        return True

    def heal(self, kind: str, target) -> bool:
        if kind == "clock_skew":
            name = target
            sk = self._open_skew(name)
            other = next(n for n in self.sup.store_names if n != name)
            try:  # the link from the skewed store, as its syncer last measured it (at the other store)
                raw = self.admin[other].hget(f"fd:link:{name}", "clock_skew_us")
                sk.link_skew_s = int(raw) / 1e6 if raw is not None else None
            except (redis.RedisError, OSError, ValueError):
                pass
            self.skewed.discard(name)
            self.store_busy[name] = f"down:{self.sup.restart_store(name, None)}"
        elif kind == "pause_store":
            name, pid = target
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            if self.store_busy.get(name) == "paused":
                del self.store_busy[name]
        else:
            src, dst = target
            if dst in self.store_busy:
                return False  # the store holding the key is down or paused: heal when it is back
            try:
                self.admin[dst].delete(pause_key(src))
            except (redis.RedisError, OSError):
                return False
            self.partitioned.discard(target)
        self.last_heal = time.monotonic()
        return True

    def heal_all(self, timeout: float = 60.0) -> float:
        """Continue, heal and restart everything now; the moment the last fault ended."""
        deadline = time.monotonic() + timeout
        self.healing = True
        self.heals = [(0.0, s, k, t) for _, s, k, t in self.heals]
        heapq.heapify(self.heals)
        while True:
            self.tick(time.monotonic())
            stack = read_stack(self.sup.data_dir)
            down = [n for n, p in stack.items() if not running(p) and not self._retired(n)]
            if not self.heals and not self.store_busy and not down:
                return max(self.last_heal, self._last_start())
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"the stack did not recover within {timeout:g} s: down {down}, "
                    f"stores busy {self.store_busy}, heals left {len(self.heals)}"
                )
            time.sleep(TICK_S)

    def _retired(self, name: str) -> bool:
        return any(c.name == name and c.retired for c in self.sup.children)

    def _last_start(self) -> float:
        return max(c.started for c in self.sup.children if not c.retired)

    def continue_all(self) -> None:
        """Never leave a store stopped (on errors too)."""
        for _, _, kind, target in self.heals:
            if kind == "pause_store":
                try:
                    os.kill(target[1], signal.SIGCONT)
                except ProcessLookupError:
                    pass

    def close(self) -> None:
        for r in self.admin.values():
            r.close()


# -- the tills -------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Attempt:
    receipt: str
    store: str
    decision: str
    kind: str  # legit | accomplice | a fraud kind
    fraud: bool
    at: float = 0.0  # monotonic seconds when the store acknowledged it


class Driver:
    """Till threads, one per store, recording every acknowledged purchase and return attempt."""

    def __init__(
        self,
        cfg: ChaosConfig,
        stores: dict[str, Store],
        keys: TerminalKeys,
        photos: list[list[bytes]],
        skewed: set[str] | None = None,
    ):
        self.cfg, self.stores, self.photos = cfg, stores, photos
        self.skewed = skewed if skewed is not None else set()  # stores whose clock is off now (the injector's)
        self.names = sorted(stores)
        self.tills = {n: Till(s, keys, f"{n}-chaos-1") for n, s in stores.items()}
        self.hacked = {n: HackedTill(s, keys, f"{n}-chaos-9") for n, s in stores.items()}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.purchases: dict[str, str] = {}  # receipt -> store
        self.attempts: dict[str, Attempt] = {}
        self.fresh: collections.deque = collections.deque()  # (acked at, receipt, store, customer, amount)
        self.refunded: list = []  # (receipt, attempt, store, customer, amount): approved first returns
        self.errors: collections.Counter = collections.Counter()
        self.double_refunds: list[str] = []
        self.window_double_refunds = 0
        self.threads: list[threading.Thread] = []
        self._next_seed: dict[int, int] = {}
        self._purchase_emb: dict[int, object] = {}

    # bookkeeping
    def face(self, customer: str) -> int:
        return int(customer.rsplit("-", 1)[1]) % len(self.photos)

    def new_capture(self, customer: str) -> bytes:
        """A new capture of the customer's face for each return, as a camera takes one, that matches
        the purchase photo: the same bytes on two receipts are a replayed photo, which the detector's
        store-wide replay index rightly blocks (an honest return would then read as a fraud)."""
        from ..photos import verify as ver
        from ..photos.camera import SyntheticCamera

        face = self.face(customer)
        with self.lock:
            if face not in self._purchase_emb:
                self._purchase_emb[face] = ver.embed(self.photos[face][0])
        for _ in range(50):
            with self.lock:
                seed = self._next_seed.get(face, 1000)
                self._next_seed[face] = seed + 1
            jpeg = SyntheticCamera(face, seed=seed).capture()
            if ver.verify(jpeg, self._purchase_emb[face]).verdict == "match":
                return jpeg
        raise RuntimeError(f"no new capture of face {face} matches its purchase photo")

    def _take_fresh(self, rng: random.Random):
        with self.lock:
            if not self.fresh or time.monotonic() - self.fresh[0][0] < 0.3:
                return None
            return self.fresh.popleft()[1:]

    def _take_refunded(self, rng: random.Random, not_at: str):
        with self.lock:
            idx = [i for i, r in enumerate(self.refunded) if r[2] != not_at]
            return self.refunded.pop(rng.choice(idx)) if idx else None

    def _attempt(self, aid: str, receipt: str, store: str, decision: str, kind: str, fraud: bool) -> None:
        with self.lock:
            self.attempts[aid] = Attempt(receipt, store, decision, kind, fraud, time.monotonic())

    # one step of each kind
    def purchase(self, here: str, rng: random.Random) -> None:
        n = int(rng.random() * self.cfg.customers)
        customer = f"chaos-{n:05d}"
        items = {rng.choice(("shirt", "jeans", "scarf", "cap")): rng.randint(1, 2)}
        p = self.tills[here].purchase(customer, items, self.photos[self.face(customer)][0])
        with self.lock:
            self.purchases[p["receipt"]] = here
            self.fresh.append((time.monotonic(), p["receipt"], here, customer, price(items)[1]))

    def legit_return(self, here: str, rng: random.Random) -> None:
        got = self._take_fresh(rng)
        if got is None:
            return self.purchase(here, rng)
        rid, sold_at, customer, amount = got
        at = here if self.stores[here].r.exists(receipt_key(rid)) else sold_at
        out = self.tills[at].return_(rid, self.new_capture(customer))
        a = out.attempt
        self._attempt(a.id, rid, at, a.decision, "legit", False)
        if a.decision == APPROVED:
            with self.lock:
                self.refunded.append((rid, a.id, at, customer, amount))

    def visible_double_return(self, here: str, rng: random.Random) -> None:
        """A second return, at a legitimate till, of a receipt whose approved refund `here` holds."""
        got = self._take_refunded(rng, not_at=here)
        if got is None:
            return self.purchase(here, rng)
        rid, first, at, customer, amount = got
        if first.encode() not in self.stores[here].r.hvals(attempts_key(rid)):
            with self.lock:
                self.refunded.append(got)  # not replicated here yet: later
            return None
        out = self.tills[here].return_(rid, self.new_capture(customer))
        a = out.attempt
        self._attempt(a.id, rid, here, a.decision, "double-return-visible", True)
        if a.decision == APPROVED:
            with self.lock:
                self.double_refunds.append(rid)

    def concurrent_returns(self, here: str, rng: random.Random) -> None:
        """Two tills of one store return the same receipt at the same moment: at most one refund."""
        got = self._take_fresh(rng)
        if got is None:
            return self.purchase(here, rng)
        rid, _, customer, _ = got
        if not self.stores[here].r.exists(receipt_key(rid)):
            return None
        barrier, out = threading.Barrier(2), [None, None]
        photos = [self.new_capture(customer), self.new_capture(customer)]

        def one(i: int) -> None:
            barrier.wait()
            try:
                out[i] = self.tills[here].return_(rid, photos[i]).attempt
            except (redis.RedisError, OSError, StoreError) as e:
                out[i] = e

        other = threading.Thread(target=one, args=(1,), daemon=True)
        other.start()
        one(0)
        other.join(30)
        acked = [a for a in out if a is not None and not isinstance(a, Exception)]
        winners = [a for a in acked if a.decision != REFUSED]
        for a in acked:  # a second attempt beside a refund or a held return is a double return
            self._attempt(a.id, rid, here, a.decision, "concurrent-return", bool(winners) and a is not winners[0])
        if sum(a.decision == APPROVED for a in acked) > 1:
            with self.lock:
                self.double_refunds.append(rid)
        errors = [e for e in out if isinstance(e, Exception)]
        if errors:
            raise errors[0]

    def hacked_step(self, here: str, rng: random.Random, mode: AttackMode | None = None) -> None:
        mode = mode or rng.choice(HACKED_MODES)
        till = self.hacked[here]
        if mode == AttackMode.UNKNOWN_RECEIPT:
            customer = f"chaos-{rng.randrange(self.cfg.customers):05d}"
            a = till.refund(new_id("r"), customer, 4999, attack_photo(mode), mode)
            return self._attempt(a.id, a.receipt, here, a.decision, mode, True)
        if mode == AttackMode.DOUBLE_RETURN_OTHER_STORE:
            got = self._take_refunded(rng, not_at=here)
            if got is None:
                return self.purchase(here, rng)
            rid, _, _, customer, amount = got
            photo = attack_photo(mode, capture=lambda: self.new_capture(customer))
            a = till.refund(rid, customer, amount, photo, mode)
            return self._attempt(a.id, rid, here, a.decision, mode, True)
        got = self._take_fresh(rng)
        if got is None:
            return self.purchase(here, rng)
        rid, sold_at, customer, amount = got
        if mode == AttackMode.WINDOW_RACE:
            other = rng.choice([n for n in self.names if n != here])
            first = self.tills[other].return_(rid, self.new_capture(customer)).attempt
            self._attempt(first.id, rid, other, first.decision, "accomplice", False)
            if first.decision == REFUSED:
                return None  # nothing to refund twice
            a = till.refund(rid, customer, amount, attack_photo(mode, capture=lambda: self.new_capture(customer)), mode)
            if first.decision == APPROVED:
                with self.lock:
                    self.window_double_refunds += 1
            return self._attempt(a.id, rid, here, a.decision, mode, True)

        def stored_purchase_photo() -> bytes | None:
            p = till.store.hgetall(receipt_key(rid)).get("photo")
            return till.store.get_blob(PHOTO_PREFIX + p) if p else None

        photo = attack_photo(mode, purchase=stored_purchase_photo)  # no-photo, replayed-photo
        if photo is None and mode == AttackMode.REPLAYED_PHOTO:
            return None  # no purchase photo to replay
        a = till.refund(rid, customer, amount, photo, mode)
        self._attempt(a.id, rid, here, a.decision, mode, True)

    def till(self, here: str, seed: int) -> None:
        rng = random.Random(seed)
        rate = self.cfg.tx_rate / len(self.names)
        steps = (
            (0.42, self.purchase),
            (0.65, self.legit_return),
            (0.75, self.visible_double_return),
            (0.82, self.concurrent_returns),
            (1.00, self.hacked_step),
        )
        while not self.stop.is_set():
            u = rng.random()
            step = next(fn for p, fn in steps if u < p)
            try:
                if self.skewed and rng.random() < SKEW_RACE_P:
                    # a store's clock is off: a receipt returned at two stores at once, honest first
                    # (the accomplice) and a hacked refund second, is what a clock would order wrongly
                    self.hacked_step(here, rng, AttackMode.WINDOW_RACE)
                else:
                    step(here, rng)
                self.stop.wait(rng.expovariate(rate))
            except (redis.RedisError, OSError, StoreError) as e:
                with self.lock:
                    self.errors[type(e).__name__] += 1
                self.stop.wait(0.1)

    def start(self, seed: int) -> None:
        for i, n in enumerate(self.names):
            t = threading.Thread(target=self.till, args=(n, seed * 100 + i), name=f"till-{n}", daemon=True)
            t.start()
            self.threads.append(t)

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


# -- the checker ------------------------------------------------------------------------------------------
def caught_up(stores: dict[str, Store], positions: dict[str, int] | None = None) -> bool:
    """Every store has merged everything every other store had logged when it was asked (or by
    `positions`: op-log sequence numbers per store)."""
    for a, sa in stores.items():
        seq = positions[a] if positions else sa.seq()
        for b, sb in stores.items():
            if a != b and int(sb.checkpoint(a).get("seq", 0)) < seq:
                return False
    return True


def _converged_after(admin: dict[str, Store], inj, deadline: float, say, t0: float) -> float | None:
    """Seconds from `t0` until every store has merged what every store had logged at `t0` (asked as
    soon as each answers: a store restarted by the heal may still be loading its AOF)."""
    positions = None
    while time.monotonic() < deadline:
        inj.tick(time.monotonic())
        try:
            positions = positions or {n: s.seq() for n, s in admin.items()}
            if caught_up(admin, positions):
                return time.monotonic() - t0
        except (redis.RedisError, OSError) as e:
            say(f"convergence check: {e}")
        time.sleep(0.02)
    return None


def detector_idle(stores: dict[str, Store]) -> bool:
    """The detectors' group has read and acknowledged every event of every store."""
    for s in stores.values():
        for g in s.r.xinfo_groups(RETURNS) if s.r.exists(RETURNS) else []:
            if g["name"] == DETECTOR_GROUP.encode() and (g["pending"] or g.get("lag")):
                return False
        for stream in ("fd:ev:purchases",):
            for g in s.r.xinfo_groups(stream) if s.r.exists(stream) else []:
                if g["name"] == DETECTOR_GROUP.encode() and (g["pending"] or g.get("lag")):
                    return False
    return True


def lost_ops(stores: dict[str, Store], drv: Driver) -> list[str]:
    """Acknowledged purchases and attempts missing from any store."""
    lost = []
    rids, aids = sorted(drv.purchases), sorted(drv.attempts)
    for name, s in stores.items():
        pipe = s.r.pipeline(transaction=False)
        for rid in rids:
            pipe.hexists(receipt_key(rid), "store")
        for aid in aids:
            pipe.hexists(attempt_key(aid), "receipt")
        for aid in aids:
            pipe.hvals(attempts_key(drv.attempts[aid].receipt))
        res = pipe.execute()
        n, m = len(rids), len(aids)
        lost += [f"{name}:purchase:{rid}" for rid, ok in zip(rids, res[:n]) if not ok]
        lost += [f"{name}:attempt:{aid}" for aid, ok in zip(aids, res[n : n + m]) if not ok]
        lost += [
            f"{name}:attempt-in-set:{aid}" for aid, members in zip(aids, res[n + m :]) if aid.encode() not in members
        ]
    return lost


def stream_counts(stores: dict[str, Store], stream: str, fields: tuple[str, ...]) -> collections.Counter:
    """How often each combination of `fields` values occurs in the stores' event stream `stream`."""
    seen: collections.Counter = collections.Counter()
    for s in stores.values():
        last = "-"
        while True:
            batch = s.r.xrange(stream, min=last, count=5000)
            if last != "-":
                batch = batch[1:]
            if not batch:
                break
            for _, f in batch:
                seen[tuple(f.get(k.encode(), b"").decode() for k in fields)] += 1
            last = batch[-1][0].decode()
    return seen


def alert_events(stores: dict[str, Store]) -> collections.Counter:
    """(alert id, decision) -> how often the stores' alert streams carry it."""
    return stream_counts(stores, ALERTS, ("alert", "decision"))


def repeated_writes(stores: dict[str, Store]) -> list[str]:
    """Purchases and return attempts whose event a store logged more than once: one till call
    applied twice (a client library that resends a write after a timeout)."""
    out = [f"purchase:{r}" for (r,), n in stream_counts(stores, PURCHASES, ("rcpt",)).items() if n > 1]
    return out + [f"attempt:{a}" for (a,), n in stream_counts(stores, RETURNS, ("att",)).items() if n > 1]


def missing_alerts(stores: dict[str, Store], frauds: list[str]) -> list[str]:
    missing = set()
    for s in stores.values():
        pipe = s.r.pipeline(transaction=False)
        for aid in frauds:
            pipe.exists(alert_key(f"al-{aid}"))
        missing.update(aid for aid, ok in zip(frauds, pipe.execute()) if not ok)
    return sorted(missing)


def blocked(stores: dict[str, Store], aids: list[str]) -> list[str]:
    """The attempts among `aids` whose verdict is block (at the first store: they are identical)."""
    first = next(iter(stores.values()))
    pipe = first.r.pipeline(transaction=False)
    for aid in aids:
        pipe.hget(verdict_key(aid), "decision")
    return [aid for aid, d in zip(aids, pipe.execute()) if d == b"block"]


def skew_traffic(drv: Driver, skews: list[Skew]) -> dict:
    """What the tills did while a store's clock was off: attempts acknowledged at any store, at the
    skewed one, and receipts returned at two stores (a clock would order those)."""
    during = {a: x for a, x in drv.attempts.items() if any(sk.covers(x.at) for sk in skews)}
    stores_of: dict[str, set[str]] = collections.defaultdict(set)
    for x in during.values():
        stores_of[x.receipt].add(x.store)
    return {
        "attempts_during_skew": len(during),
        "attempts_at_skewed_store": sum(
            any(sk.store == x.store and sk.covers(x.at) for sk in skews) for x in during.values()
        ),
        "double_returns_during_skew": sum(len(s) > 1 for s in stores_of.values()),
        "ids": set(during),
    }


def missed_verdicts(stores: dict[str, Store], missed: list[str]) -> dict[str, dict]:
    """What the detector decided for each missed fraud (empty: never judged), to say why it was missed."""
    first = next(iter(stores.values()))
    return {aid: first.hgetall(verdict_key(aid)) for aid in missed}


def differences(stores: dict[str, Store]) -> list[str]:
    snaps = {n: s.snapshot() for n, s in stores.items()}
    first, *rest = snaps.values()
    keys = set().union(*snaps.values())
    return sorted(k for k in keys if any(snap.get(k) != first.get(k) for snap in rest))


# -- the run ----------------------------------------------------------------------------------------------
def passed(result: dict) -> bool:
    """The run's claims hold: nothing acknowledged lost, every fraud alerted exactly once, no honest
    attempt blocked, no visible double refund, the stores converged and identical."""
    return (
        not (
            result["lost"]
            or result["missed_frauds"]
            or result["duplicated_alerts"]
            or result["double_refunds"]
            or result["honest_blocked"]
        )
        and result["identical"]
        and result["converge_s"] is not None
    )


def run(cfg: ChaosConfig, progress=None) -> dict:
    cfg = cfg.resolved()
    say = progress or (lambda msg: None)
    kinds, skipped = cfg.active_kinds()
    for kind, why in skipped.items():
        log.warning("fault kind %s %s", kind, why)
        say(f"fault kind {kind} {why}")
    rng = random.Random(cfg.seed)
    with concurrent.futures.ProcessPoolExecutor(min(2, os.cpu_count() or 1)) as pool:
        photos = list(pool.map(usable_captures, range(cfg.faces)))
    sup = ChaosSupervisor(
        list(cfg.stores),
        cfg.data_dir,
        free_port(),
        headless=True,
        rate=cfg.pos_rate,
        hacked_rate=cfg.hacked_pos_rate,
        backoff=cfg.backoff,
        fsync=cfg.fsync,
    )
    inj = drv = None
    clients: dict[str, Store] = {}
    admin: dict[str, Store] = {}
    try:
        sup.start()
        sup.wait_ready(120)
        stack = read_stack(sup.data_dir)
        keys = TerminalKeys.from_secret(read_secret(sup.terminal_key_file))
        for n, spec in sup.servers.items():
            url, password = spec.credentials("pos")
            clients[n] = Store.connect(
                url,
                password,
                socket_timeout=cfg.till_timeout_s,
                socket_connect_timeout=cfg.till_timeout_s,
                retry=Retry(NoBackoff(), 0),
            )
        admin = {n: Store.connect(s.url, s.password) for n, s in sup.servers.items()}
        inj = Injector(sup, cfg, rng, kinds)
        drv = Driver(cfg, clients, keys, photos, skewed=inj.skewed)
        say(f"stack up ({len(stack)} processes); {cfg.duration:g} s of faults")
        t0 = time.monotonic()
        drv.start(cfg.seed)
        inj.run(t0, threading.Event())
        faults_s = time.monotonic() - t0
        say(f"faults done: {dict(inj.counts)}; healing")
        sup.retire(("pos", "hacked-pos"))
        tills_done: list[float] = []

        def stop_tills() -> None:  # in-flight calls end once healed
            drv.finish()
            tills_done.append(time.monotonic())

        stopper = threading.Thread(target=stop_tills, daemon=True)
        stopper.start()
        t_heal = inj.heal_all()
        deadline = time.monotonic() + cfg.settle_s
        # -- convergence: every store has merged what every store had logged when the faults ended
        converge_s = _converged_after(admin, inj, deadline, say, t_heal)
        stopper.join(60)
        t_end = max([t_heal, *tills_done])  # the tills' last call returned
        tills_s = t_end - t_heal
        # ... and what the tills' last calls (in flight at the heal, slow on a loaded machine) wrote
        tills_converge_s = _converged_after(admin, inj, deadline, say, t_end)
        caught_up_s = None  # the stricter moment: caught up with the detector's writes as well
        while time.monotonic() < deadline:
            try:
                if caught_up(admin):
                    caught_up_s = time.monotonic() - t_end
                    break
            except (redis.RedisError, OSError):
                pass
            time.sleep(0.02)
        say(f"converged in {converge_s} s; waiting for the detector")
        frauds = sorted(a for a, x in drv.attempts.items() if x.fraud)
        settle_s = None
        while time.monotonic() < deadline:
            inj.tick(time.monotonic())
            try:
                if detector_idle(admin) and caught_up(admin) and not missing_alerts(admin, frauds):
                    settle_s = time.monotonic() - t_end
                    break
            except (redis.RedisError, OSError):
                pass
            time.sleep(0.2)
        diff = ["(never caught up)"]
        for _ in range(50):  # identical: compared when no write is in flight
            if caught_up(admin):
                diff = differences(admin)
                if not diff and caught_up(admin):
                    break
            time.sleep(0.1)
        lost = lost_ops(admin, drv)
        missed = missing_alerts(admin, frauds)
        events = alert_events(admin)
        dup = sorted(f"{a}/{d}" for (a, d), n in events.items() if n > 1)
        repeated = repeated_writes(admin)
        by_kind = collections.Counter(x.kind for x in drv.attempts.values() if x.fraud)
        honest = sorted(a for a, x in drv.attempts.items() if not x.fraud)
        honest_blocked = blocked(admin, honest)
        skew = skew_traffic(drv, inj.skews)
        return {
            "seed": cfg.seed,
            "duration_s": round(faults_s, 1),
            "stores": list(cfg.stores),
            "fsync": cfg.fsync,
            "faults": dict(inj.counts),
            "faults_total": sum(inj.counts.values()),
            "skipped_kinds": skipped,
            "acknowledged": len(drv.purchases) + len(drv.attempts),
            "acknowledged_purchases": len(drv.purchases),
            "acknowledged_returns": len(drv.attempts),
            "lost": len(lost),
            "lost_ids": lost[:MAX_IDS],
            "frauds": len(frauds),
            "frauds_by_kind": dict(sorted(by_kind.items())),
            "missed_frauds": len(missed),
            "missed_ids": missed[:MAX_IDS],
            "missed_by_kind": dict(
                sorted(collections.Counter(drv.attempts[a].kind for a in missed if a in drv.attempts).items())
            ),
            "missed_verdicts": missed_verdicts(admin, missed[:MAX_IDS]),
            "alerts": len({a for a, _ in events}),
            "duplicated_alerts": len(dup),
            "duplicated_ids": dup[:MAX_IDS],
            "honest_attempts": len(honest),
            "honest_blocked": len(honest_blocked),
            "honest_blocked_ids": honest_blocked[:MAX_IDS],
            "honest_blocked_by_kind": dict(
                sorted(collections.Counter(drv.attempts[a].kind for a in honest_blocked).items())
            ),
            "honest_blocked_during_skew": sum(a in skew["ids"] for a in honest_blocked),
            "clock_skews": [sk.report() for sk in inj.skews[:MAX_IDS]],
            "attempts_during_skew": skew["attempts_during_skew"],
            "attempts_at_skewed_store": skew["attempts_at_skewed_store"],
            "double_returns_during_skew": skew["double_returns_during_skew"],
            "double_refunds": len(drv.double_refunds),
            "double_refund_receipts": drv.double_refunds[:MAX_IDS],
            "visible_double_returns": by_kind.get("double-return-visible", 0),
            "window_double_refunds": drv.window_double_refunds,
            "converge_s": None if converge_s is None else round(converge_s, 3),
            "tills_converge_s": None if tills_converge_s is None else round(tills_converge_s, 3),
            "caught_up_s": None if caught_up_s is None else round(caught_up_s, 3),
            "tills_stop_s": round(tills_s, 3),
            "alerts_settle_s": None if settle_s is None else round(settle_s, 3),
            "identical": not diff,
            "differing_keys": len(diff),
            "differing_ids": diff[:MAX_IDS],
            "repeated_writes": len(repeated),
            "repeated_ids": repeated[:MAX_IDS],
            "unacknowledged_calls": dict(drv.errors),
            "restarts": {c.name: c.restarts for c in sup.children if c.restarts},
        }
    finally:
        if inj is not None:
            inj.continue_all()
            inj.close()
        if drv is not None:
            drv.stop.set()
        for s in [*clients.values(), *admin.values()]:
            s.close()
        sup.stop()
        sup.cleanup()
