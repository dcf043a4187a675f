"""Photos, private: only for an authorised viewer (photos/access.py), each kept a while
(FRAUDDEMO_PHOTO_TTL), from the first store that holds it."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response

from ..deps import DemoDep, photo_viewer
from ..schemas import ERRORS, JPEG, SHA_HEX, Problem, error_responses
from ..views import photo_gone

router = APIRouter(prefix="/api", tags=["api"], responses=ERRORS)
PHOTO_ROUTE = {
    "response_class": Response,
    "dependencies": [Depends(photo_viewer)],
    "responses": {
        **JPEG,
        **error_responses(401),
        403: {
            "model": Problem,
            "description": "a wrong token, or photos asked for without a token over a non-loopback "
            "address (photos are private)",
        },
    },
}
CACHE = {"Cache-Control": "private, max-age=86400"}


def by_sha(get, sha: str):
    try:
        return get(sha)
    except ValueError:
        raise HTTPException(422, "photo ids are lower-case SHA-256 hex digests") from None


@router.get("/photos/{sha}", **PHOTO_ROUTE)
def photo(demo: DemoDep, sha: str = Path(pattern=SHA_HEX)):
    data = demo.first(lambda name: by_sha(demo.photo_store(name).get, sha))
    if data is None:
        raise HTTPException(404, photo_gone())
    return Response(data, media_type="image/jpeg", headers=CACHE)


@router.get("/photos/{sha}/thumbnail", **PHOTO_ROUTE)
def thumbnail(demo: DemoDep, sha: str = Path(pattern=SHA_HEX), side: int = Query(160, ge=16, le=1024)):
    data = demo.first(lambda name: by_sha(lambda s: demo.photo_store(name).thumbnail(s, side), sha))
    if data is None:
        raise HTTPException(404, photo_gone())
    return Response(data, media_type="image/jpeg", headers=CACHE)
