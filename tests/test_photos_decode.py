"""Guarded decode and every bad input's typed rejection (one test per kind)."""

import struct
import time
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

BAD = samples.bad_inputs()
PRE_DECODE = {dec.EMPTY, dec.UNKNOWN_FORMAT, dec.TRUNCATED, dec.TOO_SMALL, dec.TOO_MANY_PIXELS, dec.TOO_LARGE}


def test_the_corpus_covers_at_least_eight_kinds():
    assert len({b.kind for b in BAD}) >= 8
    assert len(BAD) == len({b.name for b in BAD})


@pytest.mark.parametrize("bad", BAD, ids=[b.name for b in BAD])
def test_each_bad_input_gets_its_typed_rejection(bad):
    with pytest.raises(PhotoRejected) as e:
        verify.analyze(bad.data)
    assert e.value.kind == bad.kind
    v = verify.verify(bad.data, None)
    assert v.verdict == verify.REVIEW and v.rejected == bad.kind and v.similarity is None


@pytest.mark.parametrize(
    "bad", [b for b in BAD if b.kind in PRE_DECODE], ids=[b.name for b in BAD if b.kind in PRE_DECODE]
)
def test_refusals_before_decoding_are_instant(bad):
    t = time.perf_counter()
    with pytest.raises(PhotoRejected):
        dec.decode(bad.data)
    assert time.perf_counter() - t < 0.05


def test_png_bomb_is_a_valid_png_that_would_be_huge():
    bomb = samples.png_bomb(20000)
    assert len(bomb) < 100_000
    info = dec.sniff(bomb)
    assert (info.format, info.width, info.height) == ("png", 20000, 20000)
    # Its header is intact: a smaller bomb of the same making really decodes.
    small = samples.png_bomb(2000)
    img, _ = dec.decode(small)
    assert img.shape == (2000, 2000, 3)


def test_jpeg_claiming_a_huge_size_is_refused_by_its_header():
    jpeg = samples.jpeg_claiming(render(1, 0).jpeg, 20000, 20000)
    assert dec.sniff(jpeg).width == 20000
    with pytest.raises(PhotoRejected) as e:
        dec.check(jpeg)
    assert e.value.kind == dec.TOO_MANY_PIXELS


def test_limits_are_configurable():
    jpeg = render(1, 0).jpeg
    with pytest.raises(PhotoRejected) as e:
        dec.decode(jpeg, Limits(max_bytes=1000))
    assert e.value.kind == dec.TOO_LARGE
    with pytest.raises(PhotoRejected) as e:
        dec.decode(jpeg, Limits(max_pixels=640 * 480 - 1))
    assert e.value.kind == dec.TOO_MANY_PIXELS
    with pytest.raises(PhotoRejected) as e:
        dec.decode(jpeg, Limits(min_side=481))
    assert e.value.kind == dec.TOO_SMALL


@pytest.mark.parametrize("name", ["png_grey", "png_rgba", "png_16bit", "webp"])
def test_other_formats_are_accepted_on_purpose_as_8bit_bgr(name):
    data = samples.format_variants()[name]
    img, info = dec.decode(data)
    assert img.dtype == np.uint8 and img.shape == (480, 640, 3)
    assert (info.width, info.height) == (640, 480)
    # and they verify like the JPEG they came from
    a = verify.analyze(data)
    assert a.face[2] >= verify.VerifyConfig().min_face_px


def test_header_parsers_agree_with_opencv():
    img = np.zeros((37, 53, 3), np.uint8)
    for ext in (".jpg", ".png", ".webp"):
        ok, buf = cv2.imencode(ext, img)
        info = dec.sniff(buf.tobytes())
        assert (info.width, info.height) == (53, 37), ext
    ok, buf = cv2.imencode(".webp", img, [cv2.IMWRITE_WEBP_QUALITY, 101])  # lossless: VP8L
    assert buf.tobytes()[12:16] == b"VP8L" and dec.sniff(buf.tobytes()).width == 53


def test_damaged_png_header_is_a_bad_header():
    png = bytearray(samples.format_variants()["png_grey"])
    png[20] ^= 0xFF  # inside IHDR: the CRC no longer matches
    with pytest.raises(PhotoRejected) as e:
        dec.check(bytes(png))
    assert e.value.kind == dec.BAD_HEADER


def test_truncated_png_is_truncated():
    png = samples.format_variants()["png_grey"]
    with pytest.raises(PhotoRejected) as e:
        dec.check(png[: len(png) // 2])
    assert e.value.kind == dec.TRUNCATED


def test_opencv_pixel_cap_is_set_before_cv2_loads():
    import os

    assert int(os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"]) >= Limits().max_pixels


JPEG = render(2, 0).jpeg


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(0, len(JPEG) - 1))
def test_any_truncation_is_a_typed_rejection(cut):
    with pytest.raises(PhotoRejected) as e:
        dec.decode(JPEG[:cut])
    assert e.value.kind in {dec.EMPTY, dec.TRUNCATED, dec.BAD_HEADER, dec.UNKNOWN_FORMAT, dec.DECODE_FAILED}


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=600),
    prefix=st.sampled_from([b"", b"\xff\xd8\xff", dec.PNG_SIG, b"RIFF\x00\x00\x00\x00WEBP"]),
)
def test_arbitrary_bytes_never_escape_as_anything_but_a_rejection(data, prefix):
    try:
        img, _ = dec.decode(prefix + data)
    except PhotoRejected as e:
        assert e.kind
    else:
        assert img.ndim == 3


@settings(max_examples=60, deadline=None)
@given(pos=st.integers(2, 400), byte=st.integers(0, 255))
def test_corrupted_jpeg_headers_are_handled(pos, byte):
    data = bytearray(JPEG)
    data[pos] = byte
    try:
        dec.decode(bytes(data))
    except PhotoRejected as e:
        assert e.kind


def _png_with(width: int, height: int, depth: int, colour: int) -> bytes:
    body = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)

    def chunk(kind, b):
        return struct.pack(">I", len(b)) + kind + b + struct.pack(">I", zlib.crc32(kind + b))

    return dec.PNG_SIG + chunk(b"IHDR", body) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_impossible_png_depths_are_bad_headers():
    with pytest.raises(PhotoRejected) as e:
        dec.check(_png_with(100, 100, 3, 2))  # 3-bit RGB does not exist
    assert e.value.kind == dec.BAD_HEADER
