"""The chart's RBAC grants every API call the operator makes (frauddemo_operator.kube.CALLS, which
the emulator tests check against the requests the API really received), and nothing more, in both
the namespaced and the cluster-wide mode; its pre-delete hook gets its own ServiceAccount and a Role
with exactly what `frauddemo delete-demos` does (frauddemo_operator.uninstall.CALLS), and runs before
anything of the release is deleted."""

from __future__ import annotations

import argparse

import pytest
from chart_support import NAMESPACE, RELEASE, find, one
from chart_support import render as render_all

from frauddemo_operator import cli, kube, uninstall

# The chart runs the operator standalone (one replica, Recreate): kopf's peering objects are never touched.
PEERING = {"kopfpeerings", "clusterkopfpeerings"}
NEEDED = {(g, r, v) for g, r, verbs in kube.CALLS if r not in PEERING for v in verbs}
HOOK = "helm.sh/hook"


def is_hook(obj: dict) -> bool:
    return HOOK in (obj["metadata"].get("annotations") or {})


def render(values: dict | None = None) -> list[dict]:
    """The chart's objects but its hooks (tested below)."""
    return [o for o in render_all(values) if not is_hook(o)]


def hooks(values: dict | None = None) -> list[dict]:
    return [o for o in render_all(values) if is_hook(o)]


def granted(rules: list[dict]) -> set[tuple[str, str, str]]:
    """(group, resource, verb) triples a list of PolicyRules grants; wildcards are refused outright."""
    out = set()
    for rule in rules:
        assert not rule.get("nonResourceURLs"), rule
        assert not rule.get("resourceNames"), f"the operator names its objects per FraudDemo: {rule}"
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"wildcard in {field}: {rule}"
        out |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    return out


def bound_to_operator(binding: dict, objs: list[dict], role_kind: str, role_name: str) -> None:
    dep = one(objs, "Deployment")
    sa = dep["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role_name}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]


def test_every_call_the_operator_makes_is_listed_with_its_group():
    # A sanity check of the list itself: the peering rules are the only ones the chart leaves out.
    assert {r for _, r, _ in kube.CALLS} - {r for _, r, _ in NEEDED} == PEERING


@pytest.mark.parametrize("namespaces", [[], ["shop", "depot"]], ids=["release namespace", "two namespaces"])
def test_namespaced_mode_grants_exactly_what_the_operator_needs(namespaces):
    objs = render({"operator.watchNamespaces": namespaces} if namespaces else None)
    served = namespaces or [NAMESPACE]
    assert not find(objs, "ClusterRole") and not find(objs, "ClusterRoleBinding")
    roles = find(objs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(served)
    for role in roles:
        ns = role["metadata"]["namespace"]
        assert granted(role["rules"]) == NEEDED, f"Role in {ns}"
        (binding,) = [b for b in find(objs, "RoleBinding") if b["metadata"]["namespace"] == ns]
        bound_to_operator(binding, objs, "Role", role["metadata"]["name"])


def test_cluster_wide_mode_grants_exactly_what_the_operator_needs():
    objs = render({"operator.clusterWide": True})
    assert not find(objs, "Role") and not find(objs, "RoleBinding")
    role = one(objs, "ClusterRole")
    assert granted(role["rules"]) == NEEDED
    bound_to_operator(one(objs, "ClusterRoleBinding"), objs, "ClusterRole", role["metadata"]["name"])


def test_service_account_token_only_in_the_operator_pod():
    objs = render()
    assert one(objs, "ServiceAccount")["automountServiceAccountToken"] is False
    assert one(objs, "Deployment")["spec"]["template"]["spec"]["automountServiceAccountToken"] is True


def test_rbac_off_and_existing_service_account():
    objs = render({"rbac.create": False, "serviceAccount.create": False, "serviceAccount.name": "ops"})
    assert not [
        o for o in objs if o["kind"] in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "ServiceAccount")
    ]
    assert one(objs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ops"


def test_names_follow_the_release():
    objs = render({"operator.clusterWide": True})
    assert one(objs, "ClusterRole")["metadata"]["name"] == RELEASE  # release "frauddemo" holds the chart name


# --- the pre-delete hook ---------------------------------------------------------------------------------

HOOK_NEEDS = {(g, r, v) for g, r, verbs in uninstall.CALLS for v in verbs}


@pytest.mark.parametrize(
    "values, cleaned",
    [
        (None, [NAMESPACE]),
        ({"operator.clusterWide": True}, [NAMESPACE]),
        ({"operator.watchNamespaces": ["shop"], "sample.enabled": True, "sample.namespace": "shop"}, ["shop"]),
        (
            {"operator.watchNamespaces": [NAMESPACE, "shop"], "sample.enabled": True, "sample.namespace": "shop"},
            [NAMESPACE, "shop"],
        ),
    ],
    ids=["release namespace", "cluster-wide", "sample elsewhere", "release namespace and sample"],
)
def test_the_uninstall_hook_deletes_the_fraud_demos_first_with_least_privilege(values, cleaned):
    objs = hooks(values)
    assert {o["kind"] for o in objs} == {"ServiceAccount", "Role", "RoleBinding", "Job"}
    job = one(objs, "Job")
    sa = one(objs, "ServiceAccount")
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"] != f"{RELEASE}-operator"
    assert sa["automountServiceAccountToken"] is False and pod["automountServiceAccountToken"] is True
    roles = find(objs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(cleaned)
    for role in roles:
        ns = role["metadata"]["namespace"]
        assert granted(role["rules"]) == HOOK_NEEDS, f"hook Role in {ns}"
        (binding,) = [b for b in find(objs, "RoleBinding") if b["metadata"]["namespace"] == ns]
        assert binding["roleRef"]["name"] == role["metadata"]["name"]
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}
        ]
    # every piece is a pre-delete hook; the RBAC exists before the Job starts; all removed once it succeeded
    weight = {}
    for o in objs:
        ann = o["metadata"]["annotations"]
        assert ann[HOOK] == "pre-delete", o["metadata"]["name"]
        assert ann["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
        weight[o["kind"]] = max(weight.get(o["kind"], -999), int(ann["helm.sh/hook-weight"]))
    assert weight["ServiceAccount"] < weight["Job"] and weight["Role"] < weight["Job"]
    assert weight["RoleBinding"] < weight["Job"]
    # the container runs `frauddemo delete-demos` on those namespaces, bounded in time
    (c,) = pod["containers"]
    assert c["image"] == one(render(values), "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    p = argparse.ArgumentParser()
    cli.add_commands(p.add_subparsers())
    args = p.parse_args(c["args"])
    assert args.fn is cli.cmd_delete_demos and args.namespaces == cleaned and args.timeout == 120
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] > args.timeout
    assert pod["restartPolicy"] == "Never"


def test_no_uninstall_hook_when_off_without_rbac_or_with_nothing_to_delete():
    assert not hooks({"uninstallHook.enabled": False})
    assert not hooks({"rbac.create": False, "serviceAccount.create": False, "serviceAccount.name": "ops"})
    assert not hooks({"operator.watchNamespaces": ["shop"]})  # the release's namespace is not served, no sample
