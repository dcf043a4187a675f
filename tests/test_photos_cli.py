"""`frauddemo photo capture|verify|compare` and `frauddemo bench photo` (a small run)."""

import argparse
import json

import pytest

from frauddemo.lab import photo_bench as bench
from frauddemo.photos import cli
from frauddemo.photos.camera import render


def run(capsys, *argv):
    code = cli.main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_capture_a_synthetic_customer(tmp_path, capsys):
    out = tmp_path / "p.jpg"
    code, info = run(capsys, "photo", "capture", "--synthetic", "5", "--seed", "2", "--out", str(out))
    assert code == 0 and info["usable"] and info["file"] == str(out)
    assert out.read_bytes()[:3] == b"\xff\xd8\xff" and info["sha256"]


def test_verify_a_file_and_a_bad_file(tmp_path, capsys):
    good, bad = tmp_path / "g.jpg", tmp_path / "b.jpg"
    good.write_bytes(render(6, 0).jpeg)
    bad.write_bytes(b"GIF89a not supported")
    code, info = run(capsys, "photo", "verify", "--photo", str(good))
    assert code == 0 and info["usable"] and info["quality"]["face_px"] >= 90
    code, info = run(capsys, "photo", "verify", "--photo", str(bad))
    assert code == 1 and info == {
        "usable": False,
        "rejected": "unknown_format",
        "detail": "not a JPEG, PNG or WebP image",
        "bytes": 20,
    }


def test_compare_same_and_different_customers(tmp_path, capsys):
    paths = {}
    for name, (i, c) in {"p": (30, 0), "same": (30, 1), "other": (31, 1)}.items():
        paths[name] = tmp_path / f"{name}.jpg"
        paths[name].write_bytes(render(i, c).jpeg)
    _, same = run(capsys, "photo", "compare", str(paths["p"]), str(paths["same"]))
    _, other = run(capsys, "photo", "compare", str(paths["p"]), str(paths["other"]))
    assert same["similarity"] > other["similarity"]
    code, replay = run(capsys, "photo", "compare", str(paths["p"]), str(paths["p"]))
    assert code == 1 and replay["replay"] == "exact" and replay["verdict"] == "mismatch"
    # thresholds from the command line
    code, loose = run(
        capsys,
        "photo",
        "compare",
        str(paths["p"]),
        str(paths["other"]),
        "--match-threshold",
        "0.1",
        "--mismatch-threshold",
        "0.05",
    )
    assert code == 0 and loose["verdict"] == "match"


def test_verify_against_a_purchase_photo(tmp_path, capsys):
    p = tmp_path / "p.jpg"
    p.write_bytes(render(32, 0).jpeg)
    code, info = run(capsys, "photo", "verify", "--synthetic", "32", "--seed", "7", "--against", str(p))
    assert info["usable"] and info["verdict"]["similarity"] is not None


def test_missing_webcam_is_a_clean_error(capsys):
    assert cli.main(["photo", "capture", "--camera", "97"]) == 2
    assert "camera 97" in capsys.readouterr().err


def test_missing_file_is_a_clean_error(tmp_path, capsys):
    assert cli.main(["photo", "compare", str(tmp_path / "x.jpg"), str(tmp_path / "y.jpg")]) == 2


def test_add_commands_wires_into_a_parent_parser():
    parser = argparse.ArgumentParser(prog="frauddemo")
    cli.add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["photo", "compare", "a.jpg", "b.jpg", "--near-copy-score", "0.9"])
    assert args.fn is cli.cmd_compare and args.near_copy_score == 0.9
    with pytest.raises(SystemExit):
        parser.parse_args(["photo", "verify"])  # a source is required


def test_bench_reports_every_figure_the_issue_names():
    r = bench.run(identities=4, captures=3, impostors_per_probe=3)
    for key in (
        "identities",
        "captures_per_identity",
        "face_detection_rate",
        "eer",
        "far_at_frr_5pct",
        "replay_flag_rate",
        "replay_false_rate",
        "verify_ms",
        "camera_ms_per_frame",
        "bad_inputs_rejected",
        "bad_inputs_total",
        "baseline",
    ):
        assert key in r, key
    assert set(r["verify_ms"]) >= {"p50", "p95"}
    assert r["identities"] == 4 and r["genuine_pairs"] <= 8
    assert r["bad_inputs_total"] >= 8 and r["bad_inputs_rejected"] == r["bad_inputs_total"]
    assert r["replay_flag_rate"] > r["baseline"]["replay_flag_rate"]
    json.dumps(r)  # serialisable as it is


def test_people_get_one_line_per_photo_machines_json(tmp_path, capsys):
    """Without --json each verb prints one readable line (issue 19: the photo verbs printed raw JSON)."""
    p, same, other = tmp_path / "p.jpg", tmp_path / "same.jpg", tmp_path / "other.jpg"
    assert cli.main(["photo", "capture", "--synthetic", "11", "--seed", "1", "--out", str(p)]) == 0
    line = capsys.readouterr().out
    assert line.count("\n") == 1 and line.startswith(f"{p}: usable, a face of ") and "{" not in line
    cli.main(["photo", "capture", "--synthetic", "11", "--seed", "2", "--out", str(same)])
    cli.main(["photo", "capture", "--synthetic", "12", "--seed", "2", "--out", str(other)])
    capsys.readouterr()
    cli.main(["photo", "compare", str(p), str(p)])
    replay = capsys.readouterr().out
    assert "copy of an earlier photo (a replay)" in replay and replay.count("\n") == 1
    cli.main(["photo", "compare", str(p), str(other)])
    assert "similarity" in capsys.readouterr().out
    cli.main(["photo", "verify", "--photo", str(same), "--against", str(p)])
    out = capsys.readouterr().out
    assert out.startswith("usable, a face of ") and "verdict: " in out and out.count("\n") == 1
