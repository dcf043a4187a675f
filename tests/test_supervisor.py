"""`frauddemo up` as a user runs it: readiness, restarts after kill -9, and nothing left behind."""

import json
import os
import signal
import subprocess

import httpx
import pytest

from conftest import wait_until
from frauddemo.local import stack_ready
from frauddemo.procs import alive
from frauddemo.servers import free_port
from frauddemo_testkit.processes import up_argv


def _up(tmp_path, *extra):
    port = free_port()
    data = tmp_path / "stack"
    proc = subprocess.Popen(
        up_argv(port, data, "--rate", "20", *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, port, data


def _stack(data):
    try:
        return json.loads((data / "stack.json").read_text())
    except (OSError, ValueError):
        return None


def _ready(port):
    """Stores up and links replicating (/readyz alone: the service can serve)."""
    return stack_ready(f"http://127.0.0.1:{port}")


def _pids(stack):
    return {p["name"]: p["pid"] for p in stack["processes"]}


@pytest.fixture
def stack(tmp_path):
    proc, port, data = _up(tmp_path, "--duration", "120")
    try:
        wait_until(lambda: _stack(data), 30, what="stack.json")
        wait_until(lambda: _ready(port), 30, what="readiness")
        yield proc, port, data
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def test_up_is_ready_serves_metrics_and_describes_itself(stack):
    proc, port, data = stack
    st = _stack(data)
    roles = sorted(p["role"] for p in st["processes"])
    assert roles == ["detector", "hacked-pos", "pos", "pos", "store", "store", "syncer", "syncer"]
    for p in st["processes"]:
        if p["role"] == "store":
            assert os.stat(p["password_file"]).st_mode & 0o777 == 0o600
            pw = open(p["password_file"]).read().strip()
            assert len(pw) >= 24
            assert pw not in (data / "stack.json").read_text()
            with open(f"/proc/{p['pid']}/cmdline", "rb") as f:
                assert pw.encode() not in f.read()  # never on a command line
    wait_until(
        lambda: "frauddemo_replication_lag_seconds_count" in httpx.get(f"http://127.0.0.1:{port}/metrics").text,
        15,
        what="lag metric",
    )
    status = httpx.get(f"http://127.0.0.1:{port}/api/status").json()
    assert {(l["source"], l["target"]) for l in status["links"]} == {("a", "b"), ("b", "a")}


def test_a_child_killed_9_is_restarted_and_shutdown_leaves_nothing(stack):
    proc, port, data = stack
    before = _pids(_stack(data))
    os.kill(before["syncer-a-b"], signal.SIGKILL)
    os.kill(before["store-b"], signal.SIGKILL)
    wait_until(
        lambda: (p := _pids(_stack(data)))["syncer-a-b"] != before["syncer-a-b"] and p["store-b"] != before["store-b"],
        30,
        what="restarts",
    )
    wait_until(lambda: _ready(port), 30, what="readiness after restarts")
    all_pids = set(before.values()) | set(_pids(_stack(data)).values())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    out = proc.stdout.read()
    assert "syncer-a-b" in out and "restarting" in out
    wait_until(lambda: not any(alive(p) for p in all_pids), 10, what="every child gone")


def test_kill_9_of_the_supervisor_takes_its_children_with_it(stack):
    proc, port, data = stack
    pids = set(_pids(_stack(data)).values())
    proc.kill()
    proc.wait()
    wait_until(lambda: not any(alive(p) for p in pids), 10, what="orphans to die")


def test_duration_stops_everything(tmp_path):
    proc, port, data = _up(tmp_path, "--duration", "4")
    assert proc.wait(60) == 0
    pids = set(_pids(_stack(data)).values())
    assert not any(alive(p) for p in pids)


@pytest.mark.parametrize(
    "args,msg",
    [
        (["--redis-server", "/bin/true"], "is not a redis-server"),
        (["--redis-server", "/nonexistent"], "cannot run"),
        (["--stores", "a"], "at least two stores"),
        (["--stores", "a,a"], "repeat"),
    ],
)
def test_up_refuses_bad_options(tmp_path, args, msg):
    proc, port, data = _up(tmp_path, *args)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2 and msg in out
