"""The samples against the CRD's schema (the operator's sample and the chart's), unknown fields
rejected, the chart's dashboard Service against the pods the operator builds, and the validators
themselves catching what they are there to catch."""

from __future__ import annotations

import copy
from importlib import resources

import pytest
import yaml
from chart_support import NAMESPACE, frauddemo_errors, one, render, validation_errors

from frauddemo_operator import builders, crd, models


@pytest.fixture(scope="module")
def operator_sample() -> dict:
    text = resources.files("frauddemo_operator").joinpath("samples/frauddemo.yaml").read_text()
    return yaml.safe_load(text)


@pytest.fixture(scope="module")
def chart_sample() -> dict:
    return one(render({"sample.enabled": True}), crd.KIND)


def test_operator_sample_is_valid(operator_sample):
    assert frauddemo_errors(operator_sample) is None


def test_chart_sample_is_valid(chart_sample):
    assert frauddemo_errors(chart_sample) is None
    assert chart_sample["metadata"]["namespace"] == NAMESPACE
    assert chart_sample["spec"]["image"] == crd.default_spec({"stores": []})["image"]


@pytest.mark.parametrize(
    "path,value",
    [
        (("spec", "bogus"), 1),
        (("spec", "stores", 0, "nodeSelector"), {"frauddemo.io/store": "a"}),
        (("spec", "detection", "threshold"), 0.5),
    ],
    ids=["spec.bogus", "stores[0].nodeSelector", "detection.threshold"],
)
def test_unknown_fields_are_rejected(operator_sample, path, value):
    bad = copy.deepcopy(operator_sample)
    node = bad
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    err = frauddemo_errors(bad)
    assert err is not None and path[-1] in err, err


@pytest.mark.parametrize(
    "spec,message",
    [
        ({"bogus": True}, "bogus"),
        ({"stores": [{"name": "a", "replicas": 9}, {"name": "b"}]}, "stores[0].replicas"),
        ({"stores": [{"name": "a"}]}, "stores"),
        ({"stores": [{"name": "a"}, {"name": "a"}]}, "DuplicateStoreNames"),
    ],
    ids=["unknown field", "too many replicas", "one store", "duplicate stores"],
)
def test_chart_sample_with_a_bad_spec_is_caught(spec, message):
    sample = one(render({"sample.enabled": True, "sample.spec": spec}), crd.KIND)
    err = frauddemo_errors(sample)
    assert err is not None and message in err, err


def test_dashboard_service_selects_the_operators_detector_pods(chart_sample):
    objs = render({"sample.enabled": True})
    svc = one(objs, "Service")
    name = chart_sample["metadata"]["name"]
    owner = builders.Owner(name, NAMESPACE, "uid")
    children = builders.desired(owner, models.parse(name, chart_sample["spec"]), service_monitors=True)
    pods = {c["metadata"]["name"]: c["spec"]["template"] for c in children if "template" in c.get("spec", {})}
    selected = [n for n, t in pods.items() if svc["spec"]["selector"].items() <= t["metadata"]["labels"].items()]
    assert selected == [builders.detector_name(name)]
    (port,) = svc["spec"]["ports"]
    container_ports = {
        p["name"]: p["containerPort"] for c in pods[selected[0]]["spec"]["containers"] for p in c.get("ports", [])
    }
    assert container_ports[port["targetPort"]] == builders.DETECTOR_PORT == port["port"]
    assert svc["spec"]["type"] == "NodePort" and port["nodePort"] == 30080


# --- the validators catch what they are for ---------------------------------------------------------------


def test_validators_catch_broken_objects(chart_sample):
    objs = render(
        {"sample.enabled": True, "monitoring.serviceMonitor.enabled": True, "monitoring.prometheusRule.enabled": True}
    )
    broken = copy.deepcopy(objs)
    one(broken, "Deployment")["spec"]["replicaz"] = 1
    one(broken, "Service")["spec"]["ports"][0]["port"] = "eighty"
    one(broken, crd.KIND)["spec"]["stores"][0]["replicas"] = 0
    one(broken, "ServiceMonitor")["spec"]["endpoints"][0]["interval"] = "often"
    one(broken, "PrometheusRule")["spec"]["groups"][0]["rules"][0].pop("expr")
    errors = validation_errors(broken)
    text = "\n".join(errors)
    for expected in ("Deployment", "Service retail-nodeport", "FraudDemo retail", "ServiceMonitor", "PrometheusRule"):
        assert expected in text, text
    assert "replicaz" in text and "(Kubernetes 1.30)" in text
    assert validation_errors([{"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}])
