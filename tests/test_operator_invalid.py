"""Specs that pass the schema but make no sense: a False condition with the reason, an Event, no
children, and no retry loop; fixing the spec deploys it. Schema violations never reach the operator."""

from __future__ import annotations

import time

import pytest

from frauddemo_operator import models
from frauddemo_testkit.testing import TWO_STORES, wait_for

pytest_plugins = ("frauddemo_testkit.pytest_plugin",)


@pytest.mark.parametrize(
    "name, raw, reason",
    [
        ("demo", {"stores": [{"name": "a"}, {"name": "a"}]}, "DuplicateStoreNames"),
        ("demo", {"stores": [{"name": "a"}, {"name": "b"}], "pos": {"hacked": {"store": "c"}}}, "UnknownHackedStore"),
        ("x" * 31, TWO_STORES, "NameTooLong"),
        ("1demo", TWO_STORES, "InvalidName"),
        ("demo.a", TWO_STORES, "InvalidName"),
        ("demo-", TWO_STORES, "InvalidName"),
        ("demo", {**TWO_STORES, "detection": {"alertScore": 40, "reviewScore": 40}}, "ScoresOutOfOrder"),
        (
            "demo",
            {
                **TWO_STORES,
                "pos": {"hacked": {"attackMix": {"noPhoto": 0, "mismatchedPhoto": 0, "duplicateReceipt": 0}}},
            },
            "EmptyAttackMix",
        ),
        ("demo", {"stores": [{"name": "a"}]}, "SchemaViolation"),
    ],
)
def test_sense_checks(name, raw, reason):
    with pytest.raises(models.InvalidSpec) as e:
        models.parse(name, raw)
    assert e.value.reason == reason and e.value.message


def test_sensible_variants_pass():
    assert (
        models.parse("demo", {**TWO_STORES, "pos": {"hacked": {"enabled": False, "store": "nowhere"}}}).hacked_store
        is None
    )
    assert models.parse("x" * 30, TWO_STORES).hacked_store == "b"
    assert models.parse("demo", {**TWO_STORES, "pos": {"hacked": {"store": "a"}}}).hacked_store == "a"


def cond(st, t):
    return next(c for c in st["conditions"] if c["type"] == t)


def operator_requests(kube_cluster, kube_ns: str, mark: int) -> list[tuple[str, str]]:
    return [(m, p) for m, p, *_ in kube_cluster.emu.requests()[mark:] if f"/namespaces/{kube_ns}/" in p and m != "GET"]


def test_nonsense_spec_is_reported_once_and_not_retried(kube_cluster, kube_ns):
    kube_cluster.apply_fd(kube_ns, "dup", {"stores": [{"name": "a"}, {"name": "a"}]})
    st = kube_cluster.wait_phase(kube_ns, "dup", "Invalid")
    ready = cond(st, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "DuplicateStoreNames" and "repeated: a" in ready["message"]
    wait_for(
        lambda: [
            e
            for e in kube_cluster.events(kube_ns)
            if e.get("reason") == "DuplicateStoreNames" and e.get("type") == "Warning"
        ],
        what="a Warning event",
    )
    assert not any(kube_cluster.children(kube_ns).values())
    # no retry loop: nothing more happens to this FraudDemo while its spec stays the same
    mark = kube_cluster.mark()
    time.sleep(1.5)
    assert operator_requests(kube_cluster, kube_ns, mark) == []
    assert len([e for e in kube_cluster.events(kube_ns) if e.get("reason") == "DuplicateStoreNames"]) == 1
    # fixing the spec deploys it
    kube_cluster.patch_fd(kube_ns, "dup", {"spec": {"stores": [{"name": "a"}, {"name": "b"}]}})
    st = kube_cluster.wait_phase(kube_ns, "dup", "Ready")
    assert cond(st, "Ready")["reason"] == "AllReady" and st["observedGeneration"] == 2


def test_a_ready_demo_made_invalid_keeps_running(kube_cluster, kube_ns):
    kube_cluster.apply_fd(kube_ns, "demo", TWO_STORES)
    kube_cluster.wait_phase(kube_ns, "demo", "Ready")
    before = kube_cluster.children(kube_ns)
    kube_cluster.patch_fd(kube_ns, "demo", {"spec": {"pos": {"hacked": {"store": "z"}}}})
    st = kube_cluster.wait_phase(kube_ns, "demo", "Invalid")
    assert cond(st, "Ready")["reason"] == "UnknownHackedStore"
    assert kube_cluster.children(kube_ns) == before  # nothing torn down by a typo
    kube_cluster.patch_fd(kube_ns, "demo", {"spec": {"pos": {"hacked": {"store": "a"}}}})
    kube_cluster.wait_phase(kube_ns, "demo", "Ready")
    args = kube_cluster.emu.get("deployments", kube_ns, "demo-hacked-pos")["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    assert args[:3] == ["hacked-pos", "--store", "a"]


def test_schema_violations_are_rejected_by_the_api(kube_cluster, kube_ns):
    r = kube_cluster.http.post(
        f"/apis/frauddemo.io/v1alpha1/namespaces/{kube_ns}/frauddemos",
        json={
            "apiVersion": "frauddemo.io/v1alpha1",
            "kind": "FraudDemo",
            "metadata": {"name": "bad"},
            "spec": {"stores": [{"name": "a"}, {"name": "B!"}]},
        },
    )
    assert r.status_code == 422
    assert [c["field"] for c in r.json()["details"]["causes"]] == ["spec.stores[1].name"]
    assert kube_cluster.fd(kube_ns, "bad") is None
