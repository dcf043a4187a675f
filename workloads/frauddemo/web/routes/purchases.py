"""Purchases: the listing, a receipt's whole story, and a purchase at a store's web till."""

from __future__ import annotations

import random

from fastapi import APIRouter, Header, HTTPException, Path, Query

from ...photos.decode import TOO_LARGE, PhotoRejected
from ...retail import PURCHASES, InvalidInput, check_text, read_stories
from ...till import Till, capture
from ..deps import DemoDep, PhotoViewerDep
from ..errors import guard, photo_refused
from ..idempotency import idempotent
from ..schemas import ERRORS, PAGE_MAX, POST_ERRORS, PRINTABLE_ID, PurchaseIn, check_id, photo_bytes
from ..views import purchase_item

router = APIRouter(prefix="/api", tags=["api"], responses=ERRORS)


@router.get("/purchases")
def purchases(
    demo: DemoDep,
    store_: str | None = Query(None, alias="store"),
    customer: str | None = None,
    limit: int = Query(50, ge=1, le=PAGE_MAX),
    before: int | None = Query(None, ge=0),
):
    items, nxt = demo.recent(
        PURCHASES, limit, before, store_, lambda e: customer is None or e.get("customer") == customer
    )
    return {"items": [purchase_item(e) for e in items], "next_before": nxt}


@router.get("/purchases/{receipt}")
def purchase(demo: DemoDep, viewer: PhotoViewerDep, receipt: str = Path(pattern=PRINTABLE_ID)):
    """A receipt's whole story across the stores: the purchase, every return attempt with the
    detector's verdict, and where each record has replicated to. Photo links only for a viewer
    who may open them."""
    check_id("receipt", receipt)
    story = read_stories(demo.reachable(), [receipt])[receipt]
    if story.receipt is None and not story.attempts:
        raise HTTPException(404, f"no store knows receipt {receipt[:80]!r}")
    return demo.story(receipt, story, photos=viewer)


@router.post("/purchases", status_code=201, responses=POST_ERRORS)
def purchase_create(body: PurchaseIn, demo: DemoDep, idempotency_key: str | None = Header(None)):
    s = demo.store(body.store)

    def make():
        try:
            customer = check_text("customer", body.customer)
            photo = photo_bytes(body.photo)
            if photo is None and body.capture:
                photo = capture(customer, random.Random())
            till = Till(s, demo.keys, f"{body.store}-web-1", demo.photo_store(body.store))
            return 201, till.purchase(customer, body.items, photo)
        except InvalidInput as e:
            raise HTTPException(422, str(e)) from None
        except PhotoRejected as e:  # not an image, truncated, empty, a pixel bomb: nothing written
            raise photo_refused(e, too_large=(TOO_LARGE,)) from None

    return guard(lambda: idempotent(s, idempotency_key, body.model_dump(), make), body.store)
