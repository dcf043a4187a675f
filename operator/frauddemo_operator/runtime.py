"""The operator's working memory and the logic behind the (thin) kopf handlers.

One Runtime per operator process, handed to every handler through kopf's memo. It keeps, per
FraudDemo, what the watch streams last said (spec, generation, status), the readiness of its
StatefulSets and Deployments (from their own watch events, so status needs no extra API reads),
the detector's latest figures, and the outcome of the last reconcile. Status writes are coalesced
per FraudDemo and skipped when nothing changed, so they never feed a loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hashlib
import json
import logging
import os
import random
import secrets
import socket
import time

import aiohttp

from . import builders, crd, dashboard, kube, models, status
from .builders import Owner
from .reconcile import (
    Reconciler,
    Result,
    controller_uid,
    drifted,
    is_password_secret,
    needs_recreate,
    password_of,
    users_of,
)
from .settings import Settings

log = logging.getLogger(__name__)

WORKLOAD_KINDS = ("StatefulSet", "Deployment")


def version_key(obj: dict) -> tuple:
    """What identifies a child's content for drift checks: a workload's status-only updates (same
    generation, same metadata) need no new comparison; other kinds change resourceVersion only on edits."""
    meta = obj.get("metadata") or {}
    if obj.get("kind") in WORKLOAD_KINDS and meta.get("generation") is not None:
        owned = json.dumps([meta.get("labels"), meta.get("annotations"), meta.get("ownerReferences")], sort_keys=True)
        return meta.get("uid"), meta.get("generation"), owned
    return meta.get("uid"), meta.get("resourceVersion")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass
class DemoState:
    namespace: str
    name: str
    uid: str = ""
    generation: int = 0
    raw_spec: dict = dataclasses.field(default_factory=dict)
    rotation: str | None = None  # the annotation frauddemo.io/rotate-passwords
    passwords: dict | None = None  # the rotation's progress (Result.passwords)
    refused: dict = dataclasses.field(default_factory=dict)  # child -> (reason, message): kept unlike the spec
    server_status: dict = dataclasses.field(default_factory=dict)
    deleting: bool = False
    # the last reconcile
    reconciled_generation: int | None = None
    reconciled_spec: models.Spec | None = None
    invalid: tuple[str, str] | None = None
    error: str | None = None
    # observations
    workloads: dict = dataclasses.field(default_factory=dict)
    detector: status.DetectorStats | None = None
    written: dict | None = None
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    parsed: tuple | None = None  # (generation, Spec | InvalidSpec)
    desired_cache: tuple | None = None  # (cache key, [manifests])
    verified: dict = dataclasses.field(default_factory=dict)  # (kind, name) -> (version key, desired key)
    deprecated: tuple = ()  # (field, message) of the deprecated fields the reconciled spec uses
    polled_at: float | None = None  # time.monotonic() of the last read of the detector's figures

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name

    @property
    def owner(self) -> Owner:
        return Owner(self.name, self.namespace, self.uid)

    def body(self) -> dict:
        """The FraudDemo as last seen, enough to reconcile it again."""
        ann = {builders.A_ROTATE: self.rotation} if self.rotation is not None else {}
        return {
            "metadata": {
                "namespace": self.namespace,
                "name": self.name,
                "uid": self.uid,
                "generation": self.generation,
                "annotations": ann,
            },
            "spec": self.raw_spec,
            "status": self.server_status,
        }

    def spec(self) -> models.Spec | None:
        """The current spec parsed (cached per generation); None when it makes no sense."""
        if self.parsed is None or self.parsed[0] != self.generation:
            try:
                self.parsed = (self.generation, models.parse(self.name, self.raw_spec))
            except models.InvalidSpec as e:
                self.parsed = (self.generation, e)
        value = self.parsed[1]
        return value if isinstance(value, models.Spec) else None


class Runtime:
    def __init__(self, settings: Settings, identity: str | None = None):
        self.settings = settings
        self.identity = identity or f"frauddemo-operator@{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"
        self.demos: dict[tuple[str, str], DemoState] = {}
        self.kube: kube.Kube | None = None
        self.reconciler: Reconciler | None = None
        self._configuration = None
        self._pending: set[tuple[str, str]] = set()
        self._flush_handle: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self._retrying: set[tuple[str, str]] = set()
        self._http: aiohttp.ClientSession | None = None
        self._dashboard_template: str | None = None
        self.started = asyncio.Event()

    # --- lifecycle -------------------------------------------------------------------------------

    async def configuration(self):
        if self._configuration is None:
            self._configuration = await kube.load_configuration(self.settings.kubeconfig, self.settings.context)
        return self._configuration

    async def start(self) -> None:
        cfg = await self.configuration()
        self.kube = kube.Kube(cfg, self.settings.max_in_flight, self.settings.request_timeout)
        self.reconciler = Reconciler(self.kube, grace_s=self.settings.password_grace)
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.settings.stats_timeout))
        if self.settings.dashboard_file:
            with open(self.settings.dashboard_file) as f:
                self._dashboard_template = f.read()
        self.started.set()

    async def stop(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
        if self.kube is not None:
            await self.kube.close()

    def backoff(self, retry: int) -> float:
        base = min(self.settings.backoff_cap, self.settings.backoff_base * (2 ** min(retry, 16)))
        return round(base * random.uniform(0.8, 1.2), 2)

    # --- what the watch streams say ------------------------------------------------------------------

    def on_demo_event(self, etype: str | None, body: dict) -> None:
        meta = body.get("metadata") or {}
        key = (meta.get("namespace"), meta.get("name"))
        if etype == "DELETED":
            self.demos.pop(key, None)
            return
        st = self.demos.get(key)
        if st is None or st.uid != meta.get("uid"):
            st = self.demos[key] = DemoState(key[0], key[1], meta.get("uid", ""))
        st.generation = int(meta.get("generation") or 0)
        st.raw_spec = body.get("spec") or {}
        rotation = (meta.get("annotations") or {}).get(builders.A_ROTATE)
        if rotation != st.rotation and st.reconciled_generation is not None and rotation is not None:
            self.reconcile_at(key, None)  # a new value rotates the Redis passwords (no spec change)
        st.rotation = rotation
        st.server_status = body.get("status") or {}
        st.deleting = bool(meta.get("deletionTimestamp"))

    def desired(self, st: DemoState, spec: models.Spec, service_monitors: bool) -> list[dict]:
        cache_key = (
            st.uid,
            st.generation,
            service_monitors,
            hashlib.sha1(json.dumps(st.raw_spec, sort_keys=True).encode()).hexdigest(),
        )
        if st.desired_cache is None or st.desired_cache[0] != cache_key:
            dash = dashboard.render(st.namespace, st.name, self._dashboard_template)
            st.desired_cache = (
                cache_key,
                builders.desired(st.owner, spec, service_monitors=service_monitors, dashboard_json=dash),
            )
        return st.desired_cache[1]

    async def _service_monitors(self, spec: models.Spec) -> bool:
        if not spec.monitoring.service_monitor:
            return False
        try:
            return await self.kube.has_resource(kube.SERVICEMONITOR)
        except kube.ApiError as e:
            log.warning("cannot tell whether ServiceMonitors exist: %s", e)
            return False

    async def _child_kinds(self, service_monitors: bool) -> list[kube.Kind]:
        kinds = [kube.SECRET, kube.CONFIGMAP, kube.SERVICE, kube.STATEFULSET, kube.DEPLOYMENT, kube.NETWORKPOLICY]
        if service_monitors or await self.kube.has_resource(kube.SERVICEMONITOR):
            kinds.append(kube.SERVICEMONITOR)
        return kinds

    # --- reconciling a FraudDemo ------------------------------------------------------------------

    async def reconcile(self, namespace: str, name: str, body: dict, fresh: bool) -> Result:
        """Bring every child in line with the spec. Raises models.InvalidSpec (recorded in the status,
        not to be retried) or kube.ApiError (recorded; the caller retries with backoff)."""
        self.on_demo_event("MODIFIED", body)
        st = self.demos[(namespace, name)]
        generation = st.generation
        st.deprecated = tuple(models.deprecated_fields(st.raw_spec))
        spec = st.spec()
        if spec is None:
            err = st.parsed[1]
            st.invalid, st.error = (err.reason, err.message), None
            st.reconciled_generation, st.reconciled_spec = generation, None
            await self.write_status(st.key)
            raise err
        try:
            sm = await self._service_monitors(spec)
            desired = self.desired(st, spec, sm)
            observed = None if fresh else await self.reconciler.observe(st.owner, await self._child_kinds(sm))
            result = await self.reconciler.apply(st.owner, desired, observed, st.rotation)
        except kube.ApiError as e:
            st.error = str(e)
            if st.reconciled_generation is None:
                st.reconciled_generation, st.reconciled_spec = generation, spec
            try:
                await self.write_status(st.key)
            except kube.ApiError:
                pass
            raise
        await self.warn_regenerated(st, result)
        st.invalid, st.error = None, None
        st.reconciled_generation, st.reconciled_spec = generation, spec
        st.passwords = result.passwords
        st.refused = dict(result.refused)
        if result.passwords and result.passwords["state"] == "Rotating":
            self.reconcile_at(st.key, result.passwords["previousValidUntil"])
        for k, obj in result.objects.items():
            if k[0] in WORKLOAD_KINDS and k not in st.workloads:
                st.workloads[k] = status.workload(obj)
            st.verified[k] = (version_key(obj), st.desired_cache[0])
        await self.write_status(st.key)
        return result

    # --- children's events: readiness and drift ---------------------------------------------------

    async def on_child_event(self, etype: str | None, body: dict) -> Result | None:
        """Track workload readiness; restore a child deleted or edited by hand. Returns what was done.
        A repair that fails on the API is retried (a full reconcile, with backoff) and re-raised."""
        try:
            return await self._on_child_event(etype, body)
        except kube.ApiError:
            meta = body.get("metadata") or {}
            self.retry_later((meta.get("namespace"), (meta.get("labels") or {}).get(builders.L_INSTANCE)))
            raise

    def reconcile_at(self, key: tuple[str, str], when: str | None) -> None:
        """Reconcile this FraudDemo again at `when` (the end of a password rotation's grace), or now."""
        delay = (
            0.0
            if when is None
            else max(
                0.0,
                datetime.datetime.strptime(when, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC).timestamp()
                - time.time(),
            )
            + 1.0
        )

        async def later():
            await asyncio.sleep(delay)
            st = self.demos.get(key)
            if st is not None and not st.deleting and st.spec() is not None:
                try:
                    await self.reconcile(st.namespace, st.name, st.body(), fresh=False)
                except kube.ApiError as e:
                    log.warning("reconcile of %s/%s after the password grace failed (%s)", key[0], key[1], e)
                    self.retry_later(key)

        self._spawn(later())

    def retry_later(self, key: tuple[str, str]) -> None:
        """Reconcile this FraudDemo again after a backoff, until it succeeds (one retrier per demo)."""
        if key in self._retrying or key not in self.demos:
            return
        self._retrying.add(key)

        async def retrier():
            attempt = 0
            try:
                while True:
                    await asyncio.sleep(self.backoff(attempt))
                    st = self.demos.get(key)
                    if st is None or st.deleting or st.spec() is None:
                        return
                    try:
                        result = await self.reconcile(st.namespace, st.name, st.body(), fresh=False)
                        log.info("retried reconcile of %s/%s: %s", key[0], key[1], result.summary())
                        return
                    except kube.ApiError as e:
                        attempt += 1
                        log.warning("retried reconcile of %s/%s failed (%s); again later", key[0], key[1], e)
            finally:
                self._retrying.discard(key)

        self._spawn(retrier())

    async def _on_child_event(self, etype: str | None, body: dict) -> Result | None:
        meta = body.get("metadata") or {}
        labels = meta.get("labels") or {}
        fd = labels.get(builders.L_INSTANCE)
        st = self.demos.get((meta.get("namespace"), fd))
        if st is None or st.deleting:
            return None
        owner_uid = controller_uid(body)
        if owner_uid is not None and owner_uid != st.uid:
            return None  # a leftover of an earlier FraudDemo of the same name; the GC takes it
        kind, name = body.get("kind"), meta.get("name")
        k = (kind, name)
        if kind in WORKLOAD_KINDS:
            if etype == "DELETED":
                st.workloads.pop(k, None)
            else:
                st.workloads[k] = status.workload(body)
            self.request_status(st.key)
        spec = st.spec()
        if spec is None or st.reconciled_generation is None:
            return None
        desired = self.desired(st, spec, await self._service_monitors(spec))
        d = next((x for x in desired if x["kind"] == kind and x["metadata"]["name"] == name), None)
        result = Result()
        if d is None:
            if etype != "DELETED" and owner_uid == st.uid:
                if await self.kube.delete(kube.CHILD_KINDS[kind], st.namespace, name):
                    result.deleted.append(k)
            return result
        if etype == "DELETED":
            current = await self.kube.get(kube.FRAUDDEMO, st.namespace, st.name)
            if (
                current is None
                or current["metadata"].get("uid") != st.uid
                or current["metadata"].get("deletionTimestamp")
            ):
                return None  # the owner is going away: the garbage collector's deletion, not drift
            obj = await self.reconciler.ensure(st.owner, d, None, result)
            st.verified[k] = (version_key(obj), st.desired_cache[0])
            self._note_refused(st, k, result)
            if kind == "Secret":
                # A recreated password: into the ACL file first, then the pods restart onto it (the other
                # way round they would come up with a password their store does not accept yet).
                await self.reconciler.sync_acls(st.owner, desired, result)
                await self.reconciler.restart_users(st.owner, desired, [labels.get(builders.L_STORE)], result)
            result.objects[k] = obj
            return result
        desired_key = st.desired_cache[0]
        if kind == "Secret" and labels.get(builders.L_COMPONENT) == "store-acl":
            await self.reconciler.sync_acls(st.owner, [d], result, {k: body})  # its data is derived too
        if kind == "Secret" and is_password_secret(d) and password_of(body) is None:
            # Its password removed, emptied or garbled: drift like a deleted Secret, repaired the same way
            # (a new password, into the ACL file first, then the pods that read it restart onto it).
            body = await self.reconciler.ensure(st.owner, d, body, result)
            body = result.objects[k] = await self.reconciler.repair_password(st.owner, d, body, result)
            if k in result.regenerated:
                await self.reconciler.sync_acls(st.owner, desired, result)
                await self.reconciler.restart(st.owner, users_of({name}, desired), result)
                await self.warn_regenerated(st, result)
            st.verified[k] = (version_key(body), desired_key)
            return result
        if st.verified.get(k) == (version_key(body), desired_key):
            return result  # this very version was already found (or made) right
        if needs_recreate(d, body) or drifted(d, body):
            body = result.objects[k] = await self.reconciler.ensure(st.owner, d, body, result)
        st.verified[k] = (version_key(body), desired_key)
        self._note_refused(st, k, result)
        return result

    async def warn_regenerated(self, st: DemoState, result: Result) -> None:
        """A Warning event on the FraudDemo (and a log line) per password Secret given a new password."""
        for _, name in result.regenerated:
            message = (
                f"Secret {name} had no usable {builders.PASSWORD_KEY!r} (missing, empty or undecodable): "
                f"repaired with a new password; the ACL files were updated and the pods using it restarted"
            )
            log.warning("%s/%s: %s", st.namespace, st.name, message)
            now = _now()
            event = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"namespace": st.namespace, "generateName": f"{st.name}."},
                "involvedObject": {
                    "apiVersion": crd.API_VERSION,
                    "kind": crd.KIND,
                    "name": st.name,
                    "namespace": st.namespace,
                    "uid": st.uid,
                },
                "type": "Warning",
                "reason": "SecretRepaired",
                "message": message,
                "source": {"component": "frauddemo-operator"},
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            }
            try:
                await self.kube.create(kube.EVENT, st.namespace, event)
            except kube.ApiError as e:
                log.warning("event about Secret %s not posted: %s", name, e)

    def _note_refused(self, st: DemoState, k: tuple[str, str], result: Result) -> None:
        """Keep the SpecApplied condition in step when a repair of one child kept it, or recreated one
        that had been kept (e.g. a StatefulSet deleted with --cascade=orphan to take a new storage size)."""
        why = dict(result.refused).get(k)
        if st.refused.get(k) != why:
            if why is None:
                st.refused.pop(k, None)
            else:
                st.refused[k] = why
            self.request_status(st.key)

    # --- status ---------------------------------------------------------------------------------

    def request_status(self, key: tuple[str, str]) -> None:
        """Write this FraudDemo's status soon (writes are coalesced for settings.status_debounce)."""
        self._pending.add(key)
        if self._flush_handle is None:
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(self.settings.status_debounce, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        keys, self._pending = self._pending, set()
        for key in keys:
            self._spawn(self._write_quietly(key))

    def _spawn(self, coro) -> None:
        t = asyncio.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _write_quietly(self, key) -> None:
        try:
            await self.write_status(key)
        except kube.ApiError as e:
            log.warning("status of %s/%s not written (%s); retrying", key[0], key[1], e)
            await asyncio.sleep(self.backoff(1))
            self.request_status(key)

    async def write_status(self, key: tuple[str, str]) -> dict | None:
        st = self.demos.get(key)
        if st is None or st.deleting or st.reconciled_generation is None:
            return None
        async with st.lock:
            obs = status.Observation(
                st.reconciled_generation,
                st.invalid,
                st.error,
                dict(st.workloads),
                st.detector,
                st.passwords,
                tuple(st.refused.values()),
                st.deprecated,
            )
            previous = st.written if st.written is not None else st.server_status
            new = status.compute(st.name, st.reconciled_spec, obs, previous, _now())
            clean = status.strip_none(new)
            if clean == st.written:
                return clean
            await self.kube.patch(
                kube.FRAUDDEMO,
                st.namespace,
                st.name,
                {"status": status.merge_patch_for(new, st.server_status)},
                "status",
            )
            st.written = clean
            return clean

    # --- periodic work (kopf timers, one per FraudDemo): the detector's figures, a full resync ---------

    async def poll_demo(self, namespace: str, name: str) -> status.DetectorStats | None:
        """Read this FraudDemo's detector figures into its status, once its detector is ready (forget
        them when it is not)."""
        st = self.demos.get((namespace, name))
        if st is None or st.deleting:
            return None
        det = st.workloads.get(("Deployment", builders.detector_name(st.name)))
        if st.reconciled_spec is not None and det is not None and det.ready > 0:
            return await self.poll_detector(st)
        if st.detector is not None:
            st.detector = None
            self.request_status(st.key)
        return None

    async def poll_detector(self, st: DemoState) -> status.DetectorStats | None:
        url = self.settings.detector_url.format(name=st.name, namespace=st.namespace).rstrip("/") + "/api/status"
        st.polled_at = time.monotonic()
        try:
            async with self._http.get(url) as resp:
                stats = status.parse_detector(await resp.json()) if resp.status == 200 else None
        except (TimeoutError, aiohttp.ClientError, ValueError, OSError) as e:
            log.debug("detector of %s/%s not reachable: %s", st.namespace, st.name, e)
            stats = None
        if stats != st.detector:
            st.detector = stats
            self.request_status(st.key)
        return stats

    async def resync(self, namespace: str, name: str) -> Result | None:
        """Reconcile this FraudDemo in full (a safety net: events drive the normal work). Skipped while it
        is being deleted, before its first reconcile, or while its spec makes no sense; failures are logged
        and left to the next resync (or the event handlers' retries)."""
        st = self.demos.get((namespace, name))
        if st is None or st.deleting or st.reconciled_generation is None or st.spec() is None:
            return None
        try:
            result = await self.reconcile(st.namespace, st.name, st.body(), fresh=False)
        except (kube.ApiError, models.InvalidSpec) as e:
            log.warning("resync of %s/%s failed: %s", st.namespace, st.name, e)
            return None
        if result.changed:
            log.info("resync of %s/%s: %s", st.namespace, st.name, result.summary())
        return result
