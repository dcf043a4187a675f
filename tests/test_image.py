"""The Dockerfile's promises, read with BuildKit's own parser (the `dockerfile` package), since no
Docker engine runs here: multi-stage, a slim Python pinned by version, wheels only, no compilers in
the final stage, a numeric non-root user that is the operator's APP_UID, the `frauddemo` entry point,
and a .dockerignore that lets in only what the build copies."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile

import dockerfile
import pytest
from chart_support import ROOT

from frauddemo_operator import builders

COMPILERS = re.compile(r"\b(gcc|g\+\+|cc|clang|make|build-essential|cmake|gfortran|rustc|cargo|python3?-dev)\b")
PINNED_SLIM = re.compile(r"^python:(\d+)\.(\d+)\.(\d+)-slim-[a-z]+$")


@pytest.fixture(scope="module")
def instructions() -> list:
    return list(dockerfile.parse_file(str(ROOT / "Dockerfile")))


def build_args(instructions) -> dict[str, str]:
    """ARGs declared before the first FROM, with their defaults."""
    out = {}
    for ins in instructions:
        if ins.cmd == "FROM":
            break
        if ins.cmd == "ARG":
            name, _, default = ins.value[0].partition("=")
            out[name] = default
    return out


def stages(instructions) -> list[list]:
    out: list[list] = []
    for ins in instructions:
        if ins.cmd == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def base_image(from_ins, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args[m.group(1)], from_ins.value[0])


def test_multi_stage_on_a_pinned_slim_python(instructions):
    args = build_args(instructions)
    st = stages(instructions)
    assert len(st) >= 2, "a build stage and a runtime stage"
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = tuple(int(x) for x in requires.removeprefix(">=").split("."))
    for stage in st:
        image = base_image(stage[0], args)
        m = PINNED_SLIM.match(image)
        assert m, f"{image}: pin a slim Python by its full version, e.g. python:3.11.13-slim-bookworm"
        assert tuple(map(int, m.groups()[:2])) >= minimum, f"{image} is older than requires-python {requires}"


def test_final_stage_has_no_compilers_and_copies_the_built_venv(instructions):
    final = stages(instructions)[-1]
    for ins in final:
        if ins.cmd == "RUN":
            assert not COMPILERS.search(ins.value[0]), ins.original
    copies = [ins for ins in final if ins.cmd == "COPY"]
    assert copies and all(any(f.startswith("--from=") for f in c.flags) for c in copies), (
        "the final stage takes only what the build stage made"
    )


def test_build_stage_installs_wheels_only(instructions):
    build = stages(instructions)[0]
    installs = [ins.value[0] for ins in build if ins.cmd == "RUN" and "pip install" in ins.value[0]]
    assert installs and all("--only-binary=:all:" in r for r in installs), installs


def test_runs_as_the_operators_numeric_non_root_user(instructions):
    final = stages(instructions)[-1]
    users = [ins.value[0] for ins in final if ins.cmd == "USER"]
    assert users, "the final stage must set USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit(), "numeric, so the kubelet can check runAsNonRoot"
    assert int(uid) == builders.APP_UID and int(uid) != 0 and (not gid or int(gid) != 0)
    # the user exists in the image (useradd with the same uid), so tools that look it up work
    assert any(ins.cmd == "RUN" and f"--uid {uid}" in ins.value[0] for ins in final)


def test_entry_point_is_frauddemo(instructions):
    final = stages(instructions)[-1]
    (entry,) = [ins for ins in final if ins.cmd == "ENTRYPOINT"]
    assert entry.json and list(entry.value) == ["frauddemo"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "frauddemo" in scripts


def test_exposes_the_ports_the_pods_use(instructions):
    final = stages(instructions)[-1]
    exposed = {int(p.split("/")[0]) for ins in final if ins.cmd == "EXPOSE" for p in ins.value}
    assert {builders.DETECTOR_PORT, builders.SYNCER_METRICS_PORT, 8081} <= exposed


def test_dockerignore_lets_in_only_what_the_build_copies(instructions):
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [ln for ln in lines if ln and not ln.startswith("#")]
    assert patterns[0] == "*", "an allow-list: ignore everything, then let in what the build copies"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = {
        src.rstrip("/")
        for ins in stages(instructions)[0]
        if ins.cmd == "COPY" and not ins.flags
        for src in ins.value[:-1]
    }
    assert allowed == copied
    for secret_or_local in (".venv", ".git", ".tools", "tests", "artifacts"):
        assert secret_or_local not in allowed


def test_build_context_makes_a_wheel_with_runtime_and_operator(instructions, tmp_path):
    """The build stage's `pip wheel`, run on exactly what its COPY lines take: the wheel holds both
    packages, their data files and the `frauddemo` entry point."""
    context = tmp_path / "context"
    context.mkdir()
    for ins in stages(instructions)[0]:
        if ins.cmd == "COPY" and not ins.flags:
            *sources, dest = ins.value
            for src in sources:
                target = context / (src if dest in ("./", ".") else dest)
                if (ROOT / src).is_dir():
                    shutil.copytree(ROOT / src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                else:
                    shutil.copy2(ROOT / src, target)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--disable-pip-version-check",
            "--wheel-dir",
            str(tmp_path / "wheels"),
            str(context),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "wheels").glob("frauddemo-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "frauddemo/cli.py",
        "frauddemo/store.lua",
        "frauddemo_operator/crd.yaml",
        "frauddemo_operator/samples/frauddemo.yaml",
        "frauddemo_operator/frauddemo-dashboard.json",
    ):
        assert needed in names, f"{needed} is not in the image's wheel"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "frauddemo = frauddemo.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
