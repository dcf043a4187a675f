"""Drift: a child deleted or edited by hand is restored within seconds; what is not drift is left alone."""

from __future__ import annotations

import time

import pytest

from frauddemo_operator import builders, models, reconcile
from frauddemo_testkit.testing import TWO_STORES, wait_for

pytest_plugins = ("frauddemo_testkit.pytest_plugin",)

RESTORE_WITHIN = 5.0


# --- what counts as drift (pure) -----------------------------------------------------------------------


def deployment():
    kids = builders.desired(builders.Owner("demo", "ns", "u"), models.parse("demo", TWO_STORES), service_monitors=False)
    return next(c for c in kids if c["kind"] == "Deployment")


def test_server_defaults_and_extra_fields_are_not_drift():
    d = deployment()
    observed = {**d, "status": {"readyReplicas": 1}}
    observed["metadata"] = {**d["metadata"], "uid": "x", "resourceVersion": "7", "annotations": {"note": "hi"}}
    observed["spec"] = {**d["spec"], "progressDeadlineSeconds": 600}
    ctr = {**d["spec"]["template"]["spec"]["containers"][0], "terminationMessagePath": "/dev/termination-log"}
    observed["spec"]["template"] = {
        **d["spec"]["template"],
        "spec": {**d["spec"]["template"]["spec"], "containers": [ctr], "dnsPolicy": "ClusterFirst"},
    }
    assert not reconcile.drifted(d, observed)


def test_quantities_compare_by_value():
    assert reconcile.matches("500m", "0.5") and reconcile.matches("1Gi", "1024Mi") and reconcile.matches("1", "1000m")
    assert not reconcile.matches("500m", "0.6") and not reconcile.matches("a", "b")
    assert reconcile.quantity("64Mi") == 64 * 2**20 and reconcile.quantity("banana") is None


def test_edits_are_drift():
    d = deployment()
    for mutate in (
        lambda o: o["spec"].__setitem__("replicas", 3),
        lambda o: o["metadata"]["labels"].pop("app.kubernetes.io/instance"),
        lambda o: o["spec"]["template"]["spec"]["containers"][0]["args"].append("--evil"),
        lambda o: o["spec"]["template"]["spec"]["containers"].append({"name": "sidecar"}),
        lambda o: o["metadata"].__setitem__("ownerReferences", []),
    ):
        import copy

        o = copy.deepcopy(d)
        mutate(o)
        assert reconcile.drifted(d, o)


def test_secret_data_is_never_compared():
    kids = builders.desired(builders.Owner("demo", "ns", "u"), models.parse("demo", TWO_STORES), service_monitors=False)
    secret = next(c for c in kids if c["kind"] == "Secret")
    assert not reconcile.drifted(secret, {**secret, "data": {"password": "c29tZXRoaW5n"}})
    assert reconcile.managed_fields(secret).keys() == {"metadata", "type"}


def test_immutable_fields_need_a_recreate():
    kids = builders.desired(builders.Owner("demo", "ns", "u"), models.parse("demo", TWO_STORES), service_monitors=False)
    sts = next(c for c in kids if c["kind"] == "StatefulSet")
    with_pvc = builders.desired(
        builders.Owner("demo", "ns", "u"),
        models.parse("demo", {"stores": [{"name": "a", "storage": {"size": "1Gi"}}, {"name": "b"}]}),
        service_monitors=False,
    )
    sts_pvc = next(c for c in with_pvc if c["kind"] == "StatefulSet")
    assert reconcile.needs_recreate(sts_pvc, sts) and reconcile.needs_recreate(sts, sts_pvc)
    assert not reconcile.needs_recreate(sts, {**sts, "spec": {**sts["spec"], "replicas": 5}})


# --- repair, end to end -------------------------------------------------------------------------------


@pytest.fixture
def ready_demo(kube_cluster, kube_ns):
    kube_cluster.apply_fd(kube_ns, "demo", TWO_STORES)
    kube_cluster.wait_phase(kube_ns, "demo", "Ready")
    return kube_ns


@pytest.mark.parametrize(
    "plural, name",
    [
        ("statefulsets", "demo-store-a"),
        ("deployments", "demo-sync-b-a"),
        ("deployments", "demo-detector"),
        ("services", "demo-store-b"),
        ("services", "demo-store-a-headless"),
        ("configmaps", "demo-store-a-config"),
        ("configmaps", "demo-dashboard"),
        ("networkpolicies", "demo-pos-a-egress"),
        ("servicemonitors", "demo"),
    ],
)
def test_deleted_child_is_restored(kube_cluster, ready_demo, plural, name):
    kube_ns = ready_demo
    before = kube_cluster.emu.get(plural, kube_ns, name)
    t0 = time.monotonic()
    kube_cluster.emu.delete(plural, kube_ns, name)
    after = wait_for(
        lambda: kube_cluster.emu.get(plural, kube_ns, name), RESTORE_WITHIN, what=f"{plural}/{name} restored"
    )
    assert time.monotonic() - t0 < RESTORE_WITHIN
    assert after["metadata"]["uid"] != before["metadata"]["uid"]
    assert not reconcile.drifted(before, after)
    wait_for(
        lambda: any(
            e.get("reason") == "Repaired" and name in e.get("message", "") for e in kube_cluster.events(kube_ns)
        ),
        what="a Repaired event",
    )
    kube_cluster.wait_phase(kube_ns, "demo", "Ready")


@pytest.mark.parametrize(
    "plural, name, patch, check",
    [
        ("deployments", "demo-pos-a", {"spec": {"replicas": 4}}, lambda o: o["spec"]["replicas"] == 1),
        (
            "statefulsets",
            "demo-store-b",
            {"spec": {"template": {"spec": {"containers": [{"name": "store", "image": "evil"}]}}}},
            lambda o: o["spec"]["template"]["spec"]["containers"][0]["image"] == "valkey/valkey:8.1",
        ),
        (
            "services",
            "demo-detector",
            {"spec": {"ports": [{"name": "http", "port": 1234}]}},
            lambda o: o["spec"]["ports"][0]["port"] == 8080,
        ),
        (
            "configmaps",
            "demo-store-a-config",
            {"data": {"store.conf": "appendonly no\n"}},
            lambda o: "appendonly yes" in o["data"]["store.conf"],
        ),
        (
            "networkpolicies",
            "demo-store-a-ingress",
            {"spec": {"ingress": [{}]}},
            lambda o: (o["spec"]["ingress"][0].get("ports") or [{}])[0].get("port") == 6379,
        ),
        (
            "deployments",
            "demo-sync-a-b",
            {"metadata": {"labels": {"app.kubernetes.io/component": "other"}}},
            lambda o: o["metadata"]["labels"]["app.kubernetes.io/component"] == "syncer",
        ),
    ],
)
def test_edited_child_is_restored(kube_cluster, ready_demo, plural, name, patch, check):
    kube_ns = ready_demo
    kube_cluster.emu.patch(plural, kube_ns, name, patch)
    wait_for(
        lambda: check(kube_cluster.emu.get(plural, kube_ns, name)), RESTORE_WITHIN, what=f"{plural}/{name} restored"
    )


def test_extra_annotations_by_others_are_left_alone(kube_cluster, ready_demo):
    kube_ns = ready_demo
    kube_cluster.emu.patch("deployments", kube_ns, "demo-detector", {"metadata": {"annotations": {"team": "fraud"}}})
    time.sleep(0.5)
    assert kube_cluster.emu.get("deployments", kube_ns, "demo-detector")["metadata"]["annotations"] == {"team": "fraud"}


def test_deleted_secret_gets_a_new_password_and_its_users_restart(kube_cluster, ready_demo):
    kube_ns = ready_demo
    old = kube_cluster.emu.get("secrets", kube_ns, "demo-store-b-auth")["stringData"]["password"]
    kube_cluster.emu.delete("secrets", kube_ns, "demo-store-b-auth")
    new = wait_for(
        lambda: kube_cluster.emu.get("secrets", kube_ns, "demo-store-b-auth"), RESTORE_WITHIN, what="secret restored"
    )
    assert new["stringData"]["password"] != old
    users = {
        "statefulsets": ["demo-store-b"],
        "deployments": ["demo-sync-a-b", "demo-sync-b-a", "demo-pos-b", "demo-hacked-pos", "demo-detector"],
    }
    for plural, names in users.items():
        for name in names:
            wait_for(
                lambda: (
                    builders.A_RESTARTED_AT
                    in (
                        kube_cluster.emu.get(plural, kube_ns, name)["spec"]["template"]["metadata"].get("annotations")
                        or {}
                    )
                ),
                RESTORE_WITHIN,
                what=f"{name} restarted",
            )
    for name in ("demo-pos-a",):
        assert builders.A_RESTARTED_AT not in (
            kube_cluster.emu.get("deployments", kube_ns, name)["spec"]["template"]["metadata"].get("annotations") or {}
        )
    kube_cluster.wait_phase(kube_ns, "demo", "Ready")
