"""Train the face model the verifier ships (`frauddemo/photos/models/`): a linear discriminant projection
of the HOG descriptor, learned from the synthetic camera's training identities.

HOG on the aligned, lighting-normalised face is dominated by what changes between captures (light,
expression, pose). A projection learned from many people with several captures each keeps the directions
along which people differ more than captures of one person do (PCA, then whitening of the within-person
scatter, then the leading directions of the between-person scatter: Fisher's LDA). Cosine similarity in
that space separates people far better than in HOG space; see docs/benchmarks.md for the figures.

The training identities (10000-12399 by default, six captures each) are disjoint from the ones the benches calibrate on
(20000+), report on (50000+) and screen lookalikes from (70000+).

    python -m frauddemo.lab.train_face_model [--out PATH] [--identities 2400] [--captures 6] [--workers 2]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import time
from pathlib import Path

import numpy as np

from ..photos import face_model
from ..photos import verify as ver
from ..photos.camera import render
from ..photos.decode import PhotoRejected

FIRST_IDENTITY = 10_000


def _vectors(identity_and_captures: tuple[int, int]) -> list[np.ndarray]:
    """HOG vectors of one identity's usable captures (seeds 0..captures-1)."""
    identity, captures = identity_and_captures
    out = []
    for seed in range(captures):
        try:
            out.append(ver.analyze(render(identity, seed).jpeg).vector)
        except PhotoRejected:
            continue
    return out


def fit(vectors: np.ndarray, labels: np.ndarray, pca_dims: int, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, projection) of Fisher's LDA after PCA: project with `(v - mean) @ projection`."""
    x = vectors.astype(np.float64)
    mean = x.mean(0)
    xc = x - mean
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    pca = vt[:pca_dims].T
    y = xc @ pca
    people = np.unique(labels)
    centres = np.array([y[labels == p].mean(0) for p in people])
    within = sum((y[labels == p] - centres[k]).T @ (y[labels == p] - centres[k]) for k, p in enumerate(people))
    within = within / len(y) + 1e-6 * np.trace(within / len(y)) / pca_dims * np.eye(pca_dims)
    w_vals, w_vecs = np.linalg.eigh(within)
    whiten = w_vecs @ np.diag(w_vals**-0.5)
    b_vals, b_vecs = np.linalg.eigh(whiten.T @ np.cov(centres.T) @ whiten)
    keep = np.argsort(-b_vals)[:dims]
    return mean.astype(np.float32), (pca @ whiten @ b_vecs[:, keep]).astype(np.float32)


def train(
    identities: int = 2400, captures: int = 6, pca_dims: int = 300, dims: int = 150, workers: int = 2
) -> face_model.FaceModel:
    """Render and describe `captures` photos of each training identity, then fit the projection."""
    jobs = [(i, captures) for i in range(FIRST_IDENTITY, FIRST_IDENTITY + identities)]
    with cf.ProcessPoolExecutor(workers) as pool:
        per_person = list(pool.map(_vectors, jobs, chunksize=8))
    vectors, labels = [], []
    for (identity, _), vs in zip(jobs, per_person, strict=True):
        if len(vs) >= 2:  # a person seen once says nothing about how captures of one person differ
            vectors += vs
            labels += [identity] * len(vs)
    mean, projection = fit(np.array(vectors), np.array(labels), min(pca_dims, len(vectors) - 1), dims)
    trained_on = f"synthetic identities {FIRST_IDENTITY}-{FIRST_IDENTITY + identities - 1}, {len(vectors)} captures"
    return face_model.FaceModel(face_model.DEFAULT, mean, projection, trained_on)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m frauddemo.lab.train_face_model", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=face_model.path(face_model.DEFAULT))
    p.add_argument("--identities", type=int, default=2400)
    p.add_argument("--captures", type=int, default=6)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args(argv)
    if a.identities < 10 or a.captures < 2 or a.workers < 1:
        p.error("need --identities >= 10, --captures >= 2 and --workers >= 1")
    t0 = time.monotonic()
    model = train(a.identities, a.captures, workers=a.workers)
    model.save(a.out)
    print(f"{a.out}: {model.trained_on}, {model.projection.shape[1]} dimensions, {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
