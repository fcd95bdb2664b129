"""The stopping-rule replay (benchmarks/stopping_rules.py): a traced whole-budget fit,
stopped offline by a patience, must give what a real fit with EarlyStopping(patience)
gives: whether it stopped, the queries saved and the held-out accuracy."""

from __future__ import annotations

import os

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


@pytest.fixture
def sr(monkeypatch):
    monkeypatch.syspath_prepend(BENCH)
    import stopping_rules

    return stopping_rules


def test_stop_at_waits_for_every_slot(sr):
    v = [{"queries": 40, "best_steps": [0, 0]},      # baseline: since = 40 for both
         {"queries": 440, "best_steps": [25, 0]},    # slot 0 improves at 440
         {"queries": 840, "best_steps": [25, 0]},
         {"queries": 1240, "best_steps": [25, 75]},  # slot 1 improves at 1240
         {"queries": 1640, "best_steps": [25, 75]},
         {"queries": 2040, "best_steps": [25, 75]}]
    assert sr.stop_at(v, 800) == 5          # slot 0 quiet since 440, slot 1 since 1240
    assert sr.stop_at(v, 400) == 2          # 840: slot 0 quiet 400, slot 1 800
    assert sr.stop_at(v, 801) is None       # never 801 quiet queries in slot 1
    one = [{"queries": 40, "best_steps": [0]}, {"queries": 1040, "best_steps": [0]}]
    assert sr.stop_at(one, 1000) == 1       # no improvement since the baseline


@pytest.mark.parametrize("patience", [1000, 2000])
def test_replay_equals_a_real_stopped_fit(sr, patience):
    from es_tasks import FITS, trace

    from blackbox_dft.core.stopping import EarlyStopping

    tr = trace("synthetic", 0, 10_000)
    real = FITS["synthetic"](0, 10_000, EarlyStopping(patience=patience))
    full = FITS["synthetic"](0, 10_000, None)
    assert tr["after"] == full["after"] and tr["queries"] == full["queries"]
    assert tr["validations"][-1]["accuracy"] == full["after"]
    got = sr.replay(tr, patience)
    assert got == {"stopped": real["stopped"], "saved": real["saved"], "after": real["after"]}
    assert got["stopped"]  # the synthetic fit goes flat within 10,000 queries
