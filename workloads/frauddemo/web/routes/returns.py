"""Return attempts: the listing with the detector's verdicts, one attempt, and a return at a store's
web till (the store decides locally and records the attempt)."""

from __future__ import annotations

import random

from fastapi import APIRouter, Header, HTTPException, Path, Query

from ...photos.decode import PhotoRejected
from ...retail import RETURNS, InvalidInput, check_text, read_attempts, read_stories
from ...till import Till, capture
from ..deps import DemoDep, PhotoViewerDep
from ..errors import guard, photo_refused
from ..idempotency import idempotent
from ..schemas import ERRORS, PAGE_MAX, POST_ERRORS, PRINTABLE_ID, ReturnIn, check_id, photo_bytes
from ..views import photo_urls, return_item

router = APIRouter(prefix="/api", tags=["api"], responses=ERRORS)


@router.get("/returns")
def returns(
    demo: DemoDep,
    store_: str | None = Query(None, alias="store"),
    decision: str | None = None,
    receipt: str | None = None,
    limit: int = Query(50, ge=1, le=PAGE_MAX),
    before: int | None = Query(None, ge=0),
):
    items, nxt = demo.recent(
        RETURNS,
        limit,
        before,
        store_,
        lambda e: (decision is None or e.get("decision") == decision) and (receipt is None or e.get("rcpt") == receipt),
    )
    verdicts = demo.verdicts([(e["store"], e["att"]) for e in items])
    return {"items": [{**return_item(e), "verdict": verdicts.get(e["att"])} for e in items], "next_before": nxt}


@router.get("/returns/{attempt}")
def return_get(demo: DemoDep, viewer: PhotoViewerDep, attempt: str = Path(pattern=PRINTABLE_ID)):
    check_id("attempt", attempt)
    found = read_attempts(demo.reachable(), [attempt])
    if attempt not in found:
        raise HTTPException(404, f"no store knows return attempt {attempt[:80]!r}")
    a = found[attempt]
    return {
        **a.to_dict(),
        "verdict": demo.verdicts([(a.store, a.id)]).get(a.id),
        "photo_urls": photo_urls(a.photo) if viewer else None,
    }


@router.post("/returns", status_code=201, responses=POST_ERRORS)
def return_create(body: ReturnIn, demo: DemoDep, idempotency_key: str | None = Header(None)):
    """A return at a store's web till: the store decides locally and records the attempt."""
    s = demo.store(body.store)

    def make():
        try:
            check_id("receipt", body.receipt)
            photo = photo_bytes(body.photo)
            customer = check_text("customer", body.customer) if body.customer is not None else ""
            if photo is None and body.capture:
                known = read_stories({body.store: s}, [body.receipt])[body.receipt].receipt
                photo = capture(known.customer if known else customer or "unknown", random.Random())
            till = Till(s, demo.keys, f"{body.store}-web-1", demo.photo_store(body.store))
            return 201, till.return_(body.receipt, photo, customer).to_dict()
        except InvalidInput as e:
            raise HTTPException(422, str(e)) from None
        except PhotoRejected as e:
            raise photo_refused(e) from None

    return guard(lambda: idempotent(s, idempotency_key, body.model_dump(), make), body.store)
