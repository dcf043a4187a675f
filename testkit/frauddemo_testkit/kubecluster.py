"""A real local Kubernetes control plane for tests (tools/cluster.sh, from the binaries `make
cluster-tools` builds), and what the tests do with it: kubectl and helm against it, ServiceAccount
kubeconfigs from the TokenRequest API, the audit log, and the operator run as a process."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from frauddemo.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".tools" / "bin"
HELM = ROOT / ".tools" / "helm"
CLUSTER_SH = ROOT / "tools" / "cluster.sh"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


def missing_tools() -> list[str]:
    return [str(p) for p in [*(BIN / c for c in (*COMPONENTS, "kubectl")), HELM] if not os.access(p, os.X_OK)]


def _free_port_pair() -> int:
    """A port p with p+1 free too (etcd's client and peer ports)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 65000:
            with socket.socket() as s2:
                try:
                    s2.bind(("127.0.0.1", port + 1))
                    return port
                except OSError:
                    continue
    raise RuntimeError("no free pair of loopback ports")


class LocalCluster:
    """One control plane in its own directory and ports; `with LocalCluster(dir) as c:` starts and stops it."""

    def __init__(self, directory: Path, fake_nodes: str = "store-a:a store-b:b"):
        self.dir = Path(directory)
        self.api_port = free_port()
        self.etcd_port = _free_port_pair()
        self.env = {
            **os.environ,
            "CLUSTER_DIR": str(self.dir),
            "API_PORT": str(self.api_port),
            "ETCD_PORT": str(self.etcd_port),
            "FAKE_NODES": fake_nodes,
        }
        self.kubeconfig = self.dir / "kubeconfig"
        self.audit_log = self.dir / "audit.log"

    def __enter__(self) -> LocalCluster:
        proc = subprocess.run([str(CLUSTER_SH), "up"], env=self.env, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            self.stop()
            logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in (self.dir / "logs").glob("*.log"))
            raise RuntimeError(f"tools/cluster.sh up failed:\n{proc.stdout}\n{proc.stderr}\n{logs}")
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def pids(self) -> dict[str, int]:
        out = {}
        for c in COMPONENTS:
            f = self.dir / "pids" / c
            text = f.read_text().strip() if f.exists() else ""
            if text.isdigit():  # empty while tools/cluster.sh is writing it
                out[c] = int(text)
        return out

    def stop(self) -> None:
        subprocess.run([str(CLUSTER_SH), "down"], env=self.env, capture_output=True, text=True, timeout=120)

    # --- clients -------------------------------------------------------------------------------------

    def kubectl(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,
        kubeconfig: Path | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [str(BIN / "kubectl"), "--kubeconfig", str(kubeconfig or self.kubeconfig), *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def get(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def apply(self, manifest: dict | str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        return self.kubectl("apply", "-f", "-", *args, input=text, check=check)

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "HELM_CACHE_HOME": str(self.dir / "helm-cache"),
            "HELM_CONFIG_HOME": str(self.dir / "helm-config"),
            "HELM_DATA_HOME": str(self.dir / "helm-data"),
        }
        proc = subprocess.run([str(HELM), *args], capture_output=True, text=True, env=env, timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def token_kubeconfig(self, namespace: str, service_account: str, path: Path) -> Path:
        """A kubeconfig that authenticates as this ServiceAccount with a token from the TokenRequest
        API (what a pod's projected token is), so the real authorizer enforces its RBAC."""
        token = self.kubectl("create", "token", service_account, "-n", namespace, "--duration", "2h").stdout.strip()
        ca = base64.b64encode((self.dir / "pki" / "ca.crt").read_bytes()).decode()
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "sa",
                    "clusters": [
                        {
                            "name": "local",
                            "cluster": {
                                "server": f"https://127.0.0.1:{self.api_port}",
                                "certificate-authority-data": ca,
                            },
                        }
                    ],
                    "users": [{"name": service_account, "user": {"token": token}}],
                    "contexts": [
                        {"name": "sa", "context": {"cluster": "local", "user": service_account, "namespace": namespace}}
                    ],
                }
            )
        )
        path.chmod(0o600)
        return path

    # --- the audit log -------------------------------------------------------------------------------

    def audit_events(self) -> Iterator[dict]:
        if not self.audit_log.exists():
            return
        with self.audit_log.open() as f:
            for line in f:
                try:
                    yield json.loads(line)
                except ValueError:
                    continue  # a line being written

    def writes_by(
        self, username: str, since: float = 0.0, resources: tuple[str, ...] | None = None, subresource: str | None = ""
    ) -> list[dict]:
        """Audit events of mutating requests by this user after `since` (epoch seconds), optionally on
        these resources; subresource "" means the object itself, None any."""
        out = []
        for ev in self.audit_events():
            if ev.get("user", {}).get("username") != username or ev.get("verb") in ("get", "list", "watch"):
                continue
            ts = ev.get("requestReceivedTimestamp", "")
            when = time.mktime(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone if ts else 0
            ref = ev.get("objectRef") or {}
            if when < since or (resources and ref.get("resource") not in resources):
                continue
            if subresource is not None and ref.get("subresource", "") != subresource:
                continue
            out.append(ev)
        return out


class OperatorProcess:
    """`frauddemo operator` as a process (the installed wheel's entry point), as its pod would run it:
    with the chart Deployment's environment and a ServiceAccount kubeconfig."""

    def __init__(self, frauddemo: str, kubeconfig: Path, env: dict[str, str], log: Path):
        self.cmd = [frauddemo, "operator"]
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("FRAUDDEMO_")},
            **env,
            "FRAUDDEMO_OPERATOR_KUBECONFIG": str(kubeconfig),
            "FRAUDDEMO_OPERATOR_LIVENESS": f"http://127.0.0.1:{free_port()}/healthz",
        }
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> OperatorProcess:
        self.proc = subprocess.Popen(
            self.cmd, env=self.env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True
        )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, no clean-up: what a node failure or an OOM kill does."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def chart_operator_env(cluster: LocalCluster, namespace: str, deployment: str) -> dict[str, str]:
    """The operator container's plain env as the chart rendered it into the cluster."""
    dep = cluster.get("deployment", deployment, "-n", namespace)
    (container,) = [c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "operator"] or dep["spec"][
        "template"
    ]["spec"]["containers"][:1]
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
