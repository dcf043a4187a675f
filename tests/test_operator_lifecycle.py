"""The full lifecycle with the real kopf runtime against the emulator: create, update, delete."""

from __future__ import annotations

import pytest

from frauddemo_operator import builders, handlers, models
from frauddemo_testkit.testing import TWO_STORES, wait_for

pytest_plugins = ("frauddemo_testkit.pytest_plugin",)


def expected_names(name: str, kube_ns: str, raw: dict) -> dict[str, set[str]]:
    kids = builders.desired(builders.Owner(name, kube_ns, "-"), models.parse(name, raw), service_monitors=True)
    out: dict[str, set[str]] = {}
    plural = {
        "Secret": "secrets",
        "ConfigMap": "configmaps",
        "Service": "services",
        "StatefulSet": "statefulsets",
        "Deployment": "deployments",
        "NetworkPolicy": "networkpolicies",
        "ServiceMonitor": "servicemonitors",
    }
    for c in kids:
        out.setdefault(plural[c["kind"]], set()).add(c["metadata"]["name"])
    return out


def test_create_makes_every_child_and_reports_ready(kube_cluster, kube_ns):
    fd = kube_cluster.apply_fd(kube_ns, "demo", TWO_STORES)
    st = kube_cluster.wait_phase(kube_ns, "demo", "Ready")
    want = expected_names("demo", kube_ns, TWO_STORES)
    assert {k: v for k, v in kube_cluster.children(kube_ns).items() if v} == want
    assert st["storesReady"] == "2/2" and st["workloadsReady"] == "6/6"
    assert st["stores"] == [
        {"name": "a", "replicas": 2, "readyReplicas": 2, "ready": True},
        {"name": "b", "replicas": 2, "readyReplicas": 2, "ready": True},
    ]
    conds = {c["type"]: c for c in st["conditions"]}
    assert set(conds) == {"Ready", "StoresReady", "ReplicationHealthy", "Degraded", "SpecApplied"}
    assert conds["SpecApplied"]["status"] == "True"
    assert conds["Ready"]["status"] == "True" and conds["StoresReady"]["status"] == "True"
    assert conds["Degraded"]["status"] == "False"
    for c in conds.values():
        assert c["observedGeneration"] == 1 and c["lastTransitionTime"] and c["reason"] and c["message"]
    uid = fd["metadata"]["uid"]
    for plural, names in want.items():
        for name in names:
            obj = kube_cluster.emu.get(plural, kube_ns, name)
            assert obj["metadata"]["ownerReferences"][0]["uid"] == uid
    # generated passwords: one per store, different, never in any other object
    pw = {s: kube_cluster.emu.get("secrets", kube_ns, f"demo-store-{s}-auth")["stringData"]["password"] for s in "ab"}
    assert len(set(pw.values())) == 2 and all(len(p) >= 24 for p in pw.values())
    for plural in ("configmaps", "statefulsets", "deployments", "services"):
        for obj in kube_cluster.emu.list(plural, kube_ns):
            assert not any(p in str(obj) for p in pw.values()), obj["metadata"]["name"]
    # kopf's finalizer, which its timers require: the operator removes it on deletion (the delete test),
    # and the chart's pre-delete hook deletes FraudDemos while the operator still runs
    assert kube_cluster.fd(kube_ns, "demo")["metadata"].get("finalizers") == [handlers.FINALIZER]
    # a Normal event says what was done
    assert any(e.get("reason") == "Provisioned" for e in kube_cluster.events(kube_ns))


def test_update_patches_only_the_children_that_change(kube_cluster, kube_ns):
    kube_cluster.apply_fd(kube_ns, "demo", TWO_STORES)
    kube_cluster.wait_phase(kube_ns, "demo", "Ready")
    mark = kube_cluster.mark()
    kube_cluster.patch_fd(kube_ns, "demo", {"spec": {"pos": {"rate": 9}}})
    wait_for(lambda: kube_cluster.reconciled(kube_ns, "demo"), what="update reconciled")
    st = kube_cluster.wait_phase(kube_ns, "demo", "Ready")
    assert st["observedGeneration"] == 2
    child_writes = {
        (m, p.rsplit("/", 1)[-1])
        for m, p in kube_cluster.writes_since(mark)
        if "/frauddemos/" not in p and not p.endswith("/events")
    }
    assert child_writes == {("PATCH", "demo-pos-a"), ("PATCH", "demo-pos-b")}
    args = kube_cluster.emu.get("deployments", kube_ns, "demo-pos-a")["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    assert args[-2:] == ["--rate", "9"]
    # a store's replicas: only its StatefulSet changes
    mark = kube_cluster.mark()
    kube_cluster.patch_fd(kube_ns, "demo", {"spec": {"stores": [{"name": "a", "replicas": 3}, {"name": "b"}]}})
    st = wait_for(
        lambda: (s := kube_cluster.reconciled(kube_ns, "demo")) and s["stores"][0]["replicas"] == 3 and s,
        what="replicas reconciled",
    )
    child_writes = {
        (m, p.rsplit("/", 1)[-1])
        for m, p in kube_cluster.writes_since(mark)
        if "/frauddemos/" not in p and not p.endswith(("/status", "/events"))
    }
    assert child_writes == {("PATCH", "demo-store-a")}
    assert kube_cluster.emu.get("statefulsets", kube_ns, "demo-store-a")["spec"]["replicas"] == 3
    kube_cluster.wait_phase(kube_ns, "demo", "Ready")


def test_adding_and_removing_a_store(kube_cluster, kube_ns):
    three = {"stores": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}
    kube_cluster.apply_fd(kube_ns, "demo", TWO_STORES)
    kube_cluster.wait_phase(kube_ns, "demo", "Ready")
    kube_cluster.patch_fd(kube_ns, "demo", {"spec": three})
    kube_cluster.wait_phase(kube_ns, "demo", "Ready")
    assert {k: v for k, v in kube_cluster.children(kube_ns).items() if v} == expected_names("demo", kube_ns, three)
    assert kube_cluster.status(kube_ns, "demo")["storesReady"] == "3/3"
    detector = kube_cluster.emu.get("deployments", kube_ns, "demo-detector")["spec"]["template"]["spec"]["containers"][
        0
    ]
    assert "c=redis://detector@demo-store-c:6379" in detector["args"]
    # removing store b removes its children and every link that touched it
    kube_cluster.patch_fd(
        kube_ns, "demo", {"spec": {"stores": [{"name": "a"}, {"name": "c"}], "pos": {"hacked": {"store": "c"}}}}
    )
    st = kube_cluster.wait_phase(kube_ns, "demo", "Ready")
    assert st["storesReady"] == "2/2"
    kids = kube_cluster.children(kube_ns)
    assert not any(
        "store-b" in n or "sync-b" in n or n.endswith("-b") or "pos-b" in n for names in kids.values() for n in names
    ), kids
    assert kids["deployments"] >= {"demo-sync-a-c", "demo-sync-c-a", "demo-hacked-pos"}
    assert (
        kube_cluster.emu.get("deployments", kube_ns, "demo-hacked-pos")["spec"]["template"]["spec"]["containers"][0][
            "args"
        ][2]
        == "c"
    )


def test_storage_change_recreates_the_statefulset(kube_cluster, kube_ns):
    kube_cluster.apply_fd(kube_ns, "demo", TWO_STORES)
    kube_cluster.wait_phase(kube_ns, "demo", "Ready")
    uid = kube_cluster.emu.get("statefulsets", kube_ns, "demo-store-a")["metadata"]["uid"]
    kube_cluster.patch_fd(
        kube_ns, "demo", {"spec": {"stores": [{"name": "a", "storage": {"size": "1Gi"}}, {"name": "b"}]}}
    )
    sts = wait_for(
        lambda: (
            (o := kube_cluster.emu.get("statefulsets", kube_ns, "demo-store-a")) and o["metadata"]["uid"] != uid and o
        ),
        what="statefulset recreated",
    )
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "1Gi"
    kube_cluster.wait_phase(kube_ns, "demo", "Ready")


def test_delete_cascades_by_owner_references(kube_cluster, kube_ns):
    kube_cluster.apply_fd(kube_ns, "demo", TWO_STORES)
    kube_cluster.apply_fd(kube_ns, "other", TWO_STORES)
    kube_cluster.wait_phase(kube_ns, "demo", "Ready")
    kube_cluster.wait_phase(kube_ns, "other", "Ready")
    kube_cluster.delete_fd(kube_ns, "demo")
    wait_for(
        lambda: not any(n.startswith("demo-") for names in kube_cluster.children(kube_ns).values() for n in names),
        what="children collected",
    )
    assert kube_cluster.fd(kube_ns, "demo") is None
    # nothing recreated the children behind the garbage collector's back, and the neighbour is untouched
    import time

    time.sleep(0.5)
    left = kube_cluster.children(kube_ns)
    assert not any(n.startswith("demo-") for names in left.values() for n in names)
    assert {k: v for k, v in left.items() if v} == expected_names("other", kube_ns, TWO_STORES)
    assert kube_cluster.status(kube_ns, "other")["phase"] == "Ready"


@pytest.mark.parametrize(
    "switch",
    [
        {"security": {"networkPolicies": False}},
        {"dashboard": {"enabled": False}},
        {"monitoring": {"serviceMonitor": False}},
        {"pos": {"enabled": False, "hacked": {"enabled": False}}},
    ],
)
def test_switching_parts_off_removes_them(kube_cluster, kube_ns, switch):
    kube_cluster.apply_fd(kube_ns, "demo", TWO_STORES)
    kube_cluster.wait_phase(kube_ns, "demo", "Ready")
    kube_cluster.patch_fd(kube_ns, "demo", {"spec": switch})
    raw = {**TWO_STORES, **switch}
    wait_for(
        lambda: {k: v for k, v in kube_cluster.children(kube_ns).items() if v} == expected_names("demo", kube_ns, raw),
        what="children match the switches",
    )
    kube_cluster.wait_phase(kube_ns, "demo", "Ready")
