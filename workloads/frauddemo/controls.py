"""The demo's controls: the local keys (never replicated) through which the dashboard steers the
stack, and the only module that names them.

  fd:pause:<source>  on a target store: the link from <source> is partitioned (its syncer holds)
  fd:ctl             hash of local flags; field `hacked` = `paused` stops every hacked POS of the store
  fd:reset           a token that changes at every reset (readers of the event streams start over)

The syncer obeys the partition, the hacked POS its switch, and the API sets both and runs the reset
(a server-side function, `Store.reset`, in store.lua).
"""
from __future__ import annotations

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
