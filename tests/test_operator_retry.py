"""Transient API errors: the reconcile is retried with backoff until it succeeds, and the status says
what failed meanwhile."""

from __future__ import annotations

from frauddemo_testkit.testing import TWO_STORES, wait_for

pytest_plugins = ("frauddemo_testkit.pytest_plugin",)


def test_failed_creates_are_retried_with_backoff(kube_cluster, kube_ns):
    kube_cluster.emu.fail("POST", "deployments", 503, times=2)
    mark = kube_cluster.mark()
    kube_cluster.apply_fd(kube_ns, "demo", TWO_STORES)
    st = kube_cluster.wait_phase(kube_ns, "demo", "Ready", 15)
    assert st["workloadsReady"] == "6/6"
    reqs = kube_cluster.emu.requests()[mark:]
    attempts = [
        r.time for r in reqs if r.method == "POST" and r.path == f"/apis/apps/v1/namespaces/{kube_ns}/deployments"
    ]
    # 6 deployments, 2 of the creates refused; each retry comes after a growing pause
    assert len(attempts) >= 8
    retry_at = [
        r.time
        for r in reqs
        if r.method == "GET" and r.path.startswith(f"/apis/apps/v1/namespaces/{kube_ns}/deployments/")
    ]  # a retried create finds the others existing
    assert retry_at, "the retry re-checked the children that already existed"
    assert retry_at[0] - attempts[0] >= 0.15  # backoff_base 0.2 s (±20 % jitter)
    # the failure was visible in the status meanwhile, and now it is gone
    history = kube_cluster.emu.call(
        lambda: [
            v["status"]
            for v in kube_cluster.emu.emulator.objects["frauddemo.io/v1alpha1/frauddemos", kube_ns, "demo"].history
            if v is not None and "status" in v
        ]
    )
    reasons = [c["reason"] for s in history for c in s.get("conditions", []) if c["type"] == "Ready"]
    assert "ReconcileError" in reasons and reasons[-1] == "AllReady"
    msg = next(
        c["message"]
        for s in history
        for c in s.get("conditions", [])
        if c["type"] == "Ready" and c["reason"] == "ReconcileError"
    )
    assert "503" in msg


def test_status_and_patch_failures_do_not_stick(kube_cluster, kube_ns):
    kube_cluster.apply_fd(kube_ns, "demo", TWO_STORES)
    kube_cluster.wait_phase(kube_ns, "demo", "Ready")
    kube_cluster.emu.fail("PATCH", "frauddemos", 503, times=3)
    kube_cluster.emu.hold("statefulsets", kube_ns, "demo-store-a", ready=0)
    kube_cluster.wait_phase(kube_ns, "demo", "Degraded", 10)
    kube_cluster.emu.release("statefulsets", kube_ns, "demo-store-a")
    kube_cluster.wait_phase(kube_ns, "demo", "Ready", 10)


def test_failed_repair_is_retried(kube_cluster, kube_ns):
    kube_cluster.apply_fd(kube_ns, "demo", TWO_STORES)
    kube_cluster.wait_phase(kube_ns, "demo", "Ready")
    kube_cluster.emu.fail("POST", "services", 500, times=1)
    kube_cluster.emu.delete("services", kube_ns, "demo-detector")
    # the event-driven repair hit the injected error; the operator keeps trying until it holds
    wait_for(lambda: kube_cluster.emu.get("services", kube_ns, "demo-detector"), 10, what="service restored")
