"""A password Secret that exists without a usable `password` (the key removed or emptied by hand, a value
that is not base64 text, or the Secret written by another tool) is drift, repaired like a deleted one: a new
password, the ACL Secret updated before any pod restarts onto it, and a Warning event naming the Secret.
Before, the ACL rendering raised KeyError('password') and kopf retried it every minute with a traceback."""

from __future__ import annotations

import json
import logging

import pytest

from frauddemo import acl
from frauddemo_operator import builders
from frauddemo_operator.reconcile import b64, secret_values
from frauddemo_testkit.testing import TWO_STORES, wait_for

pytest_plugins = ("frauddemo_testkit.pytest_plugin",)

WORKLOADS = ("statefulsets", "deployments")


def password(kube_cluster, ns, name) -> str | None:
    return secret_values(kube_cluster.emu.get("secrets", ns, name)).get(builders.PASSWORD_KEY) or None


def acl_text(kube_cluster, ns, store) -> str:
    return secret_values(kube_cluster.emu.get("secrets", ns, builders.acl_secret("demo", store)))[builders.ACL_KEY]


def warnings_about(kube_cluster, ns, secret) -> list[dict]:
    return [e for e in kube_cluster.events(ns) if e.get("type") == "Warning" and secret in e.get("message", "")]


@pytest.fixture
def ready_demo(kube_cluster, kube_ns):
    kube_cluster.apply_fd(kube_ns, "demo", TWO_STORES)
    kube_cluster.wait_phase(kube_ns, "demo", "Ready")
    return kube_ns


@pytest.fixture
def no_tracebacks(caplog):
    caplog.set_level(logging.INFO)
    yield
    bad = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage() or "KeyError" in r.getMessage()]
    assert not bad, [(r.name, r.getMessage()[:300]) for r in bad]


BROKEN = {
    "key removed": {"data": {builders.PASSWORD_KEY: None}, "stringData": {builders.PASSWORD_KEY: None}},
    "empty": {"data": {builders.PASSWORD_KEY: ""}, "stringData": {builders.PASSWORD_KEY: None}},
    "not base64": {"data": {builders.PASSWORD_KEY: "%%% not base64 %%%"}, "stringData": {builders.PASSWORD_KEY: None}},
    "not text": {"data": {builders.PASSWORD_KEY: "//79/g=="}, "stringData": {builders.PASSWORD_KEY: None}},
}


@pytest.mark.parametrize("how", list(BROKEN))
def test_a_store_secret_without_its_password_is_repaired_acl_first(kube_cluster, ready_demo, how, no_tracebacks):
    ns = ready_demo
    name, acl_name = builders.store_secret("demo", "b"), builders.acl_secret("demo", "b")
    old = password(kube_cluster, ns, name)
    mark = kube_cluster.mark()
    kube_cluster.emu.patch("secrets", ns, name, BROKEN[how])
    new = wait_for(lambda: (p := password(kube_cluster, ns, name)) and p != old and p, 5.0, what="a new password")
    assert len(new) >= 24
    wait_for(lambda: acl.password_hash(new) in acl_text(kube_cluster, ns, "b"), 5.0, what="the new password in the ACL")
    assert acl.password_hash(old) not in acl_text(kube_cluster, ns, "b")
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
        (i for i, (m, plural, n, _) in enumerate(log) if m == "PATCH" and plural == "secrets" and n == acl_name), None
    )
    restarts = [
        i
        for i, (m, plural, _, body) in enumerate(log)
        if m == "PATCH" and plural in WORKLOADS and builders.A_RESTARTED_AT in json.dumps(body)
    ]
    assert acl_patch is not None and restarts and min(restarts) > acl_patch, (acl_patch, restarts)
    # only the store's own pods read its admin password
    assert {log[i][2] for i in restarts} == {"demo-store-b"}
    events = wait_for(lambda: warnings_about(kube_cluster, ns, name), 5.0, what="a Warning event naming the Secret")
    assert events[0]["involvedObject"]["name"] == "demo" and events[0]["reason"] == "SecretRepaired"
    # repaired once: the repair's own write is not drift again
    assert sum(1 for m, plural, n, b in log if m == "PATCH" and plural == "secrets" and n == name) == 1
    assert kube_cluster.wait_phase(ns, "demo", "Ready")


def test_a_role_secret_without_its_password_is_repaired_and_its_users_restart(kube_cluster, ready_demo, no_tracebacks):
    ns = ready_demo
    assert not [e for e in kube_cluster.events(ns) if e.get("reason") == "SecretRepaired"], "a healthy demo repaired"
    name = builders.role_secret("demo", "a", "pos")
    old = password(kube_cluster, ns, name)
    kube_cluster.emu.patch("secrets", ns, name, {"data": {builders.PASSWORD_KEY: None}})
    new = wait_for(lambda: (p := password(kube_cluster, ns, name)) and p != old and p, 5.0, what="a new password")
    wait_for(lambda: acl.password_hash(new) in acl_text(kube_cluster, ns, "a"), 5.0, what="the new password in the ACL")
    wait_for(
        lambda: (
            builders.A_RESTARTED_AT
            in (
                kube_cluster.emu.get("deployments", ns, "demo-pos-a")["spec"]["template"]["metadata"].get("annotations")
                or {}
            )
        ),
        5.0,
        what="POS a restarted",
    )
    wait_for(lambda: warnings_about(kube_cluster, ns, name), 5.0, what="a Warning event naming the Secret")


def test_a_secret_left_by_another_tool_without_a_password_is_repaired_on_create(kube_cluster, kube_ns, no_tracebacks):
    """The full reconcile's path: the Secret is there before the FraudDemo, with its labels and no password."""
    ns = kube_ns
    name = builders.store_secret("demo", "a")
    kube_cluster.emu.create(
        "secrets",
        ns,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": name,
                "labels": {builders.L_INSTANCE: "demo", builders.L_MANAGED_BY: builders.MANAGER},
            },
            "data": {"other": b64("x")},
        },
    )
    kube_cluster.apply_fd(ns, "demo", TWO_STORES)
    kube_cluster.wait_phase(ns, "demo", "Ready")
    new = password(kube_cluster, ns, name)
    assert new and acl.password_hash(new) in acl_text(kube_cluster, ns, "a")
    wait_for(lambda: warnings_about(kube_cluster, ns, name), 5.0, what="a Warning event naming the Secret")


def test_a_secret_emptied_while_no_event_reached_the_operator_is_repaired_by_the_next_reconcile(
    kube_cluster, ready_demo, no_tracebacks
):
    """A resync (here: a spec change) finds the Secret without its password and repairs it."""
    ns = ready_demo
    name = builders.store_secret("demo", "a")
    rt = kube_cluster.op.runtime
    paused = rt.on_child_event

    async def ignore(etype, body):  # the watch event lost (an operator restart, a dropped watch)
        return None

    rt.on_child_event = ignore
    try:
        kube_cluster.emu.patch("secrets", ns, name, BROKEN["key removed"])
        kube_cluster.patch_fd(ns, "demo", {"spec": {"pos": {"rate": 3}}})
        new = wait_for(lambda: password(kube_cluster, ns, name), 10.0, what="a new password")
    finally:
        rt.on_child_event = paused
    wait_for(lambda: acl.password_hash(new) in acl_text(kube_cluster, ns, "a"), 5.0, what="the new password in the ACL")
    wait_for(
        lambda: (
            builders.A_RESTARTED_AT
            in (
                kube_cluster.emu.get("statefulsets", ns, "demo-store-a")["spec"]["template"]["metadata"].get(
                    "annotations"
                )
                or {}
            )
        ),
        5.0,
        what="store a restarted",
    )
    wait_for(lambda: warnings_about(kube_cluster, ns, name), 5.0, what="a Warning event naming the Secret")
