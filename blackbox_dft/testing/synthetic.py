"""A synthetic black box for tests and benchmarks: a fixed random softmax classifier.

Images are 16x16x3 uint8: a smooth class prototype plus pixel noise. The model is
a linear softmax on centred pixels whose weights are the prototypes' differences
plus a fixed random component. The *shift* models a user's capture conditions: a
smooth additive colour cast (up to 16 grey levels, leaning towards class 0) that
an epsilon-8 perturbation can largely undo.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from blackbox_dft.core.images import check_images
from blackbox_dft.core.model import check_scores

SIZE = 16
N_CLASSES = 4


def _smooth_field(rng: np.random.Generator, grid: int = 4) -> np.ndarray:
    coarse = rng.standard_normal((grid, grid, 3)).astype(np.float32)
    field = cv2.resize(coarse, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
    return field / np.abs(field).max()


class SyntheticModel:
    """``predict(uint8 (N, 16, 16, 3)) -> logits (N, 4)``: a linear map of the centred pixels
    (``fn``, the same map on arrays without checks)."""

    output_kind = "scores"

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], n_outputs: int) -> None:
        self.fn, self.n_outputs, self.name = fn, n_outputs, "synthetic-softmax"

    def predict(self, images: np.ndarray) -> np.ndarray:
        x = check_images(images)
        return check_scores(self.fn(x), x.shape[0], self)

    def __repr__(self) -> str:
        return f"SyntheticModel({self.name}, n_outputs={self.n_outputs})"


@dataclass
class Problem:
    """The model, its weights ``(768, 4)``, shifted train / val / test splits (images, labels)
    and the test images without the shift."""

    model: SyntheticModel
    weights: np.ndarray
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    test_clean: np.ndarray

    def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
        return float(np.mean(self.model.predict(images).argmax(1) == labels))


def make_problem(seed: int = 0, n_train: int = 200, n_val: int = 100, n_test: int = 300,
                 amplitude: float = 10.0, noise: float = 28.0, cast: float = 16.0) -> Problem:
    """The synthetic black box, its labelled splits and a shifted test domain."""
    rng = np.random.default_rng(seed)
    protos = np.stack([128.0 + amplitude * _smooth_field(rng) for _ in range(N_CLASSES)])
    centred = (protos - protos.mean(axis=0)).reshape(N_CLASSES, -1)
    w = centred.T / np.linalg.norm(centred, axis=1) + 0.02 * rng.standard_normal(
        (SIZE * SIZE * 3, N_CLASSES))
    w *= 0.15

    def fn(images: np.ndarray) -> np.ndarray:
        flat = (images.reshape(images.shape[0], -1).astype(np.float64) - 128.0)
        return flat @ w

    # The cast leans towards class 0's template, so it costs accuracy on the other classes.
    lean = centred[0].reshape(SIZE, SIZE, 3)
    shift = cast * (0.5 * _smooth_field(rng) + 0.5 * lean / np.abs(lean).max())

    def sample(n: int, shifted: bool) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, N_CLASSES, size=n)
        x = protos[y] + noise * rng.standard_normal((n, SIZE, SIZE, 3))
        if shifted:
            x = x + shift
        return np.clip(np.rint(x), 0, 255).astype(np.uint8), y

    train, val, test = sample(n_train, True), sample(n_val, True), sample(n_test, True)
    test_clean = np.clip(test[0].astype(np.float64) - shift, 0, 255).astype(np.uint8)
    model = SyntheticModel(fn, N_CLASSES)
    return Problem(model, w, train, val, test, test_clean)
