"""The contract every adapter (Model implementation) must pass; used by several test files."""

from __future__ import annotations

import numpy as np
import pytest


def check_model_contract(model, height: int = 25, width: int = 25, n: int = 3,
                         seed: int = 0) -> np.ndarray:
    """Shape, dtype, determinism, input order and bad-input errors of ``model.predict``."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, height, width, 3), dtype=np.uint8)
    s = model.predict(x)
    assert isinstance(s, np.ndarray) and s.ndim == 2 and s.shape[0] == n
    assert np.issubdtype(s.dtype, np.floating) and np.all(np.isfinite(s))
    # deterministic, and rows follow the input order
    assert np.allclose(model.predict(x), s, atol=1e-6)
    assert np.allclose(model.predict(x[::-1]), s[::-1], atol=1e-6)
    assert np.allclose(model.predict(x[1:2]), s[1:2], atol=1e-6)
    # bad input: clear errors naming the problem
    with pytest.raises(ValueError, match="shape"):
        model.predict(x[0])
    with pytest.raises(TypeError, match="dtype"):
        model.predict(x.astype(np.int32))
    with pytest.raises(ValueError, match="outside"):
        model.predict(x.astype(np.float32) * 2.0)
    with pytest.raises(TypeError, match="numpy array"):
        model.predict([[1, 2, 3]])
    # a useful repr: one line that says what the model is
    text = repr(model)
    assert "\n" not in text and type(model).__name__ in text, text
    return s
