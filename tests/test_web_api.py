"""The API the dashboard adds (frauddemo.web.routes): reset, summary, hacked-POS state, catalogue; on real stores and
real syncers, through the real FastAPI app."""

import pytest
from fastapi.testclient import TestClient

from conftest import wait_converged, wait_until
from frauddemo import controls
from frauddemo.config import StoreRef
from frauddemo.controls import pause_key
from frauddemo.retail import CATALOGUE, PURCHASES, RETURNS, TerminalKeys
from frauddemo.web.app import create_app

KEYS = TerminalKeys(bytes(range(32)))


@pytest.fixture
def demo(stores, links):
    """Stores a and b, replicated both ways, and the service (without the detector engine)."""
    st = stores("a", "b")
    links.mesh([srv for srv, _ in st.values()])
    app = create_app([StoreRef(n, *srv.credentials("detector")) for n, (srv, _) in st.items()], KEYS, engine=False)
    with TestClient(app) as client:
        yield client, st, links


def buy(client, store, customer="cust-00001", sku="shirt"):
    r = client.post("/api/purchases", json={"store": store, "customer": customer, "items": {sku: 1}, "capture": False})
    assert r.status_code == 201, r.text
    return r.json()["receipt"]


def link_state(st, target, source):
    return st[target][1].link_status(source).get("state")


def test_reset_wipes_every_store_and_what_was_logged_before_never_comes_back(demo):
    client, st, _ = demo
    (_, a), (_, b) = st["a"], st["b"]
    for i in range(5):
        buy(client, "a", f"cust-{i:05d}")
        buy(client, "b", f"cust-{i + 50:05d}")
    wait_converged(st)
    a.r.xgroup_create(RETURNS, "detectors", id="0", mkstream=True)  # a detector's consumer group

    # A partition on demand, then writes at a that b has not seen: they sit in a's op log.
    assert client.post("/api/link", json={"action": "partition"}).status_code == 200
    wait_until(lambda: link_state(st, "b", "a") == "partitioned", 10, what="the partition")
    unseen = [buy(client, "a", f"cust-{i + 100:05d}") for i in range(3)]
    assert not b.r.exists(f"h:rcpt:{unseen[0]}")

    r = client.post("/api/reset")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["reset"] and body["link"] == "partitioned" and body["deleted_keys"]["a"] > 0
    for s in (a, b):
        assert s.data_keys() == set()
        assert s.r.xlen(PURCHASES) == 0
    assert a.r.xinfo_groups(RETURNS)[0]["name"] == b"detectors"  # emptied in place, the group stays
    assert b.r.exists(pause_key("a")) and a.r.exists(pause_key("b"))  # still partitioned, as it was

    assert client.post("/api/link", json={"action": "heal"}).status_code == 200
    after = buy(client, "a", "cust-00999")
    wait_until(lambda: b.r.exists(f"h:rcpt:{after}"), 10, what="a purchase made after the reset at b")
    wait_converged(st)
    assert not b.r.exists(f"h:rcpt:{unseen[0]}")  # logged before the reset: never replayed
    assert a.snapshot() == b.snapshot()
    assert {k for k in a.data_keys() if k.startswith("h:rcpt:")} == {f"h:rcpt:{after}"}


def test_reset_puts_the_link_back_up_and_keeps_replicating(demo):
    client, st, _ = demo
    (_, a), (_, b) = st["a"], st["b"]
    buy(client, "b")
    wait_converged(st)
    r = client.post("/api/reset")
    assert r.status_code == 200 and r.json()["link"] == "up"
    assert not a.r.exists(pause_key("b")) and not b.r.exists(pause_key("a"))
    rid = buy(client, "b", "cust-00002")
    wait_until(lambda: a.r.exists(f"h:rcpt:{rid}"), 10, what="replication after the reset")
    wait_until(lambda: link_state(st, "a", "b") == "up", 10, what="the link up again")


def test_reset_refuses_when_a_syncer_does_not_confirm_the_partition(demo, monkeypatch):
    client, st, links = demo
    (_, a), (_, b) = st["a"], st["b"]
    rid = buy(client, "a")
    wait_converged(st)
    links.stop("a", "b")  # nobody holds the a -> b link: its partition cannot be confirmed
    monkeypatch.setattr(controls, "RESET_CONFIRM_S", 1.0)
    r = client.post("/api/reset")
    assert r.status_code == 503 and "a->b" in r.json()["detail"] and r.headers["Retry-After"]
    assert a.r.exists(f"h:rcpt:{rid}") and b.r.exists(f"h:rcpt:{rid}")  # nothing deleted
    assert not a.r.exists(pause_key("b")) and not b.r.exists(pause_key("a"))  # link as it was


def test_hacked_pos_state_and_catalogue(demo):
    client, st, _ = demo
    assert client.get("/api/hacked-pos").json() == {"running": True, "stores": {"a": True, "b": True}}
    assert client.post("/api/hacked-pos", json={"running": False}).json() == {"running": False}
    assert client.get("/api/hacked-pos").json()["running"] is False
    client.post("/api/hacked-pos", json={"running": True})
    assert client.get("/api/hacked-pos").json()["running"] is True
    items = client.get("/api/catalogue").json()["items"]
    assert [i["sku"] for i in items] == list(CATALOGUE)
    assert items[0]["price_cents"] == CATALOGUE[items[0]["sku"]][1]


def test_summary_counts_what_the_detector_decided(stores, links):
    st = stores("a", "b")
    links.mesh([srv for srv, _ in st.values()])
    app = create_app([StoreRef(n, *srv.credentials("detector")) for n, (srv, _) in st.items()], KEYS, workers=1)
    with TestClient(app) as client:

        def post(path, **body):
            r = client.post(path, json=body)
            assert r.status_code == 201, r.text
            return r.json()

        empty = client.get("/api/summary").json()
        assert empty["purchases"] == 0 and empty["detection_latency_ms"]["p50"] is None
        # Bought with a photo, returned with a matching one at a: approved, allowed, refunded.
        good = post("/api/purchases", store="a", customer="cust-00001", items={"shirt": 1}, capture=True)
        wait_until(lambda: st["b"][1].r.exists(f"h:rcpt:{good['receipt']}"), 10, what="replication")
        post("/api/returns", store="a", receipt=good["receipt"], capture=True)
        # Returned without a photo at a's honest till (a failed camera: held, then sent to review by the
        # detector), then again at b without a photo (refused by b, blocked by the detector).
        bad = post("/api/purchases", store="a", customer="cust-00002", items={"jacket": 2}, capture=False)
        first = post("/api/returns", store="a", receipt=bad["receipt"], capture=False)
        assert first["local_decision"] == "held"
        wait_until(lambda: st["b"][1].r.exists(f"h:ret:{first['attempt']}"), 10, what="replication")
        second = post("/api/returns", store="b", receipt=bad["receipt"], capture=False)
        assert second["local_decision"] == "refused"

        def settled():
            s = client.get("/api/summary").json()
            return s if s["detection_latency_ms"]["samples"] == 3 and s["alerts"] == 2 else None

        s = wait_until(settled, 60, interval=0.2, what="three verdicts and two alerts")
        jacket = 2 * CATALOGUE["jacket"][1]
        assert s["purchases"] == 2 and s["returns"] == 3 and s["complete"]
        assert s["frauds"] == {"held": 1, "blocked": 1}
        assert s["refunds"]["refunded"] == {"count": 1, "cents": CATALOGUE["shirt"][1]}
        assert s["refunds"]["held"] == {"count": 1, "cents": jacket}  # a person decides
        assert s["refunds"]["blocked"] == {"count": 0, "cents": 0}
        assert s["refunds"]["refused"] == {"count": 1, "cents": jacket}
        assert s["value_protected_cents"] == jacket
        assert s["stores"]["a"]["purchases"] == 2 and s["stores"]["b"]["returns"] == 1
        assert 0 < s["detection_latency_ms"]["p50"] <= s["detection_latency_ms"]["p99"]
        assert client.get("/api/summary").json() == s  # read incrementally: nothing counted twice

        assert client.post("/api/reset").status_code == 200
        after = client.get("/api/summary").json()
        assert after["purchases"] == after["returns"] == after["alerts"] == 0
        assert after["value_protected_cents"] == 0 and after["generation"] != s["generation"]


def test_an_escalated_alert_is_counted_once(demo):
    """A review alert escalated to block has two events in its store's alert stream (as the detector
    writes them); the stores and status routes count the alert, not the events."""
    from frauddemo.retail import ALERTS
    from frauddemo.store import ops

    client, st, _ = demo
    b = st["b"][1]
    event = {"att": "att-1", "rcpt": "rcpt-1", "score": 60, "reason": "no-photo", "alert": "alert-att-1"}
    b.write([ops.event(ALERTS, {**event, "decision": "review"})])
    b.write([ops.event(ALERTS, {**event, "decision": "block", "score": 95})])
    assert b.r.xlen(ALERTS) == 2
    assert client.get("/api/status").json()["fraud"]["alerts"] == 1
    stores = client.get("/api/stores").json()["stores"]
    assert (stores["a"]["alerts"], stores["b"]["alerts"]) == (0, 1)
    assert client.get("/api/summary").json()["frauds"] == {"held": 0, "blocked": 1}
