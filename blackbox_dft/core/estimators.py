"""Zeroth-order gradient estimators: gradients of a loss from loss differences only.

Contract shared by every estimator::

    gradient, loss, queries = estimator.estimate(f, z, rng, t)

``f`` maps a stack of candidate latents ``(M, *z.shape)`` to their mean losses
``(M,)``; every estimator asks for all its candidates in ONE call so that one
``predict`` call can carry ``M x batch`` images, all scored on the same
minibatch (common random numbers). ``queries`` is the number of candidates
evaluated (``candidates_per_step``); the tuner multiplies by the batch size.
Steps are in the latent's units (grey levels); ``t`` is the step index, used by
a decaying finite-difference step ``step / (1 + t) ** step_decay``.

With ``per_image=True`` every image of the minibatch gets its own directions:
``estimate(f, z, rng, t, batch=B)`` hands ``f`` candidates ``(M, B, *z.shape)``
(candidate ``m`` for image ``b``) and ``f`` returns per-image losses ``(M, B)``. The
queries are the same (``M x B`` images), but the estimate averages ``q x B``
directions instead of ``q``: each image's loss difference is its own probe of the
shared perturbation's gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from blackbox_dft.core.checks import check_choice, check_int, check_number, show

__all__ = ["Estimator", "SPSA", "NES", "RandomDirections", "estimator_from_config"]

LossFn = Callable[[np.ndarray], np.ndarray]


class Estimator:
    """Base class: owns argument checks and the call to ``f``; subclasses draw directions."""

    def __init__(self, directions: int = 1, step: float = 2.0, step_decay: float = 0.0,
                 per_image: bool = False) -> None:
        self.directions = check_int("directions", directions, 1)
        self.step = check_number("step", step, 0.0, low_open=True, unit=" (grey levels)")
        self.step_decay = check_number("step_decay", step_decay, 0.0)
        if not isinstance(per_image, (bool, np.bool_)):
            raise ValueError(f"per_image must be True or False, got {show(per_image)}")
        self.per_image = bool(per_image)

    @property
    def candidates_per_step(self) -> int:
        """Candidates (loss evaluations on the minibatch) one call to ``estimate`` costs."""
        raise NotImplementedError

    def step_at(self, t: int) -> float:
        """Finite-difference step at iteration ``t`` (grey levels)."""
        return self.step / (1.0 + t) ** self.step_decay

    def estimate(self, f: LossFn, z: np.ndarray, rng: np.random.Generator,
                 t: int = 0, batch: int | None = None) -> tuple[np.ndarray, float, int]:
        """Estimate the gradient of ``f`` at ``z``: ``(gradient like z, loss, candidates)``.

        batch: images in the minibatch; needed (and used) only with ``per_image``.
        """
        z = np.asarray(z, dtype=np.float64)
        c = self.step_at(t)
        lead: tuple[int, ...] = ()
        if self.per_image:
            if not isinstance(batch, (int, np.integer)) or batch < 1:
                raise ValueError(f"per_image estimation needs batch >= 1, got {batch!r}")
            lead = (int(batch),)
        u = self._directions(lead, z.shape, rng)  # (q, *lead, *z.shape)
        cands = self._candidates(z, u, c)
        losses = np.asarray(f(cands), dtype=np.float64)
        if losses.shape != cands.shape[:1 + len(lead)]:
            raise ValueError(f"the loss function returned shape {losses.shape} for candidates "
                             f"{cands.shape[:1 + len(lead)]}")
        g, loss = self._combine(losses, u, c)
        return g.reshape(z.shape), float(loss), int(cands.shape[0])

    def _directions(self, lead: tuple[int, ...], shape: tuple[int, ...],
                    rng: np.random.Generator) -> np.ndarray:
        """Directions ``(q, *lead, *shape)``: ``lead`` is ``(batch,)`` with ``per_image``."""
        raise NotImplementedError

    def _candidates(self, z: np.ndarray, u: np.ndarray, c: float) -> np.ndarray:
        # Two-sided: [z + c u_1, ..., z + c u_q, z - c u_1, ..., z - c u_q]
        return np.concatenate([z + c * u, z - c * u])

    def _combine(self, losses: np.ndarray, u: np.ndarray, c: float) -> tuple[np.ndarray, float]:
        q = u.shape[0]
        diff = (losses[:q] - losses[q:]) / (2.0 * c)  # (q,) or (q, batch)
        g = np.tensordot(diff, u, axes=diff.ndim) / diff.size
        return g, float(losses.mean())

    def get_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"type": type(self).__name__, "directions": self.directions,
                               "step": self.step, "step_decay": self.step_decay}
        if self.per_image:
            cfg["per_image"] = True
        return cfg

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "type")
        return f"{type(self).__name__}({args})"


class SPSA(Estimator):
    """Simultaneous perturbation (Spall): two-sided differences along Rademacher directions.

    ``g = mean_i (f(z + c u_i) - f(z - c u_i)) / (2c) * u_i``, ``u_i`` in {-1, +1}^d.
    Unbiased up to O(c^2) because E[u u^T] = I. Cost: ``2 * directions`` candidates.
    """

    @property
    def candidates_per_step(self) -> int:
        return 2 * self.directions

    def _directions(self, lead: tuple[int, ...], shape: tuple[int, ...],
                    rng: np.random.Generator) -> np.ndarray:
        signs = rng.integers(0, 2, size=(self.directions, *lead, *shape), dtype=np.int8)
        return signs * 2.0 - 1.0


class NES(Estimator):
    """Natural evolution strategies with antithetic Gaussian directions.

    ``g = mean_i (f(z + c u_i) - f(z - c u_i)) / (2c) * u_i``, ``u_i ~ N(0, I)``
    (the Gaussian-smoothing gradient; E[u u^T] = I). Cost: ``2 * directions``.
    """

    @property
    def candidates_per_step(self) -> int:
        return 2 * self.directions

    def _directions(self, lead: tuple[int, ...], shape: tuple[int, ...],
                    rng: np.random.Generator) -> np.ndarray:
        return rng.standard_normal(size=(self.directions, *lead, *shape))


class RandomDirections(Estimator):
    """One-sided random directions plus the unperturbed point (BAR, ZO-AdaMM style).

    Directions are uniform on the sphere of radius ``sqrt(d)`` so that ``step`` is
    the per-coordinate RMS perturbation in grey levels (as for SPSA), and
    ``g = mean_i (f(z + c v_i) - f(z)) / c * v_i`` with E[v v^T] = I.
    Cost: ``directions + 1`` candidates; the loss reported is ``f(z)`` itself.
    """

    @property
    def candidates_per_step(self) -> int:
        return self.directions + 1

    def _directions(self, lead: tuple[int, ...], shape: tuple[int, ...],
                    rng: np.random.Generator) -> np.ndarray:
        v = rng.standard_normal(size=(self.directions, *lead, int(np.prod(shape))))
        v *= np.sqrt(v.shape[-1]) / np.linalg.norm(v, axis=-1, keepdims=True)
        return v.reshape(self.directions, *lead, *shape)

    def _candidates(self, z: np.ndarray, u: np.ndarray, c: float) -> np.ndarray:
        return np.concatenate([np.broadcast_to(z, u.shape[1:])[None], z + c * u])

    def _combine(self, losses: np.ndarray, u: np.ndarray, c: float) -> tuple[np.ndarray, float]:
        diff = (losses[1:] - losses[:1]) / c  # (q,) or (q, batch)
        return np.tensordot(diff, u, axes=diff.ndim) / diff.size, float(losses[0].mean())


ESTIMATORS: dict[str, type[Estimator]] = {
    "SPSA": SPSA, "NES": NES, "RandomDirections": RandomDirections,
}


def estimator_from_config(config: dict[str, Any]) -> Estimator:
    """Rebuild an estimator from :meth:`Estimator.get_config` output."""
    if not isinstance(config, dict):
        raise ValueError(f"an estimator config must be a dict, got {show(config)}")
    config = dict(config)
    kind = check_choice("estimator type", config.pop("type", None), sorted(ESTIMATORS))
    unknown = sorted(set(config) - {"directions", "step", "step_decay", "per_image"})
    if unknown:
        raise ValueError(f"estimator config has unknown keys {unknown}")
    return ESTIMATORS[kind](**config)
