"""Minibatch sampling: which training images a step sends, and the weight of each one's loss.

* ``"uniform"``: ``batch`` distinct images, equally likely, weight 1 (the classic minibatch).
* ``"importance"``: image ``i`` is drawn (with replacement) with probability
  ``p_i = (e_i + floor * mean(e)) / sum(...)``, where ``e_i = 1 - exp(-loss_i)`` is its error
  at the last step that sent it (for cross-entropy, ``1 - P(its label)``), read from the
  answers that step already paid for (the mean of its candidates' losses: its loss at ``z``
  up to ``O(step^2)``); an image not sent yet counts as ``e_i = 1``. Its loss is weighted by
  ``1 / (N p_i)``, so the weighted minibatch mean is an unbiased estimate of the training
  mean loss, and the gradient estimate stays one of the mean gradient.

Why: with one random direction per image, an image's finite difference has a variance
proportional to ``|grad loss_i|^2`` whatever its share of the mean gradient, and images the
model already gets right with confidence have almost none of it. Drawing images in
proportion to the size of their gradient minimises the estimate's variance for the same
queries (importance sampling for SGD: Needell, Srebro & Ward 2014; Katharopoulos & Fleuret
2018); the error is the cross-entropy's factor of that size (``d loss / d logit = p - y``),
known without a query. The floor keeps every image in play (a weight is at most
``(1 + floor) / floor`` times the mean) while errors are stale. Measured on the face task:
``benchmarks/results/default_search.md``.

The errors live in ``FitState.extra["sampling_error"]`` (JSON, saved in checkpoints), so a
resumed fit draws the same minibatches as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from blackbox_dft.core.checks import check_choice

__all__ = ["SAMPLINGS", "IMPORTANCE_FLOOR", "draw_minibatch", "observe_losses"]

SAMPLINGS = ("uniform", "importance")
#: the share of the mean error every image keeps as its floor in ``"importance"`` sampling
IMPORTANCE_FLOOR = 0.1
_KEY = "sampling_error"


def draw_minibatch(sampling: str, n: int, batch: int, rng: np.random.Generator,
                   extra: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    """Row indices ``(batch,)`` of the next minibatch out of ``n`` images, and the weights
    ``(batch,)`` of their losses (None: all 1).

    ``"uniform"`` takes every image when ``batch >= n`` and uses ``rng`` exactly as the fits
    always have (``choice`` without replacement), so its fits are unchanged.
    """
    check_choice("sampling", sampling, SAMPLINGS)
    if sampling == "uniform":
        idx = rng.choice(n, size=batch, replace=False) if batch < n else np.arange(n)
        return idx, None
    err = _errors(extra, n)
    p = err + IMPORTANCE_FLOOR * err.mean()
    p = p / p.sum()
    idx = rng.choice(n, size=batch, replace=True, p=p)
    return idx, 1.0 / (n * p[idx])


def observe_losses(sampling: str, idx: np.ndarray, losses: np.ndarray,
                   extra: dict[str, Any], n: int) -> None:
    """Record what a step's answers say about its images: ``losses (M, batch)`` are each
    candidate's (unweighted) loss of image ``idx[b]``. Nothing to record for ``"uniform"``."""
    if sampling != "importance":
        return
    err = _errors(extra, n)
    loss = np.asarray(losses, dtype=np.float64).mean(axis=0)
    # 1 - exp(-loss) is in [0, 1): finite for any finite loss, 0 for a perfect answer
    err[np.asarray(idx)] = -np.expm1(-np.maximum(loss, 0.0))
    extra[_KEY] = err.tolist()


def _errors(extra: dict[str, Any], n: int) -> np.ndarray:
    """The per-image errors so far ``(n,)``; 1 for images not sent yet (and for a state
    written by another training set size, which a resume refuses earlier anyway)."""
    kept = extra.get(_KEY)
    if not isinstance(kept, list) or len(kept) != n:
        return np.ones(n)
    return np.asarray(kept, dtype=np.float64)
