"""Tasks, score formats, label maps, and the errors bad input must get."""

import numpy as np
import pytest

from blackbox_dft import SPSA, DataFineTuner, ModelError, Objective, QueryCounter
from blackbox_dft.adapters import CallableModel
from blackbox_dft.core.model import BudgetExhausted
from blackbox_dft.testing import check_model, make_problem

RNG = np.random.default_rng(0)
X = RNG.integers(0, 256, size=(40, 8, 8, 3), dtype=np.uint8)
Y = (X.reshape(40, -1).mean(axis=1) > 127.5).astype(int)


def brightness(x):
    """P(bright) from the mean grey level: a smooth binary black box."""
    m = x.reshape(len(x), -1).mean(axis=1)
    return 1.0 / (1.0 + np.exp(-(m - 127.5) / 4.0))


def fit(model, task="binary", x=X, y=Y, **kw):
    args = dict(epsilon=8, query_budget=1_000, batch_size=8, seed=0, progress=False)
    args.update(kw)
    return DataFineTuner(model, task, **args).fit(x, y)


def test_callable_model_passes_the_adapter_contract():
    s = check_model(CallableModel(lambda x: np.stack([brightness(x)] * 2, 1)))
    assert s.shape[1] == 2


@pytest.mark.parametrize("fmt", ["n", "n1", "n2"])
def test_binary_scores_in_every_shape(fmt):
    def fn(x):
        p = brightness(x)
        return {"n": p, "n1": p[:, None], "n2": np.stack([1 - p, p], 1)}[fmt]

    t = fit(CallableModel(fn))
    r = t.evaluate(X, Y)
    assert 0 <= r["accuracy_after"] <= 1 and set(r["per_class_recall_after"]) == {"0", "1"}


def test_logits_and_probabilities_agree():
    obj_p = Objective("multiclass", "probabilities")
    obj_l = Objective("multiclass", "logits")
    logits = RNG.normal(size=(5, 3))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([0, 1, 2, 1, 0])
    assert np.allclose(obj_p.loss(probs, y), obj_l.loss(logits, y))
    assert np.array_equal(obj_p.predict_labels(probs), obj_l.predict_labels(logits))


def test_label_map_sums_outputs_into_task_classes():
    # 7 emotions -> smiling (happy = 3) vs not
    obj = Objective("binary", label_map=[0, 0, 0, 1, 0, 0, 0])
    raw = np.full((2, 7), 0.1)
    raw[0, 3], raw[1, 3] = 0.4, 0.0
    raw[1] /= raw[1].sum()
    p = obj.probabilities(raw)
    assert np.allclose(p[0], [0.6, 0.4]) and np.allclose(p[1], [1.0, 0.0])
    with pytest.raises(ValueError, match="label_map has 7 entries"):
        obj.probabilities(np.ones((2, 3)) / 3)


def test_multilabel_task_reports_per_attribute():
    def fn(x):
        m = x.reshape(len(x), -1, 3).mean(axis=1)  # per-channel brightness
        return 1.0 / (1.0 + np.exp(-(m - 127.5) / 4.0))

    y = (X.reshape(40, -1, 3).mean(axis=1) > 120).astype(int)
    t = fit(CallableModel(fn), "multilabel", y=y, class_weight="balanced")
    r = t.evaluate(X, y)
    assert len(r["per_attribute_after"]) == 3
    assert r["accuracy_after"] == pytest.approx(
        np.mean([a["accuracy"] for a in r["per_attribute_after"]]))


def test_class_weight_balanced_weights_rare_classes_more():
    obj = Objective("multiclass")
    w = obj.class_weights(np.array([0, 0, 0, 1]), 2, "balanced")
    assert w[1] == pytest.approx(3 * w[0])
    with pytest.raises(ValueError, match="'heavy'"):
        obj.class_weights(np.array([0, 1]), 2, "heavy")


# -- bad input ------------------------------------------------------------------------------
MODEL = CallableModel(lambda x: brightness(x), name="bright")


@pytest.mark.parametrize("images, exc, match", [
    (X[0], ValueError, r"\(N, H, W, 3\)"),
    (X[..., :1], ValueError, r"shape \(40, 8, 8, 1\)"),
    (X.astype(np.int64), TypeError, "dtype int64"),
    (X.astype(np.float64) - 10, ValueError, "outside"),
    (X.tolist(), TypeError, "numpy array"),
])
def test_bad_images(images, exc, match):
    with pytest.raises(exc, match=match):
        fit(MODEL, x=images)


@pytest.mark.parametrize("labels, match", [
    (Y[:-1], "length 39 but there are 40 images"),
    (Y + 1, "binary labels must be 0 or 1, found 2"),
    (Y - 1, "must be >= 0, found -1"),
    (Y[:, None], r"must have shape \(N,\)"),
    (Y + 0.5, "whole numbers"),
])
def test_bad_labels(labels, match):
    with pytest.raises(ValueError, match=match):
        fit(MODEL, y=labels)


def test_labels_beyond_the_models_classes():
    with pytest.raises(ValueError, match="labels go up to 5 but the model's scores give 2"):
        fit(CallableModel(lambda x: np.stack([brightness(x), 1 - brightness(x)], 1)),
            "multiclass", y=np.arange(40) % 6)


@pytest.mark.parametrize("fn, match", [
    (lambda x: brightness(x)[:-1], "returned 15 rows of scores for 16 images"),
    (lambda x: np.full(len(x), np.nan), "NaN or inf"),
    (lambda x: np.ones((len(x), 2, 2)), "shape"),
    (lambda x: "oops", "not a numeric array"),
])
def test_bad_model_output_names_the_adapter(fn, match):
    with pytest.raises(ModelError, match=match) as err:
        fit(CallableModel(fn, name="vendor-x"))
    assert "vendor-x" in str(err.value)


def test_scores_that_do_not_fit_the_task():
    with pytest.raises(ValueError, match=r"binary task needs scores of shape"):
        fit(CallableModel(lambda x: np.ones((len(x), 3)) / 3))
    with pytest.raises(ValueError, match="scores='logits'"):
        fit(CallableModel(lambda x: np.stack([brightness(x) * 5, 1 - brightness(x)], 1)))


@pytest.mark.parametrize("kw, match", [
    ({"epsilon": 0}, "epsilon must be a number > 0"),
    ({"epsilon": -2}, "got -2"),
    ({"query_budget": 10}, "query_budget=10 is smaller than one step"),
    ({"batch_size": 0}, "batch_size"),
    ({"task": "regression"}, "'regression'"),
    ({"optimizer": "rmsprop"}, "'rmsprop'"),
    ({"selection": "f1"}, "'f1'"),
])
def test_bad_settings(kw, match):
    kw = dict(kw)
    task = kw.pop("task", "binary")
    with pytest.raises(ValueError, match=match):
        fit(MODEL, task, **kw)


def test_budget_guard_refuses_before_sending():
    calls = []
    counter = QueryCounter(CallableModel(lambda x: calls.append(len(x)) or brightness(x)),
                           budget=10)
    counter.predict(X[:6])
    with pytest.raises(BudgetExhausted, match="6 used of 10"):
        counter.predict(X[:5])
    assert calls == [6] and counter.queries == 6


def test_small_budget_still_returns_a_valid_result():
    p = make_problem(0)
    t = DataFineTuner(p.model, "multiclass", scores="logits", estimator=SPSA(), batch_size=32,
                      query_budget=64 + 2 * 100, progress=False).fit(*p.train, validation=p.val)
    assert t.n_steps_ == 1 and t.queries_ <= 264


def test_fit_refuses_labels_beyond_declared_outputs_before_any_query():
    """A model that declares its number of outputs: labels it cannot score cost nothing."""
    seen = {"n": 0}

    def fn(x: np.ndarray) -> np.ndarray:
        seen["n"] += len(x)
        return np.zeros((len(x), 3))

    model = CallableModel(fn, name="three-classes", n_outputs=3)
    x = np.zeros((20, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="labels go up to 4 but the model's scores give 3"):
        DataFineTuner(model, query_budget=500, progress=False).fit(x, np.arange(20) % 5)
    assert seen["n"] == 0
