"""A steady writer of replicated purchases, printing what replication does with them.

It is what `frauddemo up` runs until the POS simulators exist, and a quick way to watch the links.
"""
from __future__ import annotations

import itertools
import logging
import random
import threading
import time

import redis

from . import ids
from .config import StoreRef
from .storeset import StoreSet
from .store import ops

log = logging.getLogger("frauddemo.load")

CATALOGUE = {"shirt": 2999, "jeans": 5999, "jacket": 12999, "shoes": 8999, "scarf": 1999}


def purchase_ops(store: str, rng: random.Random) -> tuple[str, list]:
    receipt = ids.new_id("r")
    item = rng.choice(list(CATALOGUE))
    return receipt, [
        ops.hset(f"h:purchase:{receipt}", {
            "receipt": receipt, "store": store, "customer": f"cust-{rng.randrange(1000):04d}",
            "item": item, "amount_cents": CATALOGUE[item], "ts_ms": int(time.time() * 1000)}),
        ops.incr(f"c:tx:{store}:purchase"),
    ]


def run(refs: list[StoreRef], rate: float, stop: threading.Event, print_every: float = 2.0,
        out=print) -> int:
    """Write `rate` purchases per second, round-robin over the stores, until `stop` is set."""
    stores = StoreSet(refs)
    rng = random.Random()
    written = 0
    next_print = time.monotonic() + print_every
    interval = 1.0 / rate if rate > 0 else None
    names = itertools.cycle([r.name for r in refs])
    deadline = time.monotonic()
    while not stop.is_set():
        if interval is not None:
            name = next(names)
            try:
                stores.get(name).write(purchase_ops(name, rng)[1])
                written += 1
            except (redis.RedisError, OSError) as e:
                log.warning("purchase at store %s failed: %s", name, e)
                stores.drop(name)
            deadline += interval
        else:
            deadline += print_every
        if time.monotonic() >= next_print:
            next_print += print_every
            out(status_line(stores.status(), written))
        stop.wait(max(0.0, deadline - time.monotonic()))
    stores.close()
    return written


def status_line(st: dict, written: int) -> str:
    parts = [f"purchases written {written}"]
    for l in st["links"]:
        parts.append(f"{l['source']}->{l['target']} {l['state']} lag {l['lag_ms']:.2f} ms backlog {l['backlog']}")
    down = [n for n, s in st["stores"].items() if not s["up"]]
    if down:
        parts.append("down: " + ",".join(down))
    return " | ".join(parts)
