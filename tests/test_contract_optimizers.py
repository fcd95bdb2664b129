"""Optimizer specifics beyond the shared contract (check_optimizer over the registry in
test_contract_components.py): schedules, names, configs."""


import numpy as np
import pytest

from blackbox_dft import SGD, Adam, Schedule, SignSGD
from blackbox_dft.core.optimizers import make_optimizer

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
