"""The operator's benchmark against the API emulator (test kit, never shipped): `python -m
frauddemo_testkit.operator_bench --serial N --burst N --timeout S` prints one JSON object. The operator's
`frauddemo bench operator` runs it as a child process (frauddemo_operator never imports the test kit).

- create_to_ready_ms: a FraudDemo's creation -> reconciled (status for its generation, every child present),
  serial FraudDemos one by one, each in its own namespace; create_to_phase_ready_ms: -> phase Ready;
- burst_<n>_s: n FraudDemos created at once -> every one reconciled (and phase Ready);
- baseline: the same objects created directly by one client with no operator, same emulator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import threading
import time
import urllib.request

import aiohttp

from frauddemo_operator import builders, crd, kube, models
from frauddemo_operator.bench import (
    CHILD_PLURALS,
    SPEC,
    expected_children,
    fd_body,
    fd_path,
    summary,
)
from frauddemo_operator.main import OperatorThread
from frauddemo_operator.settings import Settings

from .emulator import RESOURCE_KEYS, EmulatorThread

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the emulator is on loopback


def _post(url: str, ns: str) -> None:
    """Create one FraudDemo over HTTP, as kubectl would."""
    req = urllib.request.Request(
        url + fd_path(ns),
        data=json.dumps(fd_body("demo")).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with _NO_PROXY.open(req, timeout=30) as resp:
        if resp.status != 201:
            raise RuntimeError(f"creating {ns}/demo failed: {resp.status}")


async def _post_all(url: str, namespaces: list[str]) -> None:
    """Create many FraudDemos at once over HTTP."""
    async with aiohttp.ClientSession(url, timeout=aiohttp.ClientTimeout(total=60)) as http:

        async def one(ns):
            async with http.post(fd_path(ns), json=fd_body("demo")) as r:
                if r.status != 201:
                    raise RuntimeError(f"creating {ns}/demo failed: {r.status} {(await r.text())[:200]}")

        await asyncio.gather(*(one(ns) for ns in namespaces))


class Probe:
    """Runs inside the emulator's loop (as an emulator hook): notes when each FraudDemo is reconciled
    (status for its generation, every child present) and when its phase first says Ready."""

    def __init__(self, emu, resource_keys: dict):
        self.emu = emu
        self.fd_key = resource_keys["frauddemos"]
        self.child_keys = [resource_keys[p] for p in CHILD_PLURALS]
        self.reconciled: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        self.expected: dict[str, int] = {}
        self.cond = threading.Condition()

    def expect(self, namespace: str, count: int) -> None:
        self.expected[namespace] = count

    def hook(self, key, etype, obj) -> None:
        if key != self.fd_key or etype != "MODIFIED":
            return
        meta, st = obj.get("metadata") or {}, obj.get("status") or {}
        ns = meta.get("namespace")
        if ns not in self.expected or st.get("observedGeneration") != meta.get("generation"):
            return
        now = time.perf_counter()
        if ns not in self.reconciled:
            idx = self.emu.emulator._index
            count = sum(1 for k in self.child_keys for (ons, _) in idx.get(k, {}) if ons == ns)
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
            fd = await client.create(kube.FRAUDDEMO, ns, fd_body("demo"))
            owner = builders.Owner("demo", ns, fd["metadata"]["uid"])
            children = builders.desired(owner, models.parse("demo", SPEC), service_monitors=True)
            await asyncio.gather(*(client.create(kube.CHILD_KINDS[c["kind"]], ns, c) for c in children))
            await client.patch(
                kube.FRAUDDEMO, ns, "demo", {"status": {"phase": "Provisioning", "observedGeneration": 1}}, "status"
            )
            out.append((time.perf_counter() - t0) * 1000)
    finally:
        await client.close()
    return out


def emulator_run(serial: int, burst: int, timeout: float) -> dict:
    """The operator against the API emulator: serial FraudDemos one by one, then a burst at once."""
    settings_kw = {"liveness": None, "stats_seconds": 3600.0, "resync_seconds": 3600.0}
    with tempfile.TemporaryDirectory(prefix="fd-bench-") as tmp:
        # In-run baseline: the API calls alone, same client stack, same emulator, no operator.
        with EmulatorThread(monitoring=True) as emu:
            emu.create("customresourcedefinitions", None, crd.load())
            kc = emu.kubeconfig(os.path.join(tmp, "baseline.kubeconfig"))
            base_ms = asyncio.run(_baseline(kc, [f"base-{i}" for i in range(serial)], Settings().max_in_flight))

        with EmulatorThread(monitoring=True, controllers=True) as emu:
            emu.create("customresourcedefinitions", None, crd.load())
            probe = Probe(emu, RESOURCE_KEYS)
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

    create = summary(serial_ms)
    result = {
        "benchmark": "operator",
        "serial_fraud_demos": serial,
        "burst_fraud_demos": burst,
        "children_per_demo": n_children,
        "create_to_ready_ms": create,
        "create_to_phase_ready_ms": summary(serial_ready_ms),
        f"burst_{burst}_s": round(burst_s, 2),
        f"burst_{burst}_phase_ready_s": round(burst_ready_s, 2),
        "baseline": {
            "what": "the same creates and status write made directly by one kubernetes_asyncio client "
            "against the same emulator, no operator",
            "direct_api_ms": summary(base_ms),
        },
        "operator_overhead_p50_ms": round(create["p50"] - summary(base_ms)["p50"], 1),
        "api_requests_served": requests,
        "targets": {"create_to_ready_p99_ms": 1000, f"burst_{burst}_s": 15},
        "meets_targets": create["p99"] <= 1000 and burst_s <= 15,
        "environment": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m frauddemo_testkit.operator_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--serial", type=int, default=100, help="FraudDemos created one by one")
    p.add_argument("--burst", type=int, default=100, help="FraudDemos created at once")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds one FraudDemo (or the burst) may take")
    a = p.parse_args(argv)
    print(json.dumps(emulator_run(a.serial, a.burst, a.timeout)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
