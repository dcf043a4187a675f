"""Helpers for the operator's tests: kubectl-like access to the emulator, a fake detector API, waiting.
The fixtures that start them are in pytest_plugin.py."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from frauddemo_operator import crd
from frauddemo_operator.main import OperatorThread

from .emulator import EmulatorThread

FD_PATH = f"/apis/{crd.API_VERSION}/namespaces/{{ns}}/{crd.PLURAL}"


def wait_for(pred: Callable, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


class FakeDetector:
    """Serves GET /<namespace>/<name>/api/status with whatever a test sets (404 otherwise)."""

    def __init__(self):
        self.payloads: dict[tuple[str, str], dict] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802
                parts = self.path.strip("/").split("/")
                payload = fake.payloads.get((parts[0], parts[1])) if len(parts) >= 4 else None
                body = json.dumps(payload or {"detail": "not found"}).encode()
                self.send_response(200 if payload is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-detector", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


class Cluster:
    """The emulator, the operator, and kubectl-like helpers over real HTTP."""

    def __init__(self, emu: EmulatorThread, op: OperatorThread, http: httpx.Client, detector: FakeDetector):
        self.emu, self.op, self.http, self.detector = emu, op, http, detector

    # kubectl-like, over HTTP
    def apply_fd(self, kube_ns: str, name: str, spec: dict, expect: int = 201) -> dict:
        r = self.http.post(
            FD_PATH.format(ns=kube_ns),
            json={"apiVersion": crd.API_VERSION, "kind": crd.KIND, "metadata": {"name": name}, "spec": spec},
        )
        assert r.status_code == expect, r.text
        return r.json()

    def patch_fd(self, kube_ns: str, name: str, patch: dict, expect: int = 200) -> dict:
        r = self.http.patch(
            FD_PATH.format(ns=kube_ns) + f"/{name}",
            json=patch,
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert r.status_code == expect, r.text
        return r.json()

    def delete_fd(self, kube_ns: str, name: str) -> None:
        r = self.http.delete(FD_PATH.format(ns=kube_ns) + f"/{name}")
        assert r.status_code == 200, r.text

    # inspection (directly in the emulator's loop)
    def fd(self, kube_ns: str, name: str) -> dict | None:
        return self.emu.get("frauddemos", kube_ns, name)

    def status(self, kube_ns: str, name: str) -> dict:
        return (self.fd(kube_ns, name) or {}).get("status") or {}

    def children(self, kube_ns: str) -> dict[str, set[str]]:
        out = {}
        for plural in (
            "secrets",
            "configmaps",
            "services",
            "statefulsets",
            "deployments",
            "networkpolicies",
            "servicemonitors",
        ):
            out[plural] = {o["metadata"]["name"] for o in self.emu.list(plural, kube_ns)}
        return out

    def reconciled(self, kube_ns: str, name: str) -> dict | None:
        """The status, once it describes the current generation."""
        obj = self.fd(kube_ns, name)
        st = (obj or {}).get("status") or {}
        return st if obj and st.get("observedGeneration") == obj["metadata"]["generation"] else None

    def wait_phase(self, kube_ns: str, name: str, phase: str, timeout: float = 10.0) -> dict:
        return wait_for(
            lambda: (st := self.reconciled(kube_ns, name)) and st.get("phase") == phase and st,
            timeout,
            what=f"{kube_ns}/{name} phase {phase}",
        )

    def condition(self, kube_ns: str, name: str, ctype: str) -> dict | None:
        return next((c for c in self.status(kube_ns, name).get("conditions") or [] if c["type"] == ctype), None)

    def events(self, kube_ns: str) -> list[dict]:
        return self.emu.list("events", kube_ns)

    def writes_since(self, mark: int) -> list[tuple[str, str]]:
        """(method, path) of every write the API received after `mark` (len of the request log)."""
        return [(m, p) for m, p, *_ in self.emu.requests()[mark:] if m in ("POST", "PATCH", "PUT", "DELETE")]

    def mark(self) -> int:
        return len(self.emu.requests())

    def writes(self, mark: int, ns: str) -> list[tuple[str, str, str, dict]]:
        """(method, plural, name, body) of every write into namespace `ns` since `mark`, in order."""
        out = []
        for r in self.emu.requests()[mark:]:
            if r.method not in ("POST", "PATCH", "PUT", "DELETE") or f"/namespaces/{ns}/" not in r.path:
                continue
            parts = r.path.split(f"/namespaces/{ns}/", 1)[1].split("/")
            try:
                body = json.loads(r.body or b"{}")
            except ValueError:
                body = {}
            name = parts[1] if len(parts) > 1 else (body.get("metadata") or {}).get("name", "")
            out.append((r.method, parts[0], name, body))
        return out


TWO_STORES = {"stores": [{"name": "a"}, {"name": "b"}]}
