"""DataFineTuner: learn one additive perturbation that makes a black-box model more accurate.

scikit-learn habits: ``__init__`` only stores arguments; ``fit`` returns ``self``
and sets fitted attributes with a trailing underscore (``delta_``, ``queries_``,
``history_``); ``transform`` applies the perturbation; one ``seed`` gives one
``numpy.random.Generator``, passed explicitly.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from blackbox_dft._version import __version__
from blackbox_dft.core.checks import (
    check_choice,
    check_instance,
    check_int,
    check_number,
    check_seed,
    show,
)
from blackbox_dft.core.estimators import ESTIMATORS, SPSA, Estimator, estimator_from_config
from blackbox_dft.core.images import apply_delta, check_images, psnr
from blackbox_dft.core.metrics import classification_metrics, ssim
from blackbox_dft.core.model import QueryCounter, model_name
from blackbox_dft.core.objectives import Objective, check_class_weight
from blackbox_dft.core.optimizers import (
    Optimizer,
    Schedule,
    check_optimizer_name,
    make_optimizer,
    optimizer_from_config,
)
from blackbox_dft.core.perturbation import LowResolution, Perturbation, perturbation_from_config
from blackbox_dft.core.state import (
    FitState,
    load_resumable,
    paid_images,
    read_result,
    resume_queries,
    write_npz_json,
)

__all__ = ["DataFineTuner", "NotFittedError"]

SELECTIONS = ("accuracy", "balanced_accuracy", "loss")


def decode_params(params: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``get_params`` output with its component configs (perturbation, estimator,
    optimizer, learning-rate schedule) turned back into objects; ``None`` stays ``None``."""
    p = dict(params)
    if p.get("perturbation") is not None:
        p["perturbation"] = perturbation_from_config(p["perturbation"])
    if p.get("estimator") is not None:
        p["estimator"] = estimator_from_config(p["estimator"])
    if isinstance(p.get("optimizer"), dict):
        p["optimizer"] = optimizer_from_config(p["optimizer"])
    if isinstance(p.get("learning_rate"), dict):
        p["learning_rate"] = Schedule(**p["learning_rate"])
    if isinstance(p.get("class_weight"), dict):  # JSON turned its class keys into strings
        p["class_weight"] = {int(k) if isinstance(k, str) and k.isdigit() else k: v
                             for k, v in p["class_weight"].items()}
    return p


def check_common_args(tuner: Any) -> None:
    """The argument checks of the three tuners' ``fit`` (their ``__init__`` only stores, as
    in scikit-learn): epsilon, batch_size, query_budget, validation_every, seed,
    learning_rate, optimizer, estimator and perturbation; one line per bad value.

    epsilon first: the default learning rate is derived from it (``epsilon / 16``), so a bad
    epsilon must not surface as a learning-rate error.
    """
    try:
        # a denormal epsilon passes "> 0" but its default learning rate rounds to 0
        if not check_number("epsilon", tuner.epsilon, 0.0, 255.0, low_open=True) / 16.0 > 0:
            raise ValueError
    except ValueError:
        raise ValueError(f"epsilon must be a number > 0 and <= 255 (the L-inf budget in grey "
                         f"levels), got {show(tuner.epsilon)}") from None
    check_int("batch_size", tuner.batch_size, 1)
    check_int("query_budget", tuner.query_budget, 1)
    check_int("validation_every", tuner.validation_every, 1)
    check_seed(tuner.seed)
    lr = tuner.learning_rate
    if lr is not None and not isinstance(lr, Schedule):
        check_number("learning_rate", lr, 0.0, low_open=True, unit=" (grey levels per step)")
    if not isinstance(tuner.optimizer, Optimizer):
        check_optimizer_name(tuner.optimizer)
    check_instance("estimator", tuner.estimator, Estimator, list(ESTIMATORS))
    check_instance("perturbation", tuner.perturbation, Perturbation,
                   ["LowResolution", "FullResolution"])


class NotFittedError(ValueError, AttributeError):
    """``transform``/``evaluate``/``save`` was called before ``fit``."""


def _fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(str(images.shape).encode())
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(np.ascontiguousarray(labels).tobytes())
    return h.hexdigest()[:16]


class DataFineTuner:
    """Fit one shared perturbation ``delta`` (``|delta| <= epsilon`` grey levels) by queries.

    model: any object with ``predict(uint8 (N, H, W, 3) RGB) -> scores (N, K)``.
    task: ``"multiclass"``, ``"binary"`` or ``"multilabel"`` (see :class:`Objective`).
    epsilon: L-inf budget in grey levels (0-255 scale).
    perturbation: :class:`LowResolution` (default 16x16x3 latent, nearest-neighbour
        upsampling) or :class:`FullResolution`.
    estimator: zeroth-order gradient estimator (default ``SPSA(directions=1, step=2.0,
        per_image=True)``: every image of the minibatch gets its own random direction).
    optimizer: ``"adam"`` (default), ``"sgd"``, ``"momentum"``, ``"nesterov"``,
        ``"sign_sgd"`` or an :class:`Optimizer`; learning_rate in grey levels per step
        (default ``epsilon / 16``), a float or a :class:`Schedule`; lr_schedule: the
        kind of schedule built from a float learning rate (``"constant"``, ``"cosine"``...).
    batch_size: images per minibatch; each step sends ``candidates x batch_size`` images.
    query_budget: hard cap on images sent during ``fit`` (validation included).
    class_weight: ``None``, ``"balanced"`` or ``{class: weight}`` for the loss.
    selection: validation metric that picks the best delta (``"accuracy"``,
        ``"balanced_accuracy"`` or ``"loss"``); validation_every: steps between checks.
    energy_penalty: weight ``lam`` of ``lam / 2 * |z|^2`` (latent in grey levels) added to
        the loss; its gradient ``lam * z`` is exact and costs no queries. It pulls latent
        coordinates whose estimated gradient is mostly noise back towards 0: a smaller
        perturbation (higher PSNR) at some cost in accuracy (face task, 1e-4: +2.0 dB,
        -0.024 accuracy; ``benchmarks/results/standin_tasks_energy.md``).
    """

    def __init__(self, model: Any, task: str = "multiclass", *, epsilon: float = 8.0,
                 perturbation: Perturbation | None = None, estimator: Estimator | None = None,
                 optimizer: str | Optimizer = "adam",
                 learning_rate: float | Schedule | None = None, lr_schedule: str = "constant",
                 batch_size: int = 16, query_budget: int = 10_000,
                 scores: str = "probabilities", label_map: list[int | None] | None = None,
                 class_weight: Any = None, selection: str = "accuracy",
                 validation_every: int = 10, energy_penalty: float = 0.0,
                 seed: int | None = 0, progress: bool = True) -> None:
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
        self.seed = seed
        self.progress = progress

    # -- configuration ------------------------------------------------------------------------
    def _components(self) -> tuple[Objective, Perturbation, Estimator]:
        check_common_args(self)
        check_number("energy_penalty", self.energy_penalty, 0.0)
        check_choice("selection", self.selection, SELECTIONS)
        check_choice("lr_schedule", self.lr_schedule, Schedule.KINDS)
        objective = Objective(self.task, self.scores, self.label_map)
        check_class_weight(self.class_weight, objective.task)
        # 16x16 nearest: each latent cell moves whole pixels by the full finite-difference
        # step, which survives the uint8 rounding (bilinear upsampling blends the +-step of
        # neighbouring cells towards 0, and the rounding erases it). Measured against 8x8 /
        # 16x16 / 32x32 bilinear and full resolution in benchmarks/query_efficiency.py.
        default_pert = LowResolution((16, 16), interpolation="nearest")
        # One direction per image, batch 16: the same queries per step average 16 directions
        # instead of one. Against one shared direction (batch 32) at 10,000 queries on the
        # face task: 0.978 vs 0.959 held-out accuracy over 25 seeds, chosen on seeds 20-29
        # against 8 variants (benchmarks/results/default_search.md).
        return (objective, self.perturbation or default_pert,
                self.estimator or SPSA(directions=1, step=2.0, per_image=True))

    def _make_optimizer(self, total_steps: int) -> Optimizer:
        # epsilon / 16: measured best of epsilon / {4, 8, 16, 32} at 10k queries on the face
        # task (benchmarks/query_efficiency.py); smaller Adam steps average out SPSA noise.
        lr = self.learning_rate if self.learning_rate is not None else float(self.epsilon) / 16.0
        if not isinstance(lr, Schedule):
            lr = Schedule(float(lr), kind=self.lr_schedule, total=total_steps)
        return make_optimizer(self.optimizer, lr)

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments except the model, JSON-able (components as configs)."""
        objective, pert, est = self._components()
        return {
            "task": self.task, "epsilon": float(self.epsilon),
            "perturbation": pert.get_config(), "estimator": est.get_config(),
            "optimizer": self.optimizer if isinstance(self.optimizer, str)
            else self.optimizer.get_config(),
            "learning_rate": self.learning_rate.get_config()
            if isinstance(self.learning_rate, Schedule) else self.learning_rate,
            "lr_schedule": self.lr_schedule, "batch_size": int(self.batch_size),
            "query_budget": int(self.query_budget), "scores": self.scores,
            "label_map": self.label_map, "class_weight": self.class_weight,
            "selection": self.selection, "validation_every": int(self.validation_every),
            "energy_penalty": float(self.energy_penalty), "seed": self.seed,
        }

    @classmethod
    def from_params(cls, model: Any, params: dict[str, Any], **overrides: Any) -> DataFineTuner:
        """Rebuild a tuner from :meth:`get_params` output."""
        p = decode_params(params)
        p.update(overrides)
        task = p.pop("task")
        return cls(model, task, **p)

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
        from blackbox_dft.core.engine import (
            run_fit,  # the loop lives apart to keep this module small
        )

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
        if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be an int >= 1, got {checkpoint_every!r}")
        b = min(int(self.batch_size), x.shape[0])
        step_cost = est.candidates_per_step * b
        val_cost = 0 if val is None else val[0].shape[0]
        minimum = step_cost + 2 * val_cost
        if self.query_budget < minimum:
            raise ValueError(
                f"query_budget={self.query_budget} is smaller than one step: "
                f"{est.candidates_per_step} candidates x {b} images"
                + (f" + 2 x {val_cost} validation images" if val_cost else "")
                + f" = {minimum} queries"
            )
        total_steps = max(1, (self.query_budget - val_cost) // step_cost)
        optimizer = self._make_optimizer(total_steps)
        self.fingerprint_ = _fingerprint(x, y)
        self.image_shape_ = (int(x.shape[1]), int(x.shape[2]))
        self.objective_ = objective
        self.perturbation_ = pert
        counter = QueryCounter(self.model, int(self.query_budget))
        meta = {"params": self.get_params(), "fingerprint": self.fingerprint_,
                "image_shape": list(self.image_shape_), "version": __version__}
        state = load_resumable(checkpoint, resume, meta, "training data")
        if state is not None:
            resume_queries(state, counter)
        bar = tqdm(total=int(self.query_budget), unit="query", disable=not self.progress,
                   desc=f"DFT {model_name(self.model)}", dynamic_ncols=True)
        try:
            run_fit(self, state, x, y, val, objective, pert, est, optimizer, counter,
                    checkpoint, checkpoint_every, meta, bar, callback)
        finally:
            bar.close()
        return self

    def _set_fitted(self, state: FitState) -> None:
        z = state.best_z if state.best_z is not None else state.z
        self.latent_ = np.asarray(z, dtype=np.float32)
        self.delta_ = self.perturbation_.to_delta(self.latent_, self.image_shape_,
                                                  float(self.epsilon))
        # Every image sent to the model, those of failed or interrupted steps included.
        self.queries_ = paid_images(state)
        self.history_ = list(state.history)
        self.baseline_ = state.baseline
        self.best_step_ = int(state.best_step)
        self.n_steps_ = int(state.step)

    # -- using the result ---------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "delta_"):
            raise NotFittedError(
                "this DataFineTuner is not fitted yet; call fit(images, labels) first "
                "or DataFineTuner.load(path, model)"
            )

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

    # -- files --------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fitted result to ``path`` (``.npz`` arrays + JSON; no pickle, no secrets)."""
        self._check_fitted()
        write_npz_json(path, {"delta": self.delta_, "latent": self.latent_}, {
            "kind": "result", "params": self.get_params(), "version": __version__,
            "image_shape": list(self.image_shape_), "queries": self.queries_,
            "history": self.history_, "baseline": self.baseline_,
            "best_step": self.best_step_, "n_steps": self.n_steps_,
            "model": model_name(self.model),
        })

    @classmethod
    def load(cls, path: str | os.PathLike[str], model: Any) -> DataFineTuner:
        """Load a result written by :meth:`save` and attach it to ``model``."""
        arrays, meta = read_result(path, "result", "DataFineTuner")
        tuner = cls.from_params(model, meta["params"])
        objective, pert, _ = tuner._components()
        tuner.objective_, tuner.perturbation_ = objective, pert
        tuner.image_shape_ = (int(meta["image_shape"][0]), int(meta["image_shape"][1]))
        tuner.latent_ = arrays["latent"].astype(np.float32)
        tuner.delta_ = arrays["delta"].astype(np.float32)
        tuner.queries_ = int(meta["queries"])
        tuner.history_ = meta["history"]
        tuner.baseline_ = meta["baseline"]
        tuner.best_step_ = int(meta["best_step"])
        tuner.n_steps_ = int(meta["n_steps"])
        return tuner

    def __repr__(self) -> str:
        fitted = f", fitted: {self.queries_} queries" if hasattr(self, "delta_") else ""
        return (f"DataFineTuner({model_name(self.model)}, task={self.task!r}, "
                f"epsilon={self.epsilon}, query_budget={self.query_budget}{fitted})")

