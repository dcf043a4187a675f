"""Return processing at one store: approve, hold for review or refuse, from what this store knows.

A store decides alone (it must answer the till now, partitioned or not): the receipt must be known
here (sold here or replicated here), not already refunded or held here or anywhere this store has
heard of, and the customer's fresh photo must match the purchase photo. Whatever the decision, the
attempt is recorded in the receipt's add-wins set, so no merge ever loses it and the detector sees
every attempt, refused ones included.
"""
from __future__ import annotations

import dataclasses

from .photos import verify as ver
from .photos.storage import PhotoStore
from .retail import (APPROVED, HELD, REFUSED, Attempt, Receipt, TerminalKeys, attempt_ops, attempts_key,
                     new_attempt, read_attempts, receipt_from, receipt_key, verdict_key)
from .store import Store

BLOCK = "block"  # the detector's decision that undoes an approval (detection.py)


@dataclasses.dataclass
class ReturnOutcome:
    attempt: Attempt
    photo: dict | None  # the photo verdict (verify.Verdict.to_dict()), None without a photo

    def to_dict(self) -> dict:
        return {**self.attempt.to_dict(), "photo_verification": self.photo}


def local_decision(store: str, receipt: Receipt | None, earlier: list[tuple[Attempt, str]],
                   photo: ver.Verdict | None) -> tuple[str, list[str]]:
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


def process_return(store: Store, photos: PhotoStore, keys: TerminalKeys, terminal: str, receipt_id: str,
                   photo: bytes | None, customer: str = "", label: str | None = None) -> ReturnOutcome:
    """Decide a return at this store and record it in one atomic write (photo included). `customer`
    is who the person at the till says they are; the receipt's customer wins when it is known.

    Raises PhotoRejected when `photo` is not an acceptable image at all (nothing is written);
    redis errors when the store is down (nothing is written either)."""
    pipe = store.r.pipeline(transaction=False)
    pipe.hgetall(receipt_key(receipt_id))
    pipe.hvals(attempts_key(receipt_id))
    raw_receipt, raw_aids = pipe.execute()
    receipt = receipt_from(receipt_id, raw_receipt)
    earlier_attempts = read_attempts({store.replica: store}, [v.decode() for v in raw_aids])
    earlier = sorted(earlier_attempts.values(), key=lambda a: (a.clock, a.id))
    verdicts = store.r.pipeline(transaction=False)
    for a in earlier:
        verdicts.hget(verdict_key(a.id), "decision")
    decisions = [(v or b"").decode() for v in verdicts.execute()] if earlier else []

    verdict, writes, sha = None, [], ""
    if photo is not None:
        purchase_photo = receipt.photo if receipt else None
        stored, verdict, writes = photos.prepare_return(
            photo, purchase_photo or None, tuple(a.photo for a in earlier if a.photo))
        sha = stored.sha256
    decision, reasons = local_decision(store.replica, receipt, list(zip(earlier, decisions)), verdict)
    a = new_attempt(keys, store.replica, terminal, receipt_id, receipt.customer if receipt else customer or "unknown",
                    receipt.amount if receipt else 0, sha, decision, reasons)
    commit = store.write(writes + attempt_ops(a, label))
    a.clock = int(commit.clock)
    return ReturnOutcome(a, verdict.to_dict() if verdict else None)
