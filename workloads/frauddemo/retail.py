"""The retail domain on the stores: catalogue, receipts, return attempts, terminal signatures, and
reading one receipt's story back from every store at once.

Keys (replicated CRDT keys; store.lua has the types):
  h:rcpt:<receipt>     purchase: store, terminal, customer, items (JSON), amount (cents), photo (sha256 or "")
  s:ret:<receipt>      add-wins set of the receipt's return attempt ids: every attempt survives a merge,
                       which is what lets concurrent returns at two stores be seen side by side
  h:ret:<attempt>      return attempt: receipt, store, terminal, customer, amount, photo, decision (the
                       store's own: approved | held | refused), reasons (JSON list), sig (terminal HMAC)
  s:cret:<customer>    the customer's return attempts as "<unix ms>:<attempt>" (velocity)
  h:verdict:<attempt>  the detector's verdict (detection.py), h:alert:<alert> its alerts
Local event streams (one set per store, never replicated; detectors read every store's):
  fd:ev:purchases  fd:ev:returns  fd:ev:verdicts  fd:ev:alerts
  fd:ev:labels     ground truth written by the simulators; only benchmarks read it, never the detector
The commit time of a record is the HLC clock in its tags (store.lua), so it needs no field of its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Mapping

import redis

from .ids import new_id
from .store import Store, ops

# A small catalogue: (sku, name, price in cents).
CATALOGUE = {
    "shirt": ("Oxford shirt", 4999),
    "jeans": ("Slim jeans", 7999),
    "jacket": ("Rain jacket", 12999),
    "shoes": ("Running shoes", 9999),
    "scarf": ("Wool scarf", 2999),
    "watch": ("Steel watch", 24999),
    "headphones": ("Wireless headphones", 19999),
    "bag": ("Leather bag", 15999),
    "sweater": ("Cashmere sweater", 18999),
    "cap": ("Baseball cap", 1999),
}
MAX_ITEMS = 20
MAX_QTY = 10
TEXT_MAX = 64  # customer ids, terminal ids

PURCHASES, RETURNS, VERDICTS, ALERTS, LABELS = (
    "fd:ev:purchases",
    "fd:ev:returns",
    "fd:ev:verdicts",
    "fd:ev:alerts",
    "fd:ev:labels",
)
APPROVED, HELD, REFUSED = "approved", "held", "refused"
LEGIT = "legit"  # the ground-truth label of an honest attempt


def receipt_key(rid: str) -> str:
    return f"h:rcpt:{rid}"


def attempts_key(rid: str) -> str:
    return f"s:ret:{rid}"


def attempt_key(aid: str) -> str:
    return f"h:ret:{aid}"


def customer_returns_key(customer: str) -> str:
    return f"s:cret:{customer}"


def verdict_key(aid: str) -> str:
    return f"h:verdict:{aid}"


def alert_key(alert_id: str) -> str:
    return f"h:alert:{alert_id}"


class InvalidInput(ValueError):
    """A request the domain refuses before anything is written (becomes an HTTP 422)."""


def check_text(name: str, value, limit: int = TEXT_MAX) -> str:
    """Free text (customer and terminal ids): any characters, HTML included, kept as data."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{name} must be a non-empty string")
    if len(value) > limit or any(ord(c) < 32 for c in value):
        raise InvalidInput(f"{name} must be at most {limit} printable characters")
    return value


def price(items: Mapping[str, int]) -> tuple[list[dict], int]:
    """Catalogue lines and the total in cents; unknown SKUs and bad quantities are refused."""
    if not isinstance(items, Mapping) or not items:
        raise InvalidInput("items must name at least one catalogue SKU with a quantity")
    if len(items) > MAX_ITEMS:
        raise InvalidInput(f"at most {MAX_ITEMS} different items per purchase")
    lines, total = [], 0
    for sku, qty in items.items():
        if sku not in CATALOGUE:
            raise InvalidInput(f"unknown SKU {str(sku)[:40]!r}; the catalogue has {', '.join(CATALOGUE)}")
        if not isinstance(qty, int) or isinstance(qty, bool) or not 1 <= qty <= MAX_QTY:
            raise InvalidInput(f"quantity of {sku} must be an integer 1..{MAX_QTY}")
        name, cents = CATALOGUE[sku]
        lines.append({"sku": sku, "name": name, "qty": qty, "price_cents": cents})
        total += qty * cents
    return lines, total


# -- terminal signatures ----------------------------------------------------------------------------
class TerminalKeys:
    """Per-terminal HMAC keys derived from one provisioning secret.

    Registered terminals are given their key; a rogue terminal has none, so its attempts are unsigned
    or carry a bad signature. A compromised registered terminal signs correctly: signatures cannot
    catch it, only the photo and cross-store rules can.
    """

    def __init__(self, secret: bytes | None):
        self.secret = secret

    @classmethod
    def from_secret(cls, value: str | None) -> TerminalKeys:
        """The provisioning secret as text (any printable string; its UTF-8 bytes are the HMAC key)."""
        value = (value or "").strip()
        if value and len(value) < 16:
            raise InvalidInput("the terminal key must be at least 16 characters")
        return cls(value.encode() if value else None)

    def key(self, terminal: str) -> bytes:
        return hmac.new(self.secret, b"terminal:" + terminal.encode(), hashlib.sha256).digest()

    def sign(self, terminal: str, payload: str) -> str:
        if self.secret is None:
            return ""
        return hmac.new(self.key(terminal), payload.encode(), hashlib.sha256).hexdigest()

    def problem(self, terminal: str, payload: str, sig: str) -> str | None:
        """None when the signature is good; else what is wrong with it."""
        if not sig:
            return "unsigned"
        if self.secret is None:
            return None
        if not hmac.compare_digest(self.sign(terminal, payload), sig):
            return "bad signature (unknown terminal or forged)"
        return None


def signed_payload(aid: str, receipt: str, store: str, terminal: str, amount: int, photo: str) -> str:
    return "\n".join((aid, receipt, store, terminal, str(amount), photo))


# -- records ----------------------------------------------------------------------------------------
@dataclasses.dataclass
class Receipt:
    id: str
    store: str
    terminal: str
    customer: str
    items: list
    amount: int  # cents
    photo: str  # sha256 of the purchase photo, "" without one
    clock: int  # commit HLC, microseconds

    def to_dict(self) -> dict:
        return {
            "receipt": self.id,
            "store": self.store,
            "terminal": self.terminal,
            "customer": self.customer,
            "items": self.items,
            "amount_cents": self.amount,
            "photo": self.photo or None,
            "committed_us": self.clock,
        }


@dataclasses.dataclass
class Attempt:
    id: str
    receipt: str
    store: str
    terminal: str
    customer: str
    amount: int
    photo: str
    decision: str  # the store's local decision
    reasons: list
    sig: str
    clock: int
    # the receipt's attempts its store held when it committed this one (recorded by the store itself);
    # None when not recorded (an attempt written by an older version)
    seen: frozenset[str] | None = None

    def saw(self, other: Attempt) -> bool | None:
        """Whether this attempt's store had heard of `other` when it decided; None when unknown."""
        return None if self.seen is None else other.id in self.seen

    @property
    def payload(self) -> str:
        return signed_payload(self.id, self.receipt, self.store, self.terminal, self.amount, self.photo)

    def to_dict(self) -> dict:
        return {
            "attempt": self.id,
            "receipt": self.receipt,
            "store": self.store,
            "terminal": self.terminal,
            "customer": self.customer,
            "amount_cents": self.amount,
            "photo": self.photo or None,
            "local_decision": self.decision,
            "local_reasons": self.reasons,
            "signed": bool(self.sig),
            "committed_us": self.clock,
            "store_had_heard_of": sorted(self.seen) if self.seen is not None else None,
        }


def decode_hash(raw: Mapping[bytes, bytes]) -> tuple[dict, int]:
    """Live fields of a raw LWW hash and the clock of its oldest field (the record's commit)."""
    fields, clock = {}, 0
    for k, v in raw.items():
        if k[:1] == b"~":
            c = int(v[:16])
            clock = c if not clock else min(clock, c)
        else:
            fields[k.decode()] = v.decode()
    return fields, clock


def _int(v, default=0) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def _json_list(v) -> list:
    try:
        out = json.loads(v)
    except (TypeError, ValueError):
        return []
    return out if isinstance(out, list) else []


def receipt_from(rid: str, raw) -> Receipt | None:
    f, clock = decode_hash(raw)
    if "store" not in f:
        return None
    return Receipt(
        rid,
        f["store"],
        f.get("terminal", ""),
        f.get("customer", ""),
        _json_list(f.get("items")),
        _int(f.get("amount")),
        f.get("photo", ""),
        clock,
    )


def attempt_from(aid: str, raw) -> Attempt | None:
    f, clock = decode_hash(raw)
    if "receipt" not in f:
        return None
    return Attempt(
        aid,
        f["receipt"],
        f.get("store", ""),
        f.get("terminal", ""),
        f.get("customer", ""),
        _int(f.get("amount")),
        f.get("photo", ""),
        f.get("decision", ""),
        _json_list(f.get("reasons")),
        f.get("sig", ""),
        clock,
        frozenset(filter(None, f["@seen"].split(","))) if "@seen" in f else None,
    )


# -- writes -----------------------------------------------------------------------------------------
def purchase_ops(
    store: str, terminal: str, customer: str, items: Mapping[str, int], photo: str = "", rid: str | None = None
) -> tuple[str, list]:
    """The operations of one purchase (one atomic write): the receipt and its event."""
    lines, total = price(items)
    rid = rid or new_id("r")
    w = [
        ops.hset(
            receipt_key(rid),
            {
                "store": store,
                "terminal": terminal,
                "customer": customer,
                "items": json.dumps(lines, separators=(",", ":")),
                "amount": total,
                "photo": photo,
            },
        ),
        ops.event(PURCHASES, {"rcpt": rid, "customer": customer, "amount": total}),
    ]
    return rid, w


def attempt_ops(a: Attempt, label: str | None = None) -> list:
    """The operations of one return attempt (one atomic write), its event and, for simulators, its
    ground-truth label."""
    w = [
        ops.hknown(attempt_key(a.id), "@seen", attempts_key(a.receipt)),  # before this attempt joins the set
        ops.sadd(attempts_key(a.receipt), a.id),
        ops.sadd(customer_returns_key(a.customer), f"{int(time.time() * 1000)}:{a.id}"),
        ops.hset(
            attempt_key(a.id),
            {
                "receipt": a.receipt,
                "store": a.store,
                "terminal": a.terminal,
                "customer": a.customer,
                "amount": a.amount,
                "photo": a.photo,
                "decision": a.decision,
                "reasons": json.dumps(a.reasons),
                "sig": a.sig,
            },
        ),
        ops.event(
            RETURNS,
            {
                "att": a.id,
                "rcpt": a.receipt,
                "customer": a.customer,
                "amount": a.amount,
                "photo": "1" if a.photo else "0",
                "decision": a.decision,
            },
        ),
    ]
    if label is not None:
        w.append(ops.event(LABELS, {"att": a.id, "label": label}))
    return w


def new_attempt(
    keys: TerminalKeys,
    store: str,
    terminal: str,
    receipt: str,
    customer: str,
    amount: int,
    photo: str,
    decision: str,
    reasons: list,
    sign: bool = True,
) -> Attempt:
    aid = new_id("t")
    sig = keys.sign(terminal, signed_payload(aid, receipt, store, terminal, amount, photo)) if sign else ""
    return Attempt(aid, receipt, store, terminal, customer, amount, photo, decision, reasons, sig, 0)


# -- reads across stores ----------------------------------------------------------------------------
@dataclasses.dataclass
class ReceiptStory:
    """What every reachable store knows of one receipt: the purchase and every return attempt."""

    receipt: Receipt | None
    attempts: dict[str, Attempt]
    unreachable: list[str]


def read_stories(stores: Mapping[str, Store], receipts: Iterable[str]) -> dict[str, ReceiptStory]:
    """Each receipt's story as the union of every reachable store's view (two pipelined round trips
    per store). The union is what lets the detector see both attempts of a double return even
    before they replicate."""
    rids = list(dict.fromkeys(receipts))
    unreachable = []
    per_store = {}
    for name, s in stores.items():
        try:
            pipe = s.r.pipeline(transaction=False)
            for rid in rids:
                pipe.hgetall(receipt_key(rid))
                pipe.hvals(attempts_key(rid))
            per_store[name] = pipe.execute()
        except (redis.RedisError, OSError):
            unreachable.append(name)
    receipts_found: dict[str, Receipt] = {}
    aids: dict[str, set] = {rid: set() for rid in rids}
    for res in per_store.values():
        for i, rid in enumerate(rids):
            if rid not in receipts_found:
                r = receipt_from(rid, res[2 * i])
                if r is not None:
                    receipts_found[rid] = r
            aids[rid].update(v.decode() for v in res[2 * i + 1])
    attempts = read_attempts(
        {n: stores[n] for n in per_store}, set().union(*aids.values()) if aids else set(), unreachable
    )
    return {
        rid: ReceiptStory(
            receipts_found.get(rid), {a: attempts[a] for a in sorted(aids[rid]) if a in attempts}, unreachable
        )
        for rid in rids
    }


def read_attempts(
    stores: Mapping[str, Store], aids: Iterable[str], unreachable: list | None = None
) -> dict[str, Attempt]:
    aids = sorted(aids)
    out: dict[str, Attempt] = {}
    if not aids:
        return out
    for name, s in stores.items():
        try:
            pipe = s.r.pipeline(transaction=False)
            for aid in aids:
                pipe.hgetall(attempt_key(aid))
            res = pipe.execute()
        except (redis.RedisError, OSError):
            if unreachable is not None and name not in unreachable:
                unreachable.append(name)
            continue
        for aid, raw in zip(aids, res):
            if aid not in out:
                a = attempt_from(aid, raw)
                if a is not None:
                    out[aid] = a
    return out
