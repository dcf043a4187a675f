"""Status: phase, conditions, per-store readiness, and the detector's figures; it follows dying pods
back and forth instead of sticking at Ready."""

from __future__ import annotations

from frauddemo_operator import builders, crd, models, status
from frauddemo_testkit.testing import TWO_STORES, wait_for

pytest_plugins = ("frauddemo_testkit.pytest_plugin",)

SPEC = models.parse("demo", TWO_STORES)
NOW1, NOW2 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def all_workloads(ready: bool = True, store_ready: int | None = None) -> dict:
    out = {}
    for s in SPEC.stores:
        n = builders.store_name("demo", s.name)
        out[("StatefulSet", n)] = status.Workload(
            "StatefulSet", n, "store", s.replicas, s.replicas if store_ready is None else store_ready
        )
    names = [builders.syncer_name("demo", a, b) for a, b in SPEC.links]
    names += [builders.pos_name("demo", s) for s in SPEC.store_names] + ["demo-hacked-pos", "demo-detector"]
    for n in names:
        out[("Deployment", n)] = status.Workload("Deployment", n, "x", 1, 1 if ready else 0)
    return out


def cond(st, t):
    return next(c for c in st["conditions"] if c["type"] == t)


def test_provisioning_then_ready_then_degraded_then_ready():
    st = status.compute("demo", SPEC, status.Observation(1), None, NOW1)
    assert st["phase"] == "Provisioning" and cond(st, "Ready")["status"] == "False"
    assert cond(st, "Ready")["reason"] == "Provisioning" and st["storesReady"] == "0/2"
    st = status.compute("demo", SPEC, status.Observation(1, workloads=all_workloads()), st, NOW1)
    assert st["phase"] == "Ready" and cond(st, "Ready")["status"] == "True"
    assert cond(st, "ReplicationHealthy")["status"] == "Unknown"
    down = status.compute("demo", SPEC, status.Observation(1, workloads=all_workloads(store_ready=1)), st, NOW2)
    assert down["phase"] == "Degraded"
    assert cond(down, "Degraded")["status"] == "True" and "store a 1/2 ready" in cond(down, "Degraded")["message"]
    assert cond(down, "StoresReady")["status"] == "False" and cond(down, "StoresReady")["lastTransitionTime"] == NOW2
    assert down["stores"][0] == {"name": "a", "replicas": 2, "readyReplicas": 1, "ready": False}
    back = status.compute("demo", SPEC, status.Observation(1, workloads=all_workloads()), down, NOW2)
    assert back["phase"] == "Ready" and cond(back, "Degraded")["status"] == "False"


def test_last_transition_time_only_moves_on_a_change():
    a = status.compute("demo", SPEC, status.Observation(1, workloads=all_workloads()), None, NOW1)
    b = status.compute("demo", SPEC, status.Observation(2, workloads=all_workloads()), a, NOW2)
    assert [c["lastTransitionTime"] for c in b["conditions"]] == [c["lastTransitionTime"] for c in a["conditions"]]
    assert all(c["observedGeneration"] == 2 for c in b["conditions"]) and b["observedGeneration"] == 2
    assert status.compute("demo", SPEC, status.Observation(2, workloads=all_workloads()), b, NOW2) == b


def test_detector_figures_and_replication_health():
    ok = status.parse_detector(
        {
            "stores": {"a": {"up": True}, "b": {"up": True}},
            "links": [
                {"source": "a", "target": "b", "state": "up", "lag_ms": 120.0},
                {"source": "b", "target": "a", "state": "up", "lag_ms": 40.0},
            ],
            "fraud": {"alerts": 3},
        }
    )
    assert ok == status.DetectorStats(0.12, 2, 2, 3, ())
    st = status.compute("demo", SPEC, status.Observation(1, workloads=all_workloads(), detector=ok), None, NOW1)
    assert st["phase"] == "Ready" and st["replication"] == {"lagSeconds": 0.12, "links": 2, "linksUp": 2}
    assert st["fraud"] == {"alerts": 3} and cond(st, "ReplicationHealthy")["reason"] == "LinksUp"
    slow = status.parse_detector({"links": [{"source": "a", "target": "b", "state": "up", "lag_ms": 9000}]})
    st2 = status.compute("demo", SPEC, status.Observation(1, workloads=all_workloads(), detector=slow), st, NOW2)
    assert cond(st2, "ReplicationHealthy")["reason"] == "LagAboveThreshold" and st2["phase"] == "Degraded"
    assert st2["fraud"] == {"alerts": 3}  # last known count kept when the detector does not report one
    down = status.parse_detector(
        {"stores": {"b": {"up": False}}, "links": [{"source": "a", "target": "b", "state": "stale", "lag_ms": 0}]}
    )
    assert down.problems == ("link a->b is stale", "store b is down")
    st3 = status.compute("demo", SPEC, status.Observation(1, workloads=all_workloads(), detector=down), None, NOW1)
    assert cond(st3, "ReplicationHealthy")["status"] == "False" and st3["phase"] == "Provisioning"
    assert status.parse_detector({}) == status.DetectorStats(None, 0, 0, None, ())


def test_syncers_down_without_a_detector_means_replication_unhealthy():
    w = all_workloads()
    w[("Deployment", "demo-sync-a-b")] = status.Workload("Deployment", "demo-sync-a-b", "syncer", 1, 0)
    st = status.compute("demo", SPEC, status.Observation(1, workloads=w), None, NOW1)
    assert cond(st, "ReplicationHealthy")["reason"] == "SyncersNotReady"
    assert st["workloadsReady"] == "5/6"


def test_a_rollout_not_yet_observed_is_not_ready():
    obj = {
        "kind": "Deployment",
        "metadata": {"name": "x", "generation": 3},
        "spec": {"replicas": 1},
        "status": {"observedGeneration": 2, "availableReplicas": 1, "replicas": 1, "updatedReplicas": 1},
    }
    assert not status.workload(obj).is_ready
    obj["status"]["observedGeneration"] = 3
    assert status.workload(obj).is_ready


def test_invalid_and_error_statuses():
    st = status.compute(
        "demo", None, status.Observation(4, invalid=("DuplicateStoreNames", "store names ...")), None, NOW1
    )
    assert st["phase"] == "Invalid" and cond(st, "Ready")["reason"] == "DuplicateStoreNames"
    assert cond(st, "StoresReady")["status"] == "Unknown" and st["observedGeneration"] == 4
    err = status.compute(
        "demo", SPEC, status.Observation(1, error="503 ServiceUnavailable: busy", workloads=all_workloads()), None, NOW1
    )
    assert err["phase"] == "Provisioning" and cond(err, "Ready")["reason"] == "ReconcileError"
    assert "503" in cond(err, "Ready")["message"]


def test_status_matches_the_crd_schema():
    import jsonschema

    schema = crd.to_jsonschema(crd.openapi_schema()["properties"]["status"])
    ok = status.parse_detector(
        {"links": [{"source": "a", "target": "b", "state": "up", "lag_ms": 1}], "fraud": {"alerts": 1}}
    )
    for st in (
        status.compute("demo", SPEC, status.Observation(1, workloads=all_workloads(), detector=ok), None, NOW1),
        status.compute("demo", None, status.Observation(1, invalid=("X", "y")), None, NOW1),
    ):
        jsonschema.validate(status.strip_none(st), schema)


# --- end to end: pods die and come back; the detector reports -------------------------------------------


def test_dying_pods_degrade_and_recovery_heals(kube_cluster, kube_ns):
    kube_cluster.apply_fd(kube_ns, "demo", TWO_STORES)
    ready = kube_cluster.wait_phase(kube_ns, "demo", "Ready")
    since = cond(ready, "Ready")["lastTransitionTime"]
    kube_cluster.emu.hold("statefulsets", kube_ns, "demo-store-b", ready=1)
    st = kube_cluster.wait_phase(kube_ns, "demo", "Degraded", 5)
    assert cond(st, "Ready")["status"] == "False" and cond(st, "StoresReady")["status"] == "False"
    assert st["storesReady"] == "1/2" and st["stores"][1]["readyReplicas"] == 1
    assert "store b 1/2 ready" in cond(st, "Degraded")["message"]
    kube_cluster.emu.hold("deployments", kube_ns, "demo-sync-a-b", ready=0)
    wait_for(
        lambda: cond(kube_cluster.status(kube_ns, "demo"), "ReplicationHealthy")["reason"] == "SyncersNotReady",
        5,
        what="replication unhealthy",
    )
    kube_cluster.emu.release("statefulsets", kube_ns, "demo-store-b")
    kube_cluster.emu.release("deployments", kube_ns, "demo-sync-a-b")
    back = kube_cluster.wait_phase(kube_ns, "demo", "Ready", 5)
    assert cond(back, "Degraded")["status"] == "False" and cond(back, "Ready")["lastTransitionTime"] >= since


def test_detector_figures_reach_the_status_and_printer_columns(kube_cluster, kube_ns):
    kube_cluster.detector.payloads[(kube_ns, "demo")] = {
        "stores": {"a": {"up": True, "seq": 10}, "b": {"up": True, "seq": 12}},
        "links": [
            {"source": "a", "target": "b", "state": "up", "lag_ms": 250.0},
            {"source": "b", "target": "a", "state": "up", "lag_ms": 80.0},
        ],
        "fraud": {"alerts": 5},
    }
    try:
        kube_cluster.apply_fd(kube_ns, "demo", TWO_STORES)
        st = wait_for(
            lambda: (s := kube_cluster.status(kube_ns, "demo")).get("fraud") and s, 10, what="detector figures"
        )
        assert st["replication"] == {"lagSeconds": 0.25, "links": 2, "linksUp": 2}
        assert st["fraud"] == {"alerts": 5}
        assert cond(kube_cluster.wait_phase(kube_ns, "demo", "Ready"), "ReplicationHealthy")["status"] == "True"
        # what `kubectl get fd` shows
        obj = kube_cluster.fd(kube_ns, "demo")
        cols = {}
        for col in crd.version_entry()["additionalPrinterColumns"]:
            node = obj
            for part in col["jsonPath"].split(".")[1:]:
                node = node[part]
            cols[col["name"]] = node
        assert cols["Phase"] == "Ready" and cols["Stores"] == "2/2" and cols["Lag"] == 0.25 and cols["Frauds"] == 5
        # a link goes stale: replication unhealthy, the demo degraded
        kube_cluster.detector.payloads[(kube_ns, "demo")]["links"][0]["state"] = "stale"
        st = kube_cluster.wait_phase(kube_ns, "demo", "Degraded", 5)
        assert cond(st, "ReplicationHealthy")["reason"] == "LinkDown"
        # the detector goes away: no measurement, not a failure
        del kube_cluster.detector.payloads[(kube_ns, "demo")]
        st = kube_cluster.wait_phase(kube_ns, "demo", "Ready", 5)
        assert cond(st, "ReplicationHealthy")["status"] == "Unknown"
        assert "replication" not in st and st["fraud"] == {"alerts": 5}
    finally:
        kube_cluster.detector.payloads.pop((kube_ns, "demo"), None)
