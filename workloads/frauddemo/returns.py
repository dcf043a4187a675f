"""Return processing at one store: approve, hold for review or refuse, from what this store knows.

A store decides alone (it must answer the till now, partitioned or not): the receipt must be known
here (sold here or replicated here), not already refunded or held here or anywhere this store has
heard of, and the customer's fresh photo must match the purchase photo. Whatever the decision, the
attempt is recorded in the receipt's add-wins set, so no merge ever loses it and the detector sees
every attempt, refused ones included.

Deciding is a read, then a write: two tills of one store returning the same receipt at once would
both read "not refunded" and both approve. So a write that approves or holds starts with a guard,
`h:gate:<receipt>:<n>` created once per store (n: how many of the receipt's refunds the detector has
blocked, so a blocked refund opens the gate again); the loser's write is skipped and it decides again,
now seeing the winner's attempt. Across stores the gate replicates with the attempt, so it adds
nothing there: two stores that have not yet heard of each other's return both approve (by design;
the detector blocks the later one).
"""

from __future__ import annotations

import dataclasses

from .photos import verify as ver
from .photos.storage import PhotoStore
from .retail import (
    APPROVED,
    HELD,
    REFUSED,
    Attempt,
    Receipt,
    TerminalKeys,
    attempt_ops,
    new_attempt,
    read_stories,
    verdict_key,
)
from .store import Store, ops

BLOCK = "block"  # the detector's decision that undoes an approval (detection.py)
DECIDE_TRIES = 3


def gate_key(receipt: str, generation: int) -> str:
    return f"h:gate:{receipt}:{generation}"


@dataclasses.dataclass
class ReturnOutcome:
    attempt: Attempt
    photo: dict | None  # the photo verdict (verify.Verdict.to_dict()), None without a photo

    def to_dict(self) -> dict:
        return {**self.attempt.to_dict(), "photo_verification": self.photo}


def local_decision(
    store: str, receipt: Receipt | None, earlier: list[tuple[Attempt, str]], photo: ver.Verdict | None
) -> tuple[str, list[str]]:
    """The store's decision and its reasons. `earlier`: (attempt, detector decision or "")."""
    if receipt is None:
        return REFUSED, ["unknown receipt: not sold here and not replicated here"]
    for a, verdict in earlier:
        if verdict == BLOCK:
            continue
        where = "here" if a.store == store else f"at store {a.store}"
        if a.decision == APPROVED:
            return REFUSED, [f"already refunded {where} (attempt {a.id})"]
        if a.decision == HELD:
            return REFUSED, [f"a return of this receipt is held for review {where} (attempt {a.id})"]
    if photo is None:
        return HELD, ["no photo of the customer"]
    reasons = [f"photo: {r}" for r in photo.reasons]
    if photo.verdict == ver.MATCH:
        return APPROVED, reasons
    if photo.verdict == ver.MISMATCH:
        return REFUSED, reasons
    return HELD, reasons


@dataclasses.dataclass(frozen=True)
class ReturnRequest:
    receipt: str
    photo: bytes | None
    customer: str = ""  # who the person at the till says they are; the receipt's customer wins
    label: str | None = None  # ground truth, written only by simulators


def process_return(
    store: Store,
    photos: PhotoStore,
    keys: TerminalKeys,
    terminal: str,
    receipt_id: str,
    photo: bytes | None,
    customer: str = "",
    label: str | None = None,
) -> ReturnOutcome:
    """Decide a return at this store and record it in one atomic write, its photo stored just before.

    Raises PhotoRejected when `photo` is not an acceptable image at all (nothing is written);
    redis errors when the store is down (nothing is written either, or only the photo)."""
    return process_returns(store, photos, keys, terminal, [ReturnRequest(receipt_id, photo, customer, label)])[0]


def process_returns(
    store: Store,
    photos: PhotoStore,
    keys: TerminalKeys,
    terminal: str,
    requests: list[ReturnRequest],
    tries: int = DECIDE_TRIES,
) -> list[ReturnOutcome]:
    """Several returns at one till with pipelined reads and writes, each its own atomic write; a
    return that lost its receipt's gate to a concurrent one is decided again.

    The photos are written first, each its own write, as a purchase's photo is (a content-addressed
    blob is harmless alone, and it reaches the other stores before the attempt: the op log is in
    order). The store checks a new photo's SHA-256 in Lua, ~30 ms for a 50 KB JPEG, with its clock
    taken when the write starts: inside the attempt's write, that check held the attempt's event back
    from the detector and was counted in its detection latency."""
    stories = read_stories({store.replica: store}, [req.receipt for req in requests])
    known = {aid: a for st in stories.values() for aid, a in st.attempts.items()}
    verdicts = {}
    if known:
        pipe = store.r.pipeline(transaction=False)
        for aid in known:
            pipe.hget(verdict_key(aid), "decision")
        verdicts = {aid: (v or b"").decode() for aid, v in zip(known, pipe.execute())}

    attempts, writes, photo_verdicts, photo_writes = [], [], [], []
    for req in requests:
        receipt = stories[req.receipt].receipt
        earlier = sorted(stories[req.receipt].attempts.values(), key=lambda a: (a.clock, a.id))
        verdict, w, sha = None, [], ""
        if req.photo is not None:
            stored, verdict, w = photos.prepare_return(
                req.photo, (receipt.photo if receipt else "") or None, tuple(a.photo for a in earlier if a.photo)
            )
            sha = stored.sha256
        decision, reasons = local_decision(
            store.replica, receipt, [(a, verdicts.get(a.id, "")) for a in earlier], verdict
        )
        customer = receipt.customer if receipt else req.customer or "unknown"
        a = new_attempt(
            keys,
            store.replica,
            terminal,
            req.receipt,
            customer,
            receipt.amount if receipt else 0,
            sha,
            decision,
            reasons,
        )
        attempts.append(a)
        photo_verdicts.append(verdict)
        gate = []
        if decision != REFUSED:
            blocked = sum(1 for b in earlier if b.decision != REFUSED and verdicts.get(b.id) == BLOCK)
            gate = [ops.hcreate(gate_key(req.receipt, blocked), {"attempt": a.id, "store": store.replica})]
        if w:
            photo_writes.append(w)
        writes.append(gate + attempt_ops(a, req.label))
    if photo_writes:
        store.write_many(photo_writes)
    out: list[ReturnOutcome | None] = []
    again = []
    for i, (a, verdict, commit) in enumerate(zip(attempts, photo_verdicts, store.write_many(writes))):
        if commit.skipped:  # another return of the receipt passed its gate first
            if tries <= 1:
                raise RuntimeError(f"return of {a.receipt} kept losing its gate to concurrent returns")
            out.append(None)
            again.append(i)
            continue
        a.clock = int(commit.clock)
        out.append(ReturnOutcome(a, verdict.to_dict() if verdict else None))
    if again:
        redone = process_returns(store, photos, keys, terminal, [requests[i] for i in again], tries - 1)
        for i, o in zip(again, redone):
            out[i] = o
    return out
