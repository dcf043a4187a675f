"""Redis ACL users per role (acl.ROLES) on real servers: each role runs its process's real code paths
(tills, syncers, the detector and its API, a read-only inspector) and is refused what it should not do."""

import json
import os
import random
import select
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
import redis

from conftest import serving, wait_converged, wait_until
from frauddemo import acl
from frauddemo.attack_modes import AttackMode
from frauddemo.config import StoreRef
from frauddemo.detector import alert_id
from frauddemo.local import stack_ready
from frauddemo.pos import Simulator
from frauddemo.retail import ALERTS, PURCHASES, RETURNS, TerminalKeys, alert_key, verdict_key
from frauddemo.secretfiles import read_secret
from frauddemo.servers import free_port
from frauddemo.store import LIBRARY_CODE, Store, ops, pack_ops
from frauddemo.till import HackedTill, Till, capture
from frauddemo.web.app import create_app
from frauddemo_testkit.processes import up_argv

KEYS = TerminalKeys(bytes(range(32)))


def connect(srv, role: str) -> Store:
    return Store.connect(*srv.credentials(role), replica=srv.spec.name)


def client(srv, role: str) -> redis.Redis:
    url, password = srv.credentials(role)
    return redis.Redis.from_url(url, password=password, socket_timeout=5)


def verdict(store: Store, aid: str) -> dict:
    wait_until(lambda: store.hgetall(verdict_key(aid)).get("decision"), 30, what=f"verdict of {aid}")
    return store.hgetall(verdict_key(aid))


def test_every_role_runs_its_process_on_its_own_user(stores, links):
    """Tills (pos), both links with a full resync (syncer), the detector and every API route that touches
    a store (detector), and an inspector (dashboard): nothing they do is refused."""
    st = stores("a", "b", retention=20)
    (sa, a), (sb, b) = st["a"], st["b"]
    till_a, till_b = Till(connect(sa, "pos"), KEYS, "a-pos-1"), Till(connect(sb, "pos"), KEYS, "b-pos-1")
    rng = random.Random(5)
    sim = Simulator(till_b.store, KEYS, customers=4, seed=3)
    bought = [
        t.purchase(c, {"cap": 1}, capture(c, rng)) for t in (till_a, till_b) for c in sim.customers for _ in range(2)
    ]
    # past the retention and a whole stream node (MAXLEN ~ trims whole nodes of up to 100 small
    # entries; photos no longer make every entry a node of its own): the first sync is a full resync
    for i in range(250):
        a.write([ops.hset(f"h:filler:{i}", {"n": i})])
    links.mesh([sa, sb])
    wait_converged(st)
    assert links.stats[("a", "b")].resyncs == 1
    assert a.snapshot() == b.snapshot()

    app = create_app([StoreRef(n, *srv.credentials("detector")) for n, (srv, _) in st.items()], KEYS, workers=1)
    with serving(app) as api:
        mine = [p for p in bought if p["store"] == "a"]
        for till, store in ((till_a, a), (till_b, b)):  # a refund paid at each store, for the double returns
            p = next(p for p in bought if p["store"] == store.replica)
            first = till.return_(p["receipt"], capture(p["customer"], rng)).attempt
            assert verdict(store, first.id)["decision"] == "allow"
            wait_until(
                lambda: a.hgetall(verdict_key(first.id)) and b.hgetall(verdict_key(first.id)),
                20,
                what="the verdict everywhere",
            )
        hacked = HackedTill(till_b.store, KEYS, "b-pos-9")
        lines = {}
        for mode in AttackMode:
            if mode == "partition":
                assert api.post("/api/link", json={"action": "partition"}).status_code == 200
                wait_until(sim.partitioned, 10, what="partition seen by the till")
            lines[mode] = sim.hacked_step(hacked, mode, {"a": till_a})
            assert lines[mode] and lines[mode].startswith(mode), mode
        assert api.post("/api/link", json={"action": "heal"}).status_code == 200
        for mode, line in lines.items():
            assert verdict(b, line.split()[1])["decision"] in ("review", "block"), mode
        assert api.post("/api/hacked-pos", json={"running": False}).status_code == 200
        assert sim.paused()
        assert api.post("/api/hacked-pos", json={"running": True}).status_code == 200

        r = api.post(
            "/api/purchases",
            json={"store": "a", "customer": "cust-00001", "items": {"shirt": 1}},
            headers={"Idempotency-Key": "acl-1"},
        )
        assert r.status_code == 201, r.text
        receipt = r.json()["receipt"]
        r = api.post("/api/returns", json={"store": "a", "receipt": receipt, "capture": True})
        assert r.status_code == 201, r.text
        photo = mine[-1]
        assert api.post("/api/scenarios/fraud", json={}).status_code == 200
        for path in (
            "/readyz",
            "/api/stores",
            "/api/status",
            "/api/summary",
            "/api/purchases",
            f"/api/purchases/{receipt}",
            "/api/returns",
            "/api/alerts",
            "/api/hacked-pos",
            f"/api/photos/{photo['photo']}",
            f"/api/photos/{photo['photo']}/thumbnail",
        ):
            r = api.get(path)
            assert r.status_code == 200, (path, r.text)
        alerts = api.get("/api/alerts").json()
        assert alerts, "the attacks raised alerts"
        wait_converged(st)
        assert api.post("/api/reset").status_code == 200
        assert a.data_keys() == set() and b.data_keys() == set()

    inspector = client(sa, "dashboard")
    assert inspector.hgetall("fd:meta")[b"replica"] == b"a"
    assert inspector.xlen(PURCHASES) == 0 and inspector.xrange(RETURNS) == []
    assert inspector.hgetall("fd:link:b") and inspector.hgetall("fd:ckpt:b")
    assert inspector.fcall_ro("fd_export", 0, "h:nothing") is not None
    inspector.close()


def test_the_api_follows_events_on_the_detector_user(stores):
    """/api/events reads the streams with XREVRANGE and XREAD (the under-privilege a browser test found)."""
    st = stores("a")
    sa, a = st["a"]
    app = create_app([StoreRef("a", *sa.credentials("detector"))], KEYS, engine=False)
    till = Till(connect(sa, "pos"), KEYS, "a-pos-1")
    stop = threading.Event()

    def buy():  # until the event arrives: the stream's position is taken when the client connects
        while not stop.wait(0.2):
            till.purchase("cust-00002", {"shirt": 1}, None)

    with serving(app) as api, api.stream("GET", "/api/events?types=purchase", timeout=10) as events:
        t = threading.Thread(target=buy, daemon=True)
        t.start()
        try:
            lines = events.iter_lines()
            assert any(line == "event: purchase" for line in lines)
        finally:
            stop.set()
            t.join(5)


# What each role must be refused. Data written here would not be logged (or not be the role's), and the
# admin commands would let a client reconfigure or wipe the server.
ADMIN_ONLY = [
    ("CONFIG", "GET", "maxmemory"),
    ("CONFIG", "SET", "appendonly", "no"),
    ("ACL", "LIST"),
    ("ACL", "SETUSER", "evil", "on", ">x", "+@all"),
    ("FUNCTION", "LOAD", "REPLACE", LIBRARY_CODE),
    ("FUNCTION", "DELETE", "frauddemo"),
    ("FUNCTION", "FLUSH"),
    ("SHUTDOWN", "NOSAVE"),
    ("DEBUG", "SLEEP", "0"),
    ("MODULE", "LIST"),
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("KEYS", "*"),
    ("INFO",),
    ("CLIENT", "KILL", "TYPE", "normal"),
    ("MONITOR",),
    ("SAVE",),
    ("BGREWRITEAOF",),
    ("SCRIPT", "FLUSH"),
    ("REPLICAOF", "127.0.0.1", "1"),
    ("SUBSCRIBE", "x"),
    ("SELECT", "1"),
]
# The detector reads the stores' memory and persistence state (GET /api/status, the store metrics).
ALLOWED = {"detector": [("INFO",)]}
REFUSED = {
    "pos": [
        ("XREAD", "STREAMS", "fd:log", "0"),
        ("XRANGE", "fd:log", "-", "+"),
        ("XADD", "fd:ev:verdicts", "*", "a", "1"),
        ("XRANGE", "fd:ev:returns", "-", "+"),
        ("HSET", "fd:ckpt:b", "seq", "0"),
        ("FCALL", "fd_checkpoint", "0", "b", "e", "0", "0-0"),
        ("FCALL", "fd_link", "0", "b", "state", "up"),
        ("FCALL", "fd_merge", "0", "b", "e"),
        ("SET", "fd:pause:b", "1"),
        ("HSET", "fd:ctl", "hacked", "x"),
        ("XREADGROUP", "GROUP", "detectors", "x", "STREAMS", "fd:ev:returns", ">"),
        ("EVAL", "return 1", "0"),
        ("DEL", "h:rcpt:x"),
        ("UNLINK", "h:rcpt:x"),
        ("FCALL_RO", "fd_position", "0"),
        # a till never writes an embedding (it could pair a purchase photo with another face)
        ("SET", "b:emb:" + "0" * 64, "x"),
        ("FCALL", "fd_write", "0", pack_ops([ops.blob("b:emb:" + "0" * 64, b"x")])),
        # a hacked till may not forge the detector's word, directly or through fd_write
        ("HSET", "h:verdict:att-1", "decision", "allow"),
        ("HSET", "h:alert:x", "a", "1"),
        ("FCALL", "fd_write", "0", pack_ops([ops.hset("h:verdict:att-1", {"decision": "allow"})])),
        ("FCALL", "fd_write", "0", pack_ops([ops.hset("h:alert:al-1", {"paid": "0"})])),
        ("FCALL", "fd_write", "0", pack_ops([ops.incr("c:anything")])),
    ],
    "syncer": [
        ("XADD", "fd:ev:returns", "*", "a", "1"),
        ("XRANGE", "fd:ev:returns", "-", "+"),
        ("XADD", "fd:log", "*", "a", "1"),
        ("SET", "fd:pause:b", "1"),
        ("HSET", "fd:ctl", "hacked", "x"),
        ("SET", "fd:idem:x", "1"),
        ("EVAL", "return 1", "0"),
        ("DEL", "h:rcpt:x"),
        ("HGETALL", "fd:link:b"),
        ("HVALS", "s:wallet:x"),
    ],
    "detector": [
        ("XRANGE", "fd:ev:labels", "-", "+"),
        ("HGETALL", "fd:ckpt:b"),
        ("FCALL", "fd_merge", "0", "b", "e"),
        ("FCALL", "fd_link", "0", "b", "state", "up"),
        ("XGROUP", "DESTROY", "fd:ev:returns", "detectors"),
        ("HSET", "fd:link:b", "state", "up"),
    ],
    "dashboard": [
        ("HSET", "h:x", "a", "1"),
        ("SET", "b:x", "1"),
        ("XADD", "fd:ev:returns", "*", "a", "1"),
        ("FCALL", "fd_write", "0", "x"),
        ("FCALL", "fd_checkpoint", "0", "b", "e", "0", "0-0"),
        ("FCALL", "fd_init", "0", "a", "e"),
        ("FCALL_RO", "fd_position", "0"),
        ("DEL", "h:x"),
        ("EVAL", "return 1", "0"),
        ("XREAD", "STREAMS", "fd:log", "0"),
        ("GET", "fd:idem:x"),
        ("XREADGROUP", "GROUP", "detectors", "x", "STREAMS", "fd:ev:returns", ">"),
    ],
}


# NOPERM for a command or key; inside a function the server says "ACL failure in script"; DEBUG is off
# for everyone (enable-debug-command no), ahead of the ACL.
REFUSAL = ("NOPERM", "ACL failure in script", "DEBUG command not allowed")


@pytest.fixture
def roles_store(stores):
    st = stores("a")
    srv, store = st["a"]
    store.write([ops.hset("h:x", {"a": "1"})])
    clients = {role: client(srv, role) for role in acl.CLIENT_ROLES}
    yield srv, store, clients
    for c in clients.values():
        c.close()


@pytest.mark.parametrize("role", acl.CLIENT_ROLES)
def test_roles_are_refused_what_they_do_not_need(roles_store, role):
    srv, store, clients = roles_store
    c = clients[role]
    allowed = []
    for cmd in [c for c in ADMIN_ONLY if c not in ALLOWED.get(role, [])] + REFUSED[role]:
        try:
            c.execute_command(*cmd)
        except redis.exceptions.NoPermissionError:
            continue
        except redis.ResponseError as e:
            if any(m in str(e) for m in REFUSAL):
                continue
            allowed.append((cmd[:3], str(e)[:80]))
        else:
            allowed.append((cmd[:3], "ran"))
    assert not allowed, "\n".join(map(str, allowed))
    # Nothing changed: the server still answers the admin, with its functions and data in place.
    assert store.hgetall("h:x") == {"a": "1"} and store.r.fcall_ro("fd_version", 0)
    assert store.r.config_get("appendonly") == {"appendonly": "yes"}


def test_a_wrong_or_missing_password_is_refused(roles_store):
    srv = roles_store[0]
    url, _ = srv.credentials("pos")
    for password in ("wrong", None):
        with pytest.raises(
            (redis.AuthenticationError, redis.exceptions.AuthenticationWrongNumberOfArgsError, redis.ResponseError)
        ):
            redis.Redis.from_url(url, password=password, socket_timeout=5).ping()
    with pytest.raises(redis.AuthenticationError):  # a role's password is not another role's
        redis.Redis.from_url(url, password=srv.credentials("syncer")[1], socket_timeout=5).ping()


def test_the_rendered_file_holds_hashes_only():
    text = acl.render({"default": ["admin-secret"], "pos": ["old-pos", "new-pos"]})
    assert "secret" not in text and "old-pos" not in text and "new-pos" not in text
    assert acl.password_hash("old-pos") in text and acl.password_hash("new-pos") in text
    lines = {line.split()[1]: line for line in text.splitlines()}
    assert set(lines) == set(acl.ROLES)
    assert " off" in lines["syncer"] and " on " in lines["pos"]  # no password: switched off


def test_alert_flow_needs_no_admin(roles_store):
    """The detector's create-once verdict/alert writes go through fd_write on its own user."""
    srv, store, clients = roles_store
    det = connect(srv, "detector")
    c = det.write([ops.hcreate(alert_key(alert_id("att-1")), {"decision": "block"}), ops.event(ALERTS, {"a": "1"})])
    again = det.write([ops.hcreate(alert_key(alert_id("att-1")), {"decision": "block"}), ops.event(ALERTS, {"a": "1"})])
    assert not c.skipped and again.skipped and store.r.xlen(ALERTS) == 1
    det.close()


def test_the_readme_table_is_the_roles():
    readme = (Path(__file__).parents[1] / "docs" / "security.md").read_text()  # the roles table
    block = readme.split("<!-- roles:begin", 1)[1].split("-->", 1)[1].split("<!-- roles:end -->", 1)[0]
    assert block.strip() == acl.roles_table().strip()


def test_no_password_in_argv_environment_logs_or_stack_json(tmp_path):
    """`frauddemo up` as a user runs it: every role's password of every store stays in its 0600 file."""
    port, data = free_port(), tmp_path / "stack"
    proc = subprocess.Popen(
        up_argv(port, data, "--rate", "20", "--duration", "120"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def ready():
        try:
            return stack_ready(f"http://127.0.0.1:{port}")
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, 60, what="the stack")
        stack = json.loads((data / "stack.json").read_text())
        files = {Path(p["password_file"]) for p in stack["processes"] if p.get("password_file")}
        files |= {Path(f) for p in stack["processes"] for f in (p.get("users") or {}).values()}
        assert len(files) == 2 * len(acl.ROLES)  # two stores, a password per role each
        passwords = {f: read_secret(f) for f in files}
        for f in files:
            assert f.stat().st_mode & 0o777 == 0o600
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/api/summary").json().get("returns"), 30, what="traffic")

        pids = {p["pid"] for p in stack["processes"]} | {proc.pid}
        for pid in list(pids):  # the children's own children (photo workers) too
            try:
                pids |= {
                    int(c)
                    for t in os.listdir(f"/proc/{pid}/task")
                    for c in open(f"/proc/{pid}/task/{t}/children").read().split()
                }
            except OSError:
                pass
        exposed = []
        for pid in pids:
            for what in ("cmdline", "environ"):
                try:
                    blob = open(f"/proc/{pid}/{what}", "rb").read()
                except OSError:
                    continue
                exposed += [(pid, what, str(f)) for f, pw in passwords.items() if pw.encode() in blob]
        for path in data.rglob("*"):
            if path.is_file() and path not in files:
                blob = path.read_bytes()
                exposed += [(str(path), str(f)) for f, pw in passwords.items() if pw.encode() in blob]
        assert exposed == []
    finally:
        if proc.poll() is None:
            proc.terminate()
        out = proc.communicate(timeout=60)[0]
    assert not [f for f, pw in passwords.items() if pw in out]  # nor in the supervisor's own output


def test_the_store_agent_applies_a_changed_acl_file_and_survives_a_bad_one(store_servers, tmp_path):
    """`frauddemo store-agent` (the operator's sidecar) for real: it loads the function library, applies a
    new ACL file with ACL LOAD (no restart), and keeps the last good users when a file is malformed."""
    (srv,) = store_servers(1)
    spec = srv.spec
    old = read_secret(spec.role_password_file("pos"))
    assert not srv.spec.client().function_list(library="frauddemo")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "frauddemo",
            "store-agent",
            "--url",
            spec.url,
            "--password-file",
            str(tmp_path / "missing"),
            "--password-file",
            str(spec.password_file),
            "--acl-file",
            str(spec.acl_file),
            "--interval",
            "0.1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    admin = spec.client()

    def pos_ok(password):
        try:
            return redis.Redis(port=spec.port, username="pos", password=password, socket_timeout=2).ping()
        except redis.AuthenticationError:
            return False

    try:
        wait_until(lambda: admin.function_list(library="frauddemo"), 15, what="the library loaded")
        session = redis.Redis(port=spec.port, username="pos", password=old, single_connection_client=True)
        assert session.ping()
        passwords = {r: [read_secret(spec.role_password_file(r))] for r in acl.ROLES}
        passwords["pos"] = ["rotated-pos-password"]
        replace(spec.acl_file, acl.render(passwords))
        wait_until(lambda: pos_ok("rotated-pos-password"), 15, what="the new ACL file applied")
        assert not pos_ok(old) and srv.proc.poll() is None  # the same server, no restart
        with pytest.raises(redis.ConnectionError):  # a session opened with the retired password is closed
            wait_until(lambda: not session.ping(), 45, what="the old session closed")  # 15 s was short under load (CI)
        replace(spec.acl_file, "")  # no admin password: it would open the store to anyone
        wait_until(
            lambda: proc.poll() is not None or "not applied" in "".join(_drain(proc)), 15, what="the agent's refusal"
        )
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=spec.port, socket_timeout=2).set("k", "v")
        replace(spec.acl_file, acl.render(passwords).replace("user pos reset on", "user pos reset on #not-a-hash"))
        wait_until(
            lambda: proc.poll() is not None or "retrying" in "".join(_drain(proc)), 15, what="the agent's warning"
        )
        assert proc.poll() is None and pos_ok("rotated-pos-password")  # the last good users stay
    finally:
        proc.terminate()
        out = proc.communicate(timeout=15)[0]
        admin.close()
    assert proc.returncode == 0, out


def replace(path: Path, text: str) -> None:
    """As the kubelet updates a mounted Secret: all at once (a rename)."""
    tmp = path.with_suffix(".new")
    tmp.write_text(text)
    tmp.replace(path)


def _drain(proc) -> list[str]:
    """Lines the process has written so far (non-blocking)."""
    out = []
    while select.select([proc.stdout], [], [], 0)[0]:
        line = proc.stdout.readline()
        if not line:
            break
        out.append(line)
    return out
