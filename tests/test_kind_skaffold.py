"""kind-config.yaml, skaffold.yaml and the "Run on Kubernetes" commands of docs/kubernetes.md, parsed and checked
against the chart, the operator and each other (no kind or skaffold binary runs here)."""

from __future__ import annotations

import re
import shlex

import pytest
import yaml
from chart_support import CHART, NAMESPACE, RELEASE, ROOT, one, render, validation_errors

from frauddemo_operator import builders, crd, models

GRAFANA_NODE_PORT = 30300
PROMETHEUS_NODE_PORT = 30090
KUBERNETES_DOC = "docs/kubernetes.md"  # where the "Run on Kubernetes" commands are
STORE_LABEL = builders.L_STORE  # nodes carry the same key the store pods do: frauddemo.io/store


@pytest.fixture(scope="module")
def kind() -> dict:
    return yaml.safe_load((ROOT / "kind-config.yaml").read_text())


@pytest.fixture(scope="module")
def skaffold() -> dict:
    return yaml.safe_load((ROOT / "skaffold.yaml").read_text())


@pytest.fixture(scope="module")
def chart_values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


@pytest.fixture(scope="module")
def readme_commands() -> list[list[str]]:
    """The shell commands of the "Run on Kubernetes" section (docs/kubernetes.md), split as the shell would."""
    text = (ROOT / KUBERNETES_DOC).read_text()
    section = text.split("## Run on Kubernetes", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    return [shlex.split(line) for line in block.splitlines() if line.strip() and not line.startswith("#")]


def command(commands: list[list[str]], *prefix: str) -> list[str]:
    found = [c for c in commands if c[: len(prefix)] == list(prefix)]
    assert len(found) == 1, f"expected one `{' '.join(prefix)}` in {KUBERNETES_DOC}, got {found}"
    return found[0]


def sets(cmd: list[str]) -> dict[str, str]:
    return dict(cmd[i + 1].split("=", 1) for i, a in enumerate(cmd) if a == "--set")


# --- kind ---------------------------------------------------------------------------------------------------


def test_kind_config_shape(kind):
    assert kind["kind"] == "Cluster" and kind["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    roles = [n["role"] for n in kind["nodes"]]
    assert roles.count("control-plane") == 1 and set(roles) == {"control-plane", "worker"}


def test_each_sample_store_has_its_own_labelled_worker(kind, chart_values):
    workers = [n for n in kind["nodes"] if n["role"] == "worker"]
    stores = [s["name"] for s in chart_values["sample"]["spec"]["stores"]]
    labelled = [n.get("labels", {}).get(STORE_LABEL) for n in workers]
    assert sorted(filter(None, labelled)) == sorted(stores), "one worker per store, each with its own label"
    for node in workers:
        for key in node.get("labels", {}):
            # the kubelet may only set labels outside kubernetes.io / k8s.io, or these allowed ones
            prefix = key.split("/")[0] if "/" in key else ""
            if prefix.endswith(("kubernetes.io", "k8s.io")):
                assert key in ("topology.kubernetes.io/zone", "topology.kubernetes.io/region"), key


def test_port_mappings_match_the_services(kind, chart_values, readme_commands):
    mappings = [m for n in kind["nodes"] for m in n.get("extraPortMappings", [])]
    by_port = {m["containerPort"]: m for m in mappings}
    assert len(by_port) == len(mappings)
    dashboard = one(render({"sample.enabled": True}), "Service")["spec"]["ports"][0]["nodePort"]
    assert dashboard == chart_values["sample"]["nodePort"]
    kps = sets(command(readme_commands, "helm", "install", "prometheus"))
    assert int(kps["grafana.service.nodePort"]) == GRAFANA_NODE_PORT
    assert int(kps["prometheus.service.nodePort"]) == PROMETHEUS_NODE_PORT
    assert set(by_port) == {dashboard, GRAFANA_NODE_PORT, PROMETHEUS_NODE_PORT}
    assert len({m["hostPort"] for m in mappings}) == len(mappings)
    for m in mappings:
        assert 30000 <= m["containerPort"] <= 32767, "a NodePort"
        assert m.get("listenAddress") == "127.0.0.1", "published on loopback only"


# --- skaffold -----------------------------------------------------------------------------------------------


def test_skaffold_builds_the_image_the_chart_deploys(skaffold, chart_values):
    assert skaffold["apiVersion"].startswith("skaffold/v4") and skaffold["kind"] == "Config"
    (artifact,) = skaffold["build"]["artifacts"]
    image = artifact["image"]
    assert image == chart_values["image"]["repository"]
    assert (ROOT / artifact.get("context", ".") / artifact["docker"]["dockerfile"]).is_file()
    (release,) = skaffold["deploy"]["helm"]["releases"]
    assert (ROOT / release["chartPath"]).resolve() == CHART
    assert release["setValueTemplates"] == {
        "image.repository": f"{{{{.IMAGE_REPO_{image}}}}}",
        "image.tag": f"{{{{.IMAGE_TAG_{image}}}}}",
    }


def test_skaffold_values_render_a_valid_release(skaffold):
    """What skaffold would install: the chart with its setValues and a built image's repository and tag."""
    (release,) = skaffold["deploy"]["helm"]["releases"]
    values = {**release.get("setValues", {}), "image.repository": "frauddemo", "image.tag": "abc1234"}
    objs = render(values)
    assert validation_errors(objs) == []
    sample = one(objs, crd.KIND)
    assert sample["spec"]["image"] == "frauddemo:abc1234"  # the demo's pods run the image just built
    assert release["namespace"] == NAMESPACE and release["name"] == RELEASE


def test_skaffold_forwards_the_sample_dashboard(skaffold, chart_values):
    (release,) = skaffold["deploy"]["helm"]["releases"]
    assert release["setValues"].get("sample.enabled") is True
    (fwd,) = skaffold["portForward"]
    assert fwd["resourceType"] == "service"
    assert fwd["resourceName"] == builders.detector_name(chart_values["sample"]["name"])
    assert fwd["namespace"] == release["namespace"]
    assert fwd["port"] == builders.DETECTOR_PORT


def test_skaffold_kind_profile_loads_instead_of_pushing(skaffold, kind):
    (profile,) = [p for p in skaffold["profiles"] if p["name"] == "kind"]
    context = f"kind-{kind['name']}"
    assert profile["activation"] == [{"kubeContext": context}]
    patches = {p["path"]: p for p in profile["patches"]}
    assert patches["/build/local"] == {"op": "add", "path": "/build/local", "value": {"push": False}}
    assert patches["/deploy/kubeContext"]["value"] == context
    assert "local" not in skaffold["build"] and "kubeContext" not in skaffold["deploy"], "the patches add them"


# --- the commands of docs/kubernetes.md---------------------------------------------------------------------------


def test_readme_commands_agree_with_the_files(readme_commands, kind):
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    image = f"frauddemo:{chart['appVersion']}"
    assert command(readme_commands, "kind", "create", "cluster") == [
        "kind",
        "create",
        "cluster",
        "--config",
        "kind-config.yaml",
    ]
    assert command(readme_commands, "docker", "build") == ["docker", "build", "-t", image, "."]
    assert command(readme_commands, "kind", "load") == ["kind", "load", "docker-image", image, "--name", kind["name"]]
    kps = command(readme_commands, "helm", "install", "prometheus")
    assert kps[3] == "prometheus-community/kube-prometheus-stack"
    assert sets(kps)["grafana.adminPassword"] == "", "Grafana generates its password"


def test_readme_chart_install_renders_a_valid_release(readme_commands, chart_values):
    cmd = command(readme_commands, "helm", "install", "frauddemo")
    assert cmd[3] == "charts/frauddemo" and cmd[cmd.index("--namespace") + 1] == NAMESPACE
    values = {k: yaml.safe_load(v) for k, v in sets(cmd).items()}
    objs = render(values)
    assert validation_errors(objs) == []
    # the release label kube-prometheus-stack selects by is its release name, "prometheus"
    assert one(objs, "PrometheusRule")["metadata"]["labels"]["release"] == "prometheus"
    assert one(objs, crd.KIND)["spec"]["monitoring"]["release"] == "prometheus"
    watch = command(readme_commands, "kubectl", "-n", NAMESPACE, "get", "fd")
    assert watch[5] == chart_values["sample"]["name"]


def test_readme_names_the_objects_it_points_at(chart_values):
    text = (ROOT / KUBERNETES_DOC).read_text().split("## Run on Kubernetes", 1)[1].split("\n## ", 1)[0]
    objs = render({"sample.enabled": True, "grafanaDashboard.enabled": True})
    name = chart_values["sample"]["name"]
    owner = builders.Owner(name, NAMESPACE, "uid")
    spec = crd.default_spec(one(objs, crd.KIND)["spec"])
    operator_dashboard = builders.dashboard_configmap(owner, models.parse(name, spec), "{}")
    for shown in (
        one(objs, "Service")["metadata"]["name"],
        one(objs, "ConfigMap")["metadata"]["name"],
        operator_dashboard["metadata"]["name"],
        builders.detector_name(name),
    ):
        assert f"`{shown}`" in text or f"service/{shown} " in text, shown
