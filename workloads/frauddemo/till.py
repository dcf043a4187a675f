"""The till: how a purchase or a return attempt is made at a store (the domain, not a simulation).

The API's web till, the scenario, the POS simulators and the benches all make their purchases and
returns here. Customers are a fixed population (`cust-00042`), each with a procedural face (the
synthetic camera's identity), so any store can photograph any customer. A customer's receipts travel
with them: the purchase adds the receipt to `s:wallet:<customer>` (replicated), which is how a till at
the other store finds something to return.

`Till` is a registered terminal with a camera: the store decides each return locally. `HackedTill`
records its own refunds as approved without asking the store; a rogue one is unregistered and cannot
sign, a compromised one is registered and signs correctly.
"""

from __future__ import annotations

import hashlib
import random

from .photos.camera import SyntheticCamera
from .photos.storage import PhotoStore
from .retail import APPROVED, CATALOGUE, LEGIT, TerminalKeys, attempt_ops, new_attempt, purchase_ops
from .returns import ReturnOutcome, process_return
from .store import Store, ops


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
        return {
            "receipt": rid,
            "photo": sha or None,
            "committed_us": int(commit.clock),
            "store": self.store.replica,
            "customer": customer,
        }

    def return_(self, receipt: str, photo: bytes | None, customer: str = "", label: str = LEGIT) -> ReturnOutcome:
        return process_return(self.store, self.photos, self.keys, self.terminal, receipt, photo, customer, label)


class HackedTill:
    """A terminal that records returns as approved without asking the store."""

    def __init__(
        self, store: Store, keys: TerminalKeys, terminal: str, rogue: bool = False, photos: PhotoStore | None = None
    ):
        self.store, self.terminal, self.rogue = store, terminal, rogue
        self.keys = TerminalKeys(None) if rogue else keys
        self.photos = photos or PhotoStore(store)

    def refund(self, receipt: str, customer: str, amount: int, photo: bytes | None, mode: str):
        """Record an approved refund of `receipt`, labelled with the attack `mode` (ground truth for the
        benches); signed unless the terminal is rogue."""
        sha = self.photos.put(photo).sha256 if photo is not None else ""
        a = new_attempt(
            self.keys,
            self.store.replica,
            self.terminal,
            receipt,
            customer,
            amount,
            sha,
            APPROVED,
            ["approved by the terminal"],
            sign=not self.rogue,
        )
        a.clock = int(self.store.write(attempt_ops(a, label=str(mode))).clock)
        return a
