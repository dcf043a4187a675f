"""POSTs accept an `Idempotency-Key` header: the first response is kept for a day in the target store
(a local record, `fd:idem:<sha256 of the key>`, never replicated) and replayed for the same key and
body; the same key with another body is refused (422), and while the first request runs a second one
with its key gets 409."""

from __future__ import annotations

import hashlib
import json

from fastapi import HTTPException
from fastapi.responses import JSONResponse

from ..store import Store

IDEMPOTENCY_TTL_S = 24 * 3600
PREFIX = "fd:idem:"


def record_key(key: str) -> str:
    return PREFIX + hashlib.sha256(key.encode()).hexdigest()


def idempotent(target: Store, key: str | None, body: dict, make) -> JSONResponse:
    """Run `make() -> (status, body)` once per Idempotency-Key (kept in the target store)."""
    if key is None:
        status, out = make()
        return JSONResponse(out, status)
    if not 1 <= len(key) <= 200 or not key.isprintable():
        raise HTTPException(422, "Idempotency-Key must be 1-200 printable characters")
    rkey = record_key(key)
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    if not target.r.set(rkey, json.dumps({"hash": digest}), nx=True, ex=IDEMPOTENCY_TTL_S):
        rec = json.loads(target.r.get(rkey) or "{}")
        if rec.get("hash") != digest:
            raise HTTPException(422, "this Idempotency-Key was used with a different request")
        if "status" not in rec:
            raise HTTPException(409, "a request with this Idempotency-Key is still in progress")
        return JSONResponse(rec["body"], rec["status"], headers={"Idempotent-Replayed": "true"})
    try:
        status, out = make()
    except BaseException:
        target.r.delete(rkey)
        raise
    target.r.set(rkey, json.dumps({"hash": digest, "status": status, "body": out}), ex=IDEMPOTENCY_TTL_S)
    return JSONResponse(out, status)
