"""Minibatch sampling (blackbox_dft.core.sampling) and the engine's validation cadence: uniform
draws as the fits always drew, importance draws unbiased and drawn towards the errors the
answers showed, its state resumed exactly (a failed step undone), and validation_every=None
validating on the documented cadence."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from blackbox_dft import DataFineTuner, ModelError
from blackbox_dft.core.engine import VALIDATION_RATIO, resolve_validation_every
from blackbox_dft.core.sampling import (
    IMPORTANCE_FLOOR,
    draw_minibatch,
    inclusion_probabilities,
    observe_losses,
)
from blackbox_dft.testing import make_problem


def test_uniform_draws_what_the_fits_always_drew():
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    for _ in range(5):
        idx, w = draw_minibatch("uniform", 50, 8, a, {})
        assert w is None and np.array_equal(idx, b.choice(50, size=8, replace=False))
    idx, w = draw_minibatch("uniform", 6, 8, a, {})
    assert np.array_equal(idx, np.arange(6)) and w is None


def test_importance_weighted_minibatch_mean_is_unbiased():
    rng = np.random.default_rng(0)
    n, b = 40, 8
    err = rng.uniform(0.0, 1.0, n)
    err[:3] = 30.0  # sizes whose share of the batch exceeds 1: capped
    extra: dict[str, Any] = {"sampling_error": err.tolist()}
    # e.g. each image's loss difference along its direction, larger where the error is
    values = rng.normal(size=n) + 2.0 * np.minimum(err, 2.0)
    draws = 20_000
    means = np.empty(draws)
    for i in range(draws):
        idx, w = draw_minibatch("importance", n, b, rng, extra)
        assert len(set(idx.tolist())) == b  # distinct images
        means[i] = np.mean(w * values[idx])
    se = means.std() / math.sqrt(draws)
    assert abs(means.mean() - values.mean()) < 4 * se


def test_inclusion_probabilities_are_capped_proportional_and_sum_to_the_batch():
    pi = inclusion_probabilities(np.array([100.0, 1.0, 2.0, 3.0, 4.0, 50.0]), 3)
    assert pi.sum() == pytest.approx(3.0) and pi.max() <= 1.0
    assert pi[0] == 1.0 and pi[5] == 1.0  # capped
    assert pi[1:5] == pytest.approx(np.array([1.0, 2.0, 3.0, 4.0]) / 10.0)


def test_importance_includes_each_image_with_its_probability_with_a_floor():
    n, b = 12, 3
    err = np.linspace(0.0, 0.9, n)
    extra = {"sampling_error": err.tolist()}
    rng = np.random.default_rng(1)
    draws = 6000
    counts = np.zeros(n)
    for _ in range(draws):
        idx, w = draw_minibatch("importance", n, b, rng, extra)
        np.add.at(counts, idx, 1)
        assert np.all(w > 0) and np.all(np.isfinite(w))
    want = inclusion_probabilities(err + IMPORTANCE_FLOOR * err.mean(), b)
    assert np.allclose(counts / draws, want, atol=0.025)
    assert counts[0] > 0  # an image the model gets right stays in play (the floor)
    assert counts[-1] > 5 * counts[0]


def test_observe_losses_records_each_images_error_from_the_answers():
    extra: dict[str, Any] = {}
    losses = np.array([[0.0, 1.0, 3.0], [0.2, 1.0, 1.0]])  # (M candidates, batch)
    observe_losses("importance", np.array([4, 0, 2]), losses, extra, 6)
    kept = extra["sampling_error"]
    assert len(kept) == 6 and json.loads(json.dumps(extra)) == extra
    seen = 1.0 - np.exp(-np.array([1.0, 2.0, 0.1]))  # images 0, 2, 4
    assert np.allclose([kept[0], kept[2], kept[4]], seen)
    assert kept[1] is None and kept[3] is None and kept[5] is None  # not sent yet
    # an image not sent yet counts as the mean error of those sent
    rng = np.random.default_rng(0)
    counts = np.zeros(6)
    for _ in range(3000):
        np.add.at(counts, draw_minibatch("importance", 6, 2, rng, extra)[0], 1)
    size = np.array([seen[0], seen.mean(), seen[1], seen.mean(), seen[2], seen.mean()])
    want = inclusion_probabilities(size + IMPORTANCE_FLOOR * size.mean(), 2)
    assert np.allclose(counts / 3000, want, atol=0.03)
    observe_losses("uniform", np.array([1]), np.ones((2, 1)), extra, 6)
    assert extra["sampling_error"] == kept  # uniform keeps no state


def test_bad_sampling_is_one_line_naming_the_choices():
    p = make_problem(0, n_train=40, n_val=10)
    t = DataFineTuner(p.model, scores="logits", sampling="importanse", query_budget=200,
                      progress=False)
    with pytest.raises(ValueError, match=r"sampling must be one of 'uniform' or "
                                         r"'importance', got 'importanse'; did you mean "
                                         r"'importance'\?$"):
        t.fit(*p.train)


def _fit(model: Any, p: Any, **kw: Any) -> DataFineTuner:
    args = dict(scores="logits", sampling="importance", batch_size=8, query_budget=900,
                validation_every=3, seed=4, progress=False)
    return DataFineTuner(model, **{**args, **kw})


class FailsOnce:
    """The synthetic model, failing (ModelError) on its ``at``-th call only."""

    def __init__(self, inner: Any, at: int) -> None:
        self.inner, self.at, self.calls = inner, at, 0

    def predict(self, images: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls == self.at:
            raise ModelError("simulated outage")
        return self.inner.predict(images)


@pytest.mark.parametrize("at", [5, 7, 9])  # validations after a step (5, 9), a step (7)
def test_importance_fit_resumes_as_it_would_have_run_after_a_failed_call(tmp_path, at):
    p = make_problem(0, n_train=60, n_val=20)
    whole = _fit(p.model, p).fit(*p.train, validation=p.val)
    ckpt = tmp_path / "fit.npz"
    failing = FailsOnce(p.model, at)
    with pytest.raises(ModelError):
        _fit(failing, p).fit(*p.train, validation=p.val, checkpoint=ckpt, checkpoint_every=1)
    again = _fit(failing, p).fit(*p.train, validation=p.val, checkpoint=ckpt, resume=True)
    # the same steps (minibatches drawn from the same errors), up to the last one, which the
    # images lost to the failed call (paid, counted) may leave unaffordable
    n = len(again.history_)
    assert n >= len(whole.history_) - 1 and again.history_ == whole.history_[:n]


def test_importance_fit_sends_the_images_it_gets_wrong_more_often():
    """Dark images are answered right (class 0, P = 0.99), bright ones wrong: importance
    sampling sends mostly bright ones once it has seen each image; uniform sends both alike."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.integers(0, 60, (20, 8, 8, 3)),
                        rng.integers(196, 256, (20, 8, 8, 3))]).astype(np.uint8)
    y = np.zeros(40, dtype=np.int64)

    def bright_share(sampling: str) -> float:
        sent: list[np.ndarray] = []

        class Model:
            def predict(self, images: np.ndarray) -> np.ndarray:
                sent.append(images.mean(axis=(1, 2, 3)) > 128)
                p1 = np.where(sent[-1], 0.99, 0.01)
                return np.stack([1 - p1, p1], axis=1)

        DataFineTuner(Model(), "binary", epsilon=1.0, sampling=sampling, batch_size=4,
                      query_budget=800, seed=0, progress=False).fit(x, y)
        return float(np.concatenate(sent[len(sent) // 2:]).mean())  # the second half

    assert bright_share("importance") > 0.8
    assert 0.3 < bright_share("uniform") < 0.7


def test_validation_every_none_validates_on_the_engines_cadence():
    p = make_problem(0, n_train=60, n_val=20)
    t = DataFineTuner(p.model, scores="logits", batch_size=4, validation_every=None,
                      query_budget=2000, progress=False).fit(*p.train, validation=p.val)
    every = math.ceil(VALIDATION_RATIO * 20 / (2 * 4))  # 2 candidates x 4 images a step
    steps = [h["step"] for h in t.history_ if "val_accuracy" in h]
    assert steps[:-1] == list(range(every, steps[-1], every)) and len(steps) >= 3
    assert steps[-1] == t.history_[-1]["step"]  # and the last step
    assert DataFineTuner.from_config(p.model, t.get_config()).validation_every is None

    class NoValidation:
        validation_cost, step_cost = 0, 8

    assert resolve_validation_every(None, NoValidation()) == 1  # type: ignore[arg-type]
    assert resolve_validation_every(7, NoValidation()) == 7  # type: ignore[arg-type]


def test_validation_every_auto_is_the_cadence_and_none_is_the_recipes():
    p = make_problem(0, n_train=60, n_val=20)

    def validated(**kw):
        t = DataFineTuner(p.model, scores="logits", batch_size=4, query_budget=2000,
                          progress=False, **kw).fit(*p.train, validation=p.val)
        return [h["step"] for h in t.history_ if "val_accuracy" in h]

    assert validated(validation_every="auto") == validated(validation_every=None)
    assert validated(validation_every="auto") != validated(validation_every=10)
    with pytest.raises(ValueError, match=r"validation_every must be an int >= 1 or 'auto', "
                                         r"got 'sometimes'"):
        DataFineTuner(p.model, validation_every="sometimes").fit(*p.train)


def test_settings_left_at_none_take_the_recipe_of_the_score_kind():
    from blackbox_dft.tasks.classification import LABEL_RECIPE, SCORE_RECIPE

    p = make_problem(0, n_train=60, n_val=20)
    t = DataFineTuner(p.model, scores="logits", query_budget=600, progress=False,
                      epsilon=8).fit(*p.train, validation=p.val)
    s = t.settings_
    assert (s["batch_size"], s["lr_schedule"], s["sampling"], s["validation_every"]) == (
        SCORE_RECIPE.batch_size, "inverse_sqrt", "importance", "auto")
    assert s["learning_rate"] == pytest.approx(8 * SCORE_RECIPE.lr_fraction)
    # the history's learning rate decays as lr / sqrt(1 + t / 30)
    lrs = [h["learning_rate"] for h in t.history_]
    assert lrs[30] == pytest.approx(lrs[0] / math.sqrt(2))
    # given settings win over the recipe
    t = DataFineTuner(p.model, scores="logits", query_budget=600, progress=False, batch_size=5,
                      lr_schedule="constant", sampling="uniform",
                      validation_every=3).fit(*p.train, validation=p.val)
    assert (t.settings_["batch_size"], t.settings_["lr_schedule"], t.settings_["sampling"],
            t.settings_["validation_every"]) == (5, "constant", "uniform", 3)
    assert len({h["learning_rate"] for h in t.history_}) == 1
    assert t.batch_size == 5 and DataFineTuner(p.model).batch_size is None  # params as given
    assert LABEL_RECIPE.batch_size == 16 and LABEL_RECIPE.validation_every == 10


def test_importance_with_no_error_seen_anywhere_draws_uniformly():
    # every answer so far perfect (loss 0): the errors give no preference, and the weights
    # stay finite (found by tests/test_fuzz_api.py: batch 1, epsilon 1, 40 queries)
    extra: dict[str, Any] = {}
    observe_losses("importance", np.arange(5), np.zeros((2, 5)), extra, 5)
    idx, w = draw_minibatch("importance", 5, 2, np.random.default_rng(0), extra)
    assert len(set(idx.tolist())) == 2 and np.all(np.isfinite(w))
    np.testing.assert_allclose(w, 1.0)
