"""The first five minutes with the CLI, as a presenter meets them (issue 19): real `frauddemo up`
processes on free ports with temporary data dirs; the other commands find the running demo by
themselves (stack.json in the default data dir, here under a temporary XDG_STATE_HOME) or through
FRAUDDEMO_API."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import wait_until
from frauddemo.procs import alive
from frauddemo.servers import free_port
from frauddemo_testkit.processes import stop, up_argv

PARTITIONED = "frauddemo: the stores are partitioned: heal the link first (frauddemo link heal)\n"


def _env(state: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("FRAUDDEMO_API", "FRAUDDEMO_DATA_DIR")}
    env.update(XDG_STATE_HOME=str(state), PYTHONUNBUFFERED="1", **extra)
    return env


def _up(env: dict, port: int, *extra: str) -> subprocess.Popen:
    # no tills: the tests make their own traffic, and the machine is shared
    return subprocess.Popen(
        up_argv(port, None, "--rate", "0", "--hacked-rate", "0", *extra),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _cli(env: dict, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "frauddemo", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def _stop(proc: subprocess.Popen, data: Path) -> None:
    """SIGTERM the supervisor, then make sure that it and every child it started are gone."""
    pids = _pids(data)
    stop(proc, 30)
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not any(alive(p) for p in pids), 15, what="every child gone")


def _pids(data: Path) -> list[int]:
    try:
        return [p["pid"] for p in json.loads((data / "stack.json").read_text())["processes"] if p["pid"]]
    except (OSError, ValueError):
        return []


def _readyz(url: str) -> int:
    try:
        return httpx.get(url + "/readyz", timeout=5).status_code
    except httpx.HTTPError:
        return 0


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One `frauddemo up` on the default data dir of a temporary XDG_STATE_HOME; records whether
    /readyz answered at the moment 'is up' was printed."""
    state = tmp_path_factory.mktemp("state")
    env, port = _env(state), free_port()
    data = state / "frauddemo"
    proc = _up(env, port)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        line = ""
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line or "is up" in line:
                break
        assert "FraudDemo is up" in line, (line, proc.poll())
        readyz_at_up = _readyz(url)
        yield {
            "env": env,
            "url": url,
            "data": data,
            "proc": proc,
            "port": port,
            "readyz_at_up": readyz_at_up,
            "up_line": line,
        }
    finally:
        _stop(proc, data)


def test_is_up_is_printed_once_the_service_answers_and_names_the_url(demo):
    assert demo["readyz_at_up"] == 200
    assert f"{demo['url']}/" in demo["up_line"]


def test_a_busy_port_is_one_line_with_what_to_do_and_starts_nothing(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _up(_env(tmp_path), port)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert err.startswith(f"frauddemo: port {port} is in use: try --port ") and "make demo PORT=" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "is up" not in out
    data = tmp_path / "frauddemo"
    assert not (data / "stack.json").exists() and not (data / "stores").exists()  # nothing started


def test_a_second_up_on_the_same_data_dir_is_refused_and_touches_nothing(demo):
    data = demo["data"]
    stack_before = (data / "stack.json").read_bytes()
    metrics_before = sorted(p.name for p in (data / "metrics").iterdir())
    assert metrics_before  # the running detector's files, which a second start used to wipe
    proc = _up(demo["env"], free_port())
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "is up" not in out
    pid = json.loads(stack_before)["supervisor_pid"]
    assert err == (
        f"frauddemo: another frauddemo is already running on the data dir {data.resolve()} (pid {pid}): "
        "stop it first (Ctrl-C in its terminal) or give another --data-dir\n"
    )
    assert (data / "stack.json").read_bytes() == stack_before
    assert set(metrics_before) <= {p.name for p in (data / "metrics").iterdir()}
    assert _readyz(demo["url"]) == 200


def test_status_and_link_find_the_demo_by_themselves(demo):
    env = demo["env"]
    st = _cli(env, "status")
    assert st.returncode == 0, st.stderr
    assert st.stdout.count("\n") == 1 and st.stdout.startswith(f"FraudDemo at {demo['url']}: ")
    assert "store a up" in st.stdout and "store b up" in st.stdout and "link a->b" in st.stdout

    doc = json.loads(_cli(env, "status", "--json").stdout)
    assert set(doc["stores"]) == {"a", "b"} and {(l["source"], l["target"]) for l in doc["links"]} == {
        ("a", "b"),
        ("b", "a"),
    }

    part = _cli(env, "link", "partition", "--json")
    assert part.returncode == 0, part.stderr
    assert json.loads(part.stdout)["action"] == "partition"
    try:
        wait_until(
            lambda: all(l["state"] == "partitioned" for l in json.loads(_cli(env, "status", "--json").stdout)["links"]),
            30,
            what="both links partitioned",
        )
        assert "partitioned" in _cli(env, "status").stdout
    finally:
        heal = _cli(env, "link", "heal")
    assert heal.returncode == 0 and heal.stdout.startswith("link healed: stores a, b"), heal.stderr
    wait_until(
        lambda: all(l["state"] == "up" for l in json.loads(_cli(env, "status", "--json").stdout)["links"]),
        30,
        what="both links up again",
    )


def test_scenario_while_partitioned_fails_at_once_with_a_plain_sentence(demo):
    env = demo["env"]
    assert _cli(env, "link", "partition").returncode == 0
    try:
        t0 = time.monotonic()
        run = _cli(env, "scenario", "fraud")
        elapsed = time.monotonic() - t0
    finally:
        assert _cli(env, "link", "heal").returncode == 0
    assert run.returncode == 2 and run.stderr == PARTITIONED and run.stdout == ""
    assert elapsed < 10, elapsed  # was 15.5 s of waiting for replication that could not come

    wait_until(
        lambda: all(l["state"] == "up" for l in json.loads(_cli(env, "status", "--json").stdout)["links"]),
        30,
        what="both links up again",
    )
    ok = _cli(env, "scenario", "fraud")
    assert ok.returncode == 0, ok.stderr
    table = ok.stdout
    assert "ALERT " in table and "True" not in table and "False" not in table and "None" not in table
    photo_row = next(line for line in table.splitlines() if line.startswith("photo "))
    assert photo_row.split()[1:] == ["taken", "none"]


def test_purchase_and_return_by_hand_in_one_line_or_json(demo):
    env = demo["env"]
    bought = _cli(env, "purchase", "--store", "a", "--customer", "c-first-run", "--item", "shirt=2")
    assert bought.returncode == 0, bought.stderr
    line = bought.stdout
    assert line.count("\n") == 1 and "2 x shirt bought at store a by customer c-first-run" in line
    receipt = line.split()[1].rstrip(":")
    doc = json.loads(_cli(env, "purchase", "--store", "a", "--customer", "c-first-run", "--json").stdout)
    assert doc["receipt"].startswith("r-") and doc["store"] == "a"

    ret = _cli(env, "return", "--store", "a", "--receipt", receipt)
    assert ret.returncode == 0, ret.stderr
    assert (
        ret.stdout.count("\n") == 1
        and ret.stdout.startswith("return t-")
        and f"receipt {receipt} at store a" in ret.stdout
    )
    again = json.loads(_cli(env, "return", "--store", "a", "--receipt", receipt, "--no-photo", "--json").stdout)
    assert again["receipt"] == receipt and again["local_decision"] == "refused"

    bad = _cli(env, "return", "--store", "zz", "--receipt", receipt)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "unknown store 'zz'" in bad.stderr


def test_frauddemo_api_points_the_commands_elsewhere(demo, tmp_path):
    elsewhere = _env(tmp_path / "empty", FRAUDDEMO_API=demo["url"])  # no stack.json there
    st = _cli(elsewhere, "status")
    assert st.returncode == 0 and st.stdout.startswith(f"FraudDemo at {demo['url']}: "), st.stderr

    nothing = _cli(_env(tmp_path / "empty"), "status")
    assert nothing.returncode == 2 and nothing.stderr.count("\n") == 1
    assert "no FraudDemo is running on" in nothing.stderr and "frauddemo up" in nothing.stderr

    bad = _cli(_env(tmp_path / "empty", FRAUDDEMO_API="localhost:1"), "status")
    assert bad.returncode == 2 and "http://HOST:PORT" in bad.stderr and "Traceback" not in bad.stderr


def test_a_stopped_demo_is_not_found_from_its_old_stack_json(tmp_path):
    env, port = _env(tmp_path), free_port()
    data = tmp_path / "frauddemo"
    proc = _up(env, port, "--duration", "1")
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        _stop(proc, data)
    assert proc.returncode == 0 and "is up" in out, err
    assert (data / "stack.json").exists()
    st = _cli(env, "status")
    assert st.returncode == 2 and "no FraudDemo is running" in st.stderr


@pytest.mark.parametrize("when", ["0.6s", "starting"])
def test_ctrl_c_early_exits_cleanly_and_never_says_up(tmp_path, when):
    env, port = _env(tmp_path), free_port()
    data = tmp_path / "frauddemo"
    proc = _up(env, port)
    try:
        if when == "starting":  # past the preflight: the stores are being started
            wait_until(lambda: (data / "stores").exists() or proc.poll() is not None, 60, what="the start")
        else:
            time.sleep(0.6)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        _stop(proc, data)
    assert proc.returncode in (0, 130), err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "is up" not in out
    pids = _pids(data)
    assert not any(alive(p) for p in pids)
    # the data dir is free again: the next run starts
    again = _up(env, port, "--duration", "1")
    out, err = again.communicate(timeout=120)
    _stop(again, data)
    assert again.returncode == 0 and "is up" in out, err


def _verbs(parser) -> dict:
    return parser._subparsers._group_actions[0].choices


def test_help_opens_for_users_and_every_option_has_help_and_its_default():
    from frauddemo import cli

    parser = cli.build_parser()
    assert parser.format_help().split("\n\n")[1].startswith("FraudDemo catches cross-store return fraud")
    verbs = _verbs(parser)
    for name in ("up", "status", "link", "scenario", "purchase", "return"):
        for action in verbs[name]._actions:
            assert action.help, (name, action.option_strings)
    up_help = " ".join(verbs["up"].format_help().split())
    assert "--port PORT the dashboard's and API's port on 127.0.0.1 (default: 8080)" in up_help
    assert "kept and reused by the next run" in up_help
    assert "(default: None)" not in up_help and "(default: False)" not in up_help


def test_a_provider_that_fails_to_load_is_one_warning_and_the_other_verbs_stay(monkeypatch, capsys):
    import importlib.metadata as md

    from frauddemo import cli

    real = md.entry_points
    broken = md.EntryPoint("broken", "frauddemo.no_such_module:add_commands", cli.COMMANDS_GROUP)

    def entry_points(**kw):
        found = list(real(**kw))
        return [*found, broken] if kw.get("group") == cli.COMMANDS_GROUP else found

    monkeypatch.setattr(md, "entry_points", entry_points)
    verbs = _verbs(cli.build_parser())
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("frauddemo: warning: the broken commands are unavailable (")
    assert {"up", "status", "link", "photo", "operator"} <= set(verbs)


def test_a_service_that_cannot_start_is_one_line_with_its_cause_not_up(tmp_path):
    """The detector exits before it ever answers (here: a bad setting only it reads): `up` says why and
    where its log is, instead of 'is up' beside a crash loop whose cause only the log held."""
    env, port = _env(tmp_path, FRAUDDEMO_API_POST_RATE="fast"), free_port()
    data = tmp_path / "frauddemo"
    proc = _up(env, port)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        _stop(proc, data)
    assert proc.returncode == 2 and "is up" not in out
    (line,) = [ln for ln in err.splitlines() if ln.startswith("frauddemo: ")]
    assert line.startswith("frauddemo: the detection service exited with code 2 before it answered: ")
    assert "FRAUDDEMO_API_POST_RATE must be a number" in line and line.endswith(
        f"its log: {data / 'logs' / 'detector.log'}"
    )
    assert "Traceback" not in err


def test_make_demo_takes_a_port_and_installs_the_runtime_only(tmp_path):
    """`make demo PORT=N` passes the port on; a fresh venv gets `.` (not the test extras) with pip's
    output in a log, after one line saying that the first run installs."""
    root = Path(__file__).resolve().parent.parent
    # as a user runs it: not as a sub-make of `make test` (which would print "Entering directory")
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    plan = subprocess.run(
        ["make", "-n", "--no-print-directory", "demo", "PORT=8081", f"VENV={tmp_path / 'venv'}"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert plan.returncode == 0, plan.stderr
    lines = plan.stdout.splitlines()
    assert lines[0].startswith('echo "make demo: installing') and "about a minute" in lines[0]
    assert "pip install --disable-pip-version-check -e . >>" in plan.stdout and "[test]" not in plan.stdout
    assert lines[-1].endswith("bin/frauddemo up --port 8081")
