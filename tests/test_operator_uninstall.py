"""`frauddemo delete-demos` (the chart's pre-delete hook): it deletes every FraudDemo of the namespaces it
is given and waits until the operator has removed its finalizer; it names what is left, and why, when a
FraudDemo's finalizer is never removed (no operator), instead of waiting for ever; bad input is refused."""

from __future__ import annotations

import argparse
import time

import httpx
import pytest

from frauddemo_operator import cli, crd, handlers, uninstall
from frauddemo_testkit.emulator import EmulatorThread
from frauddemo_testkit.testing import FD_PATH, TWO_STORES, wait_for

pytest_plugins = ("frauddemo_testkit.pytest_plugin",)


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    cli.add_commands(p.add_subparsers())
    return p.parse_args(["delete-demos", *argv])


def test_every_fraud_demo_of_the_namespace_is_deleted_and_waited_for(kube_cluster, kube_ns, tmp_path, capsys):
    other = kube_ns + "-other"
    for name in ("one", "two"):
        kube_cluster.apply_fd(kube_ns, name, TWO_STORES)
    kube_cluster.apply_fd(other, "keep", TWO_STORES)
    for ns, name in ((kube_ns, "one"), (kube_ns, "two"), (other, "keep")):
        kube_cluster.wait_phase(ns, name, "Ready")
        assert kube_cluster.fd(ns, name)["metadata"]["finalizers"] == [handlers.FINALIZER]
    kubeconfig = kube_cluster.emu.kubeconfig(tmp_path / "kc")
    try:
        args = parse("--namespace", kube_ns, "--timeout", "30", "--kubeconfig", kubeconfig)
        assert args.fn(args) == 0
        out = capsys.readouterr().out
        assert f"FraudDemo {kube_ns}/one is gone" in out and f"FraudDemo {kube_ns}/two is gone" in out
        assert f"2 FraudDemo(s) deleted in {kube_ns}" in out
        assert kube_cluster.emu.list("frauddemos", kube_ns) == []
        wait_for(lambda: not any(kube_cluster.children(kube_ns).values()), what="the children collected")
        # another namespace is left alone
        assert kube_cluster.status(other, "keep")["phase"] == "Ready"
        # nothing to delete: done at once
        assert args.fn(args) == 0
        assert f"0 FraudDemo(s) deleted in {kube_ns}" in capsys.readouterr().out
    finally:
        kube_cluster.delete_fd(other, "keep")


def test_a_finalizer_no_operator_removes_is_reported_after_the_timeout(tmp_path, capsys):
    with EmulatorThread() as emu, httpx.Client(base_url=emu.url, timeout=30) as http:
        assert http.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd.load()).status_code == 201
        body = {
            "apiVersion": crd.API_VERSION,
            "kind": crd.KIND,
            "metadata": {"name": "orphan", "finalizers": [handlers.FINALIZER]},
            "spec": TWO_STORES,
        }
        assert http.post(FD_PATH.format(ns="shop"), json=body).status_code == 201
        args = parse("--namespace", "shop", "--timeout", "1", "--kubeconfig", emu.kubeconfig(tmp_path / "kc"))
        t0 = time.monotonic()
        assert args.fn(args) == 1
        assert time.monotonic() - t0 < 10
        err = capsys.readouterr().err
        assert "1 FraudDemo(s) still there 1 s after their deletion" in err
        assert f"FraudDemo shop/orphan still has the operator's finalizer {handlers.FINALIZER}" in err
        assert "no FraudDemo operator removed it" in err and "kubectl patch fd orphan -n shop" in err
        fd = emu.get("frauddemos", "shop", "orphan")
        assert fd["metadata"]["deletionTimestamp"]  # deleted, held by the finalizer: nothing removed it by hand


def test_other_finalizers_and_a_recreated_object_are_told_apart():
    meta = {"namespace": "n", "name": "x", "deletionTimestamp": "2026-01-01T00:00:00Z"}
    assert "other finalizers: example.com/hold" in uninstall.why_left(
        {"metadata": {**meta, "finalizers": ["example.com/hold"]}}
    )
    assert "not being deleted" in uninstall.why_left({"metadata": {"namespace": "n", "name": "x"}})


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "no namespace given"),
        (["--namespace", "Shop_A"], "'Shop_A' is not a namespace name"),
        (["--namespace=a-"], "'a-' is not a namespace name"),
        (["--namespace", "a" * 64], "is not a namespace name"),
        (["--namespace", "shop", "--timeout", "0"], "the timeout must be a positive number"),
        (["--namespace", "shop", "--timeout", "nan"], "the timeout must be a positive number"),
    ],
)
def test_bad_input_is_refused_before_any_api_call(argv, message, capsys):
    args = parse(*argv, "--kubeconfig", "/nonexistent/kubeconfig")
    assert args.fn(args) == 2
    assert message in capsys.readouterr().err


def test_an_unreachable_api_is_an_error_not_a_hang(tmp_path, capsys):
    from frauddemo.servers import free_port

    kc = tmp_path / "kc"
    kc.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: x\n"
        f"clusters: [{{name: x, cluster: {{server: 'http://127.0.0.1:{free_port()}'}}}}]\n"
        "users: [{name: x, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: x, user: x}}]\n"
    )
    args = parse("--namespace", "shop", "--timeout", "2", "--kubeconfig", str(kc))
    t0 = time.monotonic()
    assert args.fn(args) == 1  # retried (a transient error) until the timeout, then reported
    assert time.monotonic() - t0 < 10
    assert "frauddemo delete-demos: error:" in capsys.readouterr().err


def test_a_transient_api_error_is_retried_and_no_crd_means_nothing_to_delete(tmp_path, capsys):
    with EmulatorThread() as emu:
        args = parse("--namespace", "shop", "--timeout", "10", "--kubeconfig", emu.kubeconfig(tmp_path / "kc"))
        assert args.fn(args) == 0  # no FraudDemo CRD: nothing to delete
        assert "0 FraudDemo(s) deleted in shop" in capsys.readouterr().out
        with httpx.Client(base_url=emu.url, timeout=30) as http:
            assert (
                http.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd.load()).status_code == 201
            )
            body = {"apiVersion": crd.API_VERSION, "kind": crd.KIND, "metadata": {"name": "x"}, "spec": TWO_STORES}
            assert http.post(FD_PATH.format(ns="shop"), json=body).status_code == 201
        emu.fail("GET", "frauddemos", 503, times=2)
        mark = len(emu.requests())
        assert args.fn(args) == 0
        out = capsys.readouterr().out
        assert "listing FraudDemos in shop failed (503" in out and "FraudDemo shop/x is gone" in out
        # what it asked the API for is what the chart's hook Role grants (uninstall.CALLS)
        calls = {(m, p.split("?")[0].rsplit("/", 1)[-1]) for m, p, *_ in emu.requests()[mark:] if "/frauddemos" in p}
        assert calls == {("GET", "frauddemos"), ("DELETE", "x")}
        assert uninstall.CALLS == [(crd.GROUP, "frauddemos", ["list", "delete"])]
