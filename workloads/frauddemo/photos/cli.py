"""`frauddemo photo capture|verify|compare`: try the camera and the verifier by hand.

Wiring (in frauddemo/cli.py): `photos.cli.add_commands(sub)`; each verb sets `fn(args) -> int`, the
parent CLI's convention.
Sources, for every verb that takes one photo: --photo PATH, --camera N (a webcam, opened only while
capturing) or --synthetic ID (the procedural customer ID; --seed picks the capture).
Output is one readable line on stdout, or one JSON object with --json. Exit status: 0 usable / match,
1 rejected / mismatch / review, 2 camera or file errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from . import verify as ver
from .camera import CameraError, FileCamera, SyntheticCamera, WebcamCamera
from .decode import PhotoRejected


def add_commands(subparsers) -> argparse.ArgumentParser:
    photo = subparsers.add_parser("photo", help="capture, check and compare customer photos")
    verbs = photo.add_subparsers(dest="photo_verb", required=True)

    cap = verbs.add_parser("capture", help="take one photo and save it as a JPEG")
    _source_args(cap, required=False)
    cap.add_argument("--out", type=Path, help="where to write it (default photo-<sha8>.jpg)")
    _json_arg(cap)
    cap.set_defaults(fn=cmd_capture)

    v = verbs.add_parser("verify", help="check one photo: decode, face, quality, embedding")
    _source_args(v, required=True)
    v.add_argument(
        "--against", type=Path, metavar="PURCHASE", help="also compare it with this purchase photo and give the verdict"
    )
    _threshold_args(v)
    _json_arg(v)
    v.set_defaults(fn=cmd_verify)

    c = verbs.add_parser("compare", help="verdict on a return photo against a purchase photo")
    c.add_argument("purchase", type=Path)
    c.add_argument("returned", type=Path, metavar="return")
    c.add_argument(
        "--earlier", type=Path, nargs="*", default=[], help="earlier photos of the same receipt, for replay detection"
    )
    _threshold_args(c)
    _json_arg(c)
    c.set_defaults(fn=cmd_compare)
    return photo


def _source_args(p, required: bool) -> None:
    g = p.add_mutually_exclusive_group(required=required)
    g.add_argument("--photo", type=Path, help="an image file (JPEG, PNG or WebP)")
    g.add_argument("--camera", type=int, metavar="N", help="webcam index for cv2.VideoCapture(N)")
    g.add_argument("--synthetic", type=int, metavar="ID", help="a procedural customer")
    p.add_argument("--seed", type=int, default=0, help="capture seed for --synthetic")


def _json_arg(p) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a line (for machines)")


def _threshold_args(p) -> None:
    d = ver.VerifyConfig()
    p.add_argument("--match-threshold", type=float, default=None, help=f"default {d.match_threshold}")
    p.add_argument("--mismatch-threshold", type=float, default=None, help=f"default {d.mismatch_threshold}")
    p.add_argument("--min-face-px", type=int, default=None, help=f"default {d.min_face_px}")
    p.add_argument("--near-copy-score", type=float, default=None, help=f"default {d.near_copy_score}")


def _config(args) -> ver.VerifyConfig:
    cfg = ver.VerifyConfig.from_env()
    changes = {
        k: getattr(args, k)
        for k in ("match_threshold", "mismatch_threshold", "min_face_px", "near_copy_score")
        if getattr(args, k, None) is not None
    }
    return dataclasses.replace(cfg, **changes)


def _grab(args) -> bytes:
    if args.photo is not None:
        return FileCamera(args.photo).capture()
    if args.camera is not None:
        return WebcamCamera(args.camera).capture()
    return SyntheticCamera(args.synthetic if args.synthetic is not None else 0, seed=args.seed).capture()


def _read(path: Path) -> bytes:
    return FileCamera(path).capture()


def _print(obj: dict, args) -> None:
    if getattr(args, "json", False):
        json.dump(obj, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        print(_line(obj))


def _line(obj: dict) -> str:
    """One line for people: what the photo is, then the verdict against a purchase photo if any."""
    parts = []
    if obj.get("file"):
        parts.append(f"{obj['file']}:")
    if "usable" in obj:
        if obj["usable"]:
            x, y, w, h = obj["face"]
            q = obj["quality"]
            parts.append(
                f"usable, a face of {w}x{h} px at ({x}, {y}), brightness {q['brightness']}, sharpness "
                f"{q['sharpness']}, eyes {'found' if q['eyes_found'] else 'not found'}"
            )
        else:
            parts.append(f"not usable ({obj['rejected']}: {obj['detail']})")
    v = obj.get("verdict") if isinstance(obj.get("verdict"), dict) else (obj if "verdict" in obj else None)
    if v is not None:
        words = {
            ver.MATCH: "the same person",
            ver.MISMATCH: "not the same person",
            ver.REVIEW: "unsure: a person decides",
        }
        text = words.get(v["verdict"], v["verdict"])
        if v.get("replay"):
            text = f"{'an' if v['replay'][:1] in 'aeiou' else 'a'} {v['replay']} copy of an earlier photo (a replay)"
        elif v.get("similarity") is not None:
            text += f", similarity {v['similarity']:.3f}"
        parts.append(("verdict: " if "usable" in obj else "") + text)
        if v.get("reasons"):
            parts.append("(" + "; ".join(v["reasons"]) + ")")
    return " ".join(parts)


def _describe(data: bytes, cfg: ver.VerifyConfig) -> dict:
    try:
        a = ver.analyze(data, cfg)
    except PhotoRejected as e:
        return {"usable": False, "rejected": e.kind, "detail": e.detail, "bytes": len(data)}
    return {
        "usable": True,
        "sha256": a.sha256,
        "bytes": len(data),
        "face": list(a.face),
        "eyes": [list(map(lambda x: round(x, 1), e)) for e in a.eyes],
        "quality": a.quality,
        "ms": {k: round(v, 2) for k, v in a.timings_ms.items()},
    }


def cmd_capture(args) -> int:
    try:
        data = _grab(args)
    except CameraError as e:
        print(f"frauddemo photo capture: {e}", file=sys.stderr)
        return 2
    info = _describe(data, ver.VerifyConfig.from_env())
    out = args.out or Path(f"photo-{ver.replay.sha256(data)[:8]}.jpg")
    out.write_bytes(data)
    info["file"] = str(out)
    _print(info, args)
    return 0 if info["usable"] else 1


def cmd_verify(args) -> int:
    cfg = _config(args)
    try:
        data = _grab(args)
        purchase = _read(args.against) if args.against else None
    except CameraError as e:
        print(f"frauddemo photo verify: {e}", file=sys.stderr)
        return 2
    info = _describe(data, cfg)
    if purchase is not None:
        info["verdict"] = _verdict(purchase, data, [], cfg)
        _print(info, args)
        return 0 if info["verdict"]["verdict"] == ver.MATCH else 1
    _print(info, args)
    return 0 if info["usable"] else 1


def cmd_compare(args) -> int:
    cfg = _config(args)
    try:
        purchase, returned = _read(args.purchase), _read(args.returned)
        earlier = [_read(p) for p in args.earlier]
    except CameraError as e:
        print(f"frauddemo photo compare: {e}", file=sys.stderr)
        return 2
    v = _verdict(purchase, returned, earlier, cfg)
    _print(v, args)
    return 0 if v["verdict"] == ver.MATCH else 1


def _verdict(purchase: bytes, returned: bytes, earlier: list[bytes], cfg) -> dict:
    try:
        emb = ver.embed(purchase, cfg)
    except PhotoRejected as e:
        return {"verdict": ver.REVIEW, "reasons": [f"purchase photo rejected: {e}"], "rejected": None}
    earlier_embs = []
    for data in earlier:
        try:
            earlier_embs.append(ver.embed(data, cfg))
        except PhotoRejected:
            pass
    return ver.verify(returned, emb, earlier_embs, cfg).to_dict()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="frauddemo")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
