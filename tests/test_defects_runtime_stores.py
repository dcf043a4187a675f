"""Issue 16, runtime defects of the stores, on real servers:
item 2  photo bytes stay out of the op log (blobs replicate by reference), maxmemory with noeviction,
        store memory in /api/status and the metrics;
item 11 labelled counters have their series from the start;
item 12 blobs are write-once and content-addressed, checked by the store; tills never write embeddings;
item 13 a store that cannot persist (disk full) gives 503 + Retry-After + the reason, not a 500."""

import hashlib
import os
import random
import subprocess

import msgpack
import pytest
import redis
from prometheus_client import REGISTRY, generate_latest

from conftest import serving, wait_converged, wait_until
from frauddemo import metrics
from frauddemo.config import StoreRef
from frauddemo.detector import Detector
from frauddemo.photos.storage import EMB_PREFIX, PHOTO_PREFIX
from frauddemo.retail import TerminalKeys
from frauddemo.servers import Server, ServerSpec
from frauddemo.store import Store, StoreError, StoreUnavailable, ops, pack_ops
from frauddemo.till import Till, capture
from frauddemo.web.app import create_app

KEYS = TerminalKeys(bytes(range(32)))


def photo_key(data: bytes) -> str:
    return PHOTO_PREFIX + hashlib.sha256(data).hexdigest()


def sample(text: str, series: str) -> float:
    """The value of one series in Prometheus text format."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{series} not exposed")


def pos_store(srv) -> Store:
    url, pw = srv.credentials("pos")
    return Store.connect(url, pw, replica=srv.spec.name)


# -- item 2: photos by reference -------------------------------------------------------------------
def test_photo_bytes_stay_out_of_the_op_log_and_replicate_by_reference(stores, links):
    st = stores("a", "b")
    (sa, a), (sb, b) = st["a"], st["b"]
    till = Till(pos_store(sa), KEYS, "a-pos-1")
    rng = random.Random(1)
    bought = [till.purchase(f"cust-{i:05d}", {"cap": 1}, capture(f"cust-{i:05d}", rng)) for i in range(3)]
    log = a.r.xrange("fd:log")
    logged = sum(len(f[b"o"]) for _, f in log)
    photo = a.get_blob(PHOTO_PREFIX + bought[0]["photo"])
    assert len(photo) > 20_000
    assert logged < len(photo) / 4, f"{logged} bytes of op log for 3 purchases: photo bytes in the log"
    refs = [op for _, f in log for op in msgpack.unpackb(f[b"o"], raw=True) if op[0] == b"br"]
    assert len(refs) == 3 and all(len(op) <= 3 for op in refs)
    links.mesh([sa, sb])
    wait_converged(st)
    for p in bought:
        key = PHOTO_PREFIX + p["photo"]
        assert b.get_blob(key) == a.get_blob(key), "the blob reached the target with the same bytes"
        assert 0 < b.r.pttl(key) <= a.r.pttl(key) + 1000  # its retention TTL came along
    assert links.stats[("a", "b")].blobs == 3
    assert a.snapshot() == b.snapshot()


def test_a_referenced_blob_expired_at_its_source_is_no_error(stores, links):
    st = stores("a", "b")
    (sa, a), (sb, b) = st["a"], st["b"]
    gone = b"short-lived"
    a.write([ops.blob(photo_key(gone), gone, ttl_ms=1)])
    a.write([ops.hset("h:after", {"f": "1"})])
    wait_until(lambda: not a.r.exists(photo_key(gone)), 5, what="the blob to expire")
    links.start(sa, sb)
    wait_converged(st)
    assert b.hgetall("h:after") == {"f": "1"} and not b.r.exists(photo_key(gone))
    assert links.stats[("a", "b")].state == "up" and links.stats[("a", "b")].malformed == 0


def test_stores_have_maxmemory_with_noeviction_and_refuse_writes_at_it(stores):
    ((srv, a),) = stores("a").values()
    admin = srv.spec.client()
    assert admin.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    assert int(admin.config_get("maxmemory")["maxmemory"]) > 0
    used = int(admin.info("memory")["used_memory"])
    admin.config_set("maxmemory", used + 2 * 1024 * 1024)
    written = 0
    with pytest.raises(StoreUnavailable, match="store a is full"):
        for i in range(200):
            a.write([ops.hset(f"h:fill:{i}", {"v": "x" * 100_000})])
            written += 1
    assert written > 0
    assert all(a.r.exists(f"h:fill:{i}") for i in range(written)), "nothing may be evicted"
    admin.close()


def test_status_page_data_and_metrics_show_store_memory(stores):
    st = stores("a", "b")
    refs = [StoreRef(n, *srv.credentials("detector")) for n, (srv, _) in st.items()]
    limit = int(st["a"][0].spec.client().config_get("maxmemory")["maxmemory"])
    with serving(create_app(refs, KEYS, engine=False)) as http:
        s = http.get("/api/status").json()["stores"]["a"]
        assert s["memory"]["used_bytes"] > 0 and s["memory"]["max_bytes"] == limit
        assert s["memory"]["policy"] == "noeviction" and s["writable"] is True and s["problem"] is None
        http.get("/api/status")
        text = http.get("/metrics").text
    assert sample(text, 'frauddemo_store_maxmemory_bytes{store="a"}') == limit
    assert sample(text, 'frauddemo_store_used_memory_bytes{store="b"}') > 0
    assert sample(text, 'frauddemo_store_writable{store="a"}') == 1


# -- item 11: every labelled series from the start ---------------------------------------------------
def test_labelled_counters_have_series_before_their_first_event(stores, links):
    st = stores("x", "y")
    links.mesh([srv for srv, _ in st.values()])
    wait_until(lambda: links.stats[("x", "y")].state == "up", 10, what="the link")
    Detector([StoreRef(n, *srv.credentials("detector")) for n, (srv, _) in st.items()])
    text = generate_latest(REGISTRY).decode()
    for family in (
        "frauddemo_syncer_resyncs_total",
        "frauddemo_syncer_skipped_ops_total",
        "frauddemo_syncer_applied_ops_total",
    ):
        for src, dst in (("x", "y"), ("y", "x")):
            assert f'{family}{{source="{src}",target="{dst}"}}' in text, (family, src, dst)
    for line in (
        'frauddemo_fraud_alerts_total{decision="block",reason="replayed_photo",store="y"}',
        'frauddemo_detection_decisions_total{decision="review",store="x"}',
        'frauddemo_refund_value_dollars_total{outcome="blocked",store="x"}',
        'frauddemo_return_attempts_total{decision="refused",photo="absent",store="y"}',
        'frauddemo_photo_verification_seconds_count{outcome="rejected"}',
        'frauddemo_transactions_total{store="y",type="return"}',
    ):
        assert line in text, line
    assert metrics.ALERT_DECISIONS == ("review", "block")


# -- item 12: write-once, content-addressed blobs ---------------------------------------------------
def test_a_photo_key_must_be_the_hash_of_its_bytes(stores):
    ((_, a),) = stores("a").values()
    real, forged = b"the customer's face", b"an accomplice's face"
    with pytest.raises(StoreError, match="BLOBHASH"):
        a.write([ops.hset("h:rcpt:r1", {"photo": "x"}), ops.blob(photo_key(real), forged)])
    assert not a.r.exists(photo_key(real)) and not a.r.exists("h:rcpt:r1") and a.seq() == 0
    with pytest.raises(StoreError, match="BLOBHASH"):
        a.write([ops.blob(PHOTO_PREFIX + "not-a-hash", real)])
    a.write([ops.blob(photo_key(real), real)])
    assert a.get_blob(photo_key(real)) == real


def test_the_stores_sha256_agrees_with_hashlib_at_every_padding_edge(stores):
    """The store hashes in Lua (it has only SHA-1 built in): lengths around the 64-byte block and its
    56-byte padding limit, and a photo-sized value."""
    ((_, a),) = stores("a").values()
    rng = random.Random(7)
    for n in (1, 2, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000, 120_000):
        data = rng.randbytes(n)
        with pytest.raises(StoreError, match="BLOBHASH"):  # one bit off: another hash
            a.write([ops.blob(photo_key(data), bytes([data[0] ^ 1]) + data[1:])])
        a.write([ops.blob(photo_key(data), data)])
        assert a.get_blob(photo_key(data)) == data


def test_a_blob_is_never_replaced(stores):
    ((_, a),) = stores("a").values()
    key = EMB_PREFIX + "0" * 64
    first, other = b"v1", b"v2"
    a.write([ops.blob(key, first)])
    with pytest.raises(StoreError, match="BLOBEXISTS"):
        a.write([ops.blob(key, other)])
    a.write([ops.blob(key, first)])  # the same bytes again: nothing changes, no error
    # A merge (any version's inline op) with other bytes leaves the blob as it is, whichever SHA-1
    # is greater (the old rule replaced it when the new one's was).
    for value in (b"v2", b"v3", b"zzzz", b"\x00"):
        entry = [b"%d-0" % (1000 + value[0]), b"%016d" % 10**15, b"1", pack_ops([["b", key, value]])]
        a.r.fcall("fd_merge", 0, "src", f"e{value[0]}", *entry)
        assert a.get_blob(key) == first


def test_a_till_cannot_write_an_embedding(stores):
    ((srv, a),) = stores("a").values()
    till_store = pos_store(srv)
    emb_key = EMB_PREFIX + hashlib.sha256(b"x").hexdigest()
    with pytest.raises((StoreError, redis.exceptions.NoPermissionError), match="(?i)noperm|acl"):
        till_store.write([ops.blob(emb_key, b"an accomplice's embedding")])
    with pytest.raises(redis.exceptions.NoPermissionError):
        till_store.r.set(emb_key, b"an accomplice's embedding")
    assert not a.r.exists(emb_key)
    till = Till(till_store, KEYS, "a-pos-1")
    p = till.purchase("cust-00001", {"cap": 1}, capture("cust-00001", random.Random(2)))
    assert a.r.exists(PHOTO_PREFIX + p["photo"]) and not list(a.r.scan_iter(match=EMB_PREFIX + "*"))
    out = till.return_(p["receipt"], capture("cust-00001", random.Random(3)))
    assert out.attempt.decision == "approved", out.to_dict()  # the embedding was derived from the photo
    assert not list(a.r.scan_iter(match=EMB_PREFIX + "*"))


# -- item 13: a store that cannot persist -----------------------------------------------------------
@pytest.fixture
def full_disk(tmp_path, server_binary):
    """A store whose data dir is a 4 MiB tmpfs (needs root: skipped without), and a way to fill it."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {r.stderr.strip()}")
    srv = None
    try:
        srv = Server(ServerSpec.create("a", mnt, server_binary))
        Store.connect(srv.url, srv.password, replica="a").close()
        yield srv, mnt
    finally:
        if srv is not None:
            srv.kill()
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_answers_503_with_the_reason(full_disk, caplog):
    srv, mnt = full_disk
    refs = [StoreRef("a", *srv.credentials("detector"))]
    admin = srv.spec.client()
    filler = mnt / "filler"
    with serving(create_app(refs, KEYS, workers=1)) as http:
        ok = http.post("/api/purchases", json={"store": "a", "customer": "c1", "items": {"shirt": 1}, "capture": False})
        assert ok.status_code == 201, ok.text
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)  # fill the file system, as a full node disk would
        try:
            while os.write(fd, b"\0" * 65536):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        admin.set("fd:trigger", "x" * 100_000)  # the AOF write after it fails: the store refuses writes

        def refused():
            try:
                admin.set("fd:trigger2", "1")
                return False
            except redis.ResponseError as e:
                return str(e).startswith("MISCONF")

        wait_until(refused, 10, what="the store to refuse writes")
        for key in (None, "idem-1"):
            r = http.post(
                "/api/purchases",
                json={"store": "a", "customer": "c2", "items": {"shirt": 1}, "capture": False},
                headers={"Idempotency-Key": key} if key else {},
            )
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] and r.json()["detail"] == "store a cannot persist: disk full"
        s = http.get("/api/status").json()["stores"]["a"]
        assert s["up"] is True and s["writable"] is False and s["problem"] == "store a cannot persist: disk full"
        ready = http.get("/readyz")
        assert ready.status_code == 200 and "store a cannot persist: disk full" in ready.json()["degraded"]
        assert sample(http.get("/metrics").text, 'frauddemo_store_writable{store="a"}') == 0
        tracebacks = [r.getMessage() for r in caplog.records if r.exc_info]
        assert tracebacks == [], "the detector must say why in one line, not log tracebacks"

        filler.unlink()  # space comes back: the store resumes by itself, nothing acknowledged was lost
        wait_until(
            lambda: http.get("/api/status").json()["stores"]["a"]["writable"],
            15,
            what="the store to accept writes again",
        )
        again = http.post(
            "/api/purchases", json={"store": "a", "customer": "c3", "items": {"shirt": 1}, "capture": False}
        )
        assert again.status_code == 201, again.text
        assert http.get(f"/api/purchases/{ok.json()['receipt']}").status_code == 200
    admin.close()
