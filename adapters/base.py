"""Shared pieces of every adapter: input checks and output checks around ``_predict``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from blackbox_dft.core.checks import check_int
from blackbox_dft.core.images import check_image_pairs, check_images
from blackbox_dft.core.model import ModelError, check_scores

__all__ = ["BaseModel", "CallableModel", "CallablePairModel"]


class BaseModel:
    """Base class for adapters: owns the invariants, subclasses implement ``_predict``.

    ``predict`` validates the images (uint8 ``(N, H, W, 3)`` RGB), calls
    ``_predict`` and checks that the scores have one finite row per image.
    """

    name: str = "model"
    #: what a row of ``predict`` is: "scores" (class scores), "labels" (one-hot decisions),
    #: "ordinal" (likelihood levels) or "embedding" (a feature vector per image).
    output_kind: str = "scores"

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Scores for uint8 RGB images ``(N, H, W, 3)``: float64 ``(N, K)``."""
        x = check_images(images)
        return check_scores(self._predict(x), x.shape[0], self)

    def _predict(self, images: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class CallableModel(BaseModel):
    """Wrap ``fn(uint8 (N, H, W, 3) RGB) -> (N, K) scores`` as a Model.

    fn: any callable (a local network, an SDK call); name: shown in errors.
    n_outputs: if given, the number of scores per image that fn must return.
    """

    def __init__(self, fn: Callable[[np.ndarray], Any], name: str | None = None,
                 n_outputs: int | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.name = str(name or getattr(fn, "__name__", type(fn).__name__))
        self.n_outputs = None if n_outputs is None else check_int("n_outputs", n_outputs, 1)

    def _predict(self, images: np.ndarray) -> np.ndarray:
        scores = check_scores(self.fn(images), images.shape[0], self)
        if self.n_outputs is not None and scores.shape[1] != self.n_outputs:
            raise ModelError(
                f"{self.name} returned {scores.shape[1]} scores per image, "
                f"expected n_outputs={self.n_outputs}"
            )
        return scores


class CallablePairModel:
    """Wrap ``fn(images_a, images_b) -> similarities (P,)`` (a face-compare call) as a pair
    model for :class:`~blackbox_dft.tasks.verification.VerificationTuner`.

    fn gets two uint8 RGB ``(P, H, W, 3)`` stacks, image ``i`` of each forming pair ``i``,
    and returns one similarity per pair (any scale: a cosine, a vendor's 0-100 confidence;
    the threshold is in the same units). ``output_kind = "similarity"``.
    """

    output_kind = "similarity"

    def __init__(self, fn: Callable[[np.ndarray, np.ndarray], Any],
                 name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.name = str(name or getattr(fn, "__name__", type(fn).__name__))

    def compare(self, images_a: np.ndarray, images_b: np.ndarray) -> np.ndarray:
        """Similarities float64 ``(P,)`` of pairs ``(images_a[i], images_b[i])``."""
        a, b = check_image_pairs(images_a, images_b)
        sims = check_scores(self.fn(a, b), a.shape[0], self)
        if sims.shape[1] != 1:
            raise ModelError(f"{self.name} must return one similarity per pair, got shape "
                             f"{sims.shape}")
        return sims[:, 0]

    def __repr__(self) -> str:
        return f"CallablePairModel(name={self.name!r})"
