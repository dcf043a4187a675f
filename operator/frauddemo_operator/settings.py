"""The operator's settings, all from the environment (FRAUDDEMO_OPERATOR_*)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

PREFIX = "FRAUDDEMO_OPERATOR_"


@dataclasses.dataclass(frozen=True)
class Settings:
    namespaces: tuple[str, ...] = ()  # NAMESPACES=a,b: serve only these; empty: the whole cluster
    peering: str | None = None  # PEERING=name: run in a peering group; empty: standalone
    priority: int = 0  # PRIORITY: this instance's peering priority
    liveness: str | None = "http://0.0.0.0:8081/healthz"  # LIVENESS=URL ("" disables)
    kubeconfig: str | None = None  # KUBECONFIG=path (else $KUBECONFIG, ~/.kube/config, in-cluster)
    context: str | None = None  # CONTEXT: a kubeconfig context
    scanning: bool = False  # SCANNING=1: let kopf watch CRDs/namespaces (needs more RBAC)
    max_in_flight: int = 16  # MAX_IN_FLIGHT: concurrent API calls by the reconciler
    request_timeout: float = 10.0  # REQUEST_TIMEOUT: seconds per API call
    resync_seconds: float = 300.0  # RESYNC_SECONDS: full reconcile of every FraudDemo (safety net)
    stats_seconds: float = 15.0  # STATS_SECONDS: how often the detector's /api/status is read
    stats_timeout: float = 2.0  # STATS_TIMEOUT: seconds per detector request
    detector_url: str = "http://{name}-detector.{namespace}.svc:8080"  # DETECTOR_URL template
    dashboard_file: str | None = None  # DASHBOARD_FILE: a dashboard JSON template to ship instead
    status_debounce: float = 0.05  # STATUS_DEBOUNCE: seconds to coalesce status writes
    backoff_base: float = 0.5  # BACKOFF_BASE / BACKOFF_CAP: retry delays on API errors
    backoff_cap: float = 60.0
    password_grace: float = 300.0  # PASSWORD_GRACE: seconds a rotated-out Redis password stays valid
    log_level: str = "INFO"  # LOG_LEVEL

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        d = cls()
        kw: dict = {}

        def get(name: str):
            v = env.get(PREFIX + name)
            return None if v is None else v.strip()

        if (v := get("NAMESPACES")) is not None:
            kw["namespaces"] = tuple(n.strip() for n in v.split(",") if n.strip())
        if (v := get("PEERING")) is not None:
            kw["peering"] = v or None
        if (v := get("LIVENESS")) is not None:
            kw["liveness"] = v or None
        for name, attr in (("KUBECONFIG", "kubeconfig"), ("CONTEXT", "context"), ("DASHBOARD_FILE", "dashboard_file")):
            if (v := get(name)) is not None:
                kw[attr] = v or None
        if (v := get("DETECTOR_URL")) is not None and v:
            kw["detector_url"] = v
        if (v := get("LOG_LEVEL")) is not None and v:
            kw["log_level"] = v.upper()
        if (v := get("SCANNING")) is not None:
            kw["scanning"] = v.lower() in ("1", "true", "yes", "on")
        for name, attr, conv in (
            ("PRIORITY", "priority", int),
            ("MAX_IN_FLIGHT", "max_in_flight", int),
            ("REQUEST_TIMEOUT", "request_timeout", float),
            ("RESYNC_SECONDS", "resync_seconds", float),
            ("STATS_SECONDS", "stats_seconds", float),
            ("STATS_TIMEOUT", "stats_timeout", float),
            ("STATUS_DEBOUNCE", "status_debounce", float),
            ("BACKOFF_BASE", "backoff_base", float),
            ("BACKOFF_CAP", "backoff_cap", float),
            ("PASSWORD_GRACE", "password_grace", float),
        ):
            if v := get(name):
                try:
                    kw[attr] = conv(v)
                except ValueError:
                    raise ValueError(f"{PREFIX}{name}={v!r} is not a valid {conv.__name__}") from None
        s = dataclasses.replace(d, **kw)
        if s.max_in_flight < 1:
            raise ValueError(f"{PREFIX}MAX_IN_FLIGHT must be >= 1")
        return s

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @property
    def standalone(self) -> bool:
        return self.peering is None
