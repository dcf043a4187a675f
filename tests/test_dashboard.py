"""The generated Grafana dashboard: current, valid against Grafana's own schema, and complete."""

from __future__ import annotations

import copy
import importlib.util
import json
import pathlib
import re
import shutil
import subprocess

import jsonschema
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "dashboards" / "schema" / "dashboard.schema.json").read_text())


def load_generator():
    spec = importlib.util.spec_from_file_location("frauddemo_dashboards", ROOT / "dashboards" / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gen = load_generator()
DASH = json.loads((ROOT / "dashboards" / "frauddemo-dashboard.json").read_text())
PANELS = [p for p in DASH["panels"] if p["type"] != "row"]
EXPRS = [t["expr"] for p in PANELS for t in p["targets"]]


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool not found: install Debian's prometheus package (.ci/run does)"
    return path


def test_checked_in_outputs_are_current():
    assert gen.stale() == [], "run: python dashboards/generate.py"
    # the chart and the operator ship exactly what dashboards/ holds
    assert (ROOT / "charts/frauddemo/files/frauddemo-dashboard.json").read_text() == json.dumps(
        DASH, indent=2, sort_keys=True, ensure_ascii=False
    ) + "\n"


def schema_errors(dash: dict) -> list[str]:
    v = jsonschema.Draft7Validator(SCHEMA)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(dash)]


def test_dashboard_validates_against_the_grafana_schema():
    assert "@grafana/schema" in SCHEMA["$comment"]
    assert schema_errors(DASH) == []
    assert DASH["schemaVersion"] >= 41


def test_the_schema_catches_mistakes():
    bad = copy.deepcopy(DASH)
    bad["panels"][1]["gridPos"]["w"] = "wide"
    bad["templating"]["list"][0]["lable"] = "typo"
    del bad["schemaVersion"]
    errors = schema_errors(bad)
    assert len(errors) == 3, errors
    assert errors[0].startswith("panels/1: ")  # no panel kind matches a panel this wide
    assert "'lable' was unexpected" in errors[1]
    assert "'schemaVersion' is a required property" in errors[2]


def test_variables_pick_the_datasource_namespace_instance_and_stores():
    variables = {v["name"]: v for v in DASH["templating"]["list"]}
    assert list(variables) == ["datasource", "namespace", "instance", "store"]
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert 'namespace="$namespace"' in variables["instance"]["query"]
    # The instance is the FraudDemo's name: its Services are <name>-detector and <name>-syncers.
    js_regex = variables["instance"]["regex"]
    rx = re.compile(js_regex.strip("/"))
    assert [rx.match(s).group(1) for s in ("demo-detector", "demo-syncers", "my-demo-detector")] == [
        "demo",
        "demo",
        "my-demo",
    ]
    assert variables["store"]["multi"] and variables["store"]["includeAll"]


def test_every_panel_has_a_description_a_unit_a_legend_and_scoped_queries():
    assert len(PANELS) >= 20
    for p in PANELS:
        assert p["description"], p["title"]
        assert p["fieldConfig"]["defaults"]["unit"], p["title"]
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        if p["type"] == "timeseries":
            legend = p["options"]["legend"]
            assert legend["showLegend"] and legend["displayMode"] in ("list", "table"), p["title"]
        for t in p["targets"]:
            assert t["legendFormat"] and t["datasource"]["uid"] == "${datasource}", p["title"]
            # every FraudDemo series is scoped to the chosen namespace and FraudDemo
            for sel in re.findall(r"frauddemo_\w+(\{[^}]*\})?", t["expr"]):
                assert sel.startswith('{namespace="$namespace",service=~"$instance-(detector|syncers)"'), (
                    p["title"],
                    t["expr"],
                )
    assert len({p["id"] for p in DASH["panels"]}) == len(DASH["panels"])


def test_stores_side_by_side_row_after_row():
    repeated = [p for p in PANELS if p.get("repeat")]
    assert [p["title"].split(" · ")[0] for p in repeated] == [
        "Purchases /s",
        "Returns /s by decision and photo",
        "Fraud alerts by reason",
        "Refund value per minute",
    ]
    for p in repeated:
        assert p["repeat"] == "store" and p["repeatDirection"] == "h" and p["gridPos"]["w"] == 24
        assert all('store="$store"' in t["expr"] for t in p["targets"])
    returns, alerts, value = repeated[1:]
    assert "sum by (decision, photo)" in returns["targets"][0]["expr"]
    assert "sum by (reason, decision)" in alerts["targets"][0]["expr"]
    assert [t["legendFormat"] for t in value["targets"]] == ["refunded", "held or blocked"]


def test_the_metric_contract_is_on_the_dashboard():
    text = " ".join(EXPRS)
    metrics = [
        "frauddemo_replication_lag_seconds_bucket",
        "frauddemo_syncer_applied_ops_total",
        "frauddemo_syncer_skipped_ops_total",
        "frauddemo_syncer_resyncs_total",
        "frauddemo_syncer_backlog_ops",
        "frauddemo_syncer_up",
        "frauddemo_transactions_total",
        "frauddemo_return_attempts_total",
        "frauddemo_fraud_alerts_total",
        "frauddemo_detection_decisions_total",
        "frauddemo_refund_value_dollars_total",
        "frauddemo_detection_latency_seconds_bucket",
        "frauddemo_photo_verification_seconds_bucket",
        "frauddemo_photo_verification_seconds_count",
        "frauddemo_detector_events_total",
        "frauddemo_detector_pending_events",
        "frauddemo_detector_up",
        "frauddemo_store_used_memory_bytes",
        "frauddemo_store_maxmemory_bytes",
        "frauddemo_store_writable",
    ]
    assert [m for m in metrics if m not in text] == []


def grafana_to_promql(expr: str, store: str = "a|b") -> str:
    """What Grafana sends for a panel's query (variables interpolated)."""
    for var, value in (
        ("$__rate_interval", "15s"),
        ("$__range", "5m"),
        ("$namespace", "shop"),
        ("$instance", "demo"),
        ("$store", store),
    ):
        expr = expr.replace(var, value)
    return expr


def test_every_query_is_valid_promql(tmp_path):
    rules = {
        "groups": [
            {
                "name": "panels",
                "rules": [{"record": f"panel_query_{i}", "expr": grafana_to_promql(e)} for i, e in enumerate(EXPRS)],
            }
        ]
    }
    (tmp_path / "panels.yaml").write_text(yaml.safe_dump(rules))
    out = subprocess.run(
        [promtool(), "check", "rules", str(tmp_path / "panels.yaml")], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(EXPRS)} rules found" in out.stdout


# --- the operator's copy ----------------------------------------------------------------------------


def test_the_operator_ships_the_generated_dashboard_pinned_to_each_frauddemo():
    from frauddemo_operator import dashboard

    assert dashboard.packaged() == (ROOT / "dashboards" / "frauddemo-dashboard.json").read_text()
    assert "$$" not in dashboard.packaged()  # string.Template would turn it into "$"
    one, two = (json.loads(dashboard.render(ns, name)) for ns, name in (("shop", "demo"), ("shop", "other")))
    assert schema_errors(one) == []
    assert one["uid"] != two["uid"] and one["title"] == "FraudDemo shop/demo"
    text = json.dumps(one)
    assert "$namespace" not in text and "$instance" not in text
    exprs = [t["expr"] for p in one["panels"] for t in p.get("targets", [])]
    assert len(exprs) == len(EXPRS)
    assert all('namespace="shop",service=~"demo-(detector|syncers)"' in e for e in exprs)
    variables = {v["name"]: v for v in one["templating"]["list"]}
    assert variables["namespace"]["type"] == variables["instance"]["type"] == "constant"
    assert variables["namespace"]["query"] == "shop" and variables["instance"]["query"] == "demo"
    assert variables["namespace"]["hide"] == 2
    # the rest of Grafana's variables are left for Grafana
    assert "${datasource}" in text and "$__rate_interval" in text and '"$store"' not in text


def test_a_dashboard_file_overrides_the_packaged_one():
    from frauddemo_operator import dashboard

    assert dashboard.render("shop", "demo", '{"t": "$instance/${namespace} $store"}') == '{"t": "demo/shop $store"}'


@pytest.mark.parametrize(
    "path", ["charts/frauddemo/files/frauddemo-dashboard.json", "operator/frauddemo_operator/frauddemo-dashboard.json"]
)
def test_copies_are_identical(path):
    assert (ROOT / path).read_text() == (ROOT / "dashboards" / "frauddemo-dashboard.json").read_text()
