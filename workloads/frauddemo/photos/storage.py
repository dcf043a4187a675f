"""Photos in the stores: JPEG by content hash; embeddings derived where they are needed.

Keys:
  b:photo:<sha256 of the JPEG>   the JPEG itself, at most `PhotoPolicy.max_bytes`: an immutable,
                                 content-addressed blob (the store checks the hash and refuses other
                                 bytes under an existing key), replicated by reference
  b:emb:<sha256 of the JPEG>     `verify.Embedding` bytes, written by versions before embeddings were
                                 derived by their readers; still read when present, never written
A till never writes an embedding (a compromised till could otherwise pair a purchase photo with
someone else's face): whoever compares faces derives the embedding from the stored photo, and keeps
it in a small in-process cache. Photos expire after the retention TTL ($FRAUDDEMO_PHOTO_TTL, default
30 min: `photo_ttl_ms`); an expired photo reads as None, shown as "photo expired" by the API. A photo
uploaded in another format, or larger than the policy allows, is re-encoded as a JPEG first, so the
key is always the hash of the stored bytes.

Thumbnails are generated from the stored JPEG when asked for and cached in this process for a short
while; they are never written to a store. Listings carry `ref()` dictionaries, never photo bytes.
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
import time
from collections import OrderedDict

import cv2

from ..store import Store, ops
from . import decode as dec
from . import replay
from . import verify as ver
from .decode import PhotoRejected

PHOTO_PREFIX = "b:photo:"
EMB_PREFIX = "b:emb:"
DAY_MS = 24 * 3600 * 1000
HOUR_MS = 3600 * 1000
PHOTO_TTL_ENV = "FRAUDDEMO_PHOTO_TTL"
# How long a photo is kept (every store: the TTL set at the photo's origin travels with the blob, as the
# remaining PTTL, when a syncer copies it). Sized in hours for the demo: photos are ~80 % of a store's
# growth (~50 KB each, ~160 KB/s per store at the default rate), so their retention decides whether a
# day of the default rate fits the store's maxmemory (docs/benchmarks.md: bench memory): 30 min of photos
# is ~285 MB of the 2.25 GiB. Receipts outlive their photos: a return after the photo
# expired is judged without a face match ("purchase photo expired").
DEFAULT_PHOTO_TTL_MS = 30 * 60_000
_UNITS_MS = {"": 1000, "s": 1000, "m": 60_000, "h": HOUR_MS, "d": DAY_MS}


def parse_ttl(text: str) -> int:
    """'90m', '6h', '1d', '45s' or plain seconds ('3600') -> milliseconds (ValueError otherwise)."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", str(text).lower())
    if not m or int(m.group(1)) <= 0:
        raise ValueError(f"{PHOTO_TTL_ENV}={text!r}: give a duration > 0, e.g. 3600, 90m, 6h or 1d")
    return int(m.group(1)) * _UNITS_MS[m.group(2)]


def photo_ttl_ms() -> int:
    """The photo retention: $FRAUDDEMO_PHOTO_TTL, else DEFAULT_PHOTO_TTL_MS."""
    raw = os.environ.get(PHOTO_TTL_ENV, "").strip()
    return parse_ttl(raw) if raw else DEFAULT_PHOTO_TTL_MS


def describe_ttl(ms: int) -> str:
    """A retention for people: '1 h', '90 min', '45 s'."""
    for unit, size in (("d", DAY_MS), ("h", HOUR_MS), ("min", 60_000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size} {unit}"
    return f"{ms / 1000:g} s"


@dataclasses.dataclass(frozen=True)
class PhotoPolicy:
    max_bytes: int = 1024 * 1024  # per stored JPEG; a 640x480 POS frame is ~60 KB
    max_side: int = 1280  # larger photos are scaled down before storing
    retention_ms: int = dataclasses.field(default_factory=photo_ttl_ms)  # FRAUDDEMO_PHOTO_TTL
    jpeg_quality: int = 90
    thumb_side: int = 160
    thumb_cache_s: float = 300.0
    thumb_cache_entries: int = 256
    analysis_cache_entries: int = 1024  # embeddings (or "no usable face") by photo hash, ~1 KB each


@dataclasses.dataclass(frozen=True)
class StoredPhoto:
    sha256: str
    size: int
    width: int
    height: int
    embedding: ver.Embedding | None  # None when the photo has no usable face
    rejected: str | None  # why there is no embedding
    reencoded: bool

    def ref(self) -> dict:
        return photo_ref(self.sha256)


def photo_ref(sha: str) -> dict:
    """What listings and events carry instead of a photo."""
    return {
        "sha256": sha,
        "photo": f"{PHOTO_PREFIX}{sha}",
        "url": f"/api/photos/{sha}",
        "thumbnail_url": f"/api/photos/{sha}/thumbnail",
    }


def normalise(
    data: bytes, policy: PhotoPolicy | None = None, limits: dec.Limits = dec.Limits()
) -> tuple[bytes, int, int, bool]:
    """The JPEG to store: the upload itself when it is a JPEG within the policy, else re-encoded."""
    policy = policy or PhotoPolicy()
    info = dec.check(data, limits)
    if info.format == "jpeg" and len(data) <= policy.max_bytes and max(info.width, info.height) <= policy.max_side:
        return bytes(data), info.width, info.height, False
    img, _ = dec.decode(data, limits)
    h, w = img.shape[:2]
    k = min(1.0, policy.max_side / max(h, w))
    if k < 1.0:
        img = cv2.resize(img, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)
    for q in (policy.jpeg_quality, 80, 70, 60):
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
        if ok and len(buf) <= policy.max_bytes:
            return buf.tobytes(), img.shape[1], img.shape[0], True
    raise PhotoRejected(dec.TOO_LARGE, f"still over {policy.max_bytes} bytes as a JPEG")


class PhotoStore:
    """Photo storage on one store (replication to the others is the store layer's job)."""

    def __init__(self, store: Store, policy: PhotoPolicy | None = None, cfg: ver.VerifyConfig = ver.VerifyConfig()):
        self.store, self.policy, self.cfg = store, policy or PhotoPolicy(), cfg
        self._thumbs: OrderedDict[tuple[str, int], tuple[float, bytes]] = OrderedDict()
        self._analysed: OrderedDict[str, tuple[ver.Embedding | None, str | None]] = OrderedDict()
        self._lock = threading.Lock()

    def _analyse(self, sha: str, jpeg: bytes) -> tuple[ver.Embedding | None, str | None]:
        """(embedding, None) or (None, why there is none), cached by content hash."""
        with self._lock:
            hit = self._analysed.get(sha)
            if hit is not None:
                self._analysed.move_to_end(sha)
                return hit
        try:
            out = (ver.analyze(jpeg, self.cfg).embedding, None)
        except PhotoRejected as e:
            out = (None, e.kind)
        self._remember(sha, out)
        return out

    def _remember(self, sha: str, out: tuple) -> None:
        with self._lock:
            self._analysed[sha] = out
            self._analysed.move_to_end(sha)
            while len(self._analysed) > self.policy.analysis_cache_entries:
                self._analysed.popitem(last=False)

    def put(self, data: bytes) -> StoredPhoto:
        """Store a photo (its embedding is computed here, once per content, but never stored).
        Raises PhotoRejected for bytes that are not a usable image; a photo without a usable face
        is stored all the same. The same bytes again are neither analysed nor written again."""
        jpeg, w, h, reencoded = normalise(data, self.policy, self.cfg.limits)
        sha = replay.sha256(jpeg)
        emb, rejected = self._analyse(sha, jpeg)
        stored, writes = self._prepare(jpeg, sha, w, h, emb, rejected, reencoded)
        if not self.store.r.exists(PHOTO_PREFIX + sha):
            self.store.write(writes)
        return stored

    def prepare_return(
        self, data: bytes, purchase_sha: str | None, earlier_shas: tuple[str, ...] = ()
    ) -> tuple[StoredPhoto, ver.Verdict, list]:
        """Verify a return photo against the purchase photo (analysing it once) and give the
        operations that store it, for the caller to write atomically with the return itself.
        Raises PhotoRejected only for bytes that are not an acceptable image at all."""
        jpeg, w, h, reencoded = normalise(data, self.policy, self.cfg.limits)
        sha = replay.sha256(jpeg)
        purchase = self.embedding(purchase_sha) if purchase_sha else None
        earlier = [e for e in (self.embedding(s) for s in earlier_shas) if e is not None]
        t0 = time.perf_counter()
        try:
            probe = ver.analyze(jpeg, self.cfg)
        except PhotoRejected as e:
            self._remember(sha, (None, e.kind))
            verdict = ver.verify(jpeg, purchase, earlier, self.cfg)  # the rejection, with a replay check
            stored, writes = self._prepare(jpeg, sha, w, h, None, e.kind, reencoded)
            return stored, verdict, writes
        self._remember(sha, (probe.embedding, None))
        if purchase is None:
            why = (
                f"purchase photo expired (photos are kept {describe_ttl(self.policy.retention_ms)})"
                if purchase_sha and self.expired(purchase_sha)
                else "no purchase photo to compare with"
            )
            verdict = ver.Verdict(ver.REVIEW, (why,), face=probe.face)
        else:
            verdict = ver.compare(probe, purchase, earlier, self.cfg)
        verdict = dataclasses.replace(verdict, ms=round((time.perf_counter() - t0) * 1e3, 3))
        stored, writes = self._prepare(jpeg, sha, w, h, probe.embedding, None, reencoded)
        return stored, verdict, writes

    def _prepare(self, jpeg, sha, w, h, emb, rejected, reencoded) -> tuple[StoredPhoto, list]:
        """The photo's write: the JPEG only (an embedding is never written by a till)."""
        writes = [ops.blob(PHOTO_PREFIX + sha, jpeg, ttl_ms=self.policy.retention_ms)]
        return StoredPhoto(sha, len(jpeg), w, h, emb, rejected, reencoded), writes

    def expired(self, sha: str) -> bool:
        """True when this store no longer holds the photo (past its retention TTL, or never here)."""
        return not self.store.r.exists(PHOTO_PREFIX + _check_sha(sha))

    def get(self, sha: str) -> bytes | None:
        return self.store.get_blob(PHOTO_PREFIX + _check_sha(sha))

    def embedding(self, sha: str) -> ver.Embedding | None:
        """The photo's embedding: derived from the stored photo (cached in this process), or an
        embedding stored by an earlier version when it has the current descriptor."""
        _check_sha(sha)
        with self._lock:
            hit = self._analysed.get(sha)
        if hit is not None:
            return hit[0]
        raw = self.store.get_blob(EMB_PREFIX + sha)
        if raw is not None:
            emb = ver.Embedding.from_bytes(raw)
            if emb.descriptor == ver.DESCRIPTOR:
                return emb
        photo = self.get(sha)
        if photo is None:
            return None
        return self._analyse(sha, photo)[0]

    def thumbnail(self, sha: str, side: int | None = None) -> bytes | None:
        side = int(side or self.policy.thumb_side)
        if not 16 <= side <= 1024:
            raise ValueError("thumbnail side must be 16..1024 px")
        key = (_check_sha(sha), side)
        now = time.monotonic()
        with self._lock:
            hit = self._thumbs.get(key)
            if hit and hit[0] > now:
                self._thumbs.move_to_end(key)
                return hit[1]
        photo = self.get(sha)
        if photo is None:
            return None
        img, _ = dec.decode(photo, self.cfg.limits)
        h, w = img.shape[:2]
        k = min(1.0, side / max(h, w))
        small = cv2.resize(img, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 80])
        thumb = buf.tobytes()
        with self._lock:
            self._thumbs[key] = (now + self.policy.thumb_cache_s, thumb)
            self._thumbs.move_to_end(key)
            while len(self._thumbs) > self.policy.thumb_cache_entries:
                self._thumbs.popitem(last=False)
        return thumb

    def verify_return(
        self, photo: bytes | None, purchase_sha: str | None, earlier_shas: tuple[str, ...] = ()
    ) -> ver.Verdict:
        """Verify a return photo against a stored purchase photo (and earlier stored photos)."""
        purchase = self.embedding(purchase_sha) if purchase_sha else None
        earlier = [e for e in (self.embedding(s) for s in earlier_shas) if e is not None]
        return ver.verify(photo, purchase, earlier, self.cfg)


def _check_sha(sha: str) -> str:
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ValueError("photo ids are lower-case SHA-256 hex digests")
    return sha
