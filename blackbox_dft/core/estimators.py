"""Zeroth-order gradient estimators: gradients of a loss from loss differences only.

Every estimator has the ask/tell shape (as nevergrad's ``ask``/``tell`` and optax's
``init``/``update``)::

    proposal = estimator.ask(z, rng, t, batch=B)     # candidates to score
    losses = score(proposal.candidates)                # the caller's queries
    gradient, loss = estimator.tell(proposal, losses)  # like z; mean loss

or, in one call, ``gradient, loss, candidates = estimator.estimate(f, z, rng, t, batch=B)``.

Two kinds, told apart by ``proposal.per_image`` (and ``estimator.per_image``):

* shared directions (:class:`SPSA`, :class:`NES`, :class:`RandomDirections`): candidates
  ``(M, *z.shape)``, each scored on the whole minibatch; ``tell`` takes the mean losses
  ``(M,)`` (or per-image losses ``(M, B)``, averaged over the images first).
* one direction per image (:class:`PerImage` around one of those): candidates
  ``(M, B, *z.shape)``, candidate ``m`` for image ``b`` applied to image ``b`` only;
  ``tell`` takes per-image losses ``(M, B)``. The queries are the same (``M x B``
  images) but the estimate averages ``q x B`` directions instead of ``q``: each image's loss
  difference is its own probe of the shared perturbation's gradient.

All candidates of a step are scored in ONE call, so one ``predict`` call carries
``M x B`` images, all on the same minibatch (common random numbers). ``M`` is
``candidates_per_step``. Steps are in the latent's units (grey levels); ``t`` is the step
index, used by a decaying finite-difference step ``step / (1 + t) ** step_decay``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from blackbox_dft.core.checks import check_choice, check_int, check_number, show

__all__ = ["Estimator", "Proposal", "SPSA", "NES", "RandomDirections", "PerImage",
           "estimator_from_config"]

LossFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Proposal:
    """What :meth:`Estimator.ask` proposes: candidates to score and what ``tell`` needs.

    candidates: latents ``(M, *z.shape)``, or ``(M, B, *z.shape)`` when ``per_image``.
    directions: the random directions they were made from; step: the finite-difference
    step ``c`` (grey levels); shape: ``z.shape``.
    """

    candidates: np.ndarray
    directions: np.ndarray
    step: float
    shape: tuple[int, ...]
    per_image: bool = False

    @property
    def loss_shape(self) -> tuple[int, ...]:
        """The shape ``tell`` expects: ``(M,)``, or ``(M, B)`` when ``per_image``."""
        return self.candidates.shape[:2] if self.per_image else self.candidates.shape[:1]


class Estimator:
    """Base class of the shared-direction kind: owns argument checks, ``ask`` and ``tell``;
    subclasses draw directions (``_directions``) and may change how candidates are made
    from them and combined (``_candidates``, ``_combine``)."""

    per_image = False

    def __init__(self, directions: int = 1, step: float = 2.0, step_decay: float = 0.0) -> None:
        self.directions = check_int("directions", directions, 1)
        self.step = check_number("step", step, 0.0, low_open=True, unit=" (grey levels)")
        self.step_decay = check_number("step_decay", step_decay, 0.0)

    @property
    def candidates_per_step(self) -> int:
        """Candidates (loss evaluations on the minibatch) one step costs: ``M``."""
        raise NotImplementedError

    def step_at(self, t: int) -> float:
        """Finite-difference step at iteration ``t`` (grey levels)."""
        return self.step / (1.0 + t) ** self.step_decay

    def ask(self, z: np.ndarray, rng: np.random.Generator, t: int = 0,
            batch: int | None = None) -> Proposal:
        """Candidates ``(M, *z.shape)`` around latent ``z`` (directions drawn from ``rng``).

        batch: images in the minibatch; a shared-direction estimator does not use it.
        """
        return self._ask(z, rng, t, ())

    def _ask(self, z: np.ndarray, rng: np.random.Generator, t: int,
             lead: tuple[int, ...]) -> Proposal:
        z = np.asarray(z, dtype=np.float64)
        c = self.step_at(t)
        u = self._directions(lead, z.shape, rng)  # (q, *lead, *z.shape)
        return Proposal(self._candidates(z, u, c), u, c, z.shape, bool(lead))

    def tell(self, proposal: Proposal, losses: Any) -> tuple[np.ndarray, float]:
        """The gradient estimate (shaped like ``z``) and the mean loss, from the losses of
        ``proposal.candidates``: ``(M,)``, or per image ``(M, B)`` (averaged over images)."""
        losses = np.asarray(losses, dtype=np.float64)
        m = proposal.candidates.shape[0]
        if losses.ndim == 2 and not proposal.per_image and losses.shape[0] == m:
            losses = losses.mean(axis=1)
        if losses.shape != proposal.loss_shape:
            raise ValueError(f"the loss function returned shape {losses.shape} for candidates "
                             f"{proposal.loss_shape}")
        g, loss = self._combine(losses, proposal.directions, proposal.step)
        return g.reshape(proposal.shape), float(loss)

    def estimate(self, f: LossFn, z: np.ndarray, rng: np.random.Generator,
                 t: int = 0, batch: int | None = None) -> tuple[np.ndarray, float, int]:
        """``ask``, score with ``f``, ``tell``: ``(gradient like z, loss, candidates)``.

        f: candidates (``proposal.candidates``) -> losses (``proposal.loss_shape``).
        """
        proposal = self.ask(z, rng, t, batch)
        g, loss = self.tell(proposal, f(proposal.candidates))
        return g, loss, int(proposal.candidates.shape[0])

    def _directions(self, lead: tuple[int, ...], shape: tuple[int, ...],
                    rng: np.random.Generator) -> np.ndarray:
        """Directions ``(q, *lead, *shape)``: ``lead`` is ``(batch,)`` for one per image."""
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
        """JSON-able description, inverse of :func:`estimator_from_config`."""
        return {"type": type(self).__name__, "directions": self.directions,
                "step": self.step, "step_decay": self.step_decay}

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


class PerImage(Estimator):
    """One direction per image: ``base``'s directions drawn for every image of the minibatch.

    ``ask(z, rng, t, batch=B)`` returns candidates ``(M, B, *z.shape)`` (candidate ``m`` for
    image ``b``) and ``tell`` takes per-image losses ``(M, B)``; the cost is ``M x B`` images
    as for ``base``, and the estimate averages ``q x B`` directions instead of ``q``.
    """

    per_image = True

    def __init__(self, base: Estimator | None = None) -> None:  # noqa: D107 - see class
        if base is None:
            base = SPSA()
        if not isinstance(base, Estimator) or isinstance(base, PerImage):
            raise ValueError(f"PerImage base must be SPSA, NES or RandomDirections, got "
                             f"{show(base)}")
        self.base = base

    @property
    def directions(self) -> int:  # type: ignore[override]
        return self.base.directions

    @property
    def step(self) -> float:  # type: ignore[override]
        return self.base.step

    @property
    def step_decay(self) -> float:  # type: ignore[override]
        return self.base.step_decay

    @property
    def candidates_per_step(self) -> int:
        return self.base.candidates_per_step

    def step_at(self, t: int) -> float:
        return self.base.step_at(t)

    def ask(self, z: np.ndarray, rng: np.random.Generator, t: int = 0,
            batch: int | None = None) -> Proposal:
        """Candidates ``(M, batch, *z.shape)``: one set of directions per image."""
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
            raise ValueError(f"a PerImage estimator needs batch >= 1 (images in the "
                             f"minibatch), got {batch!r}")
        return self._ask(z, rng, t, (int(batch),))

    def _directions(self, lead: tuple[int, ...], shape: tuple[int, ...],
                    rng: np.random.Generator) -> np.ndarray:
        return self.base._directions(lead, shape, rng)

    def _candidates(self, z: np.ndarray, u: np.ndarray, c: float) -> np.ndarray:
        return self.base._candidates(z, u, c)

    def _combine(self, losses: np.ndarray, u: np.ndarray, c: float) -> tuple[np.ndarray, float]:
        return self.base._combine(losses, u, c)

    def get_config(self) -> dict[str, Any]:
        return {"type": "PerImage", "base": self.base.get_config()}

    def __repr__(self) -> str:
        return f"PerImage({self.base!r})"


ESTIMATORS: dict[str, type[Estimator]] = {
    "SPSA": SPSA, "NES": NES, "RandomDirections": RandomDirections, "PerImage": PerImage,
}


def estimator_from_config(config: dict[str, Any]) -> Estimator:
    """Rebuild an estimator from :meth:`Estimator.get_config` output.

    Configs written before ``PerImage`` existed (``"per_image": true`` on SPSA, NES or
    RandomDirections) load as ``PerImage`` around that estimator.
    """
    if not isinstance(config, dict):
        raise ValueError(f"an estimator config must be a dict, got {show(config)}")
    config = dict(config)
    kind = check_choice("estimator type", config.pop("type", None), sorted(ESTIMATORS))
    if kind == "PerImage":
        unknown = sorted(set(config) - {"base"})
        if unknown:
            raise ValueError(f"estimator config has unknown keys {unknown}")
        return PerImage(estimator_from_config(config.get("base", {"type": "SPSA"})))
    unknown = sorted(set(config) - {"directions", "step", "step_decay", "per_image"})
    if unknown:
        raise ValueError(f"estimator config has unknown keys {unknown}")
    per_image = config.pop("per_image", False)
    if not isinstance(per_image, bool):
        raise ValueError(f"estimator config per_image must be true or false, got "
                         f"{show(per_image)}")
    est = ESTIMATORS[kind](**config)
    return PerImage(est) if per_image else est
