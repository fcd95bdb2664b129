"""Conformance checks for tuners: scikit-learn conventions, the budget, resume, save and load.

``check_tuner(make, fit_args, ...)`` takes a factory ``make(model, **params) -> tuner`` and
the arguments of ``fit`` (``(images, labels_or_pairs)`` and ``validation``), and raises
``AssertionError`` with one line naming the tuner, the check and what was wrong:

* ``__init__`` stores every argument unchanged (the same object) and checks nothing;
  ``get_params``/``set_params`` round-trip; ``sklearn.base.clone`` works when scikit-learn is
  installed (an unfitted copy sharing the model);
* ``transform``/``evaluate``/``save`` before ``fit`` raise :class:`NotFittedError`;
* the budget is a hard cap on images sent, and a fit takes at least one step; a budget below
  one step is refused before any query, naming the minimum;
* a fit interrupted by a model failure and resumed from its checkpoint ends with the same
  perturbation and history as an uninterrupted one;
* ``save``/``load`` and ``get_config``/``from_config`` (through JSON) round-trip.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np

from blackbox_dft.core.model import ModelError
from blackbox_dft.tasks.base import NotFittedError, Tuner

__all__ = ["check_tuner", "CountingModel"]


class CountingModel:
    """Wraps a model: counts the images it receives, and raises :class:`ModelError` on call
    number ``fail_at`` (1-based; None: never). Other attributes pass through."""

    def __init__(self, model: Any, fail_at: int | None = None) -> None:
        self._model, self.fail_at = model, fail_at
        self.calls = self.images = 0

    def _count(self, n: int) -> None:
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise ModelError(f"injected failure on call {self.calls}")
        self.images += n

    def predict(self, images: Any) -> Any:
        self._count(len(images))
        return self._model.predict(images)

    def compare(self, images_a: Any, images_b: Any) -> Any:
        self._count(2 * len(images_a))
        return self._model.compare(images_a, images_b)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def __repr__(self) -> str:
        return f"CountingModel({self._model!r})"


def _fail(who: str, check: str, what: str) -> AssertionError:
    return AssertionError(f"check_tuner({who}): {check}: {what}")


def _fitted(t: Any) -> tuple[bytes, str, int]:
    arr = getattr(t, next(iter(t._saved_arrays.values())))
    return (np.ascontiguousarray(arr).tobytes(), json.dumps(t.history_, sort_keys=True),
            int(t.queries_))


def check_tuner(make: Callable[..., Any], model: Any, fit_args: tuple[Any, ...],
                validation: tuple[Any, Any] | None, *, budget: int, small_budget: int,
                fail_at: int = 3, transform_args: tuple[Any, ...] = ()) -> None:
    """Run every tuner check.

    make: ``make(model, **params)`` -> an unfitted tuner with ``query_budget`` among params.
    fit_args: ``fit``'s positional arguments; validation: its ``validation`` (or None).
    budget: a budget for a short fit (a few steps); small_budget: one below one step.
    fail_at: the model call that fails in the resume check (after the baseline).
    transform_args: extra arguments of ``transform`` after the images (an attribute).
    """
    t = make(model, query_budget=budget)
    is_tuner = isinstance(t, Tuner)  # (a bool: keeps t typed Any below)
    if not is_tuner:
        raise AssertionError(f"check_tuner: make() must return a Tuner, got {t!r}")
    who = type(t).__name__
    _check_params(t, make, model, who)
    images = fit_args[0]
    for name, call in (("transform", lambda: t.transform(images[:2], *transform_args)),
                       ("evaluate", lambda: t.evaluate(*fit_args)),
                       ("save", lambda: t.save(os.path.join(tempfile.gettempdir(), "x.npz")))):
        try:
            call()
        except NotFittedError:
            continue
        raise _fail(who, "not fitted", f"{name} before fit did not raise NotFittedError")
    counting = CountingModel(model)
    try:
        make(counting, query_budget=small_budget).fit(*fit_args, validation=validation)
    except ValueError as exc:
        if "query_budget" not in str(exc) or counting.calls:
            raise _fail(who, "minimum budget", f"{exc} (after {counting.calls} calls)") \
                from None
    else:
        raise _fail(who, "minimum budget", f"query_budget={small_budget} ran a fit")
    with tempfile.TemporaryDirectory() as tmp:
        whole = make(counting, query_budget=budget).fit(*fit_args, validation=validation)
        if counting.images > budget or whole.queries_ != counting.images:
            raise _fail(who, "budget", f"{counting.images} images sent, queries_="
                        f"{whole.queries_}, budget {budget}")
        if whole.n_steps_ < 1:
            raise _fail(who, "one step", f"budget {budget} ran {whole.n_steps_} steps")
        _check_callback(make, model, fit_args, validation, budget, whole, who)
        _check_resume(make, model, fit_args, validation, budget, fail_at, whole, who, tmp)
        _check_files(whole, make, model, who, tmp, images, transform_args)


def _check_callback(make: Callable[..., Any], model: Any, fit_args: tuple[Any, ...],
                    validation: tuple[Any, Any] | None, budget: int, whole: Any,
                    who: str) -> None:
    """``fit(..., callback=f)`` calls ``f(record, state)`` after each step, and a true
    return value stops the fit there."""
    seen: list[tuple[Any, int]] = []

    def stop_after_first(record: dict[str, Any], state: Any) -> bool:
        seen.append((record.get("step"), int(state.step)))
        return True

    stopped = make(model, query_budget=budget).fit(*fit_args, validation=validation,
                                                   callback=stop_after_first)
    if seen != [(1, 1)] or stopped.n_steps_ != 1:
        raise _fail(who, "callback", f"saw {seen} and ran {stopped.n_steps_} steps (of "
                    f"{whole.n_steps_} without it); want one call after step 1, then a stop")


def _check_params(t: Any, make: Callable[..., Any], model: Any, who: str) -> None:
    params = t.get_params(deep=False)
    for name, value in params.items():
        if getattr(t, name) is not value:
            raise _fail(who, "get_params", f"{name} is not the stored object")
    bad = make(model, query_budget=-5, epsilon="eight")  # __init__ checks nothing
    if bad.get_params()["epsilon"] != "eight":
        raise _fail(who, "__init__", "changed an argument instead of storing it")
    copy = type(t)(**params)
    if copy.get_config() != t.get_config():
        raise _fail(who, "get_params", "type(t)(**t.get_params()) differs from t")
    if t.set_params(seed=123) is not t or t.seed != 123:
        raise _fail(who, "set_params", "did not set seed or return self")
    t.set_params(seed=params["seed"])
    try:
        t.set_params(no_such_parameter=1)
    except ValueError:
        pass
    else:
        raise _fail(who, "set_params", "accepted an unknown parameter")
    try:
        from sklearn.base import clone
    except ImportError:  # scikit-learn is a test extra
        return
    c = clone(t)
    if c is t or c.get_config() != t.get_config() or c.model is not t.model:
        raise _fail(who, "clone", "sklearn.base.clone gave another configuration or model")


def _check_resume(make: Callable[..., Any], model: Any, fit_args: tuple[Any, ...],
                  validation: Any, budget: int, fail_at: int, whole: Any, who: str,
                  tmp: str) -> None:
    ckpt = os.path.join(tmp, "ckpt.npz")
    failing = CountingModel(model, fail_at=fail_at)
    try:
        make(failing, query_budget=budget).fit(*fit_args, validation=validation,
                                               checkpoint=ckpt, checkpoint_every=1)
    except ModelError:
        pass
    else:
        raise _fail(who, "resume", f"the fit did not reach model call {fail_at}")
    healthy = CountingModel(model)
    resumed = make(healthy, query_budget=budget).fit(*fit_args, validation=validation,
                                                     checkpoint=ckpt, checkpoint_every=1,
                                                     resume=True)
    if healthy.images + failing.images > budget or healthy.images >= whole.queries_:
        raise _fail(who, "resume", f"the resumed fit sent {healthy.images} images after "
                    f"{failing.images} before the failure: it started over instead of "
                    f"continuing from the checkpoint")
    # The failed call's images stay paid, so with a tight budget the resumed fit may afford
    # one step fewer than the uninterrupted one: its history is then a prefix of the other's.
    a, b = _fitted(whole), _fitted(resumed)
    steps_a, steps_b = len(whole.history_), len(resumed.history_)
    prefix = json.dumps(whole.history_[:steps_b], sort_keys=True)
    if not 0 <= steps_a - steps_b <= 1 or prefix != b[1] or (steps_a == steps_b
                                                             and a[0] != b[0]):
        raise _fail(who, "resume", f"a fit resumed after a failure differs from an "
                    f"uninterrupted one ({steps_b} vs {steps_a} steps; perturbation or history)")
    if b[2] > budget or (steps_a == steps_b and b[2] < a[2]):
        raise _fail(who, "resume", f"paid {b[2]} images in {steps_b} steps: the uninterrupted "
                    f"fit paid {a[2]} in {steps_a}, the budget is {budget}")


def _check_files(t: Any, make: Callable[..., Any], model: Any, who: str, tmp: str,
                 images: Any, transform_args: tuple[Any, ...]) -> None:
    path = os.path.join(tmp, "result.npz")
    t.save(path)
    back = type(t).load(path, model)
    if _fitted(back)[0] != _fitted(t)[0] or back.get_config() != t.get_config() \
            or back.queries_ != t.queries_:
        raise _fail(who, "save/load", "a loaded result differs from the saved tuner")
    x = images[:2]
    if not np.array_equal(back.transform(x, *transform_args), t.transform(x, *transform_args)):
        raise _fail(who, "save/load", "a loaded result transforms images differently")
    again = type(t).from_config(model, json.loads(json.dumps(t.get_config())))
    if again.get_config() != t.get_config():
        raise _fail(who, "config", "get_config -> JSON -> from_config does not round-trip")
