"""The fraud rules: every return attempt of a receipt, from every store, scored side by side.

Pure functions, no I/O: the detector (detector.py) gathers a receipt's story and the photo
verifications, and this module turns them into one verdict per attempt. A receipt is judged as a
whole, so an attempt is weighed against what came before it wherever it happened; a verdict can only
escalate (allow < review < block) when new attempts arrive, for example after a partition heals.
"Before" is what the deciding store had heard of (each store records the receipt's attempts it held
when it committed one), never a clock: two stores that had not heard of each other's return are
concurrent, whatever their clocks say (a store's clock may be off), and the evidence each attempt
carries decides between them, or a person does (`order`, `_concurrent_reasons`).

Score: the sum of the weights of the rules that fire, capped at 100 (weights in docs/detection-and-api.md).
Decision: block at or above the alert score (default 70) when at least one finding is a fact (HARD:
no such receipt, an earlier allowed return, no photo, an exact copy of a photo, a bad signature);
similarity and velocity are evidence, not facts, so on their own they only ever ask a person
(review at or above the review score, default 40). Else allow. Every review or block is an alert.

Value at stake: a face verifier that ships with the code can be searched offline for the customer's
closest lookalike (plain HOG cosine matched ~50% of such lookalikes, the face model a few percent, see
`frauddemo bench photo`). So a refund of at least `high_value_cents` is not allowed on a face match
alone unless the similarity reaches `confident_similarity` (set where <= 5% of screened lookalikes
reach it on the calibration identities): below that, a person looks (`high_value_unsure`). Set
high_value_cents to 0 to ask for every unconfident refund, or very high to turn the rule off.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from typing import Any

from .retail import HELD, REFUSED, Attempt, ReceiptStory, TerminalKeys

ALLOW, REVIEW, BLOCK = "allow", "review", "block"
RANK = {ALLOW: 0, REVIEW: 1, BLOCK: 2}

# Rule codes (the `reason` label of frauddemo_fraud_alerts_total: a bounded set) and weights.
UNKNOWN_RECEIPT = "unknown_receipt"
MULTIPLE_RETURNS = "multiple_returns"
MISSING_PHOTO = "missing_photo"
REPLAYED_PHOTO = "replayed_photo"
PHOTO_MISMATCH = "photo_mismatch"
PHOTO_REJECTED = "photo_rejected"
PHOTO_UNSURE = "photo_unsure"
TERMINAL_INTEGRITY = "terminal_integrity"
CONTESTED_RECEIPT = "contested_receipt"
VELOCITY = "velocity"
HIGH_VALUE_UNSURE = "high_value_unsure"
CONCURRENT_RETURNS = "concurrent_returns"
WEIGHTS = {
    UNKNOWN_RECEIPT: 100,  # no store has ever sold it
    REPLAYED_PHOTO: 80,  # an exact copy of an earlier photo (a near copy weighs 50)
    MULTIPLE_RETURNS: 80,  # an earlier return of the same receipt was allowed, at any store
    MISSING_PHOTO: 75,  # a registered POS always takes one
    TERMINAL_INTEGRITY: 70,  # unsigned or badly signed: a rogue terminal
    PHOTO_MISMATCH: 60,  # the face is not the purchase photo's customer
    PHOTO_REJECTED: 45,  # no usable face (dark, blurred, none)
    PHOTO_UNSURE: 40,  # similarity between the thresholds, or nothing to compare with
    VELOCITY: 25,  # the customer returned more than `velocity_max` times within the window
    CONTESTED_RECEIPT: 40,  # an earlier return of the receipt is under review: this one waits too
    HIGH_VALUE_UNSURE: 40,  # a large refund on a face match that a screened lookalike could reach
    CONCURRENT_RETURNS: 40,  # returned at two stores that had not heard of each other's return
}
HARD = {UNKNOWN_RECEIPT, MULTIPLE_RETURNS, MISSING_PHOTO, REPLAYED_PHOTO, TERMINAL_INTEGRITY}
NEAR_REPLAY_WEIGHT = 50
CAMERA_FAILURE_WEIGHT = 40  # missing photo from a signed till that held the refund: review, not a fact
UNKNOWN_PARTIAL_WEIGHT = 40  # unknown receipt while some store could not be read


@dataclasses.dataclass(frozen=True)
class DetectionConfig:
    alert_score: int = 70  # block at or above
    review_score: int = 40  # review at or above
    window_seconds: int = 300  # velocity window
    velocity_max: int = 3  # returns per customer within the window before the velocity rule fires
    high_value_cents: int = 20_000  # refunds from this value need a confident face match (or a person)
    # At least `frauddemo bench photo`'s calibration.confident_similarity (0.6924 with hog-lda-v2, 0.7173 with v1)
    confident_similarity: float = 0.72
    # A registered, correctly signing till that took no photo and held the refund itself (its camera
    # failed): "review" asks a person (the money was not paid); "block" treats it as any missing photo.
    camera_failure: str = "review"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DetectionConfig:
        env = os.environ if env is None else env
        out: dict[str, Any] = {}
        for f, var in (
            ("alert_score", "ALERT_SCORE"),
            ("review_score", "REVIEW_SCORE"),
            ("window_seconds", "WINDOW_SECONDS"),
            ("velocity_max", "VELOCITY_MAX"),
            ("high_value_cents", "HIGH_VALUE_CENTS"),
        ):
            raw = env.get(f"FRAUDDEMO_DETECTION_{var}")
            if raw is not None:
                try:
                    out[f] = int(raw)
                except ValueError:
                    raise ValueError(f"FRAUDDEMO_DETECTION_{var}={raw!r} is not an integer") from None
        raw = env.get("FRAUDDEMO_DETECTION_CAMERA_FAILURE")
        if raw is not None:
            if raw not in ("review", "block"):
                raise ValueError(f"FRAUDDEMO_DETECTION_CAMERA_FAILURE={raw!r}: use review or block")
            out["camera_failure"] = raw
        raw = env.get("FRAUDDEMO_DETECTION_CONFIDENT_SIMILARITY")
        if raw is not None:
            try:
                out["confident_similarity"] = float(raw)
            except ValueError:
                raise ValueError(f"FRAUDDEMO_DETECTION_CONFIDENT_SIMILARITY={raw!r} is not a number") from None
        cfg = cls(**out)
        if not 0 < cfg.review_score < cfg.alert_score <= 100:
            raise ValueError("detection scores must satisfy 0 < review score < alert score <= 100")
        if cfg.window_seconds < 1 or cfg.velocity_max < 1:
            raise ValueError("the detection window and velocity maximum must be positive")
        if cfg.high_value_cents < 0 or not -1.0 <= cfg.confident_similarity <= 1.0:
            raise ValueError("the high value must be >= 0 cents and the confident similarity in -1..1")
        return cfg

    def decide(self, score: int, hard: bool = True) -> str:
        if score >= self.alert_score and hard:
            return BLOCK
        return REVIEW if score >= self.review_score else ALLOW


@dataclasses.dataclass
class Judgement:
    attempt: str
    score: int
    decision: str
    reasons: list[dict[str, Any]]  # {"code", "weight", "text"}, heaviest first

    @property
    def main_reason(self) -> str:
        return self.reasons[0]["code"] if self.reasons else ""


def photo_reasons(a: Attempt, photo: dict[str, Any] | None) -> list[tuple[str, int, str]]:
    if not a.photo:
        return [(MISSING_PHOTO, WEIGHTS[MISSING_PHOTO], "no photo with the return")]
    if photo is None:
        return [(PHOTO_UNSURE, WEIGHTS[PHOTO_UNSURE], "the return photo could not be read from any store")]
    sim = photo.get("similarity")
    sim_txt = f" (similarity {sim:.3f})" if isinstance(sim, (int, float)) else ""
    if photo.get("replay") == "exact":
        return [(REPLAYED_PHOTO, WEIGHTS[REPLAYED_PHOTO], "the return photo is an exact copy of an earlier photo")]
    if photo.get("replay") == "near":
        return [(REPLAYED_PHOTO, NEAR_REPLAY_WEIGHT, "the return photo is a near copy of an earlier photo")]
    if photo.get("rejected"):
        return [(PHOTO_REJECTED, WEIGHTS[PHOTO_REJECTED], f"no usable face in the return photo: {photo['rejected']}")]
    if photo.get("verdict") == "mismatch":
        return [(PHOTO_MISMATCH, WEIGHTS[PHOTO_MISMATCH], f"the face does not match the purchase photo{sim_txt}")]
    if photo.get("verdict") == "review":
        return [(PHOTO_UNSURE, WEIGHTS[PHOTO_UNSURE], f"the face match is uncertain{sim_txt}")]
    return []


def value_reasons(
    a: Attempt, photo: dict[str, Any] | None, cfg: DetectionConfig, hits: object
) -> list[tuple[str, int, str]]:
    """A large refund whose only evidence of the customer is a face match below the confident
    similarity: a screened lookalike reaches such scores, so a person decides."""
    if hits or a.amount < cfg.high_value_cents or not photo or photo.get("verdict") != "match":
        return []
    sim = photo.get("similarity")
    if not isinstance(sim, (int, float)) or sim >= cfg.confident_similarity:
        return []
    return [
        (
            HIGH_VALUE_UNSURE,
            WEIGHTS[HIGH_VALUE_UNSURE],
            f"refund of {a.amount / 100:.2f} (from {cfg.high_value_cents / 100:.2f}) on a face match of "
            f"{sim:.3f} < {cfg.confident_similarity:.3f}: a searched lookalike can score that",
        )
    ]


def judge_receipt(
    story: ReceiptStory,
    photos: dict[str, dict[str, Any] | None],
    stored: dict[str, str],
    velocity: dict[str, int],
    keys: TerminalKeys,
    cfg: DetectionConfig,
) -> dict[str, Judgement]:
    """Judge every attempt of one receipt. `photos`: photo verdict per attempt id; `stored`: decision
    already stored per attempt id (verdicts only escalate); `velocity`: the customer's returns within
    the window ending at each attempt."""
    out: dict[str, Judgement] = {}
    earlier: list[tuple[Attempt, str]] = []
    attempts = _in_order(story.attempts.values())
    own = {a.id: _own_reasons(a, story, photos, keys, cfg) for a in attempts}
    for a in attempts:
        hits = list(own[a.id])
        hits += _earlier_reasons(a, [(b, d) for b, d in earlier if order(b, a) == BEFORE])
        hits += _concurrent_reasons(a, [b for b in attempts if b is not a and order(b, a) == CONCURRENT], own)
        n = velocity.get(a.id, 0)
        if n > cfg.velocity_max:
            hits.append((VELOCITY, WEIGHTS[VELOCITY], f"{n} returns by this customer within {cfg.window_seconds} s"))
        hits.sort(key=lambda h: -h[1])
        score = min(100, sum(h[1] for h in hits))
        decision = cfg.decide(score, any(code in HARD and w == WEIGHTS[code] for code, w, _ in hits))
        prior = stored.get(a.id, ALLOW)
        if RANK.get(prior, 0) > RANK[decision]:
            decision = prior
        out[a.id] = Judgement(a.id, score, decision, [{"code": c, "weight": w, "text": t} for c, w, t in hits])
        earlier.append((a, decision))
    return out


def _own_reasons(
    a: Attempt, story: ReceiptStory, photos: dict[str, dict[str, Any] | None], keys: TerminalKeys, cfg: DetectionConfig
) -> list[tuple[str, int, str]]:
    """What the attempt itself carries: its receipt, photo, value and signature (not the other attempts)."""
    hits: list[tuple[str, int, str]] = []
    if story.receipt is None:
        if story.unreachable:
            hits.append(
                (
                    UNKNOWN_RECEIPT,
                    UNKNOWN_PARTIAL_WEIGHT,
                    f"receipt unknown at every reachable store ({', '.join(story.unreachable)} unreachable)",
                )
            )
        else:
            hits.append((UNKNOWN_RECEIPT, WEIGHTS[UNKNOWN_RECEIPT], "receipt unknown at every store"))
    problem = keys.problem(a.terminal, a.payload, a.sig)
    if not a.photo and not problem and a.decision == HELD and cfg.camera_failure == "review":
        hits.append(
            (
                MISSING_PHOTO,
                CAMERA_FAILURE_WEIGHT,
                "no photo from a registered till, which held the refund itself (a camera failure?): a person decides",
            )
        )
    else:
        hits += photo_reasons(a, photos.get(a.id))
    hits += value_reasons(a, photos.get(a.id), cfg, hits)
    if problem:
        hits.append((TERMINAL_INTEGRITY, WEIGHTS[TERMINAL_INTEGRITY], f"terminal {a.terminal}: {problem}"))
    return hits


BEFORE, AFTER, CONCURRENT = "before", "after", "concurrent"


def _in_order(attempts: Iterable[Attempt]) -> list[Attempt]:
    """Every attempt after those it came after (`order`), the rest by clock."""
    left = sorted(attempts, key=lambda x: (x.clock, x.id))
    out: list[Attempt] = []
    while left:
        i = next((i for i, a in enumerate(left) if not any(order(b, a) == BEFORE for b in left if b is not a)), 0)
        out.append(left.pop(i))
    return out


def order(b: Attempt, a: Attempt) -> str:
    """Whether `b` came BEFORE or AFTER `a`, or CONCURRENT: neither store had heard of the other's
    attempt when it decided. Across stores this is read from what each store recorded it held (never
    from clocks, which may be off); one store's own commits are ordered by its clock; attempts without
    that record (older data) fall back to the clock."""
    by_clock = BEFORE if (b.clock, b.id) < (a.clock, a.id) else AFTER
    if b.store == a.store:
        return by_clock
    a_saw_b, b_saw_a = a.saw(b), b.saw(a)
    if a_saw_b:
        return BEFORE
    if b_saw_a:
        return AFTER
    if a_saw_b is False and b_saw_a is False:
        return CONCURRENT
    return by_clock


def _concurrent_reasons(
    a: Attempt, others: list[Attempt], own: dict[str, list[tuple[str, int, str]]]
) -> list[tuple[str, int, str]]:
    """Refunds of one receipt at stores that had not heard of each other's: no clock can say which came
    first. A fact against one of them (no photo, a copied photo, a bad signature) makes it the second
    refund when a rival has none; otherwise (the same evidence, or only doubts such as an unsure face
    match) both wait for a person."""
    rivals = [b for b in others if b.decision != REFUSED]
    if not rivals or a.decision == REFUSED:
        return []
    sound = [b for b in rivals if not _has_fact(own[b.id])]
    if _has_fact(own[a.id]) and sound:
        return [
            (
                MULTIPLE_RETURNS,
                WEIGHTS[MULTIPLE_RETURNS],
                f"receipt also returned at store {sound[0].store} while neither store had heard of the other's "
                f"return; that return has nothing against it and this one does (attempt {sound[0].id})",
            )
        ]
    if not sound:  # facts against every rival: they are the second refunds (this one too if it has one)
        return []
    return [
        (
            CONCURRENT_RETURNS,
            WEIGHTS[CONCURRENT_RETURNS],
            f"receipt also returned at store {sound[0].store} while neither store had heard of the other's "
            f"return (attempt {sound[0].id}): no clock can tell which came first, so a person decides",
        )
    ]


def _has_fact(hits: list[tuple[str, int, str]]) -> bool:
    return any(code in HARD and w == WEIGHTS[code] for code, w, _ in hits)


def _earlier_reasons(a: Attempt, earlier: list[tuple[Attempt, str]]) -> list[tuple[str, int, str]]:
    """Earlier attempts of the same receipt: one allowed means this is a second refund."""
    contested = None
    for b, decision in reversed(earlier):
        if b.decision == REFUSED:
            continue
        where = "at the same store" if b.store == a.store else f"at store {b.store}"
        gap_ms = (a.clock - b.clock) / 1000
        if decision == ALLOW:
            return [
                (
                    MULTIPLE_RETURNS,
                    WEIGHTS[MULTIPLE_RETURNS],
                    f"receipt already returned {where} {gap_ms:.1f} ms earlier (attempt {b.id}, "
                    f"{'with' if b.photo else 'without'} photo)",
                )
            ]
        if decision == REVIEW and contested is None:
            contested = (
                CONTESTED_RECEIPT,
                WEIGHTS[CONTESTED_RECEIPT],
                f"an earlier return {where} is under review (attempt {b.id})",
            )
    return [contested] if contested else []
