"""pytest fixtures for the tests against a real control plane (tests/cluster/): each test module gets
its own cluster (tools/cluster.sh in a temp dir, free ports), stopped after it; no process outlives the
module. Loaded by tests/conftest.py (one conftest only: the tests import helpers from it by name)."""

from __future__ import annotations

import os

import pytest

from frauddemo.procs import alive
from frauddemo_testkit.kubecluster import COMPONENTS, LocalCluster, missing_tools


def _require_tools() -> None:
    missing = missing_tools()
    if not missing:
        return
    msg = f"the cluster tools are missing ({', '.join(missing)}): run `make cluster-tools` and `make tools`"
    if os.environ.get("CI"):
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    _require_tools()
    c = LocalCluster(tmp_path_factory.mktemp("cluster"))
    with c:
        pids = c.pids()
        assert set(pids) == set(COMPONENTS), pids
        yield c
    left = [name for name, pid in pids.items() if alive(pid)]
    assert not left, f"still running after tools/cluster.sh down: {left}"
