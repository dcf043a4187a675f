"""Replays: exact copies are mismatches, near copies need review, new captures are not flagged."""

import numpy as np
import pytest

from frauddemo.lab import samples
from frauddemo.photos import replay
from frauddemo.photos import verify as ver
from frauddemo.photos.camera import render

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
