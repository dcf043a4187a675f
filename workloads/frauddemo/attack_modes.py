"""The one vocabulary of the hacked till's attacks: the POS, the benches, chaos and the CRD all use it.

no-photo                  skips the camera
mismatched-photo          someone else's face
replayed-photo            the purchase photo sent back as the return photo
double-return-same-store  a receipt already refunded at this store, again (the customer colludes)
double-return-other-store a receipt already refunded at another store, again
unknown-receipt           a receipt no store ever issued
window-race               a return at a peer store by an accomplice, then the same receipt here at once,
                          inside the replication window (needs a peer store)
partition                 the same, while the stores are partitioned (needs a peer store)
"""

from __future__ import annotations

import enum


class AttackMode(enum.StrEnum):
    NO_PHOTO = "no-photo"
    MISMATCHED_PHOTO = "mismatched-photo"
    REPLAYED_PHOTO = "replayed-photo"
    DOUBLE_RETURN_SAME_STORE = "double-return-same-store"
    DOUBLE_RETURN_OTHER_STORE = "double-return-other-store"
    UNKNOWN_RECEIPT = "unknown-receipt"
    WINDOW_RACE = "window-race"
    PARTITION = "partition"

    @property
    def needs_peer(self) -> bool:
        """An accomplice returns the same receipt at a peer store first."""
        return self in PEER_MODES

    @property
    def crd_key(self) -> str:
        """Its key in the FraudDemo resource's attackMix (camelCase): double-return-other-store ->
        doubleReturnOtherStore."""
        head, *rest = self.value.split("-")
        return head + "".join(w.capitalize() for w in rest)


PEER_MODES = frozenset({AttackMode.WINDOW_RACE, AttackMode.PARTITION})

# older names still accepted, each with the mode it now means (callers warn when one is used)
DEPRECATED_ALIASES: dict[str, AttackMode] = {"duplicate-receipt": AttackMode.DOUBLE_RETURN_OTHER_STORE}
DEPRECATED_CRD_KEYS: dict[str, AttackMode] = {"duplicateReceipt": AttackMode.DOUBLE_RETURN_OTHER_STORE}


def parse_mode(name: str) -> AttackMode:
    """A mode from its name or a deprecated alias; ValueError names the valid ones."""
    if name in DEPRECATED_ALIASES:
        return DEPRECATED_ALIASES[name]
    try:
        return AttackMode(name)
    except ValueError:
        raise ValueError(f"unknown attack mode {name!r}: one of {', '.join(AttackMode)}") from None


def from_crd_key(key: str) -> AttackMode:
    """A mode from its attackMix key (camelCase) or a deprecated one; ValueError names the valid ones."""
    if key in DEPRECATED_CRD_KEYS:
        return DEPRECATED_CRD_KEYS[key]
    for m in AttackMode:
        if m.crd_key == key:
            return m
    raise ValueError(f"unknown attackMix key {key!r}: one of {', '.join(m.crd_key for m in AttackMode)}")
