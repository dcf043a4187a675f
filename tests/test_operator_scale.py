"""Many FraudDemos at once: 20 created together all become Ready with exactly their own children."""

from __future__ import annotations

import asyncio
import time

import httpx

from frauddemo_operator import crd
from frauddemo_testkit.testing import TWO_STORES, wait_for

pytest_plugins = ("frauddemo_testkit.pytest_plugin",)

N = 20


async def create_all(url: str, kube_ns: str, names: list[str]) -> list[int]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        rs = await asyncio.gather(
            *(
                http.post(
                    f"/apis/{crd.API_VERSION}/namespaces/{kube_ns}/{crd.PLURAL}",
                    json={
                        "apiVersion": crd.API_VERSION,
                        "kind": crd.KIND,
                        "metadata": {"name": n},
                        "spec": {**TWO_STORES, "pos": {"rate": i + 1}},
                    },
                )
                for i, n in enumerate(names)
            )
        )
    return [r.status_code for r in rs]


def test_twenty_fraud_demos_at_once(kube_cluster, kube_ns):
    names = [f"shop{i:02d}" for i in range(N)]
    t0 = time.monotonic()
    assert asyncio.run(create_all(kube_cluster.emu.url, kube_ns, names)) == [201] * N
    wait_for(
        lambda: all((s := kube_cluster.reconciled(kube_ns, n)) and s.get("phase") == "Ready" for n in names),
        60,
        interval=0.1,
        what="all Ready",
    )
    elapsed = time.monotonic() - t0
    kids = kube_cluster.children(kube_ns)
    for i, n in enumerate(names):
        mine = {p: {x for x in v if x == n or x.startswith(n + "-")} for p, v in kids.items()}
        assert sum(len(v) for v in mine.values()) == 40, (n, mine)
        fd_uid = kube_cluster.fd(kube_ns, n)["metadata"]["uid"]
        sts = kube_cluster.emu.get("statefulsets", kube_ns, f"{n}-store-a")
        assert sts["metadata"]["ownerReferences"][0]["uid"] == fd_uid
        pos = kube_cluster.emu.get("deployments", kube_ns, f"{n}-pos-b")["spec"]["template"]["spec"]["containers"][0][
            "args"
        ]
        assert pos[-1] == str(i + 1)
    assert sum(len(v) for v in kids.values()) == 40 * N
    assert elapsed < 60
