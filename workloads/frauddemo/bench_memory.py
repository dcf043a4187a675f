"""`frauddemo bench memory`: how fast the stores' memory grows at the demo's default rate.

Runs `frauddemo up`'s stack as the demo does (two stores, both POS at the default rate, the hacked
POS, syncers, the detector), samples every store's INFO used_memory, and fits a line through the
samples taken after the warm-up: its slope is the growth in bytes a second, reported per hour and per
day beside the store's maxmemory. The op log's size (MEMORY USAGE fd:log) and the photos' (b:photo:*)
are reported too, to say where the memory goes.
"""
from __future__ import annotations

import statistics
import time

import redis

from .local import Supervisor
from .servers import free_port


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


def run(duration: float = 300.0, warmup: float = 30.0, interval: float = 5.0, rate: float | None = None,
        hacked_rate: float | None = None, log=lambda m: None) -> dict:
    kw = {}
    if rate is not None:
        kw["rate"] = rate
    if hacked_rate is not None:
        kw["hacked_rate"] = hacked_rate
    sup = Supervisor(["a", "b"], port=free_port(), headless=True, **kw)
    clients: dict[str, redis.Redis] = {}
    samples: dict[str, list[tuple[float, float]]] = {}
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
            time.sleep(max(0.0, min(interval, end - time.monotonic())))
        stores = {}
        for n, r in clients.items():
            pts = samples.get(n, [])
            per_s = slope(pts)
            limit = int(r.config_get("maxmemory")["maxmemory"])
            used = int(r.info("memory")["used_memory"])
            photos, photo_bytes = _photos(r)
            stores[n] = {
                "samples": len(pts), "used_memory_first": int(pts[0][1]) if pts else None,
                "used_memory_last": int(pts[-1][1]) if pts else None,
                "growth_bytes_per_s": round(per_s, 1), "growth_bytes_per_hour": round(per_s * 3600),
                "growth_bytes_per_day": round(per_s * 86400), "maxmemory": limit,
                "hours_to_maxmemory": round((limit - used) / (per_s * 3600), 1) if limit and per_s > 0 else None,
                "oplog_entries": r.xlen("fd:log"), "oplog_bytes": r.memory_usage("fd:log", samples=0) or 0,
                "photos": photos, "photo_bytes": photo_bytes,
            }
        return {"rate": sup.rate, "hacked_rate": sup.hacked_rate, "warmup_s": warmup, "duration_s": duration,
                "interval_s": interval, "restarts": sum(c.restarts for c in sup.children), "stores": stores}
    finally:
        for r in clients.values():
            r.close()
        sup.stop()
        sup.cleanup()
