"""Every API call the operator makes (kopf's and its own) is one the chart's RBAC grants:
`frauddemo_operator.kube.CALLS` is that list, checked against what the API actually received."""

from __future__ import annotations

from frauddemo_operator import kube
from frauddemo_testkit.testing import TWO_STORES, wait_for

pytest_plugins = ("frauddemo_testkit.pytest_plugin",)

DISCOVERY = {"/api", "/apis", "/version"}


def rbac_request(method: str, path: str, query: dict) -> tuple[str, str, str] | None:
    """(api group, resource[/subresource], verb) of a request, or None for discovery."""
    segs = [s for s in path.split("/") if s]
    if path in DISCOVERY or (segs[0] == "api" and len(segs) <= 2) or (segs[0] == "apis" and len(segs) <= 3):
        return None
    group, rest = ("", segs[2:]) if segs[0] == "api" else (segs[1], segs[3:])
    if rest[0] == "namespaces" and len(rest) >= 3:
        rest = rest[2:]
    name = rest[1] if len(rest) > 1 else None
    resource = rest[0] + ("/" + "/".join(rest[2:]) if len(rest) > 2 else "")
    if method == "GET":
        verb = "watch" if query.get("watch") == "true" else ("get" if name else "list")
    else:
        verb = {
            "POST": "create",
            "PATCH": "patch",
            "PUT": "update",
            "DELETE": "delete" if name else "deletecollection",
        }[method]
    return group, resource, verb


def test_every_operator_call_is_granted(kube_cluster, kube_ns):
    # exercise everything: create, update, drift repair, status, events, delete
    kube_cluster.apply_fd(kube_ns, "demo", TWO_STORES)
    kube_cluster.wait_phase(kube_ns, "demo", "Ready")
    kube_cluster.patch_fd(kube_ns, "demo", {"spec": {"stores": [{"name": "a"}, {"name": "c"}]}})
    kube_cluster.wait_phase(kube_ns, "demo", "Ready")
    kube_cluster.emu.delete("statefulsets", kube_ns, "demo-store-c")
    wait_for(lambda: kube_cluster.emu.get("statefulsets", kube_ns, "demo-store-c"), what="repaired")
    kube_cluster.emu.delete("secrets", kube_ns, "demo-store-a-auth")
    wait_for(lambda: kube_cluster.emu.get("secrets", kube_ns, "demo-store-a-auth"), what="repaired")
    kube_cluster.apply_fd(kube_ns, "bad", {"stores": [{"name": "a"}, {"name": "a"}]})
    kube_cluster.wait_phase(kube_ns, "bad", "Invalid")
    kube_cluster.delete_fd(kube_ns, "demo")

    granted = {(g, r, v) for g, r, verbs in kube.CALLS for v in verbs}
    seen, missing = set(), set()
    for req in kube_cluster.emu.requests():
        if not req.agent.startswith(("kopf/", "frauddemo-operator")):
            continue
        call = rbac_request(req.method, req.path, req.query)
        if call is None:
            continue
        seen.add(call)
        if call not in granted:
            missing.add(call)
    assert not missing, f"calls the RBAC list does not grant: {sorted(missing)}"
    # and the operator really used the main ones
    for call in [
        ("frauddemo.io", "frauddemos", "watch"),
        ("frauddemo.io", "frauddemos/status", "patch"),
        ("apps", "statefulsets", "create"),
        ("apps", "deployments", "patch"),
        ("", "secrets", "create"),
        ("", "events", "create"),
        ("apps", "statefulsets", "list"),
        ("apps", "deployments", "delete"),
    ]:
        assert call in seen, call
