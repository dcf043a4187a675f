"""Point-of-sale simulators: a legitimate till with a camera, and a hacked one without.

Customers are a fixed population (`cust-00042`), each with a procedural face (the synthetic camera's
identity), so any store can photograph any customer. A customer's receipts travel with them: the
purchase adds the receipt to `s:wallet:<customer>` (replicated), which is how a till at the other store
finds something to return. Every attempt carries its ground-truth label in the store's local
`fd:ev:labels` stream, which only benchmarks read.

Attack modes of the hacked till (it approves its own refunds, whatever the store would say):
  no-photo                 skips the camera
  mismatched-photo         someone else's face
  replayed-photo           the purchase photo sent back as the return photo
  double-return-same-store a receipt already refunded at this store, again (the customer colludes)
  double-return-other-store a receipt already refunded at another store, again
  unknown-receipt          a receipt no store ever issued
  window-race              a return at a peer store by an accomplice, then the same receipt here at
                           once, inside the replication window (needs --peer)
  partition                the same, while the stores are partitioned (needs --peer; waits for one)
A rogue terminal is unregistered and cannot sign; a compromised one is registered and signs correctly.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import random
import threading
import time

import redis

from .ids import new_id
from .photos.camera import SyntheticCamera
from .photos.storage import PHOTO_PREFIX, PhotoStore
from .retail import (APPROVED, CATALOGUE, LEGIT, TerminalKeys, attempt_ops, new_attempt, purchase_ops,
                     read_stories, verdict_key)
from .returns import ReturnOutcome, process_return
from .store import Store, StoreUnavailable, ops, wait_for_functions

log = logging.getLogger("frauddemo.pos")

MODES = ("no-photo", "mismatched-photo", "replayed-photo", "double-return-same-store",
         "double-return-other-store", "unknown-receipt", "window-race", "partition")
ALIASES = {"duplicate-receipt": "double-return-other-store"}  # the operator's older name
PEER_MODES = ("window-race", "partition")
CONTROL_KEY = "fd:ctl"  # local control flags: hacked=paused


def customer_id(i: int) -> str:
    return f"cust-{i:05d}"


def wallet_key(customer: str) -> str:
    return f"s:wallet:{customer}"


def face_of(customer: str) -> int:
    """The synthetic camera identity of a customer (stable, any store)."""
    return int.from_bytes(hashlib.sha256(customer.encode()).digest()[:4], "big") % 1_000_000


def capture(customer: str, rng: random.Random) -> bytes:
    return SyntheticCamera(face_of(customer), seed=rng.getrandbits(62)).capture()


def basket(rng: random.Random) -> dict[str, int]:
    skus = rng.sample(sorted(CATALOGUE), rng.randint(1, 3))
    return {s: rng.randint(1, 2) for s in skus}


def parse_mix(flag: str) -> dict[str, float]:
    """'no-photo=0.6,mismatched-photo=0.3' -> weights; unknown modes and bad weights are refused."""
    mix = {}
    for part in flag.split(","):
        if not part.strip():
            continue
        name, sep, w = part.partition("=")
        name = ALIASES.get(name.strip(), name.strip())
        if not sep or name not in MODES:
            raise ValueError(f"attack mix wants MODE=WEIGHT with MODE in {', '.join(MODES)}; got {part!r}")
        try:
            weight = float(w)
        except ValueError:
            raise ValueError(f"weight of {name} must be a number, got {w!r}") from None
        if weight < 0:
            raise ValueError(f"weight of {name} must be >= 0")
        mix[name] = mix.get(name, 0.0) + weight
    if sum(mix.values()) <= 0:
        raise ValueError("the attack mix needs at least one positive weight")
    return mix


class Till:
    """A registered terminal at one store, with a camera (library for the POS, the API and benches)."""

    def __init__(self, store: Store, keys: TerminalKeys, terminal: str, photos: PhotoStore | None = None):
        self.store, self.keys, self.terminal = store, keys, terminal
        self.photos = photos or PhotoStore(store)

    def purchase(self, customer: str, items: dict[str, int], photo: bytes | None) -> dict:
        """Photo first (its own write: a content-addressed blob is harmless alone), then the receipt,
        the event and the customer's wallet in one atomic write."""
        sha = self.photos.put(photo).sha256 if photo is not None else ""
        rid, w = purchase_ops(self.store.replica, self.terminal, customer, items, sha)
        commit = self.store.write(w + [ops.sadd(wallet_key(customer), rid)])
        return {"receipt": rid, "photo": sha or None, "committed_us": int(commit.clock),
                "store": self.store.replica, "customer": customer}

    def return_(self, receipt: str, photo: bytes | None, customer: str = "", label: str = LEGIT) -> ReturnOutcome:
        return process_return(self.store, self.photos, self.keys, self.terminal, receipt, photo, customer, label)


class HackedTill:
    """A terminal that records returns as approved without asking the store."""

    def __init__(self, store: Store, keys: TerminalKeys, terminal: str, rogue: bool = False,
                 photos: PhotoStore | None = None):
        self.store, self.terminal, self.rogue = store, terminal, rogue
        self.keys = TerminalKeys(None) if rogue else keys
        self.photos = photos or PhotoStore(store)

    def refund(self, receipt: str, customer: str, amount: int, photo: bytes | None, mode: str):
        sha = self.photos.put(photo).sha256 if photo is not None else ""
        a = new_attempt(self.keys, self.store.replica, self.terminal, receipt, customer, amount, sha, APPROVED,
                        ["approved by the terminal"], sign=not self.rogue)
        a.clock = int(self.store.write(attempt_ops(a, label=mode)).clock)
        return a


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

    def hacked_step(self, till: HackedTill, mode: str, peers: dict[str, Till]) -> str | None:
        rng = self.rng
        if mode == "unknown-receipt":
            a = till.refund(new_id("r"), rng.choice(self.customers), rng.choice([4999, 7999, 12999]),
                            None if rng.random() < 0.5 else capture(rng.choice(self.customers), rng), mode)
            return f"{mode} {a.id}"
        if mode in ("double-return-same-store", "double-return-other-store"):
            here = till.store.replica
            same = mode == "double-return-same-store"
            receipt, _ = self.pick_receipt(lambda r, atts: any(
                a.decision == APPROVED and (a.store == here) == same and self.paid(a.id) for a in atts.values()))
            if receipt is None:
                return None
            a = till.refund(receipt.id, receipt.customer, receipt.amount, capture(receipt.customer, rng), mode)
            return f"{mode} {a.id}"
        if mode in PEER_MODES:
            if not peers:
                return None
            if mode == "partition" and not self.partitioned():
                return None
            receipt, _ = self.pick_receipt(not_returned)
            if receipt is None:
                return None
            peer = rng.choice(list(peers.values()))
            peer.return_(receipt.id, capture(receipt.customer, rng))  # the accomplice's return, legit-looking
            a = till.refund(receipt.id, receipt.customer, receipt.amount, capture(receipt.customer, rng), mode)
            return f"{mode} {a.id}"
        receipt, _ = self.pick_receipt(not_returned)
        if receipt is None:
            return None
        if mode == "no-photo":
            photo = None
        elif mode == "mismatched-photo":
            photo = capture(rng.choice([c for c in self.customers if c != receipt.customer]), rng)
        else:  # replayed-photo
            photo = self.store.get_blob(PHOTO_PREFIX + receipt.photo) if receipt.photo else None
            if photo is None:
                return None
        a = till.refund(receipt.id, receipt.customer, receipt.amount, photo, mode)
        return f"{mode} {a.id}"

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
        return self.store.r.hget(CONTROL_KEY, "hacked") == b"paused"


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
    unusable = [m for m in cfg.mix if m in PEER_MODES and not peers]
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
