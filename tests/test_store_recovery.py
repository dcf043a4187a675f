"""A store that comes back on an empty disk gets its own history back from its peers (issue 15: a store
pod on an emptyDir, deleted, came back without the receipts it had sold). A store's op log holds only
its own writes; what it merged from others travels only in a full-state transfer, which a link now
makes when its target holds nothing from its source."""

import shutil

import pytest

from conftest import wait_converged, wait_until
from frauddemo.store import Store, ops


@pytest.mark.parametrize("first", ["b->a", "a->b"])
def test_a_store_back_on_an_empty_disk_recovers_its_own_writes_from_its_peer(stores, links, first):
    """Either link may reconnect first: a -> b first moves b's checkpoint of a to a's new epoch (a
    resync of a's empty state), and b -> a must still send a's history back (seen in CI)."""
    named = stores("a", "b")
    (sa_srv, a), (sb_srv, b) = named["a"], named["b"]
    links.mesh([sa_srv, sb_srv])
    for i in range(200):
        a.write([ops.hset(f"h:rcpt:a{i}", {"store": "a", "n": str(i)}), ops.sadd("s:all", f"a{i}")])
        if i % 20 == 0:
            b.write([ops.hset(f"h:rcpt:b{i}", {"store": "b"}), ops.sadd("s:all", f"b{i}")])
    wait_converged(named)
    before = b.snapshot()
    assert sum(st.resyncs for st in links.stats.values()) == 0  # a fresh start transfers no full state
    assert before == a.snapshot()

    links.stop_all()
    a.close()
    sa_srv.kill()
    for p in sa_srv.spec.dir.iterdir():  # the data is gone (keep the config, passwords and ACL)
        if p.name.startswith("appendonly") or p.suffix in (".aof", ".rdb"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    sa_srv.restart()
    a2 = Store.connect(sa_srv.url, sa_srv.password, replica="a")
    try:
        assert a2.hgetall("h:rcpt:a0") == {}  # really empty
        if first == "a->b":
            links.start(sa_srv, sb_srv)
            wait_until(lambda: b.checkpoint("a").get("epoch") == a2.epoch, 30, what="b's checkpoint of a's new life")
            links.start(sb_srv, sa_srv)
        else:
            links.start(sb_srv, sa_srv)
            wait_until(lambda: a2.hgetall("h:rcpt:a199") != {}, 30, what="store a's own writes back from b")
            links.start(sa_srv, sb_srv)
        wait_until(lambda: a2.hgetall("h:rcpt:a199") != {}, 30, what="store a's own writes back from b")
        renamed = {"a": (sa_srv, a2), "b": (sb_srv, b)}
        wait_converged(renamed)
        assert a2.snapshot() == b.snapshot() == before
        a2.write([ops.hset("h:rcpt:after", {"store": "a"})])  # and a's new writes reach b as before
        wait_until(lambda: b.hgetall("h:rcpt:after") == {"store": "a"}, 15, what="a's new write at b")
    finally:
        a2.close()
