"""Classification as a problem on the engine: candidates scored by class loss on a minibatch.

One step draws a minibatch (without replacement; all images when the batch is the whole
set), asks the estimator for candidate latents, turns them into perturbed images (one
delta per candidate, or with a :class:`~blackbox_dft.core.estimators.PerImage` estimator one
per candidate and image), sends them in ONE ``predict`` call and tells the estimator the
losses. Validation scores the validation split under one latent: accuracy, balanced
accuracy and loss; it also keeps the model's answers to the first ``canary`` validation
images (the canary rows, at no extra query) in ``state.extra["canary"]``, keyed by step:
the baseline's (step 0, the unperturbed images) and those of the best step so far, so that
a resumed fit still has them.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from blackbox_dft.core.engine import Validation
from blackbox_dft.core.estimators import Estimator
from blackbox_dft.core.images import apply_delta, apply_deltas
from blackbox_dft.core.metrics import classification_metrics
from blackbox_dft.core.model import QueryCounter
from blackbox_dft.core.objectives import Objective
from blackbox_dft.core.optimizers import Optimizer
from blackbox_dft.core.perturbation import Perturbation
from blackbox_dft.core.sampling import draw_minibatch, observe_losses
from blackbox_dft.core.state import FitState

__all__ = ["ClassificationProblem"]

log = logging.getLogger(__name__)


def _key(m: dict[str, Any], selection: str, step: int | None = None) -> list[float]:
    key = ([-m["val_loss"], 0.0] if selection == "loss"
           else [m[f"val_{selection}"], -m["val_loss"]])
    return key if step is None else [*key, float(step)]


class ClassificationProblem:
    """Images ``x (N, H, W, 3)`` uint8 with labels ``y``; ``val`` an optional
    ``(images, labels)``. ``energy_penalty``: weight of ``lam / 2 |z|^2`` added to the loss
    (exact gradient ``lam z``, no queries). ``selection``: the validation metric that picks
    the best latent. ``optimizer``: read for the learning rate shown in the history.
    ``sampling``: how minibatches are drawn (:mod:`blackbox_dft.core.sampling`)."""

    slots = 1

    def __init__(self, counter: QueryCounter, objective: Objective, pert: Perturbation,
                 estimator: Estimator, optimizer: Optimizer, x: np.ndarray, y: np.ndarray,
                 val: tuple[np.ndarray, np.ndarray] | None, *, epsilon: float,
                 batch_size: int, task: str, class_weight: Any, selection: str,
                 energy_penalty: float, canary: int = 0, sampling: str = "uniform") -> None:
        self.counter, self.objective, self.pert = counter, objective, pert
        self.optimizer, self.x, self.y, self.val = optimizer, x, y, val
        self.eps, self.task, self.selection = float(epsilon), task, selection
        self.energy_penalty = float(energy_penalty)
        self.sampling = sampling
        self.image_shape = (int(x.shape[1]), int(x.shape[2]))
        self.batch = min(int(batch_size), x.shape[0])
        n_classes = 2 if task == "binary" else (None if task == "multilabel"
                                                 else int(y.max()) + 1)
        self.weights = objective.class_weights(y, n_classes or 0, class_weight)
        self.max_label = int(y.max())
        self.latent_shape: tuple[int, ...] = tuple(pert.latent_shape(self.image_shape))
        self.step_cost = estimator.candidates_per_step * self.batch
        self.validation_cost = 0 if val is None else int(val[0].shape[0])
        self.canary = 0 if val is None else min(int(canary), int(val[0].shape[0]))

    def _probe(self, raw: np.ndarray) -> None:
        if self.task == "multilabel":
            return
        k = self.objective.n_outputs(raw)
        if self.max_label >= k:
            raise ValueError(
                f"labels go up to {self.max_label} but the model's scores give {k} classes; "
                "check the labels or pass a label_map")

    def losses(self, candidates: np.ndarray, xb: np.ndarray, yb: np.ndarray) -> np.ndarray:
        """Per-image losses ``(M, B)`` of the minibatch under each candidate: candidates
        ``(M, *latent)`` (each on every image) or ``(M, B, *latent)`` (one per image)."""
        m, b = candidates.shape[0], xb.shape[0]
        if candidates.ndim == len(self.latent_shape) + 1:
            deltas = self.pert.to_deltas(candidates, self.image_shape, self.eps)
            images = apply_deltas(xb, deltas)
        else:
            images = np.empty((m * b, *xb.shape[1:]), dtype=np.uint8)
            for i in range(m):
                self.pert.perturb_paired(xb, candidates[i], self.eps,
                                         out=images[i * b:(i + 1) * b])
        raw = self.counter.predict(images)
        self._probe(raw)
        per_image = self.objective.loss(raw, np.concatenate([yb] * m), self.weights)
        return per_image.reshape(m, b)

    def gradient(self, z: np.ndarray, estimator: Estimator, rng: np.random.Generator,
                 t: int, state: FitState) -> tuple[np.ndarray, dict[str, Any]]:
        n = self.x.shape[0]
        idx, weights = draw_minibatch(self.sampling, n, self.batch, rng, state.extra)
        xb, yb = self.x[idx], self.y[idx]
        proposal = estimator.ask(z, rng, t, batch=self.batch)
        losses = self.losses(proposal.candidates, xb, yb)
        observe_losses(self.sampling, idx, losses, state.extra, n)
        # the gradient estimate is linear in the losses: weighting an image's losses weights
        # its finite differences (importance sampling); the loss shown stays unweighted
        g, loss = estimator.tell(proposal, losses if weights is None else losses * weights)
        if weights is not None:
            loss = float(losses.mean())
        if self.energy_penalty:
            g = g + self.energy_penalty * z
        return g, {"loss": loss, "learning_rate": self.optimizer.learning_rate(t),
                   "fd_step": estimator.step_at(t)}

    def project(self, z: np.ndarray) -> np.ndarray:
        return self.pert.project(z, self.eps)

    def _warn_if_swapped(self, balanced: float, n: int) -> None:
        """A binary model far below chance on the unperturbed validation images most likely
        scores the user's class 0 in its column 1: labels in the wrong order (e.g. class
        folders sorted by name). Said before the budget is spent, not after."""
        if self.task == "binary" and n >= 10 and balanced < 0.4:
            log.warning("balanced accuracy of the unperturbed model on the validation images is "
                        "%.2f, below chance: its positive class may not be your class 1; check "
                        "the label order (CLI: --classes NEGATIVE,POSITIVE)", balanced)

    def _keep_canary(self, raw: np.ndarray, state: FitState) -> None:
        """Keep the canary rows' answers of this validation (step 0: the baseline) beside
        those of the baseline and of the best step so far; older ones are dropped (the
        engine makes this step the best, or not, right after this validation)."""
        step = 0 if state.baseline is None else state.step + 1
        kept = state.extra.get("canary") or {}
        keep = {k: v for k, v in kept.items() if k in ("0", str(state.best_step))}
        keep[str(step)] = np.asarray(raw[:self.canary], dtype=np.float64).tolist()
        state.extra["canary"] = keep

    def validate(self, z: np.ndarray, state: FitState) -> Validation:
        """Validation accuracy, balanced accuracy and loss of latent ``z``."""
        assert self.val is not None
        xv, yv = self.val
        delta = self.pert.to_delta(z, self.image_shape, self.eps)
        raw = self.counter.predict(apply_delta(xv, delta))
        self._probe(raw)
        k = None if self.task == "multilabel" else max(
            self.objective.n_outputs(raw), self.max_label + 1)
        m = classification_metrics(yv, self.objective.predict_labels(raw), self.task, k)
        rec = {"val_accuracy": m["accuracy"], "val_balanced_accuracy": m["balanced_accuracy"],
               "val_loss": float(self.objective.loss(raw, yv, self.weights).mean())}
        if self.canary:
            self._keep_canary(raw, state)
        if state.baseline is None:
            self._warn_if_swapped(m["balanced_accuracy"], len(yv))
        # 0-1 decisions: the validation loss says no more than the accuracy, which plateaus
        # while held-out accuracy still climbs; ties go to the later step (face task, 30,000
        # label queries, 10 seeds: +0.265 against +0.238 for the first; label_only.md)
        later = None if self.objective.scores != "labels" else (
            0 if state.baseline is None else state.step + 1)
        return Validation([_key(rec, self.selection, later)], rec,
                          {"queries": self.counter.queries, **rec})
