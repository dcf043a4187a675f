"""Cameras behind one interface: procedural customers, a real webcam, or image files.

`Camera.capture()` returns encoded image bytes (JPEG for the synthetic camera and the webcam, the
file's own bytes for a file), which is exactly what the POS uploads and the verifier decodes.

The synthetic camera draws a customer from an identity seed. The identity fixes the geometry (face
shape, eyes, brows, nose, mouth, ears, marks), skin tone and hair; each capture varies lighting on a
shaded height map, expression, pose, framing, background, clothing and the camera's response. The
capture ranges are a frozen dataclass so tests and the benchmark can ask for harder or easier ones
(`background_seed` fixes the background: one till's camera facing the same wall for everyone).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

FRAME_W, FRAME_H = 640, 480
# The canonical canvas the customer is drawn on before the pose warp places it in the frame.
CANVAS_W, CANVAS_H = 400, 600
HEAD_CX, HEAD_CY = 200.0, 215.0


class CameraError(RuntimeError):
    """A camera could not deliver a frame (no device, unreadable file, ...)."""


class Camera(Protocol):
    def capture(self) -> bytes:
        """One photo, encoded (JPEG unless the source is a file in another format)."""


# -- capture variation ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CaptureRanges:
    """Per-capture variation. Defaults are the issue's minimum ranges for a POS camera.

    light_x/light_y are components of the unit vector towards the light (z towards the camera), so
    (0.6, -0.5) is 52 degrees off axis. color_temp scales red up and blue down (or the reverse) by up
    to that fraction. The issue names no expression range: smile, eye opening, brow raise and mouth
    opening are ours, from a frown to a broad open smile.

    background_seed: None draws a new shop background for every capture; a number fixes one backdrop,
    the same behind every capture and every customer drawn with it (a till's camera facing one wall).
    The camera's response (gain, white balance, gamma, noise, blur) still varies per capture."""

    light_x: tuple[float, float] = (-0.6, 0.6)
    light_y: tuple[float, float] = (-0.5, 0.1)
    rotation_deg: float = 8.0
    scale: tuple[float, float] = (0.75, 0.95)
    shift_px: tuple[float, float] = (40.0, 25.0)
    gain: tuple[float, float] = (0.65, 1.3)
    color_temp: float = 0.10
    gamma: tuple[float, float] = (0.85, 1.2)
    noise_sigma: tuple[float, float] = (1.5, 6.0)
    blur_sigma: tuple[float, float] = (0.0, 1.2)
    jpeg_quality: tuple[int, int] = (75, 95)
    smile: tuple[float, float] = (-0.3, 1.0)
    eye_open: tuple[float, float] = (0.65, 1.1)
    brow_raise_px: tuple[float, float] = (-5.0, 7.0)
    mouth_open: tuple[float, float] = (0.0, 0.5)
    background_seed: int | None = None


@dataclasses.dataclass(frozen=True)
class Capture:
    """A synthetic photo and what was drawn (ground truth for tests)."""

    jpeg: bytes
    identity: int
    params: dict
    eyes: tuple[tuple[float, float], tuple[float, float]]  # (left, right) eye centres in the frame
    face_box: tuple[int, int, int, int]  # x, y, w, h of the face ellipse's bounding box


# -- identities ------------------------------------------------------------------------------------
HAIR_COLOURS = np.array(
    [  # BGR
        (20, 22, 25),
        (25, 35, 55),
        (30, 50, 85),
        (45, 75, 120),
        (70, 120, 170),
        (40, 60, 140),
        (150, 150, 155),
        (210, 210, 210),
        (60, 90, 150),
    ],
    np.float32,
)
IRIS_COLOURS = np.array([(30, 50, 80), (20, 35, 55), (140, 110, 60), (90, 120, 80), (120, 120, 120)], np.float32)
SKIN_LIGHT = np.array([185, 200, 228], np.float32)
SKIN_DARK = np.array([55, 80, 125], np.float32)


@dataclasses.dataclass(frozen=True)
class Identity:
    """Stable traits of one procedural customer (canonical-canvas pixels and fractions)."""

    seed: int
    b: float  # face half-height
    a: float  # face half-width
    taper: float  # jaw narrowing
    skin: tuple[float, float, float]
    eye_y: float  # eye line, px above the face centre
    eye_dx: float  # half the distance between the eyes
    eye_w: float
    eye_h: float
    eye_tilt: float
    iris: tuple[float, float, float]
    brow_gap: float
    brow_thick: float
    brow_arch: float
    brow_len: float
    brow_tilt: float
    brow_colour: tuple[float, float, float]
    nose_y: float  # nose tip, px below the face centre
    nose_w: float
    nose_bridge: float
    mouth_y: float
    mouth_w: float
    lip_up: float
    lip_lo: float
    lip_colour: tuple[float, float, float]
    hair_colour: tuple[float, float, float]
    hair_style: int  # 0 short, 1 long, 2 fringe, 3 receding, 4 volume
    hairline: float  # px above the face centre
    hair_volume: float
    parting: float
    ear_size: float
    marks: tuple[tuple[float, float, float], ...]  # moles: (x, y, radius) relative to face centre
    beard: float  # 0 none .. 1 full stubble
    shoulder_w: float

    @classmethod
    def from_seed(cls, seed: int) -> Identity:
        rng = np.random.default_rng([0x5EED, int(seed)])
        u = rng.uniform
        b = u(118, 136)
        a = b * u(0.68, 0.84)
        tone = u(0, 1) ** 0.9
        skin = SKIN_LIGHT * (1 - tone) + SKIN_DARK * tone
        skin = skin * u(0.94, 1.06, 3)
        hair = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] * u(0.85, 1.15, 3)
        brow = np.minimum(hair, skin * 0.55) * u(0.7, 1.0)
        lip = skin * np.array([u(0.6, 0.8), u(0.55, 0.75), u(0.85, 1.0)])
        n_marks = int(rng.integers(0, 4))
        marks = tuple((float(u(-0.75, 0.75) * a), float(u(-0.1, 0.75) * b), float(u(1.8, 4.0))) for _ in range(n_marks))
        return cls(
            seed=int(seed),
            b=b,
            a=a,
            taper=u(0.05, 0.38),
            skin=tuple(skin),
            eye_y=b * u(0.05, 0.22),
            eye_dx=a * u(0.36, 0.48),
            eye_w=a * u(0.15, 0.22),
            eye_h=u(0.38, 0.56),
            eye_tilt=u(-7, 7),
            iris=tuple(IRIS_COLOURS[rng.integers(5)]),
            brow_gap=b * u(0.12, 0.24),
            brow_thick=u(4, 12),
            brow_arch=u(0, 12),
            brow_len=u(0.9, 1.35),
            brow_tilt=u(-9, 9),
            brow_colour=tuple(brow),
            nose_y=b * u(0.14, 0.32),
            nose_w=a * u(0.16, 0.3),
            nose_bridge=u(0.5, 1.2),
            mouth_y=b * u(0.42, 0.6),
            mouth_w=a * u(0.26, 0.44),
            lip_up=u(3, 9),
            lip_lo=u(4, 12),
            lip_colour=tuple(lip),
            hair_colour=tuple(hair),
            hair_style=int(rng.integers(5)),
            hairline=b * u(0.48, 0.78),
            hair_volume=u(6, 36),
            parting=u(-0.5, 0.5),
            ear_size=u(0.8, 1.25),
            marks=marks,
            beard=float(u(0, 1) if u() < 0.2 else 0.0),
            shoulder_w=u(1.5, 1.9),
        )


# ~7.5 MB per identity (float32 normals, albedo and masks of the canvas): 64 of them made a POS 650 MB
# (measured by `frauddemo bench soak`) for few hits, since a POS sees hundreds of customers at random;
# two keep back-to-back captures of one customer (a test, a scenario) cheap and fill within seconds
# (8 took the hacked POS, at 0.2 attempts/s, most of a 10-minute soak to fill: +17 % RSS, bounded).
@functools.lru_cache(maxsize=2)
def _geometry(seed: int):
    """Height map, unit normals, mask and base albedo of an identity (expression-free parts)."""
    p = Identity.from_seed(seed)
    ys, xs = np.mgrid[0:CANVAS_H, 0:CANVAS_W].astype(np.float32)
    X, Y = xs - HEAD_CX, ys - HEAD_CY

    def g(x0, y0, sx, sy):
        return np.exp(-((X - x0) ** 2 / (2 * sx * sx) + (Y - y0) ** 2 / (2 * sy * sy)))

    v = Y / p.b
    a_y = p.a * (1 - p.taper * np.clip(v, 0, 1) ** 2)
    r2 = (X / a_y) ** 2 + v**2
    face = r2 < 1
    depth = p.a * 0.95
    z = np.sqrt(np.clip(1 - r2, 0, 1)) * depth
    # Features in relief: eye sockets, brow ridge, nose, cheeks, lips, chin.
    for sx in (-1, 1):
        z -= 9 * g(sx * p.eye_dx, -p.eye_y, p.eye_w * 0.9, p.eye_w * 0.65)
        z += 6 * g(sx * p.a * 0.5, p.nose_y * 0.6, p.a * 0.22, p.b * 0.16)
    z += 7 * g(0, -p.eye_y - p.brow_gap * 0.8, p.a * 0.75, p.b * 0.07)
    ridge = np.exp(-(X**2) / (2 * (p.nose_w * 0.28) ** 2))
    ridge *= np.clip((Y + p.eye_y) / (p.nose_y + p.eye_y), 0, 1) * (Y < p.nose_y + 4)
    z += 18 * p.nose_bridge * ridge
    z += 14 * g(0, p.nose_y - 4, p.nose_w * 0.45, p.nose_w * 0.35)
    z += 4 * g(0, p.mouth_y, p.mouth_w * 0.9, 9)
    z += 6 * g(0, p.b * 0.82, p.a * 0.35, p.b * 0.12)
    z = np.where(face, z, 0)

    # Hair: a larger shell around the skull.
    hb, ha = p.b + p.hair_volume, p.a + p.hair_volume * 0.8
    hv = (Y + p.b * 0.05) / hb
    hr2 = (X / ha) ** 2 + hv**2
    top = (Y < -p.hairline + 6 * np.cos(X / p.a * 2.5 + p.parting * 3)) | (~face & (hv < 0.1))
    if p.hair_style == 1:  # long: falls beside the face to the shoulders
        top |= (~face) & (np.abs(X) < ha + 10) & (Y < p.b * 1.25) & (np.abs(X) > p.a * 0.7)
    elif p.hair_style == 2:  # fringe over the forehead
        top |= face & (Y < -p.eye_y - p.brow_gap - 10 + 10 * np.sin(X * 0.15))
    elif p.hair_style == 3:  # receding
        top &= ~(face & (Y > -p.b * 0.86) & (np.abs(X) < p.a * 0.6))
    hair = top & ((hr2 < 1) | (p.hair_style == 1) & (np.abs(X) < ha + 10) & (Y > 0))
    hair &= ~(face & (Y > -p.eye_y - p.brow_gap * 0.6))  # never over the eyes
    hz = np.sqrt(np.clip(1 - np.minimum(hr2, 1), 0, 1)) * depth * 1.05
    z = np.where(hair & ~face, np.maximum(hz, 2), z)
    z = np.where(hair & face, z + 4, z)

    # Ears, neck and shoulders (clothing is coloured per capture).
    ears = np.zeros((CANVAS_H, CANVAS_W), bool)
    for sx in (-1, 1):
        ex = sx * (p.a * (1 - p.taper * 0.02) + 4)
        e = ((X - ex) / (11 * p.ear_size)) ** 2 + ((Y - p.nose_y * 0.3) / (24 * p.ear_size)) ** 2 < 1
        ears |= e & ~face
        ear_z = 12 * np.sqrt(np.clip(1 - ((X - ex) / (11 * p.ear_size)) ** 2, 0, 1))
        z = np.where(e & ~face & ~hair, ear_z, z)
    neck_w = p.a * 0.62
    neck = (np.abs(X) < neck_w) & (Y > 0) & (Y < p.b * 1.6) & ~face
    z = np.where(neck & ~hair, np.sqrt(np.clip(1 - (X / neck_w) ** 2, 0, 1)) * neck_w * 0.7, z)
    sh_top = p.b * 1.3 + (X / (p.a * p.shoulder_w)) ** 2 * 40
    body = (Y > sh_top) & (np.abs(X) < p.a * p.shoulder_w * 1.6)
    bz = np.sqrt(np.clip(1 - (X / (p.a * p.shoulder_w * 1.6)) ** 2, 0, 1)) * p.a * 1.2
    z = np.where(body, bz, z)

    mask = (face | hair | ears | neck | body).astype(np.float32)
    mask = cv2.GaussianBlur(mask, (0, 0), 1.0)
    z = cv2.GaussianBlur(z.astype(np.float32), (0, 0), 2.0)
    gy, gx = np.gradient(z)
    n = np.dstack([-gx, -gy, np.ones_like(z)])
    n /= np.linalg.norm(n, axis=2, keepdims=True)

    albedo = np.empty((CANVAS_H, CANVAS_W, 3), np.float32)
    albedo[:] = p.skin
    albedo[neck] = np.array(p.skin) * 0.93
    hair_tex = 1 + 0.12 * np.sin(X * 0.9 + np.sin(Y * 0.13) * 3) * np.sin(Y * 0.05 + X * 0.02)
    albedo[hair] = np.array(p.hair_colour) * hair_tex[hair, None]
    # Cheek colour, beard shadow and marks are part of the skin.
    blush = sum(g(sx * p.a * 0.5, p.nose_y * 0.5, p.a * 0.2, p.b * 0.12) for sx in (-1, 1))
    albedo *= 1 - 0.08 * blush[..., None] * np.array([0.6, 0.8, 0.0])
    # Periorbital darkening (lashes, lids, thinner skin): what makes the eye band darker than the cheeks.
    sockets = sum(g(sx * p.eye_dx, -p.eye_y, p.eye_w * 1.3, p.eye_w * 0.8) for sx in (-1, 1))
    albedo *= (1 - 0.25 * np.minimum(sockets, 1) * face)[..., None]
    if p.beard > 0:
        jaw = (face & (Y > p.nose_y + 6)).astype(np.float32)
        jaw = cv2.GaussianBlur(jaw, (0, 0), 6) * (1 - g(0, p.mouth_y, p.mouth_w * 0.9, 10))
        albedo *= (1 - 0.3 * p.beard * jaw)[..., None]
    for mx, my, mr in p.marks:
        cv2.circle(
            albedo,
            (int(HEAD_CX + mx), int(HEAD_CY + my)),
            int(round(mr)),
            tuple(float(c) for c in np.array(p.skin) * 0.45),
            -1,
            cv2.LINE_AA,
        )
    skin_mask = (face & ~hair).astype(np.float32)
    return p, n, mask, albedo, body, skin_mask


def _ellipse(img, c, axes, angle, colour, thickness=-1, a0=0, a1=360):
    cv2.ellipse(
        img,
        (int(round(c[0] * 4)), int(round(c[1] * 4))),
        (max(1, int(round(axes[0] * 4))), max(1, int(round(axes[1] * 4)))),
        float(angle),
        a0,
        a1,
        _col(colour),
        thickness,
        cv2.LINE_AA,
        2,
    )


def _col(c) -> tuple:
    return tuple(float(x) for x in c)


def _draw_features(img: np.ndarray, p: Identity, e: dict) -> None:
    """Eyes, brows and mouth with the capture's expression, on the albedo canvas (in place)."""
    cy = HEAD_CY
    for sx in (-1, 1):
        c = (HEAD_CX + sx * p.eye_dx, cy - p.eye_y)
        tilt = sx * p.eye_tilt
        h = p.eye_w * p.eye_h * e["eye_open"]
        lid = np.array(p.skin) * 0.8
        _ellipse(img, c, (p.eye_w * 1.12, h * 1.5), tilt, lid)  # lid shadow
        _ellipse(img, c, (p.eye_w, h), tilt, (215, 220, 225))
        ir = p.eye_w * 0.5
        gaze = e["gaze"] * p.eye_w * 0.15
        ic = (c[0] + gaze, c[1] - h * 0.1)
        _ellipse(img, ic, (ir, ir), 0, p.iris)
        _ellipse(img, ic, (ir * 0.45, ir * 0.45), 0, (12, 12, 12))
        ring = ir * 1.3  # lids cover whatever of the iris lies outside the eye opening
        _ellipse(img, c, (p.eye_w + ring / 2, h + ring / 2), tilt, lid, max(1, int(ring)))
        _ellipse(img, c, (p.eye_w, h), tilt, (25, 22, 25), 3, 185, 355)  # upper lid and lashes
        # Brow: a thick arc above the eye.
        by = c[1] - p.brow_gap - e["brow_raise"]
        bw = p.eye_w * p.brow_len
        _ellipse(
            img,
            (c[0] + sx * 3, by + p.brow_arch),
            (bw, p.brow_arch + p.brow_thick * 0.5),
            sx * p.brow_tilt,
            p.brow_colour,
            int(max(2, p.brow_thick)),
            200,
            340,
        )
    # Nostrils.
    for sx in (-1, 1):
        _ellipse(
            img,
            (HEAD_CX + sx * p.nose_w * 0.32, cy + p.nose_y + 3),
            (p.nose_w * 0.13, 3.2),
            0,
            tuple(np.array(p.skin) * 0.45),
        )
    # Mouth: corners move up with a smile, the lips part when open.
    my, mw = cy + p.mouth_y, p.mouth_w * (1 + 0.12 * e["smile"])
    curve = 10 * e["smile"]
    opening = e["mouth_open"] * p.lip_lo * 1.2
    n = 24
    t = np.linspace(-1, 1, n)
    xs = HEAD_CX + t * mw
    mid = my - curve * (1 - t**2) + curve  # corners at my, centre lower when smiling
    upper = mid - p.lip_up * (1 - t**2) ** 0.6 - opening * 0.3 * (1 - t**2)
    lower = mid + p.lip_lo * (1 - t**2) ** 0.6 + opening * (1 - t**2)
    lips = np.concatenate([np.stack([xs, upper], 1), np.stack([xs[::-1], lower[::-1]], 1)])
    cv2.fillPoly(img, [np.round(lips * 4).astype(np.int32)], _col(p.lip_colour), cv2.LINE_AA, 2)
    if opening > 1:
        gap = np.concatenate(
            [
                np.stack([xs, mid - opening * 0.3 * (1 - t**2)], 1),
                np.stack([xs[::-1], (mid + opening * 0.7 * (1 - t**2))[::-1]], 1),
            ]
        )
        cv2.fillPoly(img, [np.round(gap * 4).astype(np.int32)], (40, 40, 70), cv2.LINE_AA, 2)
    line = np.stack([xs, mid], 1)
    cv2.polylines(
        img, [np.round(line * 4).astype(np.int32)], False, _col(np.array(p.lip_colour) * 0.45), 2, cv2.LINE_AA, 2
    )


def _background(rng: np.random.Generator) -> np.ndarray:
    """A cluttered shop background: a wall gradient with shelves, boxes, signs and lights."""
    c0, c1 = rng.uniform(40, 230, 3), rng.uniform(40, 230, 3)
    t = np.linspace(0, 1, FRAME_H, dtype=np.float32)[:, None, None]
    if rng.uniform() < 0.5:
        t = np.linspace(0, 1, FRAME_W, dtype=np.float32)[None, :, None]
    bg = np.ascontiguousarray(np.broadcast_to(c0 * (1 - t) + c1 * t, (FRAME_H, FRAME_W, 3)), np.float32)
    for _ in range(int(rng.integers(12, 30))):
        col = tuple(float(x) for x in rng.uniform(0, 255, 3))
        kind = rng.integers(4)
        x, y = (int(v) for v in rng.uniform((0, 0), (FRAME_W, FRAME_H)))
        if kind == 0:
            w, h = (int(v) for v in rng.uniform((20, 10), (220, 160)))
            cv2.rectangle(bg, (x, y), (x + w, y + h), col, -1)
        elif kind == 1:
            cv2.circle(bg, (x, y), int(rng.uniform(8, 70)), col, -1, cv2.LINE_AA)
        elif kind == 2:
            cv2.line(bg, (0, y), (FRAME_W, y + int(rng.uniform(-20, 20))), col, int(rng.integers(3, 14)))
        else:
            pts = rng.uniform((x - 80, y - 80), (x + 80, y + 80), (int(rng.integers(3, 6)), 2))
            cv2.fillPoly(bg, [pts.astype(np.int32)], col, cv2.LINE_AA)
    return cv2.GaussianBlur(bg, (0, 0), float(rng.uniform(0.8, 3.0)))


@functools.lru_cache(maxsize=4)
def _fixed_background(seed: int) -> np.ndarray:
    """The backdrop of CaptureRanges.background_seed: the same pixels for every capture (read-only)."""
    bg = _background(np.random.default_rng([0xBA6, int(seed)]))
    bg.setflags(write=False)
    return bg


def _clothing(rng: np.random.Generator, body: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A colour and pattern for this capture's clothes (returns the albedo values and their mask)."""
    base = rng.uniform(20, 235, 3).astype(np.float32)
    other = rng.uniform(20, 235, 3).astype(np.float32)
    ys, xs = np.nonzero(body)
    pattern = rng.integers(3)
    period = rng.uniform(10, 40)
    if pattern == 0:
        w = np.zeros(len(ys), np.float32)
    elif pattern == 1:
        w = (np.sin(ys / period * 6.283) > 0).astype(np.float32)
    else:
        w = ((np.sin(ys / period * 6.283) > 0) ^ (np.sin(xs / period * 6.283) > 0)).astype(np.float32)
    return base * (1 - w[:, None]) + other * w[:, None], (ys, xs)


def _sample_capture(rng: np.random.Generator, r: CaptureRanges) -> dict:
    u = lambda lo_hi: float(rng.uniform(*lo_hi))  # noqa: E731
    return {
        "light_x": u(r.light_x),
        "light_y": u(r.light_y),
        "rotation": float(rng.uniform(-r.rotation_deg, r.rotation_deg)),
        "scale": u(r.scale),
        "shift_x": float(rng.uniform(-r.shift_px[0], r.shift_px[0])),
        "shift_y": float(rng.uniform(-r.shift_px[1], r.shift_px[1])),
        "gain": u(r.gain),
        "temp": float(rng.uniform(-r.color_temp, r.color_temp)),
        "gamma": u(r.gamma),
        "noise": u(r.noise_sigma),
        "blur": u(r.blur_sigma),
        "quality": int(rng.integers(r.jpeg_quality[0], r.jpeg_quality[1] + 1)),
        "smile": u(r.smile),
        "eye_open": u(r.eye_open),
        "brow_raise": u(r.brow_raise_px),
        "mouth_open": u(r.mouth_open),
        "gaze": float(rng.uniform(-1, 1)),
    }


def render(identity: int, capture_seed: int, ranges: CaptureRanges = CaptureRanges(), **overrides) -> Capture:
    """Draw one capture of `identity`. Deterministic in (identity, capture_seed, ranges, overrides).

    `overrides` replace sampled capture parameters (e.g. scale=0.2 for a tiny face, gain=0.1 for a
    dark one), which is how tests make bad photos on purpose.
    """
    rng = np.random.default_rng([0xCA7, int(identity), int(capture_seed)])
    e = _sample_capture(rng, ranges)
    e.update(overrides)
    p, n, mask, base_albedo, body, skin_mask = _geometry(int(identity))

    albedo = base_albedo.copy()
    _draw_features(albedo, p, e)
    vals, idx = _clothing(rng, body)
    albedo[idx] = vals

    lx, ly = e["light_x"], e["light_y"]
    lz = math.sqrt(max(0.05, 1 - lx * lx - ly * ly))
    ambient = 0.3
    lam = np.maximum(n[..., 0] * lx + n[..., 1] * ly + n[..., 2] * lz, 0)
    shade = ambient + (1 - ambient) * lam / lz  # 1.0 for a surface facing the camera under head-on light
    hx, hy, hz = lx, ly, lz + 1  # Blinn-Phong half vector with the viewer on the z axis
    hn = math.sqrt(hx * hx + hy * hy + hz * hz)
    spec = np.maximum(n[..., 0] * hx + n[..., 1] * hy + n[..., 2] * hz, 0) / hn
    s8 = spec * spec
    s8 *= s8
    s8 *= s8
    spec = 60.0 * s8 * s8 * s8 * skin_mask  # spec ** 24, by squaring (np.power is slow here)
    person = albedo * np.minimum(shade, 1.35)[..., None] + spec[..., None]

    # Pose: rotate and scale about the head centre, then place it in the frame.
    s, rot = e["scale"], e["rotation"]
    tx = FRAME_W / 2 + e["shift_x"]
    ty = FRAME_H * 0.46 + e["shift_y"]
    M = cv2.getRotationMatrix2D((HEAD_CX, HEAD_CY), rot, s)
    M[0, 2] += tx - HEAD_CX
    M[1, 2] += ty - HEAD_CY
    warped = cv2.warpAffine(person, M, (FRAME_W, FRAME_H), flags=cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(mask, M, (FRAME_W, FRAME_H), flags=cv2.INTER_LINEAR)[..., None]
    bg = _background(rng) if ranges.background_seed is None else _fixed_background(ranges.background_seed)
    frame = bg * (1 - alpha) + warped * alpha

    # Camera response: optics blur, gain, white balance, gamma, sensor noise, JPEG.
    if e["blur"] > 0.05:
        frame = cv2.GaussianBlur(frame, (0, 0), e["blur"])
    frame = frame * e["gain"]
    frame *= np.array([1 - e["temp"], 1.0, 1 + e["temp"]], np.float32)
    lut = (255.0 * (np.arange(256) / 255.0) ** (1.0 / e["gamma"])).astype(np.uint8)
    frame = cv2.LUT(np.clip(frame, 0, 255).astype(np.uint8), lut).astype(np.float32)
    frame += rng.standard_normal(frame.shape, dtype=np.float32) * np.float32(e["noise"])
    img = np.clip(frame, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, e["quality"]])
    if not ok:
        raise CameraError("JPEG encoding failed")

    def to_frame(x, y):
        return (float(M[0, 0] * x + M[0, 1] * y + M[0, 2]), float(M[1, 0] * x + M[1, 1] * y + M[1, 2]))

    left = to_frame(HEAD_CX - p.eye_dx, HEAD_CY - p.eye_y)
    right = to_frame(HEAD_CX + p.eye_dx, HEAD_CY - p.eye_y)
    cx, cy = to_frame(HEAD_CX, HEAD_CY)
    box = (int(cx - p.a * s), int(cy - p.b * s), int(2 * p.a * s), int(2 * p.b * s))
    return Capture(buf.tobytes(), int(identity), e, (left, right), box)


def render_empty(seed: int, quality: int = 90) -> bytes:
    """A frame of the shop with nobody in it (the camera pointed at the wrong place)."""
    img = np.clip(_background(np.random.default_rng([0xE3, int(seed)])), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise CameraError("JPEG encoding failed")
    return buf.tobytes()


# -- the three cameras -----------------------------------------------------------------------------
class SyntheticCamera:
    """Photos of one procedural customer; every capture differs, the identity does not."""

    def __init__(self, identity: int, seed: int = 0, ranges: CaptureRanges = CaptureRanges()):
        self.identity, self.ranges = int(identity), ranges
        self._seeds = np.random.default_rng([0x5EC, int(identity), int(seed)])

    def capture_full(self, **overrides) -> Capture:
        return render(self.identity, int(self._seeds.integers(2**62)), self.ranges, **overrides)

    def capture(self) -> bytes:
        return self.capture_full().jpeg


class WebcamCamera:
    """A real camera through `cv2.VideoCapture(index)`, opened only for the duration of a capture."""

    def __init__(
        self, index: int = 0, warmup_frames: int = 5, quality: int = 90, width: int = FRAME_W, height: int = FRAME_H
    ):
        self.index, self.warmup, self.quality = int(index), int(warmup_frames), int(quality)
        self.size = (int(width), int(height))

    def capture(self) -> bytes:
        cap = cv2.VideoCapture(self.index)
        try:
            if not cap.isOpened():
                raise CameraError(f"camera {self.index} could not be opened")
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])
            frame = None
            for _ in range(self.warmup + 1):  # let auto-exposure settle
                ok, f = cap.read()
                if ok:
                    frame = f
            if frame is None:
                raise CameraError(f"camera {self.index} delivered no frame")
        finally:
            cap.release()
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise CameraError("JPEG encoding failed")
        return buf.tobytes()


class FileCamera:
    """An image file taken as the photo, bytes unchanged (the verifier checks them)."""

    def __init__(self, path: str | Path, max_bytes: int | None = None):
        from .decode import Limits

        self.path = Path(path)
        self.max_bytes = Limits().max_bytes if max_bytes is None else int(max_bytes)

    def capture(self) -> bytes:
        try:
            with self.path.open("rb") as f:
                data = f.read(self.max_bytes + 1)  # one byte more lets decode say "too large"
        except OSError as e:
            raise CameraError(f"cannot read {self.path}: {e.strerror}") from None
        return data


def time_synthetic(frames: int = 20, identity: int = 1) -> float:
    """Mean milliseconds per synthetic frame (after the identity's geometry is cached)."""
    cam = SyntheticCamera(identity)
    cam.capture()
    t0 = time.perf_counter()
    for _ in range(frames):
        cam.capture()
    return (time.perf_counter() - t0) * 1000 / frames
