"""Running the operator: `frauddemo operator` (blocking) or OperatorThread (tests, benchmark)."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading

import kopf

from . import handlers
from .runtime import Runtime
from .settings import Settings

log = logging.getLogger(__name__)


async def operate(
    settings: Settings | None = None, *, stop_flag=None, ready_flag=None, runtime: Runtime | None = None
) -> None:
    """The operator in the running event loop until `stop_flag` is set (or a signal arrives)."""
    settings = settings or Settings.from_env()
    runtime = runtime or Runtime(settings)
    await kopf.operator(
        registry=handlers.build_registry(settings),
        memo=kopf.Memo(runtime=runtime),
        identity=runtime.identity,
        standalone=settings.standalone,
        peering_name=settings.peering,
        priority=settings.priority,
        clusterwide=settings.clusterwide,
        namespaces=list(settings.namespaces),
        liveness_endpoint=settings.liveness,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )


class QuietEventHandlers(logging.Filter):
    """Drop kopf's "Handler 'child-…' succeeded" line, logged for every watch event of every child, and
    its "Timer '…' succeeded" line, logged at every tick of every FraudDemo's timers."""

    QUIET = ("'child-", "'demo_event'", "'peering'")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        msg = record.getMessage()
        if not msg.endswith("' succeeded."):
            return True
        if msg.startswith("Timer '"):
            return False
        return not (msg.startswith("Handler '") and any(q in msg for q in self.QUIET))


def run(settings: Settings | None = None) -> int:
    """`frauddemo operator`: run until SIGINT/SIGTERM. Settings come from FRAUDDEMO_OPERATOR_*."""
    settings = settings or Settings.from_env()
    logging.basicConfig(
        level=settings.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.log_level != "DEBUG":
        logging.getLogger("kopf.objects").addFilter(QuietEventHandlers())
    where = "cluster-wide" if settings.clusterwide else "namespaces " + ",".join(settings.namespaces)
    mode = "standalone" if settings.standalone else f"peering {settings.peering!r} priority {settings.priority}"
    log.info("FraudDemo operator starting: %s, %s, liveness %s", where, mode, settings.liveness or "off")
    asyncio.run(operate(settings))
    return 0


class OperatorThread:
    """The operator in its own thread and event loop; a context manager that stops and joins it."""

    def __init__(self, settings: Settings, ready_timeout: float = 30.0):
        self.settings = settings
        self.runtime: Runtime | None = None
        self.ready_timeout = ready_timeout
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def __enter__(self) -> OperatorThread:
        self._thread = threading.Thread(target=self._main, name="frauddemo-operator", daemon=True)
        self._thread.start()
        if not self._ready.wait(self.ready_timeout):
            self.close()
            raise RuntimeError(f"the operator was not ready within {self.ready_timeout}s: {self._error!r}")
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _main(self) -> None:
        async def main():
            self.runtime = Runtime(self.settings)
            await operate(self.settings, stop_flag=self._stop, ready_flag=self._ready, runtime=self.runtime)

        try:
            asyncio.run(main())
        except BaseException as e:  # noqa: BLE001 - reported to whoever waits on it
            self._error = e
            log.exception("the operator thread failed")

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return getattr(self.runtime, "_loop", None)

    def close(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError("the operator thread did not stop")
