"""The detection service over real HTTP (uvicorn) on real replicated stores: the API's answers,
including every kind of bad input, and the faults the demo must survive."""

import base64
import json
import os
import signal
import subprocess
import sys
import threading

import httpx
import pytest
import uvicorn

from conftest import wait_until
from frauddemo.config import StoreRef
from frauddemo.lab.samples import png_bomb
from frauddemo.procs import alive
from frauddemo.retail import TerminalKeys, alert_key, attempts_key, verdict_key
from frauddemo.servers import free_port
from frauddemo.till import HackedTill, capture
from frauddemo.web.app import create_app

KEYS = TerminalKeys(bytes(range(32)))


@pytest.fixture
def service(stores, links):
    """Stores a and b, replicating, and the detection service (engine + API) on a free port."""
    st = stores("a", "b")
    links.mesh([srv for srv, _ in st.values()])
    refs = [StoreRef(n, *srv.credentials("detector")) for n, (srv, _) in st.items()]
    app = create_app(refs, KEYS, workers=1, detector_name="api-test")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    wait_until(lambda: server.started, 20, what="uvicorn")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        yield {"http": client, "a": st["a"][1], "b": st["b"][1], "servers": st, "links": links, "refs": refs}
    server.should_exit = True
    t.join(15)


def purchase(http, store="a", customer="cust-00001", **kw):
    r = http.post("/api/purchases", json={"store": store, "customer": customer, "items": {"shirt": 1}, **kw})
    assert r.status_code == 201, r.text
    return r.json()


def test_purchase_return_and_alert_round_trip(service):
    http = service["http"]
    p = purchase(http)
    photo = base64.b64encode(capture("cust-00001", __import__("random").Random(5))).decode()
    r = http.post("/api/returns", json={"store": "a", "receipt": p["receipt"], "photo": photo})
    assert r.status_code == 201 and r.json()["local_decision"] == "approved"
    report = http.post("/api/scenarios/fraud").json()
    assert report["alert"]["decision"] == "block"
    assert {a["store"] for a in report["attempts"]} == {"a", "b"}
    assert report["detection_latency_ms"] > 0 and report["replication_lag_ms"] > 0
    alert = http.get(f"/api/alerts/{report['alert']['id']}").json()
    assert [a["store"] for a in alert["story"]["attempts"]] == ["a", "b"]
    listed = http.get("/api/alerts", params={"decision": "block"}).json()["items"]
    assert report["alert"]["id"] in [x["alert"] for x in listed]
    sha = alert["story"]["purchase_photo"]["url"].rsplit("/", 1)[1]
    thumb = http.get(f"/api/photos/{sha}/thumbnail")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"


def test_unknown_store_receipt_attempt_alert_photo(service):
    http = service["http"]
    r = http.post("/api/purchases", json={"store": "z", "customer": "c", "items": {"shirt": 1}})
    assert r.status_code == 404 and "unknown store" in r.json()["detail"]
    assert http.get("/api/purchases", params={"store": "z"}).status_code == 404
    assert http.get("/api/purchases/r-nope").status_code == 404
    assert http.get("/api/returns/t-nope").status_code == 404
    assert http.get("/api/alerts/al-nope").status_code == 404
    assert http.get("/api/photos/" + "0" * 64).status_code == 404
    assert http.get("/api/photos/not-a-sha").status_code == 422
    # A return of a receipt nobody sold is recorded and refused by the store, not an HTTP error.
    r = http.post("/api/returns", json={"store": "b", "receipt": "r-never-sold", "customer": "cust-9"})
    assert r.status_code == 201 and r.json()["local_decision"] == "refused"


@pytest.mark.parametrize(
    "body, why",
    [
        (b"{not json", "json_invalid"),
        (json.dumps({"store": "a", "customer": "c", "items": "shirt"}).encode(), "dict_type"),
        (json.dumps({"store": "a", "customer": 5, "items": {"shirt": 1}}).encode(), "string_type"),
        (json.dumps({"store": "a", "customer": "c", "items": {"shirt": "two"}}).encode(), "int_type"),
        (json.dumps({"store": "a", "customer": "c", "items": {"shirt": 1}, "admin": True}).encode(), "extra_forbidden"),
    ],
)
def test_malformed_json_and_wrong_types_are_422(service, body, why):
    r = service["http"].post("/api/purchases", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and why in r.text


def test_domain_checks_are_422_with_a_reason(service):
    http = service["http"]
    r = http.post("/api/purchases", json={"store": "a", "customer": "c", "items": {"yacht": 1}})
    assert r.status_code == 422 and "unknown SKU" in r.json()["detail"]
    r = http.post("/api/purchases", json={"store": "a", "customer": "c", "items": {"shirt": 99}})
    assert r.status_code == 422 and "quantity" in r.json()["detail"]
    r = http.post("/api/purchases", json={"store": "a", "customer": "c", "items": {"shirt": 1}, "photo": "%%%"})
    assert r.status_code == 422 and "base64" in r.json()["detail"]


def test_oversized_and_non_image_photos(service):
    http = service["http"]
    p = purchase(http)
    big = b"x" * (4 * 1024 * 1024)
    r = http.post("/api/returns", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = http.post(
        "/api/returns",
        json={"store": "a", "receipt": p["receipt"], "photo": base64.b64encode(b"GIF89a not really").decode()},
    )
    assert r.status_code == 422 and "photo rejected" in r.json()["detail"]
    r = http.post(
        "/api/returns", json={"store": "a", "receipt": p["receipt"], "photo": base64.b64encode(png_bomb()).decode()}
    )
    assert r.status_code == 413 and "photo rejected" in r.json()["detail"]
    assert service["a"].smembers(attempts_key(p["receipt"])) == set()  # nothing recorded


def test_html_in_every_string_field_is_kept_as_data(service):
    http = service["http"]
    evil = '<script>alert(1)</script><img src=x onerror="alert(2)">'
    p = purchase(http, customer=evil)
    r = http.post("/api/returns", json={"store": "b", "receipt": "r-" + "x" * 10, "customer": evil})
    assert r.status_code == 201
    got = http.get(f"/api/purchases/{p['receipt']}")
    assert got.headers["content-type"] == "application/json" and got.json()["receipt"]["customer"] == evil
    assert "script-src 'self'" in got.headers["content-security-policy"]
    assert http.get("/api/returns", params={"store": "b"}).json()["items"][0]["customer"] == evil


def test_idempotency_keys(service):
    http = service["http"]
    body = {"store": "a", "customer": "cust-7", "items": {"cap": 2}, "capture": False}
    first = http.post("/api/purchases", json=body, headers={"Idempotency-Key": "k-1"})
    again = http.post("/api/purchases", json=body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    other = http.post("/api/purchases", json={**body, "customer": "cust-8"}, headers={"Idempotency-Key": "k-1"})
    assert other.status_code == 422 and "different request" in other.json()["detail"]
    assert service["a"].r.xlen("fd:ev:purchases") == 1


def test_store_down_during_a_return_is_503_and_writes_nothing(service):
    http = service["http"]
    p = purchase(http, capture=False)
    wait_until(lambda: service["b"].hgetall(f"h:rcpt:{p['receipt']}"), 10, what="replication")
    service["servers"]["b"][0].kill()
    r = http.post("/api/returns", json={"store": "b", "receipt": p["receipt"]})
    assert r.status_code == 503 and r.headers["retry-after"]
    assert service["a"].smembers(attempts_key(p["receipt"])) == set()
    # Readiness is the process's: it still serves (the page shows the outage), and says what is degraded
    ready = http.get("/readyz")
    assert ready.status_code == 200 and "store b down" in ready.json()["degraded"], ready.text
    status = http.get("/api/status").json()
    assert status["stores"]["b"]["up"] is False and status["stores"]["a"]["up"] is True


def test_partition_during_a_double_return(service):
    """Both stores accept the return locally, neither having heard of the other's; once the partition
    heals both attempts are at both stores, and, both carrying the same evidence (a signed till, a matching
    face), neither clock decides which refund stands: both are alerts for a person (concurrent_returns)."""
    http, a, b = service["http"], service["a"], service["b"]
    p = purchase(http)
    wait_until(lambda: b.hgetall(f"h:rcpt:{p['receipt']}"), 10, what="replication")
    assert http.post("/api/link", json={"action": "partition"}).status_code == 200
    wait_until(
        lambda: all(s.link_status(o).get("state") == "partitioned" for s, o in ((a, "b"), (b, "a"))),
        10,
        what="partition",
    )
    r = http.post("/api/returns", json={"store": "a", "receipt": p["receipt"], "capture": True}).json()
    fraud = HackedTill(b, KEYS, "b-pos-9").refund(
        p["receipt"],
        "cust-00001",
        r["amount_cents"],
        capture("cust-00001", __import__("random").Random(9)),
        "partition",
    )
    assert r["local_decision"] == "approved" and fraud.decision == "approved"
    assert b.smembers(attempts_key(p["receipt"])) == {fraud.id}  # b has not heard of a's return
    assert http.post("/api/link", json={"action": "heal"}).status_code == 200
    for s in (a, b):
        wait_until(
            lambda: s.smembers(attempts_key(p["receipt"])) == {r["attempt"], fraud.id},
            15,
            what="both attempts everywhere",
        )
        for attempt in (fraud.id, r["attempt"]):
            wait_until(
                lambda: s.hgetall(alert_key("al-" + attempt)).get("decision") == "review",
                15,
                what="both alerts everywhere",
            )
            assert "concurrent_returns" in s.hgetall(alert_key("al-" + attempt)).get("reasons", ""), s.hgetall(
                alert_key("al-" + attempt)
            )


def test_a_detector_killed_mid_stream_loses_and_duplicates_nothing(service, tmp_path):
    http, b = service["http"], service["b"]
    # The fixture's detector keeps running too: two detectors share the group.
    refs = service["refs"]
    receipts = [purchase(http, customer=f"cust-{i:05d}", capture=False)["receipt"] for i in range(120)]
    wait_until(lambda: all(b.r.exists(f"h:rcpt:{r}") for r in receipts), 20, what="replication")
    env = dict(os.environ)
    args = [sys.executable, "-m", "frauddemo", "detector", "--port", str(free_port()), "--name", "killed"]
    for ref in refs:
        args += ["--store", f"{ref.name}={ref.url}"]
        env[f"FRAUDDEMO_STORE_{ref.name.upper()}_PASSWORD"] = ref.password
    env["FRAUDDEMO_TERMINAL_KEY"] = KEYS.secret.hex()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=(tmp_path / "detector.log").open("wb"))
    try:
        hacked = HackedTill(b, KEYS, "b-pos-9")
        attempts = [hacked.refund(r, "x", 100, None, "no-photo").id for r in receipts]
        wait_until(lambda: b.r.xlen("fd:ev:verdicts") >= 10, 30, what="some verdicts")

        def children():
            out = subprocess.run(
                ["ps", "-ww", "-o", "pid=,cmd=", "--ppid", str(proc.pid)], capture_output=True, text=True
            )
            return [int(line.split()[0]) for line in out.stdout.splitlines() if "spawn_main" in line]

        workers = wait_until(lambda: len(children()) >= 1 and children(), 30, what="the detector's photo pool")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_until(lambda: not any(alive(w) for w in workers), 10, what="the pool's workers to die with it")
        wait_until(lambda: all(b.r.exists(verdict_key(a)) for a in attempts), 60, what="every verdict")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    alerts = [f[b"alert"].decode() for _, f in b.r.xrange("fd:ev:alerts")]
    assert sorted(alerts) == sorted(f"al-{a}" for a in attempts)  # each exactly once
    assert b.r.xlen("fd:ev:verdicts") == len(attempts)
