"""Many attributes from one call: lockstep per-attribute fits, shared fits, query sharing."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from blackbox_dft.adapters import CallableModel
from blackbox_dft.tasks.attributes import MultiAttributeTuner
from blackbox_dft.testing import make_problem

Split = tuple[np.ndarray, np.ndarray]


def _multilabel_problem() -> tuple[CallableModel, Split, Split, Split]:
    """The synthetic 4-class softmax read as 3 one-vs-rest attributes ``P(class a)``."""
    p = make_problem(seed=2)
    model = CallableModel(lambda x: softmax(p.model.predict(x), axis=1)[:, :3],
                          name="synthetic-attributes", n_outputs=3)

    def onehot(split: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return split[0], (split[1][:, None] == np.arange(3)[None]).astype(np.int64)

    return model, onehot(p.train), onehot(p.val), onehot(p.test)


def test_per_attribute_lockstep_improves_and_shares_queries() -> None:
    model, train, val, test = _multilabel_problem()
    tuner = MultiAttributeTuner(model, ["a0", "a1", "a2"], query_budget=9_000, seed=0)
    tuner.fit(*train, validation=val)
    assert tuner.queries_ <= 9_000
    assert tuner.deltas_.shape == (3, 16, 16, 3)
    # The clean validation pass is sent once for three attributes.
    assert tuner.queries_saved_ >= 2 * len(val[1])
    ev = tuner.evaluate(*test)
    assert set(ev["per_attribute"]) == {"a0", "a1", "a2"}
    assert ev["queries"] < ev["queries_separate"]
    gains = [r["balanced_accuracy_after"] - r["balanced_accuracy_before"]
             for r in ev["per_attribute"].values()]
    assert np.mean(gains) > 0.03, ev
    again = MultiAttributeTuner(model, ["a0", "a1", "a2"], query_budget=9_000, seed=0)
    assert np.array_equal(again.fit(*train, validation=val).deltas_, tuner.deltas_)


def test_shared_mode_uses_one_delta() -> None:
    model, train, val, test = _multilabel_problem()
    tuner = MultiAttributeTuner(model, mode="shared", query_budget=4_000, seed=0)
    tuner.fit(*train, validation=val)
    assert np.array_equal(tuner.deltas_[0], tuner.deltas_[2])
    ev = tuner.evaluate(*test)
    assert ev["queries"] == 2 * len(test[1])  # clean + one distinct delta
    assert ev["accuracy_after"] >= ev["accuracy_before"] - 0.02


def test_label_only_attributes_and_bad_input() -> None:
    model, train, val, _ = _multilabel_problem()
    lo = CallableModel(lambda x: (model.predict(x) >= 0.5).astype(float), name="decisions")
    lo.output_kind = "labels"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="scores='labels'"):
        MultiAttributeTuner(lo).fit(*train)
    tuner = MultiAttributeTuner(lo, scores="labels", query_budget=3_000, seed=0)
    assert tuner.fit(*train, validation=val).queries_ <= 3_000
    with pytest.raises(ValueError, match="mode"):
        MultiAttributeTuner(model, mode="both").fit(*train)
    with pytest.raises(ValueError, match="attribute names"):
        MultiAttributeTuner(model, ["only-one"]).fit(*train)


@pytest.mark.parametrize("mode", ["per_attribute", "shared"])
def test_a_failed_and_resumed_fit_counts_separate_and_lost_queries(mode: str, tmp_path) -> None:
    """A model failure mid-fit keeps a checkpoint; resuming finishes the same fit and books
    the failed call in queries_ and queries_separate_ (the generic resume check is
    check_tuner's)."""
    model, train, val, _ = _multilabel_problem()
    # room at the end (308 / 116 images) for the failed call's images, paid again on resume
    kw = {"mode": mode, "query_budget": 6_300, "seed": 1}
    full = MultiAttributeTuner(model, ["a0", "a1", "a2"], **kw).fit(*train, validation=val)
    seen = {"n": 0, "failed": False}

    def flaky_fn(x: np.ndarray) -> np.ndarray:
        if seen["n"] > 3_000 and not seen["failed"]:
            seen["failed"] = True
            raise ConnectionError("vendor went away")
        seen["n"] += len(x)
        return model.predict(x)

    flaky = CallableModel(flaky_fn, name="flaky-attributes", n_outputs=3)
    ckpt = tmp_path / "m.npz"
    with pytest.raises(ConnectionError):
        MultiAttributeTuner(flaky, ["a0", "a1", "a2"], **kw).fit(
            *train, validation=val, checkpoint=ckpt, checkpoint_every=4)
    assert ckpt.exists()
    resumed = MultiAttributeTuner(flaky, ["a0", "a1", "a2"], **kw).fit(
        *train, validation=val, checkpoint=ckpt, checkpoint_every=4, resume=True)
    assert np.array_equal(resumed.deltas_, full.deltas_)
    assert resumed.best_step_ == full.best_step_
    # every finished step was in the checkpoint: the model answered each image once; the
    # failed call (charged: it may have been paid) is counted on top, as DataFineTuner does
    assert seen["n"] == full.queries_
    lost = resumed.queries_ - full.queries_
    assert 0 < lost <= 3 * 2 * 32 and resumed.queries_separate_ - full.queries_separate_ in (
        lost, 3 * lost)
    with pytest.raises(ValueError, match="other settings"):
        MultiAttributeTuner(model, ["a0", "a1", "a2"], mode=mode, query_budget=7_000,
                            seed=1).fit(*train, validation=val, checkpoint=ckpt, resume=True)


def test_a_budget_below_one_step_is_refused_naming_the_minimum() -> None:
    """Issue 13's drift case: 3 attributes, batch 32, 100 validation images and a budget of
    492 passed the old check (one step + ONE validation) and ran 0 steps without an error."""
    model, train, _, _ = _multilabel_problem()
    val = (train[0][:100], train[1][:100])
    tuner = MultiAttributeTuner(model, ["a0", "a1", "a2"], batch_size=32, query_budget=492)
    # one step: 3 attributes x 2 candidates x 32 images = 192; two validations: 2 x 300
    with pytest.raises(ValueError, match=r"query_budget=492 .* = 792 queries; give "
                                         r"query_budget >= 792"):
        tuner.fit(*train, validation=val)
    tuner.set_params(query_budget=792).fit(*train, validation=val)
    assert tuner.n_steps_ >= 1 and tuner.queries_ <= 792
