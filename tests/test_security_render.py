"""What the operator and the chart render for security, evaluated rather than spot-checked:
- NetworkPolicies: every flow between a FraudDemo's pods, pods outside it and other namespaces, on
  every port that matters, worked out from the rendered policies with Kubernetes' semantics, is
  exactly the set the demo needs (a default deny, then POS -> its store, syncers -> their link's
  stores, detector -> stores, a store's servers to each other, anyone -> the detector's HTTP port,
  anyone (Prometheus) -> the syncers' metrics port, DNS out).
- securityContext: every container the chart renders and every container the operator builds for
  the chart's sample (and for a spec with every option on) meets the Pod Security Standards'
  "restricted" profile, with a read-only root filesystem and a non-root user.
"""

from __future__ import annotations

import itertools

import pytest
import yaml
from chart_support import render, restricted_violations

from frauddemo_operator import builders, crd, models
from frauddemo_operator.builders import Owner

NS = "shop"
OWNER = Owner("demo", NS, "uid-1")
STORE, HTTP, METRICS, DNS, OTHER = builders.STORE_PORT, builders.DETECTOR_PORT, builders.SYNCER_METRICS_PORT, 53, 22
PORTS = (STORE, HTTP, METRICS, DNS, OTHER)
# Pods that are not the FraudDemo's: a neighbour in its namespace, Prometheus, the operator, kube-dns.
OUTSIDERS = {
    "neighbour": (NS, {"app": "something-else"}),
    "prometheus": ("monitoring", {"app.kubernetes.io/name": "prometheus"}),
    "operator": ("frauddemo", {"app.kubernetes.io/name": "frauddemo-operator"}),
    "kube-dns": ("kube-system", {"k8s-app": "kube-dns"}),
}


# --- a NetworkPolicy evaluator (networking.k8s.io/v1 semantics; no ipBlock is rendered) -------------


def selects(sel: dict, labels: dict) -> bool:
    """A label selector; {} selects everything."""
    if any(labels.get(k) != v for k, v in (sel.get("matchLabels") or {}).items()):
        return False
    for e in sel.get("matchExpressions") or []:
        present, value = e["key"] in labels, labels.get(e["key"])
        ok = {
            "In": present and value in e.get("values", []),
            "NotIn": value not in e.get("values", []),
            "Exists": present,
            "DoesNotExist": not present,
        }[e["operator"]]
        if not ok:
            return False
    return True


def peer_matches(peer: dict, policy_ns: str, pod: tuple[str, dict]) -> bool:
    ns, labels = pod
    assert "ipBlock" not in peer, "the evaluator does not model ipBlock"
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": ns}):
            return False
    elif ns != policy_ns:
        return False
    return selects(peer.get("podSelector", {}), labels)


def rule_allows(rule: dict, side: str, policy_ns: str, peer: tuple[str, dict], port: int) -> bool:
    peers = rule.get(side)
    ports = rule.get("ports")
    return (not peers or any(peer_matches(p, policy_ns, peer) for p in peers)) and (
        not ports or any(p.get("port") == port for p in ports)
    )


def allowed(policies: list[dict], src: tuple[str, dict], dst: tuple[str, dict], port: int) -> bool:
    """A connection is open when the source's egress and the destination's ingress both allow it; a pod
    no policy of that type selects is open in that direction."""

    def side(pod, ptype, key, other):
        ns, labels = pod
        mine = [
            p
            for p in policies
            if p["metadata"]["namespace"] == ns
            and ptype in p["spec"]["policyTypes"]
            and selects(p["spec"]["podSelector"], labels)
        ]
        return not mine or any(
            rule_allows(r, key, ns, other, port)
            for p in mine
            for r in p["spec"].get(key.replace("from", "ingress").replace("to", "egress"), [])
        )

    return side(src, "Egress", "to", dst) and side(dst, "Ingress", "from", src)


# --- the demo's pods and the flows it needs -------------------------------------------------------


def demo_pods(children) -> dict[str, tuple[str, dict]]:
    return {
        c["metadata"]["name"]: (c["metadata"]["namespace"], c["spec"]["template"]["metadata"]["labels"])
        for c in children
        if c["kind"] in ("StatefulSet", "Deployment")
    }


def needed(spec: models.Spec, pods: dict) -> set[tuple[str, str, int]]:
    fd = OWNER.name
    store_of = {builders.store_name(fd, s): s for s in spec.store_names}
    out = set()
    for src, dst in itertools.product(list(pods) + list(OUTSIDERS), repeat=2):
        if src in OUTSIDERS and dst in OUTSIDERS:
            continue
        if dst in store_of:
            s = store_of[dst]
            clients = {dst, builders.detector_name(fd)}
            clients |= {builders.pos_name(fd, s)} if spec.pos.enabled else set()
            clients |= {builders.hacked_pos_name(fd)} if spec.hacked_store == s else set()
            clients |= {builders.syncer_name(fd, a, b) for a, b in spec.links if s in (a, b)}
            if src in clients:
                out.add((src, dst, STORE))
        if dst == builders.detector_name(fd) and src in OUTSIDERS:
            out.add((src, dst, HTTP))
        if "-sync-" in dst and src in OUTSIDERS:
            out.add((src, dst, METRICS))
        if src in pods and dst in OUTSIDERS:
            out.add((src, dst, DNS))
    return out


def open_flows(children, pods) -> set[tuple[str, str, int]]:
    policies = [c for c in children if c["kind"] == "NetworkPolicy"]
    everyone = {**pods, **OUTSIDERS}
    return {
        (s, d, port)
        for s, d in itertools.product(everyone, repeat=2)
        if not (s in OUTSIDERS and d in OUTSIDERS)
        for port in PORTS
        if allowed(policies, everyone[s], everyone[d], port)
    }


SPECS = {
    "two stores": {"stores": [{"name": "a"}, {"name": "b"}]},
    "three stores, hacked POS at c": {
        "stores": [{"name": "a"}, {"name": "b"}, {"name": "c"}],
        "pos": {"hacked": {"store": "c"}},
    },
    "no points of sale": {
        "stores": [{"name": "a"}, {"name": "b"}],
        "pos": {"enabled": False, "hacked": {"enabled": False}},
    },
    "hacked POS only": {"stores": [{"name": "x1"}, {"name": "y-2"}], "pos": {"enabled": False}},
}


@pytest.mark.parametrize("raw", SPECS.values(), ids=SPECS)
def test_open_flows_are_exactly_the_needed_ones(raw):
    spec = models.parse(OWNER.name, raw)
    children = builders.desired(OWNER, spec, service_monitors=True)
    pods = demo_pods(children)
    got, want = open_flows(children, pods), needed(spec, pods)
    assert not got - want, f"open but not needed: {sorted(got - want)}"
    assert not want - got, f"needed but closed: {sorted(want - got)}"


def test_every_pod_of_the_demo_is_under_a_default_deny():
    children = builders.desired(
        OWNER, models.parse(OWNER.name, SPECS["three stores, hacked POS at c"]), service_monitors=True
    )
    deny = [c for c in children if c["kind"] == "NetworkPolicy" and c["metadata"]["name"] == "demo-default-deny"]
    assert len(deny) == 1 and deny[0]["spec"]["ingress"] == [] and deny[0]["spec"]["egress"] == []
    assert set(deny[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    for name, (_, labels) in demo_pods(children).items():
        assert selects(deny[0]["spec"]["podSelector"], labels), name
    for _, labels in OUTSIDERS.values():
        assert not selects(deny[0]["spec"]["podSelector"], labels)


def test_another_demo_in_the_namespace_is_walled_off():
    """Two FraudDemos side by side: no store of one is reachable from any pod of the other."""
    raw = SPECS["two stores"]
    mine = builders.desired(OWNER, models.parse("demo", raw), service_monitors=False)
    other = builders.desired(Owner("other", NS, "uid-2"), models.parse("other", raw), service_monitors=False)
    policies = [c for c in mine + other if c["kind"] == "NetworkPolicy"]
    for (a, pa), (b, pb) in itertools.product(demo_pods(mine).items(), demo_pods(other).items()):
        for src, dst in ((pa, pb), (pb, pa)):
            assert not any(allowed(policies, src, dst, p) for p in (STORE, METRICS, OTHER)), (a, b)


def test_switching_policies_off_renders_none():
    raw = {**SPECS["two stores"], "security": {"networkPolicies": False}}
    children = builders.desired(OWNER, models.parse(OWNER.name, raw), service_monitors=True)
    assert not [c for c in children if c["kind"] == "NetworkPolicy"]


def test_the_evaluator_reads_policies_the_way_kubernetes_does():
    """Its own cases: no policy means open; a rule without peers or ports allows every one; policies add up."""
    a, b = (NS, {"app": "a"}), (NS, {"app": "b"})
    assert allowed([], a, b, 1)
    deny = {"metadata": {"namespace": NS}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": []}}
    assert not allowed([deny], a, b, 1)
    web = {
        "metadata": {"namespace": NS},
        "spec": {
            "podSelector": {"matchLabels": {"app": "b"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"ports": [{"port": 80}]}],
        },
    }
    assert allowed([deny, web], a, b, 80) and not allowed([deny, web], a, b, 81)
    assert allowed([deny, web], ("elsewhere", {}), b, 80)
    only_ns = {"from": [{"podSelector": {}}]}
    assert rule_allows(only_ns, "from", NS, a, 9) and not rule_allows(only_ns, "from", NS, ("other", {}), 9)


# --- securityContext -------------------------------------------------------------------------------


def pod_specs(objs) -> dict[str, dict]:
    return {
        f"{o['kind']}/{o['metadata']['name']}": o["spec"]["template"]["spec"]
        for o in objs
        if o.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job")
    }


EVERYTHING = {
    "stores": [{"name": "a", "replicas": 3, "storage": {"size": "1Gi"}}, {"name": "b"}, {"name": "c"}],
    "pos": {"hacked": {"store": "a"}},
    "detection": {"replicas": 2},
}


def test_every_container_of_the_chart_and_of_its_sample_is_restricted():
    objs = render(
        {
            "sample.enabled": True,
            "monitoring.serviceMonitor.enabled": True,
            "grafanaDashboard.enabled": True,
            "monitoring.prometheusRule.enabled": True,
        }
    )
    chart_pods = pod_specs(objs)
    assert chart_pods, "the chart renders the operator's Deployment"
    (sample,) = [o for o in objs if o["kind"] == crd.KIND]
    children = builders.desired(
        Owner(sample["metadata"]["name"], sample["metadata"]["namespace"], "u"),
        models.parse(sample["metadata"]["name"], sample["spec"]),
        service_monitors=True,
    )
    demo_pods_ = pod_specs(children)
    assert any(k.startswith("StatefulSet/") for k in demo_pods_) and any("detector" in k for k in demo_pods_)
    for where, pod in {**chart_pods, **demo_pods_}.items():
        assert not restricted_violations(pod), (where, restricted_violations(pod))
        # only the operator and the uninstall hook talk to the API
        assert pod.get("automountServiceAccountToken") is False or where in (
            "Deployment/frauddemo-operator",
            "Job/frauddemo-delete-demos",
        )


def test_every_container_with_every_option_on_is_restricted():
    children = builders.desired(OWNER, models.parse(OWNER.name, EVERYTHING), service_monitors=True)
    pods = pod_specs(children)
    assert len(pods) >= 3 + 6 + 3 + 1 + 1  # stores, syncers, POS, hacked POS, detector
    for where, pod in pods.items():
        assert not restricted_violations(pod), (where, restricted_violations(pod))
        assert pod["automountServiceAccountToken"] is False, where


def test_the_checker_catches_each_relaxation():
    base = pod_specs(builders.desired(OWNER, models.parse(OWNER.name, SPECS["two stores"]), service_monitors=False))[
        "Deployment/demo-detector"
    ]
    assert restricted_violations(base) == []
    for path, value in (
        (("securityContext", "runAsNonRoot"), False),
        (("securityContext", "seccompProfile"), {}),
        (("containers", 0, "securityContext", "allowPrivilegeEscalation"), True),
        (("containers", 0, "securityContext", "readOnlyRootFilesystem"), False),
        (("containers", 0, "securityContext", "capabilities"), {"drop": ["NET_RAW"]}),
        (("containers", 0, "securityContext", "runAsUser"), 0),
        (("hostNetwork",), True),
    ):
        pod = yaml.safe_load(yaml.safe_dump(base))
        node = pod
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = value
        assert restricted_violations(pod), path
