"""An independent Python replay of logged operations: the specification the Lua merge must match.

Tests replay op logs with it and compare the result, field by field, with what the stores hold.
The state has the shape of `Store.snapshot()`.
"""

from __future__ import annotations

from typing import Any

import msgpack

State = dict[Any, Any]  # key -> hash fields (with their ~tags), an (adds, removed) set, counter parts or bytes
Blobs = dict[str, bytes]


def _apply_h(state: State, key: str, fields: dict[bytes, Any], tag: bytes, delete: bool = False) -> None:
    h = state.setdefault(key, {})
    for f in fields:
        t = b"~" + f
        if t not in h or tag >= h[t]:  # equal tag: a later op of the same write
            if delete:
                h.pop(f, None)
            else:
                h[f] = fields[f]
            h[t] = tag


def apply_logged(state: State, op: list[Any], tag: bytes, blobs: Blobs | None = None) -> None:
    """`blobs`: key -> bytes of the blobs that "br" operations refer to (the bytes travel outside
    the op log); a reference to a blob not in it applies nothing (expired at its source)."""
    kind, key = op[0], op[1].decode()
    if kind == b"h":
        flat = op[2]
        _apply_h(state, key, dict(zip(flat[::2], flat[1::2])), tag)
    elif kind == b"hd":
        _apply_h(state, key, {f: None for f in op[2]}, tag, delete=True)
    elif kind == b"sa":
        adds, gone = state.get(key, ({}, frozenset()))
        if op[3] not in gone:
            adds = {**adds, op[3]: op[2]}
        state[key] = (adds, gone)
    elif kind == b"sr":
        adds, gone = state.get(key, ({}, frozenset()))
        state[key] = ({t: e for t, e in adds.items() if t not in op[2]}, gone | frozenset(op[2]))
    elif kind == b"c":
        parts = state.setdefault(key, {})
        if op[2] not in parts or int(op[3]) > int(parts[op[2]]):
            parts[op[2]] = op[3]
    elif kind == b"b":  # inline bytes (op logs of library versions before 16): set once
        state.setdefault(key, op[2])
    elif kind == b"br":  # by reference: set once, from the origin's bytes
        if blobs is not None and key in blobs:
            state.setdefault(key, blobs[key])
    else:
        raise ValueError(f"unknown operation {kind!r}")


def replay(entries_by_replica: dict[str, list[Any]], blobs: Blobs | None = None) -> State:
    """Apply raw op-log entries [(id, {b'c','s','o'})] of each replica; order between replicas is free.
    `blobs`: the bytes of referenced blobs (key -> bytes), as their origin stores hold them."""
    state: State = {}
    for replica, entries in entries_by_replica.items():
        for _id, fields in entries:
            tag = fields[b"c"] + b":" + replica.encode()
            for op in msgpack.unpackb(fields[b"o"], raw=True):
                apply_logged(state, op, tag, blobs)
    return {k: v for k, v in state.items() if not _empty(v)}


def _empty(v: Any) -> bool:
    """Redis holds no key for an empty hash or set, so neither does the model."""
    if isinstance(v, tuple):
        return not v[0] and not v[1]
    return isinstance(v, dict) and not v
