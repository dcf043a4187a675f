"""`frauddemo bench operator --json` runs end to end (tiny sizes here; the real figures come from the
benchmark itself, not from a timed test)."""

from __future__ import annotations

import json
import threading

from frauddemo_operator import bench


def test_bench_runs_and_reports_its_figures():
    threads_before = {t.ident for t in threading.enumerate()}
    result = bench.run(serial=3, burst=4, timeout=60)  # the emulator (test kit): no kubeconfig
    json.dumps(result)
    assert result["benchmark"] == "operator" and result["children_per_demo"] == 40
    for key in ("create_to_ready_ms", "create_to_phase_ready_ms"):
        assert result[key]["n"] == 3 and 0 < result[key]["p50"] <= result[key]["p99"]
    assert result["create_to_phase_ready_ms"]["p50"] >= result["create_to_ready_ms"]["p50"]
    assert result["burst_4_s"] > 0 and result["burst_4_phase_ready_s"] >= result["burst_4_s"]
    assert result["baseline"]["direct_api_ms"]["n"] == 3
    assert result["api_requests_served"] > 3 * 25
    # the emulators and the operator it started are gone
    lingering = [t.name for t in threading.enumerate() if t.ident not in threads_before and t.is_alive()]
    assert not [n for n in lingering if n in ("k8s-emulator", "frauddemo-operator")], lingering
