"""The face model: the shipped projection, the LDA fit that makes it, and how it is chosen."""

import subprocess
import sys

import numpy as np
import pytest

from frauddemo.lab.train_face_model import fit
from frauddemo.photos import face_model
from frauddemo.photos import verify as ver


def test_the_shipped_model_loads_and_was_trained_on_identities_the_benches_never_use():
    m = face_model.load()
    assert m.name == face_model.DEFAULT
    hog_len = ver.HOG_BLOCKS[0] * ver.HOG_BLOCKS[1] * 36
    assert m.mean.shape == (hog_len,) and m.projection.shape[0] == hog_len and 50 <= m.projection.shape[1] <= 400
    assert np.isfinite(m.projection).all()
    # the benches calibrate on 20000+, report on 50000+ and screen lookalikes from 70000+
    assert "identities 10000-12399" in m.trained_on, m.trained_on
    z = m.project(np.ones(hog_len, np.float32))
    assert z.shape == (m.projection.shape[1],) and abs(float(np.linalg.norm(z)) - 1) < 1e-5


def test_plain_hog_is_no_model_and_an_unknown_model_is_refused():
    assert face_model.load("hog") is None
    with pytest.raises(ValueError, match="unknown face model 'nope'"):
        face_model.load("nope")


def test_the_model_is_chosen_by_environment_with_its_own_thresholds():
    cfg = ver.VerifyConfig.from_env({"FRAUDDEMO_PHOTO_MODEL": "hog"})
    assert (cfg.model, cfg.match_threshold, cfg.mismatch_threshold) == ("hog", *ver.THRESHOLDS["hog"])
    cfg = ver.VerifyConfig.from_env({"FRAUDDEMO_PHOTO_MODEL": "hog", "FRAUDDEMO_PHOTO_MATCH_THRESHOLD": "0.97"})
    assert (cfg.match_threshold, cfg.mismatch_threshold) == (0.97, ver.THRESHOLDS["hog"][1])
    assert ver.VerifyConfig.from_env({}).model == face_model.DEFAULT
    with pytest.raises(ValueError, match="FRAUDDEMO_PHOTO_MODEL='dlib': choose from"):
        ver.VerifyConfig.from_env({"FRAUDDEMO_PHOTO_MODEL": "dlib"})


def test_fit_finds_the_directions_people_differ_in_despite_louder_nuisance():
    """Synthetic descriptors: identity lives in a few quiet directions, capture noise in many loud ones.
    Raw cosine barely tells people apart; the fitted projection does."""
    rng = np.random.default_rng(7)
    dim, people, shots = 120, 80, 4
    identity_dirs = rng.normal(size=(5, dim))
    nuisance_dirs = rng.normal(size=(40, dim))

    def sample(centres, n):
        ids = np.repeat(np.arange(len(centres)), n)
        x = centres[ids] @ identity_dirs + rng.normal(scale=3.0, size=(len(ids), 40)) @ nuisance_dirs
        return x + 10.0, ids  # an offset all descriptors share, as HOG's positive histograms do

    train_x, train_y = sample(rng.normal(size=(people, 5)), shots)
    mean, proj = fit(train_x, train_y, pca_dims=60, dims=10)
    test_x, test_y = sample(rng.normal(size=(40, 5)), 2)
    model = face_model.FaceModel("test", mean.astype(np.float32), proj, "synthetic")

    def auc(vectors):
        v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        s = v @ v.T
        same = test_y[:, None] == test_y[None, :]
        off = ~np.eye(len(v), dtype=bool)
        gen, imp = s[same & off], s[~same]
        return float(np.mean(gen[:, None] > imp[None, :]))

    raw, fitted = auc(test_x - test_x.mean(0)), auc(model.project(test_x.astype(np.float32)))
    assert fitted > 0.95 and fitted > raw + 0.2, (raw, fitted)


def test_a_saved_model_loads_back_equal(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    m = face_model.FaceModel(
        face_model.DEFAULT, rng.normal(size=8).astype(np.float32), rng.normal(size=(8, 3)).astype(np.float32), "t"
    )
    m.save(tmp_path / f"{face_model.DEFAULT}.npz")
    monkeypatch.setattr(face_model, "_DIR", tmp_path)
    face_model.load.cache_clear()
    try:
        back = face_model.load()
        assert back.trained_on == "t" and np.allclose(back.mean, m.mean)
        assert np.allclose(back.projection, m.projection, atol=1e-2)  # stored as float16
    finally:
        face_model.load.cache_clear()


@pytest.mark.parametrize("args", [["--identities", "3"], ["--captures", "1"], ["--workers", "0"]])
def test_the_trainer_refuses_bad_sizes(args, tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "frauddemo.lab.train_face_model", "--out", str(tmp_path / "m.npz"), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "need --identities >= 10" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "m.npz").exists()
