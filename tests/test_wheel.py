"""What users install: the wheel `pip wheel .` builds (what the Dockerfile does), installed with its
dependencies into a clean venv, not the editable checkout the other tests import. Every module in it
imports, every `frauddemo` verb answers --help, and no test kit ships."""

from __future__ import annotations

import os
import subprocess
import zipfile
from pathlib import Path

import pytest
from chart_support import ROOT

pytestmark = pytest.mark.slow

TEST_ONLY = ("pytest", "kmock", "httpx", "hypothesis", "schemathesis", "playwright")


def _run(env_dir: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{env_dir / 'bin'}:{env['PATH']}"
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, cwd=env_dir, env=env, **kw)


def test_the_wheel_holds_every_source_module_and_no_test_kit(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    roots = {
        "frauddemo": ROOT / "workloads" / "frauddemo",
        "frauddemo_operator": ROOT / "operator" / "frauddemo_operator",
    }
    missing = [
        f"{pkg}/{f.relative_to(d)}"
        for pkg, d in roots.items()
        for f in d.rglob("*")
        if f.is_file() and "__pycache__" not in f.parts and f"{pkg}/{f.relative_to(d)}" not in names
    ]
    assert not missing, f"the wheel lacks {missing}"
    assert not [n for n in names if "testkit" in n or n.endswith(("emulator.py", "pytest_plugin.py"))]
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    requires = [line for line in meta.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert not [
        r for r in requires if r.split()[1].split("[")[0].split("=")[0].split("<")[0].split(">")[0] in TEST_ONLY
    ], requires


def test_every_module_imports_from_the_installed_wheel(wheel_venv):
    code = (
        "import importlib, pkgutil, sys\n"
        "import frauddemo, frauddemo_operator\n"
        "assert 'site-packages' in frauddemo.__file__, frauddemo.__file__\n"
        "bad = []\n"
        "for pkg in (frauddemo, frauddemo_operator):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        try: importlib.import_module(m.name)\n"
        "        except Exception as e: bad.append(f'{m.name}: {e!r}')\n"
        "print('\\n'.join(bad)); sys.exit(1 if bad else 0)\n"
    )
    proc = _run(wheel_venv, str(wheel_venv / "bin" / "python"), "-c", code)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for mod in TEST_ONLY:
        probe = _run(wheel_venv, str(wheel_venv / "bin" / "python"), "-c", f"import {mod}")
        assert probe.returncode != 0, f"{mod} (test-only) is installed with the runtime"


def test_every_verb_answers_help_from_the_installed_wheel(wheel_venv):
    exe = str(wheel_venv / "bin" / "frauddemo")
    top = _run(wheel_venv, exe, "--help")
    assert top.returncode == 0, top.stderr
    listed = top.stdout.split("{", 1)[1].split("}", 1)[0].split(",")
    assert {"up", "syncer", "detector", "pos", "operator", "bench"} <= set(listed), listed
    for verb in listed:
        proc = _run(wheel_venv, exe, verb, "--help")
        assert proc.returncode == 0 and "usage:" in proc.stdout, f"frauddemo {verb} --help: {proc.stderr[-2000:]}"
