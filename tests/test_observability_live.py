"""Proof against reality: Debian's Prometheus scrapes a local `frauddemo up` stack, Scenario 1 and
load run, and every panel of the generated dashboard returns data through Prometheus's HTTP API.

The scrape attaches the labels the operator's ServiceMonitor gives the series on Kubernetes
(namespace, and service = <instance>-detector), so the dashboard's queries run unchanged.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import re
import shutil
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from conftest import wait_until
from frauddemo.local import stack_ready
from frauddemo.servers import free_port
from frauddemo_testkit.processes import stop, up_argv

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = pathlib.Path(__file__).resolve().parent.parent
DASH = json.loads((ROOT / "dashboards" / "frauddemo-dashboard.json").read_text())
NAMESPACE, INSTANCE, STORES = "local", "frauddemo", ["a", "b"]
RATE_INTERVAL = "15s"  # Grafana's $__rate_interval: at least 4 scrapes of 1 s, and more for a 2-core box
ARTIFACTS = ROOT / "artifacts"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"frauddemo_dashboards_{name}", ROOT / "dashboards" / f"{name}.py")
    mod = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


render = load("render")


def binary(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} not found: install Debian's prometheus package (.ci/run does)"
    return path


def get(url: str, **params):
    r = httpx.get(url, params=params, timeout=10)
    r.raise_for_status()
    return r


def ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class Live:
    def __init__(self, tmp: pathlib.Path):
        self.tmp = tmp
        self.port, self.prom_port = free_port(), free_port()
        self.api = f"http://127.0.0.1:{self.port}"
        self.prom = f"http://127.0.0.1:{self.prom_port}"
        self.procs: list[subprocess.Popen] = []
        self.started = time.time()
        self.scenario: subprocess.CompletedProcess | None = None

    def start_stack(self) -> None:
        log = open(self.tmp / "up.log", "w")
        self.procs.append(
            subprocess.Popen(
                up_argv(self.port, self.tmp / "stack", "--duration", "900", "--rate", "5", "--hacked-rate", "0.5"),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        wait_until(lambda: stack_ready(self.api), 60, interval=0.5, what="the stack to be ready")

    def start_prometheus(self) -> None:
        shutil.copy(ROOT / "dashboards" / "frauddemo-rules.yaml", self.tmp / "rules.yaml")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(self.tmp / "rules.yaml")],
            "scrape_configs": [
                {
                    "job_name": "frauddemo",
                    "static_configs": [
                        {
                            "targets": [f"127.0.0.1:{self.port}"],
                            # what the ServiceMonitor's endpoint gives the detector's series on Kubernetes
                            "labels": {"namespace": NAMESPACE, "service": f"{INSTANCE}-detector"},
                        }
                    ],
                }
            ],
        }
        (self.tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        log = open(self.tmp / "prometheus.log", "w")
        self.procs.append(
            subprocess.Popen(
                [
                    binary("prometheus"),
                    f"--config.file={self.tmp / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.tmp / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.prom_port}",
                    "--storage.tsdb.retention.time=1h",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        wait_until(lambda: ok(f"{self.prom}/-/ready"), 60, interval=0.5, what="Prometheus to be ready")
        wait_until(
            lambda: self.query("up") and self.query("up")[0]["value"][1] == "1",
            30,
            interval=0.5,
            what="the first scrape",
        )

    def run_scenario(self) -> None:
        self.scenario = subprocess.run(
            [sys.executable, "-m", "frauddemo", "scenario", "fraud", "--api", self.api, "--json"],
            capture_output=True,
            text=True,
            timeout=120,
        )

    def query(self, promql: str) -> list:
        body = get(f"{self.prom}/api/v1/query", query=promql).json()
        assert body["status"] == "success", body
        return body["data"]["result"]

    def close(self) -> None:
        for p in reversed(self.procs):
            stop(p, 20)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    lv = Live(tmp_path_factory.mktemp("observability"))
    try:
        lv.start_stack()
        lv.start_prometheus()
        lv.run_scenario()
        yield lv
    finally:
        lv.close()
        for name in ("up.log", "prometheus.log"):
            if (lv.tmp / name).exists():
                print(f"--- {name} (tail) ---\n" + "\n".join((lv.tmp / name).read_text().splitlines()[-20:]))


def variables(store: str = "|".join(STORES)) -> dict:
    return {
        "namespace": NAMESPACE,
        "instance": INSTANCE,
        "store": store,
        "__rate_interval": RATE_INTERVAL,
        "__range": "5m",
        "datasource": "prometheus",
    }


def panel_queries() -> list[tuple[str, str]]:
    """(what, PromQL) for every query Grafana would run: repeated panels once per store."""
    out = []
    for p in DASH["panels"]:
        if p["type"] == "row":
            continue
        for store in STORES if p.get("repeat") == "store" else ["|".join(STORES)]:
            title = p["title"].replace("$store", store)
            for t in p["targets"]:
                out.append((f"{title} [{t['legendFormat']}]", render.interpolate(t["expr"], variables(store))))
    return out


def test_prometheus_scrapes_the_stack_with_the_operator_labels(live):
    (target,) = get(f"{live.prom}/api/v1/targets").json()["data"]["activeTargets"]
    assert target["health"] == "up", target
    assert target["labels"]["namespace"] == NAMESPACE and target["labels"]["service"] == f"{INSTANCE}-detector"


def test_the_dashboard_variables_resolve(live):
    var = {v["name"]: v for v in DASH["templating"]["list"]}

    def label_values(query: str) -> list[str]:  # Grafana's label_values(metric{...}, label)
        m = re.fullmatch(r"label_values\((.*), (\w+)\)", render.interpolate(query, variables()))
        selector, label = m.groups()
        return get(f"{live.prom}/api/v1/label/{label}/values", **{"match[]": selector}).json()["data"]

    assert label_values(var["namespace"]["query"]) == [NAMESPACE]
    regex = re.compile(var["instance"]["regex"].strip("/"))
    assert {regex.match(v).group(1) for v in label_values(var["instance"]["query"])} == {INSTANCE}
    assert label_values(var["store"]["query"]) == STORES


def test_the_alert_rules_load_and_evaluate(live):
    def rules():
        groups = get(f"{live.prom}/api/v1/rules").json()["data"]["groups"]
        return [r for g in groups for r in g["rules"]]

    wait_until(
        lambda: all(r.get("lastEvaluation", "").startswith("20") for r in rules()),
        20,
        interval=0.5,
        what="a rule evaluation",
    )
    rs = rules()
    assert sorted(r["name"] for r in rs) == [
        "FraudDemoDetectorDown",
        "FraudDemoFraudSpike",
        "FraudDemoReplicationLagHigh",
        "FraudDemoReplicationLinkDown",
        "FraudDemoStoreClockSkew",
    ]
    assert [(r["name"], r.get("lastError")) for r in rs if r["health"] != "ok"] == []
    # the stack is healthy: no link, lag or detector alert (a fraud spike may well be pending)
    raised = {a["labels"]["alertname"] for r in rs for a in r.get("alerts", [])}
    assert raised <= {"FraudDemoFraudSpike"}, raised


def test_scenario_1_and_load_fill_every_panel(live):
    queries = panel_queries()
    assert len(queries) > 30

    def empty() -> list[str]:
        return [what for what, promql in queries if not live.query(promql)]

    # rates need a few scrapes after the scenario: poll until every query answers, or report which don't
    missing = empty()
    deadline = time.monotonic() + 60
    while missing and time.monotonic() < deadline:
        time.sleep(2)
        missing = empty()
    ARTIFACTS.mkdir(exist_ok=True)
    out = ARTIFACTS / "frauddemo-dashboard.png"
    render.render(live.prom, out, variables(), STORES, live.started, time.time())
    assert out.stat().st_size > 50_000
    sc = live.scenario
    assert (sc.returncode, missing) == (0, []), (
        f"`frauddemo scenario fraud` exited {sc.returncode}: {sc.stdout[-2000:]}{sc.stderr[-2000:]}\n"
        f"panels without data ({len(missing)} of {len(queries)} queries):\n  " + "\n  ".join(missing)
    )


def test_every_link_and_store_has_its_series(live):
    """Each panel query answers for every link (queries by source, target) and every store (queries by
    store), not just for those that had an event: labelled counters exist from the start, at 0
    (a resync or skip counter with no series read "No data" on a healthy stack)."""
    links = {(s, t) for s in STORES for t in STORES if s != t}
    lacking = []
    for what, promql in panel_queries():
        top = re.match(r"\s*(sum|max|min|avg|count)\(", promql)  # an aggregate over every series: one answer
        by = None if top else re.search(r"by \(([^)]*)\)", promql)
        labels = {x.strip() for x in by.group(1).split(",")} if by else set()
        result = live.query(promql)
        if {"source", "target"} <= labels:
            got = {(r["metric"].get("source"), r["metric"].get("target")) for r in result}
            if got != links:
                lacking.append(f"{what}: links {sorted(got)}")
        elif "store" in labels and 'store="' not in promql:
            got = {r["metric"].get("store") for r in result}
            if got != set(STORES):
                lacking.append(f"{what}: stores {sorted(got)}")
    for family in ("frauddemo_syncer_resyncs_total", "frauddemo_syncer_skipped_ops_total"):
        got = {(r["metric"]["source"], r["metric"]["target"]) for r in live.query(family)}
        if got != links:
            lacking.append(f"{family}: links {sorted(got)}")
    assert lacking == [], "\n".join(lacking)


def test_metrics_pass_promtool_check_metrics(live):
    text = get(f"{live.api}/metrics").text
    for family in (
        "frauddemo_replication_lag_seconds",
        "frauddemo_syncer_up",
        "frauddemo_transactions_total",
        "frauddemo_fraud_alerts_total",
        "frauddemo_detection_latency_seconds",
    ):
        assert f"\n{family}" in text, f"{family} not exposed"
    out = subprocess.run(
        [binary("promtool"), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and out.stdout + out.stderr == "", out.stdout + out.stderr
