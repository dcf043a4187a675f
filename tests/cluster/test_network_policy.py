"""NetworkPolicies enforced on the real node (tools/node.sh: kube-router's network policy controller, built
from its Go module, on the CNI bridge): the sample in real pods under the operator's policies (a default
deny, then one policy per flow the demo needs) still works, and a flow they forbid is refused.

Every needed flow: the FraudDemo reaches phase Ready from real readiness, pods resolve Services through
the cluster DNS, `frauddemo scenario fraud` blocks the hacked return through the detector (which reaches
both stores), and the syncers replicate each store's receipts and returns to the other. The forbidden
flow: store a's POS may reach only its own store; a TCP connection from it to store b's Redis port (the
pod's address and the Service's) is refused while the same POS reaches store a, and the detector reaches
store b. With the policies deleted (the operator scaled to zero so that it does not restore them) the
same connection opens; with the operator back, its policies are restored and the connection is refused
again. Afterwards no kube-router chain, ipset or process is left.

The node, the cluster and the sample come from test_real_pods' fixtures (this module gets its own
instance of them). Needs what test_real_pods needs, plus the ipset package (tools/node.sh up installs it)
and the kernel's ip_set and xt_set; skipped without them, except under CI=true.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
import test_real_pods as rp
from test_real_pods import FD, NODE, NS, Real

from frauddemo_testkit.testing import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(2400)]

# The real node and the sample installed on it, ready (test_real_pods' module fixtures, instanced here).
real = rp.real
demo = rp.demo

STORE_PORT = 6379
# Connects, says how it went, closes: "open", or the error's class (ConnectionRefusedError when the
# policy controller's REJECT answers, TimeoutError when a packet is dropped).
CONNECT = (
    "import socket, sys\n"
    "try:\n"
    "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close()\n"
    "    print('open')\n"
    "except OSError as e:\n"
    "    print(type(e).__name__)\n"
)


def _kube_router_ipsets() -> list[str]:
    if shutil.which("ipset") is None:
        return []
    out = subprocess.run(["ipset", "list", "-n"], capture_output=True, text=True).stdout
    return [s for s in out.split() if s.removeprefix("inet6:").startswith(("KUBE-SRC-", "KUBE-DST-"))]


@pytest.fixture(scope="module")
def built():
    """kube-router built (once per machine, cached) before the node comes up, so that `up`'s timeout does
    not hold a cold build; after the module, when the node is down: no ipset of kube-router left."""
    if os.geteuid() != 0:
        rp._skip_or_fail("the real node (tools/node.sh) needs root")
    t0 = time.monotonic()
    proc = subprocess.run([str(NODE), "build"], capture_output=True, text=True, timeout=2400)
    assert proc.returncode == 0, f"tools/node.sh build failed:\n{proc.stderr[-4000:]}"
    print(f"kube-router build (cached after the first): {time.monotonic() - t0:.1f} s")
    yield
    assert not _kube_router_ipsets(), _kube_router_ipsets()


@pytest.fixture(scope="module")
def policed(built, demo: Real) -> Real:
    node_dir = demo.c.dir / "node"
    pid = (node_dir / "kube-router.pid").read_text().strip()
    assert os.path.exists(f"/proc/{pid}"), "kube-router does not run on the node"
    return demo


def pod(d: Real, part: str) -> str:
    return next(p["metadata"]["name"] for p in d.pods() if part in p["metadata"]["name"] and d.ready(p))


def connect(d: Real, src: str, host: str, port: int = STORE_PORT) -> str:
    return d.c.kubectl("exec", "-n", NS, src, "--", "python", "-c", CONNECT, host, str(port)).stdout.strip()


def test_every_needed_flow_works_under_the_policies(policed):
    d = policed
    policies = {p["metadata"]["name"] for p in d.c.get("networkpolicy", "-n", NS)["items"]}
    assert f"{FD}-default-deny" in policies and f"{FD}-store-b-ingress" in policies, sorted(policies)
    # enforced: a firewall chain per pod of the namespace, a chain per policy, ipsets of their peers
    saved = subprocess.run(["iptables-save", "-t", "filter"], capture_output=True, text=True).stdout
    pod_chains = {line.split()[0] for line in saved.splitlines() if line.startswith(":KUBE-POD-FW-")}
    policy_chains = {line.split()[0] for line in saved.splitlines() if line.startswith(":KUBE-NWPLCY-")}
    assert len(pod_chains) >= len(d.pods()) and len(policy_chains) > len(policies) // 2, (pod_chains, policy_chains)
    assert _kube_router_ipsets()
    # phase Ready (the fixture waited for it); DNS from a pod under the default deny
    assert d.fd()["status"]["phase"] == "Ready"
    rp.test_cluster_dns_resolves_services_for_pods(d)
    # the detector reaches both stores: Scenario 1 blocks the hacked return at b
    rp.test_scenario_fraud_through_the_detector_service(d)
    # the syncers replicate both ways, through the stores' ingress policies
    wait_for(d.converged, 90, 1, what="both stores to hold each other's receipts and returns")


def test_a_forbidden_flow_is_refused_and_opens_without_the_policies(policed):
    d = policed
    pos_a, det = pod(d, f"{FD}-pos-a-"), pod(d, f"{FD}-detector-")
    store_b = d.c.get("pod", f"{FD}-store-b-0", "-n", NS)["status"]["podIP"]
    svc_b = d.c.get("service", f"{FD}-store-b", "-n", NS)["spec"]["clusterIP"]
    store_a = d.c.get("pod", f"{FD}-store-a-0", "-n", NS)["status"]["podIP"]
    assert connect(d, pos_a, store_a) == "open"  # its own store
    assert connect(d, det, store_b) == "open"  # an allowed client of store b
    refused = {"ConnectionRefusedError", "TimeoutError"}
    seen = {"pos-a -> store b pod": connect(d, pos_a, store_b), "pos-a -> store b Service": connect(d, pos_a, svc_b)}
    print(f"forbidden flows: {seen}")
    assert set(seen.values()) <= refused, seen

    # Without the policies (the operator stopped, so that it does not restore them) the same flow opens.
    op_name = next(
        x["metadata"]["name"]
        for x in d.c.get("deployment", "-n", NS)["items"]
        if x["metadata"]["name"].endswith("-operator")
    )
    operator = f"deployment/{op_name}"
    d.c.kubectl("scale", "-n", NS, operator, "--replicas=0")
    try:
        wait_for(
            lambda: not [p for p in d.pods() if "-operator-" in p["metadata"]["name"]], 60, 1, what="no operator pod"
        )
        d.c.kubectl("delete", "networkpolicy", "--all", "-n", NS)
        t0 = time.monotonic()
        wait_for(lambda: connect(d, pos_a, store_b) == "open", 60, 1, what="pos-a -> store b with no policy")
        print(f"pos-a -> store b opens {time.monotonic() - t0:.1f} s after the policies are deleted")
    finally:
        d.c.kubectl("scale", "-n", NS, operator, "--replicas=1")
    # the operator restores its policies, and the flow is refused again; the demo is back to Ready
    wait_for(
        lambda: f"{FD}-store-b-ingress" in {p["metadata"]["name"] for p in d.c.get("networkpolicy", "-n", NS)["items"]},
        120,
        1,
        what="the operator to restore its policies",
    )
    t0 = time.monotonic()
    wait_for(lambda: connect(d, pos_a, store_b) in refused, 60, 1, what="pos-a -> store b refused again")
    print(f"pos-a -> store b refused again {time.monotonic() - t0:.1f} s after the operator restored them")
    wait_for(d.demo_ready, 180, 2, what="phase Ready with every pod Ready again")
    assert connect(d, pos_a, store_a) == "open"
