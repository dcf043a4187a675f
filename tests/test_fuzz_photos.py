"""Hypothesis into the guarded photo decoder (photos/decode.py) and the verifier in front of it:
mutated JPEGs, PNGs and WebPs (flipped, inserted, deleted, duplicated and cut bytes), headers
claiming any size, and valid images of any size. The only outcomes: a PhotoRejected with a known
kind, or an 8-bit BGR picture the size its header said, within the limits. Sizes beyond the limits
are refused from the header, before OpenCV allocates anything.
(tests/test_photos_decode.py holds the per-kind tests and fuzzes raw bytes and header bytes.)"""

import resource
import struct
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from frauddemo.lab import samples
from frauddemo.photos import decode as dec
from frauddemo.photos import verify
from frauddemo.photos.camera import render
from frauddemo.photos.decode import Limits, PhotoRejected

LIMITS = Limits()
DECODE_KINDS = {
    dec.EMPTY,
    dec.TOO_LARGE,
    dec.UNKNOWN_FORMAT,
    dec.BAD_HEADER,
    dec.TRUNCATED,
    dec.TOO_SMALL,
    dec.TOO_MANY_PIXELS,
    dec.UNSUPPORTED,
    dec.DECODE_FAILED,
}
VERIFY_KINDS = DECODE_KINDS | {
    verify.NO_FACE,
    verify.FACE_TOO_SMALL,
    verify.TOO_DARK,
    verify.TOO_BRIGHT,
    verify.CLIPPED,
    verify.TOO_BLURRY,
}
SEEDS = {"jpeg": render(3, 0).jpeg, **samples.format_variants()}
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutated(draw, seeds=tuple(SEEDS)):
    """A seed image with 1-6 random edits anywhere in it."""
    data = bytearray(SEEDS[draw(st.sampled_from(seeds))])
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "duplicate", "cut"]))
        i = draw(st.integers(min(12, len(data)), max(12, len(data) - 1)))  # past the signature: what
        # comes before it only ever gives unknown_format (tests/test_photos_decode.py covers that)
        if op == "flip" and i < len(data):
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and i < len(data):
            data[i] = draw(st.sampled_from([0x00, 0xFF, 0xD8, 0xD9, 0xDA, 0xC0, 0x7F, 0x80]))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 256))]
        elif op == "duplicate":
            data[i:i] = data[i : i + draw(st.integers(1, 4096))]
        elif op == "cut":
            del data[i:]
    return bytes(data)


def decoded_or_rejected(data: bytes, limits: Limits = LIMITS):
    """decode(data): a typed rejection, or a picture that honours its header and the limits."""
    try:
        img, info = dec.decode(data, limits)
    except PhotoRejected as e:
        assert e.kind in DECODE_KINDS, e
        return e
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert sorted(img.shape[:2]) == sorted((info.height, info.width))
    assert limits.min_side <= min(img.shape[:2]) and max(img.shape[:2]) <= limits.max_side
    assert img.shape[0] * img.shape[1] <= limits.max_pixels
    return img


@FUZZ
@given(data=mutated())
def test_mutated_images_decode_or_are_rejected_with_a_kind(data):
    decoded_or_rejected(data)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=mutated())
def test_mutated_images_through_the_verifier(data):
    """analyze() (decode, face, eyes, sharpness) raises only PhotoRejected, whatever it is fed."""
    try:
        a = verify.analyze(data)
    except PhotoRejected as e:
        assert e.kind in VERIFY_KINDS, e
    else:
        assert len(a.sha256) == 64 and a.face[2] > 0


# --- headers claiming any size ------------------------------------------------------------------------


def png(width: int, height: int, idat: bytes = zlib.compress(b"\0" * 64), depth=8, colour=2) -> bytes:
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return dec.PNG_SIG + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def webp_vp8x(width: int, height: int) -> bytes:
    body = bytes([0, 0, 0, 0]) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    chunk = b"VP8X" + struct.pack("<I", len(body)) + body + b"\0" * 16
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def claiming(fmt: str, w: int, h: int) -> bytes:
    if fmt == "png":
        return png(w, h)
    if fmt == "webp":
        return webp_vp8x(max(1, w), max(1, h))
    return samples.jpeg_claiming(SEEDS["jpeg"], w, h)


def within(w: int, h: int, limits: Limits = LIMITS) -> bool:
    return min(w, h) >= limits.min_side and max(w, h) <= limits.max_side and w * h <= limits.max_pixels


SIDES = {"png": st.integers(0, 2**31 - 1), "jpeg": st.integers(1, 65535), "webp": st.integers(1, 2**24)}


@st.composite
def claimed(draw):
    fmt = draw(st.sampled_from(sorted(SIDES)))
    big = st.one_of(SIDES[fmt], st.integers(1, 9000).filter(lambda n: fmt != "webp" or n <= 2**24))
    return fmt, draw(big), draw(big)


@FUZZ
@given(claim=claimed())
def test_any_claimed_size_beyond_the_limits_is_refused_from_the_header(claim):
    fmt, w, h = claim
    data = claiming(fmt, w, h)
    if within(w, h):
        decoded_or_rejected(data)  # a small body under a plausible header: OpenCV's own refusal, typed
        return
    with pytest.raises(PhotoRejected) as e:
        dec.check(data)  # never reaches cv2.imdecode
    assert e.value.kind in {dec.TOO_SMALL, dec.TOO_MANY_PIXELS, dec.BAD_HEADER}, e.value


@settings(max_examples=25, deadline=None)
@given(
    w=st.integers(32, 1200),
    h=st.integers(32, 1200),
    seed=st.integers(0, 2**32 - 1),
    ext=st.sampled_from([".jpg", ".png", ".webp"]),
    channels=st.sampled_from([1, 3, 4]),
)
def test_valid_images_of_any_allowed_size_decode_to_their_size(w, h, seed, ext, channels):
    img = np.random.default_rng(seed).integers(0, 256, (h, w, channels), np.uint8)
    if ext == ".jpg" and channels == 4:
        img = img[:, :, :3]
    ok, buf = cv2.imencode(ext, img)
    assert ok
    out = decoded_or_rejected(buf.tobytes())
    if buf.size > LIMITS.max_bytes:  # noise does not compress: a big noisy PNG is over the byte cap
        assert out.kind == dec.TOO_LARGE
    else:
        assert isinstance(out, np.ndarray) and out.shape == (h, w, 3)


@settings(max_examples=30, deadline=None)
@given(claim=claimed(), max_pixels=st.integers(1024, LIMITS.max_pixels), max_side=st.integers(32, 8192))
def test_limits_of_any_size_hold(claim, max_pixels, max_side):
    """Whatever the limits are set to, nothing bigger gets through."""
    fmt, w, h = claim
    decoded_or_rejected(claiming(fmt, w, h), Limits(max_pixels=max_pixels, max_side=max_side))


def test_memory_stays_bounded_over_many_hostile_photos():
    """Peak memory over 300 hostile photos (bombs and huge claims of every format, mutations) stays far
    below what one 20000x20000 picture would take (1.2 GB): nothing big is ever allocated."""
    rng = np.random.default_rng(1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    for i in range(100):
        side = int(rng.integers(LIMITS.max_side + 1, 60000))
        decoded_or_rejected(samples.png_bomb(min(side, 30000)) if i % 10 == 0 else png(side, side))
        decoded_or_rejected(samples.jpeg_claiming(SEEDS["jpeg"], min(side, 65535), min(side, 65535)))
        decoded_or_rejected(webp_vp8x(side, side))
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 300, f"peak memory grew by {grown_mb:.0f} MB"
