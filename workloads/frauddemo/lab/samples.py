"""Photos made on purpose: bad inputs (each with the rejection kind it must get), replayed copies, and
format variants that are accepted on purpose. Shared by the tests and the benchmark."""

from __future__ import annotations

import dataclasses
import struct
import zlib

import cv2
import numpy as np

from ..photos import decode as dec
from ..photos import verify as ver
from ..photos.camera import render, render_empty


@dataclasses.dataclass(frozen=True)
class Bad:
    name: str
    data: bytes
    kind: str  # the PhotoRejected kind it must be rejected with


def png_bomb(side: int = 20000) -> bytes:
    """A valid 1-bit grey PNG of side x side zeros: ~50 KB that decode to side*side bytes or more."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    z = zlib.compressobj(9)
    chunks = [z.compress(row * 1000) for _ in range(side // 1000)]
    chunks.append(z.compress(row * (side % 1000)))
    idat = b"".join(chunks) + z.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return dec.PNG_SIG + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def jpeg_claiming(jpeg: bytes, width: int, height: int) -> bytes:
    """A real JPEG whose frame header is patched to claim another size."""
    i = 2
    while i < len(jpeg):
        m = jpeg[i + 1]
        (length,) = struct.unpack_from(">H", jpeg, i + 2)
        if m in dec.JPEG_SOF:
            return jpeg[: i + 5] + struct.pack(">HH", height, width) + jpeg[i + 9 :]
        i += 2 + length
    raise ValueError("no frame header")


def _png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def bad_inputs(limits: dec.Limits = dec.Limits(), identity: int = 7, seed: int = 0) -> list[Bad]:
    """One of every kind of bad photo the verifier must refuse, with the kind it must say."""
    good = render(identity, seed).jpeg
    rng = np.random.default_rng(seed)
    return [
        Bad("empty", b"", dec.EMPTY),
        Bad("text", b"this is not a photo, it is a receipt number: 0042\n" * 20, dec.UNKNOWN_FORMAT),
        Bad("random_bytes", rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(), dec.UNKNOWN_FORMAT),
        Bad("truncated_jpeg", good[: len(good) * 3 // 5], dec.TRUNCATED),
        Bad("one_pixel", _png(np.full((1, 1, 3), 128, np.uint8)), dec.TOO_SMALL),
        Bad("png_bomb_20000", png_bomb(20000), dec.TOO_MANY_PIXELS),
        Bad("jpeg_claims_20000", jpeg_claiming(good, 20000, 20000), dec.TOO_MANY_PIXELS),
        Bad("oversized_upload", good + b"\x00" * (limits.max_bytes + 1 - len(good)), dec.TOO_LARGE),
        Bad("no_face", render_empty(seed), ver.NO_FACE),
        Bad("blurred_face", render(identity, seed, blur=6.0).jpeg, ver.TOO_BLURRY),
        Bad("dark_face", render(identity, seed, gain=0.12).jpeg, ver.TOO_DARK),
        Bad("tiny_face", render(identity, seed, scale=0.28).jpeg, ver.FACE_TOO_SMALL),
        Bad("overexposed_face", render(identity, seed, gain=4.0).jpeg, ver.TOO_BRIGHT),
    ]


def format_variants(identity: int = 7, seed: int = 0) -> dict[str, bytes]:
    """The same capture as grey, RGBA and 16-bit PNGs and as WebP: accepted on purpose."""
    img = cv2.imdecode(np.frombuffer(render(identity, seed).jpeg, np.uint8), cv2.IMREAD_COLOR)
    ok, webp = cv2.imencode(".webp", img, [cv2.IMWRITE_WEBP_QUALITY, 90])
    assert ok
    return {
        "png_grey": _png(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)),
        "png_rgba": _png(cv2.cvtColor(img, cv2.COLOR_BGR2BGRA)),
        "png_16bit": _png(img.astype(np.uint16) * 257),
        "webp": webp.tobytes(),
    }


def replay_copies(jpeg: bytes, rng: np.random.Generator) -> dict[str, bytes]:
    """What someone replaying a stored photo would send: exact bytes, re-encoded, resized,
    brightened, slightly cropped."""
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    h, w = img.shape[:2]

    def enc(x, q=None):
        ok, buf = cv2.imencode(".jpg", x, [cv2.IMWRITE_JPEG_QUALITY, int(q or rng.integers(70, 96))])
        assert ok
        return buf.tobytes()

    k = float(rng.uniform(0.5, 0.9))
    c = rng.uniform(0.01, 0.05, 4)  # crop fractions: top, bottom, left, right
    crop = img[int(h * c[0]) : h - int(h * c[1]), int(w * c[2]) : w - int(w * c[3])]
    gain, offset = float(rng.uniform(1.1, 1.4)), float(rng.uniform(5, 30))
    return {
        "exact": jpeg,
        "reencoded": enc(img, int(rng.integers(60, 90))),
        "resized": enc(cv2.resize(img, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)),
        "brightened": enc(cv2.convertScaleAbs(img, alpha=gain, beta=offset)),
        "cropped": enc(crop),
    }
