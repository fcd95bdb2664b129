"""A guard against model updates: does a fitted delta still help the model behind the API?

A delta is specific to the model it was fitted on, and vendors update their models without
notice. A :class:`~blackbox_dft.tasks.classification.DataFineTuner` fit keeps a canary set
(the first ``canary_size`` validation images, their labels and the model's answers to them
unperturbed and perturbed, at no extra query). :func:`check_delta` sends the canary images
again, without and with the delta (``2 x n`` images), and reports:

* whether the model changed: its answers to the unperturbed images against the stored ones,
  as the mean absolute score difference relative to the stored scores' spread (standard
  deviation; ``score_distance``) and the fraction of canary images whose decision changed;
  the model counts as changed when either exceeds ``tolerance`` (default 0.05: one changed
  decision in 32 images, or a score noise of 5 % of the scores' spread, passes);
* whether the delta still helps: when it raised the run's selection metric on the canary at
  fit time, it must still raise it (a gain that fell to nothing is not help); when it did
  not, it must not lower the metric nor, at equal metric, raise the loss;
* the queries it cost.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from blackbox_dft.core.checks import check_int, check_number
from blackbox_dft.core.metrics import classification_metrics
from blackbox_dft.core.model import QueryCounter
from blackbox_dft.tasks.classification import DataFineTuner

__all__ = ["GuardReport", "check_delta", "NoCanaryError"]


class NoCanaryError(ValueError):
    """The result holds no canary set (fitted without validation, with ``canary_size=0``,
    or by a blackbox_dft older than the guard)."""


@dataclass
class GuardReport:
    """What :func:`check_delta` found.

    n_images: canary images sent (each twice: without and with the delta); queries: images
    sent. max_abs_diff / mean_abs_diff: of the unperturbed answers against the stored ones
    (score units); score_distance: mean_abs_diff over the stored scores' standard deviation;
    changed_decisions: fraction of canary images whose decision changed; model_changed:
    either above ``tolerance`` (or the answers' shape changed). metric: the selection
    metric; fit / now: ``{"without": {metric, "loss"}, "with": {...}}`` at fit time
    (stored answers) and now. delta_helps: see the module docstring.
    """

    n_images: int
    queries: int
    tolerance: float
    max_abs_diff: float
    mean_abs_diff: float
    score_distance: float
    changed_decisions: float
    model_changed: bool
    metric: str
    fit: dict[str, dict[str, float]] = field(default_factory=dict)
    now: dict[str, dict[str, float]] = field(default_factory=dict)
    delta_helps: bool = False

    def summary(self) -> str:
        """One line: the model's state, the delta's gain now and at fit time, the cost."""
        m, now, fit = self.metric, self.now, self.fit
        model = (f"model CHANGED (score distance {self.score_distance:.3g}, "
                 f"{self.changed_decisions:.0%} of decisions changed; tolerance "
                 f"{self.tolerance:g})" if self.model_changed else
                 f"model unchanged (score distance {self.score_distance:.3g}, "
                 f"{self.changed_decisions:.0%} of decisions changed; tolerance "
                 f"{self.tolerance:g})")
        verdict = "delta helps" if self.delta_helps else "delta NO LONGER HELPS"
        return (f"{model}; {verdict}: {m} {now['with'][m]:.3f} with vs {now['without'][m]:.3f}"
                f" without (at fit {fit['with'][m]:.3f} vs {fit['without'][m]:.3f}) on "
                f"{self.n_images} canary images; {self.queries} queries")

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-able values (``summary`` included)."""
        return {**asdict(self), "summary": self.summary()}


def _canary(tuner: DataFineTuner, where: str) -> tuple[np.ndarray, ...]:
    """The canary arrays, checked against each other; NoCanaryError without them."""
    names = ("canary_images_", "canary_labels_", "canary_clean_", "canary_perturbed_")
    if not all(hasattr(tuner, a) for a in names):
        raise NoCanaryError(
            f"{where} has no canary set (fitted without a validation split, with "
            "canary_size=0, or by a blackbox_dft without the guard); fit again with a "
            "validation split to be able to check it")
    arrays = tuple(np.asarray(getattr(tuner, a)) for a in names)
    x = arrays[0]
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8 or \
            any(len(a) != len(x) for a in arrays[1:]):
        raise ValueError(f"{where}: its canary arrays are inconsistent (images "
                         f"{x.shape} {x.dtype}, {[a.shape for a in arrays[1:]]}); the file "
                         "was altered or damaged")
    return arrays


def _metrics(tuner: DataFineTuner, raw: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy and mean loss of answers ``raw`` for labels ``y``."""
    obj = tuner.objective_
    m = classification_metrics(y, obj.predict_labels(raw), tuner.task,
                               tuner._n_classes(raw, y))
    return {"accuracy": float(m["accuracy"]), "balanced_accuracy": float(m["balanced_accuracy"]),
            "loss": float(obj.loss(raw, y).mean())}


def _key(m: dict[str, float], metric: str) -> tuple[float, float]:
    return (-m["loss"], 0.0) if metric == "loss" else (m[metric], -m["loss"])


def _helps(fit: dict[str, dict[str, float]], now: dict[str, dict[str, float]],
           metric: str) -> bool:
    """A gain at fit time must still be a gain; no gain at fit time: no loss now."""
    if _key(fit["with"], metric)[0] > _key(fit["without"], metric)[0]:
        return _key(now["with"], metric)[0] > _key(now["without"], metric)[0]
    return _key(now["with"], metric) >= _key(now["without"], metric)


def _distance(tuner: DataFineTuner, old: np.ndarray,
              new: np.ndarray) -> tuple[float, float, float, float]:
    """max / mean absolute difference, score distance and changed-decision fraction of the
    clean answers ``new`` against the stored ``old`` (inf, inf, inf, 1 if shapes differ)."""
    if old.shape != new.shape:
        return float("inf"), float("inf"), float("inf"), 1.0
    diff = np.abs(new.astype(np.float64) - old.astype(np.float64))
    spread = max(float(np.std(old)), 1e-6)  # a constant model: differences in score units
    pred = tuner.objective_.predict_labels
    changed = pred(new) != pred(old)
    if changed.ndim > 1:  # multilabel: a row changed when any attribute did
        changed = changed.any(axis=1)
    return (float(diff.max(initial=0.0)), float(diff.mean()), float(diff.mean()) / spread,
            float(np.mean(changed)))


def check_delta(tuner_or_result: DataFineTuner | str | os.PathLike[str], model: Any = None, *,
                tolerance: float = 0.05, budget: int | None = None) -> GuardReport:
    """Re-query a fitted result's canary set without and with its delta.

    tuner_or_result: a fitted :class:`DataFineTuner`, or the path of its saved result
    (``delta.npz``). model: the model to check (``predict(uint8 (N, H, W, 3)) -> scores``;
    None: the tuner's own). tolerance: allowed score distance and fraction of changed
    decisions before the model counts as changed. budget: images it may send (None: the
    whole canary twice); fewer canary images are used to fit in it (at least 2 images).
    """
    check_number("tolerance", tolerance, 0.0)
    if budget is not None:
        check_int("budget", budget, 2)
    if isinstance(tuner_or_result, (str, os.PathLike)):
        where = os.fspath(tuner_or_result)
        tuner = DataFineTuner.load(where, model)
    elif isinstance(tuner_or_result, DataFineTuner):
        tuner, where = tuner_or_result, "this DataFineTuner"
        tuner._check_fitted()
    else:
        raise TypeError("check_delta takes a fitted DataFineTuner or the path of its saved "
                        f"result, got {type(tuner_or_result).__name__}")
    model = tuner.model if model is None else model
    if model is None:
        raise TypeError(f"check_delta needs the model to query for {where}: pass it as model")
    x, y, clean, kept = _canary(tuner, where)
    n = len(x)
    if budget is not None:
        n = min(n, int(budget) // 2)
    x, y, clean, kept = x[:n], y[:n], clean[:n], kept[:n]
    counter = QueryCounter(model, 2 * n)
    new_clean = counter.predict(x)
    new_kept = counter.predict(tuner.transform(x))
    max_d, mean_d, dist, changed = _distance(tuner, clean, new_clean)
    metric = str(tuner.selection)
    fit = {"without": _metrics(tuner, clean, y), "with": _metrics(tuner, kept, y)}
    now = {"without": _metrics(tuner, new_clean, y), "with": _metrics(tuner, new_kept, y)}
    return GuardReport(
        n_images=n, queries=counter.queries, tolerance=float(tolerance), max_abs_diff=max_d,
        mean_abs_diff=mean_d, score_distance=dist, changed_decisions=changed,
        model_changed=bool(dist > tolerance or changed > tolerance), metric=metric,
        fit=fit, now=now,
        delta_helps=_helps(fit, now, metric))
