"""The model contract (blackbox_dft.testing.check_model) over every registered model, and
proof that it catches broken ones (a suite that passes everything would prove nothing)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys
from contextlib import ExitStack
from typing import Any

import numpy as np
import pytest
import registry
from registry import params, similarity, smile_scores

import blackbox_dft.adapters
from blackbox_dft.core.images import check_image_pairs, check_images
from blackbox_dft.testing import check_model


@pytest.fixture
def model(entry: registry.Entry, tmp_path: Any) -> Any:
    """The entry's model, with its servers and files closed after the test."""
    with ExitStack() as stack:
        yield entry.make(stack, tmp_path)


@pytest.mark.parametrize("entry", params())
def test_model_contract(entry: registry.Entry, model: Any) -> None:
    assert type(model).__name__ == entry.cls
    out = check_model(model, **entry.check)
    assert out.shape[0] == entry.check.get("n", 3)


# Classes that answer predict/compare but are not models a user fits: abstract bases, the
# server-side view of a pair model (run by the http-facepp_compare entry), MLServer's runtime.
# _DeltaModel: the KServe transformer's handlers (its predict forwards to the predictor)
NOT_MODELS = {"BaseModel", "_FileModel", "SideBySide", "StandInRuntime", "_DeltaModel"}


def test_registry_covers_every_model_class_in_adapters() -> None:
    found = set()
    for info in pkgutil.walk_packages(blackbox_dft.adapters.__path__, "blackbox_dft.adapters."):
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # an optional runtime (mlserver) that is not installed
            continue
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and (
                    callable(getattr(cls, "predict", None))
                    or callable(getattr(cls, "compare", None))):
                found.add(name)
    registered = {e.cls for e in registry.REGISTRY}
    assert found - NOT_MODELS <= registered, sorted(found - NOT_MODELS - registered)
    expected_core = {"SyntheticModel", "FineTunedModel", "CachedModel", "Meter"}
    assert expected_core <= registered


# ---------------------------------------------------------------- models broken on purpose

class Plain:
    """A correct hand-written model (no adapter base class): each subclass breaks one thing."""

    output_kind = "scores"

    def __init__(self) -> None:
        self.name = type(self).__name__.lower()

    def predict(self, images: Any) -> np.ndarray:
        return self.answer(check_images(images))

    def answer(self, x: np.ndarray) -> np.ndarray:
        return smile_scores(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class RowMissing(Plain):
    def answer(self, x: np.ndarray) -> np.ndarray:
        return smile_scores(x)[:-1]


class NaNScore(Plain):
    def answer(self, x: np.ndarray) -> np.ndarray:
        s = smile_scores(x)
        s[0, 1] = np.nan
        return s


class IntScores(Plain):
    def answer(self, x: np.ndarray) -> np.ndarray:
        return (smile_scores(x) * 100).astype(np.int64)


class SortedRows(Plain):
    """Rows sorted by score: same answer for any order of the images."""

    def answer(self, x: np.ndarray) -> np.ndarray:
        s = smile_scores(x)
        return s[np.argsort(s[:, 1])]


class BatchNormalised(Plain):
    """Each answer depends on the rest of the batch."""

    def answer(self, x: np.ndarray) -> np.ndarray:
        s = smile_scores(x)
        return s - s.mean(axis=0)


class Noisy(Plain):
    """A vendor that samples: noise on every answer, but it does not say so."""

    def __init__(self) -> None:
        super().__init__()
        self.rng = np.random.default_rng(0)

    def answer(self, x: np.ndarray) -> np.ndarray:
        return smile_scores(x) + self.rng.normal(scale=0.01, size=(len(x), 2))


class NoisyDeclared(Noisy):
    deterministic = False


class MultiLineRepr(Plain):
    def __repr__(self) -> str:
        return "MultiLineRepr(\n  name='x'\n)"


class WrongNOutputs(Plain):
    n_outputs = 3


class TooManyLabels(Plain):
    labels = ("no", "yes", "maybe")


class Unchecked(Plain):
    """No input check: int32 and out-of-range images are scored."""

    def predict(self, images: Any) -> np.ndarray:
        if not isinstance(images, np.ndarray) or images.ndim != 4:
            raise ValueError(f"images must have shape (N, H, W, 3), got {np.shape(images)}")
        return smile_scores(images)


class InPlace(Plain):
    def predict(self, images: Any) -> np.ndarray:
        x = check_images(images)
        x[:, 0, 0] = 0  # "preprocessing" that writes into the caller's array
        return smile_scores(x)


class UnknownKind(Plain):
    output_kind = "probabilities"


class LabelsNotOneHot(Plain):
    output_kind = "labels"


class OffGridOrdinal(Plain):
    output_kind = "ordinal"
    levels = 5


class ConstantEmbedding(Plain):
    output_kind = "embedding"

    def answer(self, x: np.ndarray) -> np.ndarray:
        return np.ones((len(x), 8))


class PairPlain:
    output_kind = "similarity"
    name = "pairs"

    def compare(self, images_a: Any, images_b: Any) -> np.ndarray:
        return self.answer(*check_image_pairs(images_a, images_b))

    def answer(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return similarity(a, b)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class PairColumn(PairPlain):
    """compare returns (P, 1), not (P,)."""

    def answer(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return similarity(a, b)[:, None]


class PairUncounted(PairPlain):
    """Pairs of stacks with different lengths are silently cut to the shorter."""

    def compare(self, images_a: Any, images_b: Any) -> np.ndarray:
        a, b = check_images(images_a, "images_a"), check_images(images_b, "images_b")
        n = min(len(a), len(b))
        return similarity(a[:n], b[:n])


BROKEN = [
    (RowMissing(), "check_model_output"),
    (NaNScore(), "check_model_output"),
    (IntScores(), "check_model_output"),
    (InPlace(), "check_model_output"),
    (SortedRows(), "check_model_row_order"),
    (BatchNormalised(), "check_model_single_image"),
    (Noisy(), "check_model_deterministic"),
    (MultiLineRepr(), "check_model_repr"),
    (WrongNOutputs(), "check_model_n_outputs"),
    (TooManyLabels(), "check_model_n_outputs"),
    (Unchecked(), "check_model_bad_input"),
    (UnknownKind(), "check_model_kind"),
    (LabelsNotOneHot(), "check_model_values"),
    (OffGridOrdinal(), "check_model_values"),
    (ConstantEmbedding(), "check_model_values"),
    (PairColumn(), "check_model_output"),
    (PairUncounted(), "check_model_bad_input"),
]


def test_correct_hand_written_models_pass() -> None:
    assert check_model(Plain()).shape == (3, 2)
    assert check_model(PairPlain()).shape == (3,)


@pytest.mark.parametrize("broken, check", BROKEN, ids=[type(m).__name__ for m, _ in BROKEN])
def test_check_model_catches(broken: Any, check: str) -> None:
    with pytest.raises(AssertionError) as info:
        check_model(broken)
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"check_model({type(broken).__name__}")
    assert f": {check}: " in text, text


def test_a_model_that_declares_its_noise_is_checked_by_shape() -> None:
    assert check_model(NoisyDeclared()).shape == (3, 2)
    assert check_model(Noisy(), deterministic=False).shape == (3, 2)
    with pytest.raises(AssertionError, match="check_model_output"):
        rows_missing = RowMissing()
        rows_missing.deterministic = False  # type: ignore[attr-defined]
        check_model(rows_missing)


def test_check_model_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="n must be an int >= 2"):
        check_model(Plain(), n=1)
    with pytest.raises(AssertionError, match="deterministic must be True or False"):
        check_model(Plain(), deterministic="no")  # type: ignore[arg-type]


def test_the_testing_package_needs_neither_pytest_nor_adapters() -> None:
    code = ("import sys, blackbox_dft.testing; "
            "bad = [m for m in sys.modules if m.split('.')[0] == 'pytest' "
            "or m.startswith('blackbox_dft.adapters')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
