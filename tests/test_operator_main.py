"""`frauddemo operator`: settings from the environment, the CLI verb, the liveness endpoint,
namespace-restricted peering mode, and credentials taken from kubernetes_asyncio."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import socket
import time

import httpx
import pytest

from frauddemo_operator import cli, kube
from frauddemo_operator.main import OperatorThread
from frauddemo_operator.settings import Settings
from frauddemo_testkit.testing import TWO_STORES, wait_for

pytest_plugins = ("frauddemo_testkit.pytest_plugin",)


def test_settings_from_env():
    s = Settings.from_env(
        {
            "FRAUDDEMO_OPERATOR_NAMESPACES": "shop-a, shop-b",
            "FRAUDDEMO_OPERATOR_PEERING": "fd",
            "FRAUDDEMO_OPERATOR_PRIORITY": "10",
            "FRAUDDEMO_OPERATOR_LIVENESS": "",
            "FRAUDDEMO_OPERATOR_MAX_IN_FLIGHT": "4",
            "FRAUDDEMO_OPERATOR_RESYNC_SECONDS": "30",
            "FRAUDDEMO_OPERATOR_DETECTOR_URL": "http://{name}.{namespace}:1",
            "FRAUDDEMO_OPERATOR_SCANNING": "yes",
            "FRAUDDEMO_OPERATOR_LOG_LEVEL": "debug",
            "UNRELATED": "x",
        }
    )
    assert s.namespaces == ("shop-a", "shop-b") and not s.clusterwide
    assert s.peering == "fd" and not s.standalone and s.priority == 10
    assert s.liveness is None and s.max_in_flight == 4 and s.resync_seconds == 30
    assert s.detector_url == "http://{name}.{namespace}:1" and s.scanning and s.log_level == "DEBUG"
    d = Settings.from_env({})
    assert d == Settings() and d.clusterwide and d.standalone and d.liveness == "http://0.0.0.0:8081/healthz"
    with pytest.raises(ValueError, match="MAX_IN_FLIGHT"):
        Settings.from_env({"FRAUDDEMO_OPERATOR_MAX_IN_FLIGHT": "many"})
    with pytest.raises(ValueError, match="MAX_IN_FLIGHT"):
        Settings.from_env({"FRAUDDEMO_OPERATOR_MAX_IN_FLIGHT": "0"})


def test_cli_verb_and_options_override_the_environment():
    p = argparse.ArgumentParser(prog="frauddemo")
    cli.add_commands(p.add_subparsers(dest="verb", required=True))
    a = p.parse_args(["operator", "--namespace", "x", "--namespace", "y,z", "--standalone", "--liveness", ""])
    assert a.fn is cli.cmd_operator
    s = cli.settings_from_args(a, {"FRAUDDEMO_OPERATOR_PEERING": "fd", "FRAUDDEMO_OPERATOR_PRIORITY": "3"})
    assert s.namespaces == ("x", "y", "z") and s.standalone and s.liveness is None and s.priority == 3
    s = cli.settings_from_args(p.parse_args(["operator", "--peering", "grp", "--priority", "7"]), {})
    assert s.peering == "grp" and s.priority == 7 and s.clusterwide
    with pytest.raises(SystemExit):
        p.parse_args(["operator", "--peering", "a", "--standalone"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


PEERINGS = ("kopf.dev", "v1", "kopfpeerings")
PEERING_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "kopfpeerings.kopf.dev"},
    "spec": {
        "group": "kopf.dev",
        "scope": "Namespaced",
        "names": {"plural": "kopfpeerings", "singular": "kopfpeering", "kind": "KopfPeering"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
            }
        ],
    },
}


def test_namespaced_peering_operator_with_liveness(kube_cluster, kube_ns, tmp_path):
    """A second operator, restricted to one namespace, in a peering group, serving liveness."""
    http = kube_cluster.http
    if http.get("/apis/kopf.dev/v1").status_code == 404:
        assert http.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=PEERING_CRD).status_code == 201
    assert (
        http.post(
            f"/apis/kopf.dev/v1/namespaces/{kube_ns}/kopfpeerings",
            json={"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "frauddemo-test"}},
        ).status_code
        == 201
    )
    port = free_port()
    settings = dataclasses.replace(
        kube_cluster.op.settings,
        namespaces=(kube_ns,),
        peering="frauddemo-test",
        priority=5,
        liveness=f"http://127.0.0.1:{port}/healthz",
    )
    with OperatorThread(settings) as op:

        def probe():
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
            except httpx.TransportError:
                return None

        r = wait_for(probe, 10, interval=0.1, what="the liveness endpoint")
        assert r.status_code == 200 and r.json()["frauddemos"] == 0  # kopf caches probe results for 10 s
        kube_cluster.apply_fd(kube_ns, "demo", TWO_STORES)
        kube_cluster.wait_phase(kube_ns, "demo", "Ready")
        wait_for(
            lambda: (
                (op.runtime.demos.get((kube_ns, "demo")) or None)
                and op.runtime.demos[(kube_ns, "demo")].reconciled_generation == 1
            ),
            what="the peer reconciled it",
        )
        peering = wait_for(lambda: kube_cluster.emu.list(PEERINGS, kube_ns)[0].get("status"), what="peering heartbeat")
        assert peering[op.runtime.identity]["priority"] == 5
        st = op.runtime.demos[(kube_ns, "demo")]

        def polling() -> bool:
            """The detector-figures timer (every 0.25 s here) still reads the detector."""
            before = st.polled_at
            time.sleep(1.0)
            return st.polled_at is not None and st.polled_at != before

        wait_for(polling, 10, interval=0, what="the detector-figures timer running")
        # a live peer with a higher priority appears: kopf pauses, its timers too
        now = datetime.datetime.now(datetime.UTC).isoformat()
        kube_cluster.emu.patch(
            PEERINGS,
            kube_ns,
            "frauddemo-test",
            {"status": {"someone-else": {"priority": 9, "lifetime": 60, "lastseen": now}}},
        )
        wait_for(lambda: not polling(), 10, interval=0, what="the timers paused for a higher-priority peer")
        assert not polling()
        kube_cluster.emu.patch(PEERINGS, kube_ns, "frauddemo-test", {"status": {"someone-else": None}})
        wait_for(polling, 10, interval=0, what="the timers resumed")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_the_resync_timer_reconciles_until_the_fraud_demo_is_deleted(kube_cluster, kube_ns):
    """A full resync every resync_seconds (a kopf timer per FraudDemo); deleting the FraudDemo stops its
    timers, and the operator removes kopf's finalizer, so it goes away."""
    settings = dataclasses.replace(kube_cluster.op.settings, namespaces=(kube_ns,), resync_seconds=0.3)
    with OperatorThread(settings) as op:
        calls: list[tuple] = []
        real = op.runtime.resync

        async def counting(namespace, name):
            result = await real(namespace, name)
            calls.append((namespace, name, result))
            return result

        op.runtime.resync = counting
        kube_cluster.apply_fd(kube_ns, "demo", TWO_STORES)
        kube_cluster.wait_phase(kube_ns, "demo", "Ready")
        wait_for(lambda: sum(1 for c in calls if c[2] is not None) >= 2, 10, what="two resyncs")
        assert {c[:2] for c in calls} == {(kube_ns, "demo")}
        assert not any(c[2].changed for c in calls if c[2] is not None)  # nothing drifted
        kube_cluster.delete_fd(kube_ns, "demo")
        wait_for(lambda: kube_cluster.fd(kube_ns, "demo") is None, 10, what="the FraudDemo gone")
        n = len(calls)
        time.sleep(1.0)
        assert len(calls) == n  # its timers stopped


def test_credentials_come_from_kubernetes_asyncio(kube_cluster, tmp_path):
    async def go():
        cfg = await kube.load_configuration(kube_cluster.emu.kubeconfig(tmp_path / "kc"))
        info = await kube.connection_info(cfg)
        client = kube.Kube(cfg)
        try:
            assert await client.has_resource(kube.FRAUDDEMO)
            assert await client.has_resource(kube.SERVICEMONITOR)
            assert not await client.has_resource(kube.Kind("nothere.example.com/v1", "Nope", "nopes"))
            with pytest.raises(kube.NotFound):
                await client.request("GET", kube.FRAUDDEMO.path("nowhere", "nothing"))
        finally:
            await client.close()
        return info

    info = asyncio.run(go())
    assert info.server == kube_cluster.emu.url and info.scheme == "Bearer" and info.token == "emulator-token"


def test_kubeconfig_from_the_environment(kube_cluster, tmp_path, monkeypatch):
    empty = tmp_path / "empty.yaml"
    empty.write_text("apiVersion: v1\nkind: Config\nclusters: []\nusers: []\ncontexts: []\n")
    real = kube_cluster.emu.kubeconfig(tmp_path / "kc")
    monkeypatch.setenv("KUBECONFIG", f"{real}:{empty}")  # several files, merged
    cfg = asyncio.run(kube.load_configuration())
    assert cfg.host == kube_cluster.emu.url


def test_per_event_handler_successes_are_not_logged():
    import logging

    from frauddemo_operator.main import QuietEventHandlers

    f = QuietEventHandlers()

    def rec(msg, level=logging.INFO):
        return logging.LogRecord("kopf.objects", level, __file__, 1, msg, None, None)

    assert not f.filter(rec("Handler 'child-deployments' succeeded."))
    assert not f.filter(rec("Handler 'demo_event' succeeded."))
    assert not f.filter(rec("Timer 'detector-figures' succeeded."))  # every tick of every FraudDemo
    assert f.filter(rec("Timer 'resync' failed with an exception. Will retry.", logging.ERROR))
    assert f.filter(rec("Handler 'reconcile' succeeded."))
    assert f.filter(rec("Handler 'child-deployments' succeeded.", logging.WARNING))
    assert f.filter(rec("Reconciled: 3 patched"))


def test_operator_process_runs_from_the_environment_and_stops_on_sigterm(kube_cluster, kube_ns, tmp_path):
    """`frauddemo operator` as its own process (main thread, real signals), configured by the environment."""
    import os
    import signal
    import subprocess
    import sys

    port = free_port()
    env = {
        **os.environ,
        "FRAUDDEMO_OPERATOR_KUBECONFIG": kube_cluster.emu.kubeconfig(tmp_path / "kc"),
        "FRAUDDEMO_OPERATOR_NAMESPACES": kube_ns,
        "FRAUDDEMO_OPERATOR_LIVENESS": f"http://127.0.0.1:{port}/healthz",
    }
    code = (
        "import argparse, sys; from frauddemo_operator import cli; p = argparse.ArgumentParser(); "
        "cli.add_commands(p.add_subparsers()); a = p.parse_args(['operator']); sys.exit(a.fn(a))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        kube_cluster.apply_fd(kube_ns, "demo", TWO_STORES)
        kube_cluster.wait_phase(kube_ns, "demo", "Ready")

        def served():
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                return r.status_code == 200 and r.json().get("frauddemos") == 1
            except httpx.TransportError:
                return False

        wait_for(served, 20, interval=0.2, what="the operator process serving liveness with the demo")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        out = proc.stdout.read().decode()
        assert f"namespaces {kube_ns}" in out and "standalone" in out
        assert "Handler 'child-" not in out  # per-event noise filtered
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
