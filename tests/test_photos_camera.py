"""Cameras: the synthetic customer is stable per identity and varies per capture; files and webcams."""

import cv2
import numpy as np
import pytest

from frauddemo.photos import camera
from frauddemo.photos.camera import (
    CameraError,
    CaptureRanges,
    FileCamera,
    Identity,
    SyntheticCamera,
    WebcamCamera,
    render,
)


def decode(jpeg: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return img


def test_frames_are_640x480_jpegs():
    cap = render(3, 0)
    assert cap.jpeg[:3] == b"\xff\xd8\xff" and cap.jpeg[-2:] == b"\xff\xd9"
    assert decode(cap.jpeg).shape == (480, 640, 3)


def test_render_is_deterministic():
    assert render(5, 9).jpeg == render(5, 9).jpeg
    assert render(5, 9).jpeg != render(5, 10).jpeg


def test_identity_traits_are_stable_and_distinct():
    assert Identity.from_seed(11) == Identity.from_seed(11)
    ids = [Identity.from_seed(s) for s in range(40)]
    # Geometry and colouring spread over a range: no two of 40 customers share a face shape.
    assert len({(round(p.a, 2), round(p.b, 2), round(p.eye_dx, 2)) for p in ids}) == 40
    assert np.ptp([p.skin[2] for p in ids]) > 60  # skin tones from light to dark
    assert len({p.hair_style for p in ids}) >= 4


def test_each_capture_varies_at_least_the_required_ranges():
    r = CaptureRanges()
    params = [render(1, c).params for c in range(60)]

    def spread(key):
        v = [p[key] for p in params]
        return min(v), max(v)

    lo, hi = spread("light_x")
    assert r.light_x[0] <= lo and hi <= r.light_x[1] and hi - lo > 0.8
    lo, hi = spread("rotation")
    assert -8 <= lo and hi <= 8 and hi - lo > 10
    lo, hi = spread("gain")
    assert 0.65 <= lo and hi <= 1.3
    lo, hi = spread("quality")
    assert 75 <= lo and hi <= 95
    assert r.light_y == (-0.5, 0.1) and r.scale == (0.75, 0.95) and r.shift_px == (40.0, 25.0)
    assert r.gamma == (0.85, 1.2) and r.noise_sigma == (1.5, 6.0) and r.blur_sigma == (0.0, 1.2)
    assert r.color_temp == pytest.approx(0.10)


def test_background_and_clothing_change_per_capture_but_the_face_stays():
    a, b = render(2, 0), render(2, 1)
    ia, ib = decode(a.jpeg).astype(np.float32), decode(b.jpeg).astype(np.float32)
    # Top-left corner is background: different per capture.
    assert (
        np.abs(ia[:60, :60].mean((0, 1)) - ib[:60, :60].mean((0, 1))).max() > 5
        or np.abs(ia[:60, :60].std() - ib[:60, :60].std()) > 5
    )
    # Eye positions move with pose, and the eye distance scales with it.
    (al, ar), (bl, br) = a.eyes, b.eyes
    assert a.eyes != b.eyes
    da, db = np.hypot(ar[0] - al[0], ar[1] - al[1]), np.hypot(br[0] - bl[0], br[1] - bl[1])
    assert da / db == pytest.approx(a.params["scale"] / b.params["scale"], rel=1e-6)


def test_overrides_make_bad_photos_on_purpose():
    dark = decode(render(4, 0, gain=0.1).jpeg)
    normal = decode(render(4, 0).jpeg)
    assert dark.mean() < normal.mean() / 4
    tiny = render(4, 0, scale=0.3)
    assert tiny.face_box[2] < 80


def test_synthetic_camera_sequence():
    cam = SyntheticCamera(identity=8, seed=1)
    shots = [cam.capture() for _ in range(3)]
    assert len(set(shots)) == 3
    again = SyntheticCamera(identity=8, seed=1)
    assert again.capture() == shots[0]


def test_camera_is_timed_per_frame():
    ms = camera.time_synthetic(frames=2)
    assert 0 < ms < 2000


def test_file_camera_reads_bytes_and_caps_them(tmp_path):
    p = tmp_path / "x.jpg"
    p.write_bytes(b"\xff\xd8\xff" + b"\x00" * 100)
    assert FileCamera(p).capture() == p.read_bytes()
    assert len(FileCamera(p, max_bytes=10).capture()) == 11  # one over the cap, so decode says too_large
    with pytest.raises(CameraError):
        FileCamera(tmp_path / "missing.jpg").capture()


def test_webcam_that_is_not_there_raises_and_releases():
    with pytest.raises(CameraError):
        WebcamCamera(index=97, warmup_frames=0).capture()
