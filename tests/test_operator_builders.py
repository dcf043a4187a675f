"""The pure manifest builders: what a FraudDemo's spec turns into, checked without any API."""

from __future__ import annotations

import json
import re
from importlib import resources

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from frauddemo.attack_modes import AttackMode
from frauddemo.pos import parse_mix
from frauddemo_operator import builders, models
from frauddemo_operator.builders import Owner

OWNER = Owner("demo", "shop", "uid-1")
SAMPLE = yaml.safe_load(resources.files("frauddemo_operator").joinpath("samples/frauddemo.yaml").read_text())
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def spec(**over) -> models.Spec:
    raw = {"stores": [{"name": "a"}, {"name": "b"}]}
    raw.update(over)
    return models.parse("demo", raw)


def by_key(children):
    return {builders.key(c): c for c in children}


def containers(obj):
    pod = obj["spec"]["template"]["spec"]
    return pod.get("initContainers", []) + pod["containers"]


def test_two_stores_make_every_child():
    kids = by_key(builders.desired(OWNER, spec(), service_monitors=True))
    names = {k for k in kids}
    for s in ("a", "b"):
        assert ("Secret", f"demo-store-{s}-auth") in names
        assert ("ConfigMap", f"demo-store-{s}-config") in names
        assert ("StatefulSet", f"demo-store-{s}") in names
        assert ("Service", f"demo-store-{s}") in names
        assert ("Service", f"demo-store-{s}-headless") in names
        assert ("Deployment", f"demo-pos-{s}") in names
        assert ("NetworkPolicy", f"demo-store-{s}-ingress") in names
        assert ("NetworkPolicy", f"demo-pos-{s}-egress") in names
    assert {n for k, n in names if k == "Deployment" and "sync" in n} == {"demo-sync-a-b", "demo-sync-b-a"}
    assert ("Deployment", "demo-hacked-pos") in names
    assert ("Deployment", "demo-detector") in names and ("Service", "demo-detector") in names
    assert ("ConfigMap", "demo-dashboard") in names
    assert ("ServiceMonitor", "demo") in names
    assert ("Secret", "demo-terminal-key") in names
    assert ("Secret", "demo-api-token") in names
    assert {n for k, n in names if k == "NetworkPolicy"} >= {
        "demo-default-deny",
        "demo-store-clients-egress",
        "demo-detector-ingress",
        "demo-syncers-ingress",
    }
    for s in ("a", "b"):  # a Redis user per client role, and the ACL file
        assert {("Secret", f"demo-store-{s}-{r}") for r in ("pos", "syncer", "detector", "dashboard", "acl")} <= names
    assert len(kids) == 40


def test_every_child_is_owned_and_labelled():
    for c in builders.desired(OWNER, spec(), service_monitors=True):
        meta = c["metadata"]
        assert meta["namespace"] == "shop"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "frauddemo.io/v1alpha1",
                "kind": "FraudDemo",
                "name": "demo",
                "uid": "uid-1",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        labels = meta["labels"]
        assert labels["app.kubernetes.io/name"] == "frauddemo"
        assert labels["app.kubernetes.io/instance"] == "demo"
        assert labels["app.kubernetes.io/managed-by"] == "frauddemo-operator"
        assert labels["app.kubernetes.io/part-of"] == "frauddemo"
        assert labels["app.kubernetes.io/component"]
        assert labels["frauddemo.io/fraud-demo"] == "demo"


def test_store_statefulset():
    kids = by_key(
        builders.desired(OWNER, spec(stores=[{"name": "a", "replicas": 3}, {"name": "b"}]), service_monitors=False)
    )
    sts = kids[("StatefulSet", "demo-store-a")]
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["serviceName"] == "demo-store-a-headless"
    pod = sts["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    store = pod["containers"][0]
    assert store["image"] == "valkey/valkey:8.1"
    assert store["ports"] == [{"name": "redis", "containerPort": 6379}]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert "ping" in store[probe]["exec"]["command"][-1]
    assert store["securityContext"]["allowPrivilegeEscalation"] is False
    assert store["resources"] == {
        "requests": {"cpu": "50m", "memory": "64Mi"},
        "limits": {"cpu": "500m", "memory": "3Gi"},
    }
    # no storage: an emptyDir, no claim templates
    assert {"name": "data", "emptyDir": {}} in pod["volumes"]
    assert "volumeClaimTemplates" not in sts["spec"]
    # the config: AOF on, the password from the Secret through an init step, replicas follow pod 0
    cm = kids[("ConfigMap", "demo-store-a-config")]
    assert "appendonly yes" in cm["data"]["store.conf"]
    assert "requirepass" not in cm["data"]["store.conf"]
    init = pod["initContainers"][0]
    assert "masterauth" in cm["data"]["init.sh"] and "replicaof" in cm["data"]["init.sh"]
    # the users: the ACL file from the store's ACL Secret, applied again by the agent beside the server
    assert "aclfile /etc/frauddemo/acl/users.acl" in cm["data"]["store.conf"]
    assert {"name": "acl", "mountPath": "/etc/frauddemo/acl", "readOnly": True} in store["volumeMounts"]
    assert {"name": "acl", "secret": {"secretName": "demo-store-a-acl", "defaultMode": 0o440}} in pod["volumes"]
    agent = pod["containers"][1]
    assert agent["command"] == ["frauddemo", "store-agent"] and "--acl-file" in agent["args"]
    env = {e["name"]: e for e in init["env"]}
    assert env["STORE_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "demo-store-a-auth", "key": "password"}
    assert env["PRIMARY_HOST"]["value"] == "demo-store-a-0.demo-store-a-headless"
    assert sts["spec"]["template"]["metadata"]["annotations"]["frauddemo.io/config-hash"] == builders.config_hash(cm)


def test_store_with_storage_gets_a_claim_per_server():
    kids = by_key(builders.desired(OWNER, models.parse("demo", SAMPLE["spec"]), service_monitors=False))
    sts = kids[("StatefulSet", "demo-store-a")]
    claim = sts["spec"]["volumeClaimTemplates"][0]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "6Gi"
    assert not any(v["name"] == "data" for v in sts["spec"]["template"]["spec"]["volumes"])
    sc = by_key(
        builders.desired(
            OWNER,
            spec(stores=[{"name": "a", "storage": {"size": "2Gi", "storageClassName": "fast"}}, {"name": "b"}]),
            service_monitors=False,
        )
    )[("StatefulSet", "demo-store-a")]
    assert sc["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "fast"


def mounted_secrets(workload: dict) -> set[str]:
    return {v["secret"]["secretName"] for v in workload["spec"]["template"]["spec"]["volumes"] if "secret" in v}


def test_no_password_ever_on_a_command_line_or_in_a_manifest():
    children = builders.desired(OWNER, models.parse("demo", SAMPLE["spec"]), service_monitors=True)
    for c in children:
        if c["kind"] in ("StatefulSet", "Deployment"):
            for ctr in containers(c):
                args = ctr.get("command", []) + ctr.get("args", [])
                # passwords only as files: every "password" in argv is a --...password-file flag or its path
                rest = [
                    a
                    for i, a in enumerate(args)
                    if not a.endswith("password-file")
                    and not (i and args[i - 1].endswith("password-file") and a.split("=")[-1].startswith("/"))
                ]
                assert "requirepass" not in " ".join(args) and "password" not in " ".join(rest).lower(), args
                for e in ctr.get("env", []):
                    if "PASSWORD" in e["name"] or "AUTH" in e["name"]:
                        assert "value" not in e and "secretKeyRef" in e["valueFrom"], e
        if c["kind"] == "Secret":
            assert "data" not in c and "stringData" not in c  # generated by the reconciler


def test_syncers_full_mesh_with_the_contract_flags():
    s = spec(stores=[{"name": "a"}, {"name": "b"}, {"name": "c"}], replication={"batchMax": 64, "retention": 5000})
    kids = by_key(builders.desired(OWNER, s, service_monitors=False))
    syncers = [c for k, c in kids.items() if k[0] == "Deployment" and "-sync-" in k[1]]
    assert len(syncers) == 6
    d = kids[("Deployment", "demo-sync-c-a")]
    ctr = d["spec"]["template"]["spec"]["containers"][0]
    assert ctr["args"] == [
        "syncer",
        "--source",
        "redis://syncer@demo-store-c:6379",
        "--target",
        "redis://syncer@demo-store-a:6379",
        "--source-password-file",
        "/var/run/frauddemo/redis/c-syncer/password",
        "--target-password-file",
        "/var/run/frauddemo/redis/a-syncer/password",
        "--source-name",
        "c",
        "--target-name",
        "a",
        "--metrics-port",
        "9100",
        "--batch-max",
        "64",
        "--retention",
        "5000",
    ]
    assert "env" not in ctr  # nothing to set, and the API server drops an empty list
    # only the syncer user's passwords of its two stores are mounted
    assert mounted_secrets(d) == {"demo-store-c-syncer", "demo-store-a-syncer"}
    assert d["spec"]["strategy"] == {"type": "Recreate"}
    assert d["spec"]["replicas"] == 1


def test_detector_and_points_of_sale():
    s = spec(
        pos={
            "rate": 7.5,
            "hacked": {
                "store": "a",
                "rate": 1,
                "attackMix": {"noPhoto": 1, "mismatchedPhoto": 0, "duplicateReceipt": 0},
            },
        },
        detection={"windowSeconds": 60, "alertScore": 80, "reviewScore": 50},
    )
    kids = by_key(builders.desired(OWNER, s, service_monitors=False))
    det = kids[("Deployment", "demo-detector")]["spec"]["template"]["spec"]["containers"][0]
    assert det["args"] == [
        "detector",
        "--store",
        "a=redis://detector@demo-store-a:6379",
        "--password-file",
        "a=/var/run/frauddemo/redis/a-detector/password",
        "--store",
        "b=redis://detector@demo-store-b:6379",
        "--password-file",
        "b=/var/run/frauddemo/redis/b-detector/password",
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
    ]
    assert mounted_secrets(kids[("Deployment", "demo-detector")]) == {
        "demo-api-token",
        "demo-store-a-detector",
        "demo-store-b-detector",
    }
    env = {e["name"]: e for e in det["env"]}
    assert env["FRAUDDEMO_DETECTION_WINDOW_SECONDS"]["value"] == "60"
    assert env["FRAUDDEMO_DETECTION_ALERT_SCORE"]["value"] == "80"
    assert det["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert det["livenessProbe"]["httpGet"]["path"] == "/healthz"
    svc = kids[("Service", "demo-detector")]
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http"}]
    pos = kids[("Deployment", "demo-pos-b")]["spec"]["template"]["spec"]["containers"][0]
    assert pos["args"] == [
        "pos",
        "--store",
        "b",
        "--url",
        "redis://pos@demo-store-b:6379",
        "--password-file",
        "/var/run/frauddemo/redis/b-pos/password",
        "--rate",
        "7.5",
    ]
    assert mounted_secrets(kids[("Deployment", "demo-pos-b")]) == {"demo-store-b-pos"}
    hacked = kids[("Deployment", "demo-hacked-pos")]["spec"]["template"]["spec"]["containers"][0]
    assert hacked["args"] == [
        "hacked-pos",
        "--store",
        "a",
        "--url",
        "redis://pos@demo-store-a:6379",
        "--password-file",
        "/var/run/frauddemo/redis/a-pos/password",
        "--rate",
        "1",
        "--attack-mix",
        "no-photo=1,mismatched-photo=0,replayed-photo=0,"
        "double-return-same-store=0,double-return-other-store=0,unknown-receipt=0,"
        "window-race=0,partition=0",
    ]
    assert mounted_secrets(kids[("Deployment", "demo-hacked-pos")]) == {"demo-store-a-pos"}


def hacked_mix(mix: dict) -> dict[str, float]:
    kids = by_key(builders.desired(OWNER, spec(pos={"hacked": {"attackMix": mix}}), service_monitors=False))
    args = kids[("Deployment", "demo-hacked-pos")]["spec"]["template"]["spec"]["containers"][0]["args"]
    flag = args[args.index("--attack-mix") + 1]
    assert parse_mix(flag)  # what the hacked POS reads
    return {k: float(v) for k, v in (p.split("=") for p in flag.split(","))}


def test_every_attack_mode_of_the_crd_reaches_the_hacked_pos():
    """All eight attackMix keys (the AttackMode vocabulary's crd_key) pass through, each under the mode's
    own name; the defaults fill the others."""
    for i, mode in enumerate(AttackMode):
        mix = hacked_mix({mode.crd_key: 0.05 * (i + 1)})
        assert list(mix) == [m.value for m in AttackMode]
        assert mix[mode.value] == pytest.approx(0.05 * (i + 1))
        assert {m: w for m, w in mix.items() if m != mode.value} == {
            m.value: models.DEFAULT_MIX.get(m, 0.0) for m in AttackMode if m is not mode
        }
    weights = {m.crd_key: round(0.1 * (i + 1), 1) for i, m in enumerate(AttackMode)}
    assert hacked_mix(weights) == {m.value: weights[m.crd_key] for m in AttackMode}


def test_the_deprecated_duplicate_receipt_is_read_as_double_return_other_store():
    mix = hacked_mix({"duplicateReceipt": 0.7, "noPhoto": 0})
    assert mix[AttackMode.DOUBLE_RETURN_OTHER_STORE] == 0.7 and mix[AttackMode.NO_PHOTO] == 0
    assert "duplicate-receipt" not in mix
    assert hacked_mix({})[AttackMode.DOUBLE_RETURN_OTHER_STORE] == 0.1  # neither given: the default
    with pytest.raises(models.InvalidSpec) as e:
        models.parse(
            "demo",
            {
                "stores": [{"name": "a"}, {"name": "b"}],
                "pos": {"hacked": {"attackMix": {"duplicateReceipt": 0.2, "doubleReturnOtherStore": 0.3}}},
            },
        )
    assert e.value.reason == "ConflictingAttackMix" and "doubleReturnOtherStore" in e.value.message


def test_peer_modes_give_the_hacked_pos_an_accomplice_at_every_other_store():
    """windowRace and partition need a peer store (AttackMode.needs_peer): the hacked POS gets --peer for
    every other store with that store's pos password, and the network policies open exactly that path."""
    plain = by_key(builders.desired(OWNER, spec(stores=[{"name": n} for n in "abc"]), service_monitors=False))
    assert "--peer" not in plain[("Deployment", "demo-hacked-pos")]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert ("NetworkPolicy", "demo-hacked-pos-peers-egress") not in plain
    for mode in (m for m in AttackMode if m.needs_peer):
        s = spec(stores=[{"name": n} for n in "abc"], pos={"hacked": {"attackMix": {mode.crd_key: 0.5}}})
        kids = by_key(builders.desired(OWNER, s, service_monitors=False))
        dep = kids[("Deployment", "demo-hacked-pos")]
        args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[args.index("--attack-mix") + 2 :] == [
            "--peer",
            "a=redis://pos@demo-store-a:6379",
            "--peer-password-file",
            "a=/var/run/frauddemo/redis/a-pos/password",
            "--peer",
            "c=redis://pos@demo-store-c:6379",
            "--peer-password-file",
            "c=/var/run/frauddemo/redis/c-pos/password",
        ]
        assert mounted_secrets(dep) == {"demo-store-a-pos", "demo-store-b-pos", "demo-store-c-pos"}
        egress = kids[("NetworkPolicy", "demo-hacked-pos-peers-egress")]["spec"]
        assert egress["podSelector"]["matchLabels"] == {
            "app.kubernetes.io/instance": "demo",
            "app.kubernetes.io/component": "hacked-pos",
        }
        assert egress["egress"][0]["to"][0]["podSelector"]["matchExpressions"][0]["values"] == ["a", "c"]
        for store, opened in (("a", True), ("b", False), ("c", True)):
            ingress = kids[("NetworkPolicy", f"demo-store-{store}-ingress")]["spec"]["ingress"][0]["from"]
            hacked = {
                "podSelector": {
                    "matchLabels": {"app.kubernetes.io/instance": "demo", "app.kubernetes.io/component": "hacked-pos"}
                }
            }
            assert (hacked in ingress) is opened, store


def test_detector_reads_the_api_token_from_a_mounted_secret_file():
    kids = by_key(builders.desired(OWNER, spec(), service_monitors=False))
    assert kids[("Secret", "demo-api-token")]["metadata"]["labels"][builders.L_COMPONENT] == "detector"
    pod = kids[("Deployment", "demo-detector")]["spec"]["template"]["spec"]
    det = pod["containers"][0]
    env = {e["name"]: e for e in det["env"]}
    assert env["FRAUDDEMO_API_TOKEN_FILE"] == {
        "name": "FRAUDDEMO_API_TOKEN_FILE",
        "value": "/var/run/frauddemo/api-token/password",
    }
    assert "FRAUDDEMO_API_TOKEN" not in env  # a file, never the value in env
    mount = next(m for m in det["volumeMounts"] if m["name"] == "api-token")
    assert mount == {"name": "api-token", "mountPath": "/var/run/frauddemo/api-token", "readOnly": True}
    vol = next(v for v in pod["volumes"] if v["name"] == "api-token")
    assert vol["secret"]["secretName"] == "demo-api-token"
    # only the detector holds it
    others = [c for k, c in kids.items() if k[0] in ("Deployment", "StatefulSet") and k[1] != "demo-detector"]
    assert not any("demo-api-token" in mounted_secrets(c) for c in others)


def test_switches_turn_children_off():
    s = spec(
        pos={"enabled": False, "hacked": {"enabled": False}},
        dashboard={"enabled": False},
        monitoring={"serviceMonitor": False},
        security={"networkPolicies": False},
    )
    kinds = {builders.key(c) for c in builders.desired(OWNER, s, service_monitors=True)}
    assert not any(k == "NetworkPolicy" or k == "ServiceMonitor" for k, _ in kinds)
    assert not any("pos" in n for k, n in kinds if k != "Secret")
    assert ("ConfigMap", "demo-dashboard") not in kinds
    # the ServiceMonitor also needs its API in the cluster
    kinds = {builders.key(c) for c in builders.desired(OWNER, spec(), service_monitors=False)}
    assert not any(k == "ServiceMonitor" for k, _ in kinds)


def test_dashboard_configmap_and_service_monitor():
    s = spec(
        dashboard={"labels": {"team": "fraud"}, "annotations": {"grafana_folder": "demos"}},
        monitoring={"release": "kps", "interval": "30s"},
    )
    kids = by_key(builders.desired(OWNER, s, service_monitors=True))
    cm = kids[("ConfigMap", "demo-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1" and cm["metadata"]["labels"]["team"] == "fraud"
    # the Grafana sidecar reads the folder from an annotation (its folderAnnotation), never from a label
    assert cm["metadata"]["annotations"] == {"grafana_folder": "demos"}
    assert "grafana_folder" not in cm["metadata"]["labels"]
    plain = by_key(builders.desired(OWNER, spec(), service_monitors=False))[("ConfigMap", "demo-dashboard")]
    assert "annotations" not in plain["metadata"]
    (text,) = cm["data"].values()
    dash = json.loads(text)
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p.get("targets", []))
    for metric in (
        "frauddemo_replication_lag_seconds",
        "frauddemo_transactions_total",
        "frauddemo_return_attempts_total",
        "frauddemo_fraud_alerts_total",
        "frauddemo_detection_latency_seconds",
        "frauddemo_photo_verification_seconds",
        "frauddemo_syncer_backlog_ops",
    ):
        assert metric in exprs
    assert 'namespace="shop"' in exprs
    sm = kids[("ServiceMonitor", "demo")]
    assert sm["metadata"]["labels"]["release"] == "kps"
    assert {e["port"] for e in sm["spec"]["endpoints"]} == {"http", "metrics"}
    assert all(e["interval"] == "30s" for e in sm["spec"]["endpoints"])
    scraped = [
        c
        for c in kids.values()
        if c["kind"] == "Service"
        and all(c["metadata"]["labels"].get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())
    ]
    assert {c["metadata"]["name"] for c in scraped} == {"demo-detector", "demo-syncers"}


def test_dashboard_template_from_a_file_is_filled_in():
    from frauddemo_operator import dashboard

    out = dashboard.render("shop", "demo", '{"title": "${instance} in ${namespace}"}')
    assert json.loads(out) == {"title": "demo in shop"}


# --- network policies, evaluated ------------------------------------------------------------------------


def selects(selector: dict, labels: dict) -> bool:
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        if e["operator"] == "In" and labels.get(e["key"]) not in e["values"]:
            return False
    return True


def pod_labels(children) -> dict[str, dict]:
    return {
        c["metadata"]["name"]: c["spec"]["template"]["metadata"]["labels"]
        for c in children
        if c["kind"] in ("StatefulSet", "Deployment")
    }


def can_reach(children, src: dict, dst: dict, port: int = 6379) -> bool:
    policies = [c for c in children if c["kind"] == "NetworkPolicy"]
    ingress = [p for p in policies if "Ingress" in p["spec"]["policyTypes"] and selects(p["spec"]["podSelector"], dst)]
    egress = [p for p in policies if "Egress" in p["spec"]["policyTypes"] and selects(p["spec"]["podSelector"], src)]

    def rule_ok(rule, peer_labels, key):
        return any(
            "podSelector" in peer and selects(peer["podSelector"], peer_labels) for peer in rule.get(key, [])
        ) and any(p["port"] == port for p in rule.get("ports", []))

    in_ok = not ingress or any(rule_ok(r, src, "from") for p in ingress for r in p["spec"]["ingress"])
    out_ok = not egress or any(rule_ok(r, dst, "to") for p in egress for r in p["spec"]["egress"])
    return in_ok and out_ok


def test_network_policies_only_syncers_cross_stores_and_pos_stay_home():
    s = spec(stores=[{"name": "a"}, {"name": "b"}, {"name": "c"}], pos={"hacked": {"store": "b"}})
    kids = builders.desired(OWNER, s, service_monitors=False)
    pods = pod_labels(kids)
    stores = {n: pods[f"demo-store-{n}"] for n in "abc"}
    for n in "abc":
        assert can_reach(kids, pods[f"demo-pos-{n}"], stores[n])
        assert can_reach(kids, stores[n], stores[n])  # primary <-> read replicas
        assert can_reach(kids, pods["demo-detector"], stores[n])
        for m in "abc":
            if m != n:
                assert not can_reach(kids, pods[f"demo-pos-{n}"], stores[m]), (n, m)
                assert not can_reach(kids, stores[n], stores[m]), (n, m)
    assert can_reach(kids, pods["demo-hacked-pos"], stores["b"])
    assert not can_reach(kids, pods["demo-hacked-pos"], stores["a"])
    sync_ab = pods["demo-sync-a-b"]
    assert can_reach(kids, sync_ab, stores["a"]) and can_reach(kids, sync_ab, stores["b"])
    assert not can_reach(kids, sync_ab, stores["c"])
    # DNS stays reachable for the points of sale
    pos_policy = next(c for c in kids if c["metadata"]["name"] == "demo-pos-a-egress")
    assert any(p.get("port") == 53 for r in pos_policy["spec"]["egress"] for p in r.get("ports", []))


# --- invariants over many specs -------------------------------------------------------------------------

store_names = st.lists(
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True), min_size=2, max_size=5, unique=True
)


@settings(max_examples=40, deadline=None)
@given(
    names=store_names,
    replicas=st.integers(1, 5),
    pos=st.booleans(),
    hacked=st.booleans(),
    policies=st.booleans(),
    sm=st.booleans(),
    fd=st.from_regex(r"[a-z]([a-z0-9-]{0,28}[a-z0-9])?", fullmatch=True),
)
def test_invariants(names, replicas, pos, hacked, policies, sm, fd):
    raw = {
        "stores": [{"name": n, "replicas": replicas} for n in names],
        "pos": {"enabled": pos, "hacked": {"enabled": hacked}},
        "security": {"networkPolicies": policies},
    }
    s = models.parse(fd, raw)
    owner = Owner(fd, "ns", "u")
    kids = builders.desired(owner, s, service_monitors=sm)
    assert kids == builders.desired(owner, s, service_monitors=sm)  # deterministic
    keys = [builders.key(c) for c in kids]
    assert len(keys) == len(set(keys))
    for kind, name in keys:
        assert DNS_LABEL.match(name) and len(name) <= 63, name
        if kind == "StatefulSet":
            assert len(name) <= 52, name  # the controller-revision-hash label must fit
    secrets = {n for k, n in keys if k == "Secret"}
    configmaps = {n for k, n in keys if k == "ConfigMap"}
    assert len([1 for k, n in keys if k == "Deployment" and f"{fd}-sync-" in n]) == len(names) * (len(names) - 1)
    templates = [c for c in kids if c["kind"] in ("StatefulSet", "Deployment")]
    for c in templates:
        tpl = c["spec"]["template"]
        assert selects(c["spec"]["selector"], tpl["metadata"]["labels"])
        for ctr in containers(c):
            for e in ctr.get("env", []):
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] in secrets
        for v in tpl["spec"].get("volumes", []):
            if "configMap" in v:
                assert v["configMap"]["name"] in configmaps
    for svc in (c for c in kids if c["kind"] == "Service"):
        assert any(
            selects(
                {
                    "matchLabels": {
                        k: v for k, v in svc["spec"]["selector"].items() if k != "statefulset.kubernetes.io/pod-name"
                    }
                },
                c["spec"]["template"]["metadata"]["labels"],
            )
            for c in templates
        ), svc["metadata"]["name"]


def test_stores_prefer_their_own_labelled_node_and_apart():
    sts = [c for c in builders.desired(OWNER, spec(), service_monitors=True) if c["kind"] == "StatefulSet"]
    for s in sts:
        store = s["metadata"]["labels"][builders.L_STORE]
        aff = s["spec"]["template"]["spec"]["affinity"]
        pref = aff["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["preference"]
        assert pref["matchExpressions"] == [{"key": "frauddemo.io/store", "operator": "In", "values": [store]}]
        anti = aff["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
        assert anti["labelSelector"]["matchLabels"][builders.L_COMPONENT] == "store"
