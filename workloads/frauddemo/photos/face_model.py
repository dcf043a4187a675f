"""The face model: a learned linear projection of the HOG descriptor (Fisher's LDA), shipped with the
package. Faces are compared by cosine similarity of their projected, normalised descriptors.

`hog` names no model: plain HOG cosine, the verifier before the model (selectable with
FRAUDDEMO_PHOTO_MODEL=hog; its thresholds differ, see docs/detection-and-api.md). The model was trained
on the synthetic camera's faces (`python -m frauddemo.lab.train_face_model`); a real webcam needs its
own training and thresholds.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np

DEFAULT = "hog-lda-v2"
PLAIN = "hog"
MODELS = (DEFAULT, PLAIN)
_DIR = Path(__file__).parent / "models"


def path(name: str) -> Path:
    return _DIR / f"{name}.npz"


@dataclasses.dataclass(frozen=True, eq=False)
class FaceModel:
    name: str
    mean: np.ndarray  # float32, the HOG descriptor's length
    projection: np.ndarray  # float32, (descriptor length, dimensions)
    trained_on: str

    def project(self, vector: np.ndarray) -> np.ndarray:
        """A HOG vector (or rows of them) in the model's space, L2-normalised."""
        z = (vector - self.mean) @ self.projection
        return z / (np.linalg.norm(z, axis=-1, keepdims=True) + 1e-12)

    def save(self, where: Path) -> None:
        where.parent.mkdir(parents=True, exist_ok=True)
        with open(where, "wb") as f:  # np.savez_compressed on a path would add ".npz" to other names
            np.savez_compressed(
                f,
                mean=self.mean.astype(np.float32),
                projection=self.projection.astype(np.float16),
                name=np.array(self.name),
                trained_on=np.array(self.trained_on),
            )


@functools.cache
def load(name: str = DEFAULT) -> FaceModel | None:
    """The shipped model called `name`; None for `hog` (no projection)."""
    if name == PLAIN:
        return None
    if name not in MODELS:
        raise ValueError(f"unknown face model {name!r}: choose from {', '.join(MODELS)}")
    with np.load(path(name), allow_pickle=False) as z:
        return FaceModel(str(z["name"]), z["mean"], z["projection"].astype(np.float32), str(z["trained_on"]))
