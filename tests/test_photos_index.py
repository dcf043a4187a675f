"""Photo replay, for real (issue 17, item 1): copies are recognised when mirrored, cropped, zoomed,
rotated, re-encoded, relit, seen in perspective or shot again off a screen, and across receipts, by a
store-wide index kept in the replicated stores, while new captures of the same customer are not."""

import json
import random
import threading

import numpy as np
import pytest

from conftest import wait_converged, wait_until
from frauddemo.config import StoreRef
from frauddemo.detection import DetectionConfig
from frauddemo.detector import Detector
from frauddemo.lab import photo_attacks as attacks
from frauddemo.photos import index, replay
from frauddemo.photos import verify as ver
from frauddemo.photos.camera import render
from frauddemo.retail import TerminalKeys, verdict_key
from frauddemo.till import HackedTill, Till, capture

KEYS = TerminalKeys(bytes(range(32)))
IDS = range(60100, 60106)  # not the identities the threshold was set on (20000-20079)


@pytest.fixture(scope="module")
def purchases():
    return {i: render(i, 0).jpeg for i in IDS}


@pytest.mark.parametrize("kind", sorted(attacks.KINDS))
def test_every_kind_of_copy_is_flagged_against_its_receipt(purchases, kind):
    rng = np.random.default_rng(11)
    for i, jpeg in purchases.items():
        emb = ver.embed(jpeg)
        data = attacks.KINDS[kind](attacks.decode(jpeg), rng)
        v = ver.verify(data, emb)
        assert v.replay == "near", (i, kind, v.replay_score, v.rejected)


def test_new_captures_are_not_copies(purchases):
    for i, jpeg in purchases.items():
        emb = ver.embed(jpeg)
        for c in (1, 2, 3):
            v = ver.verify(render(i, c).jpeg, emb)
            assert v.replay is None, (i, c, v.replay_score)


def test_a_mirror_image_scores_like_the_picture_itself(purchases):
    jpeg = purchases[IDS[0]]
    a = ver.analyze(jpeg)
    m = ver.analyze(attacks.mirror(attacks.decode(jpeg), np.random.default_rng(0)))
    assert replay.match_score(m.fingerprint, a.fingerprint, m.print_eyes, a.print_eyes) > 0.95
    assert replay.copy_score(m.fingerprint, a.fingerprint) < 0.75  # what the unmirrored check saw
    assert replay.hamming(a.face_hash, m.face_hash) <= 24  # the symmetric face hash stays close


def test_embeddings_and_prints_round_trip(purchases):
    e = ver.embed(purchases[IDS[1]])
    back = ver.Embedding.from_bytes(e.to_bytes())
    assert back.eyes == e.eyes and back.face_hash == e.face_hash and back.fingerprint == e.fingerprint
    fp, eyes, h = replay.unpack_print(ver.replay_print(purchases[IDS[1]]))
    assert fp == e.fingerprint and h == e.face_hash


@pytest.fixture
def demo(stores, links):
    st = stores("a", "b")
    links.mesh([srv for srv, _ in st.values()])
    det = Detector(
        [StoreRef(n, *srv.credentials("detector")) for n, (srv, _) in st.items()],
        DetectionConfig(),
        KEYS,
        name="index-detector",
        workers=1,
    )
    t = threading.Thread(target=det.run, daemon=True)
    t.start()
    (_, a), (_, b) = st["a"], st["b"]
    yield {"st": st, "a": a, "b": b, "till_a": Till(a, KEYS, "a-pos-1"), "hacked_b": HackedTill(b, KEYS, "b-pos-9")}
    det.stop.set()
    t.join(10)


def verdict(store, aid, timeout=30):
    wait_until(lambda: store.hgetall(verdict_key(aid)).get("decision"), timeout, what=f"verdict of {aid}")
    return store.hgetall(verdict_key(aid))


def test_a_photo_replayed_on_another_receipt_is_found_store_wide(demo):
    """The purchase photo of receipt 1, mirrored, presented at the other store for receipt 2 of the
    same customer: its own receipt's photo is a new capture, so only the store-wide index can tell."""
    rng = random.Random(4)
    cust = "cust-00042"
    p1 = demo["till_a"].purchase(cust, {"shirt": 1}, capture(cust, rng))
    p2 = demo["till_a"].purchase(cust, {"watch": 1}, capture(cust, rng))
    wait_until(
        lambda: demo["a"].smembers(index.customer_key(cust)) >= {f"{p1['photo']}|p:{p1['receipt']}"},
        20,
        what="the purchase photos in the index",
    )
    wait_converged(demo["st"])
    assert demo["b"].smembers(index.customer_key(cust))  # replicated like everything else
    stolen = demo["a"].get_blob("b:photo:" + p1["photo"])
    mirrored = attacks.mirror(attacks.decode(stolen), np.random.default_rng(1))
    hacked = demo["hacked_b"].refund(p2["receipt"], cust, 24999, mirrored, "cross-receipt-replay")
    v = verdict(demo["b"], hacked.id)
    photo = json.loads(v["photo"])
    assert photo["replay"] == "near" and photo["replay_of"] == p1["photo"], photo
    assert photo["replay_tag"] == f"p:{p1['receipt']}" and photo["replay_scope"] == "store-wide"
    assert v["decision"] in ("review", "block")
    assert "replayed_photo" in [r["code"] for r in json.loads(v["reasons"])]

    # and an honest return of receipt 1 with a new capture is not taken for a replay
    honest = demo["till_a"].return_(p1["receipt"], capture(cust, rng)).attempt
    hv = verdict(demo["a"], honest.id)
    assert json.loads(hv["photo"]).get("replay") is None


def test_photos_already_compared_are_not_matched_again_but_exact_copies_still_count(stores, purchases):
    """The detector's worker has matched the return photo against its receipt's purchase photo
    (verify); the store-wide check leaves that photo out of its fingerprint matches (their cost is on
    the verdict's path), yet the same bytes under another tag are still an exact copy."""
    (_, st) = stores("a")["a"]
    jpeg = purchases[IDS[2]]
    bought = replay.sha256(jpeg)
    st.write_many([index.add_ops(bought, "p:r-1", "cust-7", None, ver.replay_print(jpeg))])
    copy = ver.replay_print(attacks.mirror(attacks.decode(jpeg), np.random.default_rng(2)))
    copy_sha = "0" * 64
    sts = {"a": st}
    near = index.check(sts, copy_sha, copy, "cust-7", "t:x", ver.VerifyConfig().near_copy_score)
    assert near is not None and near["replay"] == "near" and near["replay_of"] == bought
    assert index.check(sts, copy_sha, copy, "cust-7", "t:x", 0.0, compared=frozenset([bought])) is None
    exact = index.check(sts, bought, copy, "cust-7", "t:x", 0.99, compared=frozenset([bought]))
    assert exact is not None and exact["replay"] == "exact"


def test_a_purchase_photo_is_described_before_any_return_needs_it(demo):
    """The detector works out a new purchase photo's print and embedding when it reads the purchase,
    so a return of the receipt does not derive them on its verdict's path."""
    cust = "cust-00043"
    p = demo["till_a"].purchase(cust, {"shirt": 1}, capture(cust, random.Random(5)))
    key = index.PRINT_PREFIX + p["photo"]
    wait_until(lambda: demo["a"].get_blob(key), 30, what="the purchase photo's print")
    stored = replay.unpack_print(demo["a"].get_blob(key))
    expected = replay.unpack_print(ver.replay_print(demo["a"].get_blob("b:photo:" + p["photo"])))
    assert stored[0] == expected[0] and stored[2] == expected[2]


def test_alignment_starts_only_where_frames_already_correlate(purchases):
    """A copy correlates where its alignment starts (from the eyes); two captures with different
    backgrounds mostly do not, and are not worth an alignment: the gate lowers no copy's score."""
    jpeg = purchases[IDS[3]]
    a = ver.analyze(jpeg)
    warp = replay._eye_warp(a.print_eyes, a.print_eyes)
    for kind in ("crop", "rotate", "zoom", "mirror"):
        c = ver.analyze(attacks.KINDS[kind](attacks.decode(jpeg), np.random.default_rng(3)))
        assert replay.match_score(c.fingerprint, a.fingerprint, c.print_eyes, a.print_eyes) >= replay.NEAR_COPY_SCORE
    other = ver.analyze(render(IDS[3], 4).jpeg)
    assert replay.start_score(a.fingerprint, a.fingerprint, warp) > 0.99
    assert replay.start_score(other.fingerprint, a.fingerprint, warp) < replay.NEAR_COPY_SCORE


def test_prints_derived_on_the_verdict_path_are_bounded_and_stored_once(stores, purchases):
    """Other people's photos only propose candidates: at most OTHERS_DERIVED of their missing prints
    are derived per check (a full analysis each), and what is derived is stored, so never twice; the
    customer's own photos are all derived."""
    (_, st) = stores("a")["a"]
    jpegs = {replay.sha256(purchases[i]): purchases[i] for i in IDS}
    probe = ver.replay_print(render(IDS[0], 9).jpeg)
    fhash = replay.unpack_print(probe)[2]
    for k, (sha, jpeg) in enumerate(jpegs.items()):
        # the first two are the customer's; the others share the probe's face hash bands (as if alike)
        st.write_many(
            [
                [index.ops.blob("b:photo:" + sha, jpeg)],
                index.add_ops(sha, f"p:r-{k}", "cust-7" if k < 2 else f"cust-{k}", fhash if k >= 2 else None),
            ]
        )
    stored = lambda: sum(st.get_blob(index.PRINT_PREFIX + s) is not None for s in jpegs)  # noqa: E731
    _, _, cands = index.gather({"a": st}, "0" * 64, probe, "cust-7", "t:x")
    kinds = [k for _, k, _ in cands]
    assert kinds.count(index.PHOTO) == 2 and kinds.count(index.OTHER) == index.OTHERS_DERIVED
    index.check({"a": st}, "0" * 64, probe, "cust-7", "t:x", 0.99, st)
    assert stored() == 2 + index.OTHERS_DERIVED
    index.check({"a": st}, "0" * 64, probe, "cust-7", "t:x", 0.99, st)
    assert stored() == min(len(jpegs), 2 + 2 * index.OTHERS_DERIVED)


def test_matches_split_among_workers_find_what_one_finds(stores, purchases):
    """The detector hands a check's matches to its photo workers in parts; the best match is the one
    an inline check finds."""
    import concurrent.futures

    (_, st) = stores("a")["a"]
    jpeg = purchases[IDS[4]]
    bought = replay.sha256(jpeg)
    writes = [index.add_ops(bought, "p:r-0", "cust-8", None, ver.replay_print(jpeg))]
    for c in range(1, 9):  # the customer's other photos: new captures
        other = render(IDS[4], c).jpeg
        writes.append(index.add_ops(replay.sha256(other), f"p:r-{c}", "cust-8", None, ver.replay_print(other)))
    st.write_many(writes)
    copy = ver.replay_print(attacks.rotate(attacks.decode(jpeg), np.random.default_rng(5)))
    near = ver.VerifyConfig().near_copy_score
    inline = index.check({"a": st}, "0" * 64, copy, "cust-8", "t:x", near)
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        c = index.Check({"a": st}, "0" * 64, copy, "cust-8", "t:x", submit=ex.submit, parts=2)
        assert len(c.futures) == 2
        split = c.result(near)
    assert inline is not None and inline["replay_of"] == bought and split == inline

    def busy_pool(*_):
        raise AssertionError("a check with a few cheap matches waited for the workers")

    st.write_many([index.add_ops(bought, "p:r-9", "cust-9")])  # one photo of this customer: one match
    few = index.Check({"a": st}, "0" * 64, copy, "cust-9", "t:x", submit=busy_pool, parts=2)
    assert few.result(near)["replay_of"] == bought
