"""Live events: server-sent events of every store's commits, and the stores' status every second."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse

from ..deps import DemoDep
from ..live import event_stream
from ..schemas import ERRORS, STREAM_OF

router = APIRouter(prefix="/api", tags=["api"], responses=ERRORS)


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "the event stream"}},
)
async def events(request: Request, demo: DemoDep, types: str = "purchase,return,verdict,alert,status"):
    """Server-sent events: `purchase`, `return`, `verdict`, `alert` as they are committed at any
    store, and `status` (stores and links) every second; nothing is read once the client leaves."""
    wanted = {t for t in types.split(",") if t}
    unknown = wanted - set(STREAM_OF) - {"status"}
    if unknown:
        raise HTTPException(422, f"unknown event types: {', '.join(sorted(unknown))}")
    return StreamingResponse(
        event_stream(request, demo, wanted),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
