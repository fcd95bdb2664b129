"""Every tuner, through the public conformance check ``blackbox_dft.testing.check_tuner``,
from one registry: scikit-learn conventions, the budget as a hard cap with at least one step,
resume equal to an uninterrupted fit, save/load and config round trips; and a broken tuner
the check must catch."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy.special import softmax
from test_verification import _as_pair_model, _linear_embedding_problem

from blackbox_dft import (
    SPSA,
    DataFineTuner,
    LowResolution,
    MultiAttributeTuner,
    VerificationTuner,
)
from blackbox_dft.testing import check_tuner, make_problem


class AttributeModel:
    """The synthetic 4-class softmax read as 3 one-vs-rest attributes ``P(class a)``."""

    n_outputs = 3
    name = "synthetic-attributes"

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def predict(self, images: np.ndarray) -> np.ndarray:
        return softmax(self.inner.predict(images), axis=1)[:, :3]

    def __repr__(self) -> str:
        return "AttributeModel(synthetic)"


def _classification(**extra: Any) -> dict[str, Any]:
    p = make_problem(0, n_train=120, n_val=60, n_test=10)
    return dict(make=lambda m, **kw: DataFineTuner(m, "multiclass", scores="logits",
                                                   progress=False, **{**extra, **kw}),
                model=p.model, fit_args=p.train, validation=p.val, budget=1_200,
                small_budget=100)


def _attributes(mode: str) -> dict[str, Any]:
    p = make_problem(2, n_train=120, n_val=60, n_test=10)

    def onehot(split: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return split[0], (split[1][:, None] == np.arange(3)[None]).astype(np.int64)

    return dict(make=lambda m, **kw: MultiAttributeTuner(m, ["a0", "a1", "a2"], mode=mode,
                                                         batch_size=16, **kw),
                model=AttributeModel(p.model), fit_args=onehot(p.train),
                validation=onehot(p.val), budget=2_000 if mode == "per_attribute" else 1_200,
                small_budget=300 if mode == "per_attribute" else 100, transform_args=(1,))


def _verification(pairwise: bool, threshold: float | None) -> dict[str, Any]:
    model, train, val, _ = _linear_embedding_problem()
    model = _as_pair_model(model) if pairwise else model
    extra = {} if threshold is None else {"threshold": threshold}
    return dict(make=lambda m, **kw: VerificationTuner(m, batch_size=16, **{**extra, **kw}),
                model=model, fit_args=train, validation=None if threshold else val,
                budget=1_500 if pairwise else 1_200, small_budget=60)


REGISTRY = {
    "classification-default": lambda: _classification(),
    "classification-importance-auto-validation": lambda: _classification(
        sampling="importance", validation_every=None, batch_size=8),
    "classification-shared-spsa": lambda: _classification(
        estimator=SPSA(directions=2), perturbation=LowResolution((8, 8)), optimizer="sgd"),
    "attributes-per-attribute": lambda: _attributes("per_attribute"),
    "attributes-shared": lambda: _attributes("shared"),
    "verification-embedding": lambda: _verification(False, None),
    "verification-fixed-threshold": lambda: _verification(False, 0.3),
    "verification-pair-model": lambda: _verification(True, None),
}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_tuner_contract(name: str) -> None:
    check_tuner(**REGISTRY[name]())


class ValidatingInit(DataFineTuner):
    """Checks (and rewrites) an argument in __init__: the scikit-learn convention says no."""

    def __init__(self, model: Any, task: str = "multiclass", *, epsilon: Any = 8.0,
                 query_budget: int = 10_000, scores: str = "probabilities",
                 progress: bool = True) -> None:
        super().__init__(model, task, query_budget=query_budget, scores=scores,
                         progress=progress,
                         epsilon=float(epsilon) if isinstance(epsilon, (int, float)) else 8.0)


class OverSpends(DataFineTuner):
    """Reports fewer queries than it sent."""

    def _set_fitted(self, state: Any, counter: Any) -> None:
        super()._set_fitted(state, counter)
        self.queries_ -= 1


class IgnoresResume(DataFineTuner):
    """Starts over instead of continuing from its checkpoint."""

    def fit(self, *args: Any, **kw: Any) -> DataFineTuner:  # type: ignore[override]
        kw["resume"] = False
        return super().fit(*args, **kw)


class IgnoresCallback(DataFineTuner):
    """Takes a callback and never calls it (as the shared attribute fit once did)."""

    def fit(self, *args: Any, **kw: Any) -> DataFineTuner:  # type: ignore[override]
        kw.pop("callback", None)
        return super().fit(*args, **kw)


def _broken(cls: type[DataFineTuner]) -> dict[str, Any]:
    case = _classification()
    case["make"] = lambda m, **kw: cls(m, "multiclass", scores="logits", progress=False, **kw)
    return case


@pytest.mark.parametrize("cls, check", [(ValidatingInit, "__init__"), (OverSpends, "budget"),
                                        (IgnoresResume, "resume"),
                                        (IgnoresCallback, "callback")],
                         ids=["validating-init", "over-spends", "ignores-resume",
                              "ignores-callback"])
def test_check_tuner_catches(cls: type[DataFineTuner], check: str) -> None:
    with pytest.raises(AssertionError, match=f"check_tuner\\(.*\\): {check}:"):
        check_tuner(**_broken(cls))
