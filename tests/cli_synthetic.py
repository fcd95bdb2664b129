"""The synthetic black box as a ``python:cli_synthetic:predict`` model spec for CLI tests.

With ``tests/`` on PYTHONPATH, ``blackbox-dft fit --model python:cli_synthetic:predict``
imports :func:`predict`. Environment variables make it observable and slow enough to
interrupt: ``BBDFT_TEST_COUNTER`` (a file: one line with the image count per call, written
before scoring, so a killed call still shows), ``BBDFT_TEST_DELAY`` (seconds per call).
"""

from __future__ import annotations

import os
import time

import numpy as np
from synthetic import make_problem

PROBLEM = make_problem(seed=0)


def predict(images: np.ndarray) -> np.ndarray:
    """Scores ``(N, 4)`` of the synthetic softmax black box for uint8 ``(N, 16, 16, 3)``."""
    counter = os.environ.get("BBDFT_TEST_COUNTER")
    if counter:
        with open(counter, "a", encoding="utf-8") as fh:
            fh.write(f"{images.shape[0]}\n")
            fh.flush()
    delay = float(os.environ.get("BBDFT_TEST_DELAY", "0") or 0)
    if delay:
        time.sleep(delay)
    return PROBLEM.model.predict(images)


def count(path: str) -> int:
    """Images the model saw, from a counter file (0 if absent)."""
    if not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8") as fh:
        return sum(int(line) for line in fh if line.strip())


def write_npz(path: str) -> None:
    """The problem's train / val / test splits as ``x_train, y_train, ...`` arrays."""
    p = PROBLEM
    np.savez(path, x_train=p.train[0], y_train=p.train[1], x_val=p.val[0], y_val=p.val[1],
             x_test=p.test[0], y_test=p.test[1])
