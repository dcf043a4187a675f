"""GET /api/events: server-sent events, one XREAD loop per store tailing its event streams."""

from __future__ import annotations

import asyncio
import json

import redis
import redis.asyncio as aioredis
from fastapi import Request

from .schemas import STREAM_OF


async def event_stream(request: Request, demo, wanted: set[str]):
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
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            yield f"event: {kind}\ndata: {json.dumps(ev)}\n\n"
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
