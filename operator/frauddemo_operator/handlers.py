"""The kopf handlers: thin. Each one hands the event to the Runtime (in kopf's memo) and turns the
outcome into kopf's terms: retries with backoff for API errors, an Event and no retry for a spec
that makes no sense. `build_registry(settings)` registers them for one operator.
"""

from __future__ import annotations

import logging

import kopf

from . import builders, crd, kube, models
from .runtime import Runtime
from .settings import Settings

FD = (crd.GROUP, crd.VERSION, crd.PLURAL)
MANAGED = {builders.L_MANAGED_BY: builders.MANAGER}
# kopf puts it on every FraudDemo (its timers require one) and removes it once their timers have stopped.
FINALIZER = "frauddemo.io/finalizer"


def _ref(namespace: str, name: str, uid: str) -> dict:
    return {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"namespace": namespace, "name": name, "uid": uid},
    }


class DemoDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf's diff-base, kept only for FraudDemos: the children have no change-detecting handlers
    (only event handlers), so computing and storing their essence on every event is wasted work."""

    def build(self, *, body, extra_fields=None):
        if body.get("kind") != crd.KIND:
            return {}
        return super().build(body=body, extra_fields=extra_fields)

    def fetch(self, *, body):
        if body.get("kind") != crd.KIND:
            return None
        return super().fetch(body=body)


async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_) -> None:
    rt: Runtime = memo.runtime
    s = rt.settings
    settings.scanning.disabled = not s.scanning
    settings.posting.level = logging.WARNING
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="frauddemo.io")
    settings.persistence.diffbase_storage = DemoDiffBase(prefix="frauddemo.io", key="last-handled-configuration")
    settings.persistence.finalizer = FINALIZER
    settings.networking.request_timeout = max(s.request_timeout, 30)
    settings.networking.error_backoffs = [0.2, 0.5, 1, 2, 5, 10]
    settings.watching.reconnect_backoff = 0.2
    for kind in kube.CHILD_KINDS.values():
        # Watch only the operator's own children (server-side filtering).
        settings.watching.label_selectors[kind.group, kind.version, kind.plural] = builders.MANAGED_SELECTOR
    await rt.start()


async def cleanup(memo: kopf.Memo, **_) -> None:
    await memo.runtime.stop()


async def login(memo: kopf.Memo, **_) -> kopf.ConnectionInfo:
    return await kube.connection_info(await memo.runtime.configuration())


def probe_demos(memo: kopf.Memo, **_) -> int:
    return len(memo.runtime.demos)


async def demo_event(type, body, memo: kopf.Memo, **_) -> None:
    memo.runtime.on_demo_event(type, dict(body))


def _warn_deprecated(rt: Runtime, body, namespace: str, name: str, logger) -> None:
    st = rt.demos.get((namespace, name))
    for _field, message in st.deprecated if st is not None else ():
        kopf.warn(body, reason="DeprecatedField", message=message)
        logger.warning(message)


async def reconcile(body, name, namespace, reason, retry, memo: kopf.Memo, logger, **_) -> None:
    rt: Runtime = memo.runtime
    try:
        result = await rt.reconcile(namespace, name, dict(body), fresh=reason == "create")
    except models.InvalidSpec as e:
        _warn_deprecated(rt, body, namespace, name, logger)
        kopf.warn(body, reason=e.reason, message=e.message)
        logger.warning(f"Not deployed: {e.message}")
        return  # recorded in the status; retried only when the spec changes
    except kube.ApiError as e:
        delay = rt.backoff(retry)
        raise kopf.TemporaryError(f"{e} (retry in {delay}s)", delay=delay) from None
    _warn_deprecated(rt, body, namespace, name, logger)
    for _, (why, message) in result.refused:
        kopf.warn(body, reason=why, message=message)
        logger.warning(message)
    if result.changed:
        logger.info(f"Reconciled: {result.summary()}")
        if reason == "create":
            kopf.event(body, type="Normal", reason="Provisioned", message=f"Created {len(result.created)} children")
        else:
            kopf.event(body, type="Normal", reason="Reconciled", message=result.summary())


async def child_event(type, body, memo: kopf.Memo, logger, **_) -> None:
    rt: Runtime = memo.runtime
    try:
        result = await rt.on_child_event(type, dict(body))
    except kube.ApiError as e:
        logger.warning(
            f"Could not repair {body.get('kind')} {body.get('metadata', {}).get('name')}: {e}; retrying with backoff"
        )
        return
    if result is not None and result.changed:
        meta = body.get("metadata", {})
        st = rt.demos.get((meta.get("namespace"), (meta.get("labels") or {}).get(builders.L_INSTANCE)))
        message = f"{body.get('kind')} {meta.get('name')}: {result.summary()}"
        logger.info(f"Repaired drift: {message}")
        if st is not None:
            kopf.event(_ref(st.namespace, st.name, st.uid), type="Normal", reason="Repaired", message=message)


async def detector_figures(name, namespace, memo: kopf.Memo, **_) -> None:
    await memo.runtime.poll_demo(namespace, name)


async def resync(name, namespace, memo: kopf.Memo, **_) -> None:
    await memo.runtime.resync(namespace, name)


def build_registry(settings: Settings) -> kopf.OperatorRegistry:
    """Every handler, registered for one operator. The periodic work is two kopf timers per FraudDemo:
    its detector's figures every `stats_seconds` (on a fixed grid: `sharp`) and a full resync every
    `resync_seconds` (counted from the end of the previous one), each first `interval` seconds after the
    FraudDemo is seen (it was just reconciled). kopf stops them while a peer holds the peering and when
    the FraudDemo is deleted. kopf requires a finalizer on every object with a timer (FINALIZER, removed
    once the timers have stopped): the chart's pre-delete hook (`frauddemo delete-demos`) therefore
    deletes the FraudDemos while the operator and its RBAC still exist, or `helm uninstall` would leave
    the chart's sample stuck in Terminating."""
    reg = kopf.OperatorRegistry()
    kopf.on.startup(registry=reg)(configure)
    kopf.on.cleanup(registry=reg)(cleanup)
    kopf.on.login(registry=reg)(login)
    kopf.on.probe(id="frauddemos", registry=reg)(probe_demos)
    kopf.on.event(*FD, registry=reg)(demo_event)
    kopf.on.resume(*FD, registry=reg)(reconcile)
    kopf.on.create(*FD, registry=reg)(reconcile)
    kopf.on.update(*FD, field="spec", registry=reg)(reconcile)
    kopf.timer(
        *FD,
        id="detector-figures",
        interval=settings.stats_seconds,
        initial_delay=settings.stats_seconds,
        sharp=True,
        registry=reg,
    )(detector_figures)
    kopf.timer(
        *FD,
        id="resync",
        interval=settings.resync_seconds,
        initial_delay=settings.resync_seconds,
        registry=reg,
    )(resync)
    for kind in kube.CHILD_KINDS.values():
        kopf.on.event(kind.group, kind.version, kind.plural, labels=MANAGED, registry=reg, id=f"child-{kind.plural}")(
            child_event
        )
    return reg
