"""The Helm chart, rendered by the real helm with every switch on and off, and every object it renders
validated: built-in kinds by kubernetes-validate (Kubernetes 1.30 and the newest it ships), FraudDemo
by the CRD's schema and the operator's checks, ServiceMonitor/PrometheusRule by the
prometheus-operator's schemas."""

from __future__ import annotations

import json
import re
import tomllib
from urllib.parse import urlparse

import pytest
import yaml
from chart_support import (
    CHART,
    NAMESPACE,
    RELEASE,
    ROOT,
    STANDARD_LABELS,
    frauddemo_errors,
    helm,
    one,
    render,
    render_error,
    render_notes,
    restricted_violations,
    validation_errors,
)

from frauddemo_operator import builders, crd, models
from frauddemo_operator.settings import Settings

# Every switch, with its default and the other setting. serviceAccount.create off needs a name.
SWITCHES = {
    "operator.clusterWide": (False, True),
    "rbac.create": (True, False),
    "serviceAccount.create": (True, False),
    "grafanaDashboard.enabled": (False, True),
    "monitoring.serviceMonitor.enabled": (False, True),
    "monitoring.prometheusRule.enabled": (False, True),
    "sample.enabled": (False, True),
    "sample.nodePort": (30080, 0),
    "uninstallHook.enabled": (True, False),
}
EXISTING_SA = {"serviceAccount.name": "existing-operator"}


def case(**overrides) -> dict:
    values = dict(overrides)
    if values.get("serviceAccount.create") is False:
        values.update(EXISTING_SA)
    return values


CASES = {
    "defaults": case(),
    "all on": case(**{k: True if isinstance(v[0], bool) else v[0] for k, v in SWITCHES.items()}),
    "all off": case(**{k: False if isinstance(v[0], bool) else 0 for k, v in SWITCHES.items()}),
    **{f"{k}={v[1]}": case(**{k: v[1]}) for k, v in SWITCHES.items()},
    "sample with nodePort 0": case(**{"sample.enabled": True, "sample.nodePort": 0}),
    "two watched namespaces": case(**{"operator.watchNamespaces": ["shop", "frauddemo"], "sample.enabled": True}),
}


def expected_kinds(values: dict) -> dict[str, int]:
    """What the chart should render for these values: kind -> count."""
    v = {k: values.get(k, d[0]) for k, d in SWITCHES.items()}
    watched = len(values.get("operator.watchNamespaces") or [NAMESPACE])
    kinds = {"Deployment": 1}
    if v["serviceAccount.create"]:
        kinds["ServiceAccount"] = 1
    if v["rbac.create"]:
        if v["operator.clusterWide"]:
            kinds |= {"ClusterRole": 1, "ClusterRoleBinding": 1}
        else:
            kinds |= {"Role": watched, "RoleBinding": watched}
    if v["grafanaDashboard.enabled"]:
        kinds["ConfigMap"] = 1
    if v["monitoring.serviceMonitor.enabled"]:
        kinds["ServiceMonitor"] = 1
    if v["monitoring.prometheusRule.enabled"]:
        kinds["PrometheusRule"] = 1
    if v["sample.enabled"]:
        kinds[crd.KIND] = 1
        if v["sample.nodePort"]:
            kinds["Service"] = 1
    # the pre-delete hook: a Job, its ServiceAccount, a Role and RoleBinding per namespace it cleans
    served = v["operator.clusterWide"] or NAMESPACE in (values.get("operator.watchNamespaces") or [NAMESPACE])
    cleaned = len({NAMESPACE} if served or v["sample.enabled"] else set())
    if v["uninstallHook.enabled"] and v["rbac.create"] and cleaned:
        for kind, n in (("Job", 1), ("ServiceAccount", 1), ("Role", cleaned), ("RoleBinding", cleaned)):
            kinds[kind] = kinds.get(kind, 0) + n
    return kinds


@pytest.fixture(scope="module", params=list(CASES), ids=list(CASES))
def rendered(request):
    values = CASES[request.param]
    return values, render(values)


def test_renders_what_the_switches_ask_for(rendered):
    values, objs = rendered
    kinds: dict[str, int] = {}
    for o in objs:
        kinds[o["kind"]] = kinds.get(o["kind"], 0) + 1
    assert kinds == expected_kinds(values)


def test_every_rendered_object_is_valid(rendered):
    _, objs = rendered
    assert validation_errors(objs) == []


def test_every_object_has_the_standard_labels_and_a_namespace(rendered):
    _, objs = rendered
    for o in objs:
        meta = o["metadata"]
        missing = [k for k in STANDARD_LABELS if k not in meta.get("labels", {})]
        assert not missing, f"{o['kind']} {meta['name']} lacks labels {missing}"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        assert meta["labels"]["app.kubernetes.io/instance"] == RELEASE
        if not o["kind"].startswith("Cluster"):
            assert meta.get("namespace"), f"{o['kind']} {meta['name']} has no namespace"


def test_crds_are_installed_with_include_crds():
    objs = render(None, "--include-crds")
    crd_obj = one(objs, "CustomResourceDefinition")
    assert crd_obj == crd.load()
    assert validation_errors([crd_obj]) == []


def test_chart_crd_is_the_operators_crd():
    """helm reads only files inside the chart, so crds/ holds a copy of the single source."""
    files = sorted(p.name for p in (CHART / "crds").iterdir())
    assert files == ["frauddemos.frauddemo.io.yaml"], files
    source = ROOT / "operator" / "frauddemo_operator" / "crd.yaml"
    assert (CHART / "crds" / files[0]).read_bytes() == source.read_bytes(), (
        "charts/frauddemo/crds/ is stale: run `make chart-crd` to copy operator/frauddemo_operator/crd.yaml"
    )


@pytest.mark.parametrize(
    "values", [None, CASES["all on"], CASES["operator.clusterWide=True"]], ids=["defaults", "all on", "cluster-wide"]
)
def test_helm_lint_strict(values):
    args = ["lint", "--strict", str(CHART), "--namespace", NAMESPACE]
    for key, value in (values or {}).items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    out = helm(*args).stdout
    assert "[WARNING]" not in out and "[ERROR]" not in out, out


def test_versions_agree():
    """The chart's appVersion is the package's version and the CRD's default image tag."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    default_image = crd.openapi_schema()["properties"]["spec"]["properties"]["image"]["default"]
    assert chart["appVersion"] == project["version"]
    assert default_image == f"frauddemo:{chart['appVersion']}"
    deployment = one(render(), "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == default_image


def test_kubernetes_older_than_supported_is_refused():
    assert "incompatible with Kubernetes v1.29.0" in render_error(None, "--kube-version", "1.29.0")
    render(None, "--kube-version", "1.30.0")


# --- the operator's Deployment ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [None, {"operator.clusterWide": True}, {"operator.watchNamespaces": ["shop", "depot"]}],
    ids=["namespaced", "cluster-wide", "two namespaces"],
)
def test_operator_deployment(values):
    objs = render(values)
    dep = one(objs, "Deployment")
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert c["args"] == ["operator"]
    assert not restricted_violations(pod), restricted_violations(pod)
    assert pod["securityContext"]["runAsUser"] == builders.APP_UID
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == mounts["/tmp"])
    assert {"cpu", "memory"} <= c["resources"]["requests"].keys() <= c["resources"]["limits"].keys()

    # What the operator reads from its environment matches the probe and the RBAC mode.
    env = {e["name"]: e["value"] for e in c["env"]}
    settings = Settings.from_env(env)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    probe = c["livenessProbe"]["httpGet"]
    liveness = urlparse(settings.liveness)
    assert liveness.port == ports[probe["port"]] == urlparse(Settings().liveness).port
    assert liveness.path == probe["path"]
    if values and values.get("operator.clusterWide"):
        assert settings.clusterwide
    else:
        assert settings.namespaces == tuple((values or {}).get("operator.watchNamespaces") or [NAMESPACE])
    assert settings.standalone  # one replica, no peering: the RBAC has no kopf peering rules


def test_operator_settings_pass_through():
    dep = one(
        render(
            {
                "operator.logLevel": "DEBUG",
                "operator.resyncSeconds": 60,
                "operator.passwordGraceSeconds": 90,
                "operator.extraEnv": [{"name": "FRAUDDEMO_OPERATOR_MAX_IN_FLIGHT", "value": "32"}],
                "image.digest": "sha256:" + "a" * 64,
                "imagePullSecrets": [{"name": "registry"}],
            }
        ),
        "Deployment",
    )
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    s = Settings.from_env({e["name"]: e["value"] for e in c["env"]})
    assert (s.log_level, s.resync_seconds, s.max_in_flight, s.password_grace) == ("DEBUG", 60.0, 32, 90.0)
    assert c["image"] == "frauddemo@sha256:" + "a" * 64
    assert pod["imagePullSecrets"] == [{"name": "registry"}]


# --- monitoring ------------------------------------------------------------------------------------------


def test_dashboard_configmap_holds_the_generated_dashboard():
    objs = render({"grafanaDashboard.enabled": True, "grafanaDashboard.annotations": {"grafana_folder": "FraudDemo"}})
    cm = one(objs, "ConfigMap")
    source = json.loads((CHART / "files" / "frauddemo-dashboard.json").read_text())
    (text,) = cm["data"].values()
    assert json.loads(text) == source
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "FraudDemo"}


def test_prometheus_rule_holds_the_generated_rules_untouched():
    objs = render({"monitoring.prometheusRule.enabled": True})
    rule = one(objs, "PrometheusRule")
    source = yaml.safe_load((CHART / "files" / "frauddemo-rules.yaml").read_text())
    assert rule["spec"]["groups"] == source["groups"]  # {{ $labels.x }} in annotations is not templated


@pytest.mark.parametrize("release", ["prometheus", "kps"])
def test_monitoring_objects_carry_the_release_label(release):
    objs = render(
        {
            "monitoring.serviceMonitor.enabled": True,
            "monitoring.prometheusRule.enabled": True,
            "monitoring.release": release,
            "monitoring.labels": {"team": "fraud"},
            "sample.enabled": True,
        }
    )
    for kind in ("ServiceMonitor", "PrometheusRule"):
        labels = one(objs, kind)["metadata"]["labels"]
        assert labels["release"] == release and labels["team"] == "fraud"
    # the sample leaves scraping to the chart's ServiceMonitor (one or the other, never both)
    monitoring = one(objs, crd.KIND)["spec"]["monitoring"]
    assert monitoring == {"serviceMonitor": False, "release": release}


def test_no_release_label_when_empty():
    objs = render({"monitoring.serviceMonitor.enabled": True, "monitoring.release": ""})
    assert "release" not in one(objs, "ServiceMonitor")["metadata"]["labels"]


@pytest.mark.parametrize(
    "values,selector",
    [
        (None, {"matchNames": [NAMESPACE]}),
        ({"operator.watchNamespaces": ["shop", "depot"]}, {"matchNames": ["shop", "depot"]}),
        ({"operator.clusterWide": True}, {"any": True}),
    ],
    ids=["namespaced", "two namespaces", "cluster-wide"],
)
def test_service_monitor_scrapes_what_the_operator_serves(values, selector):
    sm = one(render({**(values or {}), "monitoring.serviceMonitor.enabled": True}), "ServiceMonitor")
    assert sm["spec"]["namespaceSelector"] == selector
    # The operator's metrics Services: their labels match, and every port they expose is scraped.
    owner = builders.Owner("retail", NAMESPACE, "uid")
    services = [builders.detector_service(owner), builders.syncers_service(owner)]
    ports = {p["name"] for s in services for p in s["spec"]["ports"]}
    for svc in services:
        assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert {e["port"] for e in sm["spec"]["endpoints"]} == ports
    assert all(e["path"] == "/metrics" for e in sm["spec"]["endpoints"])


# --- bad values get a clear error --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values,message",
    [
        ({"replicas": 2}, "Additional property replicas is not allowed"),
        ({"image.pullPolicy": "Sometimes"}, "image.pullPolicy must be one of"),
        ({"operator.clusterWide": True, "operator.watchNamespaces": ["shop"]}, "operator.watchNamespaces"),
        ({"operator.watchNamespaces": ["Not_A_Namespace"]}, "operator.watchNamespaces.0"),
        ({"operator.logLevel": "LOUD"}, "operator.logLevel"),
        ({"sample.name": "x" * 31}, "sample.name"),
        ({"sample.nodePort": 80}, "sample.nodePort"),
        ({"monitoring.serviceMonitor.interval": "soon"}, "monitoring.serviceMonitor.interval"),
        ({"image.digest": "latest"}, "image.digest"),
        (
            {"sample.enabled": True, "sample.namespace": "elsewhere"},
            'sample.namespace "elsewhere" is not served by the operator',
        ),
        (
            {"operator.extraEnv": [{"name": "FRAUDDEMO_OPERATOR_NAMESPACES", "value": "x"}]},
            "operator.extraEnv must not set FRAUDDEMO_OPERATOR_NAMESPACES",
        ),
        ({"serviceAccount.create": False}, "serviceAccount.name is required"),
    ],
)
def test_bad_values_are_refused_with_a_clear_error(values, message):
    assert message in render_error(values)


def test_sample_name_limit_is_the_operators():
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["properties"]["sample"]["properties"]["name"]["maxLength"] == models.MAX_NAME_LEN


# --- NOTES.txt ----------------------------------------------------------------------------------------------


def test_notes_tell_the_next_commands():
    notes = render_notes({"sample.enabled": True, "grafanaDashboard.enabled": True})
    assert f"kubectl -n {NAMESPACE} rollout status deployment/{RELEASE}-operator" in notes
    assert f"kubectl -n {NAMESPACE} get fd retail -w" in notes
    assert f"port-forward service/{builders.detector_name('retail')} 8080:{builders.DETECTOR_PORT}" in notes
    assert "http://127.0.0.1:30080/" in notes
    title = json.loads((CHART / "files" / "frauddemo-dashboard.json").read_text())["title"]
    assert f'dashboard "{title}"' in notes
    assert f"kubectl -n {NAMESPACE} delete fd --all" in notes


def test_notes_example_is_a_valid_frauddemo():
    notes = render_notes({"operator.watchNamespaces": ["shop", "depot"]})
    example = json.loads(re.search(r"echo '(\{.*\})' \| kubectl -n shop apply -f -", notes).group(1))
    assert frauddemo_errors(example) is None
    assert "FraudDemos in shop, depot" in notes
    assert "kubectl -n depot delete fd --all" in notes
    assert "--all-namespaces" in render_notes({"operator.clusterWide": True})
