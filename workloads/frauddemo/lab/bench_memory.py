"""`frauddemo bench memory`: how fast the stores' memory grows at the demo's default rate.

Runs `frauddemo up`'s stack as the demo does (two stores, both POS at the default rate, the hacked
POS, syncers, the detector), samples every store's INFO used_memory, and fits a line through the
samples taken after the warm-up: its slope is the growth in bytes a second, reported per hour and per
day beside the store's maxmemory. The op log's size (MEMORY USAGE fd:log) and the photos' (b:photo:*)
are reported too, to say where the memory goes, with MEMORY USAGE summed by key prefix (`by_prefix`).

A day's projection (`projected_24h_bytes`): what the store holds at the first sample, plus
  - the photos' growth for as long as they live (their TTL, FRAUDDEMO_PHOTO_TTL; capped at a day):
    photos expire, so their bytes plateau at growth x TTL;
  - the op log's growth until it reaches its retention (entries x bytes per entry), where it is trimmed;
  - everything else's growth for 24 h (receipts, attempts, verdicts, alerts, indexes, prints, events).
`fits_a_day` compares it with the maxmemory of a store deployed with the CRD's default memory limit
(3/4 of it, the store's init container) and with this store's maxmemory: the bench fails (exit 1)
when a day does not fit.
"""

from __future__ import annotations

import collections
import statistics
import time

import redis

from ..local import Supervisor
from ..photos.storage import photo_ttl_ms
from ..servers import free_port

DAY_S = 86400
PHOTO_PREFIX = b"b:photo:"
# The store container's default memory limit in the CRD (operator/frauddemo_operator/crd.yaml) and the
# maxmemory the store's init container derives from it (3/4: room for the AOF rewrite's fork).
K8S_DEFAULT_MEMORY_LIMIT = 3 * 1024 * 1024 * 1024
K8S_DEFAULT_MAXMEMORY = K8S_DEFAULT_MEMORY_LIMIT // 4 * 3


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, y) points (0 for fewer than two distinct times)."""
    if len({t for t, _ in points}) < 2:
        return 0.0
    mt, my = statistics.fmean(t for t, _ in points), statistics.fmean(y for _, y in points)
    return sum((t - mt) * (y - my) for t, y in points) / sum((t - mt) ** 2 for t, _ in points)


def _photos(r: redis.Redis) -> tuple[int, int]:
    n = size = 0
    for k in r.scan_iter(match="b:photo:*", count=1000):
        n += 1
        size += r.strlen(k)
    return n, size


def _prefix(key: bytes) -> str:
    """`h:rcpt:r-01...` -> `h:rcpt`, `fd:ev:purchases` -> `fd:ev:purchases`, `fd:log` -> `fd:log`."""
    k = key.decode(errors="replace")
    parts = k.split(":")
    if parts[0] == "fd":
        return ":".join(parts[:3]) if parts[1:2] == ["ev"] else ":".join(parts[:2])
    return ":".join(parts[:2])


def by_prefix(r: redis.Redis) -> dict[str, dict]:
    """MEMORY USAGE summed by key prefix (every key: exact for strings, sampled for big aggregates),
    biggest first: where a store's bytes go."""
    agg: dict[str, list] = collections.defaultdict(lambda: [0, 0, 0])  # keys, bytes, greatest PTTL (-1: none)
    keys = list(r.scan_iter(count=1000))
    for i in range(0, len(keys), 500):
        chunk = keys[i : i + 500]
        pipe = r.pipeline(transaction=False)
        for k in chunk:
            pipe.memory_usage(k, samples=0)
            pipe.pttl(k)
        res = pipe.execute()
        for j, k in enumerate(chunk):
            used, ttl = res[2 * j], int(res[2 * j + 1])
            a = agg[_prefix(k)]
            a[0] += 1
            a[1] += int(used or 0)
            if ttl < 0 or a[2] < 0:
                a[2] = -1 if ttl == -1 or a[2] < 0 else a[2]
            else:
                a[2] = max(a[2], ttl)
    # ttl_s: the greatest remaining TTL of the prefix's keys (the newest key's, about the TTL it was
    # given), None when one of them has none: those keys stay, the others plateau
    return {
        p: {"keys": n, "bytes": b, "ttl_s": round(t / 1000) if t > 0 else None}
        for p, (n, b, t) in sorted(agg.items(), key=lambda kv: -kv[1][1])
    }


def photo_memory(r: redis.Redis) -> int:
    """MEMORY USAGE of every photo (b:photo:*)."""
    keys = list(r.scan_iter(match="b:photo:*", count=1000))
    pipe = r.pipeline(transaction=False)
    for k in keys:
        pipe.memory_usage(k, samples=0)
    return sum(int(u or 0) for u in pipe.execute()) if keys else 0


def oplog_memory(r: redis.Redis) -> tuple[int, int]:
    """(entries, bytes) of the op log."""
    return r.xlen("fd:log"), int(r.memory_usage("fd:log", samples=0) or 0)


def other_bytes(prefixes: dict[str, dict]) -> int:
    """Bytes of every key but the photos and the op log (by_prefix's output)."""
    return sum(v["bytes"] for p, v in prefixes.items() if p not in ("b:photo", "fd:log"))


def expiring(first: dict[str, dict], last: dict[str, dict], dt: float) -> tuple[float, float]:
    """(growth in bytes/s, plateau in bytes) of the keys with a TTL other than the photos (by_prefix's
    output at two moments `dt` apart): each prefix grows for its TTL, capped at a day."""
    per_s = plateau = 0.0
    for p, v in last.items():
        if p in ("b:photo", "fd:log") or not v.get("ttl_s"):
            continue
        g = max(0.0, (v["bytes"] - first.get(p, {}).get("bytes", 0)) / dt)
        per_s += g
        plateau += g * min(v["ttl_s"], DAY_S)
    return per_s, plateau


def project_day(
    first_used: int,
    total_per_s: float,
    photo_per_s: float,
    photo_ttl_s: float,
    oplog_per_s: float,
    oplog_room: float,
    other_per_s: float = 0.0,
    expiring_per_s: float = 0.0,
    expiring_plateau: float = 0.0,
) -> dict:
    """A day's memory from the measured slopes: photos plateau at growth x TTL, the op log at its
    retention (`oplog_room`: bytes it may still grow), the rest grows for 24 h: the greater of
    used_memory's slope less the photos' and the op log's, and `other_per_s` (the other keys' own
    MEMORY USAGE growth), so that noise in one figure never shrinks the projection. Other keys with a
    TTL (`expiring_per_s`, e.g. photo prints) plateau at `expiring_plateau` instead."""
    other = max(
        0.0, total_per_s - max(0.0, photo_per_s) - max(0.0, oplog_per_s) - expiring_per_s, other_per_s - expiring_per_s
    )
    photos = max(0.0, photo_per_s) * min(photo_ttl_s, DAY_S)
    oplog = min(max(0.0, oplog_per_s) * DAY_S, max(0.0, oplog_room))
    rest = other * DAY_S
    return {
        "projected_24h_bytes": round(first_used + photos + oplog + expiring_plateau + rest),
        "projected_24h_parts": {
            "at_start": first_used,
            "photos_plateau": round(photos),
            "oplog": round(oplog),
            "other_expiring_plateau": round(expiring_plateau),
            "other_24h": round(rest),
        },
        "other_growth_bytes_per_s": round(other, 1),
    }


def run(
    duration: float = 300.0,
    warmup: float = 30.0,
    interval: float = 5.0,
    rate: float | None = None,
    hacked_rate: float | None = None,
    log=lambda m: None,
) -> dict:
    kw = {}
    if rate is not None:
        kw["rate"] = rate
    if hacked_rate is not None:
        kw["hacked_rate"] = hacked_rate
    sup = Supervisor(["a", "b"], port=free_port(), headless=True, **kw)
    clients: dict[str, redis.Redis] = {}
    samples: dict[str, list[tuple[float, float]]] = {}
    marks: dict[str, tuple] = {}  # (t, photo bytes, oplog entries, oplog bytes, other keys' bytes)
    try:
        sup.start()
        sup.wait_ready(120)
        clients = {n: spec.client(socket_timeout=10) for n, spec in sup.servers.items()}
        t0 = time.monotonic()
        end = t0 + warmup + duration
        log(f"bench memory: {warmup:g} s warm-up, then {duration:g} s sampled every {interval:g} s")
        while time.monotonic() < end:
            sup.poll()
            now = time.monotonic() - t0
            if now >= warmup:
                for n, r in clients.items():
                    samples.setdefault(n, []).append((now, float(r.info("memory")["used_memory"])))
                    if len(samples[n]) == 1:
                        pre = by_prefix(r)
                        marks[n] = (now, photo_memory(r), *oplog_memory(r), other_bytes(pre), pre)
            time.sleep(max(0.0, min(interval, end - time.monotonic())))
        stores = {}
        ttl_s = photo_ttl_ms() / 1000
        for n, r in clients.items():
            pts = samples.get(n, [])
            per_s = slope(pts)
            limit = int(r.config_get("maxmemory")["maxmemory"])
            used = int(r.info("memory")["used_memory"])
            photos, photo_bytes = _photos(r)
            t1 = time.monotonic() - t0
            prefixes = by_prefix(r)
            last = (t1, photo_memory(r), *oplog_memory(r), other_bytes(prefixes), prefixes)
            first = marks.get(n, last)
            dt = max(1e-9, last[0] - first[0])
            retention = int(r.hget("fd:meta", "retention") or 0)
            per_entry = last[3] / last[2] if last[2] else 0.0
            # used_memory's growth between the same two moments as the photo and op-log figures (a
            # regression slope minus endpoint figures mixes two estimates of bursty photo writes)
            span = (pts[-1][1] - pts[0][1]) / (pts[-1][0] - pts[0][0]) if len(pts) > 1 else per_s
            proj = project_day(
                int(pts[0][1]) if pts else used,
                span,
                (last[1] - first[1]) / dt,
                ttl_s,
                (last[3] - first[3]) / dt,
                (retention - last[2]) * per_entry + last[3] - first[3],
                (last[4] - first[4]) / dt,
                *expiring(first[5], last[5], dt),
            )
            stores[n] = {
                "samples": len(pts),
                "used_memory_first": int(pts[0][1]) if pts else None,
                "used_memory_last": int(pts[-1][1]) if pts else None,
                "growth_bytes_per_s": round(per_s, 1),
                "growth_bytes_per_hour": round(per_s * 3600),
                "growth_first_to_last_bytes_per_s": round(span, 1),
                "growth_bytes_per_day": round(per_s * 86400),
                "maxmemory": limit,
                "hours_to_maxmemory": round((limit - used) / (per_s * 3600), 1) if limit and per_s > 0 else None,
                "oplog_entries": r.xlen("fd:log"),
                "oplog_bytes": r.memory_usage("fd:log", samples=0) or 0,
                "oplog_retention": retention,
                "photos": photos,
                "photo_bytes": photo_bytes,
                "photo_growth_bytes_per_s": round((last[1] - first[1]) / dt, 1),
                "oplog_growth_bytes_per_s": round((last[3] - first[3]) / dt, 1),
                **proj,
                "fits_a_day": proj["projected_24h_bytes"] <= K8S_DEFAULT_MAXMEMORY,
                "fits_a_day_here": (not limit) or proj["projected_24h_bytes"] <= limit,
                "other_keys_growth_bytes_per_s": round((last[4] - first[4]) / dt, 1),
                "by_prefix": prefixes,
            }
        return {
            "rate": sup.rate,
            "hacked_rate": sup.hacked_rate,
            "warmup_s": warmup,
            "duration_s": duration,
            "interval_s": interval,
            "restarts": sum(c.restarts for c in sup.children),
            "photo_ttl_s": ttl_s,
            "kubernetes_default_maxmemory": K8S_DEFAULT_MAXMEMORY,
            "projected_24h_bytes": max((s["projected_24h_bytes"] for s in stores.values()), default=0),
            "fits_a_day": bool(stores) and all(s["fits_a_day"] for s in stores.values()),
            "stores": stores,
        }
    finally:
        for r in clients.values():
            r.close()
        sup.stop()
        sup.cleanup()
