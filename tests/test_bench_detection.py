"""`frauddemo bench detection` on a small configuration, on the real stack: every figure issue 17 asks
for is there, the per-mode counts add up to what the stores' label streams hold (an attempt without a
verdict is a miss, never dropped), and each rate is its own counts' k/n inside its Wilson interval."""

import pytest

from frauddemo.lab import bench_detection as bd
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
    assert set(out["legit_cases"]) >= {"camera-failure", "no-photo-purchase", "other-store", "poor-light"}
    assert out["legit_cases"]["camera-failure"]["block"]["k"] == 0  # the policy: a person looks
    assert out["no_verdict"] == sum(r["decision"] == "none" for r in rows)


def test_throughput_is_a_ceiling_and_rules_count_judged_returns(figures):
    out, _ = figures
    steps = out["ceiling_steps"]
    assert steps and steps[0]["offered_tx_per_s"] == 4
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
