"""Issue 16, items 7 and 8: the order of the operator's writes, read from the API's request log.

7: what pods mount (Secrets, ConfigMaps, the ACL Secret rendered from the others) is created before any
StatefulSet or Deployment, so store pods never wait in FailedMount.
8: a store Secret deleted by hand gets a new password; the ACL Secret holds it before any pod is
restarted onto it (else the restarted pods are refused by their store until the next sync).
"""

from __future__ import annotations

import json

import pytest

from frauddemo_operator import builders
from frauddemo_testkit.testing import TWO_STORES, wait_for

pytest_plugins = ("frauddemo_testkit.pytest_plugin",)

WORKLOADS = ("statefulsets", "deployments")
MOUNTED = ("secrets", "configmaps")


def test_secrets_and_configmaps_are_created_before_the_workloads(kube_cluster, kube_ns):
    mark = kube_cluster.mark()
    kube_cluster.apply_fd(kube_ns, "demo", TWO_STORES)
    kube_cluster.wait_phase(kube_ns, "demo", "Ready")
    creates = [(plural, name) for m, plural, name, _ in kube_cluster.writes(mark, kube_ns) if m == "POST"]
    first_workload = next(i for i, (plural, _) in enumerate(creates) if plural in WORKLOADS)
    late = [c for c in creates[first_workload:] if c[0] in MOUNTED]
    assert not late, f"created after the first workload ({creates[first_workload]}): {late}"
    acls = {builders.acl_secret("demo", s) for s in "ab"}
    assert acls <= {name for plural, name in creates[:first_workload] if plural == "secrets"}


@pytest.fixture
def ready_demo(kube_cluster, kube_ns):
    kube_cluster.apply_fd(kube_ns, "demo", TWO_STORES)
    kube_cluster.wait_phase(kube_ns, "demo", "Ready")
    return kube_ns


def test_a_recreated_store_secret_is_in_the_acl_before_pods_restart(kube_cluster, ready_demo):
    ns = ready_demo
    acl_name = builders.acl_secret("demo", "b")
    mark = kube_cluster.mark()
    kube_cluster.emu.delete("secrets", ns, builders.store_secret("demo", "b"))
    wait_for(
        lambda: (
            builders.A_RESTARTED_AT
            in (
                kube_cluster.emu.get("statefulsets", ns, "demo-store-b")["spec"]["template"]["metadata"].get(
                    "annotations"
                )
                or {}
            )
        ),
        5.0,
        what="store b restarted",
    )
    log = kube_cluster.writes(mark, ns)
    acl_patch = next(
        (i for i, (m, plural, name, _) in enumerate(log) if m == "PATCH" and plural == "secrets" and name == acl_name),
        None,
    )
    restarts = [
        i
        for i, (m, plural, _, body) in enumerate(log)
        if m == "PATCH" and plural in WORKLOADS and builders.A_RESTARTED_AT in json.dumps(body)
    ]
    assert acl_patch is not None, "the ACL Secret was not updated with the new password"
    assert restarts and min(restarts) > acl_patch, (acl_patch, restarts)
