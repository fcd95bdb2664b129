"""Minibatch sampling: which training images a step sends, and the weight of each one's loss.

* ``"uniform"``: ``batch`` distinct images, equally likely, weight 1 (the classic minibatch).
* ``"importance"``: ``batch`` distinct images, image ``i`` included with probability
  ``pi_i`` proportional to ``e_i + floor * mean(e)`` (capped at 1, summing to ``batch``),
  where ``e_i = 1 - exp(-loss_i)`` is its error at the last step that sent it (for
  cross-entropy, ``1 - P(its label)``), read from the answers that step already paid for (the
  mean of its candidates' losses: its loss at ``z`` up to ``O(step^2)``); an image not sent
  yet counts as the mean error of those sent (all alike before the first step). The draw is
  systematic sampling in a random order, whose inclusion probabilities are exactly ``pi``;
  an image's loss is weighted by ``batch / (N pi_i)`` (Horvitz-Thompson), so the weighted
  minibatch mean is an unbiased estimate of the training mean loss, and the gradient
  estimate stays one of the mean gradient.

Why: with one random direction per image, an image's finite difference has a variance
proportional to ``|grad loss_i|^2`` whatever its share of the mean gradient, and images the
model already gets right with confidence have almost none of it. Drawing images in
proportion to the size of their gradient minimises the estimate's variance for the same
queries (importance sampling for SGD: Needell, Srebro & Ward 2014; Katharopoulos & Fleuret
2018); the error is the cross-entropy's factor of that size (``d loss / d logit = p - y``),
known without a query. The floor keeps every image in play (a weight is at most
``(1 + floor) / floor`` times that of an image of mean error) while errors are stale.
Measured on the face task: ``benchmarks/results/default_search.md`` (drawing with
replacement, or counting unseen images as errors of 1, did worse at 1,000 queries).

The errors live in ``FitState.extra["sampling_error"]`` (JSON, saved in checkpoints), so a
resumed fit draws the same minibatches as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any, TypeGuard

import numpy as np

from blackbox_dft.core.checks import check_choice

__all__ = ["SAMPLINGS", "IMPORTANCE_FLOOR", "draw_minibatch", "observe_losses",
           "inclusion_probabilities"]

SAMPLINGS = ("uniform", "importance")
#: the share of the mean error every image keeps as its floor in ``"importance"`` sampling
IMPORTANCE_FLOOR = 0.1
_KEY = "sampling_error"


def draw_minibatch(sampling: str, n: int, batch: int, rng: np.random.Generator,
                   extra: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    """Row indices ``(batch,)`` (distinct) of the next minibatch out of ``n`` images, and the
    weights ``(batch,)`` of their losses (None: all 1).

    Every image when ``batch >= n``. ``"uniform"`` uses ``rng`` exactly as the fits always
    have (``choice`` without replacement), so its fits are unchanged.
    """
    check_choice("sampling", sampling, SAMPLINGS)
    if batch >= n:
        return np.arange(n), None
    if sampling == "uniform":
        return rng.choice(n, size=batch, replace=False), None
    err = _errors(extra, n)
    size = err + IMPORTANCE_FLOOR * err.mean()
    if not size.sum() > 0:  # no error seen on any image (all answers perfect): all alike
        size = np.ones(n)
    pi = inclusion_probabilities(size, batch)
    # systematic sampling in a random order: points u, u + 1, ... on the cumulated pi
    order = rng.permutation(n)
    edges = np.cumsum(pi[order])
    edges[-1] = batch  # exact, whatever the rounding of the sum
    picks = np.searchsorted(edges, rng.random() + np.arange(batch), side="right")
    idx = order[np.minimum(picks, n - 1)]
    return idx, batch / (n * pi[idx])


def inclusion_probabilities(size: np.ndarray, batch: int) -> np.ndarray:
    """Probabilities ``(n,)`` proportional to ``size`` (> 0), each at most 1, summing to
    ``batch`` (< n): the largest are capped at 1 and the rest rescaled, until none exceeds 1."""
    size = np.asarray(size, dtype=np.float64)
    capped = np.zeros(size.shape, dtype=bool)
    while True:
        free = batch - int(capped.sum())
        pi = np.where(capped, 1.0, size * free / size[~capped].sum())
        over = ~capped & (pi > 1.0)
        if not over.any():
            return pi
        capped |= over


def observe_losses(sampling: str, idx: np.ndarray, losses: np.ndarray,
                   extra: dict[str, Any], n: int) -> None:
    """Record what a step's answers say about its images: ``losses (M, batch)`` are each
    candidate's (unweighted) loss of image ``idx[b]``. Nothing to record for ``"uniform"``."""
    if sampling != "importance":
        return
    kept = extra.get(_KEY)
    err = np.asarray(kept, dtype=np.float64) if _valid(kept, n) else np.full(n, np.nan)
    loss = np.asarray(losses, dtype=np.float64).mean(axis=0)
    # 1 - exp(-loss) is in [0, 1): finite for any finite loss, 0 for a perfect answer
    err[np.asarray(idx)] = -np.expm1(-np.maximum(loss, 0.0))
    # None: not sent yet (an object array's tolist gives Python floats and None)
    kept_err = err.astype(object)
    kept_err[np.isnan(err)] = None
    extra[_KEY] = kept_err.tolist()


def _valid(kept: Any, n: int) -> TypeGuard[list[float | None]]:
    return isinstance(kept, list) and len(kept) == n


def _errors(extra: dict[str, Any], n: int) -> np.ndarray:
    """The per-image errors ``(n,)``: as last seen, the mean of those for images not sent yet,
    and all 1 before the first step (or for a state of another training set size, which a
    resume refuses earlier anyway)."""
    kept = extra.get(_KEY)
    if not _valid(kept, n):
        return np.ones(n)
    err = np.array(kept, dtype=np.float64)  # None -> nan
    seen = ~np.isnan(err)
    return np.where(seen, err, err[seen].mean() if seen.any() else 1.0)
