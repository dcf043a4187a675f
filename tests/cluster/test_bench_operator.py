"""`frauddemo bench operator --kubeconfig` against a real control plane (small sizes here; the figures
come from the benchmark itself): every FraudDemo reaches phase Ready on pods kwok makes Ready, the
baseline is measured in the same run, and the namespaces it made are handed back."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from frauddemo_testkit.kubecluster import ROOT
from frauddemo_testkit.testing import wait_for

TESTKIT = ROOT / "testkit"


def test_bench_operator_on_a_real_cluster(cluster):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "frauddemo",
            "--log-level",
            "WARNING",
            "bench",
            "operator",
            "--json",
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--serial",
            "3",
            "--burst",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(TESTKIT)},
    )  # the emulator, beside the cluster
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["benchmark"] == "operator" and result["api"].startswith("kube-apiserver v1.")
    ready = result["create_to_ready_ms"]
    assert ready["n"] == 3 and 0 < ready["p50"] <= ready["p95"] <= ready["p99"]
    base = result["baseline"]
    assert base["direct_api_ms"]["n"] == 3 and base["direct_to_ready_ms"]["n"] == 3
    assert base["direct_api_ms"]["p50"] < base["direct_to_ready_ms"]["p50"]
    assert result["burst_4_s"] > 0
    assert result["overhead_ratio_p50"] == round(ready["p50"] / base["direct_to_ready_ms"]["p50"], 2)
    # the emulator's figures from the same run (the test kit is importable here)
    assert result["emulator"]["create_to_ready_ms"]["n"] == 3

    # every namespace the bench made is being deleted, children with it
    def gone():
        left = [
            n
            for n in cluster.get("namespaces", "-l", "frauddemo.io/bench=operator")["items"]
            if not n["metadata"].get("deletionTimestamp")
        ]
        return not left

    wait_for(gone, 30, 0.5, what="the bench's namespaces deleted")


def test_bench_operator_says_what_is_wrong_with_a_bad_kubeconfig(tmp_path):
    bad = tmp_path / "kubeconfig"
    bad.write_text("not: [a kubeconfig")
    proc = subprocess.run(
        [sys.executable, "-m", "frauddemo", "bench", "operator", "--kubeconfig", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "kubeconfig" in proc.stderr.lower()
