"""Face verification as a problem on the engine: candidates scored by a pair loss.

One step draws a minibatch of pairs, asks the estimator for candidate latents and scores the
pairs under every candidate's delta (applied to BOTH images of a pair) in one call: each
distinct image once per candidate for an embedding model, both images of every pair for a
pair model (``compare``). The loss is ``"dprime"`` (minus the separation of same and
different similarities) or ``"margin"`` (softplus of the signed distance to the threshold in
force: the fixed one, or the one chosen at the last validation). Validation picks the
accuracy-maximising threshold (``threshold=None``) and scores accuracy and loss.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from blackbox_dft.core.engine import Validation
from blackbox_dft.core.estimators import Estimator
from blackbox_dft.core.images import apply_deltas
from blackbox_dft.core.model import QueryCounter, model_name
from blackbox_dft.core.perturbation import Perturbation
from blackbox_dft.core.state import FitState
from blackbox_dft.tasks.verification_metrics import (
    best_threshold,
    check_embedding,
    cosine_similarities,
    verification_metrics,
)

__all__ = ["PairScorer", "VerificationProblem"]


class PairScorer:
    """Similarities of pairs under deltas, and the pair losses, for one model."""

    def __init__(self, counter: QueryCounter, pairwise: bool, loss: str,
                 sharpness: float) -> None:
        self.counter, self.pairwise, self.loss_name = counter, pairwise, loss
        self.sharpness = float(sharpness)

    def cost(self, pairs: np.ndarray) -> int:
        """Images one evaluation of ``pairs`` sends: each distinct image once (embeddings)
        or both images of every pair (pair model)."""
        return 2 * len(pairs) if self.pairwise else int(np.unique(pairs[:, :2]).size)

    def sims(self, x: np.ndarray, pairs: np.ndarray, deltas: np.ndarray) -> np.ndarray:
        """Similarities ``(M, P)`` of pairs over images ``x`` under each delta ``(M, H, W, 3)``."""
        if self.pairwise:
            a, b = x[pairs[:, 0]], x[pairs[:, 1]]
            return np.stack([self.counter.compare(apply_deltas(a, d[None]),
                                                  apply_deltas(b, d[None])) for d in deltas])
        used, inv = np.unique(pairs[:, :2], return_inverse=True)
        local = inv.reshape(-1, 2)
        emb = self.counter.predict(apply_deltas(x[used], deltas))
        check_embedding(emb, model_name(self.counter.model))
        emb = emb.reshape(deltas.shape[0], used.size, -1)
        return np.stack([cosine_similarities(e, local) for e in emb])

    def loss(self, sims: np.ndarray, same: np.ndarray, t: float) -> np.ndarray:
        """Loss per candidate: sims ``(..., P)``, same ``(P,)``, threshold t -> ``(...)``."""
        if self.loss_name == "dprime":
            pos, neg = sims[..., same == 1], sims[..., same == 0]
            if pos.shape[-1] == 0 or neg.shape[-1] == 0:
                # d' needs both kinds of pair; a minibatch drawn with one kind only gives
                # no gradient (0 for every candidate) instead of NaN.
                return np.zeros(sims.shape[:-1])
            spread = np.sqrt((pos.var(axis=-1) + neg.var(axis=-1)) / 2.0 + 1e-6)
            return -(pos.mean(axis=-1) - neg.mean(axis=-1)) / spread
        sign = np.where(same == 1, 1.0, -1.0)
        return np.logaddexp(0.0, self.sharpness * (t - sims) * sign).mean(axis=-1) \
            / self.sharpness


class VerificationProblem:
    """Pairs ``p (P, 3)`` over images ``x``; ``val`` an optional ``(images, pairs)``;
    ``threshold`` fixed, or None (chosen on validation); ``far`` for the TAR metric."""

    slots = 1

    def __init__(self, scorer: PairScorer, pert: Perturbation, estimator: Estimator,
                 x: np.ndarray, p: np.ndarray, val: tuple[np.ndarray, np.ndarray] | None, *,
                 epsilon: float, batch_size: int, threshold: float | None,
                 far: float) -> None:
        self.scorer, self.pert, self.x, self.p, self.val = scorer, pert, x, p, val
        self.eps, self.far = float(epsilon), float(far)
        self.threshold = threshold
        self.fixed_t = float(threshold) if threshold is not None else 0.0
        self.hw = (int(x.shape[1]), int(x.shape[2]))
        self.batch = min(int(batch_size), p.shape[0])
        self.latent_shape: tuple[int, ...] = tuple(pert.latent_shape(self.hw))
        # an upper bound: a minibatch of b pairs shows at most 2 b distinct images
        self.step_cost = estimator.candidates_per_step * (
            2 * self.batch if scorer.pairwise else min(2 * self.batch, x.shape[0]))
        self.validation_cost = 0 if val is None else scorer.cost(val[1])

    def threshold_in_force(self, state: FitState) -> float:
        """The threshold of the last validation (the baseline's before any), else the fixed one."""
        for r in reversed(state.history):
            if "val_accuracy" in r:
                return float(r["threshold"])
        return float(state.baseline["threshold"]) if state.baseline else self.fixed_t

    def gradient(self, z: np.ndarray, estimator: Estimator, rng: np.random.Generator,
                 t: int, state: FitState) -> tuple[np.ndarray, dict[str, Any]]:
        threshold = self.threshold_in_force(state)
        pb = self.p[rng.choice(self.p.shape[0], size=self.batch, replace=False)]
        proposal = estimator.ask(z, rng, t, batch=self.batch)
        s = self.scorer.sims(self.x, pb, self.pert.to_deltas(proposal.candidates, self.hw,
                                                               self.eps))
        g, loss = estimator.tell(proposal, self.scorer.loss(s, pb[:, 2], threshold))
        return g, {"loss": loss, "threshold": threshold}

    def project(self, z: np.ndarray) -> np.ndarray:
        return self.pert.project(z, self.eps)

    def validate(self, z: np.ndarray, state: FitState) -> Validation:
        assert self.val is not None
        xv, pv = self.val
        s = self.scorer.sims(xv, pv, self.pert.to_delta(z, self.hw, self.eps)[None])[0]
        t = best_threshold(s, pv[:, 2]) if self.threshold is None else self.fixed_t
        m = verification_metrics(s, pv[:, 2], t, self.far)
        loss = float(self.scorer.loss(s, pv[:, 2], t))
        rec = {"val_accuracy": m["accuracy"], "val_loss": loss, "threshold": t}
        return Validation([[m["accuracy"], -loss]], rec,
                          {"queries": self.scorer.counter.queries, **rec})
