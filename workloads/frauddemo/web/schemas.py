"""Request bodies and error answers of the API, and the limits they enforce."""

from __future__ import annotations

import base64
import binascii
from typing import Literal

from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field

from ..retail import ALERTS, PURCHASES, RETURNS, VERDICTS

MAX_BODY = 3 * 1024 * 1024  # a 1 MB photo in base64, with room for the rest
PAGE_MAX = 200
SHA_HEX = "^[0-9a-f]{64}$"  # a photo's id: its SHA-256, lower-case hex
PRINTABLE_ID = "^[^\\x00-\\x1f\\x7f]+$"  # receipt and attempt ids: no control characters
STREAM_OF = {"purchase": PURCHASES, "return": RETURNS, "verdict": VERDICTS, "alert": ALERTS}


class Problem(BaseModel):
    """Every error: a reason, or (bad fields) one entry per field with its location."""

    detail: str | list[dict]


def error_responses(*codes: int) -> dict:
    """OpenAPI `responses` for these error statuses, each with its Problem body and what it means."""
    why = {
        400: "the body cannot be parsed at all (not UTF-8 JSON)",
        401: "the API token is missing or wrong (only when one is configured)",
        404: "no such store, receipt, attempt, alert or photo",
        409: "a conflicting request is in progress",
        413: "the body or the photo is too large",
        422: "the request is malformed, with the reason",
        429: "too many POSTs from this client (Retry-After)",
        503: "a store is unreachable (Retry-After)",
    }
    return {c: {"model": Problem, "description": why[c]} for c in codes}


ERRORS = error_responses(404, 422, 503)
POST_ERRORS = error_responses(400, 401, 409, 413, 429)
JPEG = {200: {"content": {"image/jpeg": {}}, "description": "the JPEG bytes"}}


class Body(BaseModel):
    # strict: {"running": 0} or {"items": {"shirt": "1"}} are refused, not coerced
    model_config = ConfigDict(extra="forbid", strict=True)


class PurchaseIn(Body):
    store: str = Field(max_length=32)
    customer: str = Field(min_length=1, max_length=64)
    items: dict[str, int] = Field(min_length=1, max_length=20)
    photo: str | None = Field(None, description="The customer's photo, base64 (JPEG or PNG)")
    capture: bool = Field(True, description="Without `photo`: take one with the store's synthetic camera")


class ReturnIn(Body):
    store: str = Field(max_length=32)
    receipt: str = Field(min_length=1, max_length=80, pattern=PRINTABLE_ID)
    photo: str | None = Field(None, description="The customer's fresh photo, base64")
    capture: bool = Field(False, description="Without `photo`: take one with the synthetic camera")
    customer: str | None = Field(None, max_length=64, description="Who the customer says they are")


class LinkIn(Body):
    action: Literal["partition", "heal"]


class HackedIn(Body):
    running: bool


class ScenarioIn(Body):
    store_a: str | None = None
    store_b: str | None = None


def photo_bytes(b64: str | None) -> bytes | None:
    """A body's base64 photo as bytes (None: no photo); 422 when it is not base64."""
    if b64 is None:
        return None
    try:
        return base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(422, "photo rejected: the photo must be base64") from None


def check_id(name: str, value: str) -> None:
    """Receipt and attempt ids are printable: control characters are refused (422)."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise HTTPException(422, f"{name} ids must not contain control characters")
