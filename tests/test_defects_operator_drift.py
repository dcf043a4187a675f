"""Issue 16, item 3: no perpetual drift against a real API server.

A real kube-apiserver returns a child not as it was sent: empty lists and string maps are dropped
(omitempty), quantities come back in canonical form ("1000m" -> "1", "1024Mi" -> "1Gi"), and many fields
are defaulted. `as_served` below plays that from the API's documented behaviour, and every child the
operator builds must still read as "not drifted", while real edits still do.
"""

from __future__ import annotations

import copy
from decimal import Decimal

import pytest

from frauddemo_operator import builders, models, reconcile

OWNER = builders.Owner("demo", "ns", "uid-1")

FULL = {
    "stores": [
        {
            "name": "a",
            "storage": {"size": "1024Mi"},
            "resources": {
                "requests": {"cpu": "1000m", "memory": "1024Mi"},
                "limits": {"cpu": "1500m", "memory": "2048Mi"},
            },
        },
        {"name": "b", "storage": {"size": "1Gi", "storageClassName": "fast"}},
        {"name": "c", "replicas": 1},
    ],
    "dashboard": {"labels": {"team": "fraud"}},
}

# Empty objects the server keeps: pointers to structs (an emptyDir volume, a selector of everything).
KEPT = {"emptyDir", "namespaceSelector", "podSelector"}
_BIN = [("Ei", 2**60), ("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)]
_DEC = [("E", 18), ("P", 15), ("T", 12), ("G", 9), ("M", 6), ("k", 3), ("", 0), ("m", -3), ("u", -6), ("n", -9)]


def canonical(q: str) -> str:
    """resource.Quantity's canonical form: no fraction, the largest suffix of the input's family
    (binary when it had a binary suffix and the value is whole bytes, else decimal)."""
    value = reconcile.quantity(q)
    assert value is not None, q
    if q.endswith(tuple(s for s, _ in _BIN)) and value == value.to_integral_value():
        for suffix, factor in _BIN:
            if value % factor == 0 and value >= factor:
                return f"{int(value // factor)}{suffix}"
        return str(int(value))
    for suffix, exp in _DEC:
        scaled = value / Decimal(10) ** exp
        if scaled == scaled.to_integral_value() and (scaled != 0 or exp == 0):
            return f"{int(scaled)}{suffix}"
    raise AssertionError(q)


def test_canonical_forms():
    assert [canonical(q) for q in ("1000m", "1024Mi", "1536Mi", "64Mi", "0.5", "1.5", "2048Ki", "500m", "1")] == [
        "1",
        "1Gi",
        "1536Mi",
        "64Mi",
        "500m",
        "1500m",
        "2Mi",
        "500m",
        "1",
    ]


def _drop_empty(obj, key=None):
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            v = _drop_empty(v, k)
            if v is None or v == [] or (v == {} and k not in KEPT):
                continue
            out[k] = v
        return out
    if isinstance(obj, list):
        return [_drop_empty(x, key) for x in obj]
    return obj


def _canonical_quantities(obj, quantity_map=False):
    if isinstance(obj, dict):
        return {
            k: (
                canonical(v)
                if isinstance(v, str) and (quantity_map or k == "sizeLimit")
                else _canonical_quantities(v, k in ("requests", "limits"))
            )
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [_canonical_quantities(x) for x in obj]
    return obj


def _probe(p: dict) -> None:
    p.setdefault("timeoutSeconds", 1)
    p.setdefault("periodSeconds", 10)
    p.setdefault("successThreshold", 1)
    p.setdefault("failureThreshold", 3)
    if "httpGet" in p:
        p["httpGet"].setdefault("scheme", "HTTP")


def _pod(spec: dict) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        for p in c.get("ports", []):
            p.setdefault("protocol", "TCP")
        for e in c.get("env", []):
            ref = (e.get("valueFrom") or {}).get("fieldRef")
            if ref is not None:
                ref.setdefault("apiVersion", "v1")
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if probe in c:
                _probe(c[probe])
    for v in spec.get("volumes", []):
        for src in ("secret", "configMap"):
            if src in v:
                v[src].setdefault("defaultMode", 420)


def as_served(obj: dict) -> dict:
    """What a real API server would return for `obj` once created (and its controllers ran)."""
    out = _canonical_quantities(_drop_empty(copy.deepcopy(obj)))
    meta = out["metadata"]
    meta.update(
        uid="u-1",
        resourceVersion="12345",
        creationTimestamp="2026-01-01T00:00:00Z",
        managedFields=[{"manager": "frauddemo-operator", "operation": "Update"}],
    )
    kind, spec = out["kind"], out.get("spec")
    if kind in ("Deployment", "StatefulSet"):
        meta["generation"] = 1
        spec["template"]["metadata"]["creationTimestamp"] = None
        _pod(spec["template"]["spec"])
        out["status"] = {"observedGeneration": 1, "replicas": spec["replicas"], "readyReplicas": spec["replicas"]}
    if kind == "Deployment":
        meta["annotations"] = {"deployment.kubernetes.io/revision": "1"}
        spec.setdefault("progressDeadlineSeconds", 600)
        if spec["strategy"]["type"] == "RollingUpdate":
            spec["strategy"]["rollingUpdate"] = {"maxSurge": "25%", "maxUnavailable": "25%"}
    if kind == "StatefulSet":
        spec["updateStrategy"].setdefault("rollingUpdate", {"partition": 0})
        spec.setdefault("persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"})
        for t in spec.get("volumeClaimTemplates", []):
            t.update(apiVersion="v1", kind="PersistentVolumeClaim", status={"phase": "Pending"})
            t["spec"]["volumeMode"] = "Filesystem"
    if kind == "Service":
        spec.update(
            clusterIP=spec.get("clusterIP", "10.96.0.17"),
            clusterIPs=[spec.get("clusterIP", "10.96.0.17")],
            ipFamilies=["IPv4"],
            ipFamilyPolicy="SingleStack",
            sessionAffinity="None",
            internalTrafficPolicy="Cluster",
        )
        for p in spec["ports"]:
            p.setdefault("protocol", "TCP")
    if kind == "Secret":
        out["data"] = {"password": "c2VjcmV0"}
    return out


def children():
    spec = models.parse("demo", FULL)
    return builders.desired(OWNER, spec, service_monitors=True)


def test_served_children_are_not_drift():
    kids = children()
    assert {k["kind"] for k in kids} >= {
        "Secret",
        "ConfigMap",
        "Service",
        "StatefulSet",
        "Deployment",
        "NetworkPolicy",
        "ServiceMonitor",
    }
    drifted = [builders.key(d) for d in kids if reconcile.drifted(d, as_served(d))]
    assert not drifted
    assert not [builders.key(d) for d in kids if reconcile.needs_recreate(d, as_served(d))]


def test_the_served_form_does_drop_and_canonicalise():
    """The test's model of the server is not a no-op: the operator's own children do change shape."""
    kids = {builders.key(d): d for d in children()}
    deny = as_served(kids[("NetworkPolicy", "demo-default-deny")])
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    store = as_served(kids[("StatefulSet", "demo-store-a")])
    res = store["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert res == {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1500m", "memory": "2Gi"}}
    assert store["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "1Gi"


def _edit(kids, key, fn):
    obj = as_served(kids[key])
    fn(obj)
    return reconcile.drifted(kids[key], obj)


@pytest.mark.parametrize(
    "key, fn",
    [
        (("NetworkPolicy", "demo-default-deny"), lambda o: o["spec"].__setitem__("ingress", [{}])),
        (
            ("NetworkPolicy", "demo-default-deny"),
            lambda o: o["spec"].__setitem__("egress", [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]),
        ),
        (
            ("StatefulSet", "demo-store-a"),
            lambda o: o["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"].__setitem__(
                "memory", "1Gi"
            ),
        ),
        (("StatefulSet", "demo-store-a"), lambda o: o["spec"]["template"]["spec"]["containers"][0].pop("env")),
        (("StatefulSet", "demo-store-a"), lambda o: o["spec"]["template"]["spec"]["volumes"][1].pop("emptyDir")),
        (
            ("Deployment", "demo-sync-a-b"),
            lambda o: o["spec"]["template"]["spec"]["containers"][0].__setitem__("image", "evil:1"),
        ),
        (("Deployment", "demo-detector"), lambda o: o["spec"]["template"]["spec"]["containers"][0]["env"].pop()),
        (("Service", "demo-detector"), lambda o: o["spec"]["ports"][0].__setitem__("port", 1)),
        (("ConfigMap", "demo-dashboard"), lambda o: o["metadata"]["labels"].pop("team")),
    ],
)
def test_real_edits_are_still_drift(key, fn):
    kids = {builders.key(d): d for d in children()}
    assert _edit(kids, key, fn)


def test_missing_equals_empty_only_where_the_server_drops_it():
    assert reconcile.matches({"env": [], "labels": {}, "x": None}, {})
    assert reconcile.matches({"ingress": []}, {"ingress": None})
    assert not reconcile.matches({"ingress": []}, {"ingress": [{}]})
    assert not reconcile.matches({"emptyDir": {}}, {"hostPath": {"path": "/"}})
    assert reconcile.matches({"emptyDir": {}}, {"emptyDir": {}})
    assert reconcile.matches("1e3", "1k") and reconcile.matches(".5", "500m") and not reconcile.matches("1e3", "1")
