"""`frauddemo bench photo` on a small configuration: every figure issue 17 asks for is there, and each
rate is what its own counts say (k of n, inside its Wilson interval); thresholds come from identities
disjoint from the evaluated ones."""

import pytest

from frauddemo.lab import photo_bench as bench
from frauddemo.lab.stats import rate, wilson

KEPT = (
    "identities",
    "captures_per_identity",
    "face_detection_rate",
    "failure_to_acquire",
    "failures",
    "genuine_pairs",
    "impostor_pairs",
    "eer",
    "eer_threshold",
    "far_at_frr_5pct",
    "threshold_at_frr_5pct",
    "similarity",
    "verdicts",
    "replay_flag_rate",
    "replay_flag_by_kind",
    "replay_false_rate",
    "replay_genuine_max_score",
    "replay_near_copy_score",
    "verify_ms",
    "verify_cpu_ms",
    "camera_ms_per_frame",
    "camera_ms_first_frame_of_a_customer",
    "bad_inputs_rejected",
    "bad_inputs_total",
    "bad_input_pre_decode_ms_max",
    "bad_inputs",
    "baseline",
    "duration_s",
)


@pytest.fixture(scope="module")
def figures():
    return bench.run(
        identities=10,
        captures=3,
        impostors_per_probe=4,
        calibration_identities=8,
        lookalike_victims=6,
        lookalike_pool=12,
    )


def _consistent(r: dict) -> None:
    assert r["value"] == round(r["k"] / r["n"], 4)
    lo, hi = r["ci95"]
    assert lo <= r["value"] <= hi


def test_existing_keys_are_kept_and_new_ones_added(figures):
    for k in KEPT:
        assert k in figures, k
    for k in (
        "lookalike_accept_rate",
        "mirror_replay_recall",
        "cross_receipt_replay_recall",
        "photo_cost_ms",
        "mirror_replay_recall_ci95",
        "replay_false_rate_ci95",
        "at_calibrated_threshold",
        "calibration",
    ):
        assert k in figures, k
    assert figures["photo_cost_ms"]["p99"] > 0


def test_calibration_and_evaluation_are_disjoint(figures):
    cal, ev = figures["calibration"]["identities"], figures["evaluation"]["identities"]
    assert cal[1] < ev[0] or ev[1] < cal[0]
    assert figures["at_calibrated_threshold"]["threshold"] == figures["calibration"]["threshold_at_frr_5pct"]
    assert figures["evaluation"]["genuine_pairs"] == figures["genuine_pairs"]


def test_every_rate_follows_from_its_counts(figures):
    at = figures["at_calibrated_threshold"]
    _consistent(at["frr"])
    _consistent(at["far"])
    assert at["frr"]["n"] == figures["genuine_pairs"] and at["far"]["n"] == figures["impostor_pairs"]
    look = figures["lookalike"]
    _consistent(look["accepted_by_verifier"])
    assert figures["lookalike_accept_rate"] == look["accepted_by_verifier"]["value"]
    assert look["victims"] == 6 and look["pool"] <= 12
    base = look["baseline_plain_hog"]  # the same attack on the verifier without its face model, same run
    _consistent(base["accepted"])
    assert base["accepted"]["n"] == look["victims"] and base["match_threshold"] == 0.951
    for kind, r in figures["replay_recall_by_attack"].items():
        _consistent(r)
        assert (
            r["n"] == figures["evaluation"]["identities"][1] - figures["evaluation"]["identities"][0] + 1
            or r["n"] <= figures["identities"]
        ), kind
    assert figures["mirror_replay_recall"] == figures["replay_recall_by_attack"]["mirror"]["value"]
    _consistent(figures["cross_receipt_replay"]["store_wide_index"])
    cost = figures["photo_cost_ms"]
    assert cost["ratio_p99_to_normal_p50"] == round(cost["p99"] / cost["normal_p50"], 2)


def test_wilson_interval():
    assert wilson(0, 0) is None
    assert wilson(0, 100)[0] == 0.0 and 0.03 < wilson(0, 100)[1] < 0.04
    lo, hi = wilson(50, 100)
    assert 0.40 < lo < 0.41 and 0.59 < hi < 0.60
    assert rate(3, 4)["value"] == 0.75
