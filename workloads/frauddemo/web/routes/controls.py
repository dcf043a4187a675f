"""The demo's controls: partition or heal the link, the hacked POS on or off, Scenario 1, the reset."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from ... import controls
from ...scenario import ScenarioError, ScenarioUnavailable, run_fraud
from ..deps import DemoDep, WebStateDep
from ..errors import Unavailable, guard
from ..schemas import ERRORS, POST_ERRORS, HackedIn, LinkIn, ScenarioIn

router = APIRouter(prefix="/api", tags=["api"], responses=ERRORS)


@router.post("/link", responses=POST_ERRORS)
def link(body: LinkIn, demo: DemoDep):
    """Partition or heal the replication between every pair of stores (the syncers obey)."""
    for target in demo.names:
        s = demo.store(target)
        for source in demo.names:
            if source != target:
                controls.set_partition(s, source, body.action == "partition")
    return {"action": body.action, "stores": demo.names}


@router.post("/hacked-pos", responses=POST_ERRORS)
def hacked_pos(body: HackedIn, demo: DemoDep):
    """Start or stop every hacked POS (they check this flag before each attack)."""
    for name in demo.names:
        controls.set_hacked(demo.store(name), body.running)
    return {"running": body.running}


@router.get("/hacked-pos")
def hacked_pos_state(demo: DemoDep):
    """Whether the hacked POS is running: stopped when every reachable store says so."""
    paused = {n: controls.hacked_paused(s) for n, s in demo.reachable().items()}
    return {"running": not all(paused.values()), "stores": {n: not p for n, p in paused.items()}}


@router.post("/scenarios/fraud", responses=POST_ERRORS)
def scenario_fraud(demo: DemoDep, body: ScenarioIn | None = None):
    """Scenario 1: a purchase at A, then a legitimate return at A and a hacked one at B inside the
    replication window; returns the detector's alert and both attempts side by side."""
    a = (body and body.store_a) or demo.names[0]
    b = (body and body.store_b) or (demo.names[1] if len(demo.names) > 1 else a)
    stores = {n: demo.store(n) for n in {a, b}}
    try:
        return guard(lambda: run_fraud(stores, demo.keys, a, b, timeout=demo.scenario_timeout))
    except ScenarioUnavailable as e:
        raise Unavailable(str(e)) from None
    except ScenarioError as e:
        raise HTTPException(422, str(e)) from None


@router.post("/reset", responses=POST_ERRORS)
def reset(web: WebStateDep):
    """Delete the demo's data (receipts, returns, verdicts, alerts, photos, counters, event streams)
    at every store. Deletes do not replicate, so the link is partitioned first (and confirmed by
    every syncer), every store is wiped in one atomic call that also reads its op-log position,
    every peer's checkpoint is moved to that position (what was logged before the reset is never
    replayed), and the link goes back to the state it was in. 503 when a store is down or a syncer
    does not confirm the partition; nothing is deleted then."""
    if not web.reset_lock.acquire(blocking=False):
        raise HTTPException(409, "a reset is already in progress")
    try:
        demo = web.demo
        try:
            return guard(lambda: controls.reset_stores({n: demo.store(n) for n in demo.names}))
        except controls.ResetRefused as e:
            raise HTTPException(503, str(e), headers={"Retry-After": "5"}) from None
    finally:
        web.reset_lock.release()
