"""The API's read model: what the listings, stories and alerts are read from, across every reachable
store (a store that stops answering is dropped from the pool and skipped)."""

from __future__ import annotations

import json

import redis
from fastapi import HTTPException

from ..detector import alert_id
from ..photos.storage import PhotoStore, describe_ttl, photo_ttl_ms
from ..retail import TerminalKeys, alert_key, attempt_key, decode_hash, verdict_key
from .errors import Unavailable


class Demo:
    """What the API reads and writes through: the stores, their photo stores, the terminal keys."""

    def __init__(self, refs, stores, keys: TerminalKeys, scenario_timeout: float = 15.0):
        self.refs, self.stores, self.keys = refs, stores, keys
        self.names = [r.name for r in refs]
        self.scenario_timeout = scenario_timeout
        self._photos: dict[str, PhotoStore] = {}

    def store(self, name: str):
        """The store `name` (404 when the demo has none, 503 when it does not answer)."""
        if name not in self.names:
            raise HTTPException(404, f"unknown store {name[:32]!r}; this demo has {', '.join(self.names)}")
        try:
            return self.stores.get(name)
        except (redis.RedisError, OSError):
            self.stores.drop(name)
            raise Unavailable(f"store {name} is unreachable") from None

    def reachable(self) -> dict:
        """Every store that answers (503 when none does)."""
        out = self.stores.reachable()
        if not out:
            raise Unavailable("no store is reachable")
        return out

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

    def recent(
        self, stream: str, limit: int, before: int | None, store: str | None, keep, bigger_scan: bool = False
    ) -> tuple[list[dict], int | None]:
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
            for _eid, fields in rows:
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
                    out[aid] = verdict_view(raw)
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
                out[al] = alert_view(raw)
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
            "purchase_photo": photo_urls(story.receipt.photo) if story.receipt and photos else None,
            "attempts": [
                {
                    **a.to_dict(),
                    "photo_urls": photo_urls(a.photo) if photos else None,
                    "verdict": verdicts.get(a.id),
                    "alert": alert_id(a.id) if verdicts.get(a.id, {}).get("decision") in ("review", "block") else None,
                }
                for a in attempts
            ],
            "replicated": presence,
            "unreachable": story.unreachable,
        }


def verdict_view(raw) -> dict:
    f, clock = decode_hash(raw)
    reasons = json.loads(f.get("reasons") or "[]")
    return {
        "decision": f.get("decision"),
        "score": int(f.get("score", 0)),
        "reasons": reasons,
        "photo": json.loads(f["photo"]) if f.get("photo") else None,
        "outcome": f.get("outcome"),
        "escalated_from": f.get("escalated_from"),
        "decided_us": clock,
    }


def alert_view(raw) -> dict:
    f, clock = decode_hash(raw)
    reasons = json.loads(f.get("reasons") or "[]")
    return {
        "alert": f.get("alert"),
        "attempt": f.get("attempt"),
        "receipt": f.get("receipt"),
        "store": f.get("store"),
        "customer": f.get("customer"),
        "terminal": f.get("terminal"),
        "amount_cents": int(f.get("amount", 0)),
        "score": int(f.get("score", 0)),
        "decision": f.get("decision"),
        "reason": f.get("reason"),
        "codes": [r["code"] for r in reasons],
        "reasons": reasons,
        "attempts": json.loads(f.get("attempts") or "[]"),
        "paid_before_alert": f.get("paid") == "1",
        "created_us": clock,
    }


def photo_urls(sha: str) -> dict | None:
    if not sha:
        return None
    return {"url": f"/api/photos/{sha}", "thumbnail_url": f"/api/photos/{sha}/thumbnail"}


def purchase_item(e: dict) -> dict:
    return {
        "receipt": e["rcpt"],
        "store": e["store"],
        "customer": e.get("customer"),
        "amount_cents": int(e.get("amount", 0)),
        "committed_us": int(e["c"]),
    }


def return_item(e: dict) -> dict:
    return {
        "attempt": e["att"],
        "receipt": e["rcpt"],
        "store": e["store"],
        "customer": e.get("customer"),
        "amount_cents": int(e.get("amount", 0)),
        "photo": e.get("photo") == "1",
        "local_decision": e.get("decision"),
        "committed_us": int(e["c"]),
    }


def photo_gone() -> str:
    """A photo no store holds: expired (photos are kept FRAUDDEMO_PHOTO_TTL; the receipt outlives it)
    or never stored."""
    try:
        kept = f"photos are kept {describe_ttl(photo_ttl_ms())}"
    except ValueError:  # a bad FRAUDDEMO_PHOTO_TTL is the tills' error to report, not this answer's
        kept = "photos are kept for a while"
    return f"photo expired: {kept} (or it was never stored)"
