"""Many attributes from one API call: one perturbation per attribute (or one shared), fit together.

An attribute API returns every attribute per call: ``predict(images) -> (N, A)`` with
``P(attribute a)`` in column ``a`` (or 0/1 decisions with ``scores="labels"``).
``mode="shared"`` learns one delta for all attributes (the multilabel loss; every image
sent serves every attribute). ``mode="per_attribute"`` (as in the DFT paper) learns one
delta per attribute *in lockstep*: each step draws ONE minibatch, every attribute's
estimator proposes its candidates, and all of them go out in one ``predict`` call.
An image perturbed by attribute a's candidate is useful to attribute a only, so what
is shared, and counted in ``queries_saved_``, is: the clean baseline on validation, any
identical perturbed images (equal quantized deltas, e.g. attributes whose latent has
not moved), and in :meth:`evaluate` the clean "before" pass.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from blackbox_dft.core.checks import check_choice, check_int, show
from blackbox_dft.core.engine import best_latent, check_budget
from blackbox_dft.core.estimators import SPSA, Estimator
from blackbox_dft.core.images import apply_deltas, check_images
from blackbox_dft.core.metrics import classification_metrics
from blackbox_dft.core.model import QueryCounter
from blackbox_dft.core.objectives import Objective
from blackbox_dft.core.optimizers import Optimizer, Schedule, make_optimizer
from blackbox_dft.core.perturbation import LowResolution, Perturbation
from blackbox_dft.core.state import FitState, paid_images
from blackbox_dft.core.stopping import EarlyStopping
from blackbox_dft.tasks.attributes_problem import AttributeProblem, Sender
from blackbox_dft.tasks.base import Tuner, check_common_args, fingerprint
from blackbox_dft.tasks.classification import DataFineTuner

__all__ = ["MultiAttributeTuner", "MODES"]

MODES = ("per_attribute", "shared")


class MultiAttributeTuner(Tuner):
    """Fit per-attribute (or shared) perturbations for a multi-attribute model by queries.

    model: ``predict(uint8 (N, H, W, 3)) -> (N, A)`` (one column per attribute).
    attributes: names of the A columns (default ``attr0..``); mode: ``"per_attribute"``
    or ``"shared"``; scores: ``"probabilities"``, ``"logits"`` or ``"labels"``.
    query_budget: images sent during ``fit`` for ALL attributes together (validation
    included); early_stopping: per attribute, stops when no attribute improved for its
    patience. Other arguments as in :class:`~blackbox_dft.tasks.classification.DataFineTuner`.
    """

    def __init__(self, model: Any, attributes: list[str] | None = None, *,
                 mode: str = "per_attribute", epsilon: float = 8.0,
                 perturbation: Perturbation | None = None, estimator: Estimator | None = None,
                 optimizer: str | Optimizer = "adam", learning_rate: float | None = None,
                 batch_size: int = 32, query_budget: int = 10_000,
                 scores: str = "probabilities", validation_every: int = 10,
                 early_stopping: EarlyStopping | int | None = None,
                 seed: int | None = 0) -> None:
        self.model, self.attributes, self.mode = model, attributes, mode
        self.epsilon, self.perturbation, self.estimator = epsilon, perturbation, estimator
        self.optimizer, self.learning_rate = optimizer, learning_rate
        self.batch_size, self.query_budget, self.scores = batch_size, query_budget, scores
        self.validation_every, self.seed = validation_every, seed
        self.early_stopping = early_stopping

    _result_kind = "multiattr_result"
    _checkpoint_kind = "per_attribute_checkpoint"
    _saved_arrays = {"deltas": "deltas_", "latents": "latents_"}
    _saved_fields = {"attributes": "attributes_", "perturbation": "perturbation_",
                     "image_shape": "image_shape_", "queries": "queries_",
                     "queries_separate": "queries_separate_", "queries_saved": "queries_saved_",
                     "history": "history_", "best_step": "best_step_", "n_steps": "n_steps_"}
    _data_name = "images or labels"

    def _setup(self, labels: Any, n: int) -> np.ndarray:
        check_choice("mode", self.mode, MODES)
        check_common_args(self)
        self.objective_ = Objective("binary", self.scores)  # one attribute = one binary task
        self.objective_.check_model(self.model)
        y = Objective("multilabel").check_labels(labels, n)
        names = self.attributes or [f"attr{a}" for a in range(y.shape[1])]
        if isinstance(names, str) or not all(isinstance(a, str) for a in names):
            raise ValueError(f"attributes must be a list of names (str), got {show(names)}")
        if len(names) != y.shape[1]:
            raise ValueError(f"{len(names)} attribute names for {y.shape[1]} label columns")
        self.attributes_ = list(names)
        return y

    def _default_perturbation(self) -> Perturbation:
        return LowResolution((8, 8))

    def fit(self, images: np.ndarray, labels: Any,
            validation: tuple[np.ndarray, Any] | None = None, *,
            checkpoint: str | os.PathLike[str] | None = None, checkpoint_every: int = 10,
            resume: bool = False,
            callback: Callable[[dict[str, Any], FitState], Any] | None = None
            ) -> MultiAttributeTuner:
        """Learn ``deltas_ (A, H, W, 3)`` from images ``(N, H, W, 3)`` and labels ``(N, A)``.

        checkpoint / checkpoint_every / resume: as in :meth:`DataFineTuner.fit` (both modes):
        a ``.npz`` written atomically every ``checkpoint_every`` steps and on a failure, and
        continued with ``resume=True`` to the result of an uninterrupted fit. callback:
        ``callback(record, state)`` after every step, as in :meth:`DataFineTuner.fit` (a
        true return value stops the fit).
        """
        self._check_checkpoint_every(checkpoint_every)
        x = check_images(images)
        y = self._setup(labels, x.shape[0])
        val = None
        if validation is not None:
            if not isinstance(validation, tuple) or len(validation) != 2:
                raise TypeError("validation must be a tuple (images, labels)")
            xv = check_images(validation[0], "validation images")
            val = (xv, Objective("multilabel").check_labels(validation[1], xv.shape[0],
                                                            "validation labels"))
        n_attr = y.shape[1]
        if self.mode == "shared":
            return self._fit_shared(x, y, val, n_attr, checkpoint, checkpoint_every, resume,
                                    callback)
        eps = float(self.epsilon)
        pert = self.perturbation or self._default_perturbation()
        est = self.estimator or SPSA(directions=1, step=2.0)
        if est.per_image:
            raise ValueError(f"MultiAttributeTuner takes shared-direction estimators, got "
                             f"{est!r}; one direction per image is for DataFineTuner")
        counter = QueryCounter(self.model, int(self.query_budget))
        problem = AttributeProblem(counter, self.objective_, pert, est, x, y, val,
                                   self.attributes_, epsilon=eps,
                                   batch_size=int(self.batch_size))
        check_budget(problem, int(self.query_budget),
                     f"{n_attr} attributes x {est.candidates_per_step} candidates x "
                     f"{problem.batch} images")
        lr = self.learning_rate if self.learning_rate is not None else eps / 8.0
        opt = make_optimizer(self.optimizer, Schedule(float(lr)))
        self.perturbation_, self.image_shape_ = pert, problem.hw
        self._problem = problem
        self._fit_loop(problem, est, opt, counter, {"fingerprint": fingerprint(x, y)},
                       checkpoint, checkpoint_every, resume, callback)
        return self

    def _set_fitted(self, state: FitState, counter: QueryCounter) -> None:
        # a failed fit keeps what it reached, as DataFineTuner: queries_ included
        problem = self._problem
        if state.baseline is not None:
            self.baseline_ = state.baseline["per_attribute"]
        self.latents_ = best_latent(state).astype(np.float32)
        self.deltas_ = self.perturbation_.to_deltas(self.latents_, self.image_shape_,
                                                    float(self.epsilon))
        self.queries_ = paid_images(state)  # every image sent, failed steps' included
        # Separate fits per attribute would each have paid for their own steps and
        # validations (the baseline's too): what the lockstep calls shared.
        validations = sum(1 for r in state.history
                          if any(k.startswith("val_accuracy/") for k in r))
        validations += state.baseline is not None
        self.queries_separate_ = (state.step * problem.step_cost
                                  + validations * problem.validation_cost + state.lost_queries)
        self.queries_saved_ = self.queries_separate_ - self.queries_
        self.history_, self.n_steps_ = state.history, state.step
        best = state.extra.get("best_step")
        self.best_step_ = [int(b) for b in best] if isinstance(best, list) \
            else [0] * problem.slots

    def _restore(self, meta: dict[str, Any]) -> None:
        super()._restore(meta)
        self.objective_ = Objective("binary", self.scores)
        self.attributes_ = [str(a) for a in meta["attributes"]]
        self.queries_separate_ = int(meta["queries_separate"])
        self.queries_saved_ = int(meta["queries_saved"])
        self.best_step_ = [int(b) for b in meta["best_step"]]
        self.n_steps_ = int(meta["n_steps"])

    def _fit_shared(self, x: np.ndarray, y: np.ndarray,
                    val: tuple[np.ndarray, np.ndarray] | None, n_attr: int,
                    checkpoint: str | os.PathLike[str] | None, checkpoint_every: int,
                    resume: bool, callback: Callable[[dict[str, Any], FitState], Any] | None
                    ) -> MultiAttributeTuner:
        """One delta for all attributes: the multilabel task of :class:`DataFineTuner`."""
        tuner = DataFineTuner(
            self.model, "multilabel", epsilon=self.epsilon, perturbation=self.perturbation,
            estimator=self.estimator, optimizer=self.optimizer,
            # DataFineTuner's defaults before issue 16, spelled out: the shared fit was not
            # part of that default search
            learning_rate=(self.learning_rate if self.learning_rate is not None
                           else float(self.epsilon) / 16.0),
            lr_schedule="constant", sampling="uniform", batch_size=self.batch_size,
            query_budget=int(self.query_budget), scores=self.scores,
            validation_every=self.validation_every, early_stopping=self.early_stopping,
            seed=self.seed, progress=False)
        try:
            tuner.fit(x, y, validation=val, checkpoint=checkpoint,
                      checkpoint_every=checkpoint_every, resume=resume, callback=callback)
        finally:  # a failed fit keeps what it reached (DataFineTuner sets it even then)
            if hasattr(tuner, "delta_"):
                self._take_shared(tuner, n_attr)
        return self

    def _take_shared(self, tuner: DataFineTuner, n_attr: int) -> None:
        self.tuner_ = tuner
        self.perturbation_, self.image_shape_ = tuner.perturbation_, tuner.image_shape_
        self.latents_ = np.repeat(tuner.latent_[None], n_attr, axis=0)
        self.deltas_ = np.repeat(tuner.delta_[None], n_attr, axis=0)
        self.queries_ = tuner.queries_
        # A separate run per attribute with the same budget each would have sent A times this.
        self.queries_separate_ = n_attr * tuner.queries_
        self.queries_saved_ = self.queries_separate_ - self.queries_
        self.history_, self.n_steps_ = tuner.history_, tuner.n_steps_
        self.best_step_ = [tuner.best_step_] * n_attr
        self.stopped_early_ = tuner.stopped_early_
        self.queries_saved_by_stopping_ = tuner.queries_saved_by_stopping_

    def transform(self, images: np.ndarray, attribute: int | str) -> np.ndarray:
        """Images ``(N, H, W, 3)`` perturbed by one attribute's delta (by index or name)."""
        self._check_fitted()
        if isinstance(attribute, str):
            a = self.attributes_.index(check_choice("attribute", attribute, self.attributes_))
        else:
            a = check_int("attribute", attribute, 0)
            if a >= len(self.attributes_):
                raise ValueError(f"attribute must be an index 0..{len(self.attributes_) - 1} "
                                 f"or a name, got {a}")
        x = check_images(images)
        d = self.perturbation_.to_delta(self.latents_[a], x.shape[1:3], float(self.epsilon))
        return apply_deltas(x, d[None])

    def evaluate(self, images: np.ndarray, labels: Any) -> dict[str, Any]:
        """Per-attribute accuracy and balanced accuracy before / after on labelled images.

        Sends the clean images once (shared by every attribute) and, per distinct delta,
        the perturbed images: ``(1 + distinct deltas) x N`` queries instead of ``2 A N``.
        """
        self._check_fitted()
        x = check_images(images)
        y = Objective("multilabel").check_labels(labels, x.shape[0])
        eps = float(self.epsilon)
        deltas = self.perturbation_.to_deltas(self.latents_, x.shape[1:3], eps)
        sender = Sender(QueryCounter(self.model))
        s = sender.scores(x, np.concatenate([np.zeros_like(deltas[:1]), deltas]))
        per = {}
        for a, name in enumerate(self.attributes_):
            row = {}
            for tag, raw in (("before", s[0][:, a]), ("after", s[a + 1][:, a])):
                pred = self.objective_.predict_labels(raw)
                m = classification_metrics(y[:, a], pred, "binary", 2)
                row[f"accuracy_{tag}"] = m["accuracy"]
                row[f"balanced_accuracy_{tag}"] = m["balanced_accuracy"]
            per[name] = row
        n_attr = len(self.attributes_)
        return {"per_attribute": per, "mode": self.mode,
                "accuracy_before": float(np.mean([r["accuracy_before"] for r in per.values()])),
                "accuracy_after": float(np.mean([r["accuracy_after"] for r in per.values()])),
                "queries": sender.counter.queries, "queries_separate": 2 * n_attr * x.shape[0],
                "n_images": int(x.shape[0])}
