"""The detection service's app: the detector engine, the REST API and live events (routes/), health
and metrics, the dashboard's page, and what every answer carries (security headers, body limit, the
error shapes). There is no /docs or /redoc: Swagger UI and ReDoc load from a CDN that the page's own
Content-Security-Policy blocks (and the service fetches nothing foreign); the API is described by
/openapi.json.

Readiness means the process can serve (its HTTP server and, when on, its detection engine run): a
store down or a link cut is what the demo shows, so it is reported (in /readyz's `degraded`,
/api/status, the page and the `frauddemo_store_*` metrics), never a reason to leave the Service.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from .. import access, metrics
from ..config import StoreRef
from ..detection import DetectionConfig
from ..detector import Detector
from ..photos.access import PhotoAccess
from ..photos.verify import VerifyConfig
from ..retail import TerminalKeys
from ..storeset import StoreSet
from .deps import WebState
from .errors import Unavailable
from .routes import ROUTERS
from .schemas import MAX_BODY
from .views import Demo

STATIC = Path(__file__).parent.parent / "static"
STATUS_INTERVAL_S = 2.0
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
    "style-src 'self'; script-src 'self'; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "camera=(self), microphone=(), geolocation=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class Readiness(BaseModel):
    ready: bool
    problems: list[str] = []  # why the process cannot serve (503)
    degraded: list[str] = []  # stores down or refusing writes, links not up: shown, not a reason for 503


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, declared or streamed."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await _too_large(send, self.limit)
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunks.append(msg.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await _too_large(send, self.limit)
            more = msg.get("more_body", False)
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


def allowed_methods(app: FastAPI, path: str) -> str | None:
    """The methods the OpenAPI document lists for `path` (None: a path it does not describe)."""
    for template, ops in app.openapi()["paths"].items():
        if compile_path(template)[0].match(path):
            return ", ".join(sorted(m.upper() for m in ops))
    return None


def include_guarded(app: FastAPI, router: APIRouter, guards: list) -> None:
    """Include `router`, its POSTs behind `guards` (rate limit, then the API token when one is set),
    which run before the route's own dependencies; reads stay open. The guards are the app's (its
    token, its rate limit), so they are added here rather than on the module-level router."""
    for route in router.routes:
        one = APIRouter()
        one.routes.append(route)
        posts = isinstance(route, APIRoute) and "POST" in route.methods
        app.include_router(one, dependencies=guards if posts else None)


async def _too_large(send, limit: int) -> None:
    body = JSONResponse({"detail": f"request body over {limit} bytes"}).body
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app(
    refs: list[StoreRef],
    keys: TerminalKeys = TerminalKeys(None),
    engine: bool = True,
    detection: DetectionConfig | None = None,
    verify: VerifyConfig | None = None,
    detector_name: str | None = None,
    workers: int | None = None,
    api_token: access.TokenFile | str | None = None,
    rate_limit: access.RateLimit | None = None,
) -> FastAPI:
    """`api_token`: every POST needs it as a bearer token (None: no auth, the local default; a
    TokenFile follows its file);
    `rate_limit`: POSTs per client address (default from FRAUDDEMO_API_POST_RATE/_BURST)."""
    stores = StoreSet(refs)
    demo = Demo(refs, stores, keys)
    detector = None
    if engine:
        detector = Detector(
            refs,
            detection or DetectionConfig.from_env(),
            keys,
            verify or VerifyConfig.from_env(),
            name=detector_name,
            workers=workers,
        )

    engine_thread: list[threading.Thread] = []
    watching = threading.Event()

    def watch_stores():
        """Keep the stores' gauges (memory, writable, up) fresh for /metrics, with or without a
        dashboard open."""
        while not watching.wait(STATUS_INTERVAL_S):
            try:
                stores.status()
            except Exception:  # never let the watcher die; the next round retries
                pass

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        """The detection engine runs while the app serves; the stores close after."""
        if detector is not None:
            t = threading.Thread(target=detector.run, name="detector", daemon=True)
            t.start()
            engine_thread.append(t)
        threading.Thread(target=watch_stores, name="store-watch", daemon=True).start()
        try:
            yield
        finally:
            watching.set()
            if detector is not None:
                detector.stop.set()
            stores.close()

    app = FastAPI(
        title="FraudDemo detector",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        description="Cross-store return-fraud detection on active-active Redis.",
    )
    app.state.stores, app.state.demo = stores, demo
    app.state.web = WebState(demo, PhotoAccess(api_token))
    app.state.detector = detector

    @app.middleware("http")
    async def security_headers(request, call_next):
        response = await call_next(request)
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    app.add_middleware(BodyLimit, limit=MAX_BODY)

    @app.exception_handler(Unavailable)
    async def unavailable(request, exc: Unavailable):
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "2"})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc: StarletteHTTPException):
        allow = exc.status_code == 405 and allowed_methods(app, request.url.path)
        if allow:  # Starlette names only the first matching route's methods, not every one of the path's
            exc.headers = {**(exc.headers or {}), "Allow": allow}
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.get("/healthz", tags=["health"])
    def healthz():
        """The process is alive (no dependency checked)."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "not ready, with why"}},
    )
    def readyz():
        """200 while this process can serve: its detection engine (when on) runs. Stores down or
        refusing writes and links not up are listed in `degraded` (also in /api/status), not a
        reason for 503: the dashboard must stay reachable during the outage it shows."""
        problems = []
        if detector is not None and engine_thread and not engine_thread[0].is_alive():
            problems.append("the detection engine stopped")
        st = stores.status()
        degraded = [f"store {n} down" for n, s in st["stores"].items() if not s["up"]]
        degraded += [s["problem"] for s in st["stores"].values() if s.get("problem")]
        degraded += [f"link {l['source']}->{l['target']} {l['state']}" for l in st["links"] if l["state"] != "up"]
        if problems:
            return JSONResponse(
                {"ready": False, "problems": problems, "degraded": degraded},
                status_code=503,
                headers={"Retry-After": "1"},
            )
        return {"ready": True, "degraded": degraded}

    @app.get(
        "/metrics",
        tags=["health"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
    )
    def prometheus_metrics():
        body, ctype = metrics.render()
        return Response(body, media_type=ctype)

    guards = [Depends(g) for g in access.guards(api_token, rate_limit or access.RateLimit.from_env())]
    for router in ROUTERS:
        include_guarded(app, router, guards)

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
