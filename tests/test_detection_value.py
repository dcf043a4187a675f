"""Value at stake (issue 17, item 2): a large refund is not allowed on a face match a screened lookalike
could reach; small refunds and confident matches are; the limits are configurable."""

import pytest

from frauddemo.detection import HIGH_VALUE_UNSURE, DetectionConfig, judge_receipt
from frauddemo.retail import Attempt, Receipt, ReceiptStory, TerminalKeys, signed_payload

KEYS = TerminalKeys(b"k" * 32)
CFG = DetectionConfig(high_value_cents=20_000, confident_similarity=0.97)


def judge(amount, photo, cfg=CFG):
    sig = KEYS.sign("a-pos-1", signed_payload("t1", "r1", "a", "a-pos-1", amount, "p" * 64))
    a = Attempt("t1", "r1", "a", "a-pos-1", "c1", amount, "p" * 64, "approved", [], sig, 10)
    story = ReceiptStory(Receipt("r1", "a", "a-pos-1", "c1", [], amount, "q" * 64, 1), {"t1": a}, [])
    return judge_receipt(story, {"t1": photo}, {}, {}, KEYS, cfg)["t1"]


def match(sim):
    return {"verdict": "match", "similarity": sim, "rejected": None, "replay": None}


def test_a_large_refund_on_an_unconfident_match_goes_to_a_person():
    j = judge(24_999, match(0.955))
    assert j.decision == "review" and [r["code"] for r in j.reasons] == [HIGH_VALUE_UNSURE]
    assert "lookalike" in j.reasons[0]["text"] and "249.99" in j.reasons[0]["text"]


@pytest.mark.parametrize("amount, sim", [(19_999, 0.955), (24_999, 0.975), (50_000, 0.97)])
def test_small_refunds_and_confident_matches_are_allowed(amount, sim):
    assert judge(amount, match(sim)).decision == "allow"


def test_other_findings_are_not_doubled():
    j = judge(24_999, {"verdict": "review", "similarity": 0.945, "rejected": None, "replay": None})
    assert HIGH_VALUE_UNSURE not in [r["code"] for r in j.reasons]


def test_limits_come_from_the_environment():
    cfg = DetectionConfig.from_env(
        {"FRAUDDEMO_DETECTION_HIGH_VALUE_CENTS": "0", "FRAUDDEMO_DETECTION_CONFIDENT_SIMILARITY": "0.99"}
    )
    assert (cfg.high_value_cents, cfg.confident_similarity) == (0, 0.99)
    assert judge(100, match(0.98), cfg).decision == "review"
    for bad in ({"FRAUDDEMO_DETECTION_HIGH_VALUE_CENTS": "lots"}, {"FRAUDDEMO_DETECTION_CONFIDENT_SIMILARITY": "2"}):
        with pytest.raises(ValueError):
            DetectionConfig.from_env(bad)


# -- a camera that fails at an honest till -------------------------------------------------------------
def _no_photo(decision, signed=True, cfg=DetectionConfig()):
    sig = KEYS.sign("a-pos-1", signed_payload("t1", "r1", "a", "a-pos-1", 4999, "")) if signed else ""
    a = Attempt("t1", "r1", "a", "a-pos-1", "c1", 4999, "", decision, [], sig, 10)
    story = ReceiptStory(Receipt("r1", "a", "a-pos-1", "c1", [], 4999, "q" * 64, 1), {"t1": a}, [])
    return judge_receipt(story, {}, {}, {}, KEYS, cfg)["t1"]


def test_a_signed_till_that_held_a_refund_without_photo_is_reviewed_not_blocked():
    j = _no_photo("held")
    assert j.decision == "review" and "camera failure" in j.reasons[0]["text"]
    assert _no_photo("held", cfg=DetectionConfig(camera_failure="block")).decision == "block"
    assert _no_photo("approved").decision == "block"  # a till that pays without a photo
    assert _no_photo("held", signed=False).decision == "block"  # an unsigned one
    with pytest.raises(ValueError):
        DetectionConfig.from_env({"FRAUDDEMO_DETECTION_CAMERA_FAILURE": "ignore"})
