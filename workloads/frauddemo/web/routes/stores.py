"""The stores and the links between them, the catalogue, and the dashboard's summary."""

from __future__ import annotations

from fastapi import APIRouter

from ...retail import CATALOGUE
from ..deps import DemoDep, SummaryDep
from ..schemas import ERRORS

router = APIRouter(prefix="/api", tags=["api"], responses=ERRORS)


@router.get("/stores")
def stores_list(demo: DemoDep, tally: SummaryDep):
    """Every store: up, op-log position, event counts (alerts: distinct alerts raised there);
    and every replication link."""
    st = demo.stores.status()
    counted = tally.read(demo)["stores"]  # alerts are counted once each (an escalation is a second event)
    for name, s in st["stores"].items():
        if s["up"]:
            if counted.get(name, {}).get("up"):
                s.update({k: counted[name][k] for k in ("purchases", "returns", "alerts")})
            else:
                s["up"] = False
    return st


@router.get("/status")
def api_status(demo: DemoDep, tally: SummaryDep):
    """Stores and replication links, as the syncers last reported them; alert counts."""
    st = demo.stores.status()
    st["fraud"] = {"alerts": tally.read(demo)["alerts"]}
    return st


@router.get("/catalogue")
def catalogue():
    """What a till can sell: SKU, name and price in cents."""
    return {"items": [{"sku": sku, "name": name, "price_cents": cents} for sku, (name, cents) in CATALOGUE.items()]}


@router.get("/summary")
def summary(demo: DemoDep, tally: SummaryDep):
    """The dashboard's summary strip, counted from every store's event streams (read
    incrementally): purchases, returns, frauds held (review) or blocked, refund value by outcome,
    value protected (refunds held or blocked) and detection latency p50/p99 (verdict commit minus
    attempt commit, the last 1000 per store)."""
    return tally.read(demo)
