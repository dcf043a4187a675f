"""Making the cluster match the desired children: create what is missing, patch what drifted,
recreate what cannot be patched, delete what is no longer wanted.

A child "drifted" when a field the operator sets differs from what the server holds; fields the
server or other controllers add (defaults, status, clusterIP, extra annotations) are not drift.
Quantities compare by value ("0.5" == "500m"). Secret data is never compared or rewritten: a store
password is generated once, and if its Secret is recreated the workloads using it are restarted.
"""
from __future__ import annotations

import asyncio
import dataclasses
import datetime
import re
import secrets as _secrets
from collections.abc import Callable
from decimal import Decimal, InvalidOperation

from . import builders, kube
from .builders import Owner

_QUANTITY = re.compile(r"^([+-]?[0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")
_FACTORS = {None: 1, "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "k": 10**3, "M": 10**6,
            "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30,
            "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}

# Fields the API server refuses to change in place: a difference there means delete and create.
IMMUTABLE = {"StatefulSet": ("selector", "serviceName", "volumeClaimTemplates", "podManagementPolicy"),
             "Deployment": ("selector",)}


def quantity(value: str) -> Decimal | None:
    m = _QUANTITY.match(value)
    if not m:
        return None
    try:
        return Decimal(m.group(1)) * _FACTORS[m.group(2)]
    except InvalidOperation:
        return None


def matches(desired, observed) -> bool:
    """Whether `observed` holds everything `desired` says (extra fields in `observed` are fine)."""
    if isinstance(desired, dict):
        if not isinstance(observed, dict):
            return False
        return all(k in observed and matches(v, observed[k]) for k, v in desired.items())
    if isinstance(desired, list):
        return (isinstance(observed, list) and len(desired) == len(observed)
                and all(matches(d, o) for d, o in zip(desired, observed)))
    if desired == observed:
        return True
    if isinstance(desired, str) and isinstance(observed, str):
        a, b = quantity(desired), quantity(observed)
        return a is not None and a == b
    if isinstance(desired, (int, float)) and isinstance(observed, (int, float)) and not isinstance(desired, bool):
        return float(desired) == float(observed)
    return False


def managed_fields(obj: dict) -> dict:
    """The part of a child the operator owns: labels, annotations, owner references and the body
    (for Secrets, not the data)."""
    meta = obj.get("metadata") or {}
    out_meta = {k: meta[k] for k in ("labels", "annotations", "ownerReferences") if k in meta}
    if obj.get("kind") == "Secret":
        return {"metadata": out_meta, "type": obj.get("type", "Opaque")}
    out = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")}
    out["metadata"] = out_meta
    return out


def drifted(desired: dict, observed: dict) -> bool:
    return not matches(managed_fields(desired), observed)


def needs_recreate(desired: dict, observed: dict) -> bool:
    fields = IMMUTABLE.get(desired.get("kind", ""), ())
    ds, os_ = desired.get("spec") or {}, observed.get("spec") or {}
    for f in fields:
        if f not in ds and f not in os_:
            continue
        if (f in ds) != (f in os_) or not matches(ds[f], os_[f]):
            return True
    return False


def controller_uid(obj: dict) -> str | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref.get("uid")
    return None


def dependents(fd: str, store: str, desired: list[dict]) -> list[dict]:
    """The workloads that read a store's password (they restart when its Secret is recreated)."""
    secret = builders.store_secret(fd, store)
    out = []
    for d in desired:
        if d["kind"] not in ("StatefulSet", "Deployment"):
            continue
        pod = d["spec"]["template"]["spec"]
        containers = pod.get("containers", []) + pod.get("initContainers", [])
        if any((e.get("valueFrom") or {}).get("secretKeyRef", {}).get("name") == secret
               for c in containers for e in c.get("env", [])):
            out.append(d)
    return out


@dataclasses.dataclass
class Result:
    created: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    patched: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    recreated: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    deleted: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    restarted: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    objects: dict[tuple[str, str], dict] = dataclasses.field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.patched or self.recreated or self.deleted or self.restarted)

    def summary(self) -> str:
        parts = [f"{len(v)} {k}" for k, v in (("created", self.created), ("patched", self.patched),
                                               ("recreated", self.recreated), ("deleted", self.deleted),
                                               ("restarted", self.restarted)) if v]
        return ", ".join(parts) or "nothing to change"


MISSING = object()


class Reconciler:
    def __init__(self, client: kube.Kube, password: Callable[[], str] = lambda: _secrets.token_urlsafe(24)):
        self.kube = client
        self.password = password

    async def observe(self, owner: Owner, kinds: list[kube.Kind]) -> dict[tuple[str, str], dict]:
        """The children that exist now (by label; only those this FraudDemo controls or that carry its name)."""
        sel = f"{builders.L_INSTANCE}={owner.name},{builders.MANAGED_SELECTOR}"
        lists = await asyncio.gather(*(self.kube.list(k, owner.namespace, sel) for k in kinds))
        out = {}
        for kind, items in zip(kinds, lists):
            for obj in items:
                obj.setdefault("kind", kind.kind)
                out[(kind.kind, obj["metadata"]["name"])] = obj
        return out

    async def _create(self, owner: Owner, d: dict) -> dict:
        body = d
        if d["kind"] == "Secret":
            body = {**d, "stringData": {builders.PASSWORD_KEY: self.password()}}
        return await self.kube.create(kube.CHILD_KINDS[d["kind"]], owner.namespace, body)

    async def ensure(self, owner: Owner, d: dict, observed=MISSING, result: Result | None = None) -> dict:
        """Make one child match; `observed` is its current body, None if known absent, MISSING if unknown
        (then creation is tried first). Returns the child's body as the server holds it."""
        result = result if result is not None else Result()
        kind = kube.CHILD_KINDS[d["kind"]]
        k = builders.key(d)
        if observed is None or observed is MISSING:
            try:
                obj = await self._create(owner, d)
                result.created.append(k)
                return obj
            except kube.Conflict:
                observed = await self.kube.get(kind, owner.namespace, k[1])
                if observed is None:   # deleted in between: try once more
                    obj = await self._create(owner, d)
                    result.created.append(k)
                    return obj
        if needs_recreate(d, observed):
            await self.kube.delete(kind, owner.namespace, k[1])
            try:
                obj = await self._create(owner, d)
            except kube.Conflict as e:   # the old one is still being deleted; try again shortly
                raise kube.ApiError(409, "Conflict", f"{k[0]} {k[1]} is still being deleted", e.body) from None
            result.recreated.append(k)
            return obj
        if drifted(d, observed):
            obj = await self.kube.patch(kind, owner.namespace, k[1], managed_fields(d))
            result.patched.append(k)
            return obj
        return observed

    async def apply(self, owner: Owner, desired: list[dict], observed: dict | None = None) -> Result:
        """Reconcile every child. With `observed` None (a fresh FraudDemo), creation is tried directly;
        otherwise children are compared with what exists and unwanted ones are deleted."""
        result = Result()
        wanted = {builders.key(d) for d in desired}
        # A store's Secret gone while its StatefulSet stayed: the new password needs a restart of its users.
        missing_secrets = [d for d in desired if d["kind"] == "Secret" and observed is not None
                           and builders.L_STORE in d["metadata"]["labels"] and builders.key(d) not in observed
                           and ("StatefulSet", builders.store_name(owner.name, d["metadata"]["labels"][
                               builders.L_STORE])) in observed]

        async def one(d):
            obj = await self.ensure(owner, d, MISSING if observed is None else observed.get(builders.key(d)), result)
            result.objects[builders.key(d)] = obj

        async def drop(k, obj):
            if await self.kube.delete(kube.CHILD_KINDS[k[0]], owner.namespace, k[1]):
                result.deleted.append(k)

        jobs = [one(d) for d in desired]
        if observed is not None:
            jobs += [drop(k, obj) for k, obj in observed.items()
                     if k not in wanted and controller_uid(obj) == owner.uid]
        outcomes = await asyncio.gather(*jobs, return_exceptions=True)
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if errors:
            raise errors[0]
        if missing_secrets and observed:
            await self.restart_users(owner, desired, [d["metadata"]["labels"][builders.L_STORE]
                                                      for d in missing_secrets], result)
        return result

    async def restart_users(self, owner: Owner, desired: list[dict], stores: list[str], result: Result) -> None:
        """Roll the workloads that read these stores' passwords (a recreated Secret has a new one)."""
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        seen = set()
        for store in stores:
            for d in dependents(owner.name, store, desired):
                k = builders.key(d)
                if k in seen:
                    continue
                seen.add(k)
                patch = {"spec": {"template": {"metadata": {"annotations": {builders.A_RESTARTED_AT: now}}}}}
                try:
                    result.objects[k] = await self.kube.patch(kube.CHILD_KINDS[k[0]], owner.namespace, k[1], patch)
                    result.restarted.append(k)
                except kube.NotFound:
                    pass
