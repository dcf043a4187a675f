"""A Kubernetes API emulator for the operator's tests and benchmark, built on kmock's KubernetesEmulator.

kmock 0.8's stock emulator needs these fixes before kopf works against it (docs/testing.md lists them);
this subclass serves every resource request itself and keeps kmock for the rest:

- objects get a uid, resourceVersion (one cluster-wide counter), generation and creationTimestamp;
  generateName works; the namespace comes from the URL when the body has none;
- watches honour `resourceVersion` (replaying from an event log, or 410 Gone when too old), send the
  snapshot and subscribe atomically (nothing lost in between), honour label and field selectors,
  `timeoutSeconds`, bookmarks and `sendInitialEvents`;
- merge patches follow RFC 7386, JSON patches fail a `test` with 422, and `metadata.resourceVersion`
  in a patch or PUT is a precondition (409 on mismatch); a no-op patch changes nothing;
- `/status` is a real subresource: writes to the object ignore status and vice versa;
- custom resources are defaulted, pruned and validated against their CRD's schema (422 with causes);
  registering a CRD makes its resource discoverable;
- garbage collection: deleting an owner deletes its dependents (background propagation), and an
  object whose owners are all gone is collected; finalizers and deletionTimestamp work;
- errors are `Status` objects with a plain `application/json` content type;
- `GET /api/v1/namespaces` and namespaces as objects work;
- optional simulated controllers: StatefulSets and Deployments report their replicas ready after
  `ready_delay` seconds (tests can hold a workload unready to play a dying pod).

Run it in its own thread (`EmulatorThread`), never in the operator's event loop.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import copy
import datetime
import json
import logging
import re
import secrets
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import aiohttp.web
import attrs
import jsonpatch
import kmock
from kmock._internal import k8s_dicts

from frauddemo_operator import crd as crd_mod

log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # (group, version, plural)
ObjKey = tuple[str | None, str]  # (namespace, name)

BOOKMARK_INTERVAL = 30.0
PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json")
HISTORY_VERSIONS = 16


class Logged(NamedTuple):
    """One request the emulator served (its request log, for assertions)."""

    method: str
    path: str
    query: dict
    content_type: str
    body: bytes
    time: float
    agent: str


class Status(Exception):
    """An API error answered as a Kubernetes Status object."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def body(self) -> dict:
        out = {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Failure",
            "code": self.code,
            "reason": self.reason,
            "message": self.message,
        }
        if self.details:
            out["details"] = self.details
        return out


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json(obj: Any, status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.Response(body=json.dumps(obj).encode(), status=status, content_type="application/json")


def _copy(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (returns a new value)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


# --- selectors ----------------------------------------------------------------------------------------

_SEL_RE = re.compile(r"\s*(!?)([A-Za-z0-9._/-]+)\s*(?:(==|=|!=)\s*([A-Za-z0-9._-]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*")


def _split_selector(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


def label_matcher(text: str | None) -> Callable[[dict], bool]:
    if not text:
        return lambda labels: True
    reqs = []
    for part in _split_selector(text):
        m = _SEL_RE.fullmatch(part)
        if not m:
            raise Status(400, "BadRequest", f"unable to parse requirement: {part!r}")
        neg, key, op, val, setop, values = m.groups()
        if setop:
            vals = {v.strip() for v in values.split(",") if v.strip()}
            reqs.append((lambda k, vs, inn: lambda l: (l.get(k) in vs) == inn)(key, vals, setop == "in"))
        elif op in ("=", "=="):
            reqs.append((lambda k, v: lambda l: l.get(k) == v)(key, val))  # noqa: B023 (bound by the outer call)
        elif op == "!=":
            reqs.append((lambda k, v: lambda l: l.get(k) != v)(key, val))  # noqa: B023 (bound by the outer call)
        elif neg:
            reqs.append((lambda k: lambda l: k not in l)(key))
        else:
            reqs.append((lambda k: lambda l: k in l)(key))
    return lambda labels: all(r(labels) for r in reqs)


def field_matcher(text: str | None) -> Callable[[dict], bool]:
    if not text:
        return lambda obj: True
    reqs = []
    for part in _split_selector(text):
        m = re.fullmatch(r"\s*([A-Za-z0-9._]+)\s*(==|=|!=)\s*(.*?)\s*", part)
        if not m:
            raise Status(400, "BadRequest", f"unable to parse field selector: {part!r}")
        path, op, val = m.groups()

        def get(obj, path=path):
            cur = obj
            for p in path.split("."):
                cur = cur.get(p) if isinstance(cur, dict) else None
            return "" if cur is None else str(cur)

        reqs.append((lambda g, v, eq: lambda o: (g(o) == v) == eq)(get, val, op != "!="))
    return lambda obj: all(r(obj) for r in reqs)


# --- the emulator ------------------------------------------------------------------------------------


@attrs.define(eq=False)
class _Sub:
    namespace: str | None
    labels: Callable[[dict], bool]
    fields: Callable[[dict], bool]
    queue: asyncio.Queue

    def matches(self, obj: dict | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata") or {}
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        return self.labels(meta.get("labels") or {}) and self.fields(obj)


@attrs.define
class _Info:
    kind: str
    namespaced: bool
    status_subresource: bool = False
    schema: dict | None = None  # openAPIV3Schema of a custom resource
    validator: Any = None


@attrs.define(kw_only=True)
class Emulator(kmock.KubernetesEmulator):
    """The API server emulator (an aiohttp handler; serve it with kmock.Server)."""

    controllers: bool = False  # simulated StatefulSet/Deployment controllers
    ready_delay: float = 0.0  # how long the simulated pods take to become ready
    monitoring: bool = False  # serve monitoring.coreos.com/v1 servicemonitors (prometheus-operator)
    event_log_size: int = 20000  # watch events kept per resource for resumption
    request_log_size: int = 50000

    _rv: int = attrs.field(default=0, init=False)
    _infos: dict = attrs.field(factory=dict, init=False)
    _index: dict = attrs.field(factory=lambda: collections.defaultdict(dict), init=False)
    _uids: dict = attrs.field(factory=dict, init=False)
    _subs: dict = attrs.field(factory=lambda: collections.defaultdict(set), init=False)
    _log: dict = attrs.field(factory=dict, init=False)
    _floor: dict = attrs.field(factory=lambda: collections.defaultdict(int), init=False)
    _held: dict = attrs.field(factory=dict, init=False)
    _faults: list = attrs.field(factory=list, init=False)
    _resource_objs: dict = attrs.field(factory=dict, init=False)
    _closing: bool = attrs.field(default=False, init=False)
    requests_log: collections.deque = attrs.field(init=False)
    hooks: list = attrs.field(factory=list, init=False)

    def __attrs_post_init__(self) -> None:
        # Only the stateless scaffold (discovery, errors): the stock stateful fallbacks are replaced
        # by _serve_resource below.
        kmock.KubernetesScaffold.__attrs_post_init__(self)
        self.requests_log = collections.deque(maxlen=self.request_log_size)
        with warnings.catch_warnings():  # kmock 0.8 uses importlib.resources.read_binary
            warnings.simplefilter("ignore", DeprecationWarning)
            self.resources.load_bundled()
        for res, info in list(self.resources.items()):
            self._infos[(res.group, res.version, res.plural)] = _Info(
                kind=info.kind or res.plural.capitalize(),
                namespaced=bool(info.namespaced),
                status_subresource="status" in info.subresources,
            )
        if self.monitoring:
            self.register(
                "monitoring.coreos.com",
                "v1",
                "servicemonitors",
                "ServiceMonitor",
                True,
                singular="servicemonitor",
                shortnames={"smon"},
            )

    async def _handle(self, request):
        # Non-resource requests only (discovery, /version, user reactions): kmock's DSL, without the
        # stock emulator's state handling, which _serve_resource replaces.
        return await kmock.RawHandler._handle(self, request)

    # --- resource registry (discovery) ---

    def register(
        self,
        group: str,
        version: str,
        plural: str,
        kind: str,
        namespaced: bool,
        *,
        singular: str | None = None,
        shortnames=(),
        categories=(),
        status: bool = False,
        schema: dict | None = None,
    ) -> None:
        subresources = {"status"} if status else set()
        self.resources[kmock.resource(group, version, plural)] = kmock.ResourceInfo(
            kind=kind,
            namespaced=namespaced,
            singular=singular or kind.lower(),
            shortnames=set(shortnames),
            categories=set(categories),
            subresources=subresources,
            verbs={"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"},
        )
        self._infos[(group, version, plural)] = _Info(kind, namespaced, status, schema)

    def _register_crd(self, obj: dict) -> None:
        spec = obj.get("spec") or {}
        names = spec.get("names") or {}
        for v in spec.get("versions") or []:
            if not v.get("served", True):
                continue
            self.register(
                spec["group"],
                v["name"],
                names["plural"],
                names["kind"],
                spec.get("scope", "Namespaced") == "Namespaced",
                singular=names.get("singular"),
                shortnames=names.get("shortNames") or (),
                categories=names.get("categories") or (),
                status="status" in (v.get("subresources") or {}),
                schema=(v.get("schema") or {}).get("openAPIV3Schema"),
            )

    # --- plumbing ---

    def fail(self, method: str, plural: str, status: int = 503, times: int = 1, name: str | None = None) -> None:
        """Fault injection: the next `times` matching requests get `status` and change nothing."""
        self._faults.append(
            {"method": method.upper(), "plural": plural, "status": status, "times": times, "name": name}
        )

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _parse(self, path: str) -> tuple[Key, str | None, str | None, str | None] | None:
        segs = [s for s in path.split("/") if s]
        if len(segs) >= 2 and segs[0] == "api":
            group, version, rest = "", segs[1], segs[2:]
        elif len(segs) >= 3 and segs[0] == "apis":
            group, version, rest = segs[1], segs[2], segs[3:]
        else:
            return None
        if not rest:
            return None
        ns = None
        if rest[0] == "namespaces" and len(rest) >= 3 and (group, version, rest[2]) in self._infos:
            ns, rest = rest[1], rest[2:]
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else None
        sub = "/".join(rest[2:]) or None
        return (group, version, plural), ns, name, sub

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        parsed = self._parse(raw.path)
        if parsed is None:
            return await super().__call__(raw)  # discovery, /version, user-declared kmock reactions
        body = await raw.read()
        self.requests_log.append(
            Logged(
                raw.method,
                raw.path,
                dict(raw.query),
                raw.content_type,
                body,
                time.monotonic(),
                raw.headers.get("User-Agent", ""),
            )
        )
        try:
            return await self._serve_resource(raw, body, *parsed)
        except Status as e:
            return _json(e.body(), e.code)
        except Exception as e:  # noqa: BLE001 - an emulator bug must be visible to the client
            log.exception("emulator failure on %s %s", raw.method, raw.path)
            return _json(Status(500, "InternalError", repr(e)).body(), 500)

    async def _serve_resource(self, raw, body: bytes, key: Key, ns, name, sub) -> aiohttp.web.StreamResponse:
        info = self._infos.get(key)
        if info is None:
            raise Status(404, "NotFound", f"the server could not find the requested resource ({key[2]})")
        method = raw.method.upper()
        for f in self._faults:
            if f["method"] == method and f["plural"] == key[2] and f["times"] > 0 and f["name"] in (None, name):
                f["times"] -= 1
                raise Status(f["status"], "InjectedFault", f"injected fault for {method} {raw.path}")
        if sub not in (None, "status"):
            raise Status(404, "NotFound", f"subresource {sub} is not served")
        if not info.namespaced:
            ns = None
        q = raw.query
        data: Any = None
        if method == "PATCH" and raw.content_type not in PATCH_TYPES:
            raise Status(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - "
                f"accepted media types include: {', '.join(PATCH_TYPES)} (got {raw.content_type})",
            )
        if body:
            try:
                data = json.loads(body)
            except ValueError:
                raise Status(400, "BadRequest", "the body is not JSON") from None
        if method == "GET" and q.get("watch") in ("true", "1"):
            return await self._watch(raw, key, ns, name, q)
        if method == "GET" and name is None:
            return _json(self._list(key, info, ns, q))
        if method == "GET":
            return _json(self._get(key, ns, name))
        if method == "POST" and name is None:
            return _json(self.create(key, ns, data, dry_run="dryRun" in q), 201)
        if method == "PATCH" and name is not None:
            return _json(self.patch(key, ns, name, data, raw.content_type, sub))
        if method == "PUT" and name is not None:
            return _json(self.replace(key, ns, name, data, sub))
        if method == "DELETE" and name is not None:
            return _json(self.delete(key, ns, name, data or {}))
        if method == "DELETE":
            match = label_matcher(q.get("labelSelector"))
            for (ons, oname), obj in list(self._index[key].items()):
                if (ns is None or ons == ns) and match(obj.get("metadata", {}).get("labels") or {}):
                    self.delete(key, ons, oname, data or {})
            return _json({"apiVersion": "v1", "kind": "Status", "status": "Success", "metadata": {}})
        raise Status(405, "MethodNotAllowed", f"{method} is not supported here")

    # --- reads ---

    def _get(self, key: Key, ns, name) -> dict:
        obj = self._index[key].get((ns, name))
        if obj is None:
            raise Status(
                404, "NotFound", f'{key[2]} "{name}" not found', {"name": name, "kind": key[2], "group": key[0]}
            )
        return obj.raw

    def _list(self, key: Key, info: _Info, ns, q) -> dict:
        labels = label_matcher(q.get("labelSelector"))
        fields = field_matcher(q.get("fieldSelector"))
        items = []
        for (ons, _), obj in self._index[key].items():
            raw = obj.raw
            if (ns is None or ons == ns) and labels(raw.get("metadata", {}).get("labels") or {}) and fields(raw):
                items.append(raw)
        group, version, _ = key
        return {
            "apiVersion": f"{group}/{version}" if group else version,
            "kind": f"{info.kind}List",
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    # --- writes ---

    def _emit(self, key: Key, etype: str, old: dict | None, new: dict | None, rv: int) -> None:
        obj = new if new is not None else old
        line = json.dumps({"type": etype, "object": obj}).encode() + b"\n"
        ring = self._log.get(key)
        if ring is None:
            ring = self._log[key] = collections.deque(maxlen=self.event_log_size)
        if len(ring) == ring.maxlen:
            self._floor[key] = ring[0][0]
        ring.append((rv, etype, old, new, line))
        for sub in list(self._subs.get(key, ())):
            self._deliver(sub, etype, old, new, line)
        for hook in list(self.hooks):
            try:
                hook(key, etype, obj)
            except Exception:  # noqa: BLE001 - a broken hook must not break the API
                log.exception("emulator hook failed")

    @staticmethod
    def _deliver(sub: _Sub, etype: str, old, new, line: bytes) -> None:
        was, now = sub.matches(old), sub.matches(new)
        if etype == "DELETED":
            if was or now:
                sub.queue.put_nowait(line)
        elif was and now or (etype == "ADDED" and now):
            sub.queue.put_nowait(line)
        elif now:  # started matching the selector
            sub.queue.put_nowait(json.dumps({"type": "ADDED", "object": new}).encode() + b"\n")
        elif was:  # stopped matching the selector
            sub.queue.put_nowait(json.dumps({"type": "DELETED", "object": new}).encode() + b"\n")

    def _resource(self, key: Key) -> kmock.resource:
        res = self._resource_objs.get(key)
        if res is None:
            res = self._resource_objs[key] = kmock.resource(*key)
        return res

    def _store(self, key: Key, ns, name, obj: dict) -> None:
        arr = self._objects._objects
        rkey = (self._resource(key), ns, name)
        o = arr.get(rkey)
        if o is None:
            o = arr[rkey] = k8s_dicts.Object(obj)
        else:
            o.create(obj)
            if len(o.history) > HISTORY_VERSIONS:
                del o.history[:-HISTORY_VERSIONS]
        self._index[key][(ns, name)] = o

    def _custom(self, key: Key, obj: dict, old: dict | None) -> dict:
        """Defaulting, pruning and validation of a custom resource against its CRD's schema."""
        info = self._infos[key]
        if info.schema is None:
            return obj
        if old is not None and all(
            obj.get(k) == old.get(k) for k in set(obj) | set(old) if k not in ("metadata", "status")
        ):
            return obj  # nothing the schema governs changed (e.g. a metadata-only patch)
        obj = crd_mod.prune(info.schema, crd_mod.apply_defaults(info.schema, obj))
        if info.validator is None:
            info.validator = _validator(info.schema)
        causes = [c for c in _schema_errors(info.validator, obj) if not c["field"].startswith("status")]
        if causes:
            kind, name = info.kind, (obj.get("metadata") or {}).get("name")
            raise Status(
                422,
                "Invalid",
                f'{kind} "{name}" is invalid: ' + ", ".join(f"{c['field']}: {c['message']}" for c in causes),
                {"name": name, "kind": kind, "causes": causes},
            )
        return obj

    def create(self, key: Key, ns, data: Any, dry_run: bool = False) -> dict:
        if not isinstance(data, dict):
            raise Status(400, "BadRequest", "the body must be an object")
        info = self._infos[key]
        obj = _copy(data)
        meta = obj.setdefault("metadata", {})
        if info.namespaced:
            if ns is None:
                raise Status(400, "BadRequest", "a namespaced resource needs a namespace in the URL")
            if meta.get("namespace") not in (None, ns):
                raise Status(400, "BadRequest", "the namespace of the object does not match the URL")
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise Status(422, "Invalid", "metadata.name or metadata.generateName is required")
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        name = meta["name"]
        if (ns, name) in self._index[key]:
            raise Status(409, "AlreadyExists", f'{key[2]} "{name}" already exists', {"name": name, "kind": key[2]})
        if info.status_subresource:
            obj.pop("status", None)
        obj = self._custom(key, obj, None)
        meta = obj["metadata"]
        group, version, _ = key
        obj["apiVersion"] = f"{group}/{version}" if group else version
        obj["kind"] = info.kind
        for f in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(f, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        if dry_run:
            return obj
        rv = self._next_rv()
        meta["resourceVersion"] = str(rv)
        if key == ("apiextensions.k8s.io", "v1", "customresourcedefinitions"):
            self._register_crd(obj)
            obj["status"] = {
                "acceptedNames": obj["spec"]["names"],
                "storedVersions": [v["name"] for v in obj["spec"]["versions"] if v.get("storage")],
                "conditions": [
                    {"type": t, "status": "True", "lastTransitionTime": now_rfc3339()}
                    for t in ("NamesAccepted", "Established")
                ],
            }
        self._store(key, ns, name, obj)
        self._uids[meta["uid"]] = (key, ns, name)
        self._emit(key, "ADDED", None, obj, rv)
        self._after_write(key, ns, name, None, obj)
        return obj

    def _update(self, key: Key, ns, name, old: dict, new: dict, sub: str | None) -> dict:
        info = self._infos[key]
        meta_old = old.get("metadata") or {}
        if sub == "status":
            status = new.get("status")
            new = {k: v for k, v in old.items() if k != "status"}
            if status is not None:
                new["status"] = status
        else:
            new = dict(new)
            if info.status_subresource:
                if "status" in old:
                    new["status"] = old["status"]
                else:
                    new.pop("status", None)
        # Never mutate what is stored: the new version gets its own metadata.
        new["metadata"] = dict(new.get("metadata") or {})
        for f in ("uid", "name", "namespace", "creationTimestamp", "generation"):
            if f in meta_old:
                new["metadata"][f] = meta_old[f]
            else:
                new["metadata"].pop(f, None)
        new["apiVersion"], new["kind"] = old.get("apiVersion"), old.get("kind")
        if meta_old.get("deletionTimestamp"):
            new["metadata"]["deletionTimestamp"] = meta_old["deletionTimestamp"]
        if sub != "status":
            new = self._custom(key, new, old)
        new["metadata"]["resourceVersion"] = meta_old.get("resourceVersion")
        if new == old:
            return old  # a no-op: no new resourceVersion, no event
        spec_changed = any(new.get(k) != old.get(k) for k in set(new) | set(old) if k not in ("metadata", "status"))
        if spec_changed or (new["metadata"].get("deletionTimestamp") and not meta_old.get("deletionTimestamp")):
            new["metadata"]["generation"] = int(meta_old.get("generation", 1)) + 1
        rv = self._next_rv()
        new["metadata"]["resourceVersion"] = str(rv)
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            self._remove(key, ns, name, new)
            return new
        self._store(key, ns, name, new)
        self._emit(key, "MODIFIED", old, new, rv)
        self._after_write(key, ns, name, old, new)
        return new

    def patch(self, key: Key, ns, name, data: Any, content_type: str, sub: str | None = None) -> dict:
        old = self._get(key, ns, name)
        if content_type == "application/json-patch+json":
            if not isinstance(data, list):
                raise Status(400, "BadRequest", "a JSON patch must be a list of operations")
            try:
                new = jsonpatch.apply_patch(_copy(old), data)
            except jsonpatch.JsonPatchTestFailed as e:
                raise Status(
                    422, "Invalid", f"the server rejected our request due to an error in our request: {e}"
                ) from None
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
                raise Status(422, "Invalid", str(e)) from None
        elif content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            if not isinstance(data, dict):
                raise Status(400, "BadRequest", "a merge patch must be an object")
            want_rv = (data.get("metadata") or {}).get("resourceVersion")
            if want_rv is not None and want_rv != old["metadata"]["resourceVersion"]:
                raise Status(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {key[2]} "{name}": the object '
                    "has been modified; please apply your changes to the latest version and try again",
                )
            new = merge_patch(old, data)
        else:
            raise Status(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - "
                f"accepted media types include: application/json-patch+json, "
                f"application/merge-patch+json, application/strategic-merge-patch+json "
                f"(got {content_type})",
            )
        return self._update(key, ns, name, old, new, sub)

    def replace(self, key: Key, ns, name, data: Any, sub: str | None = None) -> dict:
        old = self._get(key, ns, name)
        if not isinstance(data, dict):
            raise Status(400, "BadRequest", "the body must be an object")
        want_rv = (data.get("metadata") or {}).get("resourceVersion")
        if want_rv is not None and want_rv != old["metadata"]["resourceVersion"]:
            raise Status(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {key[2]} "{name}": the object '
                "has been modified; please apply your changes to the latest version and try again",
            )
        return self._update(key, ns, name, old, _copy(data), sub)

    def delete(self, key: Key, ns, name, options: dict | None = None) -> dict:
        old = self._get(key, ns, name)
        meta = old["metadata"]
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return old
            new = _copy(old)
            new["metadata"]["deletionTimestamp"] = now_rfc3339()
            return self._update(key, ns, name, old, new, None)
        orphan = (options or {}).get("propagationPolicy") == "Orphan"
        return self._remove(key, ns, name, old, orphan=orphan)

    def _remove(self, key: Key, ns, name, last: dict, orphan: bool = False) -> dict:
        rv = self._next_rv()
        gone = _copy(last)
        gone["metadata"]["resourceVersion"] = str(rv)
        self._index[key].pop((ns, name), None)
        self._objects._objects[(self._resource(key), ns, name)].delete()
        self._uids.pop(gone["metadata"].get("uid"), None)
        self._emit(key, "DELETED", gone, None, rv)
        if not orphan:
            asyncio.get_running_loop().call_soon(self._collect_dependents, gone["metadata"].get("uid"))
        return gone

    # --- garbage collection & simulated controllers ---

    def _collect_dependents(self, uid: str | None) -> None:
        if not uid:
            return
        for key, objs in list(self._index.items()):
            for (ons, oname), o in list(objs.items()):
                refs = o.raw.get("metadata", {}).get("ownerReferences") or []
                if any(r.get("uid") == uid for r in refs) and not any(r.get("uid") in self._uids for r in refs):
                    if (ons, oname) in self._index[key]:
                        self.delete(key, ons, oname, {})

    def _orphan_check(self, key: Key, ns, name) -> None:
        o = self._index[key].get((ns, name))
        if o is None:
            return
        refs = o.raw.get("metadata", {}).get("ownerReferences") or []
        if refs and not any(r.get("uid") in self._uids for r in refs):
            self.delete(key, ns, name, {})

    def _after_write(self, key: Key, ns, name, old: dict | None, new: dict) -> None:
        loop = asyncio.get_running_loop()
        refs = new.get("metadata", {}).get("ownerReferences") or []
        if refs and not any(r.get("uid") in self._uids for r in refs):
            loop.call_later(0.05, self._orphan_check, key, ns, name)
        if not self.controllers or key not in (("apps", "v1", "statefulsets"), ("apps", "v1", "deployments")):
            return
        gen = new["metadata"].get("generation")
        if old is None or old["metadata"].get("generation") != gen:
            if self.ready_delay:
                loop.call_later(self.ready_delay, self._settle, key, ns, name)
            else:
                loop.call_soon(self._settle, key, ns, name)

    def _settle(self, key: Key, ns, name) -> None:
        """What the workload controller and kubelet would report once pods run (or are held down)."""
        o = self._index[key].get((ns, name))
        if o is None:
            return
        obj = o.raw
        want = int((obj.get("spec") or {}).get("replicas", 1))
        ready = self._held.get((key, ns, name), want)
        status = {
            "observedGeneration": obj["metadata"].get("generation", 1),
            "replicas": want,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "updatedReplicas": want,
        }
        if key[2] == "statefulsets":
            status["currentReplicas"] = want
        else:
            status["conditions"] = [
                {
                    "type": "Available",
                    "status": "True" if ready >= want else "False",
                    "reason": "MinimumReplicasAvailable" if ready >= want else "MinimumReplicasUnavailable",
                }
            ]
        new = dict(obj)
        new["status"] = status
        self._update(key, ns, name, obj, new, "status")

    def hold(self, key: Key, ns, name, ready: int = 0) -> None:
        """Play dying pods: the workload reports `ready` ready replicas until released."""
        self._held[(key, ns, name)] = ready
        self._settle(key, ns, name)

    def release(self, key: Key, ns, name) -> None:
        self._held.pop((key, ns, name), None)
        self._settle(key, ns, name)

    # --- watching ---

    async def _watch(self, raw, key: Key, ns, name, q) -> aiohttp.web.StreamResponse:
        fields = field_matcher(q.get("fieldSelector"))
        if name is not None:
            base_fields = fields
            fields = lambda o, n=name: o.get("metadata", {}).get("name") == n and base_fields(o)  # noqa: E731
        sub = _Sub(ns, label_matcher(q.get("labelSelector")), fields, asyncio.Queue())
        since = q.get("resourceVersion")
        initial: list[bytes] = []
        if since and since != "0":
            try:
                since_rv = int(since)
            except ValueError:
                raise Status(400, "BadRequest", f"invalid resourceVersion {since!r}") from None
            if since_rv < self._floor[key]:
                initial.append(
                    json.dumps(
                        {
                            "type": "ERROR",
                            "object": Status(
                                410, "Expired", f"too old resource version: {since_rv} ({self._floor[key]})"
                            ).body(),
                        }
                    ).encode()
                    + b"\n"
                )
            else:
                for rv, etype, old, new, line in self._log.get(key, ()):
                    if rv > since_rv:
                        buf = asyncio.Queue()
                        self._deliver(_Sub(sub.namespace, sub.labels, sub.fields, buf), etype, old, new, line)
                        while not buf.empty():
                            initial.append(buf.get_nowait())
        else:
            for o in self._index[key].values():
                if sub.matches(o.raw):
                    initial.append(json.dumps({"type": "ADDED", "object": o.raw}).encode() + b"\n")
            if q.get("sendInitialEvents") == "true":
                initial.append(self._bookmark(key, initial_end=True))
        # Subscribed in the same synchronous step as the snapshot: nothing falls in between.
        self._subs[key].add(sub)
        resp = aiohttp.web.StreamResponse(status=200)
        resp.content_type = "application/json"
        try:
            await resp.prepare(raw)
            for line in initial:
                await resp.write(line)
            if initial and initial[0].startswith(b'{"type": "ERROR"'):
                return resp
            timeout = float(q.get("timeoutSeconds") or 0) or None
            deadline = time.monotonic() + timeout if timeout else None
            last = time.monotonic()
            bookmarks = q.get("allowWatchBookmarks") == "true"
            while not self._closing:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                transport = raw.transport
                if transport is None or transport.is_closing():
                    break
                try:
                    line = await asyncio.wait_for(sub.queue.get(), 1.0)
                except TimeoutError:
                    if bookmarks and time.monotonic() - last > BOOKMARK_INTERVAL:
                        await resp.write(self._bookmark(key))
                        last = time.monotonic()
                    continue
                if line is None:
                    break
                chunk, stop = [line], False
                while not sub.queue.empty():
                    nxt = sub.queue.get_nowait()
                    if nxt is None:
                        stop = True
                        break
                    chunk.append(nxt)
                await resp.write(b"".join(chunk))
                if stop:
                    break
                last = time.monotonic()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._subs[key].discard(sub)
        return resp

    def close_watches(self) -> None:
        """End every open watch stream now (as an API server restart would)."""
        self._closing = True
        for subs in self._subs.values():
            for sub in subs:
                sub.queue.put_nowait(None)

    def _bookmark(self, key: Key, initial_end: bool = False) -> bytes:
        group, version, _ = key
        meta: dict = {"resourceVersion": str(self._rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        obj = {
            "apiVersion": f"{group}/{version}" if group else version,
            "kind": self._infos[key].kind,
            "metadata": meta,
        }
        return json.dumps({"type": "BOOKMARK", "object": obj}).encode() + b"\n"

    # --- direct access for tests (call in the emulator's loop) ---

    def get(self, key: Key, ns, name) -> dict | None:
        o = self._index[key].get((ns, name))
        return None if o is None else _copy(o.raw)

    def list(self, key: Key, ns=None, label_selector: str | None = None) -> list[dict]:
        match = label_matcher(label_selector)
        return [
            _copy(o.raw)
            for (ons, _), o in self._index[key].items()
            if (ns is None or ons == ns) and match(o.raw.get("metadata", {}).get("labels") or {})
        ]


def _validator(schema: dict):
    import jsonschema

    js = crd_mod.to_jsonschema(schema, strict=False)
    js.setdefault("properties", {})["metadata"] = {"type": "object"}
    return jsonschema.Draft202012Validator(js)


def _schema_errors(v, obj: dict) -> list[dict]:
    out = []
    for e in v.iter_errors(obj):
        path = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in e.absolute_path).replace(".[", "[")
        out.append({"field": path or "<root>", "message": e.message, "reason": "FieldValueInvalid"})
    return out


# --- running it in a thread ----------------------------------------------------------------------------

RESOURCE_KEYS = {
    "secrets": ("", "v1", "secrets"),
    "configmaps": ("", "v1", "configmaps"),
    "services": ("", "v1", "services"),
    "events": ("", "v1", "events"),
    "namespaces": ("", "v1", "namespaces"),
    "statefulsets": ("apps", "v1", "statefulsets"),
    "deployments": ("apps", "v1", "deployments"),
    "networkpolicies": ("networking.k8s.io", "v1", "networkpolicies"),
    "servicemonitors": ("monitoring.coreos.com", "v1", "servicemonitors"),
    "frauddemos": (crd_mod.GROUP, crd_mod.VERSION, crd_mod.PLURAL),
    "customresourcedefinitions": ("apiextensions.k8s.io", "v1", "customresourcedefinitions"),
}


def _key(plural: str | tuple) -> Key:
    """A resource by plural name (RESOURCE_KEYS) or as a (group, version, plural) tuple."""
    return tuple(plural) if isinstance(plural, tuple) else RESOURCE_KEYS[plural]


class EmulatorThread:
    """The emulator served over HTTP on 127.0.0.1 from its own thread and event loop.

    Use as a context manager; `call(fn, *args)` runs a function in the emulator's loop and returns
    its result (the emulator is not thread-safe otherwise)."""

    def __init__(self, **options):
        self.options = options
        self.emulator: Emulator | None = None
        self.url: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def __enter__(self) -> EmulatorThread:
        self._thread = threading.Thread(target=self._main, name="k8s-emulator", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        if self.url is None:
            raise RuntimeError("the emulator did not start")
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(30)
            if self._thread.is_alive():
                raise RuntimeError("the emulator thread did not stop")

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # noqa: BLE001 - reported to the starting thread
            self._error = e
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with Emulator(**self.options) as emu, kmock.Server(emu) as server:
            self.emulator = emu
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()
            emu.close_watches()
            await asyncio.sleep(0.05)  # open watch streams end

    def call(self, fn: Callable, *args, timeout: float = 30, **kwargs) -> Any:
        async def run():
            return fn(*args, **kwargs)

        fut = asyncio.run_coroutine_threadsafe(run(), self._loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise

    # conveniences for tests and the benchmark
    def get(self, plural: str, ns, name) -> dict | None:
        return self.call(lambda: self.emulator.get(_key(plural), ns, name))

    def list(self, plural: str, ns=None, label_selector: str | None = None) -> list[dict]:
        return self.call(lambda: self.emulator.list(_key(plural), ns, label_selector))

    def create(self, plural: str, ns, body: dict) -> dict:
        return self.call(lambda: self.emulator.create(_key(plural), ns, body))

    def patch(self, plural: str, ns, name, patch: dict, subresource: str | None = None) -> dict:
        return self.call(
            lambda: self.emulator.patch(_key(plural), ns, name, patch, "application/merge-patch+json", subresource)
        )

    def delete(self, plural: str, ns, name) -> dict:
        return self.call(lambda: self.emulator.delete(_key(plural), ns, name, {}))

    def hold(self, plural: str, ns, name, ready: int = 0) -> None:
        self.call(lambda: self.emulator.hold(_key(plural), ns, name, ready))

    def release(self, plural: str, ns, name) -> None:
        self.call(lambda: self.emulator.release(_key(plural), ns, name))

    def fail(self, method: str, plural: str, status: int = 503, times: int = 1, name: str | None = None) -> None:
        self.call(lambda: self.emulator.fail(method, plural, status, times, name))

    def requests(self) -> list[tuple]:
        return self.call(lambda: list(self.emulator.requests_log))

    def kubeconfig(self, path) -> str:
        """Write a kubeconfig pointing at this emulator; returns its path."""
        import yaml

        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "emulator",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "emulator-token"}}],
            "contexts": [
                {"name": "emulator", "context": {"cluster": "emulator", "user": "tester", "namespace": "default"}}
            ],
        }
        with open(path, "w") as f:
            yaml.safe_dump(cfg, f)
        return str(path)
