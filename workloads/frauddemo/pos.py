"""Point-of-sale simulators: the loops behind `frauddemo pos` (a legitimate till with a camera) and
`frauddemo hacked-pos` (one that approves its own refunds). The tills themselves (how a purchase or a
return attempt is made) are the domain's, in till.py; this module only decides what to do and when.

Every attempt carries its ground-truth label in the store's local `fd:ev:labels` stream, which only
benchmarks read. The hacked till's attacks are the vocabulary of attack_modes.py (`AttackMode`).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time

import redis

from .attack_modes import DEPRECATED_ALIASES, PEER_MODES, AttackMode, parse_mode
from .controls import hacked_paused
from .ids import new_id
from .photos.storage import PHOTO_PREFIX, PhotoStore
from .retail import APPROVED, TerminalKeys, read_stories, verdict_key
from .store import Store, StoreUnavailable, wait_for_functions

# the tills live in till.py; these names stay importable from here for the command line
from .till import HackedTill, Till, basket, capture, customer_id, wallet_key

log = logging.getLogger("frauddemo.pos")


def parse_mix(flag: str) -> dict[AttackMode, float]:
    """'no-photo=0.6,mismatched-photo=0.3' -> weights; unknown modes and bad weights are refused, a
    deprecated alias is accepted with a warning."""
    mix: dict[AttackMode, float] = {}
    for part in flag.split(","):
        if not part.strip():
            continue
        name, sep, w = part.partition("=")
        name = name.strip()
        try:
            mode = parse_mode(name)
        except ValueError:
            mode = None
        if not sep or mode is None:
            raise ValueError(f"attack mix wants MODE=WEIGHT with MODE in {', '.join(AttackMode)}; got {part!r}")
        if name in DEPRECATED_ALIASES:
            log.warning("attack mode %r is deprecated: use %r", name, str(mode))
        try:
            weight = float(w)
        except ValueError:
            raise ValueError(f"weight of {mode} must be a number, got {w!r}") from None
        if weight < 0:
            raise ValueError(f"weight of {mode} must be >= 0")
        mix[mode] = mix.get(mode, 0.0) + weight
    if sum(mix.values()) <= 0:
        raise ValueError("the attack mix needs at least one positive weight")
    return mix


class Simulator:
    """The loops behind `frauddemo pos` and `frauddemo hacked-pos`."""

    def __init__(self, store: Store, keys: TerminalKeys, customers: int = 200, seed: int | None = None):
        self.store, self.keys = store, keys
        self.customers = [customer_id(i) for i in range(customers)]
        self.rng = random.Random(seed)
        self.photos = PhotoStore(store)
        # customers return what they bought while its photo is kept (FRAUDDEMO_PHOTO_TTL): a return is
        # judged with its purchase photo, as at a real till shortly after the purchase
        self.recent_us = self.photos.policy.retention_ms * 1000 * 9 // 10

    def pick_receipt(self, want, tries: int = 40):
        """A receipt from a random customer's wallet whose attempts satisfy `want(receipt, attempts)`."""
        for _ in range(tries):
            c = self.rng.choice(self.customers)
            rids = recent_receipts(self.store.r.hgetall(wallet_key(c)), self.recent_us)
            self.rng.shuffle(rids)
            for rid in rids[:5]:
                story = read_stories({self.store.replica: self.store}, [rid])[rid]
                if story.receipt is not None and want(story.receipt, story.attempts):
                    return story.receipt, story.attempts
        return None, None

    def legit_step(self, till: Till, return_share: float) -> str:
        if self.rng.random() < return_share:
            receipt, _ = self.pick_receipt(not_returned)
            if receipt is not None:
                out = till.return_(receipt.id, capture(receipt.customer, self.rng))
                return f"return {receipt.id} {out.attempt.decision}"
        c = self.rng.choice(self.customers)
        p = till.purchase(c, basket(self.rng), capture(c, self.rng))
        return f"purchase {p['receipt']}"

    def hacked_step(self, till: HackedTill, mode: AttackMode | str, peers: dict[str, Till]) -> str | None:
        rng = self.rng
        mode = parse_mode(mode)
        if mode is AttackMode.UNKNOWN_RECEIPT:
            a = till.refund(
                new_id("r"),
                rng.choice(self.customers),
                rng.choice([4999, 7999, 12999]),
                None if rng.random() < 0.5 else capture(rng.choice(self.customers), rng),
                mode,
            )
            return f"{mode.value} {a.id}"
        if mode in (AttackMode.DOUBLE_RETURN_SAME_STORE, AttackMode.DOUBLE_RETURN_OTHER_STORE):
            here = till.store.replica
            same = mode is AttackMode.DOUBLE_RETURN_SAME_STORE
            receipt, _ = self.pick_receipt(
                lambda r, atts: any(
                    a.decision == APPROVED and (a.store == here) == same and self.paid(a.id) for a in atts.values()
                )
            )
            if receipt is None:
                return None
            a = till.refund(receipt.id, receipt.customer, receipt.amount, capture(receipt.customer, rng), mode)
            return f"{mode.value} {a.id}"
        if mode.needs_peer:
            if not peers:
                return None
            if mode is AttackMode.PARTITION and not self.partitioned():
                return None
            receipt, _ = self.pick_receipt(not_returned)
            if receipt is None:
                return None
            peer = rng.choice(list(peers.values()))
            peer.return_(receipt.id, capture(receipt.customer, rng))  # the accomplice's return, legit-looking
            a = till.refund(receipt.id, receipt.customer, receipt.amount, capture(receipt.customer, rng), mode)
            return f"{mode.value} {a.id}"
        receipt, _ = self.pick_receipt(not_returned)
        if receipt is None:
            return None
        if mode is AttackMode.NO_PHOTO:
            photo = None
        elif mode is AttackMode.MISMATCHED_PHOTO:
            photo = capture(rng.choice([c for c in self.customers if c != receipt.customer]), rng)
        else:  # replayed-photo
            photo = self.store.get_blob(PHOTO_PREFIX + receipt.photo) if receipt.photo else None
            if photo is None:
                return None
        a = till.refund(receipt.id, receipt.customer, receipt.amount, photo, mode)
        return f"{mode.value} {a.id}"

    def paid(self, attempt: str) -> bool:
        """The refund went out: the detector allowed it (as far as this store has heard)."""
        return self.store.r.hget(verdict_key(attempt), "decision") == b"allow"

    def partitioned(self) -> bool:
        """True when this store's incoming links are paused or down (link status from the syncers)."""
        for key in self.store.r.scan_iter(match="fd:link:*", count=100):
            st = self.store.r.hget(key, "state")
            if st and st.decode() != "up":
                return True
        return False

    def paused(self) -> bool:
        return hacked_paused(self.store)


def recent_receipts(wallet: dict, within_us: int, now_us: int | None = None) -> list[str]:
    """Receipt ids of a raw wallet (add tag "<clock16>:<replica>:<i>" -> receipt) bought in the last
    `within_us` microseconds, or every receipt when none is that recent."""
    now_us = int(time.time() * 1e6) if now_us is None else now_us
    every, recent = [], []
    for tag, rid in wallet.items():
        rid = rid.decode() if isinstance(rid, bytes) else rid
        every.append(rid)
        try:
            if now_us - int(tag[:16]) <= within_us:
                recent.append(rid)
        except ValueError:
            pass
    return recent or every


def not_returned(receipt, attempts) -> bool:
    return not attempts


def connect_when_up(connect, stop: threading.Event, what: str):
    """`connect()` once the store answers: a till that starts while its store is down (restarting,
    paused, or without its functions loaded yet) waits for it like `run_loop` does, instead of
    crashing. None when `stop` comes first."""
    backoff = 0.5
    while not stop.is_set():
        try:
            return wait_for_functions(connect, stop, what, log)
        except (redis.RedisError, OSError) as e:
            log.warning("store %s unavailable: %s; retrying in %.1f s", what, e, backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, 10.0)
    return None


def run_loop(step, rate: float, stop: threading.Event, out=print) -> None:
    """Call `step()` about `rate` times a second (Poisson arrivals) until `stop`; a store that is down
    is waited for, never crashed on."""
    rng = random.Random()
    backoff = 0.5
    while not stop.is_set():
        try:
            line = step()
            if line:
                out(line)
            backoff = 0.5
            stop.wait(rng.expovariate(rate) if rate > 0 else 1.0)
        except (redis.RedisError, OSError, StoreUnavailable) as e:
            log.warning("store unavailable: %s; retrying in %.1f s", e, backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, 10.0)


@dataclasses.dataclass
class HackedConfig:
    rate: float
    mix: dict[str, float]
    rogue: bool = False


def hacked_mode(sim: Simulator, mix: dict[str, float], usable) -> str | None:
    modes = [m for m in mix if mix[m] > 0 and usable(m)]
    if not modes:
        return None
    return sim.rng.choices(modes, weights=[mix[m] for m in modes])[0]


def hacked_loop(sim: Simulator, till: HackedTill, cfg: HackedConfig, peers: dict[str, Till], stop, out=print):
    unusable = [str(m) for m in cfg.mix if m in PEER_MODES and not peers]
    if unusable:
        log.warning("modes %s need --peer NAME=URL (an accomplice's store); they are skipped", unusable)

    def step():
        if sim.paused():
            return None
        mode = hacked_mode(sim, cfg.mix, lambda m: m not in PEER_MODES or peers)
        if mode is None:
            return None
        return sim.hacked_step(till, mode, peers)

    run_loop(step, cfg.rate, stop, out)
