"""Guarded image decoding: nothing reaches `cv2.imdecode` before its size and header are checked.

`cv2.imdecode` decodes a 20000x20000 PNG bomb (2.3 GB, seconds of CPU) without complaint and returns
None, or a grey-padded picture, for a truncated JPEG. So the bytes are checked first: a byte cap, a
known signature (JPEG, PNG, WebP), the header's width and height against pixel limits, and an end
marker. Every refusal is a `PhotoRejected` with a machine-readable `kind`.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib

import cv2
import numpy as np

# Kinds of rejection. Decode-time kinds first, then the ones the verifier adds (see verify.py).
EMPTY = "empty"
TOO_LARGE = "too_large"
UNKNOWN_FORMAT = "unknown_format"
BAD_HEADER = "bad_header"
TRUNCATED = "truncated"
TOO_SMALL = "too_small"
TOO_MANY_PIXELS = "too_many_pixels"
UNSUPPORTED = "unsupported"
DECODE_FAILED = "decode_failed"


class PhotoRejected(ValueError):
    """A photo that cannot be used, and why (`kind` is stable and machine-readable)."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail
        self.sha256: str | None = None  # set by the verifier when the bytes did decode
        self.fingerprint: bytes | None = None


@dataclasses.dataclass(frozen=True)
class Limits:
    """Upload limits. 4 MiB and 25 Mpx admit any webcam or phone photo; a POS frame is ~60 KB."""

    max_bytes: int = 4 * 1024 * 1024
    max_pixels: int = 25_000_000
    max_side: int = 8192
    min_side: int = 32


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    format: str  # "jpeg", "png" or "webp"
    width: int
    height: int
    channels: int
    bit_depth: int


JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
PNG_SIG = b"\x89PNG\r\n\x1a\n"
PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


def sniff(data: bytes) -> ImageInfo:
    """Format, size and depth from the header alone; raises PhotoRejected. Cost: microseconds."""
    if data[:3] == b"\xff\xd8\xff":
        return _jpeg(data)
    if data[:8] == PNG_SIG:
        return _png(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp(data)
    raise PhotoRejected(UNKNOWN_FORMAT, "not a JPEG, PNG or WebP image")


def _jpeg(data: bytes) -> ImageInfo:
    i, n = 2, len(data)
    while True:
        if i >= n:
            raise PhotoRejected(TRUNCATED, "JPEG ends before its frame header")
        if data[i] != 0xFF:
            raise PhotoRejected(BAD_HEADER, f"JPEG marker expected at byte {i}")
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            raise PhotoRejected(TRUNCATED, "JPEG ends inside a marker")
        m = data[i]
        i += 1
        if m == 0xD8 or 0xD0 <= m <= 0xD7 or m == 0x01:
            continue  # standalone markers
        if m in (0xD9, 0xDA):
            raise PhotoRejected(BAD_HEADER, "JPEG has no frame header before its scan")
        if i + 2 > n:
            raise PhotoRejected(TRUNCATED, "JPEG ends inside a segment")
        (length,) = struct.unpack_from(">H", data, i)
        if length < 2:
            raise PhotoRejected(BAD_HEADER, "JPEG segment length < 2")
        if i + length > n:
            raise PhotoRejected(TRUNCATED, "JPEG ends inside a segment")
        if m in JPEG_SOF:
            if length < 8:
                raise PhotoRejected(BAD_HEADER, "JPEG frame header too short")
            precision, h, w, comps = struct.unpack_from(">BHHB", data, i + 2)
            if m in (0xC3, 0xC7, 0xCB, 0xCF) or precision != 8:
                raise PhotoRejected(UNSUPPORTED, f"JPEG process {m:#x} with {precision}-bit samples")
            if comps not in (1, 3, 4):
                raise PhotoRejected(BAD_HEADER, f"JPEG with {comps} components")
            if h == 0:
                raise PhotoRejected(UNSUPPORTED, "JPEG height defined later by a DNL marker")
            # Entropy-coded data never contains FF D9 (FF is stuffed), so a missing EOI near the end
            # means the file was cut short; allow a little trailing padding after it.
            if data.rfind(b"\xff\xd9", max(i, n - 1024)) < 0:
                raise PhotoRejected(TRUNCATED, "JPEG has no end-of-image marker")
            return ImageInfo("jpeg", w, h, comps, 8)
        i += length


def _png(data: bytes) -> ImageInfo:
    if len(data) < 33:
        raise PhotoRejected(TRUNCATED, "PNG ends inside its header")
    length, ctype = struct.unpack_from(">I4s", data, 8)
    if ctype != b"IHDR" or length != 13:
        raise PhotoRejected(BAD_HEADER, "PNG does not start with IHDR")
    w, h, depth, colour, comp, filt, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    (crc,) = struct.unpack_from(">I", data, 29)
    if zlib.crc32(data[12:29]) != crc:
        raise PhotoRejected(BAD_HEADER, "PNG header checksum mismatch")
    if colour not in PNG_DEPTHS or depth not in PNG_DEPTHS[colour] or comp or filt or interlace > 1:
        raise PhotoRejected(BAD_HEADER, f"PNG colour type {colour} with depth {depth}")
    if data.rfind(b"IEND", max(33, len(data) - 64)) < 0:
        raise PhotoRejected(TRUNCATED, "PNG has no IEND chunk")
    return ImageInfo("png", w, h, PNG_CHANNELS[colour], depth)


def _webp(data: bytes) -> ImageInfo:
    if len(data) < 30:
        raise PhotoRejected(TRUNCATED, "WebP ends inside its header")
    (riff_size,) = struct.unpack_from("<I", data, 4)
    if riff_size + 8 > len(data):
        raise PhotoRejected(TRUNCATED, f"WebP declares {riff_size + 8} bytes, has {len(data)}")
    fourcc = data[12:16]
    p = data[20:]
    if fourcc == b"VP8 ":
        if p[3:6] != b"\x9d\x01\x2a":
            raise PhotoRejected(BAD_HEADER, "WebP VP8 start code missing")
        w, h = struct.unpack_from("<HH", p, 6)
        return ImageInfo("webp", w & 0x3FFF, h & 0x3FFF, 3, 8)
    if fourcc == b"VP8L":
        if p[0] != 0x2F:
            raise PhotoRejected(BAD_HEADER, "WebP lossless signature missing")
        (bits,) = struct.unpack_from("<I", p, 1)
        return ImageInfo("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, 4, 8)
    if fourcc == b"VP8X":
        flags = p[0]
        if flags & 0x02:
            raise PhotoRejected(UNSUPPORTED, "animated WebP")
        w = int.from_bytes(p[4:7], "little") + 1
        h = int.from_bytes(p[7:10], "little") + 1
        return ImageInfo("webp", w, h, 4 if flags & 0x10 else 3, 8)
    raise PhotoRejected(BAD_HEADER, f"WebP chunk {fourcc!r}")


def check(data: bytes, limits: Limits = Limits()) -> ImageInfo:
    """Every check that does not need decoding."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PhotoRejected(UNKNOWN_FORMAT, f"expected bytes, got {type(data).__name__}")
    n = len(data)
    if n == 0:
        raise PhotoRejected(EMPTY, "no bytes")
    if n > limits.max_bytes:
        raise PhotoRejected(TOO_LARGE, f"{n} bytes > {limits.max_bytes}")
    info = sniff(data if isinstance(data, bytes) else bytes(data))
    if info.width < limits.min_side or info.height < limits.min_side:
        raise PhotoRejected(TOO_SMALL, f"{info.width}x{info.height} < {limits.min_side} px")
    if info.width > limits.max_side or info.height > limits.max_side or info.width * info.height > limits.max_pixels:
        raise PhotoRejected(TOO_MANY_PIXELS, f"{info.width}x{info.height} exceeds the pixel limits")
    return info


REDUCED = {
    2: (cv2.IMREAD_REDUCED_COLOR_2, cv2.IMREAD_REDUCED_GRAYSCALE_2),
    4: (cv2.IMREAD_REDUCED_COLOR_4, cv2.IMREAD_REDUCED_GRAYSCALE_4),
    8: (cv2.IMREAD_REDUCED_COLOR_8, cv2.IMREAD_REDUCED_GRAYSCALE_8),
}


def decode(
    data: bytes, limits: Limits = Limits(), grey: bool = False, min_width: int | None = None
) -> tuple[np.ndarray, ImageInfo]:
    """Checked decode to 8-bit BGR (or grey). 16-bit, grey and RGBA inputs are accepted on purpose:
    they are converted to 8-bit (alpha dropped), which is what a camera photo would have been.
    `min_width`: a JPEG at least twice as wide is decoded at 1/2, 1/4 or 1/8 scale (libjpeg scales
    while decoding: a 24 Mpx photo costs what a 1.5 Mpx one does), keeping at least this width."""
    info = check(data, limits)
    flags = cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR
    factor = 1
    if min_width and info.format == "jpeg":
        for f in (8, 4, 2):
            if info.width // f >= min_width:
                factor = f
                flags = REDUCED[f][1 if grey else 0]
                break
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as e:
        raise PhotoRejected(DECODE_FAILED, str(e).strip().splitlines()[-1]) from None
    if img is None:
        raise PhotoRejected(DECODE_FAILED, f"{info.format} data could not be decoded")
    want = sorted((-(-info.height // factor), -(-info.width // factor)))
    if factor > 1 and sorted(img.shape[:2]) != want:
        raise PhotoRejected(
            DECODE_FAILED,
            f"decoded {img.shape[1]}x{img.shape[0]} at 1/{factor}, header said {info.width}x{info.height}",
        )
    if factor == 1 and sorted(img.shape[:2]) != sorted((info.height, info.width)):  # EXIF may swap them
        raise PhotoRejected(
            DECODE_FAILED, f"decoded {img.shape[1]}x{img.shape[0]}, header said {info.width}x{info.height}"
        )
    return img, info
