"""The budgeted fit loop behind :meth:`DataFineTuner.fit`.

One step: draw a minibatch, let the estimator score all its candidate latents on
it in one ``predict`` call, take an optimizer step, project onto the budget, and
every ``validation_every`` steps score the validation split to keep the best
latent. A step's changes are committed to the :class:`FitState` only once the
whole step succeeded, so a checkpoint always holds a consistent state.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from blackbox_dft.core.estimators import Estimator
from blackbox_dft.core.images import apply_delta, apply_deltas
from blackbox_dft.core.metrics import classification_metrics
from blackbox_dft.core.model import QueryCounter
from blackbox_dft.core.objectives import Objective
from blackbox_dft.core.optimizers import Optimizer
from blackbox_dft.core.perturbation import Perturbation
from blackbox_dft.core.state import FitState, commit_queries, keep_on_failure

if TYPE_CHECKING:
    from blackbox_dft.tasks.classification import DataFineTuner

__all__ = ["run_fit"]


class _Scorer:
    """Losses and validation metrics of latents, through the query counter."""

    def __init__(self, tuner: DataFineTuner, objective: Objective, pert: Perturbation,
                 counter: QueryCounter, y: np.ndarray, image_shape: tuple[int, int]) -> None:
        self.objective, self.pert, self.counter = objective, pert, counter
        self.eps = float(tuner.epsilon)
        self.task = tuner.task
        self.image_shape = image_shape
        n_classes = 2 if tuner.task == "binary" else (
            None if tuner.task == "multilabel" else int(y.max()) + 1)
        self.n_classes = n_classes
        self.weights = objective.class_weights(y, n_classes or 0, tuner.class_weight)
        self.max_label = int(y.max())

    def _probe(self, raw: np.ndarray) -> None:
        if self.task == "multilabel":
            return
        k = self.objective.n_outputs(raw)
        if self.max_label >= k:
            raise ValueError(
                f"labels go up to {self.max_label} but the model's scores give {k} classes; "
                "check the labels or pass a label_map"
            )

    def losses(self, zs: np.ndarray, xb: np.ndarray, yb: np.ndarray) -> np.ndarray:
        """Mean loss on the minibatch for each candidate latent: ``(M,)``."""
        deltas = self.pert.to_deltas(zs, self.image_shape, self.eps)
        raw = self.counter.predict(apply_deltas(xb, deltas))
        self._probe(raw)
        labels = np.concatenate([yb] * zs.shape[0])
        per_image = self.objective.loss(raw, labels, self.weights)
        return per_image.reshape(zs.shape[0], xb.shape[0]).mean(axis=1)

    def losses_per_image(self, zs: np.ndarray, xb: np.ndarray, yb: np.ndarray) -> np.ndarray:
        """Loss of image ``b`` under candidate ``zs[m, b]`` for each ``(m, b)``: ``(M, B)``."""
        m, b = zs.shape[0], xb.shape[0]
        images = np.empty((m * b, *xb.shape[1:]), dtype=np.uint8)
        for i in range(m):
            self.pert.perturb_paired(xb, zs[i], self.eps, out=images[i * b:(i + 1) * b])
        raw = self.counter.predict(images)
        self._probe(raw)
        per_image = self.objective.loss(raw, np.concatenate([yb] * m), self.weights)
        return per_image.reshape(m, xb.shape[0])

    def validate(self, z: np.ndarray, val: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
        """Validation accuracy, balanced accuracy and loss of latent ``z``."""
        xv, yv = val
        delta = self.pert.to_delta(z, self.image_shape, self.eps)
        raw = self.counter.predict(apply_delta(xv, delta))
        self._probe(raw)
        k = None if self.task == "multilabel" else max(
            self.objective.n_outputs(raw), self.max_label + 1)
        m = classification_metrics(yv, self.objective.predict_labels(raw), self.task, k)
        return {"val_accuracy": m["accuracy"], "val_balanced_accuracy": m["balanced_accuracy"],
                "val_loss": float(self.objective.loss(raw, yv, self.weights).mean())}


def _score(m: dict[str, Any], selection: str) -> list[float]:
    if selection == "loss":
        return [-m["val_loss"], 0.0]
    return [m[f"val_{selection}"], -m["val_loss"]]


def run_fit(tuner: DataFineTuner, state: FitState | None, x: np.ndarray, y: np.ndarray,
            val: tuple[np.ndarray, np.ndarray] | None, objective: Objective,
            pert: Perturbation, est: Estimator, optimizer: Optimizer, counter: QueryCounter,
            checkpoint: str | os.PathLike[str] | None, checkpoint_every: int,
            meta: dict[str, Any], bar: tqdm,
            callback: Callable[[dict[str, Any], FitState], Any] | None = None) -> FitState:
    """Run (or continue) a fit; sets the tuner's fitted attributes even when it fails."""
    h, w = int(x.shape[1]), int(x.shape[2])
    n = x.shape[0]
    b = min(int(tuner.batch_size), n)
    scorer = _Scorer(tuner, objective, pert, counter, y, (h, w))
    if state is None:
        rng = np.random.default_rng(tuner.seed)
        z0 = np.zeros(pert.latent_shape((h, w)), dtype=np.float64)
        state = FitState(z=z0, opt_state=optimizer.init(z0),
                         rng_state=dict(rng.bit_generator.state))
    else:
        rng = np.random.default_rng()
        rng.bit_generator.state = state.rng_state
    step_cost = est.candidates_per_step * b
    val_cost = 0 if val is None else val[0].shape[0]
    every = int(tuner.validation_every)
    bar.update(counter.queries - bar.n)

    def save() -> None:
        if checkpoint is not None:
            state.save(checkpoint, meta)

    try:
        with keep_on_failure(state, counter, save):
            if val is not None and state.baseline is None:
                m = scorer.validate(state.z, val)
                state.baseline = {"queries": counter.queries, **m}
                state.best_z, state.best_score = state.z.copy(), _score(m, tuner.selection)
                commit_queries(state, counter)
            while not state.done and counter.affords(step_cost + val_cost):
                t = state.step
                idx = rng.choice(n, size=b, replace=False) if b < n else np.arange(n)
                xb, yb = x[idx], y[idx]
                if est.per_image:
                    g, loss, _ = est.estimate(partial(scorer.losses_per_image, xb=xb, yb=yb),
                                              state.z, rng, t, batch=b)
                else:
                    g, loss, _ = est.estimate(partial(scorer.losses, xb=xb, yb=yb), state.z, rng, t)
                if tuner.energy_penalty:
                    g = g + float(tuner.energy_penalty) * state.z
                step, opt_state = optimizer.update(g, state.opt_state)
                z = pert.project(state.z - step, float(tuner.epsilon))
                rec: dict[str, Any] = {"step": t + 1, "queries": counter.queries, "loss": loss,
                                       "learning_rate": optimizer.learning_rate(t),
                                       "fd_step": est.step_at(t)}
                last = counter.remaining < 2 * step_cost + val_cost
                if val is not None and ((t + 1) % every == 0 or last):
                    m = scorer.validate(z, val)
                    rec.update(m, queries=counter.queries)
                    if _score(m, tuner.selection) > (state.best_score or [-np.inf]):
                        state.best_z, state.best_score = z.copy(), _score(m, tuner.selection)
                        state.best_step = t + 1
                # Commit the whole step at once.
                state.z, state.opt_state, state.step = z, opt_state, t + 1
                commit_queries(state, counter)
                state.rng_state = dict(rng.bit_generator.state)
                state.history.append(rec)
                bar.update(counter.queries - bar.n)
                post = {"loss": f"{loss:.4f}"}
                if "val_accuracy" in rec:
                    post["val_acc"] = f"{rec['val_accuracy']:.3f}"
                bar.set_postfix(post, refresh=False)
                if state.step % checkpoint_every == 0:
                    save()
                if callback is not None and callback(rec, state):
                    break
            if val is None:
                state.best_z, state.best_step = state.z.copy(), state.step
            state.done = True
            save()
    finally:
        tuner._set_fitted(state)
    return state
