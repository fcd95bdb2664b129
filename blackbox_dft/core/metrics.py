"""Classification metrics: accuracy, balanced accuracy, per-class recall, SSIM.

Balanced accuracy (mean per-class recall) is reported beside accuracy because
imbalanced labels are the norm: a perturbation that pushes every image to the
majority class raises accuracy but not balanced accuracy.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

__all__ = ["classification_metrics", "ssim"]


def _binary_or_multiclass(y_true: np.ndarray, y_pred: np.ndarray,
                          n_classes: int) -> dict[str, Any]:
    # Counted in one pass (not one pass per class): a model may have thousands of classes.
    total = np.bincount(y_true, minlength=n_classes)
    hits = np.bincount(y_true[y_pred == y_true], minlength=n_classes)
    recalls: dict[str, float | None] = {
        str(c): float(hits[c] / total[c]) if total[c] else None for c in range(n_classes)}
    present = [r for r in recalls.values() if r is not None]
    return {
        "accuracy": float(np.mean(y_true == y_pred)),
        "balanced_accuracy": float(np.mean(present)) if present else float("nan"),
        "per_class_recall": recalls,
    }


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, task: str,
                           n_classes: int | None = None) -> dict[str, Any]:
    """Accuracy, balanced accuracy and per-class recall (per attribute for multilabel).

    y_true, y_pred: int ``(N,)``, or ``(N, A)`` in {0, 1} for ``task="multilabel"``.
    For multilabel the top-level accuracy / balanced accuracy are means over attributes
    and ``per_attribute`` holds each attribute's figures.
    """
    if task == "multilabel":
        per = [_binary_or_multiclass(y_true[:, a], y_pred[:, a], 2)
               for a in range(y_true.shape[1])]
        return {
            "accuracy": float(np.mean([p["accuracy"] for p in per])),
            "balanced_accuracy": float(np.nanmean([p["balanced_accuracy"] for p in per])),
            "per_attribute": per,
        }
    k = n_classes if n_classes is not None else int(max(y_true.max(), y_pred.max())) + 1
    return _binary_or_multiclass(y_true, y_pred, k)


def ssim(clean: np.ndarray, perturbed: np.ndarray) -> float:
    """Mean structural similarity of two uint8 stacks ``(N, H, W, 3)`` (Gaussian 7x7 window).

    Computed per channel with the standard constants (K1=0.01, K2=0.03, L=255).
    """
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for a, b in zip(clean, perturbed, strict=True):
        x, y = a.astype(np.float64), b.astype(np.float64)

        def blur(im: np.ndarray) -> np.ndarray:
            return cv2.GaussianBlur(im, (7, 7), 1.5)

        mx, my = blur(x), blur(y)
        sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
        m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
        vals.append(float(m.mean()))
    return float(np.mean(vals))
