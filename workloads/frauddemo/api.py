"""The REST API and server-sent events of the detection service (mounted by service.py).

Reads merge every reachable store's view; writes go to the store the request names. Listings come
from the stores' local event streams, newest first, paged with `before` (a commit clock in
microseconds, from the previous page's `next_before`). POSTs accept an `Idempotency-Key` header:
the first response is kept for a day in the target store and replayed for the same key and body.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import hashlib
import json
import math
import random
import threading
import time
from typing import Literal

import redis
import redis.asyncio as aioredis
from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from .detection import BLOCK, REVIEW
from .detector import alert_id, outcome
from .photos.access import PhotoAccess, PhotoDenied
from .photos.decode import TOO_LARGE, TOO_MANY_PIXELS, PhotoRejected
from .photos.storage import PhotoStore, describe_ttl, photo_ttl_ms
from .controls import CONTROL_KEY
from .retail import (ALERTS, CATALOGUE, PURCHASES, RETURNS, VERDICTS, InvalidInput, TerminalKeys, alert_key, attempt_key,
                     check_text, decode_hash, read_attempts, read_stories, verdict_key)
from .scenario import ScenarioError, ScenarioUnavailable, run_fraud
from .store import Store, StoreUnavailable, unavailable_reason
from .syncer import pause_key
from .till import Till, capture

MAX_BODY = 3 * 1024 * 1024  # a 1 MB photo in base64, with room for the rest
PAGE_MAX = 200
IDEMPOTENCY_TTL_S = 24 * 3600
SHA_HEX = "^[0-9a-f]{64}$"  # a photo's id: its SHA-256, lower-case hex
PRINTABLE_ID = "^[^\\x00-\\x1f\\x7f]+$"  # receipt and attempt ids: no control characters
STREAM_OF = {"purchase": PURCHASES, "return": RETURNS, "verdict": VERDICTS, "alert": ALERTS}


class Unavailable(Exception):
    """A store needed by the request is down: 503 with Retry-After."""


class Problem(BaseModel):
    """Every error: a reason, or (bad fields) one entry per field with its location."""
    detail: str | list[dict]


def _errors(*codes: int) -> dict:
    why = {400: "the body cannot be parsed at all (not UTF-8 JSON)",
           401: "the API token is missing or wrong (only when one is configured)",
           404: "no such store, receipt, attempt, alert or photo", 409: "a conflicting request is in progress",
           413: "the body or the photo is too large", 422: "the request is malformed, with the reason",
           429: "too many POSTs from this client (Retry-After)", 503: "a store is unreachable (Retry-After)"}
    return {c: {"model": Problem, "description": why[c]} for c in codes}


ERRORS = _errors(404, 422, 503)
POST_ERRORS = _errors(400, 401, 409, 413, 429)
JPEG = {200: {"content": {"image/jpeg": {}}, "description": "the JPEG bytes"}}


class _Body(BaseModel):
    # strict: {"running": 0} or {"items": {"shirt": "1"}} are refused, not coerced
    model_config = ConfigDict(extra="forbid", strict=True)


class PurchaseIn(_Body):
    store: str = Field(max_length=32)
    customer: str = Field(min_length=1, max_length=64)
    items: dict[str, int] = Field(min_length=1, max_length=20)
    photo: str | None = Field(None, description="The customer's photo, base64 (JPEG or PNG)")
    capture: bool = Field(True, description="Without `photo`: take one with the store's synthetic camera")


class ReturnIn(_Body):
    store: str = Field(max_length=32)
    receipt: str = Field(min_length=1, max_length=80, pattern=PRINTABLE_ID)
    photo: str | None = Field(None, description="The customer's fresh photo, base64")
    capture: bool = Field(False, description="Without `photo`: take one with the synthetic camera")
    customer: str | None = Field(None, max_length=64, description="Who the customer says they are")


class LinkIn(_Body):
    action: Literal["partition", "heal"]


class HackedIn(_Body):
    running: bool


class ScenarioIn(_Body):
    store_a: str | None = None
    store_b: str | None = None


def _photo_bytes(b64: str | None) -> bytes | None:
    if b64 is None:
        return None
    try:
        return base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(422, "photo must be base64") from None


def router(demo, guards=(), token=None) -> APIRouter:
    """`demo`: the service state (service.Demo): stores, keys, photo stores. `guards`: dependencies
    every POST runs first (access.guards: rate limit, token). `token`: the API token (None, a string or
    an access.TokenFile), which photos need too (photos/access.py)."""
    api = APIRouter(prefix="/api", tags=["api"], responses=ERRORS)
    photo_access = PhotoAccess(token)

    def may_see_photos(request: Request) -> bool:
        return photo_access.allowed(request.scope, request.headers.get("authorization"))

    def photo_viewer(request: Request) -> None:
        """Photos only for an authorised viewer (401 no token, 403 wrong token or not allowed here)."""
        try:
            photo_access.check(request.scope, request.headers.get("authorization"))
        except PhotoDenied as e:
            raise HTTPException(e.status, e.reason, headers={"WWW-Authenticate": 'Bearer realm="frauddemo"'}
                                if e.status == 401 else None) from None

    def post(path: str, **kw):
        return api.post(path, dependencies=[Depends(g) for g in guards], responses=POST_ERRORS, **kw)

    def store(name: str) -> Store:
        if name not in demo.names:
            raise HTTPException(404, f"unknown store {name[:32]!r}; this demo has {', '.join(demo.names)}")
        try:
            return demo.stores.get(name)
        except (redis.RedisError, OSError):
            demo.stores.drop(name)
            raise Unavailable(f"store {name} is unreachable") from None

    def reachable() -> dict[str, Store]:
        out = demo.stores.reachable()
        if not out:
            raise Unavailable("no store is reachable")
        return out

    def idempotent(target: Store, key: str | None, body: dict, make) -> JSONResponse:
        """Run `make() -> (status, body)` once per Idempotency-Key (kept in the target store)."""
        if key is None:
            status, out = make()
            return JSONResponse(out, status)
        if not 1 <= len(key) <= 200 or not key.isprintable():
            raise HTTPException(422, "Idempotency-Key must be 1-200 printable characters")
        rkey = "fd:idem:" + hashlib.sha256(key.encode()).hexdigest()
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

    # -- stores and the link ----------------------------------------------------------------------
    # Alerts are counted once each: an escalated alert has a second event in its stream.
    tally = Summary()

    @api.get("/stores")
    def stores_list():
        """Every store: up, op-log position, event counts (alerts: distinct alerts raised there);
        and every replication link."""
        st = demo.stores.status()
        counted = tally.read(demo)["stores"]
        for name, s in st["stores"].items():
            if s["up"]:
                if counted.get(name, {}).get("up"):
                    s.update({k: counted[name][k] for k in ("purchases", "returns", "alerts")})
                else:
                    s["up"] = False
        return st

    @post("/link")
    def link(body: LinkIn):
        """Partition or heal the replication between every pair of stores (the syncers obey)."""
        for target in demo.names:
            s = store(target)
            for source in demo.names:
                if source != target:
                    if body.action == "partition":
                        s.r.set(pause_key(source), "1")
                    else:
                        s.r.delete(pause_key(source))
        return {"action": body.action, "stores": demo.names}

    @post("/hacked-pos")
    def hacked_pos(body: HackedIn):
        """Start or stop every hacked POS (they check this flag before each attack)."""
        for name in demo.names:
            if body.running:
                store(name).r.hdel(CONTROL_KEY, "hacked")
            else:
                store(name).r.hset(CONTROL_KEY, "hacked", "paused")
        return {"running": body.running}

    # -- purchases --------------------------------------------------------------------------------
    @api.get("/purchases")
    def purchases(store_: str | None = Query(None, alias="store"), customer: str | None = None,
                  limit: int = Query(50, ge=1, le=PAGE_MAX), before: int | None = Query(None, ge=0)):
        items, nxt = demo.recent(PURCHASES, limit, before, store_,
                                 lambda e: customer is None or e.get("customer") == customer)
        return {"items": [_purchase_item(e) for e in items], "next_before": nxt}

    @api.get("/purchases/{receipt}")
    def purchase(request: Request, receipt: str = Path(pattern=PRINTABLE_ID)):
        """A receipt's whole story across the stores: the purchase, every return attempt with the
        detector's verdict, and where each record has replicated to. Photo links only for a viewer
        who may open them."""
        _check_id("receipt", receipt)
        stories = read_stories(reachable(), [receipt])
        story = stories[receipt]
        if story.receipt is None and not story.attempts:
            raise HTTPException(404, f"no store knows receipt {receipt[:80]!r}")
        return demo.story(receipt, story, photos=may_see_photos(request))

    @post("/purchases", status_code=201)
    def purchase_create(body: PurchaseIn, idempotency_key: str | None = Header(None)):
        s = store(body.store)

        def make():
            try:
                customer = check_text("customer", body.customer)
                photo = _photo_bytes(body.photo)
                if photo is None and body.capture:
                    photo = capture(customer, random.Random())
                till = Till(s, demo.keys, f"{body.store}-web-1", demo.photo_store(body.store))
                return 201, till.purchase(customer, body.items, photo)
            except InvalidInput as e:
                raise HTTPException(422, str(e)) from None
            except PhotoRejected as e:  # not an image, truncated, empty, a pixel bomb: nothing written
                raise HTTPException(413 if e.kind == TOO_LARGE else 422, f"photo rejected: {e}") from None
        return _guard(lambda: idempotent(s, idempotency_key, body.model_dump(), make), body.store)

    # -- returns ----------------------------------------------------------------------------------
    @api.get("/returns")
    def returns(store_: str | None = Query(None, alias="store"), decision: str | None = None,
                receipt: str | None = None, limit: int = Query(50, ge=1, le=PAGE_MAX),
                before: int | None = Query(None, ge=0)):
        items, nxt = demo.recent(RETURNS, limit, before, store_,
                                 lambda e: (decision is None or e.get("decision") == decision)
                                 and (receipt is None or e.get("rcpt") == receipt))
        verdicts = demo.verdicts([(e["store"], e["att"]) for e in items])
        return {"items": [{**_return_item(e), "verdict": verdicts.get(e["att"])} for e in items], "next_before": nxt}

    @api.get("/returns/{attempt}")
    def return_get(request: Request, attempt: str = Path(pattern=PRINTABLE_ID)):
        _check_id("attempt", attempt)
        found = read_attempts(reachable(), [attempt])
        if attempt not in found:
            raise HTTPException(404, f"no store knows return attempt {attempt[:80]!r}")
        a = found[attempt]
        return {**a.to_dict(), "verdict": demo.verdicts([(a.store, a.id)]).get(a.id),
                "photo_urls": _photo_urls(a.photo) if may_see_photos(request) else None}

    @post("/returns", status_code=201)
    def return_create(body: ReturnIn, idempotency_key: str | None = Header(None)):
        """A return at a store's web till: the store decides locally and records the attempt."""
        s = store(body.store)

        def make():
            try:
                _check_id("receipt", body.receipt)
                photo = _photo_bytes(body.photo)
                customer = check_text("customer", body.customer) if body.customer is not None else ""
                if photo is None and body.capture:
                    known = read_stories({body.store: s}, [body.receipt])[body.receipt].receipt
                    photo = capture(known.customer if known else customer or "unknown", random.Random())
                till = Till(s, demo.keys, f"{body.store}-web-1", demo.photo_store(body.store))
                out = till.return_(body.receipt, photo, customer)
                return 201, out.to_dict()
            except InvalidInput as e:
                raise HTTPException(422, str(e)) from None
            except PhotoRejected as e:
                raise HTTPException(413 if e.kind in (TOO_LARGE, TOO_MANY_PIXELS) else 422,
                                    f"photo rejected: {e}") from None
        return _guard(lambda: idempotent(s, idempotency_key, body.model_dump(), make), body.store)

    # -- alerts -----------------------------------------------------------------------------------
    @api.get("/alerts")
    def alerts(store_: str | None = Query(None, alias="store"), decision: str | None = None,
               reason: str | None = None, receipt: str | None = None,
               limit: int = Query(50, ge=1, le=PAGE_MAX), before: int | None = Query(None, ge=0)):
        seen = set()

        def keep(e):
            if e["alert"] in seen:  # an escalation re-announces an alert: list it once, newest state
                return False
            seen.add(e["alert"])
            return receipt is None or e.get("rcpt") == receipt

        items, nxt = demo.recent(ALERTS, limit, before, store_, keep, bigger_scan=True)
        full = demo.alerts([(e["store"], e["alert"]) for e in items])
        out = [full[e["alert"]] for e in items if e["alert"] in full]
        out = [a for a in out if (decision is None or a["decision"] == decision)
               and (reason is None or reason in a["codes"])]
        return {"items": out, "next_before": nxt}

    @api.get("/alerts/{alert}")
    def alert_get(alert: str, request: Request):
        """One alert with every attempt of its receipt side by side, and the purchase."""
        stores = reachable()
        found = demo.alerts([(n, alert) for n in stores])
        if alert not in found:
            raise HTTPException(404, f"no store knows alert {alert[:80]!r}")
        a = found[alert]
        story = read_stories(stores, [a["receipt"]])[a["receipt"]]
        return {**a, "story": demo.story(a["receipt"], story, photos=may_see_photos(request))}

    # -- photos -----------------------------------------------------------------------------------
    photo_routes = {"response_class": Response, "dependencies": [Depends(photo_viewer)],
                    "responses": {**JPEG, **_errors(401), 403: {"model": Problem, "description":
                                  "a wrong token, or photos asked for without a token over a non-loopback "
                                  "address (photos are private)"}}}

    @api.get("/photos/{sha}", **photo_routes)
    def photo(sha: str = Path(pattern=SHA_HEX)):
        data = demo.first(lambda name: _sha(demo.photo_store(name).get, sha))
        if data is None:
            raise HTTPException(404, _photo_gone())
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})

    @api.get("/photos/{sha}/thumbnail", **photo_routes)
    def thumbnail(sha: str = Path(pattern=SHA_HEX), side: int = Query(160, ge=16, le=1024)):
        data = demo.first(lambda name: _sha(lambda s: demo.photo_store(name).thumbnail(s, side), sha))
        if data is None:
            raise HTTPException(404, _photo_gone())
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})

    # -- scenario ---------------------------------------------------------------------------------
    @post("/scenarios/fraud")
    def scenario_fraud(body: ScenarioIn | None = None):
        """Scenario 1: a purchase at A, then a legitimate return at A and a hacked one at B inside the
        replication window; returns the detector's alert and both attempts side by side."""
        a = (body and body.store_a) or demo.names[0]
        b = (body and body.store_b) or (demo.names[1] if len(demo.names) > 1 else a)
        stores = {n: store(n) for n in {a, b}}
        try:
            return _guard(lambda: run_fraud(stores, demo.keys, a, b, timeout=demo.scenario_timeout))
        except ScenarioUnavailable as e:
            raise Unavailable(str(e)) from None
        except ScenarioError as e:
            raise HTTPException(422, str(e)) from None

    # -- live events ------------------------------------------------------------------------------
    @api.get("/events", response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}}, "description": "the event stream"}})
    async def events(request: Request, types: str = "purchase,return,verdict,alert,status"):
        """Server-sent events: `purchase`, `return`, `verdict`, `alert` as they are committed at any
        store, and `status` (stores and links) every second; nothing is read once the client leaves."""
        wanted = {t for t in types.split(",") if t}
        unknown = wanted - set(STREAM_OF) - {"status"}
        if unknown:
            raise HTTPException(422, f"unknown event types: {', '.join(sorted(unknown))}")
        return StreamingResponse(_sse(request, demo, wanted), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @api.get("/status")
    def api_status():
        """Stores and replication links, as the syncers last reported them; alert counts."""
        st = demo.stores.status()
        st["fraud"] = {"alerts": tally.read(demo)["alerts"]}
        return st

    # -- the dashboard's additions: catalogue, hacked-POS state, summary, reset ---------------------
    @api.get("/catalogue")
    def catalogue():
        """What a till can sell: SKU, name and price in cents."""
        return {"items": [{"sku": sku, "name": name, "price_cents": cents} for sku, (name, cents) in CATALOGUE.items()]}

    @api.get("/hacked-pos")
    def hacked_pos_state():
        """Whether the hacked POS is running: stopped when every reachable store says so."""
        flags = {n: s.r.hget(CONTROL_KEY, "hacked") for n, s in reachable().items()}
        return {"running": not all(v == b"paused" for v in flags.values()),
                "stores": {n: v != b"paused" for n, v in flags.items()}}

    @api.get("/summary")
    def summary():
        """The dashboard's summary strip, counted from every store's event streams (read
        incrementally): purchases, returns, frauds held (review) or blocked, refund value by outcome,
        value protected (refunds held or blocked) and detection latency p50/p99 (verdict commit minus
        attempt commit, the last 1000 per store)."""
        return tally.read(demo)

    reset_lock = threading.Lock()

    @post("/reset")
    def reset():
        """Delete the demo's data (receipts, returns, verdicts, alerts, photos, counters, event streams)
        at every store. Deletes do not replicate, so the link is partitioned first (and confirmed by
        every syncer), every store is wiped in one atomic script that also reads its op-log position,
        every peer's checkpoint is moved to that position (what was logged before the reset is never
        replayed), and the link goes back to the state it was in. 503 when a store is down or a syncer
        does not confirm the partition; nothing is deleted then."""
        if not reset_lock.acquire(blocking=False):
            raise HTTPException(409, "a reset is already in progress")
        try:
            return _guard(lambda: reset_stores(demo, {n: store(n) for n in demo.names}))
        finally:
            reset_lock.release()

    return api


def _guard(fn, store: str | None = None):
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


def _photo_gone() -> str:
    """A photo no store holds: expired (photos are kept FRAUDDEMO_PHOTO_TTL; the receipt outlives it)
    or never stored."""
    try:
        kept = f"photos are kept {describe_ttl(photo_ttl_ms())}"
    except ValueError:  # a bad FRAUDDEMO_PHOTO_TTL is the tills' error to report, not this answer's
        kept = "photos are kept for a while"
    return f"photo expired: {kept} (or it was never stored)"


def _sha(get, sha: str):
    try:
        return get(sha)
    except ValueError:
        raise HTTPException(422, "photo ids are lower-case SHA-256 hex digests") from None


def _check_id(name: str, value: str) -> None:
    """Receipt and attempt ids are printable: control characters are refused (422)."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise HTTPException(422, f"{name} ids must not contain control characters")


def _photo_urls(sha: str) -> dict | None:
    if not sha:
        return None
    return {"url": f"/api/photos/{sha}", "thumbnail_url": f"/api/photos/{sha}/thumbnail"}


def _purchase_item(e: dict) -> dict:
    return {"receipt": e["rcpt"], "store": e["store"], "customer": e.get("customer"),
            "amount_cents": int(e.get("amount", 0)), "committed_us": int(e["c"])}


def _return_item(e: dict) -> dict:
    return {"attempt": e["att"], "receipt": e["rcpt"], "store": e["store"], "customer": e.get("customer"),
            "amount_cents": int(e.get("amount", 0)), "photo": e.get("photo") == "1",
            "local_decision": e.get("decision"), "committed_us": int(e["c"])}


async def _sse(request: Request, demo, wanted: set[str]):
    """One XREAD loop per store feeding a queue; stops, and closes its connections, when the client
    goes away."""
    q: asyncio.Queue = asyncio.Queue(maxsize=1000)
    streams = {STREAM_OF[t]: t for t in wanted if t in STREAM_OF}

    async def tail(ref):
        conn = aioredis.Redis.from_url(ref.url, password=ref.password, protocol=2, socket_timeout=10)
        last = None  # resolved once: "$" on every call would skip what arrives between two reads
        try:
            while True:
                if last is None:
                    try:
                        last = {}
                        for s in streams:
                            top = await conn.xrevrange(s, count=1)
                            last[s] = top[0][0] if top else "0-0"
                    except (redis.RedisError, OSError):
                        last = None
                        await asyncio.sleep(1.0)
                        continue
                try:
                    res = await conn.xread(last, block=1000, count=200)
                except (redis.RedisError, OSError):
                    await asyncio.sleep(1.0)
                    continue
                for stream, entries in res or []:
                    stream = stream.decode()
                    for eid, fields in entries:
                        last[stream] = eid
                        ev = {k.decode(): v.decode() for k, v in fields.items()}
                        ev["store"] = ref.name
                        await q.put((streams[stream], ev))
        finally:
            await conn.aclose()

    async def status():
        while True:
            await q.put(("status", await asyncio.to_thread(demo.stores.status)))
            await asyncio.sleep(1.0)

    tasks = [asyncio.create_task(tail(r)) for r in demo.refs] if streams else []
    if "status" in wanted:
        tasks.append(asyncio.create_task(status()))
    try:
        yield "retry: 2000\n\n"
        while True:
            if await request.is_disconnected():
                break
            try:
                kind, ev = await asyncio.wait_for(q.get(), timeout=15)
            except asyncio.TimeoutError:
                yield ": keep-alive\n\n"
                continue
            yield f"event: {kind}\ndata: {json.dumps(ev)}\n\n"
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Demo:
    """What the API reads and writes through: the stores, their photo stores, the terminal keys."""

    def __init__(self, refs, stores, keys: TerminalKeys, scenario_timeout: float = 15.0):
        self.refs, self.stores, self.keys = refs, stores, keys
        self.names = [r.name for r in refs]
        self.scenario_timeout = scenario_timeout
        self._photos: dict[str, PhotoStore] = {}

    def photo_store(self, name: str) -> PhotoStore:
        s = self.stores.get(name)
        ps = self._photos.get(name)
        if ps is None or ps.store is not s:
            ps = self._photos[name] = PhotoStore(s)
        return ps

    def first(self, fn):
        for name in self.names:
            try:
                out = fn(name)
            except (redis.RedisError, OSError):
                self.stores.drop(name)
                continue
            if out is not None:
                return out
        return None

    def recent(self, stream: str, limit: int, before: int | None, store: str | None, keep,
               bigger_scan: bool = False) -> tuple[list[dict], int | None]:
        """Newest events of `stream` across the stores (or one), merged by commit clock."""
        names = [store] if store else self.names
        if store and store not in self.names:
            raise HTTPException(404, f"unknown store {store[:32]!r}")
        scan = limit * (8 if bigger_scan else 4)
        events = []
        for name in names:
            try:
                s = self.stores.get(name)
                top = "+" if before is None else f"({before // 1000 + 1}-0"
                rows = s.r.xrevrange(stream, max=top, min="-", count=scan)
            except (redis.RedisError, OSError):
                self.stores.drop(name)
                continue
            for eid, fields in rows:
                ev = {k.decode(): v.decode() for k, v in fields.items()}
                ev["store"] = name
                if before is None or int(ev.get("c", 0)) < before:
                    events.append(ev)
        events.sort(key=lambda e: -int(e.get("c", 0)))
        out = []
        for e in events:
            if keep(e):
                out.append(e)
                if len(out) == limit:
                    break
        nxt = int(out[-1]["c"]) if len(out) == limit else None
        return out, nxt

    def verdicts(self, pairs: list[tuple[str, str]]) -> dict[str, dict]:
        """The detector's verdict per attempt, read from the attempt's own store."""
        out = {}
        by_store: dict[str, list[str]] = {}
        for store, aid in pairs:
            by_store.setdefault(store, []).append(aid)
        for store, aids in by_store.items():
            try:
                pipe = self.stores.get(store).r.pipeline(transaction=False)
                for aid in aids:
                    pipe.hgetall(verdict_key(aid))
                res = pipe.execute()
            except (redis.RedisError, OSError):
                self.stores.drop(store)
                continue
            for aid, raw in zip(aids, res):
                if raw:
                    out[aid] = _verdict(raw)
        return out

    def alerts(self, pairs: list[tuple[str, str]]) -> dict[str, dict]:
        out = {}
        for store, al in pairs:
            try:
                raw = self.stores.get(store).r.hgetall(alert_key(al))
            except (redis.RedisError, OSError):
                self.stores.drop(store)
                continue
            if raw and al not in out:
                out[al] = _alert(raw)
        return out

    def story(self, receipt: str, story, photos: bool = True) -> dict:
        stores = self.stores.reachable()
        presence = {}
        for n, s in stores.items():
            pipe = s.r.pipeline(transaction=False)
            pipe.exists(f"h:rcpt:{receipt}")
            for aid in story.attempts:
                pipe.exists(attempt_key(aid))
            res = pipe.execute()
            presence[n] = {"receipt": bool(res[0]), "attempts": sum(res[1:])}
        attempts = sorted(story.attempts.values(), key=lambda a: (a.clock, a.id))
        verdicts = self.verdicts([(a.store, a.id) for a in attempts])
        return {
            "receipt": story.receipt.to_dict() if story.receipt else None,
            "purchase_photo": _photo_urls(story.receipt.photo) if story.receipt and photos else None,
            "attempts": [{**a.to_dict(), "photo_urls": _photo_urls(a.photo) if photos else None,
                          "verdict": verdicts.get(a.id),
                          "alert": alert_id(a.id) if verdicts.get(a.id, {}).get("decision") in ("review", "block")
                          else None} for a in attempts],
            "replicated": presence, "unreachable": story.unreachable,
        }


def _verdict(raw) -> dict:
    f, clock = decode_hash(raw)
    reasons = json.loads(f.get("reasons") or "[]")
    return {"decision": f.get("decision"), "score": int(f.get("score", 0)), "reasons": reasons,
            "photo": json.loads(f["photo"]) if f.get("photo") else None, "outcome": f.get("outcome"),
            "escalated_from": f.get("escalated_from"), "decided_us": clock}


def _alert(raw) -> dict:
    f, clock = decode_hash(raw)
    reasons = json.loads(f.get("reasons") or "[]")
    return {"alert": f.get("alert"), "attempt": f.get("attempt"), "receipt": f.get("receipt"),
            "store": f.get("store"), "customer": f.get("customer"), "terminal": f.get("terminal"),
            "amount_cents": int(f.get("amount", 0)), "score": int(f.get("score", 0)),
            "decision": f.get("decision"), "reason": f.get("reason"), "codes": [r["code"] for r in reasons],
            "reasons": reasons, "attempts": json.loads(f.get("attempts") or "[]"),
            "paid_before_alert": f.get("paid") == "1", "created_us": clock}


# -- the dashboard's reset and summary --------------------------------------------------------------
RESET_KEY = "fd:reset"  # local: a token that changes at every reset (readers of the streams start over)
RESET_CONFIRM_S = 5.0
# A local maintenance write (never logged, so it never replicates): the demo's data keys and the
# idempotency records go, event streams are emptied in place (the detectors' consumer groups stay),
# and the op-log position is read in the same atomic step.
RESET_SCRIPT = """
local deleted, cur = 0, '0'
repeat
  local res = redis.call('SCAN', cur, 'COUNT', 1000)
  cur = res[1]
  for _, k in ipairs(res[2]) do
    local p = string.sub(k, 1, 2)
    if p == 'h:' or p == 's:' or p == 'x:' or p == 'c:' or p == 'b:' or string.sub(k, 1, 8) == 'fd:idem:' then
      redis.call('UNLINK', k)
      deleted = deleted + 1
    elseif string.sub(k, 1, 6) == 'fd:ev:' and redis.call('TYPE', k)['ok'] == 'stream' then
      redis.call('XTRIM', k, 'MAXLEN', 0)
    end
  end
until cur == '0'
redis.call('SET', KEYS[1], ARGV[1])
local m = redis.call('HMGET', 'fd:meta', 'epoch', 'seq')
if not m[1] then return redis.error_reply('NOTINIT store has no replica id') end
local last = redis.call('XREVRANGE', 'fd:log', '+', '-', 'COUNT', 1)
local id = '0-0'
if #last > 0 then id = last[1][1] end
return {deleted, m[1], m[2], id}
"""


def reset_stores(demo, stores: dict[str, Store]) -> dict:
    """POST /api/reset (see there). `stores`: every store of the demo, connected."""
    pairs = [(t, s) for t in stores for s in stores if s != t]
    paused_before = {(t, s): stores[t].r.exists(pause_key(s)) for t, s in pairs}
    reported = {(t, s): int(stores[t].link_status(s).get("updated_ms", 0)) for t, s in pairs}
    for t, s in pairs:
        stores[t].r.set(pause_key(s), "1")
    try:
        deadline = time.monotonic() + RESET_CONFIRM_S
        waiting = list(pairs)
        while waiting:
            waiting = [(t, s) for t, s in waiting if not _holds(stores[t].link_status(s), reported[(t, s)])]
            if waiting and time.monotonic() > deadline:
                names = ", ".join(f"{s}->{t}" for t, s in waiting)
                raise HTTPException(503, f"link {names} did not confirm the partition within "
                                         f"{RESET_CONFIRM_S:g} s (is its syncer running?); nothing was reset",
                                    headers={"Retry-After": "5"})
            if waiting:
                time.sleep(0.05)
        token = f"{int(time.time() * 1000)}-{random.getrandbits(32):08x}"
        deleted = {}
        for name, st in stores.items():
            n, epoch, seq, sid = st.r.eval(RESET_SCRIPT, 1, RESET_KEY, token)
            deleted[name] = int(n)
            for t in stores:  # what `name` logged before its reset is never replayed at `t`
                if t != name:
                    stores[t].r.fcall("fd_checkpoint", 0, name, epoch, seq, sid)
    finally:
        for t, s in pairs:
            if not paused_before[(t, s)]:
                stores[t].r.delete(pause_key(s))
    return {"reset": True, "deleted_keys": deleted,
            "link": "partitioned" if any(paused_before.values()) else "up"}


def _holds(link: dict, last_ms: int) -> bool:
    """The link's syncer reported itself partitioned, in a report newer than `last_ms` (the last one
    before the partition): it is holding, so no merge of its is in flight."""
    return link.get("state") == "partitioned" and int(link.get("updated_ms", 0)) > last_ms


class _Tally:
    """One store's figures, advanced by reading only what its streams got since the last call."""

    def __init__(self, token):
        self.token = token
        self.last = {RETURNS: None, VERDICTS: None, ALERTS: None}
        self.pending: collections.OrderedDict[str, tuple] = collections.OrderedDict()  # attempt -> (amount, local, c)
        self.orphans: collections.OrderedDict[str, tuple] = collections.OrderedDict()  # attempt -> (decision, c)
        self.count = collections.Counter()
        self.cents = collections.Counter()
        self.alerts: dict[str, str] = {}
        self.latency_ms: collections.deque = collections.deque(maxlen=1000)
        self.purchases = self.returns = 0

    def settle(self, aid: str, amount: int, local: str, att_c: int, decision: str, ver_c: int) -> None:
        money = outcome(local, decision)
        self.count[money] += 1
        self.cents[money] += amount
        self.latency_ms.append(max(0, ver_c - att_c) / 1000)

    def apply(self, stream: str, rows: list) -> None:
        for _, f in rows:
            f = {k.decode(): v.decode() for k, v in f.items()}
            aid, c = f.get("att", ""), int(f.get("c", 0))
            if stream == RETURNS:
                amount, local = int(f.get("amount", 0)), f.get("decision", "")
                if aid in self.orphans:
                    decision, vc = self.orphans.pop(aid)
                    self.settle(aid, amount, local, c, decision, vc)
                else:
                    _capped_put(self.pending, aid, (amount, local, c))
            elif stream == VERDICTS:
                if aid in self.pending:  # the first verdict of an attempt fixes what happens to the money
                    amount, local, ac = self.pending.pop(aid)
                    self.settle(aid, amount, local, ac, f.get("decision", ""), c)
                elif aid not in self.orphans:
                    _capped_put(self.orphans, aid, (f.get("decision", ""), c))
            elif f.get("alert"):
                self.alerts[f["alert"]] = f.get("decision", "")


def _capped_put(d: collections.OrderedDict, k, v, cap: int = 100_000) -> None:
    d[k] = v
    while len(d) > cap:
        d.popitem(last=False)


class Summary:
    """GET /api/summary: every store's tally, read incrementally (at most `per_call` new entries per
    stream and call, so the first call on a full store stays short; `complete` says when it caught up)."""

    def __init__(self, per_call: int = 20_000):
        self.per_call = per_call
        self._lock = threading.Lock()
        self._tallies: dict[str, _Tally] = {}

    def read(self, demo) -> dict:
        with self._lock:
            complete, up = True, {}
            for name in demo.names:
                try:
                    complete &= self._advance(name, demo.stores.get(name))
                    up[name] = True
                except (redis.RedisError, OSError):
                    demo.stores.drop(name)
                    up[name] = False
            return self._render(demo.names, up, complete)

    def _advance(self, name: str, store: Store) -> bool:
        pipe = store.r.pipeline(transaction=False)
        pipe.get(RESET_KEY)
        pipe.xlen(PURCHASES)
        pipe.xlen(RETURNS)
        token, purchases, returns = pipe.execute()
        t = self._tallies.get(name)
        if t is None or t.token != token:
            t = self._tallies[name] = _Tally(token)
        t.purchases, t.returns = purchases, returns
        complete = True
        # Verdicts before returns: every verdict read has its attempt's event already written.
        for stream in (VERDICTS, ALERTS, RETURNS):
            rows = []
            while len(rows) < self.per_call:
                last = t.last[stream]
                page = store.r.xrange(stream, min="-" if last is None else f"({last}", max="+", count=2000)
                rows += page
                if page:
                    t.last[stream] = page[-1][0].decode()
                if len(page) < 2000:
                    break
            else:
                complete = False
            t.apply(stream, rows)
        return complete

    def _render(self, names: list[str], up: dict, complete: bool) -> dict:
        stores, total = {}, collections.Counter()
        cents, count = collections.Counter(), collections.Counter()
        frauds = collections.Counter()
        latencies = []
        for name in names:
            t = self._tallies.get(name)
            if t is None:
                stores[name] = {"up": up.get(name, False)}
                continue
            held = sum(1 for d in t.alerts.values() if d == REVIEW)
            blocked = sum(1 for d in t.alerts.values() if d == BLOCK)
            protected = t.cents["held"] + t.cents["blocked"]
            stores[name] = {"up": up.get(name, False), "purchases": t.purchases, "returns": t.returns,
                            "alerts": len(t.alerts), "frauds_held": held, "frauds_blocked": blocked,
                            "value_protected_cents": protected}
            total.update(purchases=t.purchases, returns=t.returns, alerts=len(t.alerts))
            frauds.update(held=held, blocked=blocked)
            cents.update(t.cents)
            count.update(t.count)
            latencies += t.latency_ms
        latencies.sort()

        def pct(p: float):
            if not latencies:
                return None
            return round(latencies[min(len(latencies) - 1, max(0, math.ceil(p * len(latencies)) - 1))], 3)

        return {
            "purchases": total["purchases"], "returns": total["returns"], "alerts": total["alerts"],
            "frauds": {"held": frauds["held"], "blocked": frauds["blocked"]},
            "refunds": {k: {"count": count[k], "cents": cents[k]} for k in ("refunded", "held", "blocked", "refused")},
            "value_protected_cents": cents["held"] + cents["blocked"],
            "detection_latency_ms": {"p50": pct(0.50), "p99": pct(0.99), "samples": len(latencies)},
            "stores": stores, "complete": complete,
            # changes whenever a store is reset: a page showing older data starts over
            "generation": ",".join(_text(t.token) for t in (self._tallies.get(n) for n in names) if t),
        }


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else (v or "")
