"""The base of every tuner: scikit-learn conventions, one way to save and load, one fit prologue.

* ``__init__`` stores its arguments unchanged; they are checked in ``fit``.
* :meth:`Tuner.get_params` (``deep=True`` adds ``name__sub`` entries of parameters that have
  ``get_params`` themselves) and :meth:`Tuner.set_params` work from ``__init__``'s signature,
  so ``sklearn.base.clone`` works; cloning keeps the same ``model`` object (an endpoint, not
  state: a connection cannot be deep-copied) and copies every other parameter.
* :meth:`Tuner.get_config` / :meth:`Tuner.from_config`: the parameters as JSON (components as
  their configs, ``None`` kept as ``None``): what checkpoints, saved results and the CLI store.
* :meth:`Tuner.save` / :meth:`Tuner.load`: ``.npz`` arrays + one JSON document, no pickle; each
  tuner lists its fitted arrays and fields in ``_saved_arrays`` / ``_saved_fields``, and
  arrays a result may lack (an older result, a fit without them) in ``_optional_arrays``.
* one :class:`NotFittedError`.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import logging
import os
from typing import Any, ClassVar, TypeVar

import numpy as np

from blackbox_dft._version import __version__
from blackbox_dft.core.checks import check_instance, check_int, check_number, check_seed, show
from blackbox_dft.core.engine import FitLoop, Problem, resolve_validation_every
from blackbox_dft.core.estimators import ESTIMATORS, Estimator, estimator_from_config
from blackbox_dft.core.model import QueryCounter, model_name
from blackbox_dft.core.optimizers import (
    Optimizer,
    Schedule,
    check_optimizer_name,
    optimizer_from_config,
)
from blackbox_dft.core.perturbation import Perturbation, perturbation_from_config
from blackbox_dft.core.progress import progress_bar
from blackbox_dft.core.state import (
    FitState,
    load_resumable,
    read_result,
    resume_queries,
    write_npz_json,
)
from blackbox_dft.core.stopping import check_early_stopping, early_stopping_from_config

__all__ = ["Tuner", "NotFittedError", "fingerprint", "check_common_args"]

T = TypeVar("T", bound="Tuner")
log = logging.getLogger(__name__)


class NotFittedError(ValueError, AttributeError):
    """``transform``/``evaluate``/``save`` was called before ``fit``."""


def fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    """A short digest of the training data: a checkpoint resumes only on the same data."""
    h = hashlib.sha256()
    h.update(str(images.shape).encode())
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(np.ascontiguousarray(labels).tobytes())
    return h.hexdigest()[:16]


def check_common_args(tuner: Any) -> None:
    """The argument checks every tuner's ``fit`` makes (``__init__`` only stores): epsilon,
    batch_size, query_budget, validation_every (None: the tuner's default; "auto": the
    engine's cadence), seed,
    learning_rate, optimizer, estimator and perturbation; one line per bad value.

    epsilon first: the default learning rate is derived from it, so a bad epsilon must not
    surface as a learning-rate error.
    """
    try:
        # a denormal epsilon passes "> 0" but its default learning rate rounds to 0
        if not check_number("epsilon", tuner.epsilon, 0.0, 255.0, low_open=True) / 16.0 > 0:
            raise ValueError
    except ValueError:
        raise ValueError(f"epsilon must be a number > 0 and <= 255 (the L-inf budget in grey "
                         f"levels), got {show(tuner.epsilon)}") from None
    if tuner.batch_size is not None:  # None: the tuner's default
        check_int("batch_size", tuner.batch_size, 1)
    check_int("query_budget", tuner.query_budget, 1)
    # None: the tuner's default; "auto": the engine's cadence (validations about a tenth of
    # the queries)
    every = tuner.validation_every
    if isinstance(every, str) and every != "auto":
        raise ValueError(f"validation_every must be an int >= 1 or 'auto', got {show(every)}")
    if every is not None and every != "auto":
        check_int("validation_every", every, 1)
    check_seed(tuner.seed)
    lr = tuner.learning_rate
    if lr is not None and not isinstance(lr, Schedule):
        check_number("learning_rate", lr, 0.0, low_open=True, unit=" (grey levels per step)")
    if not isinstance(tuner.optimizer, Optimizer):
        check_optimizer_name(tuner.optimizer)
    check_instance("estimator", tuner.estimator, Estimator, list(ESTIMATORS))
    check_instance("perturbation", tuner.perturbation, Perturbation,
                   ["LowResolution", "FullResolution"])
    check_early_stopping(getattr(tuner, "early_stopping", None))


def _to_json(value: Any) -> Any:
    """A parameter value as JSON: components as their configs, numpy scalars as numbers."""
    if hasattr(value, "get_config"):
        return value.get_config()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    return value


def _from_json(name: str, value: Any) -> Any:
    """Inverse of :func:`_to_json` for the components a tuner takes."""
    if not isinstance(value, dict):
        return value
    if name == "perturbation":
        return perturbation_from_config(value)
    if name == "estimator":
        return estimator_from_config(value)
    if name == "optimizer":
        return optimizer_from_config(value)
    if name == "learning_rate":
        return Schedule(**value)
    if name == "early_stopping":
        return early_stopping_from_config(value)
    if name == "class_weight":  # JSON turned its class keys into strings
        return {int(k) if isinstance(k, str) and k.isdigit() else k: v for k, v in value.items()}
    return value


class Tuner:
    """Base class of :class:`DataFineTuner`, :class:`VerificationTuner` and
    :class:`MultiAttributeTuner` (see the module docstring)."""

    #: the ``kind`` of a saved result and of a checkpoint (None: no kind field, as in 0.1.0)
    _result_kind: ClassVar[str] = "result"
    _checkpoint_kind: ClassVar[str | None] = None
    #: fitted array attributes saved, as {file key: attribute}; the first one marks "fitted"
    _saved_arrays: ClassVar[dict[str, str]] = {}
    #: fitted JSON attributes saved, as {file key: attribute}
    _saved_fields: ClassVar[dict[str, str]] = {}
    #: fitted arrays saved when set and loaded when present, dtype kept (e.g. the canary)
    _optional_arrays: ClassVar[dict[str, str]] = {}
    #: what a changed training set is called in a resume error
    _data_name: ClassVar[str] = "training data"

    # -- parameters -------------------------------------------------------------------------
    @classmethod
    def _get_param_names(cls) -> list[str]:
        """The parameter names, from ``__init__``'s signature (no *args, no **kwargs)."""
        sig = inspect.signature(cls.__init__)
        names = []
        for p in list(sig.parameters.values())[1:]:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"{cls.__name__}.__init__ must name its parameters, "
                                f"not take *{p.name}")
            names.append(p.name)
        return names

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's arguments, as stored (``model`` included); with ``deep``, also
        ``name__sub`` for parameters that have ``get_params`` themselves."""
        out: dict[str, Any] = {}
        for name in self._get_param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update({f"{name}__{k}": v for k, v in value.get_params().items()})
            out[name] = value
        return out

    def set_params(self: T, **params: Any) -> T:
        """Set constructor arguments (``name__sub`` reaches a parameter's own parameter);
        checked at the next ``fit``. Returns ``self``."""
        valid = self._get_param_names()
        nested: dict[str, dict[str, Any]] = {}
        for key, value in params.items():
            name, _, sub = key.partition("__")
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for {type(self).__name__}; "
                                 f"valid parameters: {', '.join(valid)}")
            if sub:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
        for name, sub_params in nested.items():
            getattr(self, name).set_params(**sub_params)
        return self

    def __sklearn_clone__(self: T) -> T:
        """An unfitted copy with the same parameters; the model itself is shared."""
        params = {k: v if k == "model" else copy.deepcopy(v)
                  for k, v in self.get_params(deep=False).items()}
        return type(self)(**params)

    def get_config(self) -> dict[str, Any]:
        """The parameters except ``model`` as JSON (components as their configs)."""
        return {k: _to_json(v) for k, v in self.get_params(deep=False).items() if k != "model"}

    @classmethod
    def from_config(cls: type[T], model: Any, config: dict[str, Any], **overrides: Any) -> T:
        """Rebuild a tuner from :meth:`get_config` output (``overrides`` replace values)."""
        if not isinstance(config, dict):
            raise ValueError(f"a {cls.__name__} config must be an object, got {show(config)}")
        valid = set(cls._get_param_names()) - {"model"}
        unknown = sorted(set(config) - valid)
        if unknown:
            raise ValueError(f"{cls.__name__} config has unknown keys {unknown}")
        params = {k: _from_json(k, v) for k, v in config.items()}
        params.update(overrides)
        return cls(model=model, **params)  # type: ignore[call-arg]

    def _validation_every(self) -> int | None:
        """Steps between validations for the engine (None: its cadence in queries)."""
        every = self.validation_every  # type: ignore[attr-defined]
        return None if every is None or every == "auto" else int(every)

    # -- fitting ----------------------------------------------------------------------------
    def _fit_loop(self, problem: Problem, estimator: Estimator, optimizer: Optimizer,
                  counter: QueryCounter, meta: dict[str, Any],
                  checkpoint: str | os.PathLike[str] | None, checkpoint_every: int,
                  resume: bool, callback: Any = None, progress: bool = False) -> FitState:
        """Run the engine for ``problem``: resume from ``checkpoint`` when asked, show a
        progress bar, and hand the final (or failed) state to ``_set_fitted``."""
        meta = {"params": self.get_config(), **meta, "version": __version__}
        if self._checkpoint_kind is not None:
            meta = {"kind": self._checkpoint_kind, **meta}
        state = load_resumable(checkpoint, resume, meta, self._data_name)
        name = model_name(getattr(self, "model", None))
        if state is not None:
            resume_queries(state, counter)
            log.info("%s resumes from %s (step %d, %d queries used)", type(self).__name__,
                     checkpoint, state.step, state.queries)
        log.info("%s fit of %s: budget %d queries, epsilon %s", type(self).__name__, name,
                 self.query_budget, getattr(self, "epsilon", None))  # type: ignore[attr-defined]
        bar = progress_bar(progress, total=int(self.query_budget), unit="query",  # type: ignore[attr-defined]
                           desc=f"DFT {name}")
        every = resolve_validation_every(self._validation_every(), problem)
        loop = FitLoop(problem, estimator, optimizer, counter, self.seed,  # type: ignore[attr-defined]
                       every, checkpoint, checkpoint_every,
                       meta, bar, callback,
                       check_early_stopping(getattr(self, "early_stopping", None)))
        state = loop.new_state() if state is None else state
        try:
            loop.run(state)
        finally:
            bar.close()
            self._set_fitted(state, counter)
            # what early stopping did (False / 0 when it was off or did not fire)
            self.stopped_early_ = bool(state.extra.get("stopped_early", False))
            self.queries_saved_by_stopping_ = int(state.extra.get("queries_saved", 0))
        return state

    def _set_fitted(self, state: FitState, counter: QueryCounter) -> None:
        raise NotImplementedError

    @staticmethod
    def _check_checkpoint_every(checkpoint_every: Any) -> None:
        if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) \
                or checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be an int >= 1, got {checkpoint_every!r}")

    # -- fitted state -----------------------------------------------------------------------
    def _check_fitted(self) -> None:
        marker = next(iter(self._saved_arrays.values()))
        if not hasattr(self, marker):
            name = type(self).__name__
            raise NotFittedError(f"this {name} is not fitted yet; call fit first or "
                                 f"{name}.load(path, model)")

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fitted result to ``path`` (``.npz`` arrays + one JSON document: the
        parameters, fitted fields, the model's name; no pickle, no secrets)."""
        self._check_fitted()
        arrays = {key: getattr(self, attr) for key, attr in self._saved_arrays.items()}
        arrays.update({key: getattr(self, attr) for key, attr in self._optional_arrays.items()
                       if hasattr(self, attr)})
        meta: dict[str, Any] = {"kind": self._result_kind, "params": self.get_config(),
                                "version": __version__,
                                "model": model_name(getattr(self, "model", None))}
        for key, attr in self._saved_fields.items():
            meta[key] = _to_json(getattr(self, attr))
        if hasattr(self, "stopped_early_"):
            meta["stopped_early"] = self.stopped_early_
            meta["queries_saved_by_stopping"] = self.queries_saved_by_stopping_
        write_npz_json(path, arrays, meta)

    @classmethod
    def load(cls: type[T], path: str | os.PathLike[str], model: Any) -> T:
        """Load a result written by :meth:`save` and attach it to ``model``."""
        arrays, meta = read_result(path, cls._result_kind, cls.__name__)
        tuner = cls.from_config(model, meta["params"])
        for key, attr in cls._saved_arrays.items():
            setattr(tuner, attr, arrays[key].astype(np.float32))
        for key, attr in cls._optional_arrays.items():
            if key in arrays:
                setattr(tuner, attr, arrays[key])
        for key, attr in cls._saved_fields.items():
            if key in meta:
                setattr(tuner, attr, meta[key])
        tuner._restore(meta)
        tuner.stopped_early_ = bool(meta.get("stopped_early", False))
        tuner.queries_saved_by_stopping_ = int(meta.get("queries_saved_by_stopping", 0))
        return tuner

    def _restore(self, meta: dict[str, Any]) -> None:
        """Rebuild the fitted objects that are not stored as such (after :meth:`load`)."""
        self.image_shape_ = (int(meta["image_shape"][0]), int(meta["image_shape"][1]))
        pert = meta.get("perturbation") or meta["params"].get("perturbation")
        self.perturbation_ = self._default_perturbation() if pert is None \
            else perturbation_from_config(pert)
        self.queries_ = int(meta["queries"])

    def _default_perturbation(self) -> Perturbation:
        raise NotImplementedError

    def __repr__(self) -> str:
        shown = []
        defaults = {p.name: p.default for p in
                    list(inspect.signature(type(self).__init__).parameters.values())[1:]}
        for name in self._get_param_names():
            if name == "model":
                continue
            value = getattr(self, name)
            default = defaults.get(name, inspect.Parameter.empty)
            try:
                same = value is default or bool(value == default)
            except (TypeError, ValueError):  # an array compares element-wise
                same = False
            if name in ("epsilon", "query_budget") or not same:
                shown.append(f"{name}={value!r}")
        marker = next(iter(self._saved_arrays.values()), "")
        fitted = f", fitted: {self.queries_} queries" if hasattr(self, marker) else ""
        args = ", ".join([model_name(getattr(self, "model", None)), *shown])
        return f"{type(self).__name__}({args}{fitted})"
