"""Issue 16, item 9 (operator side): FraudDemo names, rollout-aware readiness, storage changes that would
wipe the volumes, and the dashboard's Grafana folder."""

from __future__ import annotations

import copy
import json
import re
import time
from pathlib import Path

import pytest
import yaml

from frauddemo_operator import builders, crd, models, reconcile, status
from frauddemo_testkit.testing import TWO_STORES, wait_for

pytest_plugins = ("frauddemo_testkit.pytest_plugin",)

ROOT = Path(__file__).resolve().parent.parent
OWNER = builders.Owner("demo", "ns", "uid-1")


def cond(st: dict, ctype: str) -> dict:
    return next(c for c in st["conditions"] if c["type"] == ctype)


# --- names ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["1demo", "demo.a", "demo-", "Demo", "a_b"])
def test_a_name_that_is_no_dns_1035_label_is_invalid(name):
    with pytest.raises(models.InvalidSpec) as e:
        models.parse(name, TWO_STORES)
    assert e.value.reason == "InvalidName" and name in e.value.message


@pytest.mark.parametrize("name", ["demo", "a", "retail-2", "x" * 30])
def test_dns_1035_names_pass_and_every_child_name_is_valid(name):
    kids = builders.desired(
        builders.Owner(name, "ns", "u"),
        models.parse(name, {"stores": [{"name": "a" * 12}, {"name": "b" * 12}]}),
        service_monitors=True,
    )
    for k in kids:
        n = k["metadata"]["name"]
        assert len(n) <= 63 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", n), n


def test_the_crd_and_the_chart_say_the_same_about_names():
    meta = crd.openapi_schema()["properties"]["metadata"]["properties"]["name"]
    assert meta["pattern"] == models.NAME_RE.pattern and meta["maxLength"] == models.MAX_NAME_LEN
    values = json.loads((ROOT / "charts/frauddemo/values.schema.json").read_text())
    sample = values["properties"]["sample"]["properties"]["name"]
    assert sample["pattern"] == models.NAME_RE.pattern and sample["maxLength"] == models.MAX_NAME_LEN


def test_the_crd_metadata_schema_is_one_the_api_server_takes():
    """A structural schema may restrict only metadata.name and metadata.generateName, and `metadata` itself
    may say nothing but its type (else the CRD is refused: "must not specify anything other than name and
    generateName"); the emulator does not check this, so it is checked here."""
    meta = crd.openapi_schema()["properties"]["metadata"]
    assert set(meta) <= {"type", "properties"} and meta.get("type") == "object"
    assert set(meta.get("properties") or {}) <= {"name", "generateName"}


def test_an_invalid_name_is_a_condition_not_a_retry_loop(kube_cluster, kube_ns):
    kube_cluster.apply_fd(kube_ns, "1demo", TWO_STORES)  # the emulator, like old CRDs, does not check it
    st = kube_cluster.wait_phase(kube_ns, "1demo", "Invalid")
    ready = cond(st, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "InvalidName" and "DNS-1035" in ready["message"]
    wait_for(
        lambda: [
            e for e in kube_cluster.events(kube_ns) if e.get("reason") == "InvalidName" and e.get("type") == "Warning"
        ],
        what="a Warning event",
    )
    assert not any(kube_cluster.children(kube_ns).values())
    mark = kube_cluster.mark()
    time.sleep(1.5)
    assert [
        r for r in kube_cluster.emu.requests()[mark:] if r.method != "GET" and f"/namespaces/{kube_ns}/" in r.path
    ] == []


# --- readiness ------------------------------------------------------------------------------------------


def deployment(replicas=1, generation=2, **st) -> dict:
    return {
        "kind": "Deployment",
        "metadata": {"name": "demo-detector", "generation": generation},
        "spec": {"replicas": replicas},
        "status": {"observedGeneration": generation, **st},
    }


def statefulset(replicas=2, **st) -> dict:
    return {
        "kind": "StatefulSet",
        "metadata": {"name": "demo-store-a", "generation": 3},
        "spec": {"replicas": replicas},
        "status": {"observedGeneration": 3, **st},
    }


def test_a_stuck_deployment_rollout_is_not_ready():
    # the new pod never becomes available; the old one still is (what availableReplicas alone calls ready)
    stuck = deployment(replicas=1, replicas_=None, availableReplicas=1, updatedReplicas=1, readyReplicas=1)
    stuck["status"].pop("replicas_")
    stuck["status"]["replicas"] = 2
    assert not status.workload(stuck).is_ready
    assert not status.workload(deployment(availableReplicas=1, updatedReplicas=0, replicas=1)).is_ready
    assert not status.workload(
        {**deployment(availableReplicas=1, updatedReplicas=1, replicas=1), "metadata": {"name": "x", "generation": 3}}
    ).is_ready
    assert status.workload(deployment(availableReplicas=1, updatedReplicas=1, replicas=1)).is_ready


def test_a_statefulset_rolling_out_is_not_ready():
    rolling = statefulset(
        readyReplicas=2, currentRevision="store-a-1", updateRevision="store-a-2", replicas=2, updatedReplicas=1
    )
    assert not status.workload(rolling).is_ready
    assert not status.workload(statefulset(readyReplicas=1, currentRevision="r2", updateRevision="r2")).is_ready
    assert status.workload(statefulset(readyReplicas=2, currentRevision="r2", updateRevision="r2")).is_ready


def test_a_stuck_rollout_keeps_the_demo_from_ready():
    spec = models.parse("demo", TWO_STORES)
    objs = [
        k for k in builders.desired(OWNER, spec, service_monitors=False) if k["kind"] in ("Deployment", "StatefulSet")
    ]
    workloads = {}
    for o in objs:
        n = o["spec"]["replicas"]
        o = {
            **o,
            "metadata": {**o["metadata"], "generation": 1},
            "status": {
                "observedGeneration": 1,
                "replicas": n,
                "readyReplicas": n,
                "availableReplicas": n,
                "updatedReplicas": n,
                "currentRevision": "r1",
                "updateRevision": "r1",
            },
        }
        workloads[builders.key(o)] = status.workload(o)
    now = "2026-01-01T00:00:00Z"
    assert status.compute("demo", spec, status.Observation(1, workloads=workloads), None, now)["phase"] == "Ready"
    det = next(o for o in objs if o["metadata"]["name"] == "demo-detector")
    workloads[("Deployment", "demo-detector")] = status.workload(
        {
            **det,
            "metadata": {**det["metadata"], "generation": 2},
            "status": {"observedGeneration": 2, "replicas": 2, "availableReplicas": 1, "updatedReplicas": 1},
        }
    )
    st = status.compute("demo", spec, status.Observation(1, workloads=workloads), None, now)
    assert st["phase"] == "Provisioning" and "demo-detector rollout not complete" in cond(st, "Ready")["message"]


# --- storage --------------------------------------------------------------------------------------------


def store_a(size: str | None) -> dict:
    stores = [{"name": "a", **({"storage": {"size": size}} if size else {})}, {"name": "b"}]
    kids = builders.desired(OWNER, models.parse("demo", {"stores": stores}), service_monitors=False)
    return next(k for k in kids if builders.key(k) == ("StatefulSet", "demo-store-a"))


def test_a_storage_change_is_refused_not_recreated():
    old, new = store_a("1Gi"), store_a("2Gi")
    assert reconcile.needs_recreate(new, old)
    reason, message = reconcile.recreate_refused(new, old)
    assert reason == "StorageChangeRefused" and "1Gi now, 2Gi asked" in message and "--cascade=orphan" in message
    assert reconcile.recreate_refused(store_a(None), old)[0] == "StorageChangeRefused"  # removing it too
    assert reconcile.recreate_refused(new, store_a(None)) is None  # no volume to lose: recreated
    kept = reconcile.keep_immutable(new)
    assert "volumeClaimTemplates" not in kept["spec"] and not reconcile.drifted(kept, old)


def test_a_storage_change_keeps_the_statefulset_and_says_how(kube_cluster, kube_ns):
    stores = {"stores": [{"name": "a", "storage": {"size": "1Gi"}}, {"name": "b"}]}
    kube_cluster.apply_fd(kube_ns, "demo", stores)
    kube_cluster.wait_phase(kube_ns, "demo", "Ready")
    before = kube_cluster.emu.get("statefulsets", kube_ns, "demo-store-a")
    bigger = copy.deepcopy(stores)
    bigger["stores"][0].update(storage={"size": "2Gi"}, replicas=3)
    kube_cluster.patch_fd(kube_ns, "demo", {"spec": bigger})
    applied = wait_for(
        lambda: (
            (st := kube_cluster.reconciled(kube_ns, "demo")) and cond(st, "SpecApplied")["status"] == "False" and st
        ),
        what="SpecApplied False",
    )
    c = cond(applied, "SpecApplied")
    assert c["reason"] == "StorageChangeRefused" and "--cascade=orphan" in c["message"]
    after = kube_cluster.emu.get("statefulsets", kube_ns, "demo-store-a")
    assert after["metadata"]["uid"] == before["metadata"]["uid"]  # not recreated: the volumes stay
    assert after["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert after["spec"]["replicas"] == 3  # what can change in place still does
    wait_for(
        lambda: [e for e in kube_cluster.events(kube_ns) if e.get("reason") == "StorageChangeRefused"],
        what="a Warning event",
    )
    # what the message says to do: the StatefulSet deleted (orphaning its pods and volumes) comes back new
    kube_cluster.emu.delete("statefulsets", kube_ns, "demo-store-a")
    new = wait_for(
        lambda: (
            (o := kube_cluster.emu.get("statefulsets", kube_ns, "demo-store-a"))
            and o["metadata"]["uid"] != before["metadata"]["uid"]
            and o
        ),
        what="the StatefulSet recreated",
    )
    assert new["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "2Gi"
    wait_for(
        lambda: (st := kube_cluster.reconciled(kube_ns, "demo")) and cond(st, "SpecApplied")["status"] == "True",
        what="SpecApplied True once the StatefulSet has the new storage",
    )


# --- the dashboard's folder -----------------------------------------------------------------------------


def test_the_samples_grafana_folder_is_an_annotation():
    sample = yaml.safe_load((ROOT / "operator/frauddemo_operator/samples/frauddemo.yaml").read_text())
    spec = models.parse(sample["metadata"]["name"], sample["spec"])
    kids = builders.desired(builders.Owner(sample["metadata"]["name"], "ns", "u"), spec, service_monitors=False)
    cm = next(k for k in kids if k["kind"] == "ConfigMap" and k["metadata"]["name"].endswith("-dashboard"))
    assert "grafana_folder" in cm["metadata"].get("annotations", {})
    assert "grafana_folder" not in cm["metadata"]["labels"]
