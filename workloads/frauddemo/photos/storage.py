"""Photos in the stores: JPEG by content hash, the embedding beside it, thumbnails on demand.

Keys (both immutable blobs, written together in one atomic, replicated store write):
  b:photo:<sha256 of the JPEG>   the JPEG itself, at most `PhotoPolicy.max_bytes`
  b:emb:<sha256 of the JPEG>     `verify.Embedding` bytes (descriptor, content hash, perceptual hash)
Both expire after the retention TTL. A photo uploaded in another format, or larger than the policy
allows, is re-encoded as a JPEG first, so the key is always the hash of the stored bytes.

Thumbnails are generated from the stored JPEG when asked for and cached in this process for a short
while; they are never written to a store. Listings carry `ref()` dictionaries, never photo bytes.
"""
from __future__ import annotations

import dataclasses
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


@dataclasses.dataclass(frozen=True)
class PhotoPolicy:
    max_bytes: int = 1024 * 1024  # per stored JPEG; a 640x480 POS frame is ~60 KB
    max_side: int = 1280  # larger photos are scaled down before storing
    retention_ms: int = 30 * DAY_MS
    jpeg_quality: int = 90
    thumb_side: int = 160
    thumb_cache_s: float = 300.0
    thumb_cache_entries: int = 256


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
    return {"sha256": sha, "photo": f"{PHOTO_PREFIX}{sha}", "url": f"/api/photos/{sha}",
            "thumbnail_url": f"/api/photos/{sha}/thumbnail"}


def normalise(data: bytes, policy: PhotoPolicy = PhotoPolicy(),
              limits: dec.Limits = dec.Limits()) -> tuple[bytes, int, int, bool]:
    """The JPEG to store: the upload itself when it is a JPEG within the policy, else re-encoded."""
    info = dec.check(data, limits)
    if (info.format == "jpeg" and len(data) <= policy.max_bytes
            and max(info.width, info.height) <= policy.max_side):
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

    def __init__(self, store: Store, policy: PhotoPolicy = PhotoPolicy(),
                 cfg: ver.VerifyConfig = ver.VerifyConfig()):
        self.store, self.policy, self.cfg = store, policy, cfg
        self._thumbs: OrderedDict[tuple[str, int], tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, data: bytes) -> StoredPhoto:
        """Store a photo and its embedding (computed here, once). Raises PhotoRejected for bytes
        that are not a usable image; a photo without a usable face is stored without embedding.
        The same bytes stored again (content addressing) are not analysed again."""
        jpeg, w, h, reencoded = normalise(data, self.policy, self.cfg.limits)
        sha = replay.sha256(jpeg)
        known = self.store.get_blob(EMB_PREFIX + sha)
        if known is not None:
            return StoredPhoto(sha, len(jpeg), w, h, ver.Embedding.from_bytes(known), None, reencoded)
        try:
            emb, rejected = ver.analyze(jpeg, self.cfg).embedding, None
        except PhotoRejected as e:
            emb, rejected = None, e.kind
        stored, writes = self._prepare(jpeg, sha, w, h, emb, rejected, reencoded)
        self.store.write(writes)
        return stored

    def prepare_return(self, data: bytes, purchase_sha: str | None, earlier_shas: tuple[str, ...] = ()
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
            verdict = ver.verify(jpeg, purchase, earlier, self.cfg)  # the rejection, with a replay check
            stored, writes = self._prepare(jpeg, sha, w, h, None, e.kind, reencoded)
            return stored, verdict, writes
        if purchase is None:
            verdict = ver.Verdict(ver.REVIEW, ("no purchase photo to compare with",), face=probe.face)
        else:
            verdict = ver.compare(probe, purchase, earlier, self.cfg)
        verdict = dataclasses.replace(verdict, ms=round((time.perf_counter() - t0) * 1e3, 3))
        stored, writes = self._prepare(jpeg, sha, w, h, probe.embedding, None, reencoded)
        return stored, verdict, writes

    def _prepare(self, jpeg, sha, w, h, emb, rejected, reencoded) -> tuple[StoredPhoto, list]:
        ttl = self.policy.retention_ms
        writes = [ops.blob(PHOTO_PREFIX + sha, jpeg, ttl_ms=ttl)]
        if emb is not None:
            writes.append(ops.blob(EMB_PREFIX + sha, emb.to_bytes(), ttl_ms=ttl))
        return StoredPhoto(sha, len(jpeg), w, h, emb, rejected, reencoded), writes

    def get(self, sha: str) -> bytes | None:
        return self.store.get_blob(PHOTO_PREFIX + _check_sha(sha))

    def embedding(self, sha: str) -> ver.Embedding | None:
        """The stored embedding; recomputed from the photo (not rewritten: blobs are immutable)
        when it was made by another descriptor version or is missing."""
        raw = self.store.get_blob(EMB_PREFIX + _check_sha(sha))
        if raw is not None:
            emb = ver.Embedding.from_bytes(raw)
            if emb.descriptor == ver.DESCRIPTOR:
                return emb
        photo = self.get(sha)
        if photo is None:
            return None
        try:
            return ver.analyze(photo, self.cfg).embedding
        except PhotoRejected:
            return None

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

    def verify_return(self, photo: bytes | None, purchase_sha: str | None,
                      earlier_shas: tuple[str, ...] = ()) -> ver.Verdict:
        """Verify a return photo against a stored purchase photo (and earlier stored photos)."""
        purchase = self.embedding(purchase_sha) if purchase_sha else None
        earlier = [e for e in (self.embedding(s) for s in earlier_shas) if e is not None]
        return ver.verify(photo, purchase, earlier, self.cfg)


def _check_sha(sha: str) -> str:
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ValueError("photo ids are lower-case SHA-256 hex digests")
    return sha

