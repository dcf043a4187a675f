"""`frauddemo chaos`'s clock_skew fault: a store's server restarted with its clock off (libfaketime),
on real servers, while the tills trade; the checker counts honest attempts blocked."""

import json

import pytest

from frauddemo.config import ConfigError
from frauddemo.lab.chaos import FAKETIME_ENV, KINDS, ChaosConfig, faketime_lib, passed, run
from frauddemo.procs import alive

SKEW_S = 30.0


def test_a_store_with_its_clock_off_blocks_no_honest_attempt(tmp_path):
    if faketime_lib() is None:
        pytest.skip("libfaketime is not installed (tools/system-deps.sh installs it)")
    data = tmp_path / "stack"
    cfg = ChaosConfig(
        duration=20,
        seed=3,
        kinds=("clock_skew",),
        skews_per_s=0.2,  # 4 planned, 2-4 s each, either store
        skew_s=SKEW_S,
        faces=3,
        data_dir=str(data),
    )
    r = run(cfg)
    assert set(r["faults"]) == {"clock_skew"} and r["faults"]["clock_skew"] >= 3, r["faults"]
    assert r["skipped_kinds"] == {}
    skews = r["clock_skews"]
    assert len(skews) == r["faults"]["clock_skew"] and {s["store"] for s in skews} <= {"a", "b"}
    for s in skews:  # the server really ran with its clock that far off, ahead or behind
        assert abs(s["skew_s"]) == SKEW_S
        assert s["server_offset_s"] is not None and abs(s["server_offset_s"] - s["skew_s"]) < 2, s
        assert s["window_s"] is not None and s["window_s"] > 0, s  # the hold (2-4 s) less the restart, under load
        assert s["healed_offset_s"] is not None and abs(s["healed_offset_s"]) < 2, s  # the true clock again
    # the syncers measured it too (their link status, published every 0.5 s once reconnected)
    assert any(s["link_skew_s"] is not None and abs(s["link_skew_s"] - s["skew_s"]) < 2 for s in skews), skews
    # the fault had traffic, two-store returns among it
    assert r["attempts_during_skew"] > 0 and r["attempts_at_skewed_store"] > 0, r
    assert r["double_returns_during_skew"] > 0, r
    assert r["honest_attempts"] > 0
    assert r["honest_blocked"] == 0, (r["honest_blocked_ids"], r["honest_blocked_by_kind"])
    assert r["honest_blocked_during_skew"] == 0
    assert r["lost"] == 0, r["lost_ids"]
    assert r["missed_frauds"] == 0, (r["missed_ids"], r["missed_verdicts"])
    assert r["identical"], r["differing_ids"]
    assert passed(r), json.dumps(r)
    assert passed({**r, "honest_blocked": 1}) is False
    json.dumps(r)  # the report is JSON
    stack = json.loads((data / "stack.json").read_text())
    assert not [p["name"] for p in stack["processes"] if p["pid"] and alive(p["pid"])]


def test_without_libfaketime_clock_skew_is_skipped_with_a_reason_or_refused_by_name(monkeypatch, tmp_path):
    monkeypatch.setenv(FAKETIME_ENV, str(tmp_path / "no-libfaketime.so.1"))
    assert faketime_lib() is None
    kinds, skipped = ChaosConfig().resolved().active_kinds()
    assert "clock_skew" not in kinds and set(kinds) == set(KINDS) - {"clock_skew"}
    assert "libfaketime" in skipped["clock_skew"] and FAKETIME_ENV in skipped["clock_skew"]
    with pytest.raises(ConfigError, match="clock_skew needs libfaketime"):
        ChaosConfig(kinds=("clock_skew",)).resolved()
    assert ChaosConfig(kinds=("kill_store",)).resolved().active_kinds() == (("kill_store",), {})


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"kinds": ("clock_drift",)}, "unknown fault kinds"),
        ({"kinds": ()}, "unknown fault kinds"),
        ({"skew_s": 0}, "skew-s must be a positive number"),
        ({"skew_s": float("inf")}, "skew-s must be a positive number"),
        ({"skew_hold_s": (3.0, 1.0)}, "positive range"),
        ({"skews_per_s": -1}, "skews-per-s must be a positive number"),
    ],
)
def test_bad_clock_skew_settings_are_refused(kw, message):
    with pytest.raises(ConfigError, match=message):
        ChaosConfig(**kw).resolved()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--kinds", "bogus"], "unknown fault kinds ['bogus']"),
        (["--skew-s", "-3"], "skew-s must be a positive number"),
        (["--skews-per-s", "0"], "skews-per-s must be a positive number"),
    ],
)
def test_cli_refuses_bad_clock_skew_options(args, message):
    """The command line's chaos options reach the same checks: a clear message, exit 2, no stack started."""
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "frauddemo", "chaos", "--duration", "5", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
