"""The detector's HTTP service: health, readiness, metrics and the store/link status API.

Readiness is judged from Redis alone (every store answers, every link's syncer has reported
itself up recently), so it means the same thing locally and in Kubernetes.
"""
from __future__ import annotations

import time

import redis
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse

from . import metrics
from .config import StoreRef
from .store import Store

LINK_FRESH_MS = 3000


class StoreSet:
    """Connections to every store, opened lazily and retried, so the service starts before them."""

    def __init__(self, refs: list[StoreRef]):
        self.refs = refs
        self._stores: dict[str, Store] = {}

    def get(self, name: str) -> Store:
        s = self._stores.get(name)
        if s is None:
            ref = next(r for r in self.refs if r.name == name)
            s = self._stores[name] = ref.connect(socket_timeout=2, socket_connect_timeout=1)
        return s

    def drop(self, name: str) -> None:
        s = self._stores.pop(name, None)
        if s is not None:
            s.close()

    def status(self) -> dict:
        """Per store: up and op-log seq; per directed link: state, lag, backlog, freshness."""
        now_ms = int(time.time() * 1000)
        stores, links = {}, []
        for ref in self.refs:
            try:
                s = self.get(ref.name)
                stores[ref.name] = {"up": True, "seq": s.seq()}
                for src in self.refs:
                    if src.name == ref.name:
                        continue
                    st = s.link_status(src.name)
                    age = now_ms - int(st.get("updated_ms", 0))
                    links.append({
                        "source": src.name, "target": ref.name,
                        "state": st.get("state", "unknown") if age <= LINK_FRESH_MS else "stale",
                        "lag_ms": int(st.get("lag_us", 0)) / 1000,
                        "backlog": int(st.get("backlog", 0)),
                        "resyncs": int(st.get("resyncs", 0)),
                        "updated_ms_ago": age,
                    })
            except (redis.RedisError, OSError) as e:
                self.drop(ref.name)
                stores[ref.name] = {"up": False, "error": str(e)[:200]}
        return {"stores": stores, "links": links}

    def close(self) -> None:
        for name in list(self._stores):
            self.drop(name)


def create_app(refs: list[StoreRef]) -> FastAPI:
    stores = StoreSet(refs)
    app = FastAPI(title="FraudDemo detector", version="0.1.0",
                  description="Cross-store return-fraud detection on active-active Redis.")
    app.state.stores = stores

    @app.get("/healthz", tags=["health"])
    def healthz():
        """The process is alive (no dependency checked)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz():
        """200 once every store answers and every link replicates; 503 with the reasons otherwise."""
        st = stores.status()
        problems = [f"store {n} down" for n, s in st["stores"].items() if not s["up"]]
        problems += [f"link {l['source']}->{l['target']} {l['state']}" for l in st["links"] if l["state"] != "up"]
        if problems:
            return JSONResponse({"ready": False, "problems": problems}, status_code=503,
                                headers={"Retry-After": "1"})
        return {"ready": True}

    @app.get("/metrics", tags=["health"])
    def prometheus_metrics():
        body, ctype = metrics.render()
        return Response(body, media_type=ctype)

    @app.get("/api/status", tags=["api"])
    def api_status():
        """Stores and replication links, as the syncers last reported them."""
        return stores.status()

    @app.on_event("shutdown")
    def _close():
        stores.close()

    return app
