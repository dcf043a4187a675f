"""Alerts: the listing (each alert once, in its newest state) and one alert beside its receipt's story."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query

from ...retail import ALERTS, read_stories
from ..deps import DemoDep, PhotoViewerDep
from ..schemas import ERRORS, PAGE_MAX

router = APIRouter(prefix="/api", tags=["api"], responses=ERRORS)


@router.get("/alerts")
def alerts(
    demo: DemoDep,
    store_: str | None = Query(None, alias="store"),
    decision: str | None = None,
    reason: str | None = None,
    receipt: str | None = None,
    limit: int = Query(50, ge=1, le=PAGE_MAX),
    before: int | None = Query(None, ge=0),
):
    seen = set()

    def keep(e):
        if e["alert"] in seen:  # an escalation re-announces an alert: list it once, newest state
            return False
        seen.add(e["alert"])
        return receipt is None or e.get("rcpt") == receipt

    items, nxt = demo.recent(ALERTS, limit, before, store_, keep, bigger_scan=True)
    full = demo.alerts([(e["store"], e["alert"]) for e in items])
    out = [full[e["alert"]] for e in items if e["alert"] in full]
    out = [
        a for a in out if (decision is None or a["decision"] == decision) and (reason is None or reason in a["codes"])
    ]
    return {"items": out, "next_before": nxt}


@router.get("/alerts/{alert}")
def alert_get(alert: str, demo: DemoDep, viewer: PhotoViewerDep):
    """One alert with every attempt of its receipt side by side, and the purchase."""
    stores = demo.reachable()
    found = demo.alerts([(n, alert) for n in stores])
    if alert not in found:
        raise HTTPException(404, f"no store knows alert {alert[:80]!r}")
    a = found[alert]
    story = read_stories(stores, [a["receipt"]])[a["receipt"]]
    return {**a, "story": demo.story(a["receipt"], story, photos=viewer)}
