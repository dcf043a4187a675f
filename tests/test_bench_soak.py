"""`frauddemo bench soak`: its pure parts against known inputs, its bad options, and one short real run
(the stack of `frauddemo up` on real Valkey servers, real HTTP, real OpenCV) checked for shape and sanity."""

from __future__ import annotations

import math
import os

import pytest

from frauddemo import cli
from frauddemo.config import ConfigError
from frauddemo.lab.bench_soak import (
    SoakConfig,
    bucket_quantile,
    data_mb,
    growth,
    histograms,
    proc_stats,
    run,
    window_quantiles,
)

INF = math.inf


# -- bucket_quantile: PromQL's histogram_quantile on cumulative counts ---------------------------------
def test_bucket_quantile_interpolates_within_the_bucket():
    bounds, counts = [0.1, 0.2, 0.5, INF], [10, 20, 30, 40]
    assert bucket_quantile(0.25, bounds, counts) == pytest.approx(0.1)  # rank 10: top of the first bucket
    assert bucket_quantile(0.5, bounds, counts) == pytest.approx(0.2)
    assert bucket_quantile(0.375, bounds, counts) == pytest.approx(0.15)  # rank 15: half-way into (0.1, 0.2]
    assert bucket_quantile(0.125, bounds, counts) == pytest.approx(0.05)  # first bucket starts at 0
    assert bucket_quantile(0.625, bounds, counts) == pytest.approx(0.35)  # rank 25: half of (0.2, 0.5]


def test_bucket_quantile_in_the_inf_bucket_is_the_highest_finite_bound():
    assert bucket_quantile(0.99, [0.1, 0.2, INF], [0, 50, 100]) == pytest.approx(0.2)


def test_bucket_quantile_skips_empty_buckets():
    # everything in (0.2, 0.5]: the median is half-way into that bucket, not in the empty ones below
    assert bucket_quantile(0.5, [0.1, 0.2, 0.5, INF], [0, 0, 8, 8]) == pytest.approx(0.35)


def test_bucket_quantile_without_observations_is_none():
    assert bucket_quantile(0.5, [0.1, INF], [0, 0]) is None
    assert bucket_quantile(0.5, [], []) is None


# -- window_quantiles: the deltas of two scrapes -------------------------------------------------------
def test_window_quantiles_use_only_what_was_observed_between_the_scrapes():
    before = {0.01: 100.0, 0.1: 100.0, INF: 100.0}  # 100 fast observations before the window
    after = {0.01: 100.0, 0.1: 200.0, INF: 200.0}  # 100 more, all in (0.01, 0.1]
    w = window_quantiles(before, after)
    assert w["samples"] == 100
    assert w["p50"] == pytest.approx(55.0)  # ms: half-way into (10 ms, 100 ms]
    assert w["p99"] == pytest.approx(99.1)


def test_window_quantiles_of_an_idle_window_are_none():
    h = {0.01: 5.0, INF: 5.0}
    assert window_quantiles(h, dict(h)) == {"p50": None, "p95": None, "p99": None, "samples": 0}


def test_window_quantiles_from_an_empty_first_scrape():
    w = window_quantiles({}, {0.01: 4.0, INF: 4.0})
    assert w["samples"] == 4 and w["p50"] == pytest.approx(5.0)


def test_histograms_sum_every_label_set():
    text = """# HELP frauddemo_replication_lag_seconds lag
# TYPE frauddemo_replication_lag_seconds histogram
frauddemo_replication_lag_seconds_bucket{link="a->b",le="0.01"} 3.0
frauddemo_replication_lag_seconds_bucket{link="a->b",le="+Inf"} 4.0
frauddemo_replication_lag_seconds_count{link="a->b"} 4.0
frauddemo_replication_lag_seconds_sum{link="a->b"} 0.1
frauddemo_replication_lag_seconds_bucket{link="b->a",le="0.01"} 1.0
frauddemo_replication_lag_seconds_bucket{link="b->a",le="+Inf"} 2.0
frauddemo_replication_lag_seconds_count{link="b->a"} 2.0
frauddemo_replication_lag_seconds_sum{link="b->a"} 0.1
"""
    h = histograms(text, ("frauddemo_replication_lag_seconds", "frauddemo_detection_latency_seconds"))
    assert h["frauddemo_replication_lag_seconds"] == {0.01: 4.0, INF: 6.0}
    assert h["frauddemo_detection_latency_seconds"] == {}


# -- growth: medians of the first and last samples after the warm-up -----------------------------------
def test_growth_of_a_flat_series_is_zero():
    g = growth([(t, 100.0) for t in range(0, 100, 10)], after=20)
    assert g == {"after_warmup": 100.0, "end": 100.0, "growth_pct": 0.0}


def test_growth_ignores_the_warmup_and_measures_the_rise():
    samples = [(0, 10.0), (10, 50.0)] + [(t, 100.0 + (t - 20) / 10) for t in range(20, 200, 10)]
    g = growth(samples, after=20)  # 18 samples after the warm-up: the first 3 vs the last 3
    assert g["after_warmup"] == 101.0 and g["end"] == 116.0
    assert g["growth_pct"] == pytest.approx(15 / 101 * 100, abs=0.01)


def test_growth_is_not_moved_by_one_spike():
    samples = [(t, 100.0) for t in range(0, 120, 10)]
    samples[-2] = (samples[-2][0], 500.0)
    assert growth(samples, after=0)["growth_pct"] == 0.0


def test_growth_needs_two_samples_after_the_warmup():
    assert growth([(0, 1.0), (10, 2.0), (20, 3.0)], after=15)["growth_pct"] is None
    assert growth([], after=0)["growth_pct"] is None


def test_data_of_a_store_is_its_values_and_keyspace_tables():
    stats = {
        "dataset.bytes": 3 * 2**20,
        "overhead.db.hashtable.lut": 2**18,
        "total.allocated": 9 * 2**20,
        "db.0": {"overhead.hashtable.main": 2**19, "overhead.hashtable.expires": 2**18},
    }
    assert data_mb(stats) == 4.0
    assert data_mb({"dataset.bytes": 2**20}) == 1.0  # an empty server has no db.0 (and Redis 7 no lut)


def test_proc_stats_of_this_process_and_of_a_gone_one():
    st = proc_stats(os.getpid())
    assert st["rss_mb"] > 1 and st["threads"] >= 1 and st["fds"] >= 3
    assert proc_stats(2**22 + 12345) is None  # above pid_max's default: never a live process


# -- bad options: a clear error each -------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw, words",
    [
        ({"rate": 0}, "--rate must be > 0"),
        ({"rate": math.nan}, "--rate must be a finite number"),
        ({"duration": -5}, "--duration must be > 0"),
        ({"duration": True}, "--duration must be a finite number"),
        ({"warmup": -1}, "--warmup must be >= 0"),
        ({"duration": 30, "warmup": 30}, "must be shorter than --duration"),
        ({"interval": 0}, "--interval must be > 0"),
        ({"duration": 30, "warmup": 10, "interval": 15}, "at least two sampling intervals"),
        ({"retention": 50}, "--retention must be at least 100"),
        ({"identities": 10, "customers": 5}, "at least as many customers as faces"),
    ],
)
def test_bad_config_is_refused_with_a_reason(kw, words):
    with pytest.raises(ConfigError, match=words):
        SoakConfig(**kw).resolved()


def test_defaults_resolve_to_the_issue_figure():
    cfg = SoakConfig().resolved()
    assert (cfg.rate, cfg.duration, cfg.warmup, cfg.interval) == (200.0, 600.0, 60.0, 10.0)
    short = SoakConfig(duration=30).resolved()
    assert short.warmup == 6.0 and short.interval == 4.0  # >= 6 samples after a fifth of the run


def test_cli_refuses_bad_soak_options_and_soak_options_elsewhere(capsys):
    assert cli.main(["bench", "soak", "--rate", "-3", "--json"]) == 2
    assert "--rate must be > 0" in capsys.readouterr().err
    assert cli.main(["bench", "replication", "--duration", "5"]) == 2
    assert "option of `bench soak` only" in capsys.readouterr().err


# -- one short real run --------------------------------------------------------------------------------
def test_short_soak_reports_every_process_bounded_logs_and_no_errors():
    rate, duration, retention = 50.0, 30.0, 300
    r = run(rate=rate, duration=duration, retention=retention, identities=20, customers=400)

    windows = r["windows"]
    assert len(windows) == math.ceil(duration / r["interval_s"])
    assert all(w["tx"] > 0 and w["latency_ms"]["samples"] == w["tx"] for w in windows)
    assert sum(w["lag_ms"]["samples"] for w in windows) > 0
    assert sum(w["detection_ms"]["samples"] for w in windows) > 0
    assert all(w["lag_ms"]["p50"] is None or w["lag_ms"]["p50"] <= w["lag_ms"]["p99"] for w in windows)

    # every slot offered is a transaction, a failure or a missed slot; none failed
    tx = r["transactions"]
    errors = r["errors"]
    assert tx["total"] + errors["failed"] + errors["missed_slots"] == int(rate * duration)
    assert errors["failed"] == 0, errors["messages"]
    assert errors["missed_slots"] < 0.2 * rate * duration
    assert tx["purchases"] > 0 and tx["returns"] > 0 and tx["hacked"] > 0
    assert errors["restarts"] == {} and errors["api_errors"] == 0 and errors["unjudged_events"] == 0
    assert r["sse_events"] > 0

    # every process of the stack was sampled all along, and is gone now
    procs = r["processes"]
    expected = {"store-a", "store-b", "syncer-a-b", "syncer-b-a", "detector", "pos-a", "pos-b", "hacked-pos", "bench"}
    assert expected <= set(procs)
    assert any(n.startswith("detector.worker-") for n in procs)  # the photo pool
    for name in expected:
        assert len(procs[name]["samples"]) == len(windows) + 1, name
        assert procs[name]["rss_mb_end"] > 0 and procs[name]["growth_pct"] is not None, name
    for name, p in procs.items():
        if name != "bench":
            assert proc_stats(p["pid"]) is None, f"{name} (pid {p['pid']}) outlived the run"
    for store in ("store-a", "store-b"):
        assert procs[store]["data_mb"]["end"] > procs[store]["data_mb"]["after_warmup"] > 0  # it kept records
        assert procs[store]["non_data_mb"]["end"] > 0
        assert procs[store]["rss_per_used_memory"]["end"] > 0
    assert all(n.split(".")[0] in procs and n not in expected for n in r["transient_processes"])

    # more ops were written than the retention keeps: the op logs were trimmed, and stayed bounded
    assert tx["purchases"] / 2 > retention
    assert r["oplog_bounded"] is True
    for store, o in r["oplog_len"].items():
        assert o["retention"] == retention and retention // 2 <= o["end"] <= o["max"] <= o["bound"], (store, o)
    assert r["links"]["resyncs"] == 0
    assert isinstance(r["rss_flat"], bool) and r["max_growth_process"] in procs
