"""The Grafana dashboard the operator ships in each FraudDemo's dashboard ConfigMap.

Built in code from the metric contract in DESIGN.md, scoped to one FraudDemo (its namespace and
its Services). A dashboard generated elsewhere can replace it: point the operator's
FRAUDDEMO_OPERATOR_DASHBOARD_FILE at a JSON file; `${namespace}` and `${instance}` in it are
filled in per FraudDemo.
"""
from __future__ import annotations

import hashlib
import json
from string import Template

SCHEMA_VERSION = 39


def _uid(namespace: str, name: str) -> str:
    return "fd-" + hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:20]


def _panel(pid: int, title: str, exprs: list[tuple[str, str]], unit: str, x: int, y: int,
           kind: str = "timeseries", w: int = 12, h: int = 8) -> dict:
    return {
        "id": pid, "type": kind, "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}}
        if kind == "timeseries" else {"reduceOptions": {"calcs": ["lastNotNull"]}},
        "targets": [{"refId": chr(65 + i), "expr": expr, "legendFormat": legend,
                     "datasource": {"type": "prometheus", "uid": "${datasource}"}}
                    for i, (expr, legend) in enumerate(exprs)],
    }


def build(namespace: str, name: str) -> dict:
    """The dashboard as a dict (Grafana JSON model)."""
    sel = f'namespace="{namespace}",service=~"{name}-(detector|syncers)"'
    det = f'namespace="{namespace}",service="{name}-detector"'
    syn = f'namespace="{namespace}",service="{name}-syncers"'
    panels = [
        _panel(1, "Fraud alerts", [(f"sum(frauddemo_fraud_alerts_total{{{det}}})", "alerts")],
               "short", 0, 0, kind="stat", w=6, h=4),
        _panel(2, "Replication lag p99 (max over links)",
               [(f"max(histogram_quantile(0.99, sum by (le, source, target) "
                 f"(rate(frauddemo_replication_lag_seconds_bucket{{{sel}}}[1m]))))", "p99")],
               "s", 6, 0, kind="stat", w=6, h=4),
        _panel(3, "Syncer backlog", [(f"sum(frauddemo_syncer_backlog_ops{{{syn}}})", "ops")],
               "short", 12, 0, kind="stat", w=6, h=4),
        _panel(4, "Detection latency p99",
               [(f"histogram_quantile(0.99, sum by (le) "
                 f"(rate(frauddemo_detection_latency_seconds_bucket{{{det}}}[1m])))", "p99")],
               "s", 18, 0, kind="stat", w=6, h=4),
        _panel(5, "Replication lag by link",
               [(f"histogram_quantile(0.5, sum by (le, source, target) "
                 f"(rate(frauddemo_replication_lag_seconds_bucket{{{sel}}}[1m])))", "p50 {{source}}→{{target}}"),
                (f"histogram_quantile(0.99, sum by (le, source, target) "
                 f"(rate(frauddemo_replication_lag_seconds_bucket{{{sel}}}[1m])))", "p99 {{source}}→{{target}}")],
               "s", 0, 4),
        _panel(6, "Transactions per second by store",
               [(f"sum by (store, type) (rate(frauddemo_transactions_total{{{sel}}}[1m]))", "{{store}} {{type}}")],
               "ops", 12, 4),
        _panel(7, "Return attempts by store and photo",
               [(f"sum by (store, photo) (rate(frauddemo_return_attempts_total{{{sel}}}[1m]))",
                 "{{store}} photo={{photo}}")], "ops", 0, 12),
        _panel(8, "Fraud alerts by reason",
               [(f"sum by (store, reason) (increase(frauddemo_fraud_alerts_total{{{det}}}[5m]))",
                 "{{store}} {{reason}}")], "short", 12, 12),
        _panel(9, "Photo verification p50 / p99",
               [(f"histogram_quantile(0.5, sum by (le) "
                 f"(rate(frauddemo_photo_verification_seconds_bucket{{{det}}}[1m])))", "p50"),
                (f"histogram_quantile(0.99, sum by (le) "
                 f"(rate(frauddemo_photo_verification_seconds_bucket{{{det}}}[1m])))", "p99")], "s", 0, 20),
        _panel(10, "Syncer backlog by link",
               [(f"sum by (source, target) (frauddemo_syncer_backlog_ops{{{syn}}})", "{{source}}→{{target}}")],
               "short", 12, 20),
    ]
    return {
        "uid": _uid(namespace, name),
        "title": f"FraudDemo {namespace}/{name}",
        "tags": ["frauddemo"],
        "timezone": "browser",
        "editable": False,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus",
                                 "label": "Data source", "hide": 0}]},
        "annotations": {"list": []},
        "panels": panels,
    }


def render(namespace: str, name: str, template: str | None = None) -> str:
    """The dashboard JSON text for one FraudDemo: the built-in one, or `template` (a JSON text with
    ${namespace} and ${instance} placeholders) when given."""
    if template is not None:
        return Template(template).safe_substitute(namespace=namespace, instance=name)
    return json.dumps(build(namespace, name), sort_keys=True, separators=(",", ":"))
