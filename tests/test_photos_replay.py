"""Replays: exact copies are mismatches, near copies need review, new captures are not flagged."""

import numpy as np
import pytest

from frauddemo.lab import photo_attacks as attacks
from frauddemo.lab import samples
from frauddemo.photos import replay
from frauddemo.photos import verify as ver
from frauddemo.photos.camera import CaptureRanges, SyntheticCamera, render
from frauddemo.photos.decode import PhotoRejected

IDS = range(100, 112)


@pytest.fixture(scope="module")
def purchases():
    out = {}
    for i in IDS:
        jpeg = render(i, 0).jpeg
        out[i] = (jpeg, ver.embed(jpeg))
    return out


def test_every_kind_of_copy_is_flagged(purchases):
    rng = np.random.default_rng(3)
    for i, (jpeg, emb) in purchases.items():
        for kind, data in samples.replay_copies(jpeg, rng).items():
            v = ver.verify(data, emb)
            if kind == "exact":
                assert v.replay == "exact" and v.verdict == ver.MISMATCH, (i, kind)
            else:
                assert v.replay == "near" and v.verdict == ver.REVIEW, (i, kind, v.replay_score)
            assert v.reasons[0].startswith("replay:")


def test_new_captures_of_the_same_customer_are_not_flagged(purchases):
    for i, (_, emb) in purchases.items():
        earlier = [emb]
        for c in (1, 2, 3):
            jpeg = render(i, c).jpeg
            v = ver.verify(jpeg, emb, earlier[1:])
            assert v.replay is None, (i, c, v.replay_score)
            assert v.replay_score < ver.VerifyConfig().near_copy_score
            earlier.append(ver.embed(jpeg))


def test_earlier_return_photos_count_too(purchases):
    jpeg0, emb0 = purchases[IDS[0]]
    first_return = render(IDS[0], 1).jpeg
    v = ver.verify(first_return, emb0, [ver.embed(first_return)])
    assert v.replay == "exact"


def test_a_copy_too_small_to_use_is_still_caught_as_a_replay(purchases):
    import cv2

    jpeg, emb = purchases[IDS[1]]
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    ok, buf = cv2.imencode(".jpg", cv2.resize(img, (200, 150), interpolation=cv2.INTER_AREA))
    v = ver.verify(buf.tobytes(), emb)
    assert v.rejected is not None and v.replay == "near"


def test_copy_score_is_high_for_copies_and_low_for_other_frames(purchases):
    import cv2

    jpeg, emb = purchases[IDS[2]]
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert replay.copy_score(replay.fingerprint(img), emb.fingerprint) > 0.99
    other = cv2.imdecode(np.frombuffer(render(IDS[3], 0).jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert replay.copy_score(replay.fingerprint(other), emb.fingerprint) < 0.8
    flat = np.full_like(img, 128)
    assert replay.copy_score(replay.fingerprint(flat), emb.fingerprint) < 0.5


def test_near_copy_threshold_is_configurable(purchases):
    jpeg, emb = purchases[IDS[4]]
    data = samples.replay_copies(jpeg, np.random.default_rng(0))["brightened"]
    assert ver.verify(data, emb, (), ver.VerifyConfig(near_copy_score=1.01)).replay is None
    assert ver.verify(data, emb).replay == "near"


# A till whose camera faces one wall: the wall is most of the frame, in every capture.
WALL = CaptureRanges(background_seed=9)
WALL_IDS = range(300, 306)


def _usable(cam):
    for _ in range(10):
        jpeg = cam.capture()
        try:
            return jpeg, ver.embed(jpeg)
        except PhotoRejected:
            continue
    raise RuntimeError("no usable capture")


@pytest.fixture(scope="module")
def at_the_wall():
    out = {}
    for i in WALL_IDS:
        cam = SyntheticCamera(i, seed=1, ranges=WALL)
        out[i] = (*_usable(cam), [cam.capture() for _ in range(2)])
    return out


def _score(jpeg, emb):
    return ver.verify(jpeg, emb, (), ver.VerifyConfig(near_copy_score=replay.NEAR_COPY_SCORE)).replay_score


def test_new_captures_at_the_same_wall_are_not_near_copies(at_the_wall):
    scores = [_score(r, emb) for _, emb, returns in at_the_wall.values() for r in returns]
    flagged = [s for s in scores if s >= replay.NEAR_COPY_SCORE]
    assert len(flagged) <= 1, scores  # measured: 2.3 % of such pairs (the whole frame alone: 44 %)


def test_copies_taken_at_the_same_wall_are_near_copies(at_the_wall):
    rng = np.random.default_rng(5)
    missed = []
    for i, (jpeg, emb, _) in at_the_wall.items():
        for kind, data in attacks.replays(jpeg, rng).items():
            s = _score(data, emb)
            if s is None or s < replay.NEAR_COPY_SCORE:
                missed.append((i, kind, s))
    assert len(missed) <= 1, missed  # 6 x 9 copies; measured >= 95.5 % caught for every kind


def test_the_person_must_match_where_the_wall_does(at_the_wall):
    """Aligned on the wall (identity), a new capture's wall correlates highly but its person does not:
    the score is the lower of the two."""
    _, emb, returns = at_the_wall[WALL_IDS[0]]
    a = ver.analyze(returns[0])
    whole = replay.copy_score(a.fingerprint, emb.fingerprint)
    both = replay.copy_score(a.fingerprint, emb.fingerprint, None, emb.eyes)
    assert both <= whole
    mask = replay.person_mask(emb.eyes)
    assert mask is not None and 0.15 < mask.mean() < 0.7
    assert replay.person_mask((10.0, 10.0, 10.2, 10.0)) is None  # eyes too close to place anyone


def test_a_crop_scores_as_a_copy_not_lowered_by_its_edge(purchases):
    """The warped picture's edge (interpolated with what lies outside it) is left out of the overlap."""
    jpeg, emb = purchases[IDS[5]]
    img = attacks.decode(jpeg)
    h, w = img.shape[:2]
    crop = img[int(h * 0.1) : h - int(h * 0.1), int(w * 0.12) : w - int(w * 0.08)]
    a = ver.analyze(attacks._enc(crop, np.random.default_rng(0)))
    assert replay.match_score(a.fingerprint, emb.fingerprint, a.print_eyes, emb.eyes) > 0.97
