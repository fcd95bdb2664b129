"""Shared helpers of the HTTP adapter tests: a small, batch-invariant local model."""

from __future__ import annotations

import numpy as np

from blackbox_dft.adapters.base import CallableModel

SHAPE = (16, 16, 3)


def linear_softmax(seed: int = 0, classes: int = 2) -> CallableModel:
    """A fixed random linear softmax on 16x16x3 uint8 images.

    Each image's scores are computed on its own row (elementwise product and a sum
    over the pixel axes, no BLAS matmul) so that they do not depend on how the
    images are split into requests: the same image gives bit-identical scores
    locally and through any server.
    """
    w = np.random.default_rng(seed).normal(size=(classes, *SHAPE)) / 40.0

    def predict(x: np.ndarray) -> np.ndarray:
        xf = x.astype(np.float64) / 255.0 - 0.5
        z = np.stack([(xf * w[c]).sum(axis=(1, 2, 3)) for c in range(classes)], axis=1)
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    return CallableModel(predict, name="linear_softmax")


def dataset(n: int = 64, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 ``(n, 16, 16, 3)`` and binary labels that the linear model half gets."""
    rng = np.random.default_rng(seed)
    x = rng.integers(40, 216, size=(n, *SHAPE), dtype=np.uint8)
    y = (np.arange(n) % 2).astype(np.int64)
    return x, y


def mean_colour() -> CallableModel:
    """Any-size model: softmax of the three channel means (one row per image)."""

    def predict(x: np.ndarray) -> np.ndarray:
        z = x.astype(np.float64).mean(axis=(1, 2)) / 64.0
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    return CallableModel(predict, name="mean_colour")


class Recorder(CallableModel):
    """Wraps a model and keeps every image batch the server handed to it."""

    def __init__(self, inner: CallableModel) -> None:
        super().__init__(inner.predict, name="recorder")
        self.seen: list[np.ndarray] = []

    def _predict(self, images: np.ndarray) -> np.ndarray:
        self.seen.append(images.copy())
        return super()._predict(images)
