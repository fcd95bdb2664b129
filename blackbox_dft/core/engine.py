"""The one fit loop: budget, resume, steps, validation, best tracking, checkpoints.

Every tuner is a thin :class:`Problem` on this engine: the problem says how to turn a
latent into a gradient estimate on a minibatch (drawing the minibatch, asking the estimator
for candidates, scoring them with queries, telling it the losses) and how to validate a
latent; the engine owns everything else:

* the budget: a fit needs ``problem.step_cost`` (+ ``2 x validation_cost`` with a
  validation split: the baseline and the step's validation) or :func:`check_budget` raises
  naming the minimum; a step runs only while the counter affords a step and a validation;
* the state (:class:`~blackbox_dft.core.state.FitState`): a step's changes are committed
  at once after the whole step succeeded, so a checkpoint always holds a consistent state,
  and a resumed fit gives the result of an uninterrupted one;
* validation every ``validation_every`` steps (None: :func:`resolve_validation_every`'s
  cadence, validations about a tenth of the queries) and on the last affordable step, the best
  latent per *slot* (one slot, or one per leading index of the latent when the problem
  fits several independent perturbations in lockstep, e.g. one per attribute);
* early stopping (:class:`~blackbox_dft.core.stopping.EarlyStopping`, off unless given):
  after a validation, stop once ``patience`` queries passed without an improvement in any
  slot; ``extra["stopped_early"]`` / ``extra["queries_saved"]`` say so and what it saved;
* lost-query bookkeeping on failure (:func:`~blackbox_dft.core.state.keep_on_failure`),
  checkpoints, the progress bar and the callback.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from blackbox_dft.core.estimators import Estimator
from blackbox_dft.core.model import QueryCounter
from blackbox_dft.core.optimizers import Optimizer
from blackbox_dft.core.state import FitState, commit_queries, keep_on_failure
from blackbox_dft.core.stopping import EarlyStopping

__all__ = ["Problem", "Validation", "FitLoop", "check_budget", "minimum_budget",
           "resolve_validation_every", "VALIDATION_RATIO"]

Key = list[float]
log = logging.getLogger(__name__)


@dataclass
class Validation:
    """A problem's validation of one latent.

    keys: one comparable score per slot (higher is better; lists compare in order, e.g.
    ``[accuracy, -loss]``). record: fields for the step's history record. baseline: what
    the fit keeps as its baseline when this is the validation of the starting latent.
    """

    keys: list[Key]
    record: dict[str, Any]
    baseline: dict[str, Any] = field(default_factory=dict)


class Problem(Protocol):
    """What a task tells the engine. Queries go through the problem's own
    :class:`~blackbox_dft.core.model.QueryCounter` (the one given to :class:`FitLoop`).

    latent_shape: shape of the latent being fitted (``(slots, *one latent)`` when
    ``slots > 1``). slots: perturbations fitted in lockstep, each with its own best.
    step_cost / validation_cost: upper bounds on the images one step / one validation
    sends (``validation_cost`` is 0 without a validation split).
    """

    latent_shape: tuple[int, ...]
    slots: int
    step_cost: int
    validation_cost: int

    def gradient(self, z: np.ndarray, estimator: Estimator, rng: np.random.Generator,
                 t: int, state: FitState) -> tuple[np.ndarray, dict[str, Any]]:
        """Gradient estimate like ``z`` at step ``t`` and the step's record fields."""
        ...

    def project(self, z: np.ndarray) -> np.ndarray:
        """``z`` moved into the feasible set (the perturbation's bound)."""
        ...

    def validate(self, z: np.ndarray, state: FitState) -> Validation:
        """Score latent ``z`` on the validation split (costs queries)."""
        ...


def minimum_budget(problem: Problem) -> int:
    """The smallest budget that affords one step: the baseline validation, one step and its
    validation (images; upper bounds)."""
    return problem.step_cost + 2 * problem.validation_cost


#: ``validation_every=None`` validates once the steps since the last validation have sent this
#: many times the validation's own images: validations are then about 1 / (1 + ratio) of the
#: queries whatever the batch and validation sizes (a fixed 10 steps of a batch of 8 beside 40
#: validation images spent 20% of the budget on validation; benchmarks/results/default_search.md)
VALIDATION_RATIO = 10


def resolve_validation_every(value: int | None, problem: Problem) -> int:
    """Steps between validations: ``value``, or with None ``ceil(VALIDATION_RATIO x
    validation_cost / step_cost)`` (1 without a validation split: never used then)."""
    if value is not None:
        return int(value)
    if problem.validation_cost <= 0:
        return 1
    return max(1, math.ceil(VALIDATION_RATIO * problem.validation_cost / problem.step_cost))


def check_budget(problem: Problem, budget: int, what: str) -> None:
    """ValueError, before any query, when ``budget`` cannot pay for one step (``what``
    names the step's cost in the message)."""
    minimum = minimum_budget(problem)
    if budget < minimum:
        val = problem.validation_cost
        raise ValueError(
            f"query_budget={budget} is smaller than one step: {what}"
            + (f" + 2 x {val} validation images" if val else "")
            + f" = {minimum} queries; give query_budget >= {minimum}")


@dataclass
class FitLoop:
    """Run (or continue) a fit of ``problem``: see the module docstring.

    checkpoint: ``.npz`` path written every ``checkpoint_every`` steps, at the end and on
    failure (None: no file). meta: the checkpoint's metadata (parameters, data fingerprint).
    callback: ``callback(record, state)`` after every step; a true value stops the fit.
    early_stopping: stop after its patience in queries without a validation improvement
    (None: spend the budget); needs a validation split (ValueError, before any query).
    """

    problem: Problem
    estimator: Estimator
    optimizer: Optimizer
    counter: QueryCounter
    seed: int | None
    validation_every: int
    checkpoint: str | os.PathLike[str] | None = None
    checkpoint_every: int = 10
    meta: dict[str, Any] = field(default_factory=dict)
    bar: tqdm | None = None
    callback: Callable[[dict[str, Any], FitState], Any] | None = None
    early_stopping: EarlyStopping | None = None

    def __post_init__(self) -> None:
        if self.early_stopping is not None and self.problem.validation_cost == 0:
            raise ValueError("early_stopping needs validation data (it watches the validation "
                             "score): pass validation=(images, labels) to fit, or set "
                             "early_stopping=None")

    def new_state(self) -> FitState:
        """The state before the first step: zero latent, fresh optimizer, seeded generator."""
        rng = np.random.default_rng(self.seed)
        z0 = np.zeros(self.problem.latent_shape, dtype=np.float64)
        return FitState(z=z0, opt_state=self.optimizer.init(z0),
                        rng_state=dict(rng.bit_generator.state))

    def run(self, state: FitState | None = None) -> FitState:
        """Fit from ``state`` (None: a new fit) until the budget or the callback stops it."""
        state = self.new_state() if state is None else state
        rng = np.random.default_rng()
        rng.bit_generator.state = state.rng_state
        p = self.problem
        validating = p.validation_cost > 0
        self._show(state, None)
        self._log_start(state)

        def save() -> None:
            if self.checkpoint is not None:
                state.save(self.checkpoint, self.meta)
                log.debug("checkpoint written: %s (step %d, %d queries)", self.checkpoint,
                          state.step, state.queries)

        try:
            self._loop(state, rng, validating, save)
        except BaseException as exc:
            log.info("fit stopped at step %d by %s after %d queries (checkpoint file: %s)",
                     state.step, type(exc).__name__, self.counter.queries, self.checkpoint)
            raise
        log.info("fit finished: %d steps, %d queries of a budget of %s; best at step %s",
                 state.step, self.counter.queries, self.counter.budget,
                 state.extra.get("best_step", state.best_step))
        return state

    def _log_start(self, state: FitState) -> None:
        p, budget = self.problem, self.counter.budget
        if state.step or state.queries:
            log.info("fit resumed at step %d: %d queries of a budget of %s used",
                     state.step, state.queries, budget)
        else:
            log.info("fit started: budget %s queries; a step costs %d, a validation %d",
                     budget, p.step_cost, p.validation_cost)

    def _loop(self, state: FitState, rng: np.random.Generator, validating: bool,
              save: Callable[[], None]) -> None:
        """The steps, from the baseline validation to the final checkpoint."""
        p = self.problem
        with keep_on_failure(state, self.counter, save):
            if validating and state.baseline is None:
                v = p.validate(state.z, state)
                state.baseline = v.baseline
                _set_best(state, p.slots, state.z, v.keys, None)
                if self.early_stopping is not None:
                    self.early_stopping.update(state.extra, v.keys, self.counter.queries)
                commit_queries(state, self.counter)
            while not state.done and not state.extra.get("stopped_early") \
                    and self.counter.affords(p.step_cost + p.validation_cost):
                record = self._step(state, rng, validating)
                self._show(state, record)
                if state.step % self.checkpoint_every == 0:
                    save()
                if self.callback is not None and self.callback(record, state):
                    break
            if not validating:
                _set_best(state, p.slots, state.z, None, state.step)
            state.done = True
            save()

    def _step(self, state: FitState, rng: np.random.Generator,
              validating: bool) -> dict[str, Any]:
        p, t = self.problem, state.step
        # A problem may note what a step's answers taught it in ``state.extra`` (e.g. the
        # minibatch sampler's per-image errors) by replacing entries, never by mutating them:
        # a step that fails is undone from this copy, so its replay draws what it drew.
        extra = dict(state.extra)
        try:
            g, fields = p.gradient(state.z, self.estimator, rng, t, state)
            step, opt_state = self.optimizer.update(g, state.opt_state)
            z = p.project(state.z - step)
            record: dict[str, Any] = {"step": t + 1, **fields}
            last = self.counter.remaining < 2 * p.step_cost + p.validation_cost
            best = None
            if validating and ((t + 1) % self.validation_every == 0 or last):
                v = p.validate(z, state)
                record.update(v.record)
                best = v.keys
        except BaseException:
            state.extra.clear()
            state.extra.update(extra)
            raise
        record["queries"] = self.counter.queries
        # Commit the whole step at once.
        if best is not None:
            _set_best(state, p.slots, z, best, t + 1)
            self._check_stop(state, best, record)
        state.z, state.opt_state, state.step = z, opt_state, t + 1
        commit_queries(state, self.counter)
        state.rng_state = dict(rng.bit_generator.state)
        state.history.append(record)
        return record

    def _check_stop(self, state: FitState, keys: list[Key], record: dict[str, Any]) -> None:
        """Let the early-stopping rule see a validation; mark the state (and the record)
        when it stops the fit, with the queries the stop saves."""
        es = self.early_stopping
        if es is None or not es.update(state.extra, keys, self.counter.queries):
            return
        saved = max(0, int(self.counter.budget or 0) - self.counter.queries)
        state.extra["stopped_early"], state.extra["queries_saved"] = True, saved
        record["stopped_early"] = True
        log.info("early stopping at step %d: no validation improvement in %d queries; "
                 "%d queries of the budget saved", int(record['step']), es.patience, saved)

    def _show(self, state: FitState, record: dict[str, Any] | None) -> None:
        if self.bar is None:
            return
        self.bar.update(self.counter.queries - self.bar.n)
        if record is not None:
            post = {k: f"{v:.4f}" for k, v in record.items() if k == "loss"}
            if "val_accuracy" in record:
                post["val_acc"] = f"{record['val_accuracy']:.3f}"
            self.bar.set_postfix(post, refresh=False)


def _set_best(state: FitState, slots: int, z: np.ndarray, keys: list[Key] | None,
              step: int | None) -> None:
    """Keep ``z`` (or its slots) as the best where its key beats the best so far.

    keys None: take ``z`` unconditionally (the end of a fit without validation). step None:
    the baseline (the keys become the first best, at step 0).
    """
    if slots == 1:
        if keys is None:
            state.best_z, state.best_step = z.copy(), int(step or 0)
        elif step is None:
            state.best_z, state.best_score = z.copy(), list(keys[0])
        elif keys[0] > (state.best_score or [-np.inf]):
            state.best_z, state.best_score, state.best_step = z.copy(), list(keys[0]), step
        return
    ex = state.extra
    if keys is None:
        state.best_z, ex["best_step"] = z.copy(), [int(step or 0)] * slots
        return
    if step is None:
        state.best_z = z.copy()
        ex["best_key"], ex["best_step"] = [list(k) for k in keys], [0] * slots
        return
    best_z = z.copy() if state.best_z is None else state.best_z.copy()
    best_key, best_step = list(ex["best_key"]), list(ex["best_step"])
    for a, key in enumerate(keys):
        if key > best_key[a]:
            best_z[a], best_key[a], best_step[a] = z[a].copy(), list(key), step
    state.best_z = best_z
    ex["best_key"], ex["best_step"] = best_key, best_step


def best_latent(state: FitState) -> np.ndarray:
    """The best latent of a fit (its current latent when nothing was kept yet)."""
    return state.z if state.best_z is None else state.best_z
