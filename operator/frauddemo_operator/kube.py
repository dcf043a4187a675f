"""A thin asynchronous Kubernetes client on the official kubernetes_asyncio stack.

Only the generic path of kubernetes_asyncio's ApiClient is used (raw JSON in and out, merge
patches), so no time goes into model (de)serialisation. Every call the operator makes to the API
goes through `Kube.request`, so `CALLS` below is the complete list for the chart's RBAC.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException

from . import crd

log = logging.getLogger(__name__)

TRANSIENT = {0, 408, 409, 425, 429, 500, 502, 503, 504}


@dataclasses.dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        base = f"/api/{self.api_version}" if "/" not in self.api_version else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
            if subresource:
                base += f"/{subresource}"
        return base


SECRET = Kind("v1", "Secret", "secrets")
CONFIGMAP = Kind("v1", "ConfigMap", "configmaps")
SERVICE = Kind("v1", "Service", "services")
EVENT = Kind("v1", "Event", "events")
STATEFULSET = Kind("apps/v1", "StatefulSet", "statefulsets")
DEPLOYMENT = Kind("apps/v1", "Deployment", "deployments")
NETWORKPOLICY = Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies")
SERVICEMONITOR = Kind("monitoring.coreos.com/v1", "ServiceMonitor", "servicemonitors")
FRAUDDEMO = Kind(crd.API_VERSION, crd.KIND, crd.PLURAL)

CHILD_KINDS: dict[str, Kind] = {
    k.kind: k for k in (SECRET, CONFIGMAP, SERVICE, STATEFULSET, DEPLOYMENT, NETWORKPOLICY, SERVICEMONITOR)
}

# What the operator does to the API, for the chart's RBAC (kopf's own calls included).
CALLS: list[tuple[str, str, list[str]]] = [
    (crd.GROUP, "frauddemos", ["get", "list", "watch", "patch"]),
    (crd.GROUP, "frauddemos/status", ["get", "patch"]),
    (crd.GROUP, "frauddemos/finalizers", ["update"]),  # blockOwnerDeletion on children's ownerReferences
    ("", "secrets", ["get", "list", "watch", "create", "patch", "delete"]),
    ("", "configmaps", ["get", "list", "watch", "create", "patch", "delete"]),
    ("", "services", ["get", "list", "watch", "create", "patch", "delete"]),
    ("", "events", ["create", "patch"]),
    ("apps", "statefulsets", ["get", "list", "watch", "create", "patch", "delete"]),
    ("apps", "deployments", ["get", "list", "watch", "create", "patch", "delete"]),
    ("networking.k8s.io", "networkpolicies", ["get", "list", "watch", "create", "patch", "delete"]),
    ("monitoring.coreos.com", "servicemonitors", ["get", "list", "watch", "create", "patch", "delete"]),
    # discovery (non-resource URLs /api, /apis, /version are open to authenticated users by default)
    ("kopf.dev", "kopfpeerings", ["list", "watch", "patch"]),  # only with peering, namespaced
    ("kopf.dev", "clusterkopfpeerings", ["list", "watch", "patch"]),  # only with peering, cluster-wide
]


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str, body: Any = None):
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body
        super().__init__(f"{status} {reason}: {message}")

    @property
    def transient(self) -> bool:
        return self.status in TRANSIENT


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    pass


def _error(status: int, reason: str, body: Any) -> ApiError:
    message = reason
    data = body
    if isinstance(body, (str, bytes)):
        try:
            data = json.loads(body)
        except ValueError:
            data = body
    if isinstance(data, dict):
        message = data.get("message") or message
        reason = data.get("reason") or reason
    cls = NotFound if status == 404 else Conflict if status == 409 else ApiError
    return cls(status, str(reason), str(message)[:500], data)


async def load_configuration(kubeconfig: str | None = None, context: str | None = None) -> k8s_client.Configuration:
    """A kubernetes_asyncio Configuration: from a kubeconfig when given (or $KUBECONFIG / ~/.kube/config
    exists), else the in-cluster service account."""
    import os

    cfg = k8s_client.Configuration()
    if kubeconfig or os.environ.get("KUBECONFIG") or os.path.exists(os.path.expanduser("~/.kube/config")):
        # $KUBECONFIG may list several files (merged by the library); None means ~/.kube/config
        await k8s_config.load_kube_config(
            config_file=kubeconfig or os.environ.get("KUBECONFIG") or None,
            context=context,
            client_configuration=cfg,
            persist_config=False,
        )
    else:
        k8s_config.load_incluster_config(client_configuration=cfg)
    return cfg


class Kube:
    def __init__(
        self,
        configuration: k8s_client.Configuration,
        max_in_flight: int = 16,
        timeout: float = 10.0,
        discovery_ttl: float = 60.0,
        trust_env: bool = False,
    ):
        configuration.connection_pool_maxsize = max(max_in_flight, 4)
        self.api = k8s_client.ApiClient(configuration)
        self.api.user_agent = "frauddemo-operator"
        # kubernetes_asyncio's session trusts the environment's proxy variables, which costs an environment
        # scan per request; like kopf (settings.networking.trust_env), the operator does not use them.
        session = self.api.rest_client.pool_manager
        if hasattr(session, "_trust_env"):
            session._trust_env = trust_env
        self._sem = asyncio.Semaphore(max_in_flight)
        self._timeout = timeout
        self._discovery: dict[str, tuple[float, set[str]]] = {}
        self._discovery_ttl = discovery_ttl
        self.calls = 0

    async def close(self) -> None:
        await self.api.close()

    async def request(
        self,
        method: str,
        path: str,
        query: dict | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        self.calls += 1
        async with self._sem:
            try:
                data = await self.api.call_api(
                    path,
                    method,
                    query_params=list((query or {}).items()),
                    header_params={"Accept": "application/json", "Content-Type": content_type},
                    body=body,
                    response_types_map={200: "object", 201: "object", 202: "object"},
                    auth_settings=["BearerToken"],
                    _return_http_data_only=True,
                    _request_timeout=self._timeout,
                )
            except ApiException as e:
                raise _error(e.status or 0, e.reason or "Error", e.body) from None
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                raise ApiError(0, type(e).__name__, str(e) or type(e).__name__) from None
        return data

    async def get(self, kind: Kind, namespace: str | None, name: str) -> dict | None:
        try:
            return await self.request("GET", kind.path(namespace, name))
        except NotFound:
            return None

    async def list(self, kind: Kind, namespace: str | None, label_selector: str | None = None) -> list[dict]:
        query = {"labelSelector": label_selector} if label_selector else None
        data = await self.request("GET", kind.path(namespace), query)
        return list(data.get("items") or [])

    async def create(self, kind: Kind, namespace: str | None, body: dict) -> dict:
        return await self.request("POST", kind.path(namespace), body=body)

    async def patch(
        self, kind: Kind, namespace: str | None, name: str, patch: dict, subresource: str | None = None
    ) -> dict:
        return await self.request(
            "PATCH", kind.path(namespace, name, subresource), body=patch, content_type="application/merge-patch+json"
        )

    async def delete(self, kind: Kind, namespace: str | None, name: str) -> bool:
        try:
            await self.request(
                "DELETE",
                kind.path(namespace, name),
                body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
            )
            return True
        except NotFound:
            return False

    async def has_resource(self, kind: Kind) -> bool:
        """Whether the API serves this kind (discovery, cached for a while; absent groups are 404)."""
        now = time.monotonic()
        cached = self._discovery.get(kind.api_version)
        if cached is None or now - cached[0] > self._discovery_ttl:
            path = f"/api/{kind.api_version}" if "/" not in kind.api_version else f"/apis/{kind.api_version}"
            try:
                data = await self.request("GET", path)
                names = {r.get("name", "") for r in data.get("resources") or []}
            except NotFound:
                names = set()
            cached = self._discovery[kind.api_version] = (now, names)
        return kind.plural in cached[1]


async def connection_info(cfg: k8s_client.Configuration):
    """kopf's credentials taken from the same kubernetes_asyncio Configuration."""
    import kopf

    token = scheme = None
    value = await cfg.get_api_key_with_prefix("BearerToken") if cfg.api_key else None
    if value:
        scheme, _, token = value.partition(" ")
        if not token:
            scheme, token = "Bearer", scheme
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        username=cfg.username or None,
        password=cfg.password or None,
        scheme=scheme,
        token=token,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
    )
