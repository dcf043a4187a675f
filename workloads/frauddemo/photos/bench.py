"""`frauddemo bench photo --json`: the photo pipeline's figures, measured on the synthetic camera.

Identities are drawn from seeds far from the ones the pipeline was tuned on (0-99), so the figures
are for customers it has never seen. Capture 0 of each identity is the purchase photo (its embedding
is stored once); the other captures are return photos. Genuine pairs: a return photo against its own
purchase photo. Impostor pairs: a return photo against other customers' purchase photos. Verification
time is decode + detect + embed + compare of a 640x480 JPEG, on one OpenCV thread.

The in-run baseline is what the demo this project replaces did: any decodable image "verified", and
replays caught only when the MD5 matched. A second baseline is this pipeline without its alignment
search, to show what the search buys.
"""
from __future__ import annotations

import hashlib
import time

import cv2
import numpy as np

from . import replay
from . import samples
from . import verify as ver
from .camera import render
from .decode import PhotoRejected


def _rates(gen: np.ndarray, imp: np.ndarray) -> dict:
    """EER (where FAR = FRR), its threshold, and FAR at the threshold giving FRR = 5%."""
    ths = np.unique(np.concatenate([gen, imp]))
    far = 1.0 - np.searchsorted(np.sort(imp), ths, side="left") / len(imp)  # P(imp >= t)
    frr = np.searchsorted(np.sort(gen), ths, side="left") / len(gen)  # P(gen < t)
    k = int(np.argmin(np.abs(far - frr)))
    t5 = float(np.quantile(gen, 0.05))
    return {"eer": float((far[k] + frr[k]) / 2), "eer_threshold": float(ths[k]),
            "far_at_frr_5pct": float(np.mean(imp >= t5)), "threshold_at_frr_5pct": t5}


def _pct(xs, q) -> float:
    return round(float(np.percentile(xs, q)), 2) if len(xs) else float("nan")


def run(identities: int = 100, captures: int = 4, impostors_per_probe: int = 30,
        seed_offset: int = 10_000, cfg: ver.VerifyConfig = ver.VerifyConfig()) -> dict:
    started = time.perf_counter()
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        return _run(identities, captures, impostors_per_probe, seed_offset, cfg, started)
    finally:
        cv2.setNumThreads(threads)


def _run(n_ids, n_caps, n_imp, offset, cfg, started) -> dict:
    rng = np.random.default_rng(offset)
    ids = list(range(offset, offset + n_ids))

    # Camera. A customer's first frame also builds their face geometry (cached afterwards).
    caps, first_ms, next_ms = {}, [], []
    for i in ids:
        for c in range(n_caps):
            t0 = time.perf_counter()
            caps[(i, c)] = render(i, c)
            (next_ms if c else first_ms).append((time.perf_counter() - t0) * 1e3)

    # Purchase photos: embedded once.
    analyses: dict = {}
    failures: dict = {}
    for i in ids:
        try:
            analyses[(i, 0)] = ver.analyze(caps[(i, 0)].jpeg, cfg)
        except PhotoRejected as e:
            failures[(i, 0)] = e.kind
    purchases = {i: analyses[(i, 0)].embedding for i in ids if (i, 0) in analyses}

    # Return photos: verified against their own purchase photo, timed end to end.
    genuine, genuine_plain, verify_ms, verify_cpu_ms, verdicts = [], [], [], [], {}
    for i in ids:
        for c in range(1, n_caps):
            w0, c0 = time.perf_counter(), time.thread_time()
            try:
                a = ver.analyze(caps[(i, c)].jpeg, cfg)
            except PhotoRejected as e:
                failures[(i, c)] = e.kind
                continue
            analyses[(i, c)] = a
            if i not in purchases:
                continue
            v = ver.compare(a, purchases[i], (), cfg)
            verify_ms.append((time.perf_counter() - w0) * 1e3)
            verify_cpu_ms.append((time.thread_time() - c0) * 1e3)
            genuine.append(v.similarity)
            genuine_plain.append(float(a.vector @ purchases[i].vector))
            verdicts[v.verdict] = verdicts.get(v.verdict, 0) + 1

    # Detection: a usable face whose box holds both true eye centres.
    def detected(key) -> bool:
        a = analyses.get(key)
        if a is None:
            return False
        x, y, w, h = a.face
        return all(x <= ex <= x + w and y <= ey <= y + h for ex, ey in caps[key].eyes)

    detection = [detected(k) for k in caps]

    # Impostors: each return photo against purchase photos of other customers.
    impostor, impostor_plain, imp_verdicts = [], [], {}
    for (i, c), a in analyses.items():
        if c == 0:
            continue
        others = [j for j in purchases if j != i]
        for j in rng.choice(others, min(n_imp, len(others)), replace=False):
            e = purchases[int(j)]
            s = ver.similarity(a, e.vector, cfg)
            impostor.append(s)
            impostor_plain.append(float(a.vector @ e.vector))
            v = (ver.MATCH if s >= cfg.match_threshold
                 else ver.MISMATCH if s < cfg.mismatch_threshold else ver.REVIEW)
            imp_verdicts[v] = imp_verdicts.get(v, 0) + 1
    gen, imp = np.array(genuine), np.array(impostor)
    rates = _rates(gen, imp)
    plain = _rates(np.array(genuine_plain), np.array(impostor_plain))

    # Replays of each purchase photo, checked the way a return photo is.
    flagged, by_kind, md5_caught, copies = 0, {}, 0, 0
    for i in ids:
        if i not in purchases:
            continue
        original = caps[(i, 0)].jpeg
        for kind, data in samples.replay_copies(original, rng).items():
            copies += 1
            v = ver.verify(data, purchases[i], (), cfg)
            hit = v.replay is not None
            flagged += hit
            by_kind.setdefault(kind, [0, 0])
            by_kind[kind][0] += hit
            by_kind[kind][1] += 1
            md5_caught += hashlib.md5(data).digest() == hashlib.md5(original).digest()
    # Genuine new captures flagged as replays: each capture against every earlier one of the person.
    genuine_flagged, genuine_checked, scores = 0, 0, []
    for i in ids:
        earlier = []
        for c in range(n_caps):
            a = analyses.get((i, c))
            if a is None:
                continue
            if earlier:
                rep, score = replay.check(a.sha256, a.fingerprint, earlier, cfg.near_copy_score)
                genuine_flagged += rep is not None
                genuine_checked += 1
                scores.append(score if score is not None else -1.0)
            earlier.append((a.sha256, a.fingerprint))

    # Bad inputs: each must be rejected with its own kind.
    bad = samples.bad_inputs(cfg.limits)
    rejected, bad_ms, bad_detail = 0, [], {}
    for b in bad:
        t = time.perf_counter()
        v = ver.verify(b.data, None, (), cfg)
        bad_ms.append((time.perf_counter() - t) * 1e3)
        ok = v.rejected == b.kind
        rejected += ok
        bad_detail[b.name] = {"expected": b.kind, "got": v.rejected, "ms": round(bad_ms[-1], 3)}
    pre_decode_ms = [bad_ms[k] for k, b in enumerate(bad) if b.kind in _PRE_DECODE]

    usable_returns = sum(1 for (i, c) in analyses if c > 0)
    return {
        "identities": n_ids,
        "captures_per_identity": n_caps,
        "face_detection_rate": round(float(np.mean(detection)), 4),
        "failure_to_acquire": round(len(failures) / len(caps), 4),
        "failures": _count(failures.values()),
        "genuine_pairs": len(gen),
        "impostor_pairs": len(imp),
        "eer": round(rates["eer"], 4),
        "eer_threshold": round(rates["eer_threshold"], 4),
        "far_at_frr_5pct": round(rates["far_at_frr_5pct"], 4),
        "threshold_at_frr_5pct": round(rates["threshold_at_frr_5pct"], 4),
        "similarity": {"genuine_mean": round(float(gen.mean()), 4),
                       "impostor_mean": round(float(imp.mean()), 4)},
        "verdicts": {"genuine": verdicts, "impostor": imp_verdicts,
                     "thresholds": {"match": cfg.match_threshold, "mismatch": cfg.mismatch_threshold}},
        "replay_flag_rate": round(flagged / copies, 4) if copies else None,
        "replay_flag_by_kind": {k: round(h / n, 4) for k, (h, n) in by_kind.items()},
        "replay_false_rate": round(genuine_flagged / genuine_checked, 4) if genuine_checked else None,
        "replay_genuine_max_score": round(max(scores), 4) if scores else None,
        "replay_near_copy_score": cfg.near_copy_score,
        "verify_ms": {"p50": _pct(verify_ms, 50), "p95": _pct(verify_ms, 95), "n": len(verify_ms)},
        "verify_cpu_ms": {"p50": _pct(verify_cpu_ms, 50), "p95": _pct(verify_cpu_ms, 95)},
        "camera_ms_per_frame": round(float(np.mean(next_ms or first_ms)), 2),
        "camera_ms_first_frame_of_a_customer": round(float(np.mean(first_ms)), 2),
        "bad_inputs_rejected": rejected,
        "bad_inputs_total": len(bad),
        "bad_input_pre_decode_ms_max": round(max(pre_decode_ms), 3),
        "bad_inputs": bad_detail,
        "baseline": {
            "what": "the replaced demo: any decodable image passes, replays caught by MD5 only",
            "far": 1.0 if usable_returns else None,
            "replay_flag_rate": round(md5_caught / copies, 4) if copies else None,
            "no_alignment_search": {"eer": round(plain["eer"], 4),
                                    "far_at_frr_5pct": round(plain["far_at_frr_5pct"], 4)},
        },
        "duration_s": round(time.perf_counter() - started, 1),
    }


_PRE_DECODE = {"empty", "unknown_format", "truncated", "too_small", "too_many_pixels", "too_large",
               "bad_header", "unsupported"}


def _count(values) -> dict:
    out: dict = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out
