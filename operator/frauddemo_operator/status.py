"""A FraudDemo's status, computed from what was observed (pure functions, no I/O).

Inputs: the parsed spec (None when invalid), the readiness of the StatefulSets and Deployments as
their own status reports it, the detector's /api/status when reachable, the last reconcile's
outcome, and the previous status (for lastTransitionTime). Output: the whole status object.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypedDict

from . import builders
from .models import Spec

CONDITIONS = ("Ready", "StoresReady", "ReplicationHealthy", "Degraded", "SpecApplied")
# Present (True) only while the spec uses a deprecated field (models.deprecated_fields); gone once it does not.
DEPRECATED = "DeprecatedField"


class Condition(TypedDict):
    """One entry of status.conditions (the Kubernetes condition shape)."""

    type: str
    status: str  # "True", "False" or "Unknown"
    reason: str
    message: str
    lastTransitionTime: str
    observedGeneration: int


class StoreStatus(TypedDict):
    """One entry of status.stores."""

    name: str
    replicas: int
    readyReplicas: int
    ready: bool


@dataclasses.dataclass(frozen=True)
class Workload:
    kind: str
    name: str
    component: str
    desired: int
    ready: int
    rolled_out: bool = True  # the controller has seen the current spec and every pod runs it

    @property
    def is_ready(self) -> bool:
        return self.rolled_out and self.ready >= self.desired


def _rolled_out(obj: Mapping[str, Any], desired: int) -> bool:
    """Whether the workload's controller has rolled the current spec out to every pod, the way
    `kubectl rollout status` tells: it observed this generation, and (a Deployment) every replica is
    updated and no old one is left, or (a StatefulSet) the current revision is the update revision."""
    meta, st = obj.get("metadata") or {}, obj.get("status") or {}
    gen, seen = meta.get("generation"), st.get("observedGeneration")
    if gen is not None and (seen is None or int(seen) < int(gen)):
        return False
    if obj.get("kind") == "StatefulSet":
        current, update = st.get("currentRevision"), st.get("updateRevision")
        return current is None or update is None or current == update
    updated = int(st.get("updatedReplicas") or 0)
    return updated >= desired and int(st.get("replicas") or 0) <= updated


def workload(obj: Mapping[str, Any]) -> Workload:
    """A StatefulSet's or Deployment's readiness as its own status reports it: its ready (StatefulSet)
    or available (Deployment) replicas, and whether its rollout is complete (a stuck rollout is not
    ready, even with old pods still available)."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    st = obj.get("status") or {}
    desired = int(spec.get("replicas", 1))
    if obj.get("kind") == "StatefulSet":
        ready = int(st.get("readyReplicas") or 0)
    else:
        ready = int(st.get("availableReplicas") or 0)
    return Workload(
        obj.get("kind", ""),
        meta.get("name", ""),
        (meta.get("labels") or {}).get(builders.L_COMPONENT, ""),
        desired,
        ready,
        _rolled_out(obj, desired),
    )


@dataclasses.dataclass(frozen=True)
class DetectorStats:
    lag_seconds: float | None
    links: int
    links_up: int
    fraud_alerts: int | None
    problems: tuple[str, ...] = ()


def parse_detector(payload: Mapping[str, Any]) -> DetectorStats:
    """The detector's GET /api/status: {"stores": {name: {"up": ...}}, "links": [{"source", "target",
    "state", "lag_ms"}...]} plus, when the detector reports them, fraud counts under "fraud"."""
    links = payload.get("links") or []
    lags = [float(l.get("lag_ms") or 0) / 1000 for l in links if isinstance(l, dict)]
    up = sum(1 for l in links if isinstance(l, dict) and l.get("state") == "up")
    problems = [
        f"link {l.get('source')}->{l.get('target')} is {l.get('state')}"
        for l in links
        if isinstance(l, dict) and l.get("state") != "up"
    ]
    problems += [
        f"store {n} is down"
        for n, s in (payload.get("stores") or {}).items()
        if isinstance(s, dict) and not s.get("up", True)
    ]
    fraud = payload.get("fraud")
    alerts = None
    if isinstance(fraud, dict):
        alerts = fraud.get("alerts", fraud.get("alerts_total"))
    elif "fraud_alerts" in payload:
        alerts = payload.get("fraud_alerts")
    return DetectorStats(
        round(max(lags), 3) if lags else None,
        len(links),
        up,
        int(alerts) if isinstance(alerts, (int, float)) else None,
        tuple(problems),
    )


@dataclasses.dataclass(frozen=True)
class Observation:
    generation: int
    invalid: tuple[str, str] | None = None  # (reason, message) when the spec makes no sense
    error: str | None = None  # the last reconcile's API error, if it failed
    workloads: Mapping[tuple[str, str], Workload] = dataclasses.field(default_factory=dict)
    detector: DetectorStats | None = None
    passwords: dict[str, Any] | None = None  # a Redis password rotation's progress (reconcile.py)
    refused: tuple[tuple[str, str], ...] = ()  # (reason, message) of children kept unlike the spec
    deprecated: tuple[tuple[str, str], ...] = ()  # (field, message) of deprecated fields the spec uses


def condition(
    ctype: str,
    status: bool | None,
    reason: str,
    message: str,
    generation: int,
    previous: list[Mapping[str, Any]] | None,
    now: str,
) -> Condition:
    value = "Unknown" if status is None else ("True" if status else "False")
    prev = next((c for c in previous or [] if c.get("type") == ctype), None)
    since = (
        prev["lastTransitionTime"] if prev and prev.get("status") == value and prev.get("lastTransitionTime") else now
    )
    return {
        "type": ctype,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }


def compute(
    fd_name: str, spec: Spec | None, obs: Observation, previous: Mapping[str, Any] | None, now: str
) -> dict[str, Any]:
    previous = previous or {}
    prev_conds: list[Mapping[str, Any]] = previous.get("conditions") or []
    gen = obs.generation

    def cond(t: str, s: bool | None, r: str, m: str) -> Condition:
        return condition(t, s, r, m, gen, prev_conds, now)

    deprecated = (
        [cond(DEPRECATED, True, "DeprecatedFieldUsed", " ".join(m for _, m in obs.deprecated)[:2000])]
        if obs.deprecated
        else []
    )

    if obs.invalid is not None or spec is None:
        reason, message = obs.invalid or ("InvalidSpec", "the spec could not be read")
        return {
            "phase": "Invalid",
            "observedGeneration": gen,
            "storesReady": None,
            "workloadsReady": None,
            "stores": None,
            "replication": None,
            "fraud": previous.get("fraud"),
            "conditions": [
                cond("Ready", False, reason, message),
                cond("StoresReady", None, "InvalidSpec", "not deployed: the spec is invalid"),
                cond("ReplicationHealthy", None, "InvalidSpec", "not deployed: the spec is invalid"),
                cond("Degraded", None, "InvalidSpec", "not deployed: the spec is invalid"),
                cond("SpecApplied", False, "InvalidSpec", "not deployed: the spec is invalid"),
                *deprecated,
            ],
        }

    stores: list[StoreStatus] = []
    for s in spec.stores:
        w = obs.workloads.get(("StatefulSet", builders.store_name(fd_name, s.name)))
        ready_replicas = w.ready if w else 0
        stores.append(
            {
                "name": s.name,
                "replicas": s.replicas,
                "readyReplicas": ready_replicas,
                "ready": w is not None and w.rolled_out and ready_replicas >= s.replicas,
            }
        )
    stores_ok = all(s["ready"] for s in stores)
    n_ready_stores = sum(1 for s in stores if s["ready"])

    wanted = [builders.syncer_name(fd_name, a, b) for a, b in spec.links]
    if spec.pos.enabled:
        wanted += [builders.pos_name(fd_name, s) for s in spec.store_names]
    if spec.hacked_store is not None:
        wanted.append(builders.hacked_pos_name(fd_name))
    wanted.append(builders.detector_name(fd_name))
    deploys = {n: obs.workloads.get(("Deployment", n)) for n in wanted}
    not_ready = [n for n, w in deploys.items() if w is None or not w.is_ready]
    workloads_ok = not not_ready
    syncers_down = [
        builders.syncer_name(fd_name, a, b) for a, b in spec.links if builders.syncer_name(fd_name, a, b) in not_ready
    ]

    det = obs.detector
    repl: tuple[bool | None, str, str]  # (ReplicationHealthy's status, reason, message)
    if det is not None:
        lag_high = det.lag_seconds is not None and det.lag_seconds > spec.replication.lag_threshold_seconds
        if det.problems:
            repl = (False, "LinkDown", "; ".join(det.problems))
        elif lag_high:
            repl = (
                False,
                "LagAboveThreshold",
                f"replication lag {det.lag_seconds:g}s is above {spec.replication.lag_threshold_seconds:g}s",
            )
        else:
            repl = (True, "LinksUp", f"{det.links_up}/{det.links} links up, lag {det.lag_seconds or 0:g}s")
    elif syncers_down:
        repl = (False, "SyncersNotReady", "syncers not ready: " + ", ".join(syncers_down))
    elif not stores_ok:
        repl = (None, "StoresNotReady", "waiting for the stores")
    else:
        repl = (None, "NoMeasurement", "the detector's /api/status is not reachable yet")

    all_ok = stores_ok and workloads_ok and repl[0] is not False and obs.error is None
    was_ready = previous.get("phase") in ("Ready", "Degraded")
    rolling = {s["name"] for s in stores if s["readyReplicas"] >= s["replicas"] and not s["ready"]}
    problems = [
        f"store {s['name']} {s['readyReplicas']}/{s['replicas']} ready"
        + (", rollout not complete" if s["name"] in rolling else "")
        for s in stores
        if not s["ready"]
    ]
    problems += [
        f"{n} rollout not complete" if (d := deploys[n]) is not None and d.ready >= d.desired else f"{n} not available"
        for n in not_ready
    ]
    if repl[0] is False:
        problems.append(repl[2])
    if obs.error:
        problems.insert(0, f"reconcile failed: {obs.error}")
    summary = "; ".join(problems)[:1000]

    if all_ok:
        phase, ready = (
            "Ready",
            cond("Ready", True, "AllReady", "every store, syncer, point of sale and the detector is ready"),
        )
    elif was_ready:
        phase = "Degraded"
        ready = cond("Ready", False, "ReconcileError" if obs.error else "Degraded", summary)
    else:
        phase = "Provisioning"
        ready = cond("Ready", False, "ReconcileError" if obs.error else "Provisioning", summary)
    stores_msg = "; ".join(f"{s['name']} {s['readyReplicas']}/{s['replicas']}" for s in stores)
    degraded = phase == "Degraded"
    return {
        "phase": phase,
        "observedGeneration": gen,
        "storesReady": f"{n_ready_stores}/{len(stores)}",
        "workloadsReady": f"{len(wanted) - len(not_ready)}/{len(wanted)}",
        "stores": stores,
        "replication": None
        if det is None
        else {
            "lagSeconds": det.lag_seconds if det.lag_seconds is not None else 0.0,
            "links": det.links,
            "linksUp": det.links_up,
        },
        "fraud": previous.get("fraud") if det is None or det.fraud_alerts is None else {"alerts": det.fraud_alerts},
        "passwords": obs.passwords or previous.get("passwords"),  # a None inside: removed by the merge patch
        "conditions": [
            ready,
            cond("StoresReady", stores_ok, "AllStoresReady" if stores_ok else "StoresNotReady", stores_msg),
            cond("ReplicationHealthy", repl[0], repl[1], repl[2]),
            cond(
                "Degraded",
                degraded,
                "Degraded" if degraded else "NotDegraded",
                summary if degraded else "nothing is degraded",
            ),
            cond("SpecApplied", False, obs.refused[0][0], " ".join(m for _, m in obs.refused)[:2000])
            if obs.refused
            else cond("SpecApplied", True, "Applied", "every child matches the spec"),
            *deprecated,
        ],
    }


def merge_patch_for(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> dict[str, Any]:
    """A merge patch turning `old` into `new` at the top level (None removes a key)."""
    patch = {k: v for k, v in new.items()}
    for k in old or {}:
        if k not in new:
            patch[k] = None
    return patch


def strip_none(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}
