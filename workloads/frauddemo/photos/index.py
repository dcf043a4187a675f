"""The store-wide photo index: a return photo is checked against every photo the stores know of the
same customer, and against photos of anyone whose face hash is close, not only its own receipt's.

Built on the store's typed, replicated operations (store.py's `ops`), so it merges like everything else
and no entry is lost to a concurrent one at another store:
  s:pidx:cust:<customer>          add-wins set: every photo of the customer, "<sha256>|<tag>"
  s:pidx:face:<band>:<16 bits>    add-wins set: photos whose mirror-symmetric face hash
                                  (replay.face_hash) has these 16 bits in band 0..3
  b:pprint:<sha256>               immutable blob: the photo's replay print (replay.pack_print:
                                  fingerprint, eyes, face hash; ~5 KB), expiring with the photo
                                  (FRAUDDEMO_PHOTO_TTL): a replay of an expired photo is not found
A tag says where the photo was used: "p:<receipt>" (a purchase photo), "t:<attempt>" (a return photo).
The index only proposes candidates; the decision is the fingerprint match (replay.match_score, mirror-
aware), as for the receipt's own photos, or the same bytes under another tag (exact). The face hash
is a weak proposer (measured: a copy's hash moves 6-12 bits, so the 16-bit bands find only some); the
customer's own photos are always all checked, which is what catches a photo replayed on another
receipt of the same customer.
Entries are written by the detector: a purchase photo's membership when it reads the purchase event
(its print, and the detector's cached embedding, worked out then by a photo worker with room; else
when first needed), a return photo's membership, bands and print when it first
judges the attempt.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import redis

from ..store import Store, ops
from . import replay
from . import verify as ver

log = logging.getLogger("frauddemo.photos.index")
PHOTO_PREFIX = "b:photo:"  # the stored JPEG (storage.py's key)
PRINT_PREFIX = "b:pprint:"
BANDS = 4
MAX_CUSTOMER = 64  # candidates from the customer's own photos
MAX_FACE = 16  # candidates from close face hashes
FACE_MAX_BITS = 12  # a face-hash candidate further than this is not worth a match
OTHERS_DERIVED = 2  # prints of other people's photos derived per check (the customer's own: all)


def print_ttl_ms() -> int:
    """A print is a small picture of the customer: kept no longer than the photo itself."""
    from .storage import photo_ttl_ms

    return photo_ttl_ms()


def customer_key(customer: str) -> str:
    return f"s:pidx:cust:{customer}"


def band_keys(face_hash: int) -> list[str]:
    return [f"s:pidx:face:{b}:{(face_hash >> (16 * b)) & 0xFFFF:04x}" for b in range(BANDS)]


def add_ops(sha: str, tag: str, customer: str, face_hash: int | None = None, prnt: bytes | None = None) -> list:
    member = f"{sha}|{tag}"
    out = [ops.sadd(customer_key(customer), member)] if customer else []
    if face_hash is not None:
        out += [ops.sadd(k, member) for k in band_keys(face_hash)]
    if prnt is not None:
        out.append(ops.blob(PRINT_PREFIX + sha, prnt, ttl_ms=print_ttl_ms()))
    return out


def _members(stores: Mapping[str, Store], keys: list[str]) -> list[set[str]]:
    """Each key's elements, the union over the reachable stores."""
    out = [set() for _ in keys]
    for name, s in stores.items():
        try:
            pipe = s.r.pipeline(transaction=False)
            for k in keys:
                pipe.hvals(k)
            for acc, vals in zip(out, pipe.execute()):
                acc.update(v.decode() for v in vals)
        except (redis.RedisError, OSError) as e:
            log.warning("photo index at store %s: %s", name, e)
    return out


def _first(stores: Mapping[str, Store], keys: list[str]) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for s in stores.values():
        missing = [k for k in keys if k not in found]
        if not missing:
            break
        try:
            for k, v in zip(missing, s.r.mget(missing)):
                if v is not None:
                    found[k] = v
        except (redis.RedisError, OSError):
            continue
    return found


def prints(
    stores: Mapping[str, Store],
    shas: list[str],
    home: Store | None = None,
    cfg: ver.VerifyConfig = ver.VerifyConfig(),
    derive_max: int | None = None,
) -> dict[str, tuple]:
    """sha -> (fingerprint, eyes, face hash): stored prints, else derived from the stored photo (and
    written to `home`, once: the blob is immutable). A derivation is a full analysis (~11 ms): at most
    `derive_max` of them (None: all), the others are left out this time."""
    raw = _first(stores, [PRINT_PREFIX + s for s in shas])
    out, derive = {}, []
    for s in shas:
        try:
            out[s] = replay.unpack_print(raw[PRINT_PREFIX + s])
        except (KeyError, ValueError, TypeError):
            derive.append(s)
    derive = derive[:derive_max]
    photos = _first(stores, [PHOTO_PREFIX + s for s in derive])
    writes = []
    for s in derive:
        jpeg = photos.get(PHOTO_PREFIX + s)
        p = ver.replay_print(jpeg, cfg) if jpeg is not None else None
        if p is None:
            continue
        out[s] = replay.unpack_print(p)
        writes.append(print_writes(p, s))
    if writes and home is not None:
        try:
            home.write_many(writes)
        except Exception as e:  # a cache: the next judgement derives it again
            log.warning("photo prints not stored: %s", e)
    return out


def check(
    stores: Mapping[str, Store],
    sha: str,
    prnt: bytes | None,
    customer: str,
    own_tag: str,
    near_score: float,
    home: Store | None = None,
    cfg: ver.VerifyConfig = ver.VerifyConfig(),
    compared: frozenset[str] = frozenset(),
) -> dict | None:
    """The best earlier use of this photo (or of a copy of it) anywhere: {"replay": "exact"|"near",
    "replay_score", "replay_of": sha, "replay_tag": tag}, or None. `own_tag`: this attempt's entry;
    `compared`: photos the caller has already matched this one against (verify() does the receipt's
    purchase photo), not matched again: a match costs ~20 ms of CPU on the verdict's path."""
    fp, eyes, fhash = replay.unpack_print(prnt) if prnt else (None, None, None)
    keys = ([customer_key(customer)] if customer else []) + (band_keys(fhash) if fhash is not None else [])
    sets = _members(stores, keys) if keys else []
    cust = sets[0] if customer else set()
    face = set().union(*sets[1 if customer else 0 :]) if fhash is not None else set()
    tags: dict[str, str] = {}
    for m in sorted(cust | face):
        s, _, tag = m.partition("|")
        if tag == own_tag:
            continue
        if s == sha:
            return {"replay": "exact", "replay_score": 1.0, "replay_of": s, "replay_tag": tag}
        if s not in compared:
            tags.setdefault(s, tag)
    if fp is None:
        return None
    mine = sorted({m.partition("|")[0] for m in cust} & set(tags))[:MAX_CUSTOMER]
    others = [s for s in tags if s not in mine]
    got = prints(stores, mine, home, cfg)
    if fhash is not None and others:
        # Other people's photos only ever propose a candidate: a print missing here (a purchase photo
        # the detector had no room to describe) costs a full analysis on the verdict's path, so only
        # a few are derived per check (and stored, so never twice); the others wait for a later one.
        op = prints(stores, others[: MAX_FACE * 4], home, cfg, derive_max=OTHERS_DERIVED)
        near = sorted((replay.hamming(fhash, h), s) for s, (_, _, h) in op.items() if h is not None)
        for d, s in near[:MAX_FACE]:
            if d <= FACE_MAX_BITS:
                got[s] = op[s]
    best = None
    for s, (efp, eeyes, _) in got.items():
        if len(efp) != len(fp):
            continue
        score = replay.match_score(fp, efp, eyes, eeyes)
        if best is None or score > best["replay_score"]:
            best = {"replay": "near", "replay_score": round(score, 4), "replay_of": s, "replay_tag": tags[s]}
    return best if best is not None and best["replay_score"] >= near_score else None


def index_purchase_events(store: Store, entries) -> list[str]:
    """Index the purchase photos of these purchase events (read from `store`, written to it); returns
    the photos indexed (sha256)."""
    rids = [f[b"rcpt"].decode() for _, f in entries if f and f.get(b"rcpt")]
    if not rids:
        return []
    try:
        pipe = store.r.pipeline(transaction=False)
        for rid in rids:
            pipe.hmget(f"h:rcpt:{rid}", "photo", "customer")
        found = [(rid, p.decode(), c.decode()) for rid, (p, c) in zip(rids, pipe.execute()) if p and c]
        if found:
            store.write_many([add_ops(sha, f"p:{rid}", c) for rid, sha, c in found])
        return [sha for _, sha, _ in found]
    except Exception as e:  # evidence only: the judge also indexes a receipt's photo when it is returned
        log.warning("purchase photos not indexed at store %s: %s", store.replica, e)
        return []


def unprinted(store: Store, shas: list[str]) -> dict[str, bytes]:
    """Of these photos, those whose print is not stored yet: sha -> the photo's bytes (from `store`)."""
    if not shas:
        return {}
    printed = store.r.mget([PRINT_PREFIX + s for s in shas])
    todo = [s for s, p in zip(shas, printed) if p is None]
    photos = store.r.mget([PHOTO_PREFIX + s for s in todo]) if todo else []
    return {s: p for s, p in zip(todo, photos) if p is not None}


def print_writes(prnt: bytes | None, sha: str) -> list:
    """The write storing a photo's print (none for a photo that could not be decoded)."""
    return [ops.blob(PRINT_PREFIX + sha, prnt, ttl_ms=print_ttl_ms())] if prnt is not None else []


def judge_hook(stores: Mapping[str, Store], todo, out: dict, cfg: ver.VerifyConfig) -> None:
    """For the detector: each newly verified return photo (`todo`: (attempt, story); `out`: attempt id
    -> photo verdict dict) is checked against the store-wide index and recorded in it at the attempt's
    store. A store-wide replay found here raises the verdict's `replay` (never lowers it)."""
    for a, story in todo:
        p = out.get(a.id)
        if not p:
            continue
        prnt = p.pop("print", None)
        home = stores.get(a.store)
        try:
            bought = story.receipt.photo if story.receipt is not None else None
            seen = frozenset([bought]) if bought and p.get("replay_score") is not None else frozenset()
            hit = check(stores, a.photo, prnt, a.customer, f"t:{a.id}", cfg.near_copy_score, home, cfg, seen)
            if hit and (p.get("replay") is None or (hit["replay"] == "exact" and p.get("replay") == "near")):
                p.update(hit)
                p["replay_scope"] = "same receipt" if hit["replay_tag"] == f"p:{a.receipt}" else "store-wide"
            if home is not None:
                fhash = replay.unpack_print(prnt)[2] if prnt else None
                w = [add_ops(a.photo, f"t:{a.id}", a.customer, fhash)]
                if story.receipt is not None and story.receipt.photo:
                    w.append(add_ops(story.receipt.photo, f"p:{story.receipt.id}", story.receipt.customer))
                if prnt:  # its own write: a blob already stored (same photo, same print) is no error
                    w.append([ops.blob(PRINT_PREFIX + a.photo, prnt, ttl_ms=print_ttl_ms())])
                home.write_many([x for x in w if x])
        except Exception as e:  # the index is evidence, never a reason to leave an attempt unjudged
            log.warning("photo index for attempt %s: %s", a.id, e)
