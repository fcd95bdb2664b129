"""Early stopping (issue 16, point 5): patience in queries on the validation curve."""

import numpy as np
import pytest

from blackbox_dft import DataFineTuner
from blackbox_dft.core.stopping import EarlyStopping
from blackbox_dft.tasks.attributes import MultiAttributeTuner
from blackbox_dft.testing import make_problem

N_VAL = 40


@pytest.fixture(scope="module")
def problem():
    return make_problem(seed=0, n_train=64, n_val=N_VAL, n_test=50)


class Flat:
    """A model that ignores its input: the validation curve is flat from the start."""

    n_outputs = 4

    def predict(self, images):
        return np.tile(np.array([2.0, 1.0, 0.5, 0.0]), (images.shape[0], 1))


def tuner(model, **kw):
    args = dict(epsilon=8, scores="logits", query_budget=4000, seed=0, progress=False,
                validation_every=2)
    args.update(kw)
    return DataFineTuner(model, "multiclass", **args)


def validated(history):
    return [r for r in history if "val_accuracy" in r]


def test_a_flat_curve_stops_once_the_patience_is_spent_and_not_before(problem):
    t = tuner(Flat(), early_stopping=EarlyStopping(patience=1000))
    t.fit(*problem.train, validation=problem.val)
    vals = validated(t.history_)
    # nothing improves on the baseline, paid after N_VAL queries
    assert t.stopped_early_ and vals[-1].get("stopped_early") is True
    assert vals[-1]["queries"] - N_VAL >= 1000 > vals[-2]["queries"] - N_VAL
    assert t.history_[-1] is vals[-1]  # no step after the stop
    assert t.queries_ == vals[-1]["queries"] < 4000
    assert t.queries_saved_by_stopping_ == 4000 - t.queries_ > 1000


def test_an_int_is_the_patience_and_min_delta_ignores_small_gains(problem):
    a = tuner(problem.model, early_stopping=600).fit(*problem.train, validation=problem.val)
    b = tuner(problem.model, early_stopping=EarlyStopping(600, min_delta=1.0)).fit(
        *problem.train, validation=problem.val)
    # min_delta=1.0 (a gain of more than 100 points of accuracy) never counts an improvement:
    # b stops at the first validation 600 queries after the baseline; a keeps improving longer
    vals = validated(b.history_)
    assert b.stopped_early_ and vals[-1]["queries"] - N_VAL >= 600 > vals[-2]["queries"] - N_VAL
    assert a.n_steps_ > b.n_steps_ and max(r["val_accuracy"] for r in validated(a.history_)) \
        > vals[0]["val_accuracy"]


def test_off_by_default_and_a_long_patience_costs_nothing(problem):
    off = tuner(problem.model).fit(*problem.train, validation=problem.val)
    long = tuner(problem.model, early_stopping=4000).fit(*problem.train, validation=problem.val)
    assert not off.stopped_early_ and off.queries_saved_by_stopping_ == 0
    assert not long.stopped_early_ and long.queries_ == off.queries_
    np.testing.assert_array_equal(long.delta_, off.delta_)
    assert long.history_ == off.history_


def test_a_resumed_fit_stops_at_the_same_step(problem, tmp_path):
    es = EarlyStopping(patience=1000)
    whole = tuner(Flat(), early_stopping=es).fit(*problem.train, validation=problem.val)
    ck = tmp_path / "ck.npz"

    def interrupt(record, state):
        if record["step"] == 5:
            raise KeyboardInterrupt

    t = tuner(Flat(), early_stopping=es)
    with pytest.raises(KeyboardInterrupt):
        t.fit(*problem.train, validation=problem.val, checkpoint=ck, checkpoint_every=1,
              callback=interrupt)
    t.fit(*problem.train, validation=problem.val, checkpoint=ck, resume=True)
    assert t.stopped_early_ and t.n_steps_ == whole.n_steps_
    assert t.queries_ == whole.queries_ and t.history_ == whole.history_
    again = tuner(Flat(), early_stopping=es).fit(*problem.train, validation=problem.val,
                                                 checkpoint=ck, resume=True)
    assert again.n_steps_ == whole.n_steps_  # a finished, stopped fit takes no more steps
    assert again.queries_saved_by_stopping_ == whole.queries_saved_by_stopping_


def test_saved_and_loaded_with_the_result(problem, tmp_path):
    t = tuner(Flat(), early_stopping=1000).fit(*problem.train, validation=problem.val)
    t.save(tmp_path / "r.npz")
    u = DataFineTuner.load(tmp_path / "r.npz", Flat())
    assert u.stopped_early_ and u.queries_saved_by_stopping_ == t.queries_saved_by_stopping_
    assert u.early_stopping == 1000
    c = tuner(Flat(), early_stopping=EarlyStopping(500, 0.01))
    again = DataFineTuner.from_config(Flat(), c.get_config())
    assert again.early_stopping == EarlyStopping(500, 0.01)


def test_needs_validation_data(problem):
    t = tuner(Flat(), early_stopping=1000)
    with pytest.raises(ValueError, match="early_stopping needs validation data") as err:
        t.fit(*problem.train)
    assert "\n" not in str(err.value)
    assert not hasattr(t, "delta_")


@pytest.mark.parametrize("bad", [0, -5, "3000", 2.5, True, EarlyStopping(patience=0),
                                 EarlyStopping(100, min_delta=-1.0)])
def test_bad_values_are_one_line_errors(problem, bad):
    with pytest.raises(ValueError, match="early_stopping") as err:
        tuner(Flat(), early_stopping=bad).fit(*problem.train, validation=problem.val)
    assert "\n" not in str(err.value)


class FlatAttributes:
    """A two-attribute model that ignores its input."""

    n_outputs = 2

    def predict(self, images):
        return np.tile(np.array([0.7, 0.2]), (images.shape[0], 1))


def test_several_slots_stop_when_none_improved(problem):
    x, y = problem.train
    yv = np.stack([problem.val[1] == 0, problem.val[1] == 1], axis=1).astype(int)
    ya = np.stack([y == 0, y == 1], axis=1).astype(int)
    t = MultiAttributeTuner(FlatAttributes(), query_budget=6000, batch_size=8,
                            validation_every=1, early_stopping=1500, seed=0)
    t.fit(x, ya, validation=(problem.val[0], yv))
    assert t.stopped_early_ and t.queries_saved_by_stopping_ == 6000 - t.queries_ > 0
    shared = MultiAttributeTuner(FlatAttributes(), mode="shared", query_budget=6000,
                                 validation_every=1, early_stopping=1500, seed=0)
    shared.fit(x, ya, validation=(problem.val[0], yv))
    assert shared.stopped_early_ and shared.queries_saved_by_stopping_ > 0


def flat(images):
    """The CLI's ``python:`` model of a flat curve (scores that ignore the images)."""
    return Flat().predict(images)


def test_the_cli_stops_by_default_and_says_what_it_saved(tmp_path, capsys):
    import json

    from cli_synthetic import write_npz

    from blackbox_dft.cli.main import main

    data = str(tmp_path / "d.npz")
    write_npz(data)
    args = ["fit", "--model", "python:test_early_stopping:flat", "--data", data,
            "--scores", "logits", "--budget", "15000", "--no-progress", "--no-cache"]
    assert main([*args, "--out", str(tmp_path / "on")]) == 0
    out = capsys.readouterr().out
    report = json.load(open(tmp_path / "on" / "report.json"))
    es = report["early_stopping"]
    assert es == {"patience": 4500, "stopped": True,  # 30% of the budget by default
                  "queries_saved": 15000 - report["fit"]["queries"]}
    assert 0 < es["queries_saved"] <= 15000 - 4500
    assert f"early stopping: no validation gain in 4500 queries; {es['queries_saved']} " \
           "queries of the budget saved" in out
    assert main([*args, "--out", str(tmp_path / "p"), "--patience", "700"]) == 0
    short = json.load(open(tmp_path / "p" / "report.json"))
    assert short["early_stopping"]["patience"] == 700 and short["early_stopping"]["stopped"]
    assert short["fit"]["queries"] < report["fit"]["queries"]
    assert main([*args[:-4], "--budget", "3000", "--no-progress", "--no-cache", "--out",
                 str(tmp_path / "small")]) == 0  # small budgets: the floor of 1000 queries
    assert json.load(open(tmp_path / "small" / "report.json"))["early_stopping"]["patience"] \
        == 1000
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "off"), "--no-early-stopping"]) == 0
    off = json.load(open(tmp_path / "off" / "report.json"))
    assert off["early_stopping"] == {"patience": None, "stopped": False, "queries_saved": 0}
    assert off["fit"]["queries"] > report["fit"]["queries"]
    assert "early stopping" not in capsys.readouterr().out
