"""The CLI's model wrappers on bad input and on pair models: the query cache, the money meter
and a ``python:`` model spec refuse input that is not images before anything is counted or
sent, and a pair model (``compare`` only) can be cached."""

from __future__ import annotations

import numpy as np
import pytest
from cli_synthetic import PROBLEM

from blackbox_dft.adapters.base import CallablePairModel
from blackbox_dft.adapters.specs import build_model
from blackbox_dft.cli.cache import CachedModel
from blackbox_dft.cli.meter import Meter
from blackbox_dft.core.model import ModelError


def _pairs(n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    x = PROBLEM.test[0]
    return x[:n], x[n:2 * n]


def test_a_pair_model_without_predict_can_be_cached(tmp_path):
    calls: list[int] = []

    def sims(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        calls.append(len(a))
        return np.mean(a.astype(float) - b, axis=(1, 2, 3))

    cache = CachedModel(CallablePairModel(sims, name="pairs"), tmp_path / "c.sqlite", "k")
    try:
        a, b = _pairs()
        first = cache.compare(a, b)
        again = cache.compare(a, b)
        assert np.array_equal(first, again) and first.shape == (3,)
        assert calls == [3]  # the second call was answered by the file
        assert cache.hits == 2 * 3 and cache.misses == 2 * 3  # a pair counts its 2 images
        with pytest.raises(TypeError, match="pair model"):
            cache.predict(a)
    finally:
        cache.close()


def test_a_model_with_neither_predict_nor_compare_is_refused(tmp_path):
    with pytest.raises(TypeError, match="predict method .* or a compare method"):
        CachedModel(object(), tmp_path / "c.sqlite", "k")


@pytest.mark.parametrize("bad", [[[0, 1, 2]], np.zeros((2, 4, 4)), "images"])
def test_meter_refuses_bad_input_before_counting_it(tmp_path, bad):
    ledger = tmp_path / "spend.json"
    meter = Meter(PROBLEM.model, cost_per_1000=1.0, ledger=str(ledger))
    with pytest.raises((TypeError, ValueError), match="images"):
        meter.predict(bad)
    assert meter.asked == 0 and not ledger.exists()
    with pytest.raises((TypeError, ValueError), match="images_a"):
        meter.compare(bad, bad)
    assert meter.asked == 0
    meter.predict(PROBLEM.test[0][:4])
    assert meter.asked == 4


def test_python_spec_bad_input_is_not_a_model_failure(monkeypatch):
    model = build_model("python:cli_synthetic:predict")
    with pytest.raises(TypeError, match="numpy array"):
        model.predict([[1, 2, 3]])
    monkeypatch.setenv("BBDFT_TEST_COUNTER", "/dev/null")
    monkeypatch.setenv("BBDFT_TEST_FAIL_AFTER", "0")  # the user's code raises ConnectionError
    with pytest.raises(ModelError, match="python:cli_synthetic:predict failed"):
        model.predict(PROBLEM.test[0][:2])
