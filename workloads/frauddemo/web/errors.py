"""Errors the routes raise beyond HTTPException: a store that is down or refuses writes (503)."""

from __future__ import annotations

import redis
from fastapi import HTTPException

from ..photos.decode import TOO_LARGE, TOO_MANY_PIXELS, PhotoRejected
from ..store import StoreUnavailable, unavailable_reason


class Unavailable(Exception):
    """A store needed by the request is down: 503 with Retry-After (the app's handler)."""


def guard(fn, store: str | None = None):
    """Redis errors while serving a request mean a store went away, or refuses writes for now (it
    cannot persist: disk full; maxmemory reached): 503 with Retry-After and the reason, nothing
    half-written (every domain write is one atomic call)."""
    try:
        return fn()
    except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
        raise Unavailable(f"a store is unreachable: {e}") from None
    except StoreUnavailable as e:
        raise Unavailable(str(e)) from None
    except redis.ResponseError as e:
        why = unavailable_reason(store or "?", e)
        if why is None:
            raise
        raise Unavailable(why) from None


def photo_refused(e: PhotoRejected, too_large: tuple[str, ...] = (TOO_LARGE, TOO_MANY_PIXELS)) -> HTTPException:
    """A photo the store will not keep: 413 when its kind is one of `too_large`, else 422 (not an
    image, empty, truncated, ...), with the reason; nothing is written."""
    return HTTPException(413 if e.kind in too_large else 422, f"photo rejected: {e}")
