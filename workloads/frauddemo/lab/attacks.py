"""The lab's hacked tills: the photo each attack presents at the till, written once for the benches and
chaos (the receipt each attack returns is the caller's: a bench plans them, chaos picks them live).

Sources of a photo:
  purchase  the receipt's own purchase photo, sent back (a replay)
  other     someone else's face
  capture   a fresh capture of whoever stands at the till: the attack is the receipt, not the photo
            (an unknown receipt's capture may be nobody's: None)
"""

from __future__ import annotations

from collections.abc import Callable

from ..attack_modes import AttackMode

Photo = bytes | None | Callable[[], bytes | None]

PRESENTS: dict[AttackMode, str | None] = {
    AttackMode.NO_PHOTO: None,
    AttackMode.MISMATCHED_PHOTO: "other",
    AttackMode.REPLAYED_PHOTO: "purchase",
    AttackMode.DOUBLE_RETURN_SAME_STORE: "capture",
    AttackMode.DOUBLE_RETURN_OTHER_STORE: "capture",
    AttackMode.UNKNOWN_RECEIPT: "capture",
    AttackMode.WINDOW_RACE: "capture",
    AttackMode.PARTITION: "capture",
}


def attack_photo(mode: str, *, purchase: Photo = None, other: Photo = None, capture: Photo = None) -> bytes | None:
    """The photo the hacked till presents for `mode` (an AttackMode or its name). Each source is the
    bytes, None, or a function giving them, called only when `mode` uses that source."""
    source = PRESENTS[AttackMode(mode)]
    value = {None: None, "purchase": purchase, "other": other, "capture": capture}[source]
    return value() if callable(value) else value
