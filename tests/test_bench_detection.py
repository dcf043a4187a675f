"""`frauddemo bench detection` on a small configuration, on the real stack: every figure issue 17 asks
for is there, the per-mode counts add up to what the stores' label streams hold (an attempt without a
verdict is a miss, never dropped), and each rate is its own counts' k/n inside its Wilson interval.
The fixed-background till's camera keeps one backdrop, and the partition cuts the detector's view too:
the double return made in it is caught after the heal, timed from the stores' clocks."""

import cv2
import numpy as np
import pytest

from frauddemo.attack_modes import AttackMode
from frauddemo.lab import bench_detection as bd
from frauddemo.photos.camera import CaptureRanges, render
from frauddemo.retail import LEGIT


@pytest.fixture(scope="module")
def figures():
    rows = []
    real = bd.accuracy

    def keep(r):
        rows.extend(r)
        return real(r)

    bd.accuracy = keep
    try:
        out = bd.run(
            purchases=300,
            returns=40,
            fraud_share=0.2,
            customers=40,
            return_rate=40.0,
            rules_purchases=200,
            rules_returns=60,
            face_per_mode=3,
            hard_per_case=2,
            lookalike_pool=12,
            ceiling_rates=(4, 8),
            ceiling_step_s=2.0,
            ceiling_min_returns=10,
            verdict_timeout_s=120,
        )
    finally:
        bd.accuracy = real
    return out, rows


def test_figures_follow_from_the_labelled_attempts(figures):
    out, rows = figures
    assert out["attempts"] == len(rows) == out["fraud_attempts"] + out["legit_attempts"]
    fraud = [r for r in rows if r["label"] != LEGIT]
    for mode, m in out["per_mode"].items():
        rs = [r for r in fraud if r["label"] == mode]
        assert m["count"] == len(rs), mode
        if rs:
            k = sum(r["decision"] in ("review", "block") for r in rs)
            assert m["recall"] == round(k / len(rs), 4)
            lo, hi = m["recall_ci95"]
            assert lo <= m["recall"] <= hi
    for mode in bd.FACE_MODES:
        assert out["per_mode"][mode]["count"] == 3, mode
    look = out["per_mode"]["lookalike"]
    assert out["lookalike_accept_rate"] == round((look["allowed"] + look["no_verdict"]) / 3, 4)
    assert out["mirror_replay_recall"] == out["per_mode"]["mirrored-replay"]["recall"]
    assert out["cross_receipt_replay_recall"] == out["per_mode"]["cross-receipt-replay"]["recall"]
    legit = [r for r in rows if r["label"] == LEGIT]
    assert out["review_rate_legit"] == round(sum(r["decision"] == "review" for r in legit) / len(legit), 4)
    assert set(out["legit_cases"]) >= {
        "camera-failure",
        "no-photo-purchase",
        "other-store",
        "poor-light",
        "fixed-background",
    }
    fixed = [r for r in legit if r["case"] == "fixed-background"]
    assert out["legit_cases"]["fixed-background"]["count"] == len(fixed) == 2
    assert out["legit_cases"]["fixed-background"]["review"]["n"] == 2
    assert out["legit_cases"]["camera-failure"]["block"]["k"] == 0  # the policy: a person looks
    assert out["no_verdict"] == sum(r["decision"] == "none" for r in rows)


def test_throughput_is_a_ceiling_and_rules_count_judged_returns(figures):
    out, _ = figures
    steps = out["ceiling_steps"]
    assert steps and steps[0]["offered_tx_per_s"] == 4
    assert out["ceiling_min_returns_per_step"] == 10
    # a step lasts long enough to offer that many returns (2 s at 4 tx/s would offer 4)
    assert steps[0]["step_s"] >= 4.0 and steps[0]["returns"] >= 1
    held = [s for s in steps if s["held"]]
    assert out["throughput_tx_per_s"] == (held[-1]["achieved_tx_per_s"] if held else 0.0)
    assert out["rules_returns_judged"] <= 60
    for k in (
        "recall",
        "block_precision",
        "review_rate_legit",
        "rules_throughput_tx_per_s",
        "detection_latency_ms",
        "baseline_store_tx_per_s",
        "rules_vs_baseline",
        "photo_verifications_per_s",
    ):
        assert k in out, k


def test_a_partition_hides_the_other_store_from_the_detector_until_the_heal(figures):
    out, rows = figures
    part = [r for r in rows if r["label"] == AttackMode.PARTITION]
    heal = out["partition_heal_to_alert_s"]
    assert part and all(r["partitioned"] for r in part)
    assert heal["attempts"] == len(part) == out["per_mode"][AttackMode.PARTITION]["count"]
    # every partition return is caught after the heal, flagged before it, or missed: none dropped
    assert heal["n"] + heal["flagged_before_heal"] + heal["missed"] == heal["attempts"]
    assert heal["missed"] == sum(r["decision"] not in ("review", "block") for r in part)
    assert heal["n"] > 0 and 0 < heal["p50"] <= heal["p99"] <= heal["max"] < 60
    assert sum(out["partition_first_outcome"].values()) == len(part)
    assert out["detection_latency_outside_partition_ms"]["p50"] is not None


def _flat(identity: int, seed: int, ranges: CaptureRanges = CaptureRanges()) -> np.ndarray:
    """A capture with the camera's response held fixed, decoded."""
    jpeg = render(identity, seed, ranges, gain=1.0, temp=0.0, gamma=1.0, noise=0.0, blur=0.0, quality=95).jpeg
    return cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).astype(int)


def test_the_fixed_background_is_one_backdrop_for_everyone():
    assert render(5, 9, CaptureRanges(background_seed=None)).jpeg == render(5, 9).jpeg
    corners = (np.s_[:60, :60], np.s_[:60, -60:])
    fixed = [_flat(i, s, bd.FIXED_BACKGROUND) for i, s in ((3, 1), (40, 7))]
    varied = [_flat(i, s) for i, s in ((3, 1), (40, 7))]
    for c in corners:
        assert np.abs(fixed[0][c] - fixed[1][c]).mean() < 1.0  # the same wall behind two customers
        assert np.abs(varied[0][c] - varied[1][c]).mean() > 5.0
    assert render(3, 1, bd.FIXED_BACKGROUND).jpeg != render(3, 2, bd.FIXED_BACKGROUND).jpeg
