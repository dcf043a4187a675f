"""Operation builders for the store (pure: no I/O, no redis).

An operation is a small list in the "origin form" the store's Lua library (`store.lua`) decodes:
its first element names the operation, the second the key. Keys carry their CRDT type as a prefix.
`frauddemo.store` re-exports `ops`; writes go through `Store.write`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeAlias

Value: TypeAlias = "str | bytes | int | float"
"""What the store keeps as a field value or set element (encoded by `_s`; bool is refused)."""

OpPart: TypeAlias = "str | bytes | int | list[bytes]"
Op: TypeAlias = "list[OpPart]"
"""One operation: [code, key, ...arguments]."""


def _s(v: Value) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode()
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return repr(v).encode()
    raise TypeError(f"store values are str, bytes or numbers, not {type(v).__name__}")


class ops:
    """Operation builders (origin form). Keys carry their CRDT type as a prefix."""

    @staticmethod
    def hset(key: str, mapping: Mapping[str, Value]) -> Op:
        """Last-writer-wins fields, by (HLC, replica id)."""
        _prefix(key, "h:")
        if not mapping:
            raise ValueError("hset needs at least one field")
        flat: list[bytes] = []
        for k, v in mapping.items():
            flat += (_field(k), _s(v))
        return ["h", key, flat]

    @staticmethod
    def hcreate(key: str, mapping: Mapping[str, Value]) -> Op:
        """A write's first operation only: skip the whole write when `key` already exists at this
        store (exactly-once creation, e.g. of a verdict or an alert), else set like `hset`."""
        return ["hn"] + ops.hset(key, mapping)[1:]

    @staticmethod
    def hknown(key: str, field: str, set_key: str) -> Op:
        """The store itself sets `field` (its name starts with '@', which clients cannot write) to what it
        holds of the add-wins set `set_key` at commit: its distinct elements, sorted, comma-separated.
        Logged as a plain field write, so every replica learns what this store knew then."""
        _prefix(key, "h:")
        _prefix(set_key, "s:")
        if not field.startswith("@") or len(field) < 2:
            raise ValueError(f"a store-recorded field starts with '@': {field!r}")
        return ["hk", key, field, set_key]

    @staticmethod
    def event(stream: str, mapping: Mapping[str, Value]) -> Op:
        """Append to this store's local event stream `fd:ev:<name>` (never replicated); the event
        gets the write's clock as field `c`."""
        if not isinstance(stream, str) or not stream.startswith("fd:ev:"):
            raise ValueError(f"event stream {stream!r} must start with 'fd:ev:'")
        flat: list[bytes] = []
        for k, v in mapping.items():
            flat += (_s(k), _s(v))
        return ["e", stream, flat]

    @staticmethod
    def hdel(key: str, fields: Iterable[str]) -> Op:
        _prefix(key, "h:")
        return ["hd", key, [_field(f) for f in fields]]

    @staticmethod
    def sadd(key: str, element: Value) -> Op:
        """Add-wins set: every add has a unique tag, a remove only removes the tags it saw."""
        _prefix(key, "s:")
        return ["sa", key, _s(element)]

    @staticmethod
    def srem(key: str, element: Value) -> Op:
        _prefix(key, "s:")
        return ["sr", key, _s(element)]

    @staticmethod
    def incr(key: str, delta: int = 1) -> Op:
        """Counter: per-replica monotone parts (positive and negative), summed on read."""
        _prefix(key, "c:")
        if not isinstance(delta, int) or delta == 0:
            raise ValueError("counter delta must be a non-zero int")
        return ["c", key, delta]

    @staticmethod
    def blob(key: str, value: bytes, ttl_ms: int | None = None) -> Op:
        """Immutable content-addressed value: set once, never overwritten."""
        _prefix(key, "b:")
        head: Op = ["b", key, _s(value)]
        return head + ([int(ttl_ms)] if ttl_ms else [])


def _field(name: Value) -> bytes:
    raw = _s(name)
    if not raw or raw.startswith(b"~"):
        raise ValueError(f"field name {raw!r} must be non-empty and not start with '~' (tags use it)")
    if raw.startswith(b"@"):
        raise ValueError(f"field name {raw!r} starts with '@': only the store writes those (ops.hknown)")
    return raw


def _prefix(key: str, want: str) -> None:
    if not isinstance(key, str) or not key.startswith(want) or len(key) <= len(want):
        raise ValueError(f"key {key!r} must start with {want!r}")
