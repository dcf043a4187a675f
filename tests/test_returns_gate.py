"""One refund per receipt at a store, however many tills ask at once (returns.py's gate); found
while checking chaos's double-refund claim: two tills of one store both approved the same receipt."""

import threading

import pytest

from conftest import wait_converged
from frauddemo.lab.faces import usable_captures
from frauddemo.retail import APPROVED, REFUSED, TerminalKeys, verdict_key
from frauddemo.returns import gate_key
from frauddemo.store import Store, ops
from frauddemo.till import Till

KEYS = TerminalKeys(b"k" * 32)


@pytest.fixture(scope="module")
def photos():
    return usable_captures(3, 4)  # a purchase photo and three return photos of the same face


def _concurrent_returns(tills, receipt, photos):
    barrier = threading.Barrier(len(tills))
    out = [None] * len(tills)

    def go(i):
        barrier.wait()
        out[i] = tills[i].return_(receipt, photos[1 + i % 2]).attempt.decision

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(tills))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_concurrent_returns_of_one_receipt_at_one_store_approve_once(stores, photos):
    ((srv, a),) = stores("a").values()
    tills = [Till(Store.connect(srv.url, srv.password), KEYS, f"a-pos-{i}") for i in range(3)]
    try:
        for trial in range(5):
            rid = tills[0].purchase(f"c-{trial}", {"shirt": 1}, photos[0])["receipt"]
            decisions = _concurrent_returns(tills, rid, photos)
            assert decisions.count(APPROVED) == 1 and decisions.count(REFUSED) == 2, decisions
            assert a.hgetall(gate_key(rid, 0))["store"] == "a"
            assert len(a.smembers(f"s:ret:{rid}")) == 3  # every attempt is still recorded
    finally:
        for t in tills:
            t.store.close()


def test_a_refund_blocked_by_the_detector_opens_the_gate_again(stores, photos):
    ((_, a),) = stores("a").values()
    till = Till(a, KEYS, "a-pos-1")
    rid = till.purchase("c-1", {"shirt": 1}, photos[0])["receipt"]
    first = till.return_(rid, photos[1]).attempt
    assert first.decision == APPROVED
    assert till.return_(rid, photos[2]).attempt.decision == REFUSED
    a.write([ops.hset(verdict_key(first.id), {"decision": "block"})])  # the detector's verdict
    again = till.return_(rid, photos[3]).attempt
    assert again.decision == APPROVED and a.hgetall(gate_key(rid, 1))["attempt"] == again.id


def test_a_store_that_holds_the_other_stores_refund_refuses_a_second(stores, links, photos):
    named = stores("a", "b")
    (sa, a), (sb, b) = named["a"], named["b"]
    links.mesh([sa, sb])
    rid = Till(a, KEYS, "a-pos-1").purchase("c-1", {"shirt": 1}, photos[0])["receipt"]
    wait_converged(named)
    assert Till(a, KEYS, "a-pos-1").return_(rid, photos[1]).attempt.decision == APPROVED
    wait_converged(named)
    second = Till(b, KEYS, "b-pos-1").return_(rid, photos[2]).attempt
    assert second.decision == REFUSED and "already refunded at store a" in second.reasons[0]
