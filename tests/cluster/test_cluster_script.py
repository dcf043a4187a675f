"""tools/cluster.sh and tools/cluster-tools.sh as a person uses them: the tools are built once per
machine, and Ctrl-C (in the foreground mode, or in the middle of the start-up) leaves no process."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from frauddemo.procs import alive
from frauddemo_testkit.kubecluster import CLUSTER_SH, COMPONENTS, ROOT, LocalCluster, missing_tools


@pytest.fixture(autouse=True)
def tools_built():
    if missing_tools():
        pytest.fail(f"run make cluster-tools first: {missing_tools()}", pytrace=False) if os.environ.get(
            "CI"
        ) else pytest.skip("cluster tools not built")


def test_a_second_tools_run_rebuilds_nothing():
    proc = subprocess.run([str(ROOT / "tools" / "cluster-tools.sh")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "building" not in proc.stdout and "Kubernetes v1." in proc.stdout, proc.stdout


def _interrupt_when(tmp_path, mode: str, line: str) -> tuple[LocalCluster, dict, str]:
    c = LocalCluster(tmp_path / "c")
    proc = subprocess.Popen(
        [str(CLUSTER_SH), mode],
        env=c.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    out, seen, pids = [], False, {}
    deadline = time.monotonic() + 180
    try:
        for text in proc.stdout:
            out.append(text)
            pids.update(c.pids())
            if line in text:
                seen = True
                break
            assert time.monotonic() < deadline, "".join(out)
        assert seen, "".join(out)
        time.sleep(0.5)
        pids.update(c.pids())
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends to the foreground group
        rest, _ = proc.communicate(timeout=120)
        out.append(rest)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        c.stop()
    return c, pids, "".join(out)


def test_ctrl_c_in_the_foreground_mode_stops_everything(tmp_path):
    c, pids, out = _interrupt_when(tmp_path, "run", "Ctrl-C stops it")
    assert set(pids) == set(COMPONENTS), (pids, out)
    assert not [n for n, p in pids.items() if alive(p)], out
    assert "stopped" in out


def test_ctrl_c_during_start_up_stops_what_had_started(tmp_path):
    c, pids, out = _interrupt_when(tmp_path, "up", "kube-apiserver on")
    assert "etcd" in pids, out
    time.sleep(1)
    assert not [n for n, p in pids.items() if alive(p)], out
    assert "interrupted" in out and not list((c.dir / "pids").glob("*"))
