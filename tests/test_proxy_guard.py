"""The proxy's scheduled guard check (issue 15, point 3): a model swapped behind the upstream
flips the proxy to pass-through at the next check, visible in /metrics; the operator's
forced states survive checks; ``auto`` hands control back; a failed check changes nothing.

The check goes where a deployed one goes: to the stand-in server over HTTP, with the canary
of a tuner fitted on the synthetic black box; the swap replaces that box by one whose
scores are negated (an update on which the delta hurts).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("aiohttp")

import requests  # noqa: E402
from test_proxy import Recorder, _metric, serve  # noqa: E402

from blackbox_dft import DataFineTuner, GuardReport, check_delta  # noqa: E402
from blackbox_dft.adapters.remote.http import HTTPModel  # noqa: E402
from blackbox_dft.adapters.remote.vendors import make_preset  # noqa: E402
from blackbox_dft.adapters.serving.proxy import ProxyApp, ProxyConfig, perturber  # noqa: E402
from blackbox_dft.adapters.serving.proxy_rewrite import Rewriter  # noqa: E402
from blackbox_dft.adapters.serving.proxy_state import DeltaState  # noqa: E402
from blackbox_dft.adapters.serving.server import StandInServer  # noqa: E402
from blackbox_dft.testing import make_problem  # noqa: E402

pytestmark = pytest.mark.network

PROBLEM = make_problem(seed=0, n_train=40, n_val=32, n_test=10)
P = "blackbox_dft_proxy_"


class Swappable:
    """The model behind the stand-in server: the synthetic box until ``swap()``, then its
    negated scores; every image it sees is kept (``seen``), checks' and apps' alike."""

    n_outputs = PROBLEM.model.n_outputs

    def __init__(self) -> None:
        self.flipped, self.fail, self.seen = False, False, []

    def predict(self, images: np.ndarray) -> np.ndarray:
        if self.fail:
            raise RuntimeError("model down")
        self.seen.append(np.array(images))
        raw = PROBLEM.model.predict(images)
        return -raw if self.flipped else raw

    def app_batch(self) -> np.ndarray:
        """The last batch of 3 images: the app's (a check sends 4 or 10)."""
        return [x for x in self.seen if len(x) == 3][-1]


@pytest.fixture(scope="module")
def tuner() -> DataFineTuner:
    t = DataFineTuner(PROBLEM.model, scores="logits", query_budget=1_500, canary_size=16,
                      seed=0, progress=False)
    return t.fit(*PROBLEM.train, validation=PROBLEM.val)


def proxy_app(tuner: DataFineTuner, upstream: str, state: DeltaState) -> ProxyApp:
    return ProxyApp(Rewriter(make_preset("json"), perturber(tuner.delta_for)),
                    ProxyConfig(upstream), state)


def _checker(tuner: DataFineTuner, url: str, calls: list[GuardReport]) -> Any:
    """The injected check: the canary sent to the upstream over HTTP (as the CLI's)."""
    model = HTTPModel(url, preset="json", max_retries=0, concurrency=1, timeout=10)

    def check(budget: int | None) -> GuardReport:
        report = check_delta(tuner, model, budget=budget)
        calls.append(report)
        return report

    return check


def _wait(base: str, name: str, value: float, seconds: float = 20.0) -> str:
    """/metrics once ``name`` reached ``value`` (or at the end of ``seconds``: a bound)."""
    end = time.monotonic() + seconds
    while True:
        text = requests.get(base + "/metrics", timeout=5).text
        if _metric(text, name) >= value or time.monotonic() > end:
            return text
        time.sleep(0.02)


def test_a_swapped_model_flips_the_proxy_to_pass_through(tuner, capsys, caplog) -> None:
    caplog.set_level(logging.INFO, "blackbox_dft.proxy")
    model, calls = Swappable(), []
    images = PROBLEM.test[0][:3]
    with StandInServer(model, "json") as up:
        state = DeltaState(_checker(tuner, up.url, calls), every=0.05, budget=20)
        with serve(proxy_app(tuner, up.base_url, state)) as (base, _):
            client = HTTPModel(base + up.path, max_retries=0, concurrency=1)
            _wait(base, P + 'checks_total{result="helps"}', 1)
            assert state.state == "active"
            model.seen.clear()
            client.predict(images)
            np.testing.assert_array_equal(model.app_batch(), tuner.transform(images))
            swapped, before = time.monotonic(), len(calls)
            model.flipped = True
            text = _wait(base, P + 'checks_total{result="hurts"}', 1)
            took = time.monotonic() - swapped
            model.seen.clear()
            client.predict(images)
            health = requests.get(base + "/healthz", timeout=5).json()
    np.testing.assert_array_equal(model.app_batch(), images)  # unperturbed now
    assert health == {"status": "ok", "bypass": True, "state": "bypass_auto"}
    assert _metric(text, P + 'state{state="bypass_auto"}') == 1
    assert _metric(text, P + 'state{state="active"}') == 0
    assert _metric(text, P + "bypass") == 1 and _metric(text, P + "checks_enabled") == 1
    assert _metric(text, P + "last_check_timestamp_seconds") > 0
    detect = calls[before:]
    hurt = next(i for i, c in enumerate(detect) if not c.delta_helps)
    # every check sends the budget: 10 canary images without and with the delta
    assert all(c.queries == 20 for c in calls)
    assert _metric(text, P + "check_queries_total") >= 20 * (before + hurt + 1)
    lines = [r for r in caplog.records if r.name == "blackbox_dft.proxy"]
    checks = [r for r in lines if r.getMessage().startswith("check: model")]
    # a check that finished in its worker thread as the proxy stopped has no log line yet:
    # its result is logged on the event loop, which may already be gone
    assert len(calls) - 1 <= len(checks) <= len(calls)
    assert all(r.levelno == logging.INFO for r in checks)
    assert any("NO LONGER HELPS" in r.getMessage() for r in checks)
    assert [r.levelno for r in lines if "delta state bypass_auto" in r.getMessage()] == [
        logging.WARNING]
    with capsys.disabled():  # the figure for the README: time and queries to detect
        print(f"\nswap detected after {took:.2f} s (check interval 0.05 s), "
              f"{20 * (hurt + 1)} queries, {hurt + 1} check(s)")


def test_forced_states_survive_checks_and_auto_returns_control(tuner) -> None:
    model, calls = Swappable(), []
    model.flipped = True  # the delta hurts from the start
    with StandInServer(model, "json") as up:
        state = DeltaState(_checker(tuner, up.url, calls), every=0.05, budget=8)
        with serve(proxy_app(tuner, up.base_url, state)) as (base, _):
            r = requests.post(base + "/admin/bypass?state=off", timeout=5).json()
            assert r == {"bypass": False, "state": "active_forced"}
            n = len(calls)
            text = _wait(base, P + 'checks_total{result="hurts"}', n + 2)
            assert _metric(text, P + 'state{state="active_forced"}') == 1
            assert state.state == "active_forced"  # two checks said hurts: still forced
            r = requests.post(base + "/admin/bypass?state=auto", timeout=5).json()
            assert r == {"bypass": True, "state": "bypass_auto"}  # the last verdict
            model.flipped = False
            _wait(base, P + 'checks_total{result="helps"}', 1)
            assert state.state == "active"
            r = requests.post(base + "/admin/bypass?state=on", timeout=5).json()
            model.flipped = True
            n = state.results["hurts"]
            text = _wait(base, P + 'checks_total{result="hurts"}', n + 1)
            model.flipped = False
            n = state.results["helps"]
            text = _wait(base, P + 'checks_total{result="helps"}', n + 1)
    assert r == {"bypass": True, "state": "bypass_forced"}
    assert _metric(text, P + 'state{state="bypass_forced"}') == 1
    assert state.state == "bypass_forced"


def test_a_failed_check_leaves_the_state_alone(tuner) -> None:
    model, calls = Swappable(), []
    with StandInServer(model, "json") as up:
        state = DeltaState(_checker(tuner, up.url, calls), every=0.05, budget=8)
        state.auto_bypass = True  # as after a check that said the delta hurts
        model.fail = True  # every check fails (HTTP 500 from the upstream)
        with serve(proxy_app(tuner, up.base_url, state)) as (base, _):
            text = _wait(base, P + 'checks_total{result="error"}', 2)
    assert _metric(text, P + 'checks_total{result="error"}') >= 2
    assert _metric(text, P + 'state{state="bypass_auto"}') == 1
    assert state.results["helps"] == state.results["hurts"] == 0 and not calls


def test_without_a_check_the_schedule_is_off_and_says_so(tuner) -> None:
    with StandInServer(Recorder(), "json") as up:
        state = DeltaState(None, off_reason="no model access (MY_KEY is not set)")
        with serve(proxy_app(tuner, up.base_url, state)) as (base, _):
            text = requests.get(base + "/metrics", timeout=5).text
    assert _metric(text, P + "checks_enabled") == 0
    assert "off: no model access (MY_KEY is not set)" in text
    assert _metric(text, P + 'state{state="active"}') == 1
    with pytest.raises(ValueError, match="budget must be >= 2"):
        DeltaState(None, budget=1)
    with pytest.raises(ValueError, match="interval must be >= 0"):
        DeltaState(None, every=-1)


def test_cli_check_uses_the_runs_model_spec_or_says_why_not(tmp_path, monkeypatch) -> None:
    import json
    import os

    from cli_synthetic import write_npz

    from blackbox_dft.cli.main import main
    from blackbox_dft.cli.proxy import scheduled_check

    data, out = str(tmp_path / "d.npz"), str(tmp_path / "run")
    write_npz(data)
    monkeypatch.setenv("BBDFT_GUARD_MODEL", "same")
    assert main(["fit", "--model", "python:test_guard:predict", "--data", data, "--out", out,
                 "--scores", "logits", "--budget", "1500", "--no-evaluate", "--no-progress",
                 "-q"]) == 0
    check, why = scheduled_check(out)
    assert check is not None and why == ""
    monkeypatch.setenv("BBDFT_GUARD_MODEL", "flipped")
    report = check(8)
    assert report.queries == 8 and not report.delta_helps
    # a run whose model URL takes its key from a variable that is not set: checks off
    path = os.path.join(out, "config.json")
    cfg = json.load(open(path))
    cfg["options"]["model"] = "http://127.0.0.1:9/predict?key=${BBDFT_NO_SUCH_KEY}"
    json.dump(cfg, open(path, "w"))
    monkeypatch.delenv("BBDFT_NO_SUCH_KEY", raising=False)
    check, why = scheduled_check(out)
    assert check is None and why.startswith("no model access") and "BBDFT_NO_SUCH_KEY" in why
