"""Replay detection: an exact copy by content hash, a near copy by registered thumbnails.

An exact copy (the very bytes of an earlier photo) cannot be a new capture. A near copy is an earlier
photo re-encoded, resized, brightened or slightly cropped. Perceptual hashes of the whole frame were
measured and rejected for this: a crop of a few per cent moves a 143-bit DCT hash by up to 40 bits,
as far as a genuine new capture of the same person. Instead each photo keeps a small colour
"fingerprint" (the central 80% of the frame, 48x36, blurred). A new photo's fingerprint is aligned to
an earlier one by ECC (affine: absorbs resizing and cropping), and the near-copy score is the mean
per-channel correlation over the overlap, ignoring clipped pixels (absorbs brightening). Copies score
above ~0.9, new captures below ~0.75 on the synthetic camera.

A near copy is flagged for review, not denied: a customer standing still in front of a fixed POS
background, under the same light, could come close.
"""
from __future__ import annotations

import hashlib

import cv2
import numpy as np

PRINT_W, PRINT_H = 48, 36
PRINT_CENTRE = 0.1  # a tenth of each side is left out: crops of up to that much still overlap
PRINT_BLUR = 1.0
_ECC_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fingerprint(bgr: np.ndarray) -> bytes:
    """48x36x3 uint8: the central 80% of the frame, reduced and blurred (5184 bytes)."""
    if bgr.ndim == 2:
        bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
    h, w = bgr.shape[:2]
    my, mx = int(h * PRINT_CENTRE), int(w * PRINT_CENTRE)
    small = cv2.resize(bgr[my:h - my, mx:w - mx], (PRINT_W, PRINT_H), interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(small, (0, 0), PRINT_BLUR).tobytes()


def _unpack(fp: bytes) -> np.ndarray:
    return np.frombuffer(fp, np.uint8).reshape(PRINT_H, PRINT_W, 3).astype(np.float32)


def _corr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    if mask.sum() < 16:
        return -1.0
    x = a[mask] - a[mask].mean()
    y = b[mask] - b[mask].mean()
    return float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum() + 1e-9))


def copy_score(new: bytes, earlier: bytes) -> float:
    """How much `new` looks like a transformed copy of `earlier`: -1 (no) .. 1 (same picture)."""
    a, b = _unpack(earlier), _unpack(new)
    ga, gb = cv2.cvtColor(a, cv2.COLOR_BGR2GRAY), cv2.cvtColor(b, cv2.COLOR_BGR2GRAY)
    warp = np.eye(2, 3, dtype=np.float32)
    try:
        _, warp = cv2.findTransformECC(ga, gb, warp, cv2.MOTION_AFFINE, _ECC_CRITERIA, None, 3)
    except cv2.error:  # no convergence: nothing alike to align
        return -1.0
    inv = cv2.INTER_LINEAR + cv2.WARP_INVERSE_MAP
    bw = cv2.warpAffine(b, warp, (PRINT_W, PRINT_H), flags=inv, borderValue=(-1.0, -1.0, -1.0))
    valid = np.ones((PRINT_H, PRINT_W), bool)
    valid[:2, :] = valid[-2:, :] = False
    valid[:, :2] = valid[:, -2:] = False
    valid &= bw[..., 0] >= 0  # inside the warped picture
    if valid.mean() < 0.5:
        return -1.0
    scores = []
    for k in range(3):
        unclipped = (a[..., k] >= 4) & (a[..., k] <= 251) & (bw[..., k] >= 4) & (bw[..., k] <= 251)
        scores.append(_corr(a[..., k], bw[..., k], valid & unclipped))
    return float(np.mean(scores))


def check(sha: str, fp: bytes | None, earlier, near_score: float) -> tuple[str | None, float | None]:
    """("exact" | "near" | None, best copy score) against earlier (sha, fingerprint) pairs."""
    best = None
    for e_sha, e_fp in earlier:
        if e_sha == sha:
            return "exact", 1.0
        if fp is not None and e_fp is not None and len(e_fp) == len(fp):
            s = copy_score(fp, e_fp)
            best = s if best is None else max(best, s)
    if best is not None and best >= near_score:
        return "near", best
    return None, best
