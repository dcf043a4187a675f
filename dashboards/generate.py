"""FraudDemo's Grafana dashboard and Prometheus alerting rules, generated from code.

    python dashboards/generate.py          # (re)write every output file
    python dashboards/generate.py --check  # exit 1 when a checked-in output is stale

The dashboard is built with grafana-foundation-sdk (Grafana Labs' dashboards-as-code SDK). One
dashboard serves every FraudDemo: the `namespace` and `instance` variables pick one, and every query
selects its series by the Kubernetes labels the operator's ServiceMonitor gives them (`namespace`,
and `service` = `<instance>-detector` or `<instance>-syncers`). A local Prometheus scraping
`frauddemo up` attaches the same two labels (tests/test_observability_live.py does).

The operator ships one copy per FraudDemo with `$namespace` and `$instance` filled in
(frauddemo_operator.dashboard); the Helm chart ships the generic copy and the rules file.
"""

from __future__ import annotations

import json
import pathlib
import sys
import warnings

import yaml

# The SDK nudges towards Grafana's v2 dashboard resource; the v1 JSON model is what Grafana's
# ConfigMap sidecar and file provisioning load.
warnings.filterwarnings("ignore", "Prefer using dashboardv2", DeprecationWarning)
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

ROOT = pathlib.Path(__file__).resolve().parent.parent
DASHBOARD_FILE = "frauddemo-dashboard.json"
RULES_FILE = "frauddemo-rules.yaml"
OUTPUTS = {  # every copy the generator writes; tests/test_dashboard.py fails when one is stale
    ROOT / "dashboards" / DASHBOARD_FILE: "dashboard",
    ROOT / "dashboards" / RULES_FILE: "rules",
    ROOT / "charts" / "frauddemo" / "files" / DASHBOARD_FILE: "dashboard",
    ROOT / "charts" / "frauddemo" / "files" / RULES_FILE: "rules",
    ROOT / "operator" / "frauddemo_operator" / DASHBOARD_FILE: "dashboard",
}

UID = "frauddemo"
DS = cm.DataSourceRef(type_val="prometheus", uid="${datasource}")
# Every FraudDemo series: the instance's detector and syncers Services in its namespace.
SEL = 'namespace="$namespace",service=~"$instance-(detector|syncers)"'
STORE = SEL + ',store=~"$store"'
RATE = "$__rate_interval"

# Objectives the alerts hold the demo to (docs/observability.md).
LAG_OBJECTIVE_S = 0.5  # replication lag p99, per link, over 5 minutes
BACKLOG_ALERT_OPS = 1000  # a link whose backlog is above this and still growing is down
FRAUD_SPIKE_PER_MIN = 1.0  # alerts per minute at one store, and 3x its rate over the last hour
CLOCK_SKEW_ALERT_S = 1.0  # a store's server clock this far from another's is wrong


# --- panels ------------------------------------------------------------------------------------------


def query(expr: str, legend: str = "__auto", ref: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DS)


def legend() -> cb.VizLegendOptions:
    return (
        cb.VizLegendOptions()
        .show_legend(True)
        .display_mode(cm.LegendDisplayMode.TABLE)
        .placement(cm.LegendPlacement.BOTTOM)
        .calcs(["mean", "max", "lastNotNull"])
    )


def graph(
    title: str,
    description: str,
    unit: str,
    targets: list[tuple[str, str]],
    *,
    w: int = 12,
    h: int = 8,
    per_store: bool = False,
    stack: bool = False,
    bars: bool = False,
    decimals: int | None = None,
) -> timeseries.Panel:
    """A time series panel. `per_store` repeats it once per store, side by side."""
    p = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DS)
        .span(w)
        .height(h)
        .legend(legend())
        .tooltip(cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING))
        .fill_opacity(35 if stack else 10)
        .line_width(1)
        .min(0)
    )
    if decimals is not None:
        p = p.decimals(decimals)
    if stack:
        p = p.stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL))
    if bars:
        p = p.draw_style(cm.GraphDrawStyle.BARS).fill_opacity(80)
    if per_store:
        p = p.title(f"{title} · store $store").repeat("store").repeat_direction("h").max_per_row(4).span(24)
    for i, (expr, leg) in enumerate(targets):
        p = p.with_target(query(expr, leg, chr(65 + i)))
    return p


def single(
    title: str,
    description: str,
    unit: str,
    expr: str,
    *,
    decimals: int | None = None,
    steps: list[tuple[float | None, str]] | None = None,
) -> stat.Panel:
    """A top stat: one number, its sparkline, coloured by thresholds."""
    steps = steps or [(None, "green")]
    p = (
        stat.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DS)
        .span(3)
        .height(4)
        .graph_mode(cm.BigValueGraphMode.AREA)
        .color_mode(cm.BigValueColorMode.VALUE)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .thresholds(
            db.ThresholdsConfig()
            .mode(dm.ThresholdsMode.ABSOLUTE)
            .steps([dm.Threshold(value=v, color=c) for v, c in steps])
        )
        .with_target(query(expr, title))
    )
    if decimals is not None:
        p = p.decimals(decimals)
    return p


def q(quantile: float, metric: str, sel: str, by: str = "") -> str:
    """A quantile of a histogram, per `by` labels."""
    by = f"le, {by}" if by else "le"
    return f"histogram_quantile({quantile}, sum by ({by}) (rate({metric}_bucket{{{sel}}}[{RATE}])))"


def variables() -> list:
    datasource = (
        db.DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        .description("The Prometheus that scrapes the FraudDemo services.")
    )
    namespace = (
        db.QueryVariable("namespace")
        .label("Namespace")
        .datasource(DS)
        .query("label_values(frauddemo_syncer_up, namespace)")
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .description("The Kubernetes namespace of the FraudDemo.")
    )
    instance = (
        db.QueryVariable("instance")
        .label("FraudDemo")
        .datasource(DS)
        .query('label_values(frauddemo_syncer_up{namespace="$namespace"}, service)')
        .regex("/^(.+)-(?:detector|syncers)$/")
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .description("The FraudDemo resource (its Services are <name>-detector and <name>-syncers).")
    )
    store = (
        db.QueryVariable("store")
        .label("Stores")
        .datasource(DS)
        .query(f"label_values(frauddemo_syncer_up{{{SEL}}}, source)")
        .multi(True)
        .include_all(True)
        .current(dm.VariableOption(text="All", value="$__all"))
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .description("The stores to show side by side (every store replicates, so each is a link source).")
    )
    return [datasource, namespace, instance, store]


def dashboard() -> dict:
    d = (
        db.Dashboard("FraudDemo")
        .uid(UID)
        .tags(["frauddemo"])
        .timezone(cm.TimeZoneBrowser)
        .description(
            "Cross-store return fraud on active-active Redis: the stores side by side, the "
            "replication links between them and the detector. Generated by "
            "dashboards/generate.py; do not edit by hand."
        )
        .refresh("10s")
        .time("now-30m", "now")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .variables(variables())
    )

    d = (
        d.with_row(db.Row("Overview"))
        .with_panel(
            single(
                "Purchases /s",
                "Purchases committed per second, every store.",
                "ops",
                f'sum(rate(frauddemo_transactions_total{{{STORE},type="purchase"}}[{RATE}]))',
                decimals=1,
            )
        )
        .with_panel(
            single(
                "Returns /s",
                "Return attempts committed per second, every store.",
                "ops",
                f"sum(rate(frauddemo_return_attempts_total{{{STORE}}}[{RATE}]))",
                decimals=2,
            )
        )
        .with_panel(
            single(
                "Fraud alerts",
                "Alerts the detector raised in the dashboard's time range.",
                "short",
                f"sum(increase(frauddemo_fraud_alerts_total{{{STORE}}}[$__range]))",
                decimals=0,
                steps=[(None, "green"), (1, "red")],
            )
        )
        .with_panel(
            single(
                "Value held or blocked",
                "Dollars of return attempts held for review or blocked by the detector in the time range.",
                "currencyUSD",
                f'sum(increase(frauddemo_refund_value_dollars_total{{{STORE},outcome=~"held|blocked"}}[$__range]))',
                decimals=0,
                steps=[(None, "green"), (1, "orange")],
            )
        )
        .with_panel(
            single(
                "Worst lag p99",
                f"The slowest replication link's 99th percentile lag (objective: {LAG_OBJECTIVE_S} s).",
                "s",
                f"max({q(0.99, 'frauddemo_replication_lag_seconds', SEL, 'source, target')})",
                steps=[(None, "green"), (LAG_OBJECTIVE_S, "red")],
            )
        )
        .with_panel(
            single(
                "Detection p99",
                "99th percentile time from a return committed at a store to the detector's decision.",
                "s",
                q(0.99, "frauddemo_detection_latency_seconds", STORE),
                steps=[(None, "green"), (1, "orange")],
            )
        )
        .with_panel(
            single(
                "Links up",
                "Replication links connected to both stores and replicating (of all links).",
                "short",
                f"sum(frauddemo_syncer_up{{{SEL}}})",
                decimals=0,
            )
        )
        .with_panel(
            single(
                "Detector up",
                "Stores the detector is connected to and consuming events from.",
                "short",
                f"sum(frauddemo_detector_up{{{STORE}}})",
                decimals=0,
                steps=[(None, "red"), (1, "green")],
            )
        )
    )

    d = (
        d.with_row(db.Row("Stores, side by side"))
        .with_panel(
            graph(
                "Purchases /s",
                "Purchases committed per second at this store.",
                "ops",
                [
                    (
                        f'sum by (store) (rate(frauddemo_transactions_total{{{STORE},store="$store",type="purchase"}}[{RATE}]))',
                        "purchases",
                    )
                ],
                per_store=True,
            )
        )
        .with_panel(
            graph(
                "Returns /s by decision and photo",
                "Return attempts committed at this store per "
                "second, by the store's local decision (approved, held, refused) and whether the "
                "customer's photo was taken.",
                "ops",
                [
                    (
                        f'sum by (decision, photo) (rate(frauddemo_return_attempts_total{{{STORE},store="$store"}}[{RATE}]))',
                        "{{decision}}, photo {{photo}}",
                    )
                ],
                per_store=True,
                stack=True,
            )
        )
        .with_panel(
            graph(
                "Fraud alerts by reason",
                "Alerts per minute on return attempts made at this "
                "store, by the alert's main rule and the detector's decision.",
                "opm",
                [
                    (
                        f'60 * sum by (reason, decision) (rate(frauddemo_fraud_alerts_total{{{STORE},store="$store"}}[{RATE}]))',
                        "{{reason}} ({{decision}})",
                    )
                ],
                per_store=True,
                stack=True,
            )
        )
        .with_panel(
            graph(
                "Refund value per minute",
                "Dollars per minute of return attempts at this "
                "store that were refunded, and that were held for review or blocked by the "
                "detector.",
                "currencyUSD",
                [
                    (
                        f'60 * sum(rate(frauddemo_refund_value_dollars_total{{{STORE},store="$store",outcome="refunded"}}[{RATE}]))',
                        "refunded",
                    ),
                    (
                        f'60 * sum(rate(frauddemo_refund_value_dollars_total{{{STORE},store="$store",outcome=~"held|blocked"}}[{RATE}]))',
                        "held or blocked",
                    ),
                ],
                per_store=True,
                decimals=0,
            )
        )
    )

    lag = "frauddemo_replication_lag_seconds"
    d = (
        d.with_row(db.Row("Replication links"))
        .with_panel(
            graph(
                "Replication lag p50 / p99",
                "Commit at the source store to applied at the target, each way.",
                "s",
                [
                    (q(0.5, lag, SEL, "source, target"), "p50 {{source}} → {{target}}"),
                    (q(0.99, lag, SEL, "source, target"), "p99 {{source}} → {{target}}"),
                ],
            )
        )
        .with_panel(
            graph(
                "Backlog",
                "Op-log entries written at the source and not yet applied at the target. Growing while a link is down.",
                "short",
                [(f"sum by (source, target) (frauddemo_syncer_backlog_ops{{{SEL}}})", "{{source}} → {{target}}")],
                decimals=0,
            )
        )
        .with_panel(
            graph(
                "Applied ops /s",
                "Op-log entries merged into the target per second.",
                "ops",
                [
                    (
                        f"sum by (source, target) (rate(frauddemo_syncer_applied_ops_total{{{SEL}}}[{RATE}]))",
                        "{{source}} → {{target}}",
                    )
                ],
            )
        )
        .with_panel(
            graph(
                "Resyncs and skipped entries",
                "Full-state resyncs (the target fell behind the "
                "source's retained log) and malformed entries skipped, in each interval (every "
                "link's series exists from its start, at 0).",
                "short",
                [
                    (
                        f"sum by (source, target) (increase(frauddemo_syncer_resyncs_total{{{SEL}}}[{RATE}]))",
                        "resyncs {{source}} → {{target}}",
                    ),
                    (
                        f"sum by (source, target) (increase(frauddemo_syncer_skipped_ops_total{{{SEL}}}[{RATE}]))",
                        "skipped {{source}} → {{target}}",
                    ),
                ],
                bars=True,
                decimals=0,
            )
        )
        .with_panel(
            graph(
                "Clock skew between stores",
                "How far apart the stores' server clocks are, as each "
                "link's syncer measures them (round-trip corrected). The detector never orders returns "
                f"by these clocks; above {CLOCK_SKEW_ALERT_S:g} s a server's time is wrong (an alert "
                "fires).",
                "s",
                [
                    (
                        f"max by (source, target) (abs(frauddemo_store_clock_skew_seconds{{{SEL}}}))",
                        "{{source}} vs {{target}}",
                    )
                ],
            )
        )
    )

    d = (
        d.with_row(db.Row("Stores' memory and writes"))
        .with_panel(
            graph(
                "Store memory",
                "Memory each store's server has allocated, and its maxmemory: at "
                "maxmemory a store refuses writes (policy noeviction) rather than evict replicated "
                "data.",
                "bytes",
                [
                    (f"max by (store) (frauddemo_store_used_memory_bytes{{{STORE}}})", "{{store}} used"),
                    (f"max by (store) (frauddemo_store_maxmemory_bytes{{{STORE}}})", "{{store}} maxmemory"),
                ],
            )
        )
        .with_panel(
            graph(
                "Stores accepting writes",
                "1 while a store accepts writes; 0 while it refuses them "
                "because it cannot persist (disk full) or reached its maxmemory.",
                "short",
                [(f"min by (store) (frauddemo_store_writable{{{STORE}}})", "{{store}}")],
                decimals=0,
            )
        )
    )

    det, photo = "frauddemo_detection_latency_seconds", "frauddemo_photo_verification_seconds"
    d = (
        d.with_row(db.Row("Detection"))
        .with_panel(
            graph(
                "Detection latency p50 / p99",
                "A return committed at a store to the detector's decision stored, by the store of the return.",
                "s",
                [(q(0.5, det, STORE, "store"), "p50 {{store}}"), (q(0.99, det, STORE, "store"), "p99 {{store}}")],
            )
        )
        .with_panel(
            graph(
                "Decisions /s",
                "Return attempts decided by the detector per second.",
                "ops",
                [
                    (
                        f"sum by (store, decision) (rate(frauddemo_detection_decisions_total{{{STORE}}}[{RATE}]))",
                        "{{store}} {{decision}}",
                    )
                ],
                stack=True,
            )
        )
        .with_panel(
            graph(
                "Photo verification time p50 / p99",
                "Time to verify one return photo against the purchase photo.",
                "s",
                [(q(0.5, photo, SEL), "p50"), (q(0.99, photo, SEL), "p99")],
            )
        )
        .with_panel(
            graph(
                "Photo verification outcomes /s",
                "Photos verified per second by outcome: match, mismatch, review (uncertain) or rejected (unusable).",
                "ops",
                [(f"sum by (outcome) (rate({photo}_count{{{SEL}}}[{RATE}]))", "{{outcome}}")],
                stack=True,
            )
        )
        .with_panel(
            graph(
                "Events consumed /s",
                "Store events the detector consumed per second.",
                "ops",
                [
                    (
                        f"sum by (store, type) (rate(frauddemo_detector_events_total{{{STORE}}}[{RATE}]))",
                        "{{store}} {{type}}",
                    )
                ],
            )
        )
        .with_panel(
            graph(
                "Pending events",
                "Events delivered to the detector and not yet acknowledged, per store.",
                "short",
                [(f"sum by (store) (frauddemo_detector_pending_events{{{STORE}}})", "{{store}}")],
                decimals=0,
            )
        )
    )

    out = json.loads(json.dumps(d.build(), cls=JSONEncoder))
    for i, panel in enumerate(out["panels"], 1):  # stable ids, in layout order
        panel["id"] = i
    for var in out["templating"]["list"]:
        # The SDK gives every variable an interval variable's `auto*` defaults; the dashboard
        # schema (dashboards/schema/) rejects them on other kinds.
        if var["type"] != "interval":
            for key in ("auto", "auto_count", "auto_min"):
                var.pop(key, None)
    return out


# --- alerting rules ----------------------------------------------------------------------------------


def rules() -> dict:
    """Plain Prometheus rules (`groups:`); the chart wraps the same file in a PrometheusRule."""
    inst = "namespace, service"
    link = f"{inst}, source, target"
    return {
        "groups": [
            {
                "name": "frauddemo",
                "rules": [
                    {
                        "alert": "FraudDemoFraudSpike",
                        "expr": (
                            f"sum by ({inst}, store) (rate(frauddemo_fraud_alerts_total[5m])) * 60 > {FRAUD_SPIKE_PER_MIN:g}\n"
                            f"and sum by ({inst}, store) (rate(frauddemo_fraud_alerts_total[5m]))\n"
                            f"  > 3 * sum by ({inst}, store) (rate(frauddemo_fraud_alerts_total[1h]))"
                        ),
                        "for": "2m",
                        "labels": {"severity": "warning"},
                        "annotations": {
                            "summary": "Fraud alert spike at store {{ $labels.store }}",
                            "description": "{{ $labels.namespace }}/{{ $labels.service }}: {{ $value | humanize }} fraud "
                            "alerts per minute at store {{ $labels.store }} over 5 minutes, more than "
                            f"{FRAUD_SPIKE_PER_MIN:g} per minute and three times the last hour's rate.",
                        },
                    },
                    {
                        "alert": "FraudDemoReplicationLagHigh",
                        "expr": (
                            f"histogram_quantile(0.99, sum by ({link}, le) "
                            f"(rate(frauddemo_replication_lag_seconds_bucket[5m]))) > {LAG_OBJECTIVE_S:g}"
                        ),
                        "for": "5m",
                        "labels": {"severity": "warning"},
                        "annotations": {
                            "summary": "Replication {{ $labels.source }} → {{ $labels.target }} is slower than its objective",
                            "description": "{{ $labels.namespace }}/{{ $labels.service }}: the p99 replication lag from "
                            "{{ $labels.source }} to {{ $labels.target }} is {{ $value | humanizeDuration }}, "
                            f"over the {LAG_OBJECTIVE_S:g} s objective.",
                        },
                    },
                    {
                        "alert": "FraudDemoReplicationLinkDown",
                        "expr": (
                            f"max by ({link}) (frauddemo_syncer_up) == 0\n"
                            f"or (max by ({link}) (frauddemo_syncer_backlog_ops) > {BACKLOG_ALERT_OPS}\n"
                            f"    and max by ({link}) (deriv(frauddemo_syncer_backlog_ops[5m])) > 0)"
                        ),
                        "for": "5m",
                        "labels": {"severity": "critical"},
                        "annotations": {
                            "summary": "Replication link {{ $labels.source }} → {{ $labels.target }} is down",
                            "description": "{{ $labels.namespace }}/{{ $labels.service }}: the syncer from "
                            "{{ $labels.source }} to {{ $labels.target }} is disconnected, or its backlog "
                            f"is above {BACKLOG_ALERT_OPS} entries and still growing; the stores are diverging.",
                        },
                    },
                    {
                        "alert": "FraudDemoStoreClockSkew",
                        "expr": f"max by ({link}) (abs(frauddemo_store_clock_skew_seconds)) > {CLOCK_SKEW_ALERT_S:g}",
                        "for": "5m",
                        "labels": {"severity": "warning"},
                        "annotations": {
                            "summary": "Store {{ $labels.source }}'s clock is off from store {{ $labels.target }}'s",
                            "description": "{{ $labels.namespace }}/{{ $labels.service }}: the server clocks of stores "
                            "{{ $labels.source }} and {{ $labels.target }} are {{ $value | humanizeDuration }} "
                            f"apart (over {CLOCK_SKEW_ALERT_S:g} s): fix the hosts' time sync. Returns are "
                            "still judged correctly (never by these clocks), but commit times shown are off.",
                        },
                    },
                    {
                        "alert": "FraudDemoDetectorDown",
                        "expr": (
                            f'up{{service=~".+-detector"}} == 0\nor max by ({inst}, store) (frauddemo_detector_up) == 0'
                        ),
                        "for": "2m",
                        "labels": {"severity": "critical"},
                        "annotations": {
                            "summary": "The FraudDemo detector is down",
                            "description": "{{ $labels.namespace }}/{{ $labels.service }}: the detector "
                            "{{ if $labels.store }}is not consuming the events of store {{ $labels.store }}"
                            "{{ else }}cannot be scraped{{ end }}; returns are not checked for fraud.",
                        },
                    },
                ],
            }
        ]
    }


# --- files -------------------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the alert expressions) as literal blocks, as people write them."""


_Dumper.add_representer(
    str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None)
)


def render() -> dict[str, str]:
    dash = json.dumps(dashboard(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    header = "# Generated by dashboards/generate.py; do not edit by hand.\n"
    rule_text = header + yaml.dump(rules(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)
    return {"dashboard": dash, "rules": rule_text}


def stale() -> list[pathlib.Path]:
    texts = render()
    return [p for p, kind in OUTPUTS.items() if not p.exists() or p.read_text() != texts[kind]]


def main(argv: list[str]) -> int:
    if "--check" in argv:
        old = stale()
        for p in old:
            print(f"stale: {p.relative_to(ROOT)} (run: python dashboards/generate.py)", file=sys.stderr)
        return 1 if old else 0
    texts = render()
    for p, kind in OUTPUTS.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(texts[kind])
        print(f"wrote {p.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
