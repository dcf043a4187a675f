"""Active-active replication between real servers: reads across stores, concurrent attempts,
partitions, outages, kill -9 of syncers, retention overflow, full mesh."""

import random
import signal
import subprocess
import sys
import time

from conftest import converged, wait_converged, wait_until
from frauddemo import crdt
from frauddemo.store import ops


def test_purchase_written_at_a_is_readable_at_b(stores, links):
    named = stores("a", "b")
    (sa_srv, a), (sb_srv, b) = named["a"], named["b"]
    links.mesh([sa_srv, sb_srv])
    a.write([ops.hset("h:purchase:r1", {"customer": "c1", "amount_cents": "2999"}), ops.incr("c:tx:a:purchase")])
    wait_until(lambda: b.hgetall("h:purchase:r1"), what="purchase at b")
    assert b.hgetall("h:purchase:r1") == {"customer": "c1", "amount_cents": "2999"}
    assert b.counter("c:tx:a:purchase") == 1
    assert a.r.xlen("fd:log") == 1 and b.r.xlen("fd:log") == 0  # remote ops never re-enter a log (no echo)
    time.sleep(0.3)
    assert a.r.xlen("fd:log") == 1 and b.r.xlen("fd:log") == 0


def test_concurrent_return_attempts_at_both_stores_both_survive(stores, links):
    named = stores("a", "b")
    (sa_srv, a), (sb_srv, b) = named["a"], named["b"]
    # both stores accept a return of the same receipt before either sees the other's
    a.write([ops.sadd("s:attempts:r1", "att-a"), ops.hset("h:receipt:r1", {"status": "refunded-at-a"})])
    b.write([ops.sadd("s:attempts:r1", "att-b"), ops.hset("h:receipt:r1", {"status": "refunded-at-b"})])
    links.mesh([sa_srv, sb_srv])
    wait_converged(named)
    assert a.smembers("s:attempts:r1") == b.smembers("s:attempts:r1") == {"att-a", "att-b"}
    # the LWW field agrees on one deterministic winner
    assert a.hgetall("h:receipt:r1") == b.hgetall("h:receipt:r1")
    assert a.snapshot() == b.snapshot()


def _conflicting_writes(store, name, n, rng):
    for i in range(n):
        k = rng.randrange(20)
        store.write(
            [
                ops.hset(f"h:item:{k}", {"v": f"{name}{i}", name: "1"}),
                ops.sadd(f"s:set:{k % 5}", f"{name}-{i}"),
                ops.incr(f"c:count:{k % 3}", rng.choice([1, 2, -1])),
            ]
            + ([ops.srem(f"s:set:{k % 5}", f"{name}-{i - 1}")] if i % 7 == 0 else [])
            + ([ops.hdel(f"h:item:{k}", ["v"])] if i % 11 == 0 else [])
        )


def _assert_identical_and_replayed(named):
    snaps = [st.snapshot() for _, st in named.values()]
    assert all(s == snaps[0] for s in snaps[1:]), "stores differ after convergence"
    logs = {n: st.r.xrange("fd:log") for n, (_, st) in named.items()}
    assert snaps[0] == crdt.replay(logs), "state differs from an independent replay of the op logs"


def test_partition_of_a_link_then_heal(stores, links):
    named = stores("a", "b")
    (sa_srv, a), (sb_srv, b) = named["a"], named["b"]
    rng = random.Random(7)
    links.mesh([sa_srv, sb_srv])
    _conflicting_writes(a, "a", 50, rng)
    wait_converged(named)
    links.stop("a", "b")
    links.stop("b", "a")
    _conflicting_writes(a, "a", 300, rng)
    _conflicting_writes(b, "b", 300, rng)
    assert a.snapshot() != b.snapshot()
    links.mesh([sa_srv, sb_srv])
    wait_converged(named)
    _assert_identical_and_replayed(named)


def test_whole_store_down_then_back_from_its_aof(stores, links):
    named = stores("a", "b")
    (sa_srv, a), (sb_srv, b) = named["a"], named["b"]
    rng = random.Random(11)
    links.mesh([sa_srv, sb_srv])
    _conflicting_writes(b, "b", 100, rng)
    sb_srv.stop()
    _conflicting_writes(a, "a", 300, rng)  # store A keeps selling while B is down
    time.sleep(0.5)
    assert links.stats[("a", "b")].state == "down"
    sb_srv.restart()
    _conflicting_writes(b, "b", 100, rng)
    wait_converged(named, timeout=40)
    _assert_identical_and_replayed(named)


def test_three_store_mesh_converges(stores, links):
    named = stores("a", "b", "c")
    rng = random.Random(3)
    links.mesh([srv for srv, _ in named.values()])
    for name, (_, st) in named.items():
        _conflicting_writes(st, name, 150, rng)
    wait_converged(named)
    _assert_identical_and_replayed(named)
    for _name, (_, st) in named.items():
        assert st.r.xlen("fd:log") == 150  # each log holds only its own operations


def _syncer_proc(src, dst):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "frauddemo",
            "syncer",
            "--source",
            src.url,
            "--target",
            dst.url,
            "--source-password-file",
            str(src.spec.password_file),
            "--target-password-file",
            str(dst.spec.password_file),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_kill_9_of_a_syncer_while_draining_loses_and_repeats_nothing(stores):
    named = stores("a", "b")
    (sa_srv, a), (sb_srv, b) = named["a"], named["b"]
    n = 40_000
    for i in range(0, n, 500):
        a.write_many(
            [
                [ops.hset(f"h:p:{j}", {"v": str(j)}), ops.incr("c:total", 1), ops.sadd("s:all", str(j))]
                for j in range(i, i + 500)
            ]
        )
    rng = random.Random(5)
    kills = 0
    proc = _syncer_proc(sa_srv, sb_srv)
    try:
        while not converged(named):
            time.sleep(rng.uniform(0.05, 0.6))
            if converged(named):
                break
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            proc = _syncer_proc(sa_srv, sb_srv)
            if kills >= 6:
                wait_converged(named, timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert kills >= 1
    assert int(b.checkpoint("a")["applied"]) == n  # every entry merged exactly once
    assert b.counter("c:total") == n and len(b.smembers("s:all")) == n
    assert b.snapshot() == a.snapshot() == crdt.replay({"a": a.r.xrange("fd:log")})


def test_retention_overflow_triggers_a_resync_that_converges(stores, links):
    named = stores("a", "b", retention=100)
    (sa_srv, a), (sb_srv, b) = named["a"], named["b"]
    rng = random.Random(9)
    links.start(sb_srv, sa_srv)
    _conflicting_writes(b, "b", 50, rng)
    _conflicting_writes(a, "a", 2000, rng)  # far beyond what a's log keeps
    assert a.r.xlen("fd:log") < 1000
    links.start(sa_srv, sb_srv)
    wait_converged(named)
    assert links.stats[("a", "b")].resyncs == 1
    assert a.snapshot() == b.snapshot()
    a.write([ops.hset("h:after", {"v": "1"})])  # and the link goes on normally afterwards
    wait_until(lambda: b.hgetall("h:after"), what="write after resync")
    assert links.stats[("a", "b")].resyncs == 1
