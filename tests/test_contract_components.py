"""Every estimator and optimizer the library ships, through the public conformance checks
(``blackbox_dft.testing.check_estimator`` / ``check_optimizer``), from one registry; and
broken components that the checks must catch."""

from __future__ import annotations

import numpy as np
import pytest

from blackbox_dft import NES, SGD, SPSA, Adam, PerImage, RandomDirections, Schedule, SignSGD
from blackbox_dft.core.estimators import Proposal
from blackbox_dft.testing import check_estimator, check_optimizer

ESTIMATORS = [
    SPSA(directions=1, step=0.5), SPSA(directions=4, step=0.5), NES(directions=1, step=0.5),
    NES(directions=3, step=0.5), RandomDirections(directions=1, step=0.5),
    RandomDirections(directions=5, step=0.5), SPSA(directions=2, step=0.5, step_decay=0.1),
    PerImage(SPSA(directions=1, step=0.5)), PerImage(NES(directions=2, step=0.5)),
    PerImage(RandomDirections(directions=2, step=0.5)),
]
OPTIMIZERS = [
    SGD(0.1), SGD(0.1, momentum=0.9), SGD(0.1, momentum=0.9, nesterov=True), Adam(0.1),
    SignSGD(0.05), SignSGD(0.05, momentum=0.5), Adam(Schedule(0.2, kind="cosine", total=200)),
    SGD(Schedule(0.1, kind="inverse_sqrt")),
]


@pytest.mark.parametrize("est", ESTIMATORS, ids=repr)
def test_estimator_contract(est):
    check_estimator(est)


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=repr)
def test_optimizer_contract(opt):
    check_optimizer(opt)


class Biased(SPSA):
    """Adds a constant to every estimate: its mean no longer points along the gradient."""

    def tell(self, proposal, losses):
        g, loss = super().tell(proposal, losses)
        return g + 5.0, loss


class TwoCalls(SPSA):
    """Scores its candidates in two calls instead of one."""

    def estimate(self, f, z, rng, t=0, batch=None):
        p = self.ask(z, rng, t, batch)
        half = p.candidates.shape[0] // 2
        losses = np.concatenate([f(p.candidates[:half]), f(p.candidates[half:])])
        g, loss = self.tell(p, losses)
        return g, loss, p.candidates.shape[0]


class Unseeded(SPSA):
    """Draws its directions from a generator of its own: not reproducible from the seed."""

    def ask(self, z, rng, t=0, batch=None):
        return super().ask(z, np.random.default_rng(), t, batch)


class WrongLayout(SPSA):
    """Claims to be per image but proposes shared candidates."""

    per_image = True


class LooseTell(SPSA):
    """Accepts losses of any shape."""

    def tell(self, proposal: Proposal, losses):
        losses = np.resize(np.asarray(losses, dtype=float), proposal.loss_shape)
        return self._combine(losses, proposal.directions, proposal.step)[0].reshape(
            proposal.shape), float(losses.mean())


@pytest.mark.parametrize("est, check", [
    (Biased(step=0.5), "unbiased"), (TwoCalls(step=0.5), "cost"),
    (Unseeded(step=0.5), "seeded"), (WrongLayout(step=0.5), "ask"),
    (LooseTell(step=0.5), "tell"),
], ids=lambda v: v if isinstance(v, str) else type(v).__name__)
def test_check_estimator_catches(est, check):
    with pytest.raises(AssertionError, match=f"check_estimator\\(.*\\): {check}:"):
        check_estimator(est, draws=300)


class Ascends(SGD):
    def _update(self, grad, state, lr, t):
        step, new = super()._update(grad, state, lr, t)
        return -step, new


class Mutates(Adam):
    def _update(self, grad, state, lr, t):
        state["mu"] += 1.0  # changes the caller's state in place
        return super()._update(grad, state, lr, t)


class Forgets(SGD):
    """Keeps its momentum on the object instead of in the state: a resume loses it."""

    def _update(self, grad, state, lr, t):
        self._v = 0.9 * getattr(self, "_v", 0.0) + grad
        return lr * self._v, {"velocity": state["velocity"]}


class NanFriendly(SGD):
    def update(self, grad, state):
        grad = np.nan_to_num(np.asarray(grad, dtype=float))
        return super().update(grad, state)


@pytest.mark.parametrize("opt, check", [
    (Ascends(0.1), "descends"), (Mutates(0.1), "pure update"), (Forgets(0.02), "resume"),
    (NanFriendly(0.1), "finite"),
], ids=lambda v: v if isinstance(v, str) else type(v).__name__)
def test_check_optimizer_catches(opt, check):
    with pytest.raises(AssertionError, match=f"check_optimizer\\(.*\\): {check}:"):
        check_optimizer(opt)
