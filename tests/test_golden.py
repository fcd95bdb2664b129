"""Every tuner still gives its pinned result bit for bit (see tests/golden.py)."""

from __future__ import annotations

import json

import pytest
from golden import CASES, GOLDEN


def _pinned() -> dict[str, dict]:
    with open(GOLDEN, encoding="utf-8") as fh:
        return json.load(fh)


def test_every_case_is_pinned():
    assert sorted(_pinned()) == sorted(CASES)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_tuner_result_is_unchanged(name):
    want = _pinned()[name]
    got = CASES[name]()
    # queries and steps first: they say what changed when the bytes differ
    assert (got["queries"], got["steps"]) == (want["queries"], want["steps"])
    assert got["delta_abs_sum"] == want["delta_abs_sum"]
    assert got == want
