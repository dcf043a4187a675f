"""Making the cluster match the desired children: create what is missing, patch what drifted,
recreate what cannot be patched, delete what is no longer wanted.

A child "drifted" when a field the operator sets differs from what the server holds; fields the
server or other controllers add (defaults, status, clusterIP, extra annotations) are not drift.
Quantities compare by value ("0.5" == "500m"). Secret data is never compared or rewritten: a store
password is generated once, and if its Secret is recreated the workloads using it are restarted. Two
exceptions: a store's ACL Secret always holds the ACL file rendered from its users' passwords, and the
role passwords are rotated on request (`rotate_passwords`): the new password becomes `password` and the old
one `previous`, both in the ACL file, the workloads restart onto the new one, and after the grace the old
ones are dropped from the Secrets and the ACL file (the store agent applies it with ACL LOAD).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import re
import secrets as _secrets
from collections.abc import Callable
from decimal import Decimal, InvalidOperation

from frauddemo import acl

from . import builders, kube
from .builders import Owner

# A Kubernetes quantity: <signedNumber><suffix>, the suffix binary (Ki), decimal (k, m) or an exponent (e3).
_QUANTITY = re.compile(
    r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?:(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)|[eE]([+-]?[0-9]+))?$"
)
_FACTORS = {
    None: 1,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}

# Fields the API server refuses to change in place: a difference there means delete and create.
IMMUTABLE = {
    "StatefulSet": ("selector", "serviceName", "volumeClaimTemplates", "podManagementPolicy"),
    "Deployment": ("selector",),
}

# Keys whose empty object means something (a pointer to an empty struct: an emptyDir volume, a selector of
# everything), which the API server keeps as {}. Every other empty list or map it drops (omitempty).
KEPT_WHEN_EMPTY = frozenset({"emptyDir", "namespaceSelector", "podSelector"})


def quantity(value: str) -> Decimal | None:
    m = _QUANTITY.match(value)
    if not m:
        return None
    try:
        number = Decimal(m.group(1))
        if m.group(3) is not None:
            return number.scaleb(int(m.group(3)))
        return number * _FACTORS[m.group(2)]
    except InvalidOperation:
        return None


def _absent_ok(key: str, value) -> bool:
    """Whether a desired value may be missing from what the server returns: None, and an empty list or
    map the server drops (so a desired `env: []` matches no `env`, and `ingress: []` no `ingress`)."""
    return value is None or (value in ([], {}) and key not in KEPT_WHEN_EMPTY)


def matches(desired, observed) -> bool:
    """Whether `observed` holds everything `desired` says, compared the way the API server returns
    objects: fields it adds (defaults, status) are fine, a missing key equals an empty list or map or
    None, and quantities compare by value ("1000m" == "1", "1024Mi" == "1Gi"). A list must have the
    same length (a rule or container added by hand is drift, also to a desired empty list)."""
    if isinstance(desired, dict):
        if not isinstance(observed, dict):
            return observed is None and not desired
        for k, v in desired.items():
            o = observed.get(k)
            if o is None:
                if _absent_ok(k, v):
                    continue
                return False
            if not matches(v, o):
                return False
        return True
    if isinstance(desired, list):
        if observed is None:
            return not desired
        return (
            isinstance(observed, list)
            and len(desired) == len(observed)
            and all(matches(d, o) for d, o in zip(desired, observed))
        )
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


def has_volumes(obj: dict) -> bool:
    return bool((obj.get("spec") or {}).get("volumeClaimTemplates"))


def recreate_refused(desired: dict, observed: dict) -> tuple[str, str] | None:
    """Why a StatefulSet that needs recreating must be kept (reason, message), or None. Its volumes are owned
    by it (persistentVolumeClaimRetentionPolicy whenDeleted: Delete): deleting it would delete the
    stores' data, and volumeClaimTemplates cannot change in place."""
    if desired.get("kind") != "StatefulSet" or not has_volumes(observed):
        return None
    name = observed["metadata"]["name"]
    ds, os_ = desired.get("spec") or {}, observed.get("spec") or {}

    def size(spec):
        for t in spec.get("volumeClaimTemplates") or []:
            req = ((t.get("spec") or {}).get("resources") or {}).get("requests") or {}
            cls = (t.get("spec") or {}).get("storageClassName")
            return f"{req.get('storage')}" + (f" (class {cls})" if cls else "")
        return "no volume (emptyDir)"

    how = (
        f"To change it: `kubectl delete statefulset {name} --cascade=orphan` (its pods and volumes stay), "
        f"and the operator creates it again from the spec; existing volumes keep their size unless you "
        f"expand each PersistentVolumeClaim data-{name}-N yourself (if its StorageClass allows expansion). "
        f"Or set the storage back."
    )
    if not matches(ds.get("volumeClaimTemplates") or [], os_.get("volumeClaimTemplates") or []):
        return "StorageChangeRefused", (
            f"StatefulSet {name}: the storage cannot change in place ({size(os_)} now, {size(ds)} asked); "
            f"recreating it would delete its volumes, so it is kept as it is. {how}"
        )
    return "RecreateRefused", (
        f"StatefulSet {name} would have to be recreated (an immutable field changed), which would delete "
        f"its volumes; it is kept as it is. {how}"
    )


def keep_immutable(desired: dict) -> dict:
    """`desired` without its immutable fields (and the volumes' retention policy): what can still change
    in place on a child that is kept, compared and patched without touching those."""
    drop = IMMUTABLE.get(desired["kind"], ()) + ("persistentVolumeClaimRetentionPolicy",)
    return {**desired, "spec": {k: v for k, v in desired["spec"].items() if k not in drop}}


def controller_uid(obj: dict) -> str | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref.get("uid")
    return None


def users_of(secrets: set[str], desired: list[dict], kinds=("StatefulSet", "Deployment")) -> list[dict]:
    """The workloads that read any of these Secrets (through env or a mounted volume)."""
    out = []
    for d in desired:
        if d["kind"] not in kinds:
            continue
        pod = d["spec"]["template"]["spec"]
        containers = pod.get("containers", []) + pod.get("initContainers", [])
        if any(
            (e.get("valueFrom") or {}).get("secretKeyRef", {}).get("name") in secrets
            for c in containers
            for e in c.get("env", [])
        ) or any((v.get("secret") or {}).get("secretName") in secrets for v in pod.get("volumes", [])):
            out.append(d)
    return out


def dependents(fd: str, store: str, desired: list[dict]) -> list[dict]:
    """The workloads that read a store's passwords (they restart when one of its Secrets is recreated)."""
    return users_of(
        {builders.store_secret(fd, store)} | {builders.role_secret(fd, store, r) for r in acl.CLIENT_ROLES}, desired
    )


def secret_values(obj: dict | None) -> dict[str, str]:
    """A Secret's data, decoded (`stringData` too: the API emulator keeps it as written). A value that is
    not base64 of UTF-8 text is left out, as if absent."""
    obj = obj or {}
    out = {}
    for k, v in (obj.get("data") or {}).items():
        try:
            out[k] = base64.b64decode(v, validate=True).decode()
        except (TypeError, ValueError):  # binascii.Error and UnicodeDecodeError are ValueErrors
            continue
    out.update({k: v for k, v in (obj.get("stringData") or {}).items() if isinstance(v, str)})
    return out


def is_password_secret(d: dict) -> bool:
    """A Secret the operator generates a password for (every one but the stores' ACL files)."""
    return d["kind"] == "Secret" and d["metadata"]["labels"].get(builders.L_COMPONENT) != "store-acl"


def password_of(obj: dict | None) -> str | None:
    """The password a password Secret holds; None when its key is missing, empty or undecodable."""
    return secret_values(obj).get(builders.PASSWORD_KEY) or None


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _ts(t: float) -> str:
    return datetime.datetime.fromtimestamp(int(t), datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_ts(text: str | None) -> float:
    try:
        return datetime.datetime.strptime(text or "", "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC).timestamp()
    except ValueError:
        return 0.0


def rotation_step(
    values: dict[str, str],
    annotations: dict,
    rotation: str | None,
    now: float,
    grace_s: float,
    new_password: Callable[[], str],
) -> dict | None:
    """What a role Secret needs now (a merge patch, or None): a new password when `rotation` (the
    FraudDemo's annotation) differs from the one it holds, the old one kept as `previous`; `previous`
    dropped once the grace after the rotation is over."""
    if rotation is not None and annotations.get(builders.A_ROTATION) != rotation:
        return {
            "metadata": {"annotations": {builders.A_ROTATION: rotation, builders.A_ROTATED_AT: _ts(now)}},
            "data": {
                builders.PASSWORD_KEY: b64(new_password()),
                builders.PREVIOUS_KEY: b64(values[builders.PASSWORD_KEY]),
            },
        }
    if builders.PREVIOUS_KEY in values and now >= _parse_ts(annotations.get(builders.A_ROTATED_AT)) + grace_s:
        return {"data": {builders.PREVIOUS_KEY: None}}
    return None


@dataclasses.dataclass
class Result:
    created: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    patched: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    recreated: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    deleted: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    restarted: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    # password Secrets found without a usable password and given a new one (also in `patched`)
    regenerated: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    # children kept although they differ from the spec: (child, (reason, message))
    refused: list[tuple[tuple[str, str], tuple[str, str]]] = dataclasses.field(default_factory=list)
    objects: dict[tuple[str, str], dict] = dataclasses.field(default_factory=dict)
    # the Redis passwords: {"rotation", "state": Rotating|Rotated, "previousValidUntil"}; None: never rotated
    passwords: dict | None = None

    @property
    def changed(self) -> bool:
        return bool(self.created or self.patched or self.recreated or self.deleted or self.restarted)

    def summary(self) -> str:
        parts = [
            f"{len(v)} {k}"
            for k, v in (
                ("created", self.created),
                ("patched", self.patched),
                ("recreated", self.recreated),
                ("deleted", self.deleted),
                ("restarted", self.restarted),
            )
            if v
        ]
        return ", ".join(parts) or "nothing to change"


MISSING = object()
FIRST_KINDS = ("Secret", "ConfigMap")  # created before the workloads that mount them


async def _all(jobs: list) -> None:
    """Run these concurrently; raise the first error once all are done."""
    outcomes = await asyncio.gather(*jobs, return_exceptions=True)
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    if errors:
        raise errors[0]


class Reconciler:
    def __init__(
        self,
        client: kube.Kube,
        password: Callable[[], str] = lambda: _secrets.token_urlsafe(24),
        grace_s: float = 300.0,
    ):
        self.kube = client
        self.password = password
        self.grace_s = grace_s  # how long a rotated-out password stays valid (pods roll onto the new one)
        self._rotation: dict[str, str | None] = {}  # owner uid -> the rotation new role Secrets start at
        self._rotating: dict[str, asyncio.Lock] = {}  # owner uid -> one rotation step at a time

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
        labels = d["metadata"]["labels"]
        if labels.get(builders.L_COMPONENT) == "store-acl":
            body = {**d, "data": {builders.ACL_KEY: b64(await self.acl_text(owner, labels[builders.L_STORE]))}}
        elif builders.L_ROLE in labels:
            rotation = self._rotation.get(owner.uid)
            ann = {builders.A_ROTATION: rotation} if rotation is not None else {}
            body = {
                **d,
                "metadata": {**d["metadata"], "annotations": {**d["metadata"].get("annotations", {}), **ann}},
                "data": {builders.PASSWORD_KEY: b64(self.password())},
            }
        elif d["kind"] == "Secret":
            body = {**d, "stringData": {builders.PASSWORD_KEY: self.password()}}
        return await self.kube.create(kube.CHILD_KINDS[d["kind"]], owner.namespace, body)

    async def acl_text(self, owner: Owner, store: str, objects: dict | None = None) -> str:
        """The store's ACL file from its Secrets (from `objects` when there, else read): every role with
        its current password, and its previous one during a rotation."""

        async def values(name):
            obj = (objects or {}).get(("Secret", name))
            if obj is None:
                obj = await self.kube.get(kube.SECRET, owner.namespace, name)
            return secret_values(obj)

        # A password missing here (its Secret emptied since it was repaired) leaves the role without one: for
        # the admin, a file the store agent refuses to apply; the next event on that Secret repairs it.
        admin = (await values(builders.store_secret(owner.name, store))).get(builders.PASSWORD_KEY)
        passwords = {acl.ADMIN: [admin] if admin else []}
        for role in acl.CLIENT_ROLES:
            v = await values(builders.role_secret(owner.name, store, role))
            passwords[role] = [v[k] for k in (builders.PASSWORD_KEY, builders.PREVIOUS_KEY) if v.get(k)]
        return acl.render(passwords)

    async def sync_acls(self, owner: Owner, desired: list[dict], result: Result, observed=None) -> None:
        """Every store's ACL Secret made to hold the file its users' Secrets render to."""
        for d in desired:
            if d["metadata"]["labels"].get(builders.L_COMPONENT) != "store-acl":
                continue
            k = builders.key(d)
            obs = (observed or {}).get(k) or result.objects.get(k)
            if obs is None:
                obs = await self.kube.get(kube.SECRET, owner.namespace, k[1])
            if obs is None:
                result.objects[k] = await self._create(owner, d)
                result.created.append(k)
                continue
            text = await self.acl_text(owner, d["metadata"]["labels"][builders.L_STORE], result.objects)
            if secret_values(obs).get(builders.ACL_KEY) != text or drifted(d, obs):
                patch = {**managed_fields(d), "data": {builders.ACL_KEY: b64(text)}}
                result.objects[k] = await self.kube.patch(kube.SECRET, owner.namespace, k[1], patch)
                result.patched.append(k)
            else:
                result.objects[k] = obs

    async def repair_password(self, owner: Owner, d: dict, obj: dict, result: Result) -> dict:
        """A password Secret without a usable password (its key removed or emptied by hand, or the Secret
        written by another tool) gets a new one, as a deleted one would be recreated with. The caller then
        syncs the ACL files and restarts the Secret's users, in that order. Returns the Secret."""
        k = builders.key(d)
        for _ in range(3):
            if password_of(obj) is not None:
                return obj
            # only if nobody wrote it since it was read: two repairs at once would give two passwords
            patch = {
                "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
                "data": {builders.PASSWORD_KEY: b64(self.password())},
            }
            if builders.PASSWORD_KEY in (obj.get("stringData") or {}):  # only the API emulator keeps it
                patch["stringData"] = {builders.PASSWORD_KEY: None}
            try:
                obj = await self.kube.patch(kube.SECRET, owner.namespace, k[1], patch)
            except kube.Conflict:
                obj = await self.kube.get(kube.SECRET, owner.namespace, k[1])
                if obj is None:
                    raise kube.ApiError(409, "Conflict", f"Secret {k[1]} was deleted while being repaired") from None
                continue
            result.patched.append(k)
            result.regenerated.append(k)
            return obj
        raise kube.ApiError(409, "Conflict", f"Secret {k[1]} keeps changing while being repaired")

    async def repair_passwords(self, owner: Owner, desired: list[dict], result: Result) -> list[dict]:
        """`repair_password` for every password Secret in `result.objects`; the workloads that read the
        repaired ones (to restart once the ACL files hold the new passwords)."""
        restart = []
        for d in desired:
            k = builders.key(d)
            if not is_password_secret(d) or k not in result.objects or password_of(result.objects[k]) is not None:
                continue
            result.objects[k] = await self.repair_password(owner, d, result.objects[k], result)
            if k in result.regenerated:
                restart += users_of({k[1]}, desired)
        return restart

    async def rotate_passwords(
        self, owner: Owner, desired: list[dict], result: Result, rotation: str | None
    ) -> set[str]:
        """Advance a rotation of the role passwords (see `rotation_step`). Returns the role Secrets that
        got a new password: the workloads using them must restart, once the ACL files hold it."""
        async with self._rotating.setdefault(owner.uid, asyncio.Lock()):
            return await self._rotate_passwords(owner, desired, result, rotation)

    async def _rotate_passwords(
        self, owner: Owner, desired: list[dict], result: Result, rotation: str | None
    ) -> set[str]:
        now = datetime.datetime.now(datetime.UTC).timestamp()
        rotated, until = set(), []
        for d in desired:
            if builders.L_ROLE not in d["metadata"]["labels"]:
                continue
            k = builders.key(d)
            # read again: two reconciles may overlap, and only one may rotate
            obj = await self.kube.get(kube.SECRET, owner.namespace, k[1]) or result.objects[k]
            ann = obj["metadata"].get("annotations") or {}
            patch = rotation_step(secret_values(obj), ann, rotation, now, self.grace_s, self.password)
            if patch is not None:
                obj = result.objects[k] = await self.kube.patch(kube.SECRET, owner.namespace, k[1], patch)
                ann = obj["metadata"].get("annotations") or {}
                if builders.PREVIOUS_KEY in patch.get("data", {}) and patch["data"][builders.PREVIOUS_KEY]:
                    rotated.add(k[1])
            if builders.PREVIOUS_KEY in secret_values(obj):
                until.append(_parse_ts(ann.get(builders.A_ROTATED_AT)) + self.grace_s)
        if rotation is not None:
            result.passwords = {
                "rotation": rotation,
                "state": "Rotating" if until else "Rotated",
                "previousValidUntil": _ts(max(until)) if until else None,
            }
        return rotated

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
                if observed is None:  # deleted in between: try once more
                    obj = await self._create(owner, d)
                    result.created.append(k)
                    return obj
        recreate = needs_recreate(d, observed)
        if recreate and (why := recreate_refused(d, observed)) is not None:
            result.refused.append((k, why))
            d, recreate = keep_immutable(d), False
        if recreate:
            await self.kube.delete(kind, owner.namespace, k[1])
            try:
                obj = await self._create(owner, d)
            except kube.Conflict as e:  # the old one is still being deleted; try again shortly
                raise kube.ApiError(409, "Conflict", f"{k[0]} {k[1]} is still being deleted", e.body) from None
            result.recreated.append(k)
            return obj
        if drifted(d, observed):
            obj = await self.kube.patch(kind, owner.namespace, k[1], managed_fields(d))
            result.patched.append(k)
            return obj
        return observed

    async def apply(
        self, owner: Owner, desired: list[dict], observed: dict | None = None, rotation: str | None = None
    ) -> Result:
        """Reconcile every child. With `observed` None (a fresh FraudDemo), creation is tried directly;
        otherwise children are compared with what exists and unwanted ones are deleted."""
        result = Result()
        wanted = {builders.key(d) for d in desired}
        # A store's Secret gone while its StatefulSet stayed: the new password needs a restart of its users.
        missing_secrets = [
            d
            for d in desired
            if d["kind"] == "Secret"
            and observed is not None
            and builders.L_STORE in d["metadata"]["labels"]
            and builders.key(d) not in observed
            and ("StatefulSet", builders.store_name(owner.name, d["metadata"]["labels"][builders.L_STORE])) in observed
        ]

        async def one(d):
            obj = await self.ensure(owner, d, MISSING if observed is None else observed.get(builders.key(d)), result)
            result.objects[builders.key(d)] = obj

        async def drop(k, obj):
            if await self.kube.delete(kube.CHILD_KINDS[k[0]], owner.namespace, k[1]):
                result.deleted.append(k)

        self._rotation[owner.uid] = rotation
        acl_files = [d for d in desired if d["metadata"]["labels"].get(builders.L_COMPONENT) == "store-acl"]
        # What pods mount comes first (a StatefulSet whose Secrets are missing leaves its pods in
        # FailedMount): the Secrets and ConfigMaps, then the ACL files rendered from the Secrets, then the rest.
        first = [d for d in desired if d["kind"] in FIRST_KINDS and d not in acl_files]
        rest = [d for d in desired if d["kind"] not in FIRST_KINDS]
        drops = (
            []
            if observed is None
            else [drop(k, obj) for k, obj in observed.items() if k not in wanted and controller_uid(obj) == owner.uid]
        )
        await _all([one(d) for d in first] + drops)
        # A password Secret without its password: a new one, into the ACL files before its users restart.
        repaired = await self.repair_passwords(owner, desired, result)
        rotated = await self.rotate_passwords(owner, desired, result, rotation)
        await self.sync_acls(owner, desired, result, observed)
        await _all([one(d) for d in rest])
        # Restarts last: a pod restarted onto a new password must find it in its store's ACL already.
        restart = users_of(rotated, desired, ("Deployment",)) + [
            d for d in repaired if builders.key(d) not in result.created
        ]  # a new workload starts on it anyway
        if missing_secrets and observed:
            restart += [
                d
                for s in missing_secrets
                for d in dependents(owner.name, s["metadata"]["labels"][builders.L_STORE], desired)
            ]
        if restart:
            await self.restart(owner, restart, result)
        return result

    async def restart_users(self, owner: Owner, desired: list[dict], stores: list[str], result: Result) -> None:
        """Roll the workloads that read these stores' passwords (a recreated Secret has a new one)."""
        await self.restart(owner, [d for store in stores for d in dependents(owner.name, store, desired)], result)

    async def restart(self, owner: Owner, workloads: list[dict], result: Result) -> None:
        """Roll these workloads' pods (an annotation on the pod template)."""
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        seen = set()
        for d in workloads:
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
