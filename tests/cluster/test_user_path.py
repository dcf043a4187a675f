"""The user's path on a real control plane: `helm install` with the sample, the operator authenticated as
the chart's ServiceAccount (so the real authorizer enforces the chart's RBAC), `kubectl` against the
CRD, the real garbage collector, password rotation, no perpetual drift (counted in the audit log),
a missing RBAC rule reported on the FraudDemo, a killed operator converging, `helm upgrade` and
`helm uninstall` with its pre-delete hook. The operator runs from the installed wheel, as its image would
run it; so does the hook's Job (`frauddemo delete-demos`, as the hook's ServiceAccount): its pod is kept off
the kwok nodes (which would mark it Succeeded without running anything), and the test plays its kubelet.

The tests in this module share one install and run in order."""

from __future__ import annotations

import concurrent.futures
import datetime
import json
import os
import subprocess
import time

import pytest
import yaml

from frauddemo import acl
from frauddemo_operator import builders, crd, models
from frauddemo_operator.handlers import FINALIZER
from frauddemo_testkit.kubecluster import OperatorProcess, chart_operator_env
from frauddemo_testkit.testing import wait_for

NS = "fd-demo"
RELEASE = "frauddemo"
CHILD_RESOURCES = ("secrets", "configmaps", "services", "statefulsets", "deployments", "networkpolicies")
TWO_STORES = {"stores": [{"name": "a"}, {"name": "b"}]}
RESYNC_S = 15  # the operator's full reconcile every 15 s here, so the quiet window spans several
# The uninstall hook's pod goes to no node (none has this label): the test runs its command instead.
HOOK_RUNNER = ("--set", "uninstallHook.nodeSelector.frauddemo-test/hook-runner=test-process")


class Install:
    def __init__(self, cluster, wheel_venv, tmp):
        self.c = cluster
        self.frauddemo = str(wheel_venv / "bin" / "frauddemo")
        self.tmp = tmp
        self.operator: OperatorProcess | None = None
        self.deployment = self.service_account = self.username = ""

    def start_operator(self) -> OperatorProcess:
        kubeconfig = self.c.token_kubeconfig(NS, self.service_account, self.tmp / "operator.kubeconfig")
        env = chart_operator_env(self.c, NS, self.deployment)
        env["FRAUDDEMO_OPERATOR_RESYNC_SECONDS"] = str(RESYNC_S)
        self.operator = OperatorProcess(self.frauddemo, kubeconfig, env, self.tmp / "operator.log").start()
        return self.operator

    def fd(self, name: str) -> dict:
        return self.c.get("fd", name, "-n", NS)

    def phase(self, name: str) -> str | None:
        got = self.c.kubectl("get", "fd", name, "-n", NS, "-o", "json", check=False)
        return (json.loads(got.stdout).get("status") or {}).get("phase") if got.returncode == 0 else None

    def wait_ready(self, name: str, timeout: float = 120) -> None:
        try:
            wait_for(lambda: self.phase(name) == "Ready", timeout, 0.5, what=f"FraudDemo {name} phase Ready")
        except AssertionError:
            status = self.c.kubectl("get", "fd", name, "-n", NS, "-o", "yaml", check=False).stdout
            raise AssertionError(
                f"{name} not Ready:\n{status}\n--- operator log:\n{self.operator.output()[-4000:]}"
            ) from None

    def children(self, name: str) -> list[dict]:
        out = []
        for res in CHILD_RESOURCES:
            for obj in self.c.get(res, "-n", NS, "-l", f"{builders.L_INSTANCE}={name}")["items"]:
                out.append(obj)
        return out


@pytest.fixture(scope="module")
def install(cluster, wheel_venv, tmp_path_factory):
    inst = Install(cluster, wheel_venv, tmp_path_factory.mktemp("install"))
    cluster.kubectl("create", "namespace", NS)
    cluster.helm(
        "install",
        RELEASE,
        "charts/frauddemo",
        "-n",
        NS,
        "--set",
        "sample.enabled=true",
        *HOOK_RUNNER,
        "--wait",
        "--timeout",
        "120s",
    )
    (dep,) = cluster.get("deployment", "-n", NS, "-l", f"app.kubernetes.io/instance={RELEASE}")["items"]
    inst.deployment = dep["metadata"]["name"]
    inst.service_account = dep["spec"]["template"]["spec"]["serviceAccountName"]
    inst.username = f"system:serviceaccount:{NS}:{inst.service_account}"
    inst.start_operator()
    yield inst
    if inst.operator:
        inst.operator.stop()


def sample_name() -> str:
    values = yaml.safe_load(open("charts/frauddemo/values.yaml"))
    return values["sample"]["name"]


def expected_children(name: str) -> int:
    return len(builders.desired(builders.Owner(name, NS, "-"), models.parse(name, TWO_STORES), service_monitors=False))


def test_the_sample_reaches_ready_with_owned_children(install):
    name = sample_name()
    install.wait_ready(name)
    uid = install.fd(name)["metadata"]["uid"]
    kids = install.children(name)
    assert kids, "the operator created no children"
    for obj in kids:
        refs = obj["metadata"].get("ownerReferences") or []
        assert [r["uid"] for r in refs if r.get("controller")] == [uid], (obj["kind"], obj["metadata"]["name"])
    assert install.operator.alive()


def test_kubectl_get_shows_the_printer_columns_and_explain_works(install):
    out = install.c.kubectl("get", "fd", "-n", NS).stdout
    header = out.splitlines()[0].split()
    columns = [c["name"].upper() for c in crd.load()["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert header == ["NAME", *columns], out
    assert sample_name() in out and "Ready" in out
    explained = install.c.kubectl("explain", "frauddemo.spec.stores").stdout
    assert "FIELDS" in explained and "name" in explained, explained


@pytest.mark.parametrize(
    "name, spec, field",
    [
        ("unknown-field", {**TWO_STORES, "bogus": 1}, 'unknown field "spec.bogus"'),
        ("wrong-type", {"stores": "a,b"}, "spec.stores"),
        ("out-of-range", {**TWO_STORES, "detection": {"reviewScore": 500}}, "spec.detection.reviewScore"),
        ("1bad-name", TWO_STORES, "metadata.name"),
        ("bad.name", TWO_STORES, "metadata.name"),
    ],
)
def test_invalid_fraud_demos_are_refused_by_the_apiserver(install, name, spec, field):
    fd = {"apiVersion": crd.API_VERSION, "kind": crd.KIND, "metadata": {"name": name, "namespace": NS}, "spec": spec}
    proc = install.c.apply(fd, "-v=6", check=False)
    assert proc.returncode != 0, f"{name} was accepted"
    assert field in proc.stderr, proc.stderr[-2000:]
    # The status code the apiserver answered: 422 (Invalid) for schema errors, 400 for strict decoding.
    codes = (
        {"400 Bad Request", "422 Unprocessable Entity"} if "unknown field" in field else {"422 Unprocessable Entity"}
    )
    assert any(code in proc.stderr for code in codes), proc.stderr[-2000:]
    assert install.c.kubectl("get", "fd", name, "-n", NS, check=False).returncode != 0


def test_rotation_by_annotation_changes_every_password(install):
    name = sample_name()

    def secrets():
        return {s["metadata"]["name"]: s["data"] for s in install.children(name) if s["kind"] == "Secret"}

    before = secrets()
    install.c.kubectl("annotate", "fd", name, "-n", NS, f"{builders.A_ROTATE}=r1", "--overwrite")
    # the clients' passwords rotate (the store's admin password stays with its server)
    store_secrets = [n for n in before if n.endswith(tuple(f"-{r}" for r in acl.CLIENT_ROLES))]
    assert len(store_secrets) == 2 * len(acl.CLIENT_ROLES), before.keys()

    def rotated():
        now = secrets()
        return all(now.get(n) != before[n] for n in store_secrets)

    wait_for(rotated, 60, 0.5, what="every password Secret rotated")
    install.wait_ready(name)


def test_edited_and_deleted_children_are_put_back(install):
    """Drift repair through the real apiserver's patch semantics (strategic merge for built-in kinds):
    a scaled and relabelled Deployment and a deleted ConfigMap come back as the operator wants them."""
    name = sample_name()
    install.wait_ready(name)
    dep = builders.detector_name(name)
    want = install.c.get("deployment", dep, "-n", NS)["spec"]
    container = want["template"]["spec"]["containers"][0]
    install.c.kubectl(
        "patch",
        "deployment",
        dep,
        "-n",
        NS,
        "--type",
        "merge",
        "-p",
        json.dumps({"spec": {"replicas": want["replicas"] + 2}}),
    )
    install.c.kubectl("set", "image", f"deployment/{dep}", "-n", NS, f"{container['name']}=intruder:6.6.6")
    (cm,) = [o for o in install.children(name) if o["kind"] == "ConfigMap"][:1]
    install.c.kubectl("delete", "configmap", cm["metadata"]["name"], "-n", NS)

    def repaired() -> bool:
        spec = install.c.get("deployment", dep, "-n", NS)["spec"]
        image = spec["template"]["spec"]["containers"][0]["image"]
        back = install.c.kubectl("get", "configmap", cm["metadata"]["name"], "-n", NS, check=False).returncode == 0
        return spec["replicas"] == want["replicas"] and image == container["image"] and back

    try:
        wait_for(repaired, 60, 0.5, what="the children repaired")
    except AssertionError:
        raise AssertionError(install.operator.output()[-3000:]) from None
    install.wait_ready(name)


def test_the_settled_operator_writes_nothing(install):
    """A real apiserver defaults fields and drops empty lists: an operator comparing naively would patch
    its children at every resync. Over two minutes (eight resyncs), no write to any child."""
    name = sample_name()
    install.wait_ready(name)
    time.sleep(RESYNC_S)  # let any in-flight reconcile finish
    since = time.time()
    time.sleep(120)
    writes = install.c.writes_by(install.username, since, CHILD_RESOURCES, subresource=None)
    summary = [(w["verb"], w["objectRef"].get("resource"), w["objectRef"].get("name")) for w in writes]
    assert not writes, f"the operator wrote to its children while settled: {summary}"
    status_writes = install.c.writes_by(install.username, since, ("frauddemos",), subresource=None)
    assert len(status_writes) <= 1, [(w["verb"], w["objectRef"]) for w in status_writes]
    assert install.operator.alive()


def test_children_are_removed_by_the_garbage_collector(install):
    fd = {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": "gc", "namespace": NS},
        "spec": TWO_STORES,
    }
    install.c.apply(fd)
    install.wait_ready("gc")
    assert len(install.children("gc")) == expected_children("gc")
    install.c.kubectl("delete", "fd", "gc", "-n", NS, "--wait=true", "--timeout=60s")
    wait_for(lambda: not install.children("gc"), 60, 0.5, what="children garbage-collected")
    assert not install.c.get("pods", "-n", NS, "-l", f"{builders.L_INSTANCE}=gc")["items"] or wait_for(
        lambda: not install.c.get("pods", "-n", NS, "-l", f"{builders.L_INSTANCE}=gc")["items"], 60, 0.5
    )


def test_operator_killed_mid_reconcile_converges_without_duplicates(install):
    fd = {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": "crash", "namespace": NS},
        "spec": TWO_STORES,
    }
    install.c.apply(fd)
    wait_for(lambda: len(install.children("crash")) >= 2, 30, 0.05, what="the first children")
    install.operator.kill()
    partial = len(install.children("crash"))
    install.start_operator()
    install.wait_ready("crash")
    kids = install.children("crash")
    names = [(o["kind"], o["metadata"]["name"]) for o in kids]
    assert len(names) == len(set(names)) == expected_children("crash"), (partial, names)
    # one ReplicaSet per Deployment: the restarted operator did not change a template it had written
    for dep in [o for o in kids if o["kind"] == "Deployment"]:
        rs = [
            r
            for r in install.c.get("replicasets", "-n", NS)["items"]
            if any(ref["uid"] == dep["metadata"]["uid"] for ref in r["metadata"].get("ownerReferences", []))
        ]
        assert len(rs) == 1, (dep["metadata"]["name"], [r["metadata"]["name"] for r in rs])
    install.c.kubectl("delete", "fd", "crash", "-n", NS, "--wait=true")


def test_a_missing_rbac_rule_is_reported_on_the_fraud_demo(install):
    """The chart's Role without its NetworkPolicy rule: the real authorizer refuses, the operator says so
    on the FraudDemo and keeps running (no crash loop); with the rule back it converges."""
    (role,) = install.c.get("role", "-n", NS, "-l", f"app.kubernetes.io/instance={RELEASE}")["items"]
    original = json.loads(json.dumps(role))
    role["rules"] = [r for r in role["rules"] if "networkpolicies" not in r.get("resources", [])]
    assert len(role["rules"]) < len(original["rules"])
    for k in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
        role["metadata"].pop(k, None)
    install.c.kubectl("replace", "-f", "-", input=json.dumps(role))
    try:
        fd = {
            "apiVersion": crd.API_VERSION,
            "kind": crd.KIND,
            "metadata": {"name": "norbac", "namespace": NS},
            "spec": TWO_STORES,
        }
        install.c.apply(fd)

        def reported() -> bool:
            st = install.fd("norbac").get("status") or {}
            text = json.dumps(st.get("conditions", [])).lower()
            return "forbidden" in text and "networkpolic" in text

        try:
            wait_for(reported, 60, 0.5, what="the refusal reported in a condition")
        except AssertionError:
            raise AssertionError(f"{install.fd('norbac').get('status')}\n{install.operator.output()[-3000:]}") from None
        assert install.phase("norbac") != "Ready"
        assert install.operator.alive()
    finally:
        for k in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
            original["metadata"].pop(k, None)
        install.c.kubectl("replace", "-f", "-", input=json.dumps(original))
    install.wait_ready("norbac", timeout=180)
    install.c.kubectl("delete", "fd", "norbac", "-n", NS, "--wait=true")


def test_helm_upgrade_then_uninstall_leaves_nothing(install):
    name = sample_name()
    install.c.helm(
        "upgrade",
        RELEASE,
        "charts/frauddemo",
        "-n",
        NS,
        "--set",
        "sample.enabled=true",
        "--set",
        "operator.logLevel=DEBUG",
        *HOOK_RUNNER,
        "--wait",
        "--timeout",
        "120s",
    )
    assert chart_operator_env(install.c, NS, install.deployment)["FRAUDDEMO_OPERATOR_LOG_LEVEL"] == "DEBUG"
    install.wait_ready(name)
    assert install.fd(name)["metadata"]["finalizers"] == [FINALIZER]  # kopf's, for the operator's timers
    since = time.time()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        uninstalling = pool.submit(install.c.helm, "uninstall", RELEASE, "-n", NS, "--wait", "--timeout", "120s")
        hook, hook_user = run_hook_pod(install)
        assert hook.returncode == 0, (
            f"{hook.stdout}\n{hook.stderr}\n--- operator log:\n{install.operator.output()[-3000:]}"
        )
        # the operator, still there with its RBAC, let the sample go: the hook can only list and delete
        assert f"FraudDemo {NS}/{name} is gone" in hook.stdout, hook.stdout
        assert install.c.kubectl("get", "deployment", install.deployment, "-n", NS, check=False).returncode == 0
        uninstalling.result(180)
    writes = install.c.writes_by(hook_user, since, subresource=None)
    assert {(w["verb"], w["objectRef"].get("resource")) for w in writes} == {("delete", "frauddemos")}, writes
    install.operator.stop()  # its ServiceAccount is gone; so is its token's validity

    def empty() -> list[str]:
        left = []
        for res in (
            "fd",
            "jobs",
            "deployments",
            "statefulsets",
            "replicasets",
            "pods",
            "services",
            "configmaps",
            "secrets",
            "networkpolicies",
            "roles",
            "rolebindings",
            "serviceaccounts",
        ):
            for obj in install.c.get(res, "-n", NS)["items"]:
                n = obj["metadata"]["name"]
                if (res, n) in (("serviceaccounts", "default"), ("configmaps", "kube-root-ca.crt")):
                    continue
                left.append(f"{res}/{n}")
        return left

    try:
        wait_for(lambda: not empty(), 90, 1, what="nothing left in the namespace")
    except AssertionError:
        raise AssertionError(f"left behind: {empty()}") from None
    # Helm never deletes a chart's CRDs (crds/): deleting one would delete every FraudDemo in the cluster.
    assert install.c.kubectl("get", "crd", f"{crd.PLURAL}.{crd.GROUP}", check=False).returncode == 0


def run_hook_pod(install: Install) -> tuple[subprocess.CompletedProcess, str]:
    """Play the kubelet of the uninstall hook's pod: run its container's command from the installed wheel
    as its ServiceAccount (a TokenRequest token, as the pod's projected one), then report the exit code in
    the pod's status, so that the Job controller, and helm, see the Job finish as it did."""

    def pending_hook_pod():
        pods = install.c.get("pods", "-n", NS, "-l", "app.kubernetes.io/component=uninstall-hook")["items"]
        return pods[0] if pods else None

    pod = wait_for(pending_hook_pod, 60, 0.5, what="the uninstall hook's pod")
    spec = pod["spec"]
    assert not spec.get("nodeName") and pod["status"].get("phase") == "Pending", pod["status"]
    (c,) = spec["containers"]
    sa = spec["serviceAccountName"]
    kubeconfig = install.c.token_kubeconfig(NS, sa, install.tmp / "hook.kubeconfig")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FRAUDDEMO_") and k != "KUBECONFIG"},
        **{e["name"]: e["value"] for e in c.get("env", []) if "value" in e},
        "FRAUDDEMO_OPERATOR_KUBECONFIG": str(kubeconfig),
    }
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    proc = subprocess.run([install.frauddemo, *c["args"]], env=env, capture_output=True, text=True, timeout=300)
    finished = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    terminated = {
        "exitCode": proc.returncode,
        "reason": "Completed" if proc.returncode == 0 else "Error",
        "startedAt": started,
        "finishedAt": finished,
    }
    status = {
        "phase": "Succeeded" if proc.returncode == 0 else "Failed",
        "startTime": started,
        "containerStatuses": [
            {
                "name": c["name"],
                "image": c["image"],
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "started": False,
                "state": {"terminated": terminated},
            }
        ],
    }
    name = pod["metadata"]["name"]
    install.c.kubectl(
        "patch", "pod", name, "-n", NS, "--subresource=status", "--type=merge", "-p", json.dumps({"status": status})
    )
    return proc, f"system:serviceaccount:{NS}:{sa}"
