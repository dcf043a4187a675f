"""Shared fixtures: real Valkey servers on free loopback ports, real syncers; all cleaned up."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import threading
import venv
from pathlib import Path

import httpx
import pytest
import uvicorn

from frauddemo.servers import Server, ServerSpec, find_server, free_port
from frauddemo.store import Store
from frauddemo.syncer import LinkConfig, LinkStats, Syncer
from frauddemo_testkit.testing import wait_for as wait_until  # one polling helper for all tests

pytest_plugins = ("frauddemo_testkit.cluster_fixtures",)


def pytest_collection_modifyitems(items):
    """Everything under tests/cluster/ runs against a real control plane: marked `cluster`."""
    here = Path(__file__).resolve().parent / "cluster"
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(here):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def server_binary():
    return find_server()


@pytest.fixture
def store_servers(tmp_path, server_binary):
    """Factory: store_servers(n) or store_servers(names=[...]) -> list of started Servers."""
    started: list[Server] = []

    def make(n: int = 2, names=None):
        names = list(names or "abcdefgh"[:n])
        out = [
            Server(ServerSpec.create(name, tmp_path / f"srv{len(started) + i}", server_binary))
            for i, name in enumerate(names)
        ]
        started.extend(out)
        return out

    yield make
    for s in started:
        s.kill()


@pytest.fixture
def stores(store_servers):
    """Factory: stores("a", "b", retention=N) -> {name: (Server, Store)} with replica ids set."""
    opened = []

    def make(*names, retention=None):
        servers = store_servers(names=names)
        out = {}
        for srv in servers:
            st = Store.connect(srv.url, srv.password, replica=srv.spec.name, retention=retention)
            opened.append(st)
            out[srv.spec.name] = (srv, st)
        return out

    yield make
    for st in opened:
        st.close()


class Links:
    """Syncer threads between servers, started and stopped per link."""

    def __init__(self):
        self.running: dict[tuple[str, str], tuple[Syncer, threading.Thread]] = {}
        self.stats: dict[tuple[str, str], LinkStats] = {}

    def start(self, src: Server, dst: Server, **cfg) -> Syncer:
        key = (src.spec.name, dst.spec.name)
        assert key not in self.running, f"link {key} already running"
        stats = self.stats.setdefault(key, LinkStats())
        (src_url, src_pw), (dst_url, dst_pw) = src.credentials("syncer"), dst.credentials("syncer")
        s = Syncer(LinkConfig(src_url, dst_url, src_pw, dst_pw, **cfg), stats)
        t = threading.Thread(target=s.run, name=f"syncer-{key[0]}-{key[1]}", daemon=True)
        t.start()
        self.running[key] = (s, t)
        return s

    def mesh(self, servers, **cfg) -> None:
        for a in servers:
            for b in servers:
                if a is not b:
                    self.start(a, b, **cfg)

    def stop(self, src_name: str, dst_name: str) -> None:
        s, t = self.running.pop((src_name, dst_name))
        s.stop()
        t.join(15)
        assert not t.is_alive(), "syncer thread did not stop"

    def stop_all(self) -> None:
        for key in list(self.running):
            self.stop(*key)


@pytest.fixture
def links():
    ls = Links()
    yield ls
    ls.stop_all()


def converged(named_stores: dict) -> bool:
    """Every store has merged everything every other store has logged so far."""
    for a, (_, sa) in named_stores.items():
        seq = sa.seq()
        for b, (_, sb) in named_stores.items():
            if a != b and int(sb.checkpoint(a).get("seq", 0)) < seq:
                return False
    return True


def wait_converged(named_stores: dict, timeout: float = 30.0) -> None:
    wait_until(lambda: converged(named_stores), timeout, what="stores to converge")


@contextlib.contextmanager
def serving(app):
    """`app` through uvicorn on a free loopback port; yields an httpx client to it; stops the server."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    try:
        wait_until(lambda: server.started, 20, what="uvicorn")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        t.join(15)


# --- what users install: the wheel, in a clean venv (test_wheel.py and the cluster tests) -------------

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of what the Dockerfile copies (setuptools' in-tree build/ keeps stale files)."""
    out, src = tmp_path_factory.mktemp("wheel"), tmp_path_factory.mktemp("wheel-src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("workloads", "operator"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--disable-pip-version-check",
            "--wheel-dir",
            str(out),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "would be ignored" not in proc.stdout + proc.stderr, "setuptools drops a data package"
    (whl,) = out.glob("frauddemo-*.whl")
    return whl


@pytest.fixture(scope="session")
def wheel_venv(wheel, tmp_path_factory) -> Path:
    """A clean venv (no system site-packages, no checkout on its path) with the wheel and its deps."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    proc = subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return env_dir
