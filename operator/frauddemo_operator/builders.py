"""Pure manifest builders: a FraudDemo's spec in, the children it should have out.

Nothing here talks to Kubernetes. `desired(owner, spec, service_monitors=...)` returns every child
in a stable order; each carries a controller ownerReference, the app.kubernetes.io/* labels and the
FraudDemo's name. Store Secrets come without their data: the reconciler adds a generated password
when it creates one, and rotates the Redis users' passwords when asked (reconcile.py). Each store has a
Redis user per role (frauddemo.acl.ROLES): the `-auth` Secret is the admin's (the `default` user), a
Secret per client role holds that role's password, and the store's ACL Secret holds the ACL file (hashes
only) that the server loads and the store agent re-applies with ACL LOAD when it changes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any, TypeAlias

from frauddemo.acl import CLIENT_ROLES

from . import crd, dashboard
from .models import Spec, Store

MANAGER = "frauddemo-operator"
PART_OF = "frauddemo"
L_NAME = "app.kubernetes.io/name"
L_INSTANCE = "app.kubernetes.io/instance"
L_COMPONENT = "app.kubernetes.io/component"
L_PART_OF = "app.kubernetes.io/part-of"
L_MANAGED_BY = "app.kubernetes.io/managed-by"
L_FRAUDDEMO = "frauddemo.io/fraud-demo"
L_STORE = "frauddemo.io/store"
L_LINK_SOURCE = "frauddemo.io/link-source"
L_LINK_TARGET = "frauddemo.io/link-target"
L_METRICS = "frauddemo.io/metrics"
A_CONFIG_HASH = "frauddemo.io/config-hash"
A_RESTARTED_AT = "frauddemo.io/restarted-at"
A_ROTATE = "frauddemo.io/rotate-passwords"  # on a FraudDemo: any new value rotates the Redis passwords
A_ROTATION = "frauddemo.io/rotation"  # on a role Secret: the rotation its password comes from
A_ROTATED_AT = "frauddemo.io/rotated-at"  # on a role Secret: when; `previous` stays valid for a grace
L_ROLE = "frauddemo.io/redis-role"
MANAGED_SELECTOR = f"{L_MANAGED_BY}={MANAGER}"

STORE_PORT = 6379
DETECTOR_PORT = 8080
SYNCER_METRICS_PORT = 9100
STORE_UID = 999  # the valkey/redis images' own non-root user
APP_UID = 10001  # the frauddemo image's non-root user
PASSWORD_KEY = "password"
PREVIOUS_KEY = "previous"  # a role's old password while a rotation rolls out
ACL_KEY = "users.acl"
ACL_DIR = "/etc/frauddemo/acl"
ADMIN_DIR = "/etc/frauddemo/admin"
REDIS_SECRETS_DIR = "/var/run/frauddemo/redis"
API_TOKEN_DIR = "/var/run/frauddemo/api-token"

Obj: TypeAlias = dict[str, Any]  # a Kubernetes object as JSON, or a piece of one (a container, a probe, ...)


@dataclasses.dataclass(frozen=True)
class Owner:
    name: str
    namespace: str
    uid: str

    def reference(self) -> Obj:
        return {
            "apiVersion": crd.API_VERSION,
            "kind": crd.KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


# --- names -------------------------------------------------------------------------------------------


def store_name(fd: str, store: str) -> str:
    return f"{fd}-store-{store}"


def store_headless(fd: str, store: str) -> str:
    return f"{fd}-store-{store}-headless"


def terminal_secret(fd: str) -> str:
    """The tills' provisioning secret: registered terminals sign return attempts with keys derived
    from it, and the detector checks them (a rogue terminal has no key)."""
    return f"{fd}-terminal-key"


def api_token_secret(fd: str) -> str:
    """The detector API's bearer token for its controls (every POST); GETs stay open."""
    return f"{fd}-api-token"


def store_secret(fd: str, store: str) -> str:
    return f"{fd}-store-{store}-auth"


def role_secret(fd: str, store: str, role: str) -> str:
    """A client role's Redis password at one store (keys `password`, and `previous` during a rotation)."""
    return f"{fd}-store-{store}-{role}"


def acl_secret(fd: str, store: str) -> str:
    return f"{fd}-store-{store}-acl"


def store_config(fd: str, store: str) -> str:
    return f"{fd}-store-{store}-config"


def syncer_name(fd: str, source: str, target: str) -> str:
    return f"{fd}-sync-{source}-{target}"


def pos_name(fd: str, store: str) -> str:
    return f"{fd}-pos-{store}"


def hacked_pos_name(fd: str) -> str:
    return f"{fd}-hacked-pos"


def detector_name(fd: str) -> str:
    return f"{fd}-detector"


def store_url(fd: str, store: str, role: str | None = None) -> str:
    """The store's URL, with a client role's user name in it (a name, not a secret)."""
    return f"redis://{role + '@' if role else ''}{store_name(fd, store)}:{STORE_PORT}"


def role_password_file(store: str, role: str) -> str:
    return f"{REDIS_SECRETS_DIR}/{store}-{role}/{PASSWORD_KEY}"


def mount_role_secrets(dep: Obj, fd: str, pairs: list[tuple[str, str]]) -> None:
    """Mount only these (store, role) passwords into a workload's pod, each as a file (the pod's
    processes read them with --password-file; nothing in env or argv)."""
    pod = dep["spec"]["template"]["spec"]
    for store, role in pairs:
        name = f"redis-{store}-{role}"
        pod["volumes"].append(
            {
                "name": name,
                "secret": {
                    "secretName": role_secret(fd, store, role),
                    "defaultMode": 0o440,
                    "items": [{"key": PASSWORD_KEY, "path": PASSWORD_KEY}],
                },
            }
        )
        pod["containers"][0]["volumeMounts"].append(
            {"name": name, "mountPath": f"{REDIS_SECRETS_DIR}/{store}-{role}", "readOnly": True}
        )


# --- shared pieces -----------------------------------------------------------------------------------


def labels(owner: Owner, component: str, **extra: str) -> dict[str, str]:
    out = {
        L_NAME: "frauddemo",
        L_INSTANCE: owner.name,
        L_COMPONENT: component,
        L_PART_OF: PART_OF,
        L_MANAGED_BY: MANAGER,
        L_FRAUDDEMO: owner.name,
    }
    out.update(extra)
    return out


def selector(owner: Owner, component: str, **extra: str) -> dict[str, str]:
    """The immutable selector labels of a workload (a subset of its pods' labels)."""
    return {L_INSTANCE: owner.name, L_COMPONENT: component, **extra}


def metadata(
    owner: Owner,
    name: str,
    component: str,
    extra_labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> Obj:
    meta: Obj = {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner, component, **(extra_labels or {})),
        "ownerReferences": [owner.reference()],
    }
    if annotations:
        meta["annotations"] = annotations
    return meta


def secret_env(env: str, secret: str) -> Obj:
    return {"name": env, "valueFrom": {"secretKeyRef": {"name": secret, "key": PASSWORD_KEY}}}


def pod_security(uid: int) -> Obj:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security() -> Obj:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


def app_container(
    spec: Spec,
    name: str,
    args: list[str],
    env: list[Obj],
    resources: Obj,
    ports: list[Obj] | None = None,
    probes: Obj | None = None,
) -> Obj:
    c = {
        "name": name,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "args": args,
        "resources": resources,
        "securityContext": container_security(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if env:  # no `env: []`: the API server drops it anyway
        c["env"] = env
    if ports:
        c["ports"] = ports
    c.update(probes or {})
    return c


def deployment(
    owner: Owner,
    spec: Spec,
    name: str,
    component: str,
    sel_extra: dict[str, str],
    container: Obj,
    replicas: int = 1,
    strategy: str = "RollingUpdate",
    extra_labels: dict[str, str] | None = None,
) -> Obj:
    pod_labels = labels(owner, component, **sel_extra, **(extra_labels or {}))
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(owner, name, component, {**sel_extra, **(extra_labels or {})}),
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 3,
            "strategy": {"type": strategy},
            "selector": {"matchLabels": selector(owner, component, **sel_extra)},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": pod_security(APP_UID),
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


def small_resources(
    cpu: str = "20m", memory: str = "64Mi", cpu_limit: str = "500m", memory_limit: str = "256Mi"
) -> Obj:
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu_limit, "memory": memory_limit}}


# --- stores ------------------------------------------------------------------------------------------

STORE_CONF = "\n".join(
    [
        f"port {STORE_PORT}",
        "bind * -::*",
        "protected-mode no",
        "dir /data",
        f"aclfile {ACL_DIR}/{ACL_KEY}",
        "appendonly yes",
        "appendfsync everysec",
        'save ""',
        "maxmemory-policy noeviction",  # at maxmemory (init.sh: 3/4 of the memory limit) refuse writes, never evict
        "replica-read-only yes",
        "replica-serve-stale-data yes",
        "",
    ]
)

# Assembles the server's configuration in an init container: the users and their password hashes come
# from the ACL file (the store's ACL Secret, mounted); the admin's password, which replicas use towards
# ordinal 0, comes from the Secret through the environment and lands in a 0600 file, never on a command line.
STORE_INIT = """set -eu
umask 077
cp /etc/frauddemo/store.conf /config/store.conf
printf 'masterauth "%s"\\n' "$STORE_PASSWORD" >> /config/store.conf
ordinal="${POD_NAME##*-}"
if [ "$ordinal" != "0" ]; then
  printf 'replicaof %s %s\\n' "$PRIMARY_HOST" "$STORE_PORT" >> /config/store.conf
fi
printf 'maxmemory %s\\n' "$((STORE_MEMORY_LIMIT / 4 * 3))" >> /config/store.conf
"""

STORE_RUN = 'exec "$(command -v valkey-server || command -v redis-server)" /config/store.conf'
STORE_PING = (
    f'cli="$(command -v valkey-cli || command -v redis-cli)"; "$cli" -h 127.0.0.1 -p {STORE_PORT} ping | grep -q PONG'
)


def store_configmap(owner: Owner, store: Store) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(owner, store_config(owner.name, store.name), "store", {L_STORE: store.name}),
        "data": {"store.conf": STORE_CONF, "init.sh": STORE_INIT},
    }


def _opaque_secret(meta: Obj) -> Obj:
    """A Secret with no data yet: the reconciler writes its generated contents."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": meta}


def terminal_secret_manifest(owner: Owner) -> Obj:
    return _opaque_secret(metadata(owner, terminal_secret(owner.name), "terminal-key"))


def api_token_secret_manifest(owner: Owner) -> Obj:
    return _opaque_secret(metadata(owner, api_token_secret(owner.name), "detector"))


def store_secret_manifest(owner: Owner, store: Store) -> Obj:
    return _opaque_secret(metadata(owner, store_secret(owner.name, store.name), "store", {L_STORE: store.name}))


def role_secret_manifest(owner: Owner, store: Store, role: str) -> Obj:
    return _opaque_secret(
        metadata(owner, role_secret(owner.name, store.name, role), "store", {L_STORE: store.name, L_ROLE: role})
    )


def acl_secret_manifest(owner: Owner, store: Store) -> Obj:
    """Its data is the ACL file rendered from the role Secrets (the reconciler keeps it in step)."""
    return _opaque_secret(metadata(owner, acl_secret(owner.name, store.name), "store-acl", {L_STORE: store.name}))


def store_agent_container(spec: Spec, fd: str, store: str) -> Obj:
    """Beside the server: keeps the function library loaded and applies the mounted ACL file with
    ACL LOAD whenever the Secret behind it changes (no restart)."""
    c = app_container(
        spec,
        "agent",
        [
            "--url",
            f"redis://127.0.0.1:{STORE_PORT}",
            "--password-file",
            f"{ADMIN_DIR}/{PASSWORD_KEY}",
            "--acl-file",
            f"{ACL_DIR}/{ACL_KEY}",
        ],
        [],
        small_resources("10m", "48Mi", "200m", "128Mi"),
    )
    c["command"] = ["frauddemo", "store-agent"]
    # the store pod's user (the image's files are world-readable), so both read the 0440 Secret files
    c["securityContext"] = {**c["securityContext"], "runAsUser": STORE_UID, "runAsGroup": STORE_UID}
    c["volumeMounts"] += [
        {"name": "acl", "mountPath": ACL_DIR, "readOnly": True},
        {"name": "admin", "mountPath": ADMIN_DIR, "readOnly": True},
    ]
    return c


def config_hash(cm: Obj) -> str:
    return hashlib.sha256(json.dumps(cm["data"], sort_keys=True).encode()).hexdigest()[:16]


def store_affinity(owner: Owner, store: str) -> Obj:
    """Each store on its own node when the cluster has several, like two real shops: a node labelled
    `frauddemo.io/store=<store>` (kind-config.yaml) is preferred, and so is a node without the
    FraudDemo's other stores. Preferences only: a one-node cluster still runs everything."""
    return {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "preference": {"matchExpressions": [{"key": L_STORE, "operator": "In", "values": [store]}]},
                }
            ]
        },
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 50,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {L_INSTANCE: owner.name, L_COMPONENT: "store"}},
                    },
                }
            ]
        },
    }


def store_statefulset(owner: Owner, spec: Spec, store: Store, cm: Obj) -> Obj:
    fd, s = owner.name, store.name
    sts = store_name(fd, s)
    secret = store_secret(fd, s)
    auth_env = [secret_env("REDISCLI_AUTH", secret), secret_env("VALKEYCLI_AUTH", secret)]
    ping = {"exec": {"command": ["sh", "-c", STORE_PING]}}
    res = store.resources
    container = {
        "name": "store",
        "image": store.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["sh", "-c", STORE_RUN],
        "ports": [{"name": "redis", "containerPort": STORE_PORT}],
        "env": auth_env,
        "resources": {
            "requests": {"cpu": res.requests.cpu, "memory": res.requests.memory},
            "limits": {"cpu": res.limits.cpu, "memory": res.limits.memory},
        },
        "readinessProbe": {**ping, "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 3},
        "livenessProbe": {
            **ping,
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        "startupProbe": {**ping, "periodSeconds": 2, "timeoutSeconds": 3, "failureThreshold": 60},
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "data", "mountPath": "/data"},
            {"name": "config", "mountPath": "/config"},
            {"name": "acl", "mountPath": ACL_DIR, "readOnly": True},
        ],
    }
    init = {
        "name": "config",
        "image": store.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["sh", "/etc/frauddemo/init.sh"],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "PRIMARY_HOST", "value": f"{sts}-0.{store_headless(fd, s)}"},
            {"name": "STORE_PORT", "value": str(STORE_PORT)},
            # the store container's memory limit in bytes: maxmemory is 3/4 of it (AOF rewrite forks)
            {
                "name": "STORE_MEMORY_LIMIT",
                "valueFrom": {
                    "resourceFieldRef": {"containerName": "store", "resource": "limits.memory", "divisor": "1"}
                },
            },
            secret_env("STORE_PASSWORD", secret),
        ],
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "32Mi"}},
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "template", "mountPath": "/etc/frauddemo", "readOnly": True},
            {"name": "config", "mountPath": "/config"},
        ],
    }
    volumes = [
        {"name": "template", "configMap": {"name": store_config(fd, s)}},
        {"name": "config", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        {"name": "acl", "secret": {"secretName": acl_secret(fd, s), "defaultMode": 0o440}},
        {"name": "admin", "secret": {"secretName": secret, "defaultMode": 0o440}},
        {"name": "tmp", "emptyDir": {}},
    ]
    body: Obj = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata(owner, sts, "store", {L_STORE: s}),
        "spec": {
            "serviceName": store_headless(fd, s),
            "replicas": store.replicas,
            "podManagementPolicy": "Parallel",
            "revisionHistoryLimit": 3,
            "updateStrategy": {"type": "RollingUpdate"},
            "selector": {"matchLabels": selector(owner, "store", **{L_STORE: s})},
            "template": {
                "metadata": {
                    "labels": labels(owner, "store", **{L_STORE: s}),
                    "annotations": {A_CONFIG_HASH: config_hash(cm)},
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": pod_security(STORE_UID),
                    "affinity": store_affinity(owner, s),
                    "initContainers": [init],
                    "containers": [container, store_agent_container(spec, fd, s)],
                    "volumes": volumes,
                },
            },
        },
    }
    if store.storage is None:
        volumes.append({"name": "data", "emptyDir": {}})
    else:
        claim = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": store.storage.size}}}
        if store.storage.storage_class_name:
            claim["storageClassName"] = store.storage.storage_class_name
        body["spec"]["volumeClaimTemplates"] = [{"metadata": {"name": "data"}, "spec": claim}]
        body["spec"]["persistentVolumeClaimRetentionPolicy"] = {"whenDeleted": "Delete", "whenScaled": "Retain"}
    return body


def store_services(owner: Owner, store: Store) -> list[Obj]:
    fd, s = owner.name, store.name
    sel = selector(owner, "store", **{L_STORE: s})
    port = [{"name": "redis", "port": STORE_PORT, "targetPort": "redis"}]
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, store_headless(fd, s), "store", {L_STORE: s}),
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": sel, "ports": port},
    }
    client = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, store_name(fd, s), "store", {L_STORE: s}),
        "spec": {
            "type": "ClusterIP",
            "selector": {**sel, "statefulset.kubernetes.io/pod-name": f"{store_name(fd, s)}-0"},
            "ports": port,
        },
    }
    return [headless, client]


# --- syncers, points of sale, detector ---------------------------------------------------------------


def syncer_deployment(owner: Owner, spec: Spec, source: str, target: str) -> Obj:
    fd = owner.name
    args = [
        "syncer",
        "--source",
        store_url(fd, source, "syncer"),
        "--target",
        store_url(fd, target, "syncer"),
        "--source-password-file",
        role_password_file(source, "syncer"),
        "--target-password-file",
        role_password_file(target, "syncer"),
        "--source-name",
        source,
        "--target-name",
        target,
        "--metrics-port",
        str(SYNCER_METRICS_PORT),
        "--batch-max",
        str(spec.replication.batch_max),
        "--retention",
        str(spec.replication.retention),
    ]
    env: list[Obj] = []
    tcp = {"tcpSocket": {"port": "metrics"}}
    container = app_container(
        spec,
        "syncer",
        args,
        env,
        small_resources(),
        ports=[{"name": "metrics", "containerPort": SYNCER_METRICS_PORT}],
        probes={
            "readinessProbe": {**tcp, "periodSeconds": 5},
            "livenessProbe": {**tcp, "initialDelaySeconds": 10, "periodSeconds": 10, "failureThreshold": 6},
        },
    )
    # One syncer per link, never two: the checkpoint is atomic, but two would only race.
    dep = deployment(
        owner,
        spec,
        syncer_name(fd, source, target),
        "syncer",
        {L_LINK_SOURCE: source, L_LINK_TARGET: target},
        container,
        strategy="Recreate",
    )
    mount_role_secrets(dep, fd, [(source, "syncer"), (target, "syncer")])
    return dep


def pos_deployment(owner: Owner, spec: Spec, store: str) -> Obj:
    fd = owner.name
    args = [
        "pos",
        "--store",
        store,
        "--url",
        store_url(fd, store, "pos"),
        "--password-file",
        role_password_file(store, "pos"),
        "--rate",
        f"{spec.pos.rate:g}",
    ]
    env = [secret_env("FRAUDDEMO_TERMINAL_KEY", terminal_secret(fd))]
    container = app_container(spec, "pos", args, env, small_resources())
    dep = deployment(owner, spec, pos_name(fd, store), "pos", {L_STORE: store}, container)
    mount_role_secrets(dep, fd, [(store, "pos")])
    return dep


def hacked_pos_peers(spec: Spec) -> list[str]:
    """The stores where the hacked POS's accomplice returns first: every other store, when the attack mix
    gives a mode that needs a peer store (AttackMode.needs_peer) a weight; else none."""
    hacked = spec.hacked_store
    if hacked is None or not any(w > 0 for m, w in spec.pos.hacked.attack_mix.weights().items() if m.needs_peer):
        return []
    return [s for s in spec.store_names if s != hacked]


def hacked_pos_deployment(owner: Owner, spec: Spec, store: str) -> Obj:
    fd = owner.name
    h = spec.pos.hacked
    args = [
        "hacked-pos",
        "--store",
        store,
        "--url",
        store_url(fd, store, "pos"),
        "--password-file",
        role_password_file(store, "pos"),
        "--rate",
        f"{h.rate:g}",
        "--attack-mix",
        h.attack_mix.as_flag(),
    ]
    peers = hacked_pos_peers(spec)
    for p in peers:  # the accomplice's tills, with the pos user of those stores
        args += [
            "--peer",
            f"{p}={store_url(fd, p, 'pos')}",
            "--peer-password-file",
            f"{p}={role_password_file(p, 'pos')}",
        ]
    # A compromised registered terminal: it holds a real key (only photo and cross-store rules catch it).
    env = [secret_env("FRAUDDEMO_TERMINAL_KEY", terminal_secret(fd))]
    container = app_container(spec, "hacked-pos", args, env, small_resources())
    dep = deployment(owner, spec, hacked_pos_name(fd), "hacked-pos", {L_STORE: store}, container)
    mount_role_secrets(dep, fd, [(store, "pos"), *((p, "pos") for p in peers)])
    return dep


def detector_deployment(owner: Owner, spec: Spec) -> Obj:
    fd = owner.name
    args = ["detector"]
    for s in spec.store_names:
        args += [
            "--store",
            f"{s}={store_url(fd, s, 'detector')}",
            "--password-file",
            f"{s}={role_password_file(s, 'detector')}",
        ]
    args += ["--host", "0.0.0.0", "--port", str(DETECTOR_PORT)]
    d = spec.detection
    env = [secret_env("FRAUDDEMO_TERMINAL_KEY", terminal_secret(fd))]
    env += [
        {"name": "FRAUDDEMO_DETECTION_WINDOW_SECONDS", "value": str(d.window_seconds)},
        {"name": "FRAUDDEMO_DETECTION_ALERT_SCORE", "value": str(d.alert_score)},
        {"name": "FRAUDDEMO_DETECTION_REVIEW_SCORE", "value": str(d.review_score)},
        {"name": "FRAUDDEMO_PHOTO_MATCH_THRESHOLD", "value": f"{d.photo_match_threshold:g}"},
    ]
    http = {"httpGet": {"path": "/readyz", "port": "http"}}
    live = {"httpGet": {"path": "/healthz", "port": "http"}}
    container = app_container(
        spec,
        "detector",
        args,
        env,
        small_resources("100m", "256Mi", "1", "1Gi"),
        ports=[{"name": "http", "containerPort": DETECTOR_PORT}],
        probes={
            "readinessProbe": {**http, "periodSeconds": 5, "timeoutSeconds": 3},
            "livenessProbe": {
                **live,
                "initialDelaySeconds": 10,
                "periodSeconds": 10,
                "timeoutSeconds": 3,
                "failureThreshold": 6,
            },
        },
    )
    # The API token as a file, never in env or argv (frauddemo.access reads FRAUDDEMO_API_TOKEN_FILE).
    container["env"].append({"name": "FRAUDDEMO_API_TOKEN_FILE", "value": f"{API_TOKEN_DIR}/{PASSWORD_KEY}"})
    container["volumeMounts"].append({"name": "api-token", "mountPath": API_TOKEN_DIR, "readOnly": True})
    dep = deployment(owner, spec, detector_name(fd), "detector", {}, container, replicas=d.replicas)
    dep["spec"]["template"]["spec"]["volumes"].append(
        {"name": "api-token", "secret": {"secretName": api_token_secret(fd), "defaultMode": 0o440}}
    )
    mount_role_secrets(dep, fd, [(s, "detector") for s in spec.store_names])
    return dep


def detector_service(owner: Owner) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, detector_name(owner.name), "detector", {L_METRICS: "true"}),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(owner, "detector"),
            "ports": [{"name": "http", "port": DETECTOR_PORT, "targetPort": "http"}],
        },
    }


def syncers_service(owner: Owner) -> Obj:
    """Scrape target for every syncer's /metrics (headless: Prometheus scrapes each pod)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, f"{owner.name}-syncers", "syncer", {L_METRICS: "true"}),
        "spec": {
            "clusterIP": "None",
            "selector": selector(owner, "syncer"),
            "ports": [{"name": "metrics", "port": SYNCER_METRICS_PORT, "targetPort": "metrics"}],
        },
    }


# --- monitoring ----------------------------------------------------------------------------------------


def dashboard_configmap(owner: Owner, spec: Spec, dashboard_json: str) -> Obj:
    extra = {**spec.dashboard.labels, "grafana_dashboard": "1"}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(
            owner, f"{owner.name}-dashboard", "dashboard", extra, dict(spec.dashboard.annotations) or None
        ),
        "data": {f"frauddemo-{owner.namespace}-{owner.name}.json": dashboard_json},
    }


def service_monitor(owner: Owner, spec: Spec) -> Obj:
    m = spec.monitoring
    endpoints = [
        {"port": "http", "path": "/metrics", "interval": m.interval},
        {"port": "metrics", "path": "/metrics", "interval": m.interval},
    ]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata(owner, owner.name, "monitoring", {"release": m.release}),
        "spec": {
            "selector": {"matchLabels": {L_INSTANCE: owner.name, L_METRICS: "true"}},
            "namespaceSelector": {"matchNames": [owner.namespace]},
            "endpoints": endpoints,
        },
    }


# --- network policies ----------------------------------------------------------------------------------

# Every pod of a FraudDemo starts from a default deny (ingress and egress); each policy below opens one
# flow the demo needs: a store from its own servers, its points of sale, the detector and its links'
# syncers; the detector's HTTP port (API, dashboard, metrics: users, the operator, Prometheus) and the
# syncers' metrics port (Prometheus) from anywhere; DNS out. Policies add up, so a flow is open when the
# source's egress and the destination's ingress both allow it.

DNS_EGRESS = {
    "to": [{"namespaceSelector": {}}],
    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
}


def store_ingress_policy(owner: Owner, store: str, hacked_peer: bool = False) -> Obj:
    """Only this store's own servers, its points of sale, the detector and the syncers of links
    that touch this store reach it (and the hacked POS when its accomplice returns here)."""
    inst = {L_INSTANCE: owner.name}
    peers = [
        {"podSelector": {"matchLabels": {**inst, L_COMPONENT: "store", L_STORE: store}}},
        {
            "podSelector": {
                "matchLabels": {**inst, L_STORE: store},
                "matchExpressions": [{"key": L_COMPONENT, "operator": "In", "values": ["pos", "hacked-pos"]}],
            }
        },
        {"podSelector": {"matchLabels": {**inst, L_COMPONENT: "detector"}}},
        {"podSelector": {"matchLabels": {**inst, L_COMPONENT: "syncer", L_LINK_SOURCE: store}}},
        {"podSelector": {"matchLabels": {**inst, L_COMPONENT: "syncer", L_LINK_TARGET: store}}},
    ]
    if hacked_peer:
        peers.append({"podSelector": {"matchLabels": {**inst, L_COMPONENT: "hacked-pos"}}})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(owner, f"{store_name(owner.name, store)}-ingress", "network-policy", {L_STORE: store}),
        "spec": {
            "podSelector": {"matchLabels": selector(owner, "store", **{L_STORE: store})},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": peers, "ports": [{"protocol": "TCP", "port": STORE_PORT}]}],
        },
    }


def _policy(
    owner: Owner, name: str, pod_selector: Obj, ingress: list[Obj] | None = None, egress: list[Obj] | None = None
) -> Obj:
    types = [t for t, rules in (("Ingress", ingress), ("Egress", egress)) if rules is not None]
    spec: Obj = {"podSelector": pod_selector, "policyTypes": types}
    spec.update({k: v for k, v in (("ingress", ingress), ("egress", egress)) if v is not None})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(owner, name, "network-policy"),
        "spec": spec,
    }


def default_deny_policy(owner: Owner) -> Obj:
    """Nothing in or out of any of this FraudDemo's pods unless another policy opens it. The empty rule
    lists stay (the server drops them; reconcile.matches takes missing as empty): a rule added by hand
    to this policy then reads as drift, and the merge patch of `[]` removes it."""
    return _policy(owner, f"{owner.name}-default-deny", {"matchLabels": {L_FRAUDDEMO: owner.name}}, [], [])


def store_clients_egress_policy(owner: Owner) -> Obj:
    """Stores (replicas to their primary), syncers and the detector may open connections to store
    servers (each store's ingress policy says which of them it takes) and to DNS."""
    to_stores = {
        "to": [{"podSelector": {"matchLabels": selector(owner, "store")}}],
        "ports": [{"protocol": "TCP", "port": STORE_PORT}],
    }
    return _policy(
        owner,
        f"{owner.name}-store-clients-egress",
        {
            "matchLabels": {L_INSTANCE: owner.name},
            "matchExpressions": [{"key": L_COMPONENT, "operator": "In", "values": ["store", "syncer", "detector"]}],
        },
        egress=[to_stores, DNS_EGRESS],
    )


def detector_ingress_policy(owner: Owner) -> Obj:
    """The API, the dashboard and /metrics: from anywhere, on the HTTP port only."""
    return _policy(
        owner,
        f"{detector_name(owner.name)}-ingress",
        {"matchLabels": selector(owner, "detector")},
        ingress=[{"ports": [{"protocol": "TCP", "port": DETECTOR_PORT}]}],
    )


def syncer_metrics_policy(owner: Owner) -> Obj:
    """Prometheus scrapes every syncer's metrics port (from wherever it runs); nothing else comes in."""
    return _policy(
        owner,
        f"{owner.name}-syncers-ingress",
        {"matchLabels": selector(owner, "syncer")},
        ingress=[{"ports": [{"protocol": "TCP", "port": SYNCER_METRICS_PORT}]}],
    )


def pos_egress_policy(owner: Owner, store: str) -> Obj:
    """A point of sale (legitimate or hacked) reaches only its own store (and DNS)."""
    inst = {L_INSTANCE: owner.name}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(owner, f"{pos_name(owner.name, store)}-egress", "network-policy", {L_STORE: store}),
        "spec": {
            "podSelector": {
                "matchLabels": {**inst, L_STORE: store},
                "matchExpressions": [{"key": L_COMPONENT, "operator": "In", "values": ["pos", "hacked-pos"]}],
            },
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [{"podSelector": {"matchLabels": selector(owner, "store", **{L_STORE: store})}}],
                    "ports": [{"protocol": "TCP", "port": STORE_PORT}],
                },
                DNS_EGRESS,
            ],
        },
    }


def hacked_pos_peers_egress_policy(owner: Owner, peers: list[str]) -> Obj:
    """The hacked POS reaches the peer stores its accomplice returns at (hacked_pos_peers)."""
    return _policy(
        owner,
        f"{hacked_pos_name(owner.name)}-peers-egress",
        {"matchLabels": selector(owner, "hacked-pos")},
        egress=[
            {
                "to": [
                    {
                        "podSelector": {
                            "matchLabels": selector(owner, "store"),
                            "matchExpressions": [{"key": L_STORE, "operator": "In", "values": list(peers)}],
                        }
                    }
                ],
                "ports": [{"protocol": "TCP", "port": STORE_PORT}],
            }
        ],
    )


# --- everything ----------------------------------------------------------------------------------------


def desired(owner: Owner, spec: Spec, *, service_monitors: bool, dashboard_json: str | None = None) -> list[Obj]:
    """Every child the FraudDemo should have, in creation order."""
    out: list[Obj] = [terminal_secret_manifest(owner), api_token_secret_manifest(owner)]
    for store in spec.stores:
        cm = store_configmap(owner, store)
        out += [
            store_secret_manifest(owner, store),
            *(role_secret_manifest(owner, store, r) for r in CLIENT_ROLES),
            acl_secret_manifest(owner, store),
            cm,
            *store_services(owner, store),
            store_statefulset(owner, spec, store, cm),
        ]
    for source, target in spec.links:
        out.append(syncer_deployment(owner, spec, source, target))
    out.append(syncers_service(owner))
    if spec.pos.enabled:
        out += [pos_deployment(owner, spec, s) for s in spec.store_names]
    hacked = spec.hacked_store
    if hacked is not None:
        out.append(hacked_pos_deployment(owner, spec, hacked))
    out += [detector_deployment(owner, spec), detector_service(owner)]
    if spec.dashboard.enabled:
        out.append(dashboard_configmap(owner, spec, dashboard_json or dashboard.render(owner.namespace, owner.name)))
    if spec.monitoring.service_monitor and service_monitors:
        out.append(service_monitor(owner, spec))
    if spec.security.network_policies:
        out += [
            default_deny_policy(owner),
            store_clients_egress_policy(owner),
            detector_ingress_policy(owner),
            syncer_metrics_policy(owner),
        ]
        peers = hacked_pos_peers(spec)
        for s in spec.store_names:
            out.append(store_ingress_policy(owner, s, hacked_peer=s in peers))
        if peers:
            out.append(hacked_pos_peers_egress_policy(owner, peers))
        pos_stores = set(spec.store_names if spec.pos.enabled else [])
        if hacked is not None:
            pos_stores.add(hacked)
        for s in spec.store_names:
            if s in pos_stores:
                out.append(pos_egress_policy(owner, s))
    return out


def key(obj: Mapping[str, Any]) -> tuple[str, str]:
    """(kind, name): how a child is told apart from its siblings."""
    return obj["kind"], obj["metadata"]["name"]
