"""The fraud rules as pure functions: each rule, the score, the decisions and escalation."""

import pytest

from frauddemo.detection import DetectionConfig, judge_receipt
from frauddemo.retail import Attempt, Receipt, ReceiptStory, TerminalKeys, signed_payload

KEYS = TerminalKeys(b"k" * 32)
MATCH = {"verdict": "match", "similarity": 0.98, "rejected": None, "replay": None}


def attempt(aid, clock, store="a", photo="p" * 64, decision="approved", signed=True, terminal="a-pos-1"):
    sig = KEYS.sign(terminal, signed_payload(aid, "r1", store, terminal, 100, photo)) if signed else ""
    return Attempt(aid, "r1", store, terminal, "c1", 100, photo, decision, [], sig, clock)


def judge(*attempts, receipt=True, photos=None, stored=None, velocity=None, unreachable=()):
    rc = Receipt("r1", "a", "a-pos-1", "c1", [], 100, "q" * 64, 1) if receipt else None
    story = ReceiptStory(rc, {a.id: a for a in attempts}, list(unreachable))
    photos = photos if photos is not None else {a.id: MATCH for a in attempts if a.photo}
    return judge_receipt(story, photos, stored or {}, velocity or {}, KEYS, DetectionConfig())


def codes(j):
    return [r["code"] for r in j.reasons]


def test_a_clean_return_is_allowed():
    j = judge(attempt("t1", 10))["t1"]
    assert (j.score, j.decision, j.reasons) == (0, "allow", [])


@pytest.mark.parametrize(
    "photo, code, decision",
    [
        ({"verdict": "mismatch", "similarity": 0.9}, "photo_mismatch", "review"),
        ({"verdict": "review", "similarity": 0.95}, "photo_unsure", "review"),
        ({"verdict": "review", "rejected": "too_dark"}, "photo_rejected", "review"),
        ({"verdict": "mismatch", "replay": "exact"}, "replayed_photo", "block"),
        ({"verdict": "review", "replay": "near"}, "replayed_photo", "review"),
    ],
)
def test_photo_rules(photo, code, decision):
    j = judge(attempt("t1", 10), photos={"t1": photo})["t1"]
    assert codes(j) == [code] and j.decision == decision


def test_missing_photo_unknown_receipt_and_rogue_terminal_block():
    assert judge(attempt("t1", 10, photo=""))["t1"].decision == "block"
    j = judge(attempt("t1", 10), receipt=False)["t1"]
    assert codes(j) == ["unknown_receipt"] and j.score == 100
    partial = judge(attempt("t1", 10), receipt=False, unreachable=["b"])["t1"]
    assert partial.decision == "review" and "unreachable" in partial.reasons[0]["text"]
    rogue = judge(attempt("t1", 10, signed=False))["t1"]
    assert codes(rogue) == ["terminal_integrity"] and rogue.decision == "block"


def test_a_second_return_anywhere_is_blocked_and_the_first_is_not():
    out = judge(attempt("t1", 10, store="a"), attempt("t2", 11, store="b"))
    assert out["t1"].decision == "allow"
    assert codes(out["t2"]) == ["multiple_returns"] and out["t2"].decision == "block"
    assert "at store a" in out["t2"].reasons[0]["text"]


def test_an_earlier_blocked_or_refused_attempt_does_not_count_against_the_customer():
    out = judge(attempt("t1", 10, store="b", photo=""), attempt("t2", 11))
    assert out["t1"].decision == "block" and out["t2"].decision == "allow"
    out = judge(attempt("t1", 10, decision="refused"), attempt("t2", 11))
    assert out["t2"].decision == "allow"
    held = judge(attempt("t1", 10), attempt("t2", 11), photos={"t1": {"verdict": "mismatch"}, "t2": MATCH})
    assert held["t1"].decision == "review" and codes(held["t2"]) == ["contested_receipt"]


def test_velocity_and_the_cap():
    j = judge(attempt("t1", 10, photo="", signed=False), receipt=False, velocity={"t1": 9})["t1"]
    assert set(codes(j)) == {"unknown_receipt", "missing_photo", "terminal_integrity", "velocity"}
    assert j.score == 100 and codes(j)[0] == "unknown_receipt"


def test_verdicts_only_escalate():
    j = judge(attempt("t1", 10), stored={"t1": "block"})["t1"]
    assert j.decision == "block"


@pytest.mark.parametrize(
    "env, err",
    [
        ({"FRAUDDEMO_DETECTION_ALERT_SCORE": "x"}, "not an integer"),
        ({"FRAUDDEMO_DETECTION_REVIEW_SCORE": "80"}, "review score < alert score"),
        ({"FRAUDDEMO_DETECTION_WINDOW_SECONDS": "0"}, "positive"),
    ],
)
def test_bad_detection_settings_are_refused(env, err):
    with pytest.raises(ValueError, match=err):
        DetectionConfig.from_env(env)


def test_evidence_alone_never_blocks_only_facts_do():
    soft = judge(attempt("t1", 10), photos={"t1": {"verdict": "mismatch", "similarity": 0.9}}, velocity={"t1": 9})
    assert soft["t1"].score == 85 and soft["t1"].decision == "review"
    near = judge(attempt("t1", 10), photos={"t1": {"verdict": "review", "replay": "near"}}, velocity={"t1": 9})
    assert near["t1"].decision == "review"
    partial = judge(attempt("t1", 10, photo=""), receipt=False, unreachable=["b"])["t1"]
    assert partial.decision == "block"  # the missing photo is a fact
