"""Contract every optimizer must pass: descends, explicit saveable state, exact resume."""

import os

import numpy as np
import pytest

from blackbox_dft import SGD, Adam, Schedule, SignSGD
from blackbox_dft.core.optimizers import make_optimizer, optimizer_from_config
from blackbox_dft.core.state import read_npz_json, write_npz_json

OPTIMIZERS = [
    SGD(0.1), SGD(0.1, momentum=0.9), SGD(0.1, momentum=0.9, nesterov=True),
    Adam(0.1), SignSGD(0.05), SignSGD(0.05, momentum=0.5),
    Adam(Schedule(0.2, kind="cosine", total=200)), SGD(Schedule(0.1, kind="inverse_sqrt")),
]
IDS = [repr(o) for o in OPTIMIZERS]
A = np.linspace(0.5, 2.0, 12).reshape(2, 2, 3)
C = np.linspace(-1, 1, 12).reshape(2, 2, 3)


def grad(x):
    return A * (x - C)


def run(opt, x, state, steps):
    for _ in range(steps):
        step, state = opt.update(grad(x), state)
        x = x - step
    return x, state


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=IDS)
def test_minimises_a_quadratic(opt):
    x0 = np.zeros_like(C)
    x, _ = run(opt, x0, opt.init(x0), 300)
    assert np.abs(x - C).max() < 0.1 * np.abs(x0 - C).max()


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=IDS)
def test_state_round_trips_through_a_file_and_resumes_exactly(opt, tmp_path):
    x0 = np.zeros_like(C)
    full, _ = run(opt, x0, opt.init(x0), 40)
    half, state = run(opt, x0, opt.init(x0), 20)
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    counters = {k: v for k, v in state.items() if not isinstance(v, np.ndarray)}
    path = os.path.join(tmp_path, "opt.npz")
    write_npz_json(path, arrays, {"counters": counters, "config": opt.get_config()})
    arrays2, meta = read_npz_json(path)
    opt2 = optimizer_from_config(meta["config"])
    resumed, _ = run(opt2, half, {**arrays2, **meta["counters"]}, 20)
    assert np.array_equal(full, resumed)


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=IDS)
def test_update_does_not_modify_its_input_state(opt):
    x0 = np.zeros_like(C)
    state = opt.init(x0)
    before = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in state.items()}
    opt.update(grad(x0), state)
    for k, v in before.items():
        assert np.array_equal(state[k], v)


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=IDS)
def test_non_finite_gradient_is_rejected(opt):
    g = np.zeros_like(C)
    g[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        opt.update(g, opt.init(g))


def test_schedules():
    assert Schedule(1.0)(100) == 1.0
    cos = Schedule(1.0, kind="cosine", total=10, final_fraction=0.1)
    assert cos(0) == pytest.approx(1.0) and cos(10) == pytest.approx(0.1) and cos(50) == cos(10)
    assert Schedule(1.0, kind="inverse_sqrt", scale=1.0)(3) == pytest.approx(0.5)
    assert Schedule(1.0, kind="exponential", rate=0.5)(2) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="'linear'"):
        Schedule(1.0, kind="linear")
    with pytest.raises(ValueError, match="-1"):
        Schedule(-1.0)


def test_named_optimizers_and_errors():
    assert isinstance(make_optimizer("adam", 1.0), Adam)
    assert make_optimizer("nesterov", 1.0).nesterov
    with pytest.raises(ValueError, match="'rmsprop'"):
        make_optimizer("rmsprop", 1.0)
    with pytest.raises(ValueError, match="1.5"):
        SGD(0.1, momentum=1.5)


def test_sign_sgd_moves_every_coordinate_by_the_learning_rate():
    opt = SignSGD(0.25)
    step, _ = opt.update(np.array([3.0, -0.001, 2.0]), opt.init(np.zeros(3)))
    assert np.array_equal(step, [0.25, -0.25, 0.25])


def test_adam_first_step_has_size_learning_rate():
    opt = Adam(0.5)
    step, _ = opt.update(np.array([10.0, -0.01]), opt.init(np.zeros(2)))
    assert np.allclose(step, [0.5, -0.5], rtol=1e-5)
