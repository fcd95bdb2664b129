"""Per-attribute fits as one problem on the engine: A perturbations in lockstep, one call a step.

The latent is ``(A, *one latent)``: one perturbation per attribute, each with its own best
(``slots = A``). A step draws ONE minibatch; every attribute's estimator proposes its
candidates (shared directions), all of them go out in one ``predict`` call, and attribute
``a``'s candidates are scored on column ``a`` of the answers only. Equal quantized deltas
(e.g. attributes whose latent has not moved) are sent once (:class:`Sender`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from blackbox_dft.core.engine import Validation
from blackbox_dft.core.estimators import Estimator
from blackbox_dft.core.images import apply_deltas
from blackbox_dft.core.model import QueryCounter
from blackbox_dft.core.objectives import Objective
from blackbox_dft.core.perturbation import Perturbation
from blackbox_dft.core.state import FitState

__all__ = ["Sender", "AttributeProblem"]


class Sender:
    """Send (delta, images) jobs in one call, deduplicating equal quantized deltas."""

    def __init__(self, counter: QueryCounter) -> None:
        self.counter = counter

    def scores(self, x: np.ndarray, deltas: np.ndarray) -> np.ndarray:
        """Scores ``(M, n, A)`` of images ``x (n, H, W, 3)`` under deltas ``(M, H, W, 3)``."""
        q = np.rint(deltas).astype(np.int16)
        _, first, inv = np.unique(q.reshape(q.shape[0], -1), axis=0, return_index=True,
                                  return_inverse=True)
        raw = self.counter.predict(apply_deltas(x, deltas[first]))
        return raw.reshape(first.size, x.shape[0], -1)[inv.ravel()]


class AttributeProblem:
    """Images ``x (N, H, W, 3)`` with 0/1 labels ``y (N, A)`` named ``attributes``; ``val`` an
    optional ``(images, labels)``; ``objective`` the binary objective of one attribute."""

    def __init__(self, counter: QueryCounter, objective: Objective, pert: Perturbation,
                 estimator: Estimator, x: np.ndarray, y: np.ndarray,
                 val: tuple[np.ndarray, np.ndarray] | None, attributes: list[str], *,
                 epsilon: float, batch_size: int) -> None:
        self.sender, self.objective, self.pert = Sender(counter), objective, pert
        self.x, self.y, self.val, self.attributes = x, y, val, attributes
        self.eps = float(epsilon)
        self.hw = (int(x.shape[1]), int(x.shape[2]))
        self.batch = min(int(batch_size), x.shape[0])
        self.slots = int(y.shape[1])
        self.latent_shape: tuple[int, ...] = (self.slots, *pert.latent_shape(self.hw))
        self.step_cost = self.slots * estimator.candidates_per_step * self.batch
        self.validation_cost = 0 if val is None else self.slots * int(val[0].shape[0])

    def gradient(self, z: np.ndarray, estimator: Estimator, rng: np.random.Generator,
                 t: int, state: FitState) -> tuple[np.ndarray, dict[str, Any]]:
        n, b = self.x.shape[0], self.batch
        idx = rng.choice(n, size=b, replace=False) if b < n else np.arange(n)
        proposals = [estimator.ask(z[a], rng, t) for a in range(self.slots)]
        cands = np.stack([pr.candidates for pr in proposals])  # (A, M, *latent)
        m = cands.shape[1]
        s = self.sender.scores(self.x[idx], self.pert.to_deltas(
            cands.reshape(-1, *z.shape[1:]), self.hw, self.eps))
        g = np.empty_like(z)
        fields: dict[str, Any] = {}
        for a, proposal in enumerate(proposals):
            raw_a = s[a * m:(a + 1) * m, :, a].reshape(-1)
            losses = self.objective.loss(raw_a, np.tile(self.y[idx, a], m)).reshape(m, b)
            g[a], fields[f"loss/{self.attributes[a]}"] = estimator.tell(proposal,
                                                                        losses.mean(1))
        return g, fields

    def project(self, z: np.ndarray) -> np.ndarray:
        return self.pert.project(z, self.eps)

    def validate(self, z: np.ndarray, state: FitState) -> Validation:
        """Accuracy and loss of each attribute's latent on its column."""
        assert self.val is not None
        xv, yv = self.val
        s = self.sender.scores(xv, self.pert.to_deltas(z, self.hw, self.eps))
        per, keys, rec = [], [], {}
        for a, name in enumerate(self.attributes):
            pred = self.objective.predict_labels(s[a][:, a])
            acc = float(np.mean(pred == yv[:, a]))
            loss = float(self.objective.loss(s[a][:, a], yv[:, a]).mean())
            per.append({"val_accuracy": acc, "val_loss": loss})
            keys.append([acc, -loss])
            rec[f"val_accuracy/{name}"] = acc
        return Validation(keys, rec, {"per_attribute": per})
