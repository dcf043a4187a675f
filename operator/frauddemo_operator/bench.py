"""`frauddemo bench operator --json [--kubeconfig PATH]`: how fast the operator turns FraudDemos into
running demos.

With --kubeconfig (a real cluster, e.g. `make cluster`: kube-apiserver, controllers, kwok nodes that make
pods Ready), the top-level figures are the real ones:
- create_to_ready_ms: a FraudDemo's creation -> its status says phase Ready, which needs every store,
  syncer, POS and detector workload ready on real pods (p50/p95/p99 over FraudDemos created one by one,
  each in its own namespace);
- burst_100_s: 100 FraudDemos created at once -> every one phase Ready;
- baseline (in-run): the same objects created directly by one client with no operator, until every
  workload they hold is ready: the floor the operator's overhead is measured against.
- real_pods (only when the cluster has a real node, labelled frauddemo.io/real-node=true by tools/node.sh):
  FraudDemos whose pods run for real on that node (the images `make images` loads; store image from
  FRAUDDEMO_BENCH_STORE_IMAGE, default frauddemo-store:<version>), FRAUDDEMO_BENCH_REAL_SERIAL of them
  (default 5) created one by one, each measured to
  phase Ready with every pod of its namespace Ready, beside the kwok figure of the same run. The kwok
  FraudDemos' namespaces then pin their pods to the kwok nodes (scheduler.alpha.kubernetes.io/node-selector,
  the PodNodeSelector admission plugin tools/cluster.sh enables) and the real ones' to the real node.
In the same run, `emulator` holds the figures against the API emulator (the test kit, from a checkout,
run as its own program: frauddemo_testkit.operator_bench), whose simulated controllers mark every workload
ready as soon as it exists.

Without --kubeconfig, only the emulator's figures, at the top level (as before).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid

from . import builders, crd, kube, models
from .main import OperatorThread
from .settings import Settings

SPEC = {"stores": [{"name": "a"}, {"name": "b"}]}
CHILD_PLURALS = (
    "secrets",
    "configmaps",
    "services",
    "statefulsets",
    "deployments",
    "networkpolicies",
    "servicemonitors",
)


def _pct(values: list[float], q: float) -> float:
    xs = sorted(values)
    if not xs:
        return float("nan")
    i = min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))
    return xs[i]


def summary(ms: list[float]) -> dict:
    return {
        "p50": round(_pct(ms, 0.50), 1),
        "p95": round(_pct(ms, 0.95), 1),
        "p99": round(_pct(ms, 0.99), 1),
        "max": round(max(ms), 1),
        "mean": round(statistics.fmean(ms), 1),
        "n": len(ms),
    }


def fd_body(name: str) -> dict:
    return {"apiVersion": crd.API_VERSION, "kind": crd.KIND, "metadata": {"name": name}, "spec": SPEC}


def expected_children(name: str, namespace: str, service_monitors: bool = True) -> int:
    spec = models.parse(name, SPEC)
    return len(builders.desired(builders.Owner(name, namespace, "-"), spec, service_monitors=service_monitors))


def fd_path(ns: str) -> str:
    return f"/apis/{crd.API_VERSION}/namespaces/{ns}/{crd.PLURAL}"


EMULATOR_RUN_TIMEOUT_S = 3600


def _emulator_run(serial: int, burst: int, timeout: float) -> dict:
    """The operator against the API emulator: the test kit's own program (frauddemo_testkit.operator_bench,
    from a checkout only), run as a child process: the operator never imports the test kit."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # what this process sees
    cmd = [
        sys.executable,
        "-m",
        "frauddemo_testkit.operator_bench",
        "--serial",
        str(serial),
        "--burst",
        str(burst),
        "--timeout",
        str(timeout),
    ]
    try:
        proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=EMULATOR_RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"the emulator run took more than {EMULATOR_RUN_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        if "No module named frauddemo_testkit" in proc.stderr or "No module named 'frauddemo_testkit'" in proc.stderr:
            raise RuntimeError(
                "the API emulator is test kit, not shipped: from a checkout, run "
                "`make bench-operator` (or give --kubeconfig PATH for a real cluster)"
            )
        raise RuntimeError(f"the emulator run failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout)


# --- against a real cluster --------------------------------------------------------------------------

POLL_S = 0.02  # how often a waiter reads the FraudDemo or its workloads (bounds the timing error)


async def _ensure_crd(client: kube.Kube) -> None:
    body = crd.load()
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    try:
        await client.request("POST", path, body=body)
    except kube.Conflict:
        pass
    deadline = time.monotonic() + 60
    while not await client.has_resource(kube.FRAUDDEMO):
        if time.monotonic() > deadline:
            raise RuntimeError("the FraudDemo CRD was not established within 60 s")
        await asyncio.sleep(0.2)


NODE_SELECTOR = "scheduler.alpha.kubernetes.io/node-selector"  # the PodNodeSelector admission plugin's
REAL_NODE_LABEL = "frauddemo.io/real-node"  # tools/node.sh's kubelet sets it
NODE = kube.Kind("v1", "Node", "nodes")
POD = kube.Kind("v1", "Pod", "pods")


async def _namespace(client: kube.Kube, name: str, node_selector: str | None = None) -> None:
    meta: dict = {"name": name, "labels": {"frauddemo.io/bench": "operator"}}
    if node_selector:
        meta["annotations"] = {NODE_SELECTOR: node_selector}
    await client.request("POST", "/api/v1/namespaces", body={"apiVersion": "v1", "kind": "Namespace", "metadata": meta})
    # pods need the namespace's default ServiceAccount, which the controller-manager adds
    while await client.get(kube.Kind("v1", "ServiceAccount", "serviceaccounts"), name, "default") is None:
        await asyncio.sleep(POLL_S)


async def _phase_ready(client: kube.Kube, ns: str, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while True:
        fd = await client.get(kube.FRAUDDEMO, ns, "demo")
        if fd and (fd.get("status") or {}).get("phase") == "Ready":
            return time.perf_counter()
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"FraudDemo {ns}/demo did not reach phase Ready within {timeout}s: {(fd or {}).get('status')}"
            )
        await asyncio.sleep(POLL_S)


async def _real_nodes(client: kube.Kube) -> list[str]:
    """Ready nodes with a real kubelet (tools/node.sh labels them), not kwok's."""
    out = []
    for n in await client.list(NODE, None, f"{REAL_NODE_LABEL}=true"):
        if any(c["type"] == "Ready" and c["status"] == "True" for c in (n.get("status") or {}).get("conditions", [])):
            out.append(n["metadata"]["name"])
    return out


def _pod_ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in (pod.get("status") or {}).get("conditions", []))


async def _all_pods_ready(client: kube.Kube, ns: str, expected: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while True:
        pods = [p for p in await client.list(POD, ns) if not p["metadata"].get("deletionTimestamp")]
        if len(pods) >= expected and all(_pod_ready(p) for p in pods):
            return time.perf_counter()
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the pods in {ns} were not all Ready within {timeout}s: "
                f"{sorted(p['metadata']['name'] for p in pods if not _pod_ready(p))}"
            )
        await asyncio.sleep(0.2)


async def _namespace_gone(client: kube.Kube, ns: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await client.get(kube.Kind("v1", "Namespace", "namespaces"), None, ns) is None:
            return
        await asyncio.sleep(0.5)


def _default_store_image() -> str:
    """frauddemo-store at the runtime image's tag (the CRD's default image): what `make images` builds."""
    spec = crd.load()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return "frauddemo-store:" + spec["properties"]["image"]["default"].rsplit(":", 1)[1]


async def _real_pods(client: kube.Kube, fresh, n: int, timeout: float, store_image: str, node: str) -> dict:
    """n FraudDemos, one at a time, on the real node: creation -> phase Ready, and -> phase Ready with every
    pod Ready. Each namespace is deleted (and waited for) before the next, so they do not pile up."""
    spec = {"stores": [{"name": "a", "image": store_image}, {"name": "b", "image": store_image}]}
    body = {"apiVersion": crd.API_VERSION, "kind": crd.KIND, "metadata": {"name": "demo"}, "spec": spec}
    n_pods = sum(
        c["spec"].get("replicas", 1)
        for c in builders.desired(builders.Owner("demo", "x", "-"), models.parse("demo", spec), service_monitors=False)
        if c["kind"] in ("StatefulSet", "Deployment")
    )
    phase_ms, pods_ms = [], []
    for i in range(n):
        ns = await fresh(f"real-{i}", f"{REAL_NODE_LABEL}=true")
        t0 = time.perf_counter()
        await client.create(kube.FRAUDDEMO, ns, body)
        t_phase = await _phase_ready(client, ns, timeout)
        t_pods = await _all_pods_ready(client, ns, n_pods, timeout)
        # phase Ready is read from the workloads' readiness, which follows the pods': both are needed
        phase_ms.append((t_phase - t0) * 1000)
        pods_ms.append((max(t_phase, t_pods) - t0) * 1000)
        await client.request("DELETE", f"/api/v1/namespaces/{ns}")
        await _namespace_gone(client, ns, 120)
    return {
        "node": node,
        "store_image": store_image,
        "pods_per_demo": n_pods,
        "create_to_ready_ms": summary(pods_ms),
        "create_to_phase_ready_ms": summary(phase_ms),
    }


def _workload_ready(obj: dict) -> bool:
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    want = spec.get("replicas", 1)
    return (
        st.get("observedGeneration", 0) >= obj["metadata"].get("generation", 1)
        and st.get("readyReplicas", 0) >= want
        and st.get("updatedReplicas", 0) >= want
    )


async def _workloads_ready(client: kube.Kube, ns: str, expected: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while True:
        objs = await client.list(kube.STATEFULSET, ns) + await client.list(kube.DEPLOYMENT, ns)
        if len(objs) >= expected and all(_workload_ready(o) for o in objs):
            return time.perf_counter()
        if time.monotonic() > deadline:
            raise RuntimeError(f"the workloads in {ns} were not ready within {timeout}s")
        await asyncio.sleep(POLL_S)


async def _direct(client: kube.Kube, ns: str, timeout: float) -> tuple[float, float]:
    """The baseline: the FraudDemo, its children and a status made by this client, no operator;
    returns (ms to create them, ms until every workload they hold is ready)."""
    t0 = time.perf_counter()
    fd = await client.create(kube.FRAUDDEMO, ns, fd_body("demo"))
    owner = builders.Owner("demo", ns, fd["metadata"]["uid"])
    children = builders.desired(owner, models.parse("demo", SPEC), service_monitors=False)
    for c in children:  # in the operator's order: Secrets and ConfigMaps before the workloads
        await client.create(kube.CHILD_KINDS[c["kind"]], ns, c)
    await client.patch(
        kube.FRAUDDEMO, ns, "demo", {"status": {"phase": "Provisioning", "observedGeneration": 1}}, "status"
    )
    created = time.perf_counter()
    n_workloads = sum(1 for c in children if c["kind"] in ("StatefulSet", "Deployment"))
    ready = await _workloads_ready(client, ns, n_workloads, timeout)
    return (created - t0) * 1000, (ready - t0) * 1000


async def _cluster_async(
    kubeconfig: str, serial: int, burst: int, timeout: float, run_id: str, real_serial: int = 5
) -> dict:
    cfg = await kube.load_configuration(kubeconfig)
    client = kube.Kube(cfg, 32)
    namespaces: list[str] = []
    real_nodes = await _real_nodes(client)
    # With a real node in the cluster, the kwok FraudDemos' pods stay on the kwok nodes (the real node
    # could not pull their default store image), and the real ones' on the real node.
    kwok_selector = "type=kwok" if real_nodes else None
    real_result = None

    async def fresh(prefix: str, node_selector: str | None = None) -> str:
        ns = f"fdb-{run_id}-{prefix}"
        await _namespace(client, ns, node_selector or kwok_selector)
        namespaces.append(ns)
        return ns

    try:
        await _ensure_crd(client)
        settings = Settings(kubeconfig=kubeconfig, liveness=None, stats_seconds=3600.0, resync_seconds=3600.0)
        op = OperatorThread(settings)
        await asyncio.to_thread(op.__enter__)
        try:
            for i in range(3):  # warm-up, not measured
                ns = await fresh(f"warm-{i}")
                t0 = time.perf_counter()
                await client.create(kube.FRAUDDEMO, ns, fd_body("demo"))
                await _phase_ready(client, ns, timeout)
            ready_ms = []
            for i in range(serial):
                ns = await fresh(f"serial-{i}")
                t0 = time.perf_counter()
                await client.create(kube.FRAUDDEMO, ns, fd_body("demo"))
                ready_ms.append((await _phase_ready(client, ns, timeout) - t0) * 1000)
            burst_ns = [await fresh(f"burst-{i}") for i in range(burst)]
            t0 = time.perf_counter()
            await asyncio.gather(*(client.create(kube.FRAUDDEMO, ns, fd_body("demo")) for ns in burst_ns))
            burst_timeout = max(timeout, 3.0 * burst)

            async def ready_or_none(ns: str) -> float | None:
                try:
                    return await _phase_ready(client, ns, burst_timeout)
                except RuntimeError:
                    return None

            done = await asyncio.gather(*(ready_or_none(ns) for ns in burst_ns))
            reached = [t for t in done if t is not None]
            # a FraudDemo that never got Ready leaves the burst unmeasured (None), never short
            burst_s = max(reached) - t0 if len(reached) == burst else None
            if real_nodes and real_serial > 0:
                store_image = os.environ.get("FRAUDDEMO_BENCH_STORE_IMAGE") or _default_store_image()
                real_result = await _real_pods(
                    client, fresh, real_serial, max(timeout, 300.0), store_image, real_nodes[0]
                )
        finally:
            await asyncio.to_thread(op.close)
        # The baseline once the operator is gone (it would reconcile these FraudDemos too).
        base_create, base_ready = [], []
        for i in range(serial):
            ns = await fresh(f"base-{i}")
            c, r = await _direct(client, ns, timeout)
            base_create.append(c)
            base_ready.append(r)
    finally:
        # Namespace deletion hands the children to the real garbage collector; not waited for.
        for ns in namespaces:
            try:
                await client.request("DELETE", f"/api/v1/namespaces/{ns}")
            except kube.ApiError:
                pass
        await client.close()

    create = summary(ready_ms)
    ready_base = summary(base_ready)
    return {
        "create_to_ready_ms": create,
        f"burst_{burst}_s": round(burst_s, 2) if burst_s is not None else None,
        "burst_ready": f"{len(reached)}/{burst} within {burst_timeout:g} s",
        "baseline": {
            "what": "the same FraudDemo, children and status created directly by one kubernetes_asyncio "
            "client against the same cluster, no operator; ready when every workload is",
            "direct_api_ms": summary(base_create),
            "direct_to_ready_ms": ready_base,
        },
        "operator_overhead_p50_ms": round(create["p50"] - ready_base["p50"], 1),
        "overhead_ratio_p50": round(create["p50"] / ready_base["p50"], 2) if ready_base["p50"] else None,
        "real_pods": (
            {**real_result, "kwok_create_to_ready_ms": create}
            if real_result
            else {"skipped": "no Ready node labelled frauddemo.io/real-node=true (tools/node.sh up)"}
        ),
    }


def _server_version(kubeconfig: str) -> str:
    """The server's version; a RuntimeError saying why when the kubeconfig or the cluster is unusable."""

    async def get():
        client = kube.Kube(await kube.load_configuration(kubeconfig), 4)
        try:
            return (await client.request("GET", "/version")).get("gitVersion", "?")
        finally:
            await client.close()

    if not os.path.isfile(kubeconfig):
        raise RuntimeError(f"kubeconfig {kubeconfig} does not exist (start a cluster with `make cluster`)")
    try:
        return asyncio.run(get())
    except Exception as e:  # noqa: BLE001 - any failure here is reported as one line
        raise RuntimeError(f"cannot reach a cluster with kubeconfig {kubeconfig}: {type(e).__name__}: {e}") from None


def run(
    serial: int = 100, burst: int = 100, timeout: float = 120.0, kubeconfig: str | None = None, emulator: bool = True
) -> dict:
    """serial FraudDemos one by one and a burst at once; against a real cluster when kubeconfig is
    given (with the emulator's figures beside it when the test kit is importable)."""
    if kubeconfig is None:
        return _emulator_run(serial, burst, timeout)
    version = _server_version(kubeconfig)
    run_id = uuid.uuid4().hex[:6]
    real_serial = int(os.environ.get("FRAUDDEMO_BENCH_REAL_SERIAL", "5"))
    real = asyncio.run(_cluster_async(kubeconfig, serial, burst, timeout, run_id, real_serial))
    result = {
        "benchmark": "operator",
        "api": f"kube-apiserver {version}",
        "serial_fraud_demos": serial,
        "burst_fraud_demos": burst,
        "children_per_demo": expected_children("demo", "x", service_monitors=False),
        **real,
        "poll_interval_ms": POLL_S * 1000,
        "targets": {"create_to_ready_p99_ms": 5000, f"burst_{burst}_s": 60},
        "meets_targets": (
            real["create_to_ready_ms"]["p99"] <= 5000
            and real[f"burst_{burst}_s"] is not None
            and real[f"burst_{burst}_s"] <= 60
        ),
        "environment": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    if emulator:
        try:
            emu = _emulator_run(min(serial, 50), burst, timeout)
            result["emulator"] = {
                k: emu[k] for k in ("create_to_ready_ms", "create_to_phase_ready_ms", f"burst_{burst}_s", "baseline")
            }
        except RuntimeError as e:
            result["emulator"] = {"skipped": str(e)}
    return result


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(run()))
