"""Property-based fuzzing of the public API with hypothesis (issue 12, point 7).

The public API: ``blackbox_dft.__all__`` plus VerificationTuner, MultiAttributeTuner,
adapters.CallableModel and blackbox_dft.adapters.local.wrappers. Every input either works (and
then the
result is checked against an independent oracle) or fails with a ValueError/TypeError
(ModelError for what a model returns) whose message is ONE short line; a bad argument or
bad labels never cost a query, and the images a model sees never exceed the budget and
always equal ``queries_``. Examples are derandomized (CI is reproducible); the models are
linear functions of 16x16 images (1 to 9 pixels a side in the tiny-data property), so that
an example takes milliseconds. Run with ``--hypothesis-show-statistics`` for the counts.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from blackbox_dft import (
    NES,
    SGD,
    SPSA,
    Adam,
    DataFineTuner,
    FineTunedModel,
    FullResolution,
    LowResolution,
    ModelError,
    Objective,
    PerImage,
    QueryCounter,
    RandomDirections,
    Schedule,
    SignSGD,
    apply_delta,
    check_images,
    check_scores,
    psnr,
)
from blackbox_dft.adapters import CallableModel
from blackbox_dft.adapters.local.wrappers import LabelOnly, MultiModel, Ordinal
from blackbox_dft.core.model import BudgetExhausted
from blackbox_dft.core.objectives import MAX_CLASS, SCORES, TASKS
from blackbox_dft.tasks.attributes import MultiAttributeTuner
from blackbox_dft.tasks.verification import VerificationTuner
from blackbox_dft.testing import make_problem

# Cheap pure functions get many examples; fits (a few ms each) fewer. derandomize and no
# example database: every run (CI's, a developer's) tries exactly the same examples.
MANY = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FITS = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FEW = settings(max_examples=25, deadline=None, derandomize=True, database=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

CLEAN = (ValueError, TypeError)


def assert_clean(exc: BaseException, types: tuple[type[BaseException], ...] = CLEAN) -> None:
    """The error contract: an expected type and one short line naming the problem."""
    assert isinstance(exc, types), f"{type(exc).__name__}: {exc}"
    msg = str(exc)
    assert msg.strip(), f"{type(exc).__name__} without a message"
    assert "\n" not in msg and len(msg) <= 400, f"not one short line: {msg[:500]!r}"


def outcome(fn: Any, *args: Any, types: tuple[type[BaseException], ...] = CLEAN,
            **kw: Any) -> tuple[Any, BaseException | None]:
    """``(result, None)`` or ``(None, error)`` where the error met :func:`assert_clean`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy's casts may warn; the outcome is what counts
        try:
            return fn(*args, **kw), None
        except Exception as exc:  # noqa: BLE001 - the point is to see every exception type
            assert_clean(exc, types)
            return None, exc


# -- value strategies ---------------------------------------------------------------------
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4))
#: Anything a user might pass where a number or a name is expected.
ANY = st.one_of(
    SCALARS, st.lists(SCALARS, max_size=3), st.tuples(SCALARS, SCALARS),
    st.dictionaries(st.text(max_size=2), SCALARS, max_size=2),
    st.integers(-10**30, 10**30), st.complex_numbers(max_magnitude=1e3),
    st.builds(np.float32, st.floats(width=32)), st.builds(np.int64, st.integers(-5, 5)),
    hnp.arrays(np.float64, hnp.array_shapes(min_dims=0, max_dims=2, max_side=3)))

DTYPES = [np.uint8, np.float16, np.float32, np.float64, np.bool_, np.int16, np.int64,
          np.uint16, np.complex64, object, "U3", "datetime64[s]"]
OBJECTS = st.one_of(st.none(), st.integers(-300, 300), st.floats(), st.text(max_size=3))


@st.composite
def any_array(draw: Any, shapes: Any) -> np.ndarray:
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(shapes)
    if dtype is object:
        return draw(hnp.arrays(object, shape, elements=OBJECTS))
    if dtype in (np.float16, np.float32, np.float64) and draw(st.booleans()):
        return draw(hnp.arrays(dtype, shape, elements=st.floats(0, 255, width=16)))
    return draw(hnp.arrays(dtype, shape))


IMAGE_SHAPES = st.one_of(
    hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=5),
    st.tuples(st.integers(0, 3), st.integers(0, 6), st.integers(0, 6), st.sampled_from([1, 3, 4])),
    st.sampled_from([(1, 1, 300, 3), (1, 300, 1, 3), (2, 1, 1, 3)]))


def uint8_images(max_n: int = 4, max_side: int = 12) -> Any:
    return hnp.arrays(np.uint8, st.tuples(st.integers(1, max_n), st.integers(1, max_side),
                                          st.integers(1, max_side), st.just(3)))


# -- the black boxes --------------------------------------------------------------------------
PROBLEM = make_problem(seed=0, n_train=24, n_val=12, n_test=12)  # 16x16, 4 classes, logits
X, Y = PROBLEM.train
XV, YV = PROBLEM.val


def logits(images: np.ndarray) -> np.ndarray:
    return PROBLEM.model.fn(images)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class Counting:
    """A model that counts the images it is sent, independently of the library."""

    def __init__(self, fn: Any, name: str = "fake") -> None:
        self.fn, self.seen, self.name = fn, 0, name

    def predict(self, images: np.ndarray) -> Any:
        self.seen += images.shape[0]
        return self.fn(images)


def good_answer(task: str, scores: str, images: np.ndarray) -> np.ndarray:
    """What a well-behaved model of this task returns in this score format."""
    return good_answer_from(task, scores, logits(images))


def good_answer_from(task: str, scores: str, z: np.ndarray) -> np.ndarray:
    """Scores ``(N, 4)`` logits ``z`` in the task's format (binary: 2 columns)."""
    if task == "binary":
        z = np.stack([z[:, 0], z[:, 1:].max(axis=1)], axis=1)
    if task == "multilabel":
        return {"probabilities": 1 / (1 + np.exp(-z)), "logits": z,
                "labels": (z > 0).astype(float)}[scores]
    return {"probabilities": softmax(z), "logits": z,
            "labels": np.eye(z.shape[1])[z.argmax(axis=1)]}[scores]


def task_labels(task: str, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    if task == "binary":
        return (y > 0).astype(int)
    if task == "multilabel":
        return (logits(x) > 0).astype(int)
    return y


# -- images, scores, perturbations ------------------------------------------------------------
@MANY
@given(images=st.one_of(any_array(IMAGE_SHAPES), ANY))
def test_check_images_accepts_valid_images_and_refuses_the_rest_in_one_line(images):
    out, err = outcome(check_images, images)
    if err is not None:
        assert "images" in str(err)
        return
    assert isinstance(images, np.ndarray) and out.dtype == np.uint8
    assert out.ndim == 4 and out.shape[-1] == 3 and min(out.shape) >= 1
    if images.dtype == np.uint8:
        assert np.array_equal(out, images)
    else:  # floats in [0, 255] grey levels, rounded
        assert np.issubdtype(images.dtype, np.floating)
        assert np.array_equal(out, np.rint(images.astype(np.float64)).astype(np.uint8))


#: Raw model outputs: nested lists of anything (ints beyond the float range and complex
#: numbers included), long text, arrays of any rank and dtype (complex, dates, text...).
OUTPUTS = st.one_of(
    st.recursive(st.one_of(SCALARS, st.sampled_from([10**400, -10**400, 1 + 2j])),
                 lambda c: st.lists(c, max_size=4), max_leaves=16),
    st.text(min_size=300, max_size=2000),
    any_array(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)),
    hnp.arrays(st.sampled_from([np.float64, np.float32]),
               hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
               elements=st.floats(width=32)),
    hnp.arrays(st.sampled_from([np.int64, np.uint8, np.bool_]),
               hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)),
    hnp.arrays(object, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
               elements=OBJECTS),
    st.dictionaries(st.text(max_size=2), SCALARS, max_size=2), st.text(max_size=20))


@MANY
@given(scores=OUTPUTS, n=st.integers(1, 4))
def test_check_scores_returns_finite_rows_or_one_model_error(scores, n):
    out, err = outcome(check_scores, scores, n, types=(ModelError,))
    if err is None:
        assert out.dtype == np.float64 and out.ndim == 2
        assert out.shape[0] == n and out.shape[1] >= 1 and np.all(np.isfinite(out))


@pytest.mark.parametrize("scores", [
    pytest.param(np.array([[0.5 + 2j, 0.5]]), id="complex scores"),
    pytest.param(np.array([["2020-01-01"]], dtype="datetime64[D]"), id="datetimes"),
    pytest.param([[10**400, 1]], id="int beyond float range"),
    pytest.param("x" * 10_000, id="a 10 kB answer (not echoed whole)"),
])
def test_check_scores_refuses_what_numpy_would_misread(scores):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ModelError) as err:
            check_scores(scores, 1)
    assert_clean(err.value, (ModelError,))
    assert len(str(err.value)) <= 300


@pytest.mark.parametrize("scores", [np.array([[0.5 + 2j, 0.5]]), [[10**400, 1]], "x" * 10_000,
                                    np.array([["2020-01-01"]], dtype="datetime64[D]")],
                         ids=["complex", "overflow", "long string", "datetime"])
def test_callable_model_names_itself_when_refusing_unreadable_outputs(scores):
    model = CallableModel(lambda x: scores, name="vendor-x")
    _, err = outcome(model.predict, X[:1], types=(ModelError,))
    assert err is not None and "vendor-x" in str(err) and len(str(err)) <= 300


@MANY
@given(x=uint8_images(), data=st.data())
def test_apply_delta_is_clip_of_x_plus_rounded_delta(x, data):
    h, w = x.shape[1:3]
    eps = data.draw(st.floats(0.0625, 32.0, width=32))
    delta = data.draw(hnp.arrays(np.float32, (h, w, 3), elements=st.floats(
        -eps, eps, width=32)))
    out = apply_delta(x, delta)
    assert out.dtype == np.uint8 and out.shape == x.shape
    exact = x.astype(np.float64) + delta.astype(np.float64)
    # The README's contract: clip(x + round(delta)), round = numpy rint (ties to even).
    assert np.array_equal(out, np.clip(x + np.rint(delta.astype(np.float64)), 0, 255))
    # Which is a rounding of x + delta: never more than half a grey level away inside [0, 255].
    inside = (exact >= 0) & (exact <= 255)
    assert np.all(np.abs(out[inside] - exact[inside]) <= 0.5)
    p = psnr(x, out)
    assert (p == float("inf")) == np.array_equal(x, out) and (np.isfinite(p) or p > 0)


@MANY
@given(images=st.one_of(uint8_images(2, 6), any_array(IMAGE_SHAPES)), delta=st.one_of(
    any_array(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)), ANY))
def test_apply_delta_refuses_bad_images_and_deltas_in_one_line(images, delta):
    out, err = outcome(apply_delta, images, delta)
    if err is None:
        assert out.dtype == np.uint8 and out.shape == check_images(images).shape


# -- labels and objectives ------------------------------------------------------------------
LABELS = st.one_of(
    any_array(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)),
    hnp.arrays(np.float64, st.integers(1, 5), elements=st.sampled_from(
        [0.0, 1.0, 2.0, 0.5, -1.0, 1e19, 1e9, 1e6, np.nan, 3.0])),
    st.lists(st.one_of(st.integers(-2, 5), st.floats(-1, 5)), max_size=5),
    st.lists(st.lists(st.integers(0, 2), max_size=3), max_size=5), ANY)


def label_oracle(labels: Any, n: int, task: str) -> np.ndarray | None:
    """The int64 labels a task accepts, or None when they must be refused."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = np.asarray(labels)
    except (ValueError, TypeError):
        return None
    if arr.dtype.kind not in "biuf" or arr.ndim == 0 or arr.shape[0] != n or arr.size == 0:
        return None
    if arr.dtype.kind == "f" and not (np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
        return None
    if arr.min() < 0 or arr.max() > MAX_CLASS:
        return None
    arr = arr.astype(np.int64)
    if task == "multilabel":
        return arr if arr.ndim == 2 and np.all((arr == 0) | (arr == 1)) else None
    if arr.ndim != 1 or (task == "binary" and arr.max() > 1):
        return None
    return arr


@MANY
@given(labels=LABELS, n=st.integers(1, 5), task=st.sampled_from(TASKS))
def test_labels_are_accepted_exactly_when_valid(labels, n, task):
    out, err = outcome(Objective(task).check_labels, labels, n)
    want = label_oracle(labels, n, task)
    if want is None:
        assert err is not None, f"accepted {labels!r} for {task}"
        assert "labels" in str(err), f"does not name the labels: {err}"
    else:
        assert err is None and out.dtype == np.int64 and np.array_equal(out, want)


@FITS
@given(labels=LABELS, task=st.sampled_from(TASKS), scores=st.sampled_from(SCORES))
def test_bad_labels_fail_fit_before_any_query(labels, task, scores):
    model = Counting(lambda x: good_answer(task, scores, x))
    x = X[:4]
    t = DataFineTuner(model, task, scores=scores, batch_size=2, query_budget=40, progress=False)
    _, err = outcome(t.fit, x, labels)
    want = label_oracle(labels, 4, task)
    if want is None:
        assert err is not None and model.seen == 0  # refused before the first paid image
    elif want.max() >= {"multiclass": 4, "binary": 2, "multilabel": 2}[task] or (
            task == "multilabel" and want.shape[1] != 4):
        assert err is not None  # labels the model cannot score: after its first answer
    else:
        assert err is None
    assert model.seen <= 40 and model.seen == getattr(t, "queries_", 0)


# -- fits with misbehaving models -------------------------------------------------------------
GARBAGE = ("nan", "inf", "rows+1", "rows-1", "negative", "unnormalised", "huge", "zero_cols",
           "three_d", "strings", "none", "raises", "labels_not_onehot", "constant", "logits")


class Garbage(Counting):
    """A model that answers well for ``start`` calls, then returns ``kind`` of garbage."""

    def __init__(self, kind: str, start: int, task: str, scores: str) -> None:
        super().__init__(self._answer, name="garbage")
        self.kind, self.start, self.task, self.scores, self.calls = kind, start, task, scores, 0

    def _answer(self, x: np.ndarray) -> Any:
        self.calls += 1
        good = good_answer(self.task, self.scores, x)
        if self.calls <= self.start:
            return good
        n = x.shape[0]
        k = self.kind
        if k == "raises":
            raise ModelError("garbage: HTTP 500 from the vendor")
        bad: Any = {
            "nan": np.where(np.arange(good.size).reshape(good.shape) == 0, np.nan, good),
            "inf": np.full_like(good, np.inf), "rows+1": np.vstack([good, good[:1]]),
            "rows-1": good[:-1], "negative": good - 2.0, "unnormalised": good * 0.5,
            "huge": good * 1e300, "zero_cols": np.zeros((n, 0)), "three_d": good[..., None],
            "strings": [["a"] * good.shape[1]] * n, "none": None,
            "labels_not_onehot": np.full_like(good, 0.5), "constant": np.ones_like(good),
            "logits": 3.0 * logits(x)[:, :good.shape[1]],
        }[k]
        return bad


@FITS
@given(kind=st.sampled_from(GARBAGE), start=st.integers(0, 4), task=st.sampled_from(TASKS),
       scores=st.sampled_from(SCORES), budget=st.integers(1, 200), batch=st.integers(1, 8),
       validate=st.booleans())
def test_fit_against_a_garbage_model_fails_clean_and_within_budget(
        kind, start, task, scores, budget, batch, validate):
    model = Garbage(kind, start, task, scores)
    t = DataFineTuner(model, task, scores=scores, epsilon=8.0, batch_size=batch,
                      query_budget=budget, validation_every=2, progress=False, seed=0)
    val = (XV[:6], task_labels(task, YV[:6], XV[:6])) if validate else None
    _, err = outcome(t.fit, X[:12], task_labels(task, Y[:12], X[:12]), validation=val,
                     types=(ModelError, ValueError, TypeError))
    assert model.seen <= budget
    assert model.seen == getattr(t, "queries_", 0)
    if err is None:
        assert np.all(np.isfinite(t.delta_)) and np.abs(t.delta_).max() <= np.float32(8.0)


@FITS
@given(task=st.sampled_from(TASKS), scores=st.sampled_from(SCORES), n=st.integers(1, 3),
       h=st.integers(1, 9), w=st.integers(1, 9), class_weight=st.sampled_from([None, "balanced"]),
       budget=st.integers(1, 60), seed=st.integers(0, 2**16))
# found by review, then pinned: balanced multilabel weights on ONE image were infinite
@example(task="multilabel", scores="probabilities", n=1, h=4, w=4, class_weight="balanced",
         budget=40, seed=1)
def test_tiny_datasets_and_images_fit_or_fail_clean(task, scores, n, h, w, class_weight,
                                                    budget, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)
    z = rng.standard_normal((n, 4))
    y = {"multiclass": z.argmax(1), "binary": (z[:, 0] > 0).astype(int),
         "multilabel": (z > 0).astype(int)}[task]

    def answer(images: np.ndarray) -> np.ndarray:  # a linear model of the mean colour
        m = images.reshape(len(images), -1, 3).mean(axis=1) - 128.0
        zz = np.concatenate([m, m[:, :1] - m[:, 1:2]], axis=1) / 32.0
        return good_answer_from(task, scores, zz)

    model = Counting(answer)
    t = DataFineTuner(model, task, scores=scores, class_weight=class_weight, batch_size=2,
                      query_budget=budget, progress=False)
    _, err = outcome(t.fit, x, y, validation=(x, y))
    if err is not None:
        assert "query_budget" in str(err), str(err)
    else:
        assert np.all(np.isfinite(t.delta_)) and t.delta_.shape == (h, w, 3)
        assert all(np.isfinite(r["loss"]) for r in t.history_)
    assert model.seen <= budget and model.seen == getattr(t, "queries_", 0)


class FailsAt(Counting):
    """Answers ``k`` calls, then fails the way ``how`` says (a vendor outage, garbage)."""

    def __init__(self, fn: Any, k: int, how: str) -> None:
        super().__init__(self._answer)
        self.inner, self.k, self.how, self.calls = fn, k, how, 0

    def _answer(self, x: np.ndarray) -> Any:
        self.calls += 1
        out = self.inner(x)
        if self.calls <= self.k:
            return out
        if self.how == "raises":
            raise ModelError("vendor: HTTP 503")
        return {"nan": np.full_like(out, np.nan), "rows": out[1:]}[self.how]


def _tuner_and_data(kind: str, model: Any) -> tuple[Any, tuple[Any, ...]]:
    if kind == "classification":
        return (DataFineTuner(model, scores="logits", query_budget=300, batch_size=4,
                              progress=False), (X, Y))
    if kind == "verification":
        return VerificationTuner(model, threshold=0.3, query_budget=300), (X[:12], PAIRS)
    return (MultiAttributeTuner(model, query_budget=300, batch_size=4),
            (X[:8], (logits(X[:8]) > 0).astype(int)))


@pytest.mark.parametrize("kind", [
    "classification", "verification", "multiattribute",
])
@FEW
@given(k=st.integers(0, 6), how=st.sampled_from(["raises", "nan", "rows"]))
def test_a_fit_that_fails_reports_every_image_it_sent(kind, k, how):
    fn = {"classification": logits, "verification": embed, "multiattribute": attributes}[kind]
    model = FailsAt(fn, k, how)
    t, data = _tuner_and_data(kind, model)
    _, err = outcome(t.fit, *data, types=(ModelError,))
    assert err is not None or model.calls <= k  # a fit shorter than k calls may finish
    assert model.seen <= 300 and model.seen == getattr(t, "queries_", 0)


# -- valid settings: budget, bound, determinism ---------------------------------------------
ESTIMATORS = st.one_of(
    st.none(),
    st.builds(SPSA, directions=st.integers(1, 3), step=st.floats(0.25, 4.0)),
    st.builds(lambda d, s: PerImage(SPSA(d, s)), st.integers(1, 3), st.floats(0.25, 4.0)),
    st.builds(NES, directions=st.integers(1, 2), step=st.floats(0.25, 4.0)),
    st.builds(lambda d, s: PerImage(NES(d, s)), st.integers(1, 2), st.floats(0.25, 4.0)),
    st.builds(RandomDirections, directions=st.integers(1, 3), step=st.floats(0.25, 4.0)))
PERTURBATIONS = st.one_of(
    st.none(), st.just(FullResolution()),
    st.builds(LowResolution, st.tuples(st.integers(1, 20), st.integers(1, 20)),
              st.sampled_from(["linear", "cubic", "nearest"])))
SETTINGS = st.fixed_dictionaries({
    "epsilon": st.floats(0.01, 32.0), "batch_size": st.integers(1, 8),
    "query_budget": st.integers(40, 400), "seed": st.integers(0, 2**32),
    "estimator": ESTIMATORS, "perturbation": PERTURBATIONS,
    "optimizer": st.sampled_from(["adam", "sgd", "momentum", "nesterov", "sign_sgd"]),
    "lr_schedule": st.sampled_from(Schedule.KINDS),
    "selection": st.sampled_from(["accuracy", "balanced_accuracy", "loss"]),
    "class_weight": st.sampled_from([None, "balanced", {0: 2.0, 3: 0.5}]),
    "energy_penalty": st.sampled_from([0.0, 1e-3]), "validation_every": st.integers(1, 5),
})


def fit_with(kw: dict[str, Any], validate: bool) -> tuple[DataFineTuner, Counting]:
    model = Counting(logits)
    val = (XV, YV) if validate else None
    t = DataFineTuner(model, "multiclass", scores="logits", progress=False, **kw)
    return t.fit(X, Y, validation=val), model


def minimum_budget(kw: dict[str, Any], validate: bool) -> int:
    est = kw["estimator"] or PerImage(SPSA())
    return est.candidates_per_step * min(kw["batch_size"], len(X)) + (
        2 * len(XV) if validate else 0)


@pytest.mark.slow  # 3-8 s on 2 cores: two fits per example
@FITS
@given(kw=SETTINGS, validate=st.booleans())
def test_valid_settings_fit_within_budget_and_bound_deterministically(kw, validate):
    if kw["query_budget"] < minimum_budget(kw, validate):
        kw["query_budget"] = minimum_budget(kw, validate)
    t, model = fit_with(kw, validate)
    eps = kw["epsilon"]
    assert t.queries_ <= kw["query_budget"] and model.seen == t.queries_
    assert np.all(np.isfinite(t.delta_)) and np.abs(t.delta_).max() <= np.float32(eps)
    steps = [r["queries"] for r in t.history_]
    assert steps == sorted(steps) and all(q <= kw["query_budget"] for q in steps)
    # What a user's images receive moves each pixel by at most round(epsilon) grey levels.
    moved = np.abs(t.transform(XV).astype(int) - XV.astype(int))
    assert moved.max() <= np.floor(np.float32(eps) + 0.5)
    again, _ = fit_with(kw, validate)
    assert again.delta_.tobytes() == t.delta_.tobytes() and again.history_ == t.history_


@FEW
@given(kw=SETTINGS)
def test_save_load_round_trip_keeps_delta_and_params(kw):
    kw["query_budget"] = max(kw["query_budget"], minimum_budget(kw, False))
    t, _ = fit_with(kw, False)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "result.npz"
        t.save(path)
        back = DataFineTuner.load(path, Counting(logits))
    assert back.delta_.tobytes() == t.delta_.tobytes()
    assert back.latent_.tobytes() == t.latent_.tobytes()
    assert back.get_config() == t.get_config() and back.queries_ == t.queries_
    assert np.array_equal(back.transform(XV), t.transform(XV))


@pytest.fixture(scope="module")
def fitted() -> DataFineTuner:
    return fit_with({"epsilon": 6.0, "query_budget": 200, "batch_size": 4}, False)[0]


@settings(MANY, max_examples=150)
@given(x=uint8_images(3, 40))
def test_transform_of_any_size_is_the_bounded_rounded_delta(fitted, x):
    out = fitted.transform(x)
    d = fitted.delta_for(*x.shape[1:3])
    assert out.dtype == np.uint8 and out.shape == x.shape
    assert np.array_equal(out, np.clip(x + np.rint(d.astype(np.float64)), 0, 255))
    assert np.abs(out.astype(int) - x.astype(int)).max() <= 6


@FITS
@given(top=st.integers(4, MAX_CLASS), n=st.integers(1, 6), spot=st.integers(0, 5))
def test_evaluate_refuses_labels_beyond_the_models_classes_after_at_most_n_queries(
        fitted, top, n, spot):
    model = Counting(logits)
    fitted.model = model
    y = Y[:n].copy()
    y[spot % n] = top
    _, err = outcome(fitted.evaluate, X[:n], y)
    assert err is not None and isinstance(err, ValueError) and str(top) in str(err)
    assert model.seen <= n
    ok = fitted.evaluate(X[:n], Y[:n])
    assert ok["queries"] == 2 * n and model.seen <= 3 * n


# -- invalid settings: one line at fit, before any query --------------------------------------
BAD_SETTINGS = st.one_of(
    st.tuples(st.just("epsilon"), st.one_of(
        st.sampled_from([0, -1, 0.0, -0.5, float("nan"), float("inf"), -float("inf"), 256,
                         1e9, True, "8", None, [8], 10**400, 5e-324]), ANY)),
    st.tuples(st.just("batch_size"), st.sampled_from([0, -3, 1.5, 2.0, True, "4", None, [4]])),
    st.tuples(st.just("query_budget"), st.sampled_from([0, -1, True, 1e4, "100", None])),
    st.tuples(st.just("validation_every"), st.sampled_from([0, -1, False, 2.5, "2"])),
    st.tuples(st.just("seed"), st.sampled_from([-1, 1.5, "x", True, [1, 2]])),
    st.tuples(st.just("learning_rate"), st.sampled_from(
        [0, -1.0, float("nan"), float("inf"), "0.1", True, [0.1]])),
    st.tuples(st.just("energy_penalty"), st.sampled_from([-1.0, float("nan"), "0", True])),
    st.tuples(st.just("task"), st.sampled_from(["x", "multiclas", "Binary", "", None, 3, ["a"]])),
    st.tuples(st.just("scores"), st.sampled_from(["x", "logit", "probs", None, 1])),
    st.tuples(st.just("estimator"), st.sampled_from(["x", "spsa", "nes", 3, SGD()])),
    st.tuples(st.just("optimizer"), st.sampled_from(["x", "adamw", "SGD", 3, None, SPSA()])),
    st.tuples(st.just("perturbation"), st.sampled_from(["x", "full", (8, 8), SPSA()])),
    st.tuples(st.just("lr_schedule"), st.sampled_from(["x", "cosin", None, 3])),
    st.tuples(st.just("selection"), st.sampled_from(["x", "f1", "acc", None, ["loss"]])),
    st.tuples(st.just("class_weight"), st.sampled_from(
        ["x", "balance", [1, 2], {0: -1.0}, {0: float("nan")}, {"a": 1.0}, {-1: 1.0},
         {0: "heavy"}, {True: 1.0}, np.ones(4)])),
    st.tuples(st.just("label_map"), st.sampled_from(
        [[None, None], ["a", 1], [-1, 0], 3, "0123", [1.5, 0], [True, 0]])))


@FITS
@given(bad=BAD_SETTINGS, base=SETTINGS)
def test_invalid_settings_fail_fit_in_one_line_before_any_query(bad, base):
    name, value = bad
    kw = {k: base[k] for k in ("batch_size", "seed", "optimizer", "validation_every")}
    kw.update(query_budget=400, progress=False, scores="logits")
    kw[name] = value
    task = kw.pop("task", "multiclass")
    model = Counting(logits)
    t = DataFineTuner(model, task, **kw)  # __init__ only stores
    _, err = outcome(t.fit, X, Y)
    assert err is not None, f"{name}={value!r} was accepted"
    assert model.seen == 0, f"{name}={value!r} cost {model.seen} queries"
    assert name in str(err), f"{name}={value!r}: the message does not name it: {err}"
    if isinstance(value, str) and name in ("task", "scores", "selection", "optimizer",
                                           "lr_schedule", "estimator", "perturbation"):
        assert repr(value) in str(err)  # names the offending value


def test_misspelt_names_get_the_closest_valid_one():
    cases = {"task": "multiclas", "scores": "logit", "selection": "balanced_acuracy",
             "optimizer": "adma", "lr_schedule": "cosin", "estimator": "spsa",
             "class_weight": "balance"}
    hints = {"task": "'multiclass'", "scores": "'logits'", "selection": "'balanced_accuracy'",
             "optimizer": "'adam'", "lr_schedule": "'cosine'", "estimator": "SPSA()",
             "class_weight": "'balanced'"}
    for name, value in cases.items():
        kw: dict[str, Any] = {"scores": "logits", "progress": False, name: value}
        task = kw.pop("task", "multiclass")
        with pytest.raises(ValueError, match="did you mean") as err:
            DataFineTuner(Counting(logits), task, **kw).fit(X, Y)
        assert hints[name] in str(err.value), str(err.value)


def test_infinite_epsilon_is_named_as_epsilon():
    with pytest.raises(ValueError, match=r"^epsilon must be a number > 0 and <= 255") as err:
        DataFineTuner(Counting(logits), epsilon=float("inf"), progress=False).fit(X, Y)
    assert "learning rate" not in str(err.value)


# -- components' constructors -----------------------------------------------------------------
def _use_estimator(est: Any) -> None:
    """A constructed estimator must give a finite estimate on a quadratic."""
    z = np.ones((2, 2, 3))

    def f(cands: np.ndarray) -> np.ndarray:  # a bowl that stays finite for any step size
        return (np.tanh(cands / 100.0) ** 2).reshape(*cands.shape[:-3], -1).sum(-1)

    g, loss, q = est.estimate(f, z, np.random.default_rng(0), 3, batch=2)
    assert np.all(np.isfinite(g)) and np.isfinite(loss) and q == est.candidates_per_step


def _use_optimizer(opt: Any) -> None:
    state = opt.init(np.zeros(3))
    for t in range(3):
        step, state = opt.update(np.array([1.0, -2.0, 0.5]), state)
        assert np.all(np.isfinite(step)) and np.isfinite(opt.learning_rate(10 * t))


COMPONENTS = st.one_of(
    st.builds(lambda a, b, c: (SPSA, dict(directions=a, step=b, step_decay=c)),
              ANY, ANY, ANY),
    st.builds(lambda a: (PerImage, dict(base=a)), ANY),
    st.builds(lambda a, b: (NES, dict(directions=a, step=b)), ANY, ANY),
    st.builds(lambda a, b: (RandomDirections, dict(directions=a, step=b)), ANY, ANY),
    st.builds(lambda a, b, c: (Adam, dict(learning_rate=a, b1=b, eps=c)), ANY, ANY, ANY),
    st.builds(lambda a, b, c: (SGD, dict(learning_rate=a, momentum=b, nesterov=c)),
              ANY, ANY, ANY),
    st.builds(lambda a, b: (SignSGD, dict(learning_rate=a, momentum=b)), ANY, ANY),
    st.builds(lambda a, b, c, d, e, f: (Schedule, dict(init=a, kind=b, total=c,
                                                       final_fraction=d, scale=e, rate=f)),
              ANY, st.one_of(st.sampled_from(Schedule.KINDS), ANY), ANY, ANY, ANY, ANY),
    st.builds(lambda a, b: (LowResolution, dict(size=a, interpolation=b)),
              st.one_of(st.tuples(ANY, ANY), ANY), st.one_of(st.just("nearest"), ANY)))


@MANY
@given(spec=COMPONENTS)
def test_components_construct_and_work_or_refuse_in_one_line(spec):
    cls, kw = spec
    obj, err = outcome(cls, **kw)
    if err is not None:  # names the argument (Schedule's init is "learning rate")
        msg = str(err).replace("learning rate", "init learning_rate")
        assert any(k in msg for k in kw), f"{cls.__name__}({kw}): {err}"
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a constructed component must run cleanly
        if isinstance(obj, (SPSA, NES, RandomDirections, PerImage)):
            if obj.directions <= 64:  # more is valid, only slow (10**6 directions: seconds)
                _use_estimator(obj)
        elif isinstance(obj, Schedule):
            assert all(np.isfinite(obj(t)) and obj(t) > 0 for t in (0, 1, 10, 10_000))
        elif isinstance(obj, LowResolution):
            d = obj.to_delta(np.full(obj.latent_shape((5, 7)), 3.0), (5, 7), 2.0)
            assert d.shape == (5, 7, 3) and np.abs(d).max() <= 2.0
        else:
            _use_optimizer(obj)


@MANY
@given(which=st.sampled_from(["callable", "label_only", "ordinal", "multi", "finetuned",
                              "counter"]), a=ANY, b=ANY,
       arr=any_array(hnp.array_shapes(min_dims=3, max_dims=3, min_side=0, max_side=5)))
def test_adapters_and_wrappers_construct_or_refuse_in_one_line(which, a, b, arr):
    base = CallableModel(logits, name="lin")
    make = {
        "callable": lambda: CallableModel(logits, name="lin", n_outputs=a),
        "label_only": lambda: LabelOnly(base, threshold=a, onehot=b),
        "ordinal": lambda: Ordinal(base, levels=a),
        "multi": lambda: MultiModel([("a", base, a)] if b is None else a),
        "finetuned": lambda: FineTunedModel(base, arr if b is None else a),
        "counter": lambda: QueryCounter(base, budget=a),
    }[which]
    obj, err = outcome(make)
    if err is not None:
        names = {"callable": "n_outputs", "label_only": "threshold onehot", "ordinal": "levels",
                 "multi": "head", "finetuned": "delta", "counter": "budget"}[which]
        assert any(n in str(err) for n in names.split()), f"{which}: {err}"
    if err is None and which != "counter":
        out, err2 = outcome(obj.predict, X[:2], types=(ModelError, ValueError, TypeError))
        if err2 is None:
            assert out.shape[0] == 2 and np.all(np.isfinite(out))


@pytest.mark.parametrize("make", [
    pytest.param(lambda m: QueryCounter(m, "100").predict(X[:1]), id="budget '100'"),
    pytest.param(lambda m: QueryCounter(m, -5), id="budget -5"),
    pytest.param(lambda m: QueryCounter(m, float("nan")), id="budget nan"),
    pytest.param(lambda m: FineTunedModel(m, np.full((4, 4, 3), 1 + 1j)), id="complex delta"),
])
def test_model_wrappers_refuse_bad_budgets_and_deltas(make):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError) as err:
            make(CallableModel(logits, name="lin"))
    assert_clean(err.value)


@MANY
@given(budget=st.integers(0, 60), sizes=st.lists(st.integers(1, 20), max_size=8))
def test_query_counter_never_sends_past_its_budget(budget, sizes):
    model = Counting(logits)
    counter = QueryCounter(model, budget)
    for n in sizes:
        before = model.seen
        _, err = outcome(counter.predict, X[:n], types=(BudgetExhausted,))
        assert (err is None) == (before + n <= budget) and model.seen <= budget
        assert counter.queries == model.seen


# -- verification and multi-attribute tuners --------------------------------------------------
RNG = np.random.default_rng(0)
EMBED = RNG.standard_normal((16 * 16 * 3, 6))
PAIRS = np.array([[i, (i + 1) % 12, int(i % 2 == 0)] for i in range(12)])


def embed(images: np.ndarray) -> np.ndarray:
    return (images.reshape(len(images), -1).astype(np.float64) - 128.0) @ EMBED


VERIFICATION_BAD = st.one_of(
    BAD_SETTINGS.filter(lambda kv: kv[0] in ("epsilon", "batch_size", "query_budget",
                                             "validation_every", "seed", "learning_rate",
                                             "estimator", "optimizer", "perturbation")),
    st.tuples(st.just("threshold"), st.sampled_from([2.0, float("nan"), "0.5", True])),
    st.tuples(st.just("loss"), st.sampled_from(["x", "hinge", None])),
    st.tuples(st.just("sharpness"), st.sampled_from([0, -1.0, float("inf"), "20"])),
    st.tuples(st.just("far"), st.sampled_from([-0.1, 1.5, float("nan"), "0.1"])))
PAIR_VALUES = st.one_of(
    hnp.arrays(st.sampled_from([np.int64, np.float64, np.bool_, object, "U2"]),
               st.tuples(st.integers(0, 4), st.integers(2, 4)),
               elements=st.one_of(st.integers(-2, 14), st.floats(-1, 14))),
    st.just([[0, 1, 1], [2, 3]]), st.just([[0, 1, 2]]), st.just([[0, 1e19, 1]]), ANY)


@FITS
@given(bad=st.one_of(VERIFICATION_BAD.map(lambda kv: ("arg", kv)),
                     PAIR_VALUES.map(lambda p: ("pairs", p))))
def test_verification_tuner_refuses_bad_input_before_any_query(bad):
    model = Counting(embed)
    kw: dict[str, Any] = {"threshold": 0.3, "query_budget": 400}
    pairs: Any = PAIRS
    if bad[0] == "arg":
        kw[bad[1][0]] = bad[1][1]
    else:
        pairs = bad[1]
    t = VerificationTuner(model, **kw)
    _, err = outcome(t.fit, X[:12], pairs)
    if bad[0] == "arg":
        assert err is not None, f"{bad[1]} was accepted"
    if err is not None:
        assert model.seen == 0
        assert (bad[1][0] if bad[0] == "arg" else "pairs") in str(err), str(err)
    assert model.seen <= 400 and model.seen == getattr(t, "queries_", 0)


@FEW
@given(eps=st.floats(0.1, 16), budget=st.integers(60, 300), batch=st.integers(1, 6),
       seed=st.integers(0, 100), validate=st.booleans())
def test_verification_fit_stays_within_budget_and_bound(eps, budget, batch, seed, validate):
    model = Counting(embed)
    t = VerificationTuner(model, epsilon=eps, query_budget=budget, batch_size=batch, seed=seed,
                          threshold=None if validate else 0.2)
    _, err = outcome(t.fit, X[:12], PAIRS, validation=(XV, PAIRS) if validate else None)
    if err is None:
        assert np.abs(t.delta_).max() <= np.float32(eps) and t.queries_ <= budget
    else:  # a budget below one step, or d' (threshold=None) on minibatches of one pair
        assert "query_budget" in str(err) or (validate and batch == 1), str(err)
    assert model.seen <= budget and model.seen == getattr(t, "queries_", 0)


MULTI_BAD = st.one_of(
    VERIFICATION_BAD.filter(lambda kv: kv[0] not in ("threshold", "loss", "sharpness", "far")),
    st.tuples(st.just("mode"), st.sampled_from(["x", "shard", None])),
    st.tuples(st.just("scores"), st.sampled_from(["x", "prob", None])),
    st.tuples(st.just("attributes"), st.sampled_from([["a"], "abcd", [1, 2, 3, 4]])))


def attributes(images: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-logits(images)))


@FITS
@given(bad=st.one_of(MULTI_BAD.map(lambda kv: ("arg", kv)), LABELS.map(lambda y: ("y", y))),
       mode=st.sampled_from(["per_attribute", "shared"]))
def test_multiattribute_tuner_refuses_bad_input_before_any_query(bad, mode):
    model = Counting(attributes)
    kw: dict[str, Any] = {"query_budget": 400, "mode": mode}
    y: Any = (logits(X[:8]) > 0).astype(int)
    if bad[0] == "arg":
        kw[bad[1][0]] = bad[1][1]
    else:
        y = bad[1]
    t = MultiAttributeTuner(model, **kw)
    _, err = outcome(t.fit, X[:8], y)
    if bad[0] == "arg" or label_oracle(y, 8, "multilabel") is None:
        assert err is not None and model.seen == 0
        assert (bad[1][0] if bad[0] == "arg" else "labels") in str(err), str(err)
    assert model.seen <= 400 and model.seen == getattr(t, "queries_", 0)


@FEW
@given(eps=st.floats(0.1, 16), budget=st.integers(50, 400), batch=st.integers(1, 6),
       mode=st.sampled_from(["per_attribute", "shared"]), seed=st.integers(0, 100))
def test_multiattribute_fit_stays_within_budget_and_bound(eps, budget, batch, mode, seed):
    model = Counting(attributes)
    y = (logits(X[:8]) > 0).astype(int)
    t = MultiAttributeTuner(model, mode=mode, epsilon=eps, query_budget=budget,
                            batch_size=batch, seed=seed)
    _, err = outcome(t.fit, X[:8], y)
    if err is None:
        assert np.abs(t.deltas_).max() <= np.float32(eps) and t.queries_ <= budget
    else:
        assert "query_budget" in str(err)
    assert model.seen <= budget and model.seen == getattr(t, "queries_", 0)
