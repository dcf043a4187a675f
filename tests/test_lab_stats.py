"""The lab's shared helpers: one percentile with one behaviour on empty input, the latency summary the
benches report, Wilson rates, and the photo each hacked-till attack presents."""

from __future__ import annotations

import pytest

from frauddemo.attack_modes import AttackMode
from frauddemo.lab.attacks import PRESENTS, attack_photo
from frauddemo.lab.stats import mean, percentile, rate, rounded, summary, wilson


def test_percentile_is_nearest_rank_and_none_for_no_values():
    values = [5, 1, 4, 2, 3]
    assert percentile(values, 50) == 3 and percentile(values, 0) == 1 and percentile(values, 100) == 5
    assert percentile(range(1, 101), 95) == 95 and percentile(range(1, 101), 99) == 99
    assert percentile([], 50) is None and percentile(iter(()), 99) is None
    with pytest.raises(ValueError, match="0..100"):
        percentile([1, 2], 101)


def test_summary_keeps_the_benches_keys_and_scales():
    s = summary([1000, 2000, 3000, 4000], scale=1e-3)
    assert s == {"p50": 2.0, "p95": 4.0, "p99": 4.0, "max": 4.0, "samples": 4}
    assert summary([], scale=1e-3) == {"p50": None, "p95": None, "p99": None, "max": None, "samples": 0}


def test_mean_rounded_and_rates():
    assert mean([1, 2, 3, 4]) == 2.5 and mean([]) is None
    assert rounded(None, 2) is None and rounded(1.23456, 2) == 1.23
    assert wilson(0, 0) is None and rate(0, 0) == {"value": None, "ci95": None, "k": 0, "n": 0}
    low, high = wilson(50, 100)
    assert low < 0.5 < high and round(high - 0.5, 4) == round(0.5 - low, 4)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0
    with pytest.raises(ValueError):
        wilson(11, 10)


def test_every_attack_presents_a_defined_photo_and_only_computes_what_it_uses():
    assert set(PRESENTS) == set(AttackMode)
    calls = []

    def source(name):
        def make():
            calls.append(name)
            return name.encode()

        return make

    got = {
        m: attack_photo(m, purchase=source("purchase"), other=source("other"), capture=source("capture"))
        for m in AttackMode
    }
    assert got[AttackMode.NO_PHOTO] is None
    assert got[AttackMode.REPLAYED_PHOTO] == b"purchase" and got[AttackMode.MISMATCHED_PHOTO] == b"other"
    assert all(
        got[m] == b"capture"
        for m in (
            AttackMode.WINDOW_RACE,
            AttackMode.PARTITION,
            AttackMode.DOUBLE_RETURN_SAME_STORE,
            AttackMode.DOUBLE_RETURN_OTHER_STORE,
        )
    )
    assert len(calls) == len(AttackMode) - 1  # one source called per attack that shows a photo
    assert attack_photo("replayed-photo", purchase=b"jpeg") == b"jpeg"  # a mode's name works too
    with pytest.raises(ValueError, match="unknown-mode"):
        attack_photo("unknown-mode")
