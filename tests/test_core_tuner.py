"""End-to-end and unit tests of DataFineTuner on the synthetic black box (tests/synthetic.py)."""

import re

import numpy as np
import pytest
from scipy.special import softmax

import blackbox_dft
from blackbox_dft import (
    NES,
    SPSA,
    DataFineTuner,
    FineTunedModel,
    FullResolution,
    LowResolution,
    NotFittedError,
    PerImage,
    RandomDirections,
)
from blackbox_dft.adapters import CallableModel
from blackbox_dft.testing import check_model, make_problem


@pytest.fixture(scope="module")
def problem():
    return make_problem(seed=0)


class Counting:
    """A model wrapper that counts the images it sees (independently of the library)."""

    def __init__(self, model):
        self.model, self.seen, self.calls = model, 0, 0

    def predict(self, images):
        self.seen += images.shape[0]
        self.calls += 1
        return self.model.predict(images)


def tuner(model, **kw):
    args = dict(epsilon=8, scores="logits", query_budget=20_000, seed=0, progress=False)
    args.update(kw)
    return DataFineTuner(model, "multiclass", **args)


def test_the_shift_costs_at_least_15_points(problem):
    clean = problem.accuracy(problem.test_clean, problem.test[1])
    shifted = problem.accuracy(*problem.test)
    assert clean - shifted >= 0.15, (clean, shifted)


@pytest.mark.parametrize("estimator", [SPSA(directions=1, step=2.0), NES(directions=1, step=2.0),
                                       PerImage(SPSA(directions=1, step=2.0))],
                         ids=["SPSA", "NES", "SPSA per image"])
def test_fit_recovers_at_least_10_points_on_held_out_data(problem, estimator):
    model = Counting(problem.model)
    t = tuner(model, estimator=estimator).fit(*problem.train, validation=problem.val)
    before = problem.accuracy(*problem.test)
    after = problem.accuracy(t.transform(problem.test[0]), problem.test[1])
    assert after - before >= 0.10, (before, after)
    assert t.delta_.dtype == np.float32 and t.delta_.shape == (16, 16, 3)
    assert np.abs(t.delta_).max() <= 8.0
    assert t.queries_ == model.seen <= 20_000
    assert t.history_ and all(r["queries"] <= 20_000 for r in t.history_)
    assert t.history_[-1]["queries"] == t.queries_
    assert any("val_accuracy" in r for r in t.history_)


def test_queries_are_counted_exactly_and_the_budget_is_a_hard_cap(problem):
    for budget in (1_000, 2_345):
        model = Counting(problem.model)
        t = tuner(model, query_budget=budget, batch_size=16).fit(*problem.train,
                                                                 validation=problem.val)
        assert t.queries_ == model.seen <= budget
        # each step: 2 candidates x 16 images in one call (+ validation calls)
        assert t.n_steps_ >= 1


def test_same_seed_same_result_other_seed_other_result(problem):
    a = tuner(problem.model, query_budget=3_000).fit(*problem.train, validation=problem.val)
    b = tuner(problem.model, query_budget=3_000).fit(*problem.train, validation=problem.val)
    c = tuner(problem.model, query_budget=3_000, seed=1).fit(*problem.train,
                                                             validation=problem.val)
    assert np.array_equal(a.delta_, b.delta_) and a.history_ == b.history_
    assert not np.array_equal(a.delta_, c.delta_)


@pytest.mark.parametrize("pert", [FullResolution(), LowResolution((4, 4))], ids=repr)
@pytest.mark.parametrize("est", [RandomDirections(directions=2), SPSA(directions=2),
                                 PerImage(RandomDirections(directions=2)),
                                 PerImage(NES(directions=1))], ids=repr)
def test_every_estimator_and_perturbation_runs_within_budget(problem, pert, est):
    t = tuner(problem.model, perturbation=pert, estimator=est, query_budget=2_000)
    t.fit(*problem.train)
    assert t.queries_ <= 2_000 and np.abs(t.delta_).max() <= 8.0
    assert t.latent_.shape == pert.latent_shape((16, 16))


def test_transform_rounds_clips_and_resizes(problem):
    t = tuner(problem.model, query_budget=1_000).fit(*problem.train)
    x = problem.test[0][:5]
    out = t.transform(x)
    expected = np.clip(x.astype(np.float32) + np.rint(t.delta_), 0, 255).astype(np.uint8)
    assert out.dtype == np.uint8 and np.array_equal(out, expected)
    big = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)
    assert t.transform(big).shape == big.shape
    assert np.abs(t.transform(big).astype(int) - big.astype(int)).max() <= 8


def test_evaluate_reports_before_after_and_psnr(problem):
    t = tuner(problem.model, query_budget=4_000).fit(*problem.train, validation=problem.val)
    r = t.evaluate(*problem.test)
    for key in ("accuracy_before", "accuracy_after", "balanced_accuracy_before",
                "balanced_accuracy_after", "per_class_recall_before", "psnr", "ssim"):
        assert key in r
    assert r["queries"] == 2 * len(problem.test[0])
    assert 30 < r["psnr"] < 60 and 0.5 < r["ssim"] <= 1.0
    assert r["accuracy_before"] == pytest.approx(problem.accuracy(*problem.test))


def test_save_load_round_trip_without_pickle(problem, tmp_path):
    t = tuner(problem.model, query_budget=1_500).fit(*problem.train, validation=problem.val)
    path = tmp_path / "run.npz"
    t.save(path)
    with np.load(path, allow_pickle=False) as f:  # loads with pickling disabled
        assert "delta" in f.files
    u = DataFineTuner.load(path, problem.model)
    assert np.array_equal(u.delta_, t.delta_) and u.queries_ == t.queries_
    assert np.array_equal(u.transform(problem.test[0]), t.transform(problem.test[0]))
    assert u.get_config() == t.get_config()


def test_fine_tuned_model_is_a_model_again(problem):
    t = tuner(problem.model, query_budget=1_500).fit(*problem.train)
    ft = FineTunedModel(problem.model, t.delta_)
    s = check_model(ft, height=16, width=16)
    assert s.shape[1] == 4
    x = problem.test[0][:7]
    assert np.allclose(ft.predict(x), problem.model.predict(t.transform(x)))


def test_balanced_accuracy_exposes_majority_class_pushing():
    # a model whose score for class 1 rises with brightness; 80% of labels are 1
    def fn(x):
        m = x.reshape(len(x), -1).mean(axis=1) / 255.0
        return np.stack([1 - m, m], axis=1)

    rng = np.random.default_rng(0)
    x = rng.integers(110, 146, size=(100, 8, 8, 3), dtype=np.uint8)
    y = (rng.random(100) < 0.8).astype(int)
    t = DataFineTuner(CallableModel(fn), "binary", epsilon=30, query_budget=3_000,
                      learning_rate=4.0, seed=0, progress=False).fit(x, y)
    r = t.evaluate(x, y)
    assert r["accuracy_after"] > r["accuracy_before"] + 0.1   # everything became class 1
    assert r["balanced_accuracy_after"] <= r["balanced_accuracy_before"] + 0.01
    assert r["per_class_recall_after"]["0"] < r["per_class_recall_before"]["0"]


def test_not_fitted_errors(problem):
    t = tuner(problem.model)
    for call in (lambda: t.transform(problem.test[0]), lambda: t.evaluate(*problem.test),
                 lambda: t.save("x.npz")):
        with pytest.raises(NotFittedError, match="not fitted"):
            call()


def test_model_error_mid_fit_keeps_best_delta_and_query_count(problem, tmp_path):
    class Flaky:
        def __init__(self):
            self.seen = 0

        def predict(self, images):
            if self.seen > 3_000:
                raise ConnectionError("vendor went away")
            self.seen += len(images)
            return problem.model.predict(images)

    model = Flaky()
    t = tuner(model, query_budget=10_000)
    ckpt = tmp_path / "ckpt.npz"
    with pytest.raises(ConnectionError):
        t.fit(*problem.train, validation=problem.val, checkpoint=ckpt)
    # the failed call (one step: 2 candidates x batch images) was counted: it may have been paid
    assert t.queries_ == model.seen + 2 * t.settings_["batch_size"]
    assert t.n_steps_ > 10 and np.abs(t.delta_).max() > 0
    assert ckpt.exists()


def test_a_checkpoint_from_other_data_is_refused(problem, tmp_path):
    """(Resume equal to an uninterrupted fit: check_tuner, tests/test_contract_tuners.py.)"""
    ckpt = tmp_path / "ckpt.npz"
    tuner(problem.model, query_budget=1_000).fit(*problem.train, checkpoint=ckpt)
    # a checkpoint from other data is refused
    with pytest.raises(ValueError, match="other training data"):
        tuner(problem.model, query_budget=4_000).fit(
            problem.train[0][::-1], problem.train[1][::-1], validation=problem.val,
            checkpoint=ckpt, resume=True)


def test_a_checkpoint_of_older_defaults_names_its_values_and_resumes_with_them(problem,
                                                                              tmp_path):
    """An older version recorded its defaults as values (batch 16, constant schedule...);
    a tuner left at None takes today's. Resuming says which values the checkpoint has, and
    resumes once they are passed: nothing already paid for is lost."""
    old = dict(batch_size=16, learning_rate=0.5, lr_schedule="constant", validation_every=10,
               sampling="uniform")
    ckpt = tmp_path / "ckpt.npz"

    class Stop(Exception):
        pass

    def interrupt(rec, state):
        if rec["step"] == 12:
            raise Stop

    with pytest.raises(Stop):
        tuner(problem.model, query_budget=2_000, **old).fit(
            *problem.train, validation=problem.val, checkpoint=ckpt, checkpoint_every=4,
            callback=interrupt)
    with pytest.raises(ValueError) as info:
        tuner(problem.model, query_budget=2_000).fit(
            *problem.train, validation=problem.val, checkpoint=ckpt, resume=True)
    msg = str(info.value)
    assert "batch_size: 16 in the checkpoint, None now" in msg
    assert "sampling: 'uniform' in the checkpoint, None now" in msg
    assert "pass the checkpoint's values to resume it" in msg
    resumed = tuner(problem.model, query_budget=2_000, **old).fit(
        *problem.train, validation=problem.val, checkpoint=ckpt, resume=True)
    whole = tuner(problem.model, query_budget=2_000, **old).fit(
        *problem.train, validation=problem.val)
    assert resumed.queries_ == whole.queries_ and resumed.n_steps_ == whole.n_steps_
    np.testing.assert_array_equal(resumed.delta_, whole.delta_)


def test_callback_sees_every_step_and_can_stop_early(problem):
    seen = []

    def cb(rec, state):
        seen.append((rec["step"], state.step, state.queries))
        return rec["step"] >= 7

    t = tuner(problem.model, query_budget=20_000).fit(*problem.train, callback=cb)
    assert [s[0] for s in seen] == list(range(1, 8)) and t.n_steps_ == 7
    assert all(a == b for a, b, _ in seen) and seen[-1][2] == t.queries_


def test_energy_penalty_shrinks_the_perturbation(problem):
    kw = dict(query_budget=3_000, selection="loss")
    plain = tuner(problem.model, **kw).fit(*problem.train, validation=problem.val)
    pen = tuner(problem.model, energy_penalty=0.05, **kw).fit(*problem.train,
                                                              validation=problem.val)
    rms = lambda t: float(np.sqrt(np.mean(t.delta_.astype(np.float64) ** 2)))  # noqa: E731
    assert rms(pen) < 0.8 * rms(plain), (rms(pen), rms(plain))
    assert pen.get_params()["energy_penalty"] == 0.05


@pytest.mark.parametrize("bad", [-0.1, float("nan"), "0.1", True])
def test_energy_penalty_must_be_a_finite_non_negative_number(problem, bad):
    with pytest.raises(ValueError, match=r"energy_penalty must be a finite number >= 0.*"
                       + re.escape(repr(bad))):
        tuner(problem.model, energy_penalty=bad).fit(*problem.train)


def test_per_image_estimator_round_trips_and_is_refused_where_unsupported(problem, tmp_path):
    from blackbox_dft.tasks.attributes import MultiAttributeTuner
    est = PerImage(SPSA(directions=1, step=2.0))
    t = tuner(problem.model, estimator=est, query_budget=1_000).fit(*problem.train)
    t.save(tmp_path / "d.npz")
    back = DataFineTuner.load(tmp_path / "d.npz", problem.model)
    assert back.get_config()["estimator"] == est.get_config()
    assert isinstance(back.estimator, PerImage)
    with pytest.raises(ValueError, match="shared-direction estimators"):
        MultiAttributeTuner(problem.model, estimator=est, query_budget=500).fit(
            problem.train[0], np.eye(2, dtype=int)[problem.train[1] % 2])


@pytest.mark.parametrize("pert", [LowResolution((5, 4), interpolation="nearest"),
                                  LowResolution((7, 3), interpolation="nearest"),
                                  LowResolution((16, 16), interpolation="nearest"),
                                  LowResolution((5, 4)), FullResolution()], ids=repr)
@pytest.mark.parametrize("hw", [(40, 30), (53, 41), (224, 224)])
def test_perturb_paired_is_exactly_clip_of_image_plus_rounded_delta(pert, hw):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(4, *hw, 3), dtype=np.uint8)
    zs = rng.uniform(-9.0, 9.0, size=(4, *pert.latent_shape(hw)))
    zs[0, 0, 0, 0], zs[1, 0, 0, 0] = 2.5, -0.5  # rounding ties
    want = np.clip(x + np.rint(pert.to_deltas(zs, hw, 8.0)), 0, 255).astype(np.uint8)
    assert np.array_equal(pert.perturb_paired(x, zs, 8.0), want)
    out = np.zeros((6, *hw, 3), dtype=np.uint8)
    pert.perturb_paired(x, zs, 8.0, out=out[1:5])
    assert np.array_equal(out[1:5], want) and not out[0].any() and not out[5].any()
    strided = np.zeros((4, hw[0], hw[1] + 3, 3), dtype=np.uint8)[:, :, :hw[1]]
    pert.perturb_paired(x, zs, 8.0, out=strided)  # a non-contiguous out is written too
    assert np.array_equal(strided, want)


@pytest.mark.parametrize("epsilon", [0.4, 8.0, 300.0])
def test_nearest_perturb_paired_saturates_exactly_at_both_ends(epsilon):
    """Black and white images under the largest latents (|z| beyond 255 at epsilon 300):
    the saturating passes clip at 0 and 255 and never wrap."""
    pert = LowResolution((4, 4), interpolation="nearest")
    x = np.zeros((4, 12, 12, 3), dtype=np.uint8)
    x[1], x[2, :6], x[3] = 255, 255, 128
    zs = np.random.default_rng(1).choice([-1e3, -300.0, -2.0, 0.0, 2.0, 300.0, 1e3],
                                         size=(4, 4, 4, 3))
    want = np.clip(x + np.rint(pert.to_deltas(zs, (12, 12), epsilon)), 0, 255)
    assert np.array_equal(pert.perturb_paired(x, zs, epsilon), want.astype(np.uint8))


@pytest.mark.parametrize("make", [
    lambda m: blackbox_dft.VerificationTuner(m),
    lambda m: blackbox_dft.MultiAttributeTuner(m, ["a", "b"]),
])
def test_every_tuner_is_exported_and_raises_the_one_not_fitted_error(make):
    tuner = make(CallableModel(lambda x: np.zeros((len(x), 2)), name="m"))
    with pytest.raises(NotFittedError, match="not fitted"):
        tuner.transform(np.zeros((1, 4, 4, 3), np.uint8), *(() if isinstance(
            tuner, blackbox_dft.VerificationTuner) else (0,)))


def test_swapped_binary_labels_are_warned_about_before_the_budget_is_spent(caplog):
    """Class folders sorted by name can put the model's positive class first: the unperturbed
    model is then far below chance on validation, and the fit says so at its baseline."""
    p = make_problem(0)
    binary = CallableModel(lambda x: softmax(p.model.predict(x), axis=1)[:, :2],
                           name="two-of-four")
    y = (p.train[1] == 1).astype(int)
    keep = p.train[1] < 2
    xv, yv = p.val[0][p.val[1] < 2], p.val[1][p.val[1] < 2]
    seen = []

    def stop(record, state):  # the warning must come before the first step
        seen.append([r.message for r in caplog.records])
        return True

    with caplog.at_level("WARNING", logger="blackbox_dft"):
        DataFineTuner(binary, "binary", query_budget=2_000, progress=False).fit(
            p.train[0][keep], 1 - y[keep], validation=(xv, 1 - yv), callback=stop)
    assert any("below chance" in m and "label order" in m for m in seen[0])
    caplog.clear()
    with caplog.at_level("WARNING", logger="blackbox_dft"):
        DataFineTuner(binary, "binary", query_budget=2_000, progress=False).fit(
            p.train[0][keep], y[keep], validation=(xv, yv), callback=lambda r, s: True)
    assert not any("below chance" in r.message for r in caplog.records)
