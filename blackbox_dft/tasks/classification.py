"""DataFineTuner: learn one additive perturbation that makes a black-box model more accurate.

scikit-learn habits: ``__init__`` only stores arguments; ``fit`` returns ``self``
and sets fitted attributes with a trailing underscore (``delta_``, ``queries_``,
``history_``); ``transform`` applies the perturbation; one ``seed`` gives one
``numpy.random.Generator``, passed explicitly.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from blackbox_dft.core.checks import check_choice, check_int, check_number
from blackbox_dft.core.engine import best_latent, check_budget
from blackbox_dft.core.estimators import SPSA, Estimator, PerImage
from blackbox_dft.core.images import apply_delta, check_images, psnr
from blackbox_dft.core.metrics import classification_metrics, ssim
from blackbox_dft.core.model import QueryCounter
from blackbox_dft.core.objectives import Objective, check_class_weight
from blackbox_dft.core.optimizers import Optimizer, Schedule, make_optimizer
from blackbox_dft.core.perturbation import LowResolution, Perturbation
from blackbox_dft.core.sampling import SAMPLINGS
from blackbox_dft.core.state import FitState, paid_images
from blackbox_dft.core.stopping import EarlyStopping
from blackbox_dft.tasks.base import NotFittedError, Tuner, check_common_args, fingerprint
from blackbox_dft.tasks.classification_problem import ClassificationProblem

__all__ = ["DataFineTuner", "NotFittedError", "Recipe", "SCORE_RECIPE", "LABEL_RECIPE"]

SELECTIONS = ("accuracy", "balanced_accuracy", "loss")


@dataclass(frozen=True)
class Recipe:
    """The defaults of the settings left at None: images per minibatch, the learning rate as
    a fraction of epsilon, its schedule (``lr_scale``: the inverse-sqrt schedule's scale in
    steps), steps between validations (None: the engine's cadence, validations about a
    tenth of the queries) and how minibatches are drawn."""

    batch_size: int
    lr_fraction: float
    lr_schedule: str
    lr_scale: float
    validation_every: int | None
    sampling: str


#: The score path's defaults (issue 16): batch 8, Adam from epsilon / 8 decaying as
#: 1 / sqrt(1 + t / 30), validations about a tenth of the queries, minibatches drawn by each
#: image's last error. Chosen on the face task's selection seeds (0-24) at 1,000 and 3,000
#: queries, checked at 10,000 and 30,000 (benchmarks/results/default_search.md).
SCORE_RECIPE = Recipe(batch_size=8, lr_fraction=1 / 8, lr_schedule="inverse_sqrt",
                      lr_scale=30.0, validation_every=None, sampling="importance")
#: The label-only path's defaults (issue 16, point 3: chosen with these on seeds 0-9;
#: benchmarks/results/label_only.md): the score path's defaults before issue 16.
LABEL_RECIPE = Recipe(batch_size=16, lr_fraction=1 / 16, lr_schedule="constant",
                      lr_scale=10.0, validation_every=10, sampling="uniform")


class DataFineTuner(Tuner):
    """Fit one shared perturbation ``delta`` (``|delta| <= epsilon`` grey levels) by queries.

    model: any object with ``predict(uint8 (N, H, W, 3) RGB) -> scores (N, K)``.
    task: ``"multiclass"``, ``"binary"`` or ``"multilabel"`` (see :class:`Objective`).
    epsilon: L-inf budget in grey levels (0-255 scale).
    perturbation: :class:`LowResolution` (default 16x16x3 latent, nearest-neighbour
        upsampling; 8x8x3 with ``scores="labels"``) or :class:`FullResolution`.
    estimator: zeroth-order gradient estimator (default ``PerImage(SPSA(directions=1,
        step=2.0))``: every image of the minibatch gets its own random direction; with
        ``scores="labels"`` ``PerImage(SPSA(directions=4, step=4.0))``).
    optimizer: ``"adam"`` (default), ``"sgd"``, ``"momentum"``, ``"nesterov"``,
        ``"sign_sgd"`` or an :class:`Optimizer`; learning_rate in grey levels per step
        (default ``epsilon / 8``; ``epsilon / 16`` with ``scores="labels"``), a float or a
        :class:`Schedule`; lr_schedule: the kind of schedule built from a float learning
        rate (``"constant"``, ``"cosine"``, ``"inverse_sqrt"``...; default
        ``"inverse_sqrt"``, ``lr / sqrt(1 + step / 30)``; ``"constant"`` with labels).
    batch_size: images per minibatch; each step sends ``candidates x batch_size`` images
        (default 8; 16 with ``scores="labels"``). Every setting left at None takes its value
        from :data:`SCORE_RECIPE` or :data:`LABEL_RECIPE`; ``settings_`` holds what a fit
        used.
    query_budget: hard cap on images sent during ``fit`` (validation included).
    class_weight: ``None``, ``"balanced"`` or ``{class: weight}`` for the loss.
    selection: validation metric that picks the best delta (``"accuracy"``,
        ``"balanced_accuracy"`` or ``"loss"``; with ``scores="labels"`` a tie goes to the
        later step); validation_every: steps between checks, or ``"auto"``: once the steps
        since the last check sent 10x the validation's images (validations about a tenth of
        the queries); default ``"auto"`` (10 with ``scores="labels"``).
    energy_penalty: weight ``lam`` of ``lam / 2 * |z|^2`` (latent in grey levels) added to
        the loss; its gradient ``lam * z`` is exact and costs no queries. It pulls latent
        coordinates whose estimated gradient is mostly noise back towards 0: a smaller
        perturbation (higher PSNR) at some cost in accuracy (measured on the face task:
        ``benchmarks/results/standin_tasks_energy.md``).
    canary_size: the first ``canary_size`` validation images (0: none) are kept with the
        model's answers to them, unperturbed and perturbed, as the result's canary set
        (``canary_images_``, ``canary_labels_``, ``canary_clean_``, ``canary_perturbed_``;
        saved with it): :func:`~blackbox_dft.tasks.guard.check_delta` re-queries them to tell
        whether the model changed and the delta still helps. Free: validation sends them.
    sampling: how a step draws its minibatch: ``"uniform"`` or ``"importance"`` (images drawn
        in proportion to their error at their last step, from answers already paid for,
        losses weighted back to an unbiased mean; see :mod:`blackbox_dft.core.sampling`);
        default ``"importance"`` (``"uniform"`` with ``scores="labels"``).
    early_stopping: ``None`` (default: spend the budget), an int patience in queries or an
        :class:`~blackbox_dft.core.stopping.EarlyStopping`: stop once that many queries
        (validation included) brought no validation improvement; needs ``validation``.
        ``stopped_early_`` and ``queries_saved_by_stopping_`` report what it did.
    """

    def __init__(self, model: Any, task: str = "multiclass", *, epsilon: float = 8.0,
                 perturbation: Perturbation | None = None, estimator: Estimator | None = None,
                 optimizer: str | Optimizer = "adam",
                 learning_rate: float | Schedule | None = None, lr_schedule: str | None = None,
                 batch_size: int | None = None, query_budget: int = 10_000,
                 scores: str = "probabilities", label_map: list[int | None] | None = None,
                 class_weight: Any = None, selection: str = "accuracy",
                 validation_every: int | str | None = None, energy_penalty: float = 0.0,
                 canary_size: int = 32, early_stopping: EarlyStopping | int | None = None,
                 sampling: str | None = None, seed: int | None = 0,
                 progress: bool = True) -> None:
        self.model = model
        self.task = task
        self.epsilon = epsilon
        self.perturbation = perturbation
        self.estimator = estimator
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.lr_schedule = lr_schedule
        self.batch_size = batch_size
        self.query_budget = query_budget
        self.scores = scores
        self.label_map = label_map
        self.class_weight = class_weight
        self.selection = selection
        self.validation_every = validation_every
        self.energy_penalty = energy_penalty
        self.canary_size = canary_size
        self.early_stopping = early_stopping
        self.sampling = sampling
        self.seed = seed
        self.progress = progress

    _saved_arrays = {"delta": "delta_", "latent": "latent_"}
    _saved_fields = {"image_shape": "image_shape_", "perturbation": "perturbation_",
                     "queries": "queries_", "history": "history_", "baseline": "baseline_",
                     "best_step": "best_step_", "n_steps": "n_steps_"}
    _optional_arrays = {"canary_images": "canary_images_", "canary_labels": "canary_labels_",
                        "canary_clean": "canary_clean_", "canary_perturbed": "canary_perturbed_"}

    # -- configuration ------------------------------------------------------------------------
    def _default_perturbation(self) -> Perturbation:
        # 16x16 nearest: each latent cell moves whole pixels by the full finite-difference
        # step, which survives the uint8 rounding (bilinear upsampling blends the +-step of
        # neighbouring cells towards 0, and the rounding erases it); chosen against 8x8 /
        # 16x16 / 32x32 bilinear and full resolution (benchmarks/results/query_efficiency.md).
        if self.scores == "labels":
            # 0-1 decisions: 192 latent values, not 768. Face task, 30,000 label queries,
            # selection seeds: held-out gain +0.27 at 8x8, +0.19 at 16x16, +0.20 at 4x4
            # (the label-only search in benchmarks/results/label_only.md).
            return LowResolution((8, 8), interpolation="nearest")
        return LowResolution((16, 16), interpolation="nearest")

    def _components(self) -> tuple[Objective, Perturbation, Estimator]:
        check_common_args(self)
        check_number("energy_penalty", self.energy_penalty, 0.0)
        check_int("canary_size", self.canary_size, 0)
        check_choice("selection", self.selection, SELECTIONS)
        if self.lr_schedule is not None:
            check_choice("lr_schedule", self.lr_schedule, Schedule.KINDS)
        if self.sampling is not None:
            check_choice("sampling", self.sampling, SAMPLINGS)
        objective = Objective(self.task, self.scores, self.label_map)
        check_class_weight(self.class_weight, objective.task)
        return (objective, self.perturbation or self._default_perturbation(),
                self.estimator or self._default_estimator())

    def _default_estimator(self) -> Estimator:
        if self.scores == "labels":
            # A decision flips only near its boundary: step 4 flips more of them than 2, and
            # 4 directions per image pay 128 queries a step at batch 16, as 1 direction at
            # batch 64 does, with the same gain (benchmarks/results/label_only.md).
            return PerImage(SPSA(directions=4, step=4.0))
        # One direction per image, batch 16: the same queries per step average 16 directions
        # instead of one (benchmarks/results/default_search.md).
        return PerImage(SPSA(directions=1, step=2.0))

    def recipe(self) -> Recipe:
        """The defaults for this tuner's score kind: :data:`LABEL_RECIPE` with
        ``scores="labels"``, else :data:`SCORE_RECIPE`."""
        return LABEL_RECIPE if self.scores == "labels" else SCORE_RECIPE

    def _settings(self) -> dict[str, Any]:
        """The settings a fit uses: each one given, or the recipe's."""
        r = self.recipe()
        every = r.validation_every if self.validation_every is None else self.validation_every
        return {"batch_size": r.batch_size if self.batch_size is None else self.batch_size,
                "lr_schedule": r.lr_schedule if self.lr_schedule is None else self.lr_schedule,
                "validation_every": None if every == "auto" else every,
                "sampling": r.sampling if self.sampling is None else self.sampling}

    def _validation_every(self) -> int | None:
        return self._settings()["validation_every"]

    def _make_optimizer(self, total_steps: int) -> Optimizer:
        # The score path: epsilon / 8 decaying as 1 / sqrt(1 + t / 30) (issue 16: at 1,000 and
        # 3,000 queries the constant epsilon / 16 of before moved too slowly;
        # benchmarks/results/default_search.md). Labels: epsilon / 16, constant.
        r = self.recipe()
        lr = self.learning_rate if self.learning_rate is not None \
            else float(self.epsilon) * r.lr_fraction
        if not isinstance(lr, Schedule):
            lr = Schedule(float(lr), kind=self._settings()["lr_schedule"], total=total_steps,
                          scale=r.lr_scale)
        return make_optimizer(self.optimizer, lr)

    # -- fitting ------------------------------------------------------------------------------
    def fit(self, images: np.ndarray, labels: Any,
            validation: tuple[np.ndarray, Any] | None = None, *,
            checkpoint: str | os.PathLike[str] | None = None, checkpoint_every: int = 10,
            resume: bool = False,
            callback: Callable[[dict[str, Any], FitState], Any] | None = None) -> DataFineTuner:
        """Learn ``delta_`` from labelled images using at most ``query_budget`` queries.

        images: uint8 ``(N, H, W, 3)`` RGB; labels: see the task. validation: optional
        ``(images, labels)`` used to keep the best delta (its queries count).
        checkpoint: a ``.npz`` path written atomically every ``checkpoint_every`` steps,
        on interrupt and on a model error; with ``resume=True`` an existing checkpoint
        is continued (same seed and data give the same result as an uninterrupted fit).
        callback: called as ``callback(record, state)`` after every step with the history
        record and the :class:`FitState` (read-only by convention); a true return value
        stops the fit cleanly (early stopping).
        """
        objective, pert, est = self._components()
        objective.check_model(self.model)
        x = check_images(images, "images")
        y = objective.check_labels(labels, x.shape[0], "labels")
        val = None
        if validation is not None:
            if not isinstance(validation, tuple) or len(validation) != 2:
                raise TypeError("validation must be a tuple (images, labels)")
            xv = check_images(validation[0], "validation images")
            if xv.shape[1:] != x.shape[1:]:
                raise ValueError(
                    f"validation images have shape {xv.shape[1:]} but training images have "
                    f"{x.shape[1:]}; resize them to one size"
                )
            val = (xv, objective.check_labels(validation[1], xv.shape[0], "validation labels"))
        known = objective.known_outputs()
        declared = getattr(self.model, "n_outputs", None)
        if known is None and self.label_map is None and isinstance(declared, int) \
                and not isinstance(declared, bool):
            known = declared  # the model says how many scores it returns
        if known is not None:  # labels it cannot score are refused before any query
            objective.check_against(known, y)
            if val is not None:
                objective.check_against(known, val[1])
        self._check_checkpoint_every(checkpoint_every)
        settings = self._settings()
        b = min(int(settings["batch_size"]), x.shape[0])
        step_cost = est.candidates_per_step * b
        val_cost = 0 if val is None else val[0].shape[0]
        total_steps = max(1, (int(self.query_budget) - val_cost) // step_cost)
        optimizer = self._make_optimizer(total_steps)
        every = settings["validation_every"]
        self.settings_ = {**settings, "batch_size": b, "validation_every": every or "auto",
                          "learning_rate": float(optimizer.learning_rate(0)),
                          "estimator": repr(est), "perturbation": repr(pert)}
        counter = QueryCounter(self.model, int(self.query_budget))
        problem = ClassificationProblem(
            counter, objective, pert, est, optimizer, x, y, val, epsilon=float(self.epsilon),
            batch_size=b, task=self.task, class_weight=self.class_weight,
            selection=self.selection, energy_penalty=float(self.energy_penalty),
            canary=int(self.canary_size), sampling=settings["sampling"])
        check_budget(problem, int(self.query_budget),
                     f"{est.candidates_per_step} candidates x {b} images")
        self.fingerprint_ = fingerprint(x, y)
        self.image_shape_ = problem.image_shape
        self.objective_, self.perturbation_, self.estimator_ = objective, pert, est
        self._canary_rows = None if val is None else (val[0][:problem.canary],
                                                      val[1][:problem.canary])
        self._fit_loop(problem, est, optimizer, counter,
                       {"fingerprint": self.fingerprint_, "image_shape": list(self.image_shape_)},
                       checkpoint, checkpoint_every, resume, callback, bool(self.progress))
        return self

    def _set_fitted(self, state: FitState, counter: QueryCounter) -> None:
        self.latent_ = np.asarray(best_latent(state), dtype=np.float32)
        self.delta_ = self.perturbation_.to_delta(self.latent_, self.image_shape_,
                                                  float(self.epsilon))
        # Every image sent to the model, those of failed or interrupted steps included.
        self.queries_ = paid_images(state)
        self.history_ = list(state.history)
        self.baseline_ = state.baseline
        self.best_step_ = int(state.best_step)
        self.n_steps_ = int(state.step)
        self._set_canary(state)

    def _set_canary(self, state: FitState) -> None:
        """The canary set from the fit's validations (no query of its own): the first
        validation images, their labels, and the model's answers to them unperturbed (the
        baseline) and perturbed by the kept delta (the best step's validation)."""
        for attr in self._optional_arrays.values():
            self.__dict__.pop(attr, None)
        rows = state.extra.get("canary") or {}
        clean, kept = rows.get("0"), rows.get(str(self.best_step_))
        canary = getattr(self, "_canary_rows", None)
        if canary is None or clean is None or kept is None or not len(canary[0]):
            return
        self.canary_images_ = np.ascontiguousarray(canary[0])
        self.canary_labels_ = np.asarray(canary[1])
        self.canary_clean_ = np.asarray(clean, dtype=np.float32)
        self.canary_perturbed_ = np.asarray(kept, dtype=np.float32)

    def _restore(self, meta: dict[str, Any]) -> None:
        super()._restore(meta)
        self.objective_ = Objective(self.task, self.scores, self.label_map)
        self.best_step_ = int(meta["best_step"])
        self.n_steps_ = int(meta["n_steps"])

    # -- using the result ---------------------------------------------------------------------
    def delta_for(self, height: int, width: int) -> np.ndarray:
        """The perturbation for images of ``(height, width)``: float32 ``(H, W, 3)``."""
        self._check_fitted()
        return self.perturbation_.to_delta(self.latent_, (height, width), float(self.epsilon))

    def transform(self, images: np.ndarray) -> np.ndarray:
        """Perturbed copies ``uint8 clip(round(images + delta))`` of ``(N, H, W, 3)`` images."""
        self._check_fitted()
        x = check_images(images)
        return apply_delta(x, self.delta_for(x.shape[1], x.shape[2]))

    def evaluate(self, images: np.ndarray, labels: Any) -> dict[str, Any]:
        """Metrics before and after the perturbation on labelled images (costs 2N queries).

        Returns accuracy, balanced accuracy and per-class recall (per attribute for
        multilabel) ``_before`` / ``_after``, PSNR and SSIM of the perturbed images
        (dB, unitless), and the queries this evaluation spent.
        Labels the model cannot score (a class index beyond its outputs, another number of
        attributes) raise ValueError after at most N queries: the clean images are sent
        first and the labels checked against their answers before the perturbed images
        go (no query at all when the classes are known: binary, or a label_map).
        """
        self._check_fitted()
        x = check_images(images)
        obj = self.objective_
        y = obj.check_labels(labels, x.shape[0])
        known = obj.known_outputs()
        if known is not None:
            obj.check_against(known, y)
        xp = self.transform(x)
        counter = QueryCounter(self.model)
        answers = {"before": counter.predict(x)}
        obj.check_against(obj.n_outputs(answers["before"]), y)
        answers["after"] = counter.predict(xp)
        out: dict[str, Any] = {}
        for tag, raw in answers.items():
            m = classification_metrics(y, obj.predict_labels(raw), self.task,
                                       self._n_classes(raw, y))
            m["loss"] = float(obj.loss(raw, y).mean())
            out.update({f"{k}_{tag}": v for k, v in m.items()})
        out["psnr"] = psnr(x, xp)
        out["ssim"] = ssim(x, xp)
        out["max_abs_delta"] = float(np.abs(self.delta_).max())
        out["queries"] = counter.queries
        out["n_images"] = int(x.shape[0])
        return out

    def _n_classes(self, raw: np.ndarray, y: np.ndarray) -> int | None:
        if self.task == "multilabel":
            return None
        return max(self.objective_.n_outputs(raw), int(y.max()) + 1)
