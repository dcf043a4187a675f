"""The real tools the chart tests run: helm (tools/fetch_helm.py), kubernetes-validate, the CRD's
schema, and the prometheus-operator's schemas (tools/fetch_prometheus_models.sh). `make test`
installs them; run alone, a missing tool fails with the command that installs it."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from frauddemo_operator import crd, models

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "frauddemo"
RELEASE = "frauddemo"
NAMESPACE = "frauddemo"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest kubernetes-validate ships.
KUBE_VERSIONS = ("1.30", ".".join(kubernetes_validate.latest_version().split(".")[:2]))
MONITORING_KINDS = {"ServiceMonitor", "PrometheusRule"}
STANDARD_LABELS = (
    "helm.sh/chart",
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
)


@functools.cache
def helm_binary() -> str:
    path = os.environ.get("HELM") or str(ROOT / ".tools" / "helm")
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"helm not found at {path}: run `make test`, or `.venv/bin/python tools/fetch_helm.py`, "
            f"or point HELM at a helm 3.18 binary",
            pytrace=False,
        )
    return path


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    # No cluster is involved: an empty kubeconfig keeps helm from reading the user's.
    env = {
        **os.environ,
        "KUBECONFIG": os.devnull,
        "HELM_CACHE_HOME": tempfile.gettempdir() + "/helm-cache",
        "HELM_CONFIG_HOME": tempfile.gettempdir() + "/helm-config",
    }
    proc = subprocess.run([helm_binary(), *args], capture_output=True, text=True, env=env, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def nested(flat: dict) -> dict:
    """{"a.b": 1} -> {"a": {"b": 1}}: values written the way --set names them."""
    out: dict = {}
    for dotted, value in flat.items():
        *parents, last = dotted.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return out


def _template_args(values: dict | None, chart: Path, extra: tuple[str, ...], tmp: str) -> list[str]:
    args = ["template", RELEASE, str(chart), "--namespace", NAMESPACE, *extra]
    if values:
        path = Path(tmp) / "values.yaml"
        path.write_text(yaml.safe_dump(nested(values)))
        args += ["--values", str(path)]
    return args


def render(values: dict | None = None, *extra: str, chart: Path = CHART) -> list[dict]:
    """`helm template` of the chart with these values ({"sample.enabled": True, ...}): the objects."""
    with tempfile.TemporaryDirectory() as tmp:
        out = helm(*_template_args(values, chart, extra, tmp)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def render_error(values: dict | None = None, *extra: str) -> str:
    """What helm says when it refuses these values (the test fails if it renders them)."""
    with tempfile.TemporaryDirectory() as tmp:
        proc = helm(*_template_args(values, CHART, extra, tmp), check=False)
    assert proc.returncode != 0, f"helm rendered values it should refuse: {values}"
    return proc.stderr


def render_notes(values: dict | None = None) -> str:
    """NOTES.txt as helm renders it. `helm install --dry-run` needs a cluster, so a copy of the chart
    renders the same file through `tpl` into a ConfigMap."""
    with tempfile.TemporaryDirectory() as tmp:
        chart = Path(tmp) / "frauddemo"
        shutil.copytree(CHART, chart)
        (chart / "templates" / "NOTES.txt").rename(chart / "notes.tpl")
        (chart / "templates" / "zz-notes.yaml").write_text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
            'data: {notes: {{ tpl (.Files.Get "notes.tpl") . | toJson }}}\n'
        )
        objs = render(values, "--show-only", "templates/zz-notes.yaml", chart=chart)
    return objs[0]["data"]["notes"]


def find(objs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objs: list[dict], kind: str, name: str | None = None) -> dict:
    found = find(objs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def builtin_errors(obj: dict, version: str) -> str | None:
    """kubernetes-validate, strict (unknown fields are errors): None when the object is valid."""
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        return f"{'.'.join(map(str, e.path))}: {e.message}"
    except kubernetes_validate.SchemaNotFoundError as e:
        return e.message
    return None


def frauddemo_errors(obj: dict) -> str | None:
    """What the API server (the CRD's schema, strict) and then the operator would say about a FraudDemo."""
    causes = crd.errors(obj)
    if causes:
        return "; ".join(f"{c['field']}: {c['message']}" for c in causes)
    try:
        models.parse(obj["metadata"]["name"], obj.get("spec"))
    except models.InvalidSpec as e:
        return f"{e.reason}: {e.message}"
    return None


@functools.cache
def _models_dir() -> Path:
    path = Path(os.environ.get("PROMETHEUS_MODELS") or ROOT / ".tools" / "prometheus-models")
    if not (path / "node_modules").is_dir() or not shutil.which("node"):
        pytest.fail(
            f"the prometheus-operator schemas are not installed at {path} (or node is missing): run "
            f"`make test` or tools/fetch_prometheus_models.sh",
            pytrace=False,
        )
    return path


def monitoring_errors(objs: list[dict]) -> list[str]:
    """ServiceMonitor/PrometheusRule objects checked against the prometheus-operator's schemas (node)."""
    if not objs:
        return []
    d = _models_dir()
    proc = subprocess.run(
        ["node", str(d / "validate.mjs")], input=json.dumps(objs), capture_output=True, text=True, cwd=d, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return [f"{r['kind']} {r['name']}: {r['error']}" for r in json.loads(proc.stdout) if r["error"]]


def validation_errors(objs: list[dict]) -> list[str]:
    """Every rendered object, checked by the tool that knows its kind."""
    errors = []
    for o in objs:
        where = f"{o.get('kind')} {o.get('metadata', {}).get('name')}"
        if o["kind"] == crd.KIND:
            if (e := frauddemo_errors(o)) is not None:
                errors.append(f"{where}: {e}")
        elif o["kind"] not in MONITORING_KINDS:
            for v in KUBE_VERSIONS:
                if (e := builtin_errors(o, v)) is not None:
                    errors.append(f"{where} (Kubernetes {v}): {e}")
    errors += monitoring_errors([o for o in objs if o["kind"] in MONITORING_KINDS])
    return errors


RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(pod: dict) -> list[str]:
    """The Pod Security Standards' "restricted" profile, plus a read-only root filesystem, checked on a
    pod spec (container settings override the pod's)."""
    out = []
    psc = pod.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            out.append(key)
    for vol in pod.get("volumes", []):
        if not set(vol) - {"name"} <= RESTRICTED_VOLUMES:
            out.append(f"volume {vol['name']}")
    for c in pod.get("initContainers", []) + pod["containers"]:
        sc, name = c.get("securityContext", {}), c["name"]
        seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
        checks = {
            "seccompProfile RuntimeDefault": seccomp in ("RuntimeDefault", "Localhost"),
            "not privileged": not sc.get("privileged"),
            "allowPrivilegeEscalation false": sc.get("allowPrivilegeEscalation") is False,
            "runAsNonRoot": sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True,
            "a non-zero runAsUser": sc.get("runAsUser", psc.get("runAsUser")) not in (0, None),
            "drop ALL": "ALL" in sc.get("capabilities", {}).get("drop", []),
            "no added capability": not set(sc.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"},
            "readOnlyRootFilesystem": sc.get("readOnlyRootFilesystem") is True,
            "no hostPort": not any(p.get("hostPort") for p in c.get("ports", [])),
        }
        out += [f"{name}: {what}" for what, ok in checks.items() if not ok]
    return out
