"""The detection pipeline on real stores: tills write, syncers replicate, the detector judges."""

import json
import random
import threading

import pytest

from conftest import wait_until
from frauddemo.config import StoreRef
from frauddemo.detection import DetectionConfig
from frauddemo.detector import Detector, alert_id
from frauddemo.retail import TerminalKeys, alert_key, verdict_key
from frauddemo.till import HackedTill, Till, capture

KEYS = TerminalKeys(bytes(range(32)))


@pytest.fixture
def demo(stores, links):
    """Two replicated stores, a till at each, a hacked till at b and a running detector."""
    st = stores("a", "b")
    links.mesh([srv for srv, _ in st.values()])
    det = Detector(
        [StoreRef(n, *srv.credentials("detector")) for n, (srv, _) in st.items()],
        DetectionConfig(),
        KEYS,
        name="test-detector",
        workers=1,
    )
    t = threading.Thread(target=det.run, daemon=True)
    t.start()
    (_, a), (_, b) = st["a"], st["b"]
    yield {
        "a": a,
        "b": b,
        "till_a": Till(a, KEYS, "a-pos-1"),
        "till_b": Till(b, KEYS, "b-pos-1"),
        "hacked_b": HackedTill(b, KEYS, "b-pos-9"),
        "det": det,
    }
    det.stop.set()
    t.join(10)


def verdict(store, aid, timeout=20):
    wait_until(lambda: store.hgetall(verdict_key(aid)).get("decision"), timeout, what=f"verdict of {aid}")
    return store.hgetall(verdict_key(aid))


def test_scenario_one_cross_store_double_return(demo):
    rng = random.Random(1)
    p = demo["till_a"].purchase("cust-00001", {"shirt": 1}, capture("cust-00001", rng))
    wait_until(lambda: demo["b"].hgetall(f"h:rcpt:{p['receipt']}"), 10, what="purchase at b")
    legit = demo["till_a"].return_(p["receipt"], capture("cust-00001", rng)).attempt
    hacked = demo["hacked_b"].refund(p["receipt"], "cust-00001", 4999, None, "no-photo")
    assert legit.decision == "approved" and hacked.decision == "approved"
    assert verdict(demo["a"], legit.id)["decision"] == "allow"
    v = verdict(demo["b"], hacked.id)
    assert v["decision"] == "block" and v["outcome"] == "blocked"
    codes = [r["code"] for r in json.loads(v["reasons"])]
    assert set(codes) >= {"multiple_returns", "missing_photo"}
    alert = demo["b"].hgetall(alert_key(alert_id(hacked.id)))
    assert alert["decision"] == "block" and json.loads(alert["attempts"]) == [legit.id, hacked.id]
    assert demo["a"].hgetall(alert_key(alert_id(legit.id))) == {}


def test_every_attack_mode_of_the_hacked_pos_is_caught(demo):
    from frauddemo.attack_modes import AttackMode as MODES
    from frauddemo.pos import Simulator
    from frauddemo.syncer import pause_key

    a, b = demo["a"], demo["b"]
    sim = Simulator(b, KEYS, customers=6, seed=3)
    rng = random.Random(2)
    receipts = [
        demo[f"till_{s}"].purchase(c, {"cap": 1}, capture(c, rng))
        for s in "ab"
        for c in sim.customers
        for _ in range(2)
    ]
    wait_until(
        lambda: all(b.r.exists(f"h:rcpt:{p['receipt']}") and a.r.exists(f"h:rcpt:{p['receipt']}") for p in receipts),
        20,
        what="purchases everywhere",
    )
    returned = []
    for s in "ab":  # one refunded receipt per store, for the double returns
        for p in (p for p in receipts if p["store"] == s):
            returned.append(p)
            if demo[f"till_{s}"].return_(p["receipt"], capture(p["customer"], rng)).attempt.decision == "approved":
                break
    wait_until(lambda: len(list(b.r.scan_iter("h:verdict:*"))) == len(returned), 20, what="returns judged")
    peers = {"a": demo["till_a"]}
    lines = {}
    for mode in MODES:
        if mode == "partition":
            for s, src in ((a, "b"), (b, "a")):
                s.r.set(pause_key(src), "1")
            wait_until(sim.partitioned, 10, what="partition")
        lines[mode] = sim.hacked_step(demo["hacked_b"], mode, peers)
        assert lines[mode] and lines[mode].startswith(mode), mode
    for s, src in ((a, "b"), (b, "a")):
        s.r.delete(pause_key(src))
    for mode, line in lines.items():
        aid = line.split()[1]
        assert verdict(b, aid)["decision"] in ("review", "block"), (mode, verdict(b, aid), b.hgetall(f"h:ret:{aid}"))
    labels = {f[b"label"].decode() for _, f in b.r.xrange("fd:ev:labels")}
    assert labels >= set(MODES)


@pytest.mark.parametrize(
    "flag, err",
    [
        ("no-photo", "MODE=WEIGHT"),
        ("teleport=1", "MODE=WEIGHT"),
        ("no-photo=x", "number"),
        ("no-photo=-1", ">= 0"),
        ("no-photo=0", "positive"),
    ],
)
def test_bad_attack_mixes_are_refused(flag, err):
    from frauddemo.pos import parse_mix

    with pytest.raises(ValueError, match=err):
        parse_mix(flag)
    assert parse_mix("duplicate-receipt=1")["double-return-other-store"] == 1
