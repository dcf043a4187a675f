"""Photo storage on real servers: content-addressed JPEG (its embedding derived, never stored), TTL, cap,
thumbnails, replication."""

import cv2
import numpy as np
import pytest

from conftest import wait_until
from frauddemo.lab import samples
from frauddemo.photos import verify as ver
from frauddemo.photos.camera import render, render_empty
from frauddemo.photos.decode import PhotoRejected
from frauddemo.photos.replay import sha256
from frauddemo.photos.storage import EMB_PREFIX, PHOTO_PREFIX, PhotoPolicy, PhotoStore, normalise


@pytest.fixture
def photo_store(stores):
    _, store = stores("a")["a"]
    return PhotoStore(store)


def test_photo_is_stored_by_content_hash_and_its_embedding_derived(photo_store):
    jpeg = render(20, 0).jpeg
    stored = photo_store.put(jpeg)
    assert stored.sha256 == sha256(jpeg) and not stored.reencoded and stored.rejected is None
    assert photo_store.get(stored.sha256) == jpeg
    r = photo_store.store.r
    assert r.exists(PHOTO_PREFIX + stored.sha256) and not r.exists(EMB_PREFIX + stored.sha256)
    emb = photo_store.embedding(stored.sha256)
    assert emb.sha256 == stored.sha256 and float(emb.vector @ stored.embedding.vector) > 0.9999
    fresh = PhotoStore(photo_store.store).embedding(stored.sha256)  # another process: from the photo
    assert float(fresh.vector @ stored.embedding.vector) > 0.9999


def test_blobs_carry_the_retention_ttl(stores):
    _, store = stores("a")["a"]
    ps = PhotoStore(store, PhotoPolicy(retention_ms=60_000))
    stored = ps.put(render(21, 0).jpeg)
    assert 50_000 < store.r.pttl(PHOTO_PREFIX + stored.sha256) <= 60_000


def test_storing_the_same_photo_twice_keeps_one_copy(photo_store):
    jpeg = render(22, 0).jpeg
    a, b = photo_store.put(jpeg), photo_store.put(jpeg)
    assert a.sha256 == b.sha256
    keys = [k for k in photo_store.store.r.scan_iter(match="b:photo:*")]
    assert len(keys) == 1


def test_other_formats_and_large_photos_are_reencoded_as_jpeg(photo_store):
    png = samples.format_variants(identity=23)["png_rgba"]
    stored = photo_store.put(png)
    assert stored.reencoded and stored.sha256 != sha256(png)
    jpeg = photo_store.get(stored.sha256)
    assert jpeg[:3] == b"\xff\xd8\xff" and sha256(jpeg) == stored.sha256
    big = cv2.resize(cv2.imdecode(np.frombuffer(render(23, 1).jpeg, np.uint8), 1), (1920, 1440))
    ok, buf = cv2.imencode(".jpg", big)
    s2 = photo_store.put(buf.tobytes())
    assert s2.reencoded and (s2.width, s2.height) == (1280, 960)


def test_size_cap(photo_store):
    noise = np.random.default_rng(0).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", noise)
    with pytest.raises(PhotoRejected) as e:
        normalise(buf.tobytes(), PhotoPolicy(max_bytes=50_000))
    assert e.value.kind == "too_large"
    data, w, h, reencoded = normalise(buf.tobytes(), PhotoPolicy(max_bytes=900_000))
    assert reencoded and len(data) <= 900_000


def test_bad_bytes_are_not_stored(photo_store):
    with pytest.raises(PhotoRejected):
        photo_store.put(b"not a photo")
    assert not list(photo_store.store.r.scan_iter(match="b:*"))


def test_a_photo_without_a_face_is_stored_without_embedding(photo_store):
    stored = photo_store.put(render_empty(3))
    assert stored.embedding is None and stored.rejected == ver.NO_FACE
    assert photo_store.get(stored.sha256) is not None
    assert not photo_store.store.r.exists(EMB_PREFIX + stored.sha256)
    assert photo_store.embedding(stored.sha256) is None


def test_thumbnails_are_made_on_demand_and_never_stored(photo_store):
    stored = photo_store.put(render(24, 0).jpeg)
    before = set(photo_store.store.r.scan_iter())
    thumb = photo_store.thumbnail(stored.sha256)
    img = cv2.imdecode(np.frombuffer(thumb, np.uint8), cv2.IMREAD_COLOR)
    assert max(img.shape[:2]) == 160 and len(thumb) < len(photo_store.get(stored.sha256))
    assert photo_store.thumbnail(stored.sha256) is thumb  # cached in this process
    assert set(photo_store.store.r.scan_iter()) == before
    assert photo_store.thumbnail("0" * 64) is None
    with pytest.raises(ValueError):
        photo_store.thumbnail("../../etc/passwd")


def test_listings_carry_references_not_bytes(photo_store):
    stored = photo_store.put(render(25, 0).jpeg)
    ref = stored.ref()
    assert ref["sha256"] == stored.sha256 and ref["photo"] == PHOTO_PREFIX + stored.sha256
    assert all(isinstance(v, str) and len(v) < 200 for v in ref.values())


def test_verify_a_return_photo_against_the_stored_purchase(photo_store):
    purchase = photo_store.put(render(26, 0).jpeg)
    same = photo_store.verify_return(render(26, 1).jpeg, purchase.sha256)
    other = photo_store.verify_return(render(27, 1).jpeg, purchase.sha256)
    assert same.similarity > other.similarity
    replayed = photo_store.verify_return(photo_store.get(purchase.sha256), purchase.sha256)
    assert replayed.replay == "exact" and replayed.verdict == ver.MISMATCH
    missing = photo_store.verify_return(None, purchase.sha256)
    assert missing.rejected == ver.MISSING


def test_photos_replicate_to_the_other_store(stores, links):
    named = stores("a", "b")
    (srv_a, a), (srv_b, b) = named["a"], named["b"]
    links.mesh([srv_a, srv_b])
    stored = PhotoStore(a).put(render(28, 0).jpeg)
    at_b = PhotoStore(b)
    wait_until(lambda: at_b.get(stored.sha256) is not None, 20, what="photo at store b")
    assert at_b.get(stored.sha256) == PhotoStore(a).get(stored.sha256)
    emb = at_b.embedding(stored.sha256)
    assert emb is not None and emb.sha256 == stored.sha256
    assert b.r.pttl(PHOTO_PREFIX + stored.sha256) > 0
