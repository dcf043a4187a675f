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
judges the attempt. The check's store reads (`gather`) run in the detector's process, its matches
(`match`: ~1.5 ms each on one core, an analysis first where a print is missing) in its photo workers,
split among them, so one verdict's matches run side by side and off the process that reads events
(a check with only a few cheap matches runs them itself: INLINE_MS).
"""

from __future__ import annotations

import concurrent.futures
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


# What a candidate brings to the match (index.match): its stored print, or the photo itself when no
# print is stored yet (a purchase photo the detector had no room to describe), the print then derived
# where the match runs; OTHER: another person's photo, matched only if its face hash is close.
PRINT, PHOTO, OTHER = "print", "photo", "other"
_COST_MS = {PRINT: 1.5, PHOTO: 12.0, OTHER: 12.0}  # on one core: a match; an analysis and a match
# A check whose matches cost less than this in all runs them itself: a task in the workers waits its
# turn behind every verification handed to them meanwhile, which under load costs more than a few matches.
INLINE_MS = 6.0


def gather(
    stores: Mapping[str, Store],
    sha: str,
    prnt: bytes | None,
    customer: str,
    own_tag: str,
    compared: frozenset[str] = frozenset(),
) -> tuple[dict | None, dict[str, str], list[tuple[str, str, bytes]]]:
    """The store reads of a check: (an exact hit or None, tag per candidate photo, candidates as
    (sha, PRINT | PHOTO | OTHER, bytes)). `compared`: photos already matched against (left out)."""
    fp, _, fhash = replay.unpack_print(prnt) if prnt else (None, None, None)
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
            return {"replay": "exact", "replay_score": 1.0, "replay_of": s, "replay_tag": tag}, {}, []
        if s not in compared:
            tags.setdefault(s, tag)
    if fp is None:
        return None, {}, []
    mine = sorted({m.partition("|")[0] for m in cust} & set(tags))[:MAX_CUSTOMER]
    own = set(mine)
    others = [s for s in tags if s not in own][: MAX_FACE * 4] if fhash is not None else []
    raw = _first(stores, [PRINT_PREFIX + s for s in mine + others])
    out, derive_mine, derive_others, near = [], [], [], []
    for s in mine + others:
        try:
            h = replay.unpack_print(raw[PRINT_PREFIX + s])[2]
        except (KeyError, ValueError, TypeError):
            (derive_mine if s in own else derive_others).append(s)
            continue
        if s in own:
            out.append((s, PRINT, raw[PRINT_PREFIX + s]))
        elif h is not None and (d := replay.hamming(fhash, h)) <= FACE_MAX_BITS:
            near.append((d, s))
    out += [(s, PRINT, raw[PRINT_PREFIX + s]) for _, s in sorted(near)[:MAX_FACE]]
    # Other people's photos only ever propose a candidate: a missing print costs an analysis, so only
    # a few are derived per check (and stored, so never twice); the others wait for a later check.
    derive = [(s, PHOTO) for s in derive_mine] + [(s, OTHER) for s in derive_others[:OTHERS_DERIVED]]
    photos = _first(stores, [PHOTO_PREFIX + s for s, _ in derive])
    out += [(s, kind, photos[PHOTO_PREFIX + s]) for s, kind in derive if PHOTO_PREFIX + s in photos]
    return None, tags, out


def match(prnt: bytes, candidates: list[tuple[str, str, bytes]], cfg: ver.VerifyConfig = ver.VerifyConfig()):
    """The CPU of a check, run in a photo worker: the best (score, sha) of these candidates for the
    photo of print `prnt` (None when none could be matched), and the prints derived on the way
    (sha -> print) for the caller to store."""
    fp, eyes, fhash = replay.unpack_print(prnt)
    best, derived = None, {}
    for s, kind, data in candidates:
        if kind != PRINT:
            data = ver.replay_print(data, cfg)
            if data is None:
                continue
            derived[s] = data
        efp, eeyes, h = replay.unpack_print(data)
        if kind == OTHER and (fhash is None or h is None or replay.hamming(fhash, h) > FACE_MAX_BITS):
            continue
        score = replay.match_score(fp, efp, eyes, eeyes)
        if best is None or score > best[0]:
            best = (score, s)
    return best, derived


def _split(candidates: list, parts: int) -> list[list]:
    """Candidates in at most `parts` chunks of about equal cost, each worth a task in a worker
    (INLINE_MS); none when all of them together are not."""
    cost = sum(_COST_MS[k] for _, k, _ in candidates)
    n = min(parts, int(cost // INLINE_MS))
    chunks, load = [[] for _ in range(n)], [0.0] * n
    for c in sorted(candidates, key=lambda c: -_COST_MS[c[1]]) if n else ():
        i = load.index(min(load))
        chunks[i].append(c)
        load[i] += _COST_MS[c[1]]
    return [c for c in chunks if c]


def _inline(fn, *args) -> concurrent.futures.Future:
    f = concurrent.futures.Future()
    try:
        f.set_result(fn(*args))
    except Exception as e:
        f.set_exception(e)
    return f


class Check:
    """One photo's check against the store-wide index: made, it has read the stores and handed its
    matches to `submit` (a process pool's, in up to `parts` tasks; a few cheap ones run here at once);
    `result` waits for them and stores the prints derived on the way (at `home`)."""

    def __init__(
        self,
        stores: Mapping[str, Store],
        sha: str,
        prnt: bytes | None,
        customer: str,
        own_tag: str,
        cfg: ver.VerifyConfig = ver.VerifyConfig(),
        compared: frozenset[str] = frozenset(),
        submit=_inline,
        parts: int = 1,
    ):
        self.hit, self.tags, candidates = gather(stores, sha, prnt, customer, own_tag, compared)
        chunks = _split(candidates, parts)
        if candidates and not chunks:
            chunks, submit = [candidates], _inline
        self.futures = [submit(match, prnt, c, cfg) for c in chunks]

    def result(self, near_score: float, home: Store | None = None) -> dict | None:
        if self.hit is not None:
            return self.hit
        best, writes = None, []
        for f in self.futures:
            got, derived = f.result()
            writes += [print_writes(p, s) for s, p in derived.items()]
            if got is not None and (best is None or got[0] > best[0]):
                best = got
        if writes and home is not None:
            try:
                home.write_many(writes)
            except Exception as e:  # a cache: the next check derives them again
                log.warning("photo prints not stored: %s", e)
        if best is None or best[0] < near_score:
            return None
        return {
            "replay": "near",
            "replay_score": round(best[0], 4),
            "replay_of": best[1],
            "replay_tag": self.tags[best[1]],
        }


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
    purchase photo), not matched again. Inline; the detector runs the matches in its photo workers."""
    return Check(stores, sha, prnt, customer, own_tag, cfg, compared).result(near_score, home)


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


def judge_hook(
    stores: Mapping[str, Store], todo, out: dict, cfg: ver.VerifyConfig, submit=_inline, parts: int = 1
) -> None:
    """For the detector: each newly verified return photo (`todo`: (attempt, story); `out`: attempt id
    -> photo verdict dict) is checked against the store-wide index and recorded in it at the attempt's
    store. A store-wide replay found here raises the verdict's `replay` (never lowers it). Every
    check's matches are handed to `submit` (in up to `parts` tasks each) before any is waited for."""
    checks = []
    for a, story in todo:
        p = out.get(a.id)
        if not p:
            continue
        prnt = p.pop("print", None)
        try:
            bought = story.receipt.photo if story.receipt is not None else None
            seen = frozenset([bought]) if bought and p.get("replay_score") is not None else frozenset()
            c = Check(stores, a.photo, prnt, a.customer, f"t:{a.id}", cfg, seen, submit, parts)
        except Exception as e:  # the index is evidence, never a reason to leave an attempt unjudged
            log.warning("photo index for attempt %s: %s", a.id, e)
            c = None
        checks.append((a, story, p, prnt, c))
    for a, story, p, prnt, c in checks:
        home = stores.get(a.store)
        try:
            hit = c.result(cfg.near_copy_score, home) if c is not None else None
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
