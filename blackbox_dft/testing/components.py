"""Conformance checks for gradient estimators and optimizers (your own, or the library's).

``check_estimator(est)`` and ``check_optimizer(opt)`` run every property the fit engine relies
on and raise ``AssertionError`` with one line naming the component, the check and what was
wrong. They use no test framework; a project's test suite calls them over a registry (see
``tests/test_contract_components.py``).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np

from blackbox_dft.core.estimators import Estimator, Proposal, estimator_from_config
from blackbox_dft.core.optimizers import Optimizer, optimizer_from_config

OPTIMIZER_TYPES = ("SGD", "Adam", "SignSGD")

__all__ = ["check_estimator", "check_optimizer", "Smooth"]

SHAPE = (4, 4, 3)
BATCH = 6


class Smooth:
    """A loss with a known gradient: ``sum(a (z - c)^2) / 2 + sum(b sin z)`` over ``SHAPE``.

    Called with candidates ``(M, *SHAPE)`` it returns ``(M,)``; with per-image candidates
    ``(M, B, *SHAPE)`` it returns ``(M, B)`` where image ``b`` has its own ``c`` (``seed + b``).
    """

    def __init__(self, seed: int = 0, images: int = BATCH) -> None:
        r = np.random.default_rng(seed)
        self.a = r.uniform(0.5, 2.0, SHAPE)
        self.b = r.normal(scale=0.3, size=SHAPE)
        self.c = r.normal(size=(images, *SHAPE))
        self.calls = 0
        self.candidates = 0

    def _loss(self, zs: np.ndarray, c: np.ndarray) -> np.ndarray:
        d = zs - c
        return 0.5 * (self.a * d * d).sum(axis=(-3, -2, -1)) + (np.sin(zs) * self.b).sum(
            axis=(-3, -2, -1))

    def __call__(self, zs: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.candidates += zs.shape[0]
        if zs.ndim == 5:  # per image: candidate m for image b
            return self._loss(zs, self.c[None, :zs.shape[1]])
        return self._loss(zs, self.c[0])

    def grad(self, z: np.ndarray, per_image: bool) -> np.ndarray:
        """True gradient at ``z`` of the loss the estimator sees (the batch mean per image)."""
        c = self.c.mean(axis=0) if per_image else self.c[0]
        return self.a * (z - c) + self.b * np.cos(z)


def _fail(who: str, check: str, what: str) -> AssertionError:
    return AssertionError(f"check_estimator({who}): {check}: {what}")


def _estimate(est: Estimator, f: Any, z: np.ndarray, rng: np.random.Generator,
              t: int = 0) -> tuple[np.ndarray, float, int]:
    return est.estimate(f, z, rng, t, batch=BATCH)


def check_estimator(est: Estimator, *, draws: int = 1500, cosine: float = 0.95) -> None:
    """Run every estimator check on ``est``; ``draws`` estimates are averaged for the
    unbiasedness check (their mean must point along the true gradient: cosine >= ``cosine``,
    norm within 0.8-1.25 of it)."""
    who = repr(est)
    if "\n" in who or type(est).__name__ not in who:
        raise _fail(who, "repr", "must be one line naming the class")
    m = est.candidates_per_step
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise _fail(who, "candidates_per_step", f"must be an int >= 1, got {m!r}")
    z = np.random.default_rng(1).normal(size=SHAPE)
    # the same generator state gives the same estimate; another gives another
    a = _estimate(est, Smooth(0), z, np.random.default_rng(7))
    b = _estimate(est, Smooth(0), z, np.random.default_rng(7))
    c = _estimate(est, Smooth(0), z, np.random.default_rng(8))
    if not np.array_equal(a[0], b[0]) or np.array_equal(a[0], c[0]):
        raise _fail(who, "seeded", "equal seeds must give equal estimates, others differ")
    # ask / tell: candidate layout by kind, one call per step, declared cost
    prop = est.ask(z, np.random.default_rng(0), 0, batch=BATCH)
    if not isinstance(prop, Proposal):
        raise _fail(who, "ask", f"must return a Proposal, got {type(prop).__name__}")
    want = (m, BATCH, *SHAPE) if est.per_image else (m, *SHAPE)
    if prop.candidates.shape != want or prop.per_image != est.per_image:
        raise _fail(who, "ask", f"candidates {prop.candidates.shape} (per_image="
                    f"{prop.per_image}), expected {want} (per_image={est.per_image})")
    f = Smooth(0)
    g, loss = est.tell(prop, f(prop.candidates))
    g2, loss2, q = est.estimate(Smooth(0), z, np.random.default_rng(0), 0, batch=BATCH)
    if not (np.array_equal(g, g2) and loss == loss2 and q == m):
        raise _fail(who, "estimate", "is not ask + loss + tell with the same generator")
    if g.shape != SHAPE or not np.all(np.isfinite(g)) or not np.isfinite(loss):
        raise _fail(who, "tell", f"gradient shape {g.shape} or non-finite values")
    try:
        est.tell(prop, np.zeros(m + 1))
    except ValueError:
        pass
    else:
        raise _fail(who, "tell", "accepted losses of the wrong shape")
    _check_unbiased(est, who, z, draws, cosine)
    back = estimator_from_config(json.loads(json.dumps(est.get_config())))
    if back.get_config() != est.get_config() or type(back) is not type(est):
        raise _fail(who, "config", "does not round-trip through JSON")


def _check_unbiased(est: Estimator, who: str, z: np.ndarray, draws: int,
                    cosine: float) -> None:
    f = Smooth(0)
    rng = np.random.default_rng(2)
    gs = np.stack([_estimate(est, f, z, rng)[0] for _ in range(draws)])
    if f.calls != draws or f.candidates != draws * est.candidates_per_step:
        raise _fail(who, "cost", f"{f.calls} calls / {f.candidates} candidates for {draws} "
                    f"steps of {est.candidates_per_step}: one call per step expected")
    mean, true = gs.mean(axis=0).ravel(), f.grad(z, est.per_image).ravel()
    cos = float(mean @ true / (np.linalg.norm(mean) * np.linalg.norm(true)))
    ratio = float(np.linalg.norm(mean) / np.linalg.norm(true))
    if cos < cosine or not 0.8 <= ratio <= 1.25:
        raise _fail(who, "unbiased", f"mean of {draws} estimates has cosine {cos:.3f} with the "
                    f"true gradient (>= {cosine}) and norm ratio {ratio:.3f} (0.8-1.25)")


def _fail_opt(who: str, check: str, what: str) -> AssertionError:
    return AssertionError(f"check_optimizer({who}): {check}: {what}")


def check_optimizer(opt: Optimizer, *, steps: int = 300) -> None:
    """Run every optimizer check on ``opt``: it minimises a quadratic in ``steps`` steps, its
    state is explicit and survives JSON + arrays (a resumed run is bit-identical), ``update``
    leaves its input state alone, and a NaN gradient is refused."""
    who = repr(opt)
    if "\n" in who or type(opt).__name__ not in who:
        raise _fail_opt(who, "repr", "must be one line naming the class")
    a = np.linspace(0.5, 2.0, 12).reshape(2, 2, 3)
    c = np.linspace(-1, 1, 12).reshape(2, 2, 3)

    def run(o: Optimizer, x: np.ndarray, state: dict[str, Any],
            n: int) -> tuple[np.ndarray, dict[str, Any]]:
        for _ in range(n):
            step, state = o.update(a * (x - c), state)
            x = x - step
        return x, state

    x0 = np.zeros_like(c)
    state = opt.init(x0)
    before = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in state.items()}
    opt.update(a * (x0 - c), state)
    if any(not np.array_equal(state[k], v) for k, v in before.items()):
        raise _fail_opt(who, "pure update", "update modified its input state")
    x, _ = run(opt, x0, opt.init(x0), steps)
    if np.abs(x - c).max() >= 0.1 * np.abs(x0 - c).max():
        raise _fail_opt(who, "descends", f"after {steps} steps on a quadratic the error is "
                        f"{np.abs(x - c).max():.3g} (start {np.abs(x0 - c).max():.3g})")
    full, _ = run(copy.deepcopy(opt), x0, opt.init(x0), 40)
    half, state = run(copy.deepcopy(opt), x0, opt.init(x0), 20)
    counters = json.loads(json.dumps({k: v for k, v in state.items()
                                      if not isinstance(v, np.ndarray)}))
    arrays = {k: v.copy() for k, v in state.items() if isinstance(v, np.ndarray)}
    resumed, _ = run(copy.deepcopy(opt), half, {**arrays, **counters}, 20)
    if not np.array_equal(full, resumed):
        raise _fail_opt(who, "resume", "a state saved as JSON + arrays does not resume exactly")
    if type(opt).__name__ in OPTIMIZER_TYPES:  # the library's own: rebuilt from its config
        again = optimizer_from_config(json.loads(json.dumps(opt.get_config())))
        if type(again) is not type(opt) or again.get_config() != opt.get_config():
            raise _fail_opt(who, "config", "does not round-trip through JSON")
    g = np.zeros_like(c)
    g[0, 0, 0] = np.nan
    try:
        opt.update(g, opt.init(g))
    except ValueError:
        return
    raise _fail_opt(who, "finite", "a NaN gradient was accepted")
