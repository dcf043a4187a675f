"""GET /api/summary: the dashboard's summary strip, counted from every store's event streams, read
incrementally (each call reads only what the streams got since the last one)."""

from __future__ import annotations

import collections
import math
import threading

import redis

from ..controls import RESET_KEY
from ..detection import BLOCK, REVIEW
from ..detector import outcome
from ..retail import ALERTS, PURCHASES, RETURNS, VERDICTS
from ..store import Store


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
            stores[name] = {
                "up": up.get(name, False),
                "purchases": t.purchases,
                "returns": t.returns,
                "alerts": len(t.alerts),
                "frauds_held": held,
                "frauds_blocked": blocked,
                "value_protected_cents": protected,
            }
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
            "purchases": total["purchases"],
            "returns": total["returns"],
            "alerts": total["alerts"],
            "frauds": {"held": frauds["held"], "blocked": frauds["blocked"]},
            "refunds": {k: {"count": count[k], "cents": cents[k]} for k in ("refunded", "held", "blocked", "refused")},
            "value_protected_cents": cents["held"] + cents["blocked"],
            "detection_latency_ms": {"p50": pct(0.50), "p99": pct(0.99), "samples": len(latencies)},
            "stores": stores,
            "complete": complete,
            # changes whenever a store is reset: a page showing older data starts over
            "generation": ",".join(_text(t.token) for t in (self._tallies.get(n) for n in names) if t),
        }


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else (v or "")
