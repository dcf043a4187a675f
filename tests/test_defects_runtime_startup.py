"""Issue 16, item 7 (client side): a client that connects before the store agent loaded the function
library waits for it (backoff, one log line) instead of exiting with a traceback."""

import logging
import threading
import time

from conftest import wait_until
from frauddemo.config import StoreRef
from frauddemo.pos import connect_when_up
from frauddemo.store import Store, load_library
from frauddemo.storeset import StoreSet
from frauddemo.syncer import LinkConfig, Syncer


def _bare(server):
    """A started server whose functions are not loaded (as a store pod before its agent ran)."""
    r = server.spec.client()
    r.function_flush()
    assert not r.function_list()
    return r


def _load_later(admin, delay: float) -> threading.Thread:
    t = threading.Thread(target=lambda: (time.sleep(delay), load_library(admin)), daemon=True)
    t.start()
    return t


def test_pos_waits_for_the_functions(store_servers, caplog):
    (srv,) = store_servers(names=["a"])
    admin = _bare(srv)
    Store.connect(srv.url, srv.password, replica="a").close()  # the supervisor set the replica id once
    admin.function_flush()  # ... and the functions are gone (a new store pod, before its agent ran)
    url, pw = srv.credentials("pos")
    stop = threading.Event()
    loader = _load_later(admin, 1.5)
    caplog.set_level(logging.INFO)
    t0 = time.monotonic()
    store = connect_when_up(lambda: StoreRef("a", url, pw).connect(), stop, "a")
    try:
        assert store is not None and store.replica == "a"
        assert time.monotonic() - t0 >= 1.0, "it cannot have connected before the functions were loaded"
        waiting = [r for r in caplog.records if "no function library" in r.getMessage()]
        assert len(waiting) == 1, [r.getMessage() for r in caplog.records]
        assert not any(r.exc_info for r in caplog.records)
    finally:
        loader.join(5)
        if store:
            store.close()
        admin.close()


def test_syncer_waits_for_the_functions(store_servers, caplog):
    a, b = store_servers(names=["a", "b"])
    for srv in (a, b):
        Store.connect(srv.url, srv.password, replica=srv.spec.name).close()
    admin_b = _bare(b)
    (su, sp), (tu, tp) = a.credentials("syncer"), b.credentials("syncer")
    caplog.set_level(logging.INFO)
    syncer = Syncer(LinkConfig(su, tu, sp, tp, source_name="a", target_name="b"))
    t = threading.Thread(target=syncer.run, daemon=True)
    t.start()
    try:
        time.sleep(1.5)
        assert syncer.stats.state != "up"
        load_library(admin_b)
        wait_until(lambda: syncer.stats.state == "up", 15, what="the link up once the functions are there")
        waiting = [r for r in caplog.records if "no function library" in r.getMessage()]
        assert len(waiting) == 1, [r.getMessage() for r in caplog.records]
        assert not [r for r in caplog.records if "down" in r.getMessage()], "waiting is not a failure"
    finally:
        syncer.stop()
        t.join(15)
        admin_b.close()


def test_detector_stores_wait_for_the_functions(store_servers, caplog):
    (srv,) = store_servers(names=["a"])
    Store.connect(srv.url, srv.password, replica="a").close()
    admin = _bare(srv)
    url, pw = srv.credentials("detector")
    stores = StoreSet([StoreRef("a", url, pw)])
    caplog.set_level(logging.INFO)
    try:
        for _ in range(3):
            assert stores.reachable() == {}  # not reachable yet: no exception, no traceback
            st = stores.status()
            assert st["stores"]["a"]["up"] is False and "starting" in st["stores"]["a"]["error"]
        assert len([r for r in caplog.records if "no functions loaded" in r.getMessage()]) == 1
        load_library(admin)
        assert set(stores.reachable()) == {"a"}
    finally:
        stores.close()
        admin.close()
