"""Issue 16 item 2, sizing a day of the default demo rate: photo retention in hours
(FRAUDDEMO_PHOTO_TTL), a TTL set at the origin converging on every store, an expired photo shown as
"photo expired" (never a 500), returns picked while their purchase photo is kept, the op log bounded
by the operator's retention, and `bench memory`'s day projection against the CRD's default memory."""

import random
import time
from pathlib import Path

import pytest
import yaml

from conftest import serving, wait_converged, wait_until
from frauddemo.config import StoreRef
from frauddemo.lab import bench_memory
from frauddemo.local import DEFAULT_RETENTION
from frauddemo.photos import storage
from frauddemo.photos import verify as ver
from frauddemo.photos.storage import PHOTO_PREFIX, PhotoPolicy, PhotoStore
from frauddemo.pos import recent_receipts
from frauddemo.retail import TerminalKeys
from frauddemo.store import Store
from frauddemo.till import Till, capture
from frauddemo.web.app import create_app

ROOT = Path(__file__).resolve().parents[1]
KEYS = TerminalKeys(bytes(range(32)))
HOUR_MS = 3600 * 1000


def pos_store(srv) -> Store:
    url, pw = srv.credentials("pos")
    return Store.connect(url, pw, replica=srv.spec.name)


# -- retention ---------------------------------------------------------------------------------------
def test_photo_retention_is_hours_by_default_and_configurable(monkeypatch):
    monkeypatch.delenv(storage.PHOTO_TTL_ENV, raising=False)
    assert PhotoPolicy().retention_ms == storage.DEFAULT_PHOTO_TTL_MS == 30 * 60_000  # not 30 days
    for text, ms in (
        ("2h", 2 * HOUR_MS),
        ("90m", 90 * 60_000),
        ("3600", HOUR_MS),
        ("1d", 24 * HOUR_MS),
        ("45s", 45_000),
    ):
        monkeypatch.setenv(storage.PHOTO_TTL_ENV, text)
        assert PhotoPolicy().retention_ms == ms
    for bad in ("0", "-1h", "2 weeks", "1.5h"):
        monkeypatch.setenv(storage.PHOTO_TTL_ENV, bad)
        with pytest.raises(ValueError, match="FRAUDDEMO_PHOTO_TTL"):
            PhotoPolicy()
    assert storage.describe_ttl(HOUR_MS) == "1 h" and storage.describe_ttl(90 * 60_000) == "90 min"


def test_the_photo_ttl_set_at_the_origin_converges_on_every_store(stores, links, monkeypatch):
    monkeypatch.setenv(storage.PHOTO_TTL_ENV, "2h")
    st = stores("a", "b")
    (sa, a), (sb, b) = st["a"], st["b"]
    till = Till(pos_store(sa), KEYS, "a-pos-1")
    p = till.purchase("cust-00001", {"cap": 1}, capture("cust-00001", random.Random(3)))
    key = PHOTO_PREFIX + p["photo"]
    assert 2 * HOUR_MS - 60_000 < a.r.pttl(key) <= 2 * HOUR_MS
    links.mesh([sa, sb])
    wait_converged(st)
    # the same absolute expiry at both stores (the syncer copies the remaining TTL)
    at_a = time.time() * 1000 + a.r.pttl(key)
    at_b = time.time() * 1000 + b.r.pttl(key)
    assert abs(at_a - at_b) < 2000, (at_a, at_b)
    assert a.snapshot() == b.snapshot()


def test_an_expired_photo_reads_photo_expired_and_a_return_is_reviewed_not_failed(stores, links, monkeypatch):
    monkeypatch.setenv(storage.PHOTO_TTL_ENV, "1s")
    st = stores("a", "b")
    (sa, a), (sb, b) = st["a"], st["b"]
    links.mesh([sa, sb])
    till = Till(pos_store(sa), KEYS, "a-pos-1")
    rng = random.Random(5)
    p = till.purchase("cust-00002", {"cap": 1}, capture("cust-00002", rng))
    key = PHOTO_PREFIX + p["photo"]
    wait_until(lambda: not a.r.exists(key) and not b.r.exists(key), 10, what="the photo to expire everywhere")
    assert PhotoStore(a).expired(p["photo"])
    refs = [StoreRef(n, *srv.credentials("detector")) for n, (srv, _) in st.items()]
    with serving(create_app(refs, KEYS, engine=False)) as http:
        for url in (f"/api/photos/{p['photo']}", f"/api/photos/{p['photo']}/thumbnail"):
            r = http.get(url)
            assert r.status_code == 404, (url, r.status_code, r.text)
            assert "photo expired" in r.json()["detail"] and "1 s" in r.json()["detail"]
    # the receipt outlives its photo: the return is judged without a face match, with the reason
    _stored, verdict, _writes = PhotoStore(a).prepare_return(capture("cust-00002", rng), p["photo"])
    assert verdict.verdict == ver.REVIEW
    assert any("purchase photo expired" in r for r in verdict.reasons), verdict.reasons


def test_returns_are_picked_among_receipts_whose_photo_is_kept():
    now = 1_800_000_000_000_000
    wallet = {
        f"{now - 10 * 3600 * 10**6:016d}:a:3".encode(): b"r-old",
        f"{now - 60 * 10**6:016d}:b:3".encode(): b"r-new",
    }
    assert recent_receipts(wallet, 3600 * 10**6, now) == ["r-new"]
    assert sorted(recent_receipts(wallet, 60 * 10**6 - 1, now)) == ["r-new", "r-old"]  # none recent: all


# -- the op log and the day's projection --------------------------------------------------------------
def test_local_stores_keep_the_operators_op_log_retention():
    crd = yaml.safe_load((ROOT / "operator/frauddemo_operator/crd.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert spec["replication"]["properties"]["retention"]["default"] == DEFAULT_RETENTION == 100_000


def _store_limit_default(path: Path) -> str:
    crd = yaml.safe_load(path.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    store = spec["stores"]["items"]["properties"]["resources"]["properties"]
    return store["limits"]["properties"]["memory"]["default"]


def test_the_bench_compares_with_the_crds_default_store_memory():
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
    for path in (
        ROOT / "operator/frauddemo_operator/crd.yaml",
        ROOT / "charts/frauddemo/crds/frauddemos.frauddemo.io.yaml",
    ):
        text = _store_limit_default(path)
        assert int(text[:-2]) * units[text[-2:]] == bench_memory.K8S_DEFAULT_MEMORY_LIMIT, path
    assert bench_memory.K8S_DEFAULT_MAXMEMORY == bench_memory.K8S_DEFAULT_MEMORY_LIMIT // 4 * 3


def test_the_day_projection_plateaus_photos_and_the_op_log_and_can_fail():
    # 100 B/s of photos kept 1 h, 10 B/s of op log with 5 000 B of room, 20 B/s of everything else
    p = bench_memory.project_day(1_000, 130.0, 100.0, 3600, 10.0, 5_000)
    assert p["projected_24h_parts"] == {
        "at_start": 1_000,
        "photos_plateau": 360_000,
        "oplog": 5_000,
        "other_expiring_plateau": 0,
        "other_24h": 20 * 86400,
    }
    assert p["projected_24h_bytes"] == 1_000 + 360_000 + 5_000 + 20 * 86400
    # a photo TTL past a day counts a day; the same slopes with 30-day photos grow for 24 h
    assert (
        bench_memory.project_day(0, 130.0, 100.0, 30 * 86400, 10.0, 5_000)["projected_24h_parts"]["photos_plateau"]
        == 100 * 86400
    )
    big = bench_memory.project_day(0, 154_000.0, 123_000.0, 30 * 86400, 0.0, 0)
    assert big["projected_24h_bytes"] > bench_memory.K8S_DEFAULT_MAXMEMORY  # the old design does not fit


def test_other_keys_with_a_ttl_plateau_too():
    first = {"b:pprint": {"bytes": 0, "ttl_s": 1800}, "h:rcpt": {"bytes": 0, "ttl_s": None}}
    last = {
        "b:pprint": {"bytes": 6_000, "ttl_s": 1800},
        "h:rcpt": {"bytes": 1_000, "ttl_s": None},
        "b:photo": {"bytes": 50_000, "ttl_s": 1800},
    }
    per_s, plateau = bench_memory.expiring(first, last, 10.0)
    assert per_s == 600 and plateau == 600 * 1800
    # used_memory 8 B/s beyond the photos (under the keys' own 700 B/s: noise): prints plateau, receipts grow
    p = bench_memory.project_day(0, 5_008.0, 5_000.0, 1800, 0.0, 0, 700.0, per_s, plateau)
    assert p["projected_24h_parts"]["other_expiring_plateau"] == 600 * 1800
    assert p["projected_24h_parts"]["other_24h"] == 100 * 86400  # max(8-0-600, 700-600) B/s


def test_by_prefix_groups_keys_by_type_and_name(stores):
    st = stores("a")
    _, a = st["a"]
    a.r.set("b:photo:" + "0" * 64, b"x" * 5000, px=60_000)
    a.r.hset("h:rcpt:r-1", "store", "a")
    out = bench_memory.by_prefix(a.r)
    assert out["b:photo"]["keys"] == 1 and out["b:photo"]["bytes"] >= 5000
    assert out["h:rcpt"]["keys"] == 1 and "fd:meta" in out
    assert list(out)[0] == "b:photo"  # biggest first
    assert 50 <= out["b:photo"]["ttl_s"] <= 60 and out["h:rcpt"]["ttl_s"] is None
