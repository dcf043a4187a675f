"""Redis users per role in Kubernetes, with the real kopf runtime against the emulator and a real
valkey-server loading the operator's ACL Secret: a password Secret per role mounted only where needed, and
a rotation (annotation) during which old and new passwords both work, after which the old ones are refused."""

from __future__ import annotations

import base64

import pytest
import redis

from frauddemo import acl, store_agent
from frauddemo.secretfiles import write_secret
from frauddemo.servers import Server, ServerSpec
from frauddemo_operator import builders
from frauddemo_operator.reconcile import rotation_step, secret_values
from frauddemo_testkit.testing import TWO_STORES, wait_for

pytest_plugins = ("frauddemo_testkit.pytest_plugin",)


def secret(kube_cluster, ns, name) -> dict:
    return secret_values(kube_cluster.emu.get("secrets", ns, name))


def ping(port: int, role: str, password: str) -> bool:
    r = redis.Redis(port=port, username=role, password=password, socket_timeout=2)
    try:
        return bool(r.ping())
    except redis.AuthenticationError:
        return False
    finally:
        r.close()


@pytest.fixture
def store_a(kube_cluster, kube_ns, tmp_path, server_binary):
    """Store a of a FraudDemo as its pod runs it: the ACL file and admin password from the operator's
    Secrets, and the store agent's step (what `frauddemo store-agent` does) to apply changes."""
    kube_cluster.apply_fd(kube_ns, "demo", TWO_STORES)
    kube_cluster.wait_phase(kube_ns, "demo", "Ready")
    spec = ServerSpec.create("a", tmp_path, server_binary)
    write_secret(spec.password_file, secret(kube_cluster, kube_ns, "demo-store-a-auth")["password"])

    def mount():  # what the kubelet does when the Secret changes
        write_secret(spec.acl_file, secret(kube_cluster, kube_ns, "demo-store-a-acl")[builders.ACL_KEY])

    mount()
    srv = Server(spec)
    seen = [None]

    def agent():
        admin = srv.spec.client(socket_timeout=5)
        try:
            seen[0] = store_agent.agent_step(admin, spec.acl_file, seen[0])
        finally:
            admin.close()

    agent()
    yield srv, mount, agent
    srv.kill()


def test_a_secret_per_role_and_an_acl_file_of_hashes(kube_cluster, kube_ns, store_a):
    srv, _, _ = store_a
    acl_text = secret(kube_cluster, kube_ns, "demo-store-a-acl")[builders.ACL_KEY]
    for role in acl.CLIENT_ROLES:
        pw = secret(kube_cluster, kube_ns, f"demo-store-a-{role}")["password"]
        assert len(pw) >= 24 and pw not in acl_text and acl.password_hash(pw) in acl_text
        assert ping(srv.spec.port, role, pw)
        assert pw != secret(kube_cluster, kube_ns, f"demo-store-b-{role}")["password"]
    assert not ping(srv.spec.port, "pos", secret(kube_cluster, kube_ns, "demo-store-b-pos")["password"])
    # the store agent loaded the function library: a till's user can write through it
    pos = redis.Redis(
        port=srv.spec.port,
        username="pos",
        socket_timeout=2,
        password=secret(kube_cluster, kube_ns, "demo-store-a-pos")["password"],
    )
    assert pos.fcall_ro("fd_version", 0)
    with pytest.raises(redis.exceptions.NoPermissionError):
        pos.config_get("*")
    pos.close()


def test_rotation_keeps_old_and_new_valid_for_the_grace_then_drops_the_old(kube_cluster, kube_ns, store_a):
    srv, mount, agent = store_a
    port = srv.spec.port
    old = {r: secret(kube_cluster, kube_ns, f"demo-store-a-{r}")["password"] for r in acl.CLIENT_ROLES}
    pos_template = kube_cluster.emu.get("deployments", kube_ns, "demo-pos-a")["spec"]["template"]
    session = redis.Redis(
        port=port, username="pos", password=old["pos"], single_connection_client=True, retry_on_error=[]
    )
    assert session.ping()
    kube_cluster.patch_fd(kube_ns, "demo", {"metadata": {"annotations": {builders.A_ROTATE: "2026-12-01"}}})

    wait_for(
        lambda: (kube_cluster.status(kube_ns, "demo").get("passwords") or {}).get("state") == "Rotating",
        10,
        what="the rotation to start",
    )
    new = {r: secret(kube_cluster, kube_ns, f"demo-store-a-{r}")["password"] for r in acl.CLIENT_ROLES}
    assert all(new[r] != old[r] for r in old)
    assert secret(kube_cluster, kube_ns, "demo-store-a-pos")["previous"] == old["pos"]
    # the workloads roll onto the new passwords; the stores are not restarted
    rolled = kube_cluster.emu.get("deployments", kube_ns, "demo-pos-a")["spec"]["template"]
    assert rolled["metadata"].get("annotations", {}).get(builders.A_RESTARTED_AT)
    assert rolled != pos_template
    assert builders.A_RESTARTED_AT not in (
        kube_cluster.emu.get("statefulsets", kube_ns, "demo-store-a")["spec"]["template"]["metadata"].get("annotations")
        or {}
    )

    mount()
    agent()
    for r in acl.CLIENT_ROLES:  # during the grace: both
        assert ping(port, r, old[r]) and ping(port, r, new[r]), r
    assert session.ping()  # a client on the old password keeps working

    st = wait_for(
        lambda: (
            (kube_cluster.status(kube_ns, "demo").get("passwords") or {}).get("state") == "Rotated"
            and kube_cluster.status(kube_ns, "demo")
        ),
        15,
        what="the grace to end",
    )
    assert st["passwords"]["rotation"] == "2026-12-01" and "previousValidUntil" not in st["passwords"]
    assert "previous" not in secret(kube_cluster, kube_ns, "demo-store-a-pos")
    mount()
    agent()
    for r in acl.CLIENT_ROLES:  # after: only the new one
        assert not ping(port, r, old[r]) and ping(port, r, new[r]), r
    with pytest.raises(redis.ConnectionError):  # and its sessions were closed by the store agent
        session.ping()
    session.close()
    # the same annotation value again rotates nothing
    kube_cluster.patch_fd(kube_ns, "demo", {"spec": {"pos": {"rate": 3}}})
    wait_for(lambda: kube_cluster.reconciled(kube_ns, "demo"), what="update reconciled")
    assert secret(kube_cluster, kube_ns, "demo-store-a-pos")["password"] == new["pos"]


def test_rotation_step_is_a_pure_decision():
    b = base64.b64encode
    start = rotation_step({"password": "p"}, {}, "r1", 100.0, 10.0, lambda: "q")
    assert start["data"] == {"password": b(b"q").decode(), "previous": b(b"p").decode()}
    assert start["metadata"]["annotations"][builders.A_ROTATION] == "r1"
    held = {builders.A_ROTATION: "r1", builders.A_ROTATED_AT: "1970-01-01T00:01:40Z"}
    assert rotation_step({"password": "q", "previous": "p"}, held, "r1", 105.0, 10.0, lambda: "x") is None
    assert rotation_step({"password": "q", "previous": "p"}, held, "r1", 111.0, 10.0, lambda: "x") == {
        "data": {"previous": None}
    }
    assert rotation_step({"password": "q"}, held, "r1", 500.0, 10.0, lambda: "x") is None
    assert rotation_step({"password": "q"}, {}, None, 500.0, 10.0, lambda: "x") is None


def test_an_edited_acl_secret_is_put_back(kube_cluster, kube_ns, store_a):
    want = secret(kube_cluster, kube_ns, "demo-store-a-acl")[builders.ACL_KEY]
    r = kube_cluster.http.patch(
        f"/api/v1/namespaces/{kube_ns}/secrets/demo-store-a-acl",
        json={
            "data": {builders.ACL_KEY: base64.b64encode(b"user default on nopass ~* +@all\n").decode()},
            "stringData": None,
        },
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 200, r.text
    wait_for(
        lambda: secret(kube_cluster, kube_ns, "demo-store-a-acl")[builders.ACL_KEY] == want,
        10,
        what="the ACL file put back",
    )
