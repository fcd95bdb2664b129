"""A model with a learned perturbation applied to every input (the deployment of a fit)."""

from __future__ import annotations

from typing import Any

import numpy as np

from blackbox_dft.core.checks import show
from blackbox_dft.core.images import apply_delta, check_images
from blackbox_dft.core.model import check_scores, model_name

__all__ = ["FineTunedModel"]


class FineTunedModel:
    """A model with a learned perturbation applied to every input: a Model again.

    delta: float ``(H, W, 3)`` grey levels; resized bilinearly to other image sizes.
    """

    def __init__(self, model: Any, delta: np.ndarray) -> None:
        if not hasattr(model, "predict"):
            raise TypeError(f"model must have a predict method, got {type(model).__name__}")
        if np.iscomplexobj(delta):
            raise ValueError("delta must be real grey levels, got complex values")
        try:
            delta = np.asarray(delta, dtype=np.float32)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"delta must be a float array (H, W, 3), got {show(delta)}") from None
        if delta.ndim != 3 or delta.shape[-1] != 3:
            raise ValueError(f"delta must have shape (H, W, 3), got {delta.shape}")
        if not np.all(np.isfinite(delta)):
            raise ValueError("delta contains NaN or inf values")
        self.model = model
        self.delta = delta
        self.name = f"FineTuned({model_name(model)})"

    def transform(self, images: np.ndarray) -> np.ndarray:
        """Return the perturbed uint8 images that the wrapped model will see."""
        return apply_delta(check_images(images), self.delta)

    def predict(self, images: np.ndarray) -> np.ndarray:
        x = self.transform(images)
        return check_scores(self.model.predict(x), x.shape[0], self.model)

    def __repr__(self) -> str:
        eps = float(np.abs(self.delta).max()) if self.delta.size else 0.0
        return (f"FineTunedModel({model_name(self.model)}, delta={self.delta.shape}, "
                f"max|delta|={eps:.2f})")
