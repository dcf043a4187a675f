"""What an attacker holding someone's photo can present instead of a fresh capture (benchmarks, tests).

Every transform takes a decoded BGR frame and a numpy Generator and returns JPEG bytes. Ranges are
wide on purpose: the replay check was not tuned on these (its thresholds come from genuine captures
only, see photo_bench.py), so each kind here is a held-out attack.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..photos import verify as ver


def _enc(img: np.ndarray, rng: np.random.Generator, q: tuple[int, int] = (60, 95)) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(*q))])
    assert ok
    return buf.tobytes()


def decode(jpeg: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)


def mirror(img, rng):
    return _enc(cv2.flip(img, 1), rng)


def crop(img, rng):
    h, w = img.shape[:2]
    c = rng.uniform(0.02, 0.12, 4)
    return _enc(img[int(h * c[0]) : h - int(h * c[1]), int(w * c[2]) : w - int(w * c[3])], rng)


def zoom(img, rng):
    """Zoomed in on the face (a crop of up to 30 %), scaled back up to the frame."""
    h, w = img.shape[:2]
    k = float(rng.uniform(0.72, 0.88))
    cw, ch = int(w * k), int(h * k)
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return _enc(cv2.resize(img[y0 : y0 + ch, x0 : x0 + cw], (w, h), interpolation=cv2.INTER_LINEAR), rng)


def rotate(img, rng):
    h, w = img.shape[:2]
    ang = float(rng.uniform(5, 15)) * (1 if rng.random() < 0.5 else -1)
    M = cv2.getRotationMatrix2D((w / 2, h / 2), ang, 1.0)
    return _enc(cv2.warpAffine(img, M, (w, h), borderMode=cv2.BORDER_REFLECT), rng)


def reencode(img, rng):
    h, w = img.shape[:2]
    k = float(rng.uniform(0.5, 1.0))
    small = cv2.resize(img, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)
    return _enc(small, rng, (40, 80))


def relight(img, rng):
    """Brighter or darker, warmer or cooler, a gamma, and a light gradient across the frame."""
    h, w = img.shape[:2]
    x = img.astype(np.float32) / 255.0
    x = np.power(x, float(rng.uniform(0.7, 1.4)))
    grad = np.linspace(float(rng.uniform(0.7, 1.0)), float(rng.uniform(1.0, 1.3)), w, dtype=np.float32)
    x = x * grad[None, :, None] * float(rng.uniform(0.8, 1.25))
    x *= np.array([rng.uniform(0.85, 1.15), 1.0, rng.uniform(0.85, 1.15)], np.float32)
    return _enc(np.clip(x * 255, 0, 255).astype(np.uint8), rng)


def _perspective(img, rng, amount):
    h, w = img.shape[:2]
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    d = rng.uniform(-amount, amount, (4, 2)) * np.float32([w, h])
    M = cv2.getPerspectiveTransform(src, (src + d).astype(np.float32))
    return cv2.warpPerspective(img, M, (w, h), borderMode=cv2.BORDER_REPLICATE)


def perspective(img, rng):
    return _enc(_perspective(img, rng, 0.08), rng)


def reshoot(img, rng):
    """The photo shown on a screen and photographed again at the till: a tilted view, the screen's
    glare and gamma, defocus, sensor noise, and the screen's dark border around it."""
    h, w = img.shape[:2]
    k = float(rng.uniform(0.8, 0.95))
    screen = np.full_like(img, int(rng.integers(5, 40)))
    sw, sh = int(w * k), int(h * k)
    x0, y0 = (w - sw) // 2 + int(rng.integers(-10, 11)), (h - sh) // 2 + int(rng.integers(-10, 11))
    screen[y0 : y0 + sh, x0 : x0 + sw] = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_AREA)
    x = _perspective(screen, rng, 0.06).astype(np.float32)
    x = 255 * np.power(x / 255, float(rng.uniform(0.8, 1.25))) * float(rng.uniform(0.85, 1.15))
    x = cv2.GaussianBlur(x, (0, 0), float(rng.uniform(0.5, 1.5)))
    x += rng.normal(0, float(rng.uniform(2, 6)), x.shape).astype(np.float32)
    glare = np.zeros((h, w), np.float32)
    cv2.circle(glare, (int(rng.integers(0, w)), int(rng.integers(0, h))), int(rng.integers(40, 120)), 1.0, -1)
    x += cv2.GaussianBlur(glare, (0, 0), 30)[..., None] * float(rng.uniform(10, 40))
    return _enc(np.clip(x, 0, 255).astype(np.uint8), rng)


def mirror_reshoot(img, rng):
    return reshoot(cv2.flip(img, 1), rng)


KINDS = {
    "mirror": mirror,
    "crop": crop,
    "zoom": zoom,
    "rotate": rotate,
    "reencode": reencode,
    "relight": relight,
    "perspective": perspective,
    "reshoot": reshoot,
    "mirror_reshoot": mirror_reshoot,
}


def replays(jpeg: bytes, rng: np.random.Generator, kinds=None) -> dict[str, bytes]:
    img = decode(jpeg)
    return {k: KINDS[k](img, rng) for k in (kinds or KINDS)}


def best_lookalike(gallery: np.ndarray, candidates: list, cfg: ver.VerifyConfig, screen_top: int = 10):
    """The lookalike attacker's pick among `candidates` ((id, Analysis) of their screening photos) for
    the victim's purchase embedding vector `gallery`, with the shipped verifier: a cheap cosine screen,
    then the full similarity search for the best `screen_top`. Returns the chosen id."""
    mat = np.array([a.vector for _, a in candidates])
    top = np.argsort(-ver.cosines(mat, gallery, cfg))[:screen_top]
    return max((candidates[k] for k in top), key=lambda c: ver.similarity(c[1], gallery, cfg))[0]
