"""The demo's controls: the local keys (never replicated) through which the dashboard steers the
stack, and the only module that names them.

  fd:pause:<source>  on a target store: the link from <source> is partitioned (its syncer holds)
  fd:ctl             hash of local flags; field `hacked` = `paused` stops every hacked POS of the store
  fd:reset           a token that changes at every reset (readers of the event streams start over)

The syncer obeys the partition, the hacked POS its switch, and the API sets both and runs the reset
(a server-side function, `Store.reset`, in store.lua).
"""

from __future__ import annotations

import random
import time

CONTROL_KEY = "fd:ctl"
HACKED_FIELD = "hacked"
HACKED_PAUSED = "paused"
RESET_KEY = "fd:reset"


def pause_key(source: str) -> str:
    """Set on a target store to partition the link from `source` (local, never replicated)."""
    return f"fd:pause:{source}"


# Each function takes a store (store.Store) and talks to its local keys only.


def partitioned_from(store, source: str) -> bool:
    """The link from `source` into `store` is partitioned on demand."""
    return bool(store.r.exists(pause_key(source)))


def set_partition(store, source: str, on: bool) -> None:
    """Partition (on) or heal the link from `source` into `store`."""
    if on:
        store.r.set(pause_key(source), "1")
    else:
        store.r.delete(pause_key(source))


def hacked_paused(store) -> bool:
    """The store's hacked POS are switched off."""
    return store.r.hget(CONTROL_KEY, HACKED_FIELD) == HACKED_PAUSED.encode()


def set_hacked(store, running: bool) -> None:
    """Switch the store's hacked POS on (running) or off."""
    if running:
        store.r.hdel(CONTROL_KEY, HACKED_FIELD)
    else:
        store.r.hset(CONTROL_KEY, HACKED_FIELD, HACKED_PAUSED)


def reset_token(store) -> str:
    """The store's current reset token ('' before its first reset)."""
    v = store.r.get(RESET_KEY)
    return v.decode() if isinstance(v, bytes) else (v or "")


# -- the reset ---------------------------------------------------------------------------------------
RESET_CONFIRM_S = 5.0  # how long every syncer has to confirm the partition before a reset


class ResetRefused(Exception):
    """A syncer did not confirm the partition in time: nothing was reset (try again later)."""


def reset_stores(stores: dict) -> dict:
    """Delete the demo's data at every store (`stores`: name -> store.Store, every store of the demo).
    Deletes do not replicate, so every link is partitioned first and each syncer must confirm it holds;
    each store is wiped in one atomic call (Store.reset) that also reads its op-log position; every
    peer's checkpoint is moved to that position (what was logged before the reset is never replayed);
    and each link goes back to the state it was in. ResetRefused when a syncer does not confirm."""
    pairs = [(t, s) for t in stores for s in stores if s != t]
    paused_before = {(t, s): partitioned_from(stores[t], s) for t, s in pairs}
    reported = {(t, s): int(stores[t].link_status(s).get("updated_ms", 0)) for t, s in pairs}
    for t, s in pairs:
        set_partition(stores[t], s, True)
    try:
        deadline = time.monotonic() + RESET_CONFIRM_S
        waiting = list(pairs)
        while waiting:
            waiting = [(t, s) for t, s in waiting if not _holds(stores[t].link_status(s), reported[(t, s)])]
            if waiting and time.monotonic() > deadline:
                names = ", ".join(f"{s}->{t}" for t, s in waiting)
                raise ResetRefused(
                    f"link {names} did not confirm the partition within {RESET_CONFIRM_S:g} s "
                    "(is its syncer running?); nothing was reset"
                )
            if waiting:
                time.sleep(0.05)
        token = f"{int(time.time() * 1000)}-{random.getrandbits(32):08x}"
        deleted = {}
        for name, st in stores.items():
            deleted[name], epoch, seq, sid = st.reset(RESET_KEY, token)
            for t in stores:  # what `name` logged before its reset is never replayed at `t`
                if t != name:
                    stores[t].move_checkpoint(name, epoch, seq, sid)
    finally:
        for t, s in pairs:
            if not paused_before[(t, s)]:
                set_partition(stores[t], s, False)
    return {"reset": True, "deleted_keys": deleted, "link": "partitioned" if any(paused_before.values()) else "up"}


def _holds(link: dict, last_ms: int) -> bool:
    """The link's syncer reported itself partitioned, in a report newer than `last_ms` (the last one
    before the partition): it is holding, so no merge of its is in flight."""
    return link.get("state") == "partitioned" and int(link.get("updated_ms", 0)) > last_ms
