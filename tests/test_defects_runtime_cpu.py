"""Issue 16, item 4: the detector's photo pool follows the cgroup CPU quota, not the node's cores."""

import os
import subprocess
import sys

import pytest

import frauddemo
from frauddemo import detector
from frauddemo.config import StoreRef
from frauddemo.detector import Detector, cgroup_cpus, cpu_limit


def _files(root, files: dict) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


@pytest.mark.parametrize(
    "files,proc,want",
    [
        # cgroup v2: the process's own cgroup, then the namespace root
        ({"kubepods/pod1/cpu.max": "150000 100000\n"}, "0::/kubepods/pod1\n", 1.5),
        ({"cpu.max": "50000 100000\n"}, "0::/\n", 0.5),
        ({"cpu.max": "max 100000\n"}, "0::/\n", None),
        # cgroup v1 (this machine's kind): cpu or cpu,cpuacct hierarchies
        (
            {"cpu/docker/x/cpu.cfs_quota_us": "200000\n", "cpu/docker/x/cpu.cfs_period_us": "100000\n"},
            "4:cpu:/docker/x\n",
            2.0,
        ),
        (
            {"cpu,cpuacct/cpu.cfs_quota_us": "100000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"},
            "3:cpu,cpuacct:/\n",
            1.0,
        ),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, "2:cpu:/\n", None),
        ({}, "", None),  # no cgroup file system at all (macOS, a bare chroot)
    ],
)
def test_quota_parser(tmp_path, files, proc, want):
    root = tmp_path / "cgroup"
    root.mkdir()
    _files(root, files)
    (tmp_path / "self-cgroup").write_text(proc)
    assert cgroup_cpus(str(root), str(tmp_path / "self-cgroup")) == want


def test_pool_follows_the_quota_or_workers(monkeypatch):
    refs = [StoreRef("a", "redis://127.0.0.1:1/0", None)]
    monkeypatch.setattr(detector, "cgroup_cpus", lambda *a: 1.0)
    assert cpu_limit() == 1
    assert Detector(refs).workers == 1, "a 1-CPU quota must give one photo worker, whatever the cores"
    monkeypatch.setattr(detector, "cgroup_cpus", lambda *a: 0.25)
    assert Detector(refs).workers == 1  # a fraction of a CPU still gets one worker
    monkeypatch.setattr(detector, "cgroup_cpus", lambda *a: 64.0)
    assert Detector(refs).workers <= len(os.sched_getaffinity(0))  # never more than it may run on
    assert Detector(refs, workers=3).workers == 3  # --workers (the operator's, from the limit) wins


def _threads_env():
    return {v: os.environ.get(v) for v in frauddemo.SINGLE_THREAD_ENV}


def test_photo_workers_run_their_numeric_libraries_on_one_thread(monkeypatch):
    """A worker per CPU whose matrix library also starts a thread per CPU spins against the other
    workers: each worker's BLAS/OpenMP is told to use one thread, unless the operator said otherwise."""
    for var in frauddemo.SINGLE_THREAD_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the operator's own setting is kept
    d = Detector([StoreRef("a", "redis://127.0.0.1:1/0", None)], workers=1)
    try:
        seen = d.pool().submit(_threads_env).result(timeout=120)
    finally:
        d.pool().shutdown()
    assert seen == {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "1"}


def test_every_frauddemo_process_runs_numerics_on_one_thread():
    """The API (a till's photo check), the detector's own process and the lab's tills load numpy through
    the package, which sets the thread counts first (an operator's own setting kept)."""
    env = {k: v for k, v in os.environ.items() if k not in frauddemo.SINGLE_THREAD_ENV}
    env["MKL_NUM_THREADS"] = "2"
    code = "import frauddemo.photos.verify, os; print([os.environ.get(v) for v in frauddemo.SINGLE_THREAD_ENV])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "['1', '1', '2']"
