"""Customers' faces for the benches: a capture of a customer by the synthetic camera, and a purchase
photo with its embedding. Top-level functions taking one argument, so a process pool can map them."""

from __future__ import annotations

from ..photos import verify as ver
from ..photos.camera import SyntheticCamera
from ..photos.decode import PhotoRejected
from ..till import face_of


def capture_of(customer_and_seed: tuple[str, int]) -> bytes:
    """A capture (JPEG) of `customer` by the synthetic camera, the seed choosing pose and light."""
    customer, seed = customer_and_seed
    return SyntheticCamera(face_of(customer), seed=seed).capture()


def enrol(customer: str) -> tuple[bytes, bytes]:
    """A customer's purchase photo and its embedding; a capture without a usable face is taken again, as
    a till would."""
    for seed in range(10):
        jpeg = capture_of((customer, seed))
        try:
            return jpeg, ver.embed(jpeg).to_bytes()
        except PhotoRejected:
            continue
    raise RuntimeError(f"no usable capture of {customer}")


def usable_captures(face: int, n: int = 3) -> list[bytes]:
    """`n` captures of one face (an identity of the synthetic camera) with a usable face in each: a
    purchase photo and return photos."""
    out = []
    for seed in range(20 * n):
        jpeg = SyntheticCamera(face, seed=seed).capture()
        try:
            ver.embed(jpeg)
        except PhotoRejected:
            continue
        out.append(jpeg)
        if len(out) == n:
            return out
    raise RuntimeError(f"no {n} usable captures of face {face}")
