"""The Prometheus alerting rules: valid, and each alert unit-tested with `promtool test rules`."""

from __future__ import annotations

import pathlib
import shutil
import subprocess

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
RULES = ROOT / "dashboards" / "frauddemo-rules.yaml"
TESTS = ROOT / "dashboards" / "frauddemo-rules.test.yaml"
ALERTS = {
    "FraudDemoFraudSpike",
    "FraudDemoReplicationLagHigh",
    "FraudDemoReplicationLinkDown",
    "FraudDemoDetectorDown",
    "FraudDemoStoreClockSkew",
}


def promtool(*args: str) -> subprocess.CompletedProcess:
    path = shutil.which("promtool")
    assert path, "promtool not found: install Debian's prometheus package (.ci/run does)"
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=120, cwd=RULES.parent)


def test_rules_are_valid():
    out = promtool("check", "rules", str(RULES))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 5 rules found" in out.stdout


def test_the_chart_ships_the_same_rules():
    assert (ROOT / "charts/frauddemo/files/frauddemo-rules.yaml").read_text() == RULES.read_text()


def test_every_alert_has_a_summary_a_description_and_a_severity():
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    assert {r["alert"] for r in rules} == ALERTS
    for r in rules:
        assert r["labels"]["severity"] in ("warning", "critical")
        assert r["annotations"]["summary"] and r["annotations"]["description"]
        assert r["for"]


def test_promtool_unit_tests_pass():
    out = promtool("test", "rules", str(TESTS))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_alert_is_tested_firing_and_quiet():
    tests = yaml.safe_load(TESTS.read_text())["tests"]
    cases = [c for t in tests for c in t["alert_rule_test"]]
    firing = {c["alertname"] for c in cases if c["exp_alerts"]}
    quiet = {c["alertname"] for c in cases if not c["exp_alerts"]}
    assert firing == ALERTS and quiet == ALERTS
