"""`frauddemo bench operator --json`: the operator against the API emulator.

Figures:
- create_to_ready_ms: a FraudDemo's creation -> every child created and the status written for its
  generation (p50/p99 over FraudDemos created one by one);
- create_to_phase_ready_ms: the same, until the status says phase Ready (the emulator's simulated
  controllers report the workloads ready as soon as they are created);
- burst_100_s: 100 FraudDemos created at once -> every one reconciled (and burst_100_phase_ready_s);
- baseline (in-run): the same API calls made directly with the same client, no operator: the floor
  the operator's overhead is measured against.
"""
from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import tempfile
import threading
import time
import urllib.request

import aiohttp

from . import builders, crd, kube, models
from .emulator import RESOURCE_KEYS, EmulatorThread
from .main import OperatorThread
from .settings import Settings

SPEC = {"stores": [{"name": "a"}, {"name": "b"}]}
CHILD_KEYS = [RESOURCE_KEYS[p] for p in ("secrets", "configmaps", "services", "statefulsets", "deployments",
                                          "networkpolicies", "servicemonitors")]
FD_KEY = RESOURCE_KEYS["frauddemos"]


def _pct(values: list[float], q: float) -> float:
    xs = sorted(values)
    if not xs:
        return float("nan")
    i = min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))
    return xs[i]


def _summary(ms: list[float]) -> dict:
    return {"p50": round(_pct(ms, 0.50), 1), "p99": round(_pct(ms, 0.99), 1), "max": round(max(ms), 1),
            "mean": round(statistics.fmean(ms), 1), "n": len(ms)}


def _fd(name: str) -> dict:
    return {"apiVersion": crd.API_VERSION, "kind": crd.KIND, "metadata": {"name": name}, "spec": SPEC}


def expected_children(name: str, namespace: str, service_monitors: bool = True) -> int:
    spec = models.parse(name, SPEC)
    return len(builders.desired(builders.Owner(name, namespace, "-"), spec, service_monitors=service_monitors))


class Probe:
    """Runs inside the emulator's loop (as an emulator hook): notes when each FraudDemo is reconciled
    (status for its generation, every child present) and when its phase first says Ready."""

    def __init__(self, emu: EmulatorThread):
        self.emu = emu
        self.reconciled: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        self.expected: dict[str, int] = {}
        self.cond = threading.Condition()

    def expect(self, namespace: str, count: int) -> None:
        self.expected[namespace] = count

    def hook(self, key, etype, obj) -> None:
        if key != FD_KEY or etype != "MODIFIED":
            return
        meta, st = obj.get("metadata") or {}, obj.get("status") or {}
        ns = meta.get("namespace")
        if ns not in self.expected or st.get("observedGeneration") != meta.get("generation"):
            return
        now = time.perf_counter()
        if ns not in self.reconciled:
            idx = self.emu.emulator._index
            count = sum(1 for k in CHILD_KEYS for (ons, _) in idx.get(k, {}) if ons == ns)
            if count >= self.expected[ns]:
                with self.cond:
                    self.reconciled[ns] = now
                    self.cond.notify_all()
        if ns in self.reconciled and ns not in self.ready and st.get("phase") == "Ready":
            with self.cond:
                self.ready[ns] = now
                self.cond.notify_all()

    def wait(self, table: dict, keys: list[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not all(k in table for k in keys):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True


async def _baseline(url_kubeconfig: str, namespaces: list[str], max_in_flight: int) -> list[float]:
    """Create each FraudDemo, its children and its status directly (no operator), one by one."""
    cfg = await kube.load_configuration(url_kubeconfig)
    client = kube.Kube(cfg, max_in_flight)
    out = []
    try:
        for ns in namespaces:
            t0 = time.perf_counter()
            fd = await client.create(kube.FRAUDDEMO, ns, _fd("demo"))
            owner = builders.Owner("demo", ns, fd["metadata"]["uid"])
            children = builders.desired(owner, models.parse("demo", SPEC), service_monitors=True)
            await asyncio.gather(*(client.create(kube.CHILD_KINDS[c["kind"]], ns, c) for c in children))
            await client.patch(kube.FRAUDDEMO, ns, "demo", {"status": {"phase": "Provisioning",
                                                                       "observedGeneration": 1}}, "status")
            out.append((time.perf_counter() - t0) * 1000)
    finally:
        await client.close()
    return out


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # the emulator is on loopback


def _path(ns: str) -> str:
    return f"/apis/{crd.API_VERSION}/namespaces/{ns}/{crd.PLURAL}"


def _post(url: str, ns: str) -> None:
    """Create one FraudDemo over HTTP, as kubectl would."""
    req = urllib.request.Request(url + _path(ns), data=json.dumps(_fd("demo")).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with _NO_PROXY.open(req, timeout=30) as resp:
        if resp.status != 201:
            raise RuntimeError(f"creating {ns}/demo failed: {resp.status}")


async def _post_all(url: str, namespaces: list[str]) -> None:
    """Create many FraudDemos at once over HTTP."""
    async with aiohttp.ClientSession(url, timeout=aiohttp.ClientTimeout(total=60)) as http:
        async def one(ns):
            async with http.post(_path(ns), json=_fd("demo")) as r:
                if r.status != 201:
                    raise RuntimeError(f"creating {ns}/demo failed: {r.status} {(await r.text())[:200]}")
        await asyncio.gather(*(one(ns) for ns in namespaces))


def run(serial: int = 50, burst: int = 100, timeout: float = 120.0) -> dict:
    settings_kw = dict(liveness=None, stats_seconds=3600.0, resync_seconds=3600.0)
    with tempfile.TemporaryDirectory(prefix="fd-bench-") as tmp:
        # In-run baseline: the API calls alone, same client stack, same emulator, no operator.
        with EmulatorThread(monitoring=True) as emu:
            emu.create("customresourcedefinitions", None, crd.load())
            kc = emu.kubeconfig(os.path.join(tmp, "baseline.kubeconfig"))
            base_ms = asyncio.run(_baseline(kc, [f"base-{i}" for i in range(serial)],
                                            Settings().max_in_flight))

        with EmulatorThread(monitoring=True, controllers=True) as emu:
            emu.create("customresourcedefinitions", None, crd.load())
            probe = Probe(emu)
            emu.call(lambda: emu.emulator.hooks.append(probe.hook))
            settings = Settings(kubeconfig=emu.kubeconfig(os.path.join(tmp, "kubeconfig")), **settings_kw)
            n_children = expected_children("demo", "x")
            with OperatorThread(settings):
                # warm-up (not measured): first connections, first handler invocations
                for i in range(3):
                    ns = f"warm-{i}"
                    probe.expect(ns, n_children)
                    _post(emu.url, ns)
                    probe.wait(probe.ready, [ns], timeout)

                serial_ms, serial_ready_ms = [], []
                for i in range(serial):
                    ns = f"serial-{i}"
                    probe.expect(ns, n_children)
                    t0 = time.perf_counter()
                    _post(emu.url, ns)
                    if not probe.wait(probe.ready, [ns], timeout):
                        raise RuntimeError(f"FraudDemo {ns}/demo was not reconciled within {timeout}s")
                    serial_ms.append((probe.reconciled[ns] - t0) * 1000)
                    serial_ready_ms.append((probe.ready[ns] - t0) * 1000)

                burst_ns = [f"burst-{i}" for i in range(burst)]
                for ns in burst_ns:
                    probe.expect(ns, n_children)
                t0 = time.perf_counter()
                asyncio.run(_post_all(emu.url, burst_ns))
                ok_rec = probe.wait(probe.reconciled, burst_ns, timeout)
                ok_ready = probe.wait(probe.ready, burst_ns, timeout)
                if not (ok_rec and ok_ready):
                    raise RuntimeError(f"the burst was not reconciled within {timeout}s")
                burst_s = max(probe.reconciled[ns] for ns in burst_ns) - t0
                burst_ready_s = max(probe.ready[ns] for ns in burst_ns) - t0
                requests = emu.call(lambda: len(emu.emulator.requests_log))

    create = _summary(serial_ms)
    result = {
        "benchmark": "operator",
        "serial_fraud_demos": serial,
        "burst_fraud_demos": burst,
        "children_per_demo": n_children,
        "create_to_ready_ms": create,
        "create_to_phase_ready_ms": _summary(serial_ready_ms),
        f"burst_{burst}_s": round(burst_s, 2),
        f"burst_{burst}_phase_ready_s": round(burst_ready_s, 2),
        "baseline": {
            "what": "the same creates and status write made directly by one kubernetes_asyncio client "
                    "against the same emulator, no operator",
            "direct_api_ms": _summary(base_ms),
        },
        "operator_overhead_p50_ms": round(create["p50"] - _summary(base_ms)["p50"], 1),
        "api_requests_served": requests,
        "targets": {"create_to_ready_p99_ms": 1000, f"burst_{burst}_s": 15},
        "meets_targets": create["p99"] <= 1000 and burst_s <= 15,
        "environment": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    return result


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(run()))
