"""Estimator specifics beyond the shared contract (check_estimator over the registry in
test_contract_components.py): loss reported, step schedule, bad arguments, per-image variance."""

import numpy as np
import pytest

from blackbox_dft import NES, SPSA, PerImage, RandomDirections
from blackbox_dft.core.estimators import estimator_from_config

ESTIMATORS = [
    SPSA(directions=1, step=0.5),
    SPSA(directions=4, step=0.5),
    NES(directions=1, step=0.5),
    NES(directions=3, step=0.5),
    RandomDirections(directions=1, step=0.5),
    RandomDirections(directions=5, step=0.5),
]
IDS = [repr(e) for e in ESTIMATORS]
SHAPE = (4, 4, 3)


class Smooth:
    """f(z) = sum(a * (z - c)^2) / 2 + sum(sin(z) * b): smooth, known gradient; counts calls."""

    def __init__(self, seed: int = 0) -> None:
        r = np.random.default_rng(seed)
        self.a = r.uniform(0.5, 2.0, SHAPE)
        self.c = r.normal(size=SHAPE)
        self.b = r.normal(scale=0.3, size=SHAPE)
        self.candidates = 0
        self.calls = 0

    def __call__(self, zs: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.candidates += zs.shape[0]
        d = zs - self.c
        return 0.5 * (self.a * d * d).sum(axis=(1, 2, 3)) + (np.sin(zs) * self.b).sum(
            axis=(1, 2, 3))

    def grad(self, z: np.ndarray) -> np.ndarray:
        return self.a * (z - self.c) + self.b * np.cos(z)


@pytest.mark.parametrize("est", ESTIMATORS, ids=IDS)
def test_loss_reported_is_near_the_loss_at_z(est):
    f = Smooth(0)
    z = np.random.default_rng(4).normal(size=SHAPE)
    losses = [est.estimate(f, z, np.random.default_rng(s))[1] for s in range(200)]
    true = float(f(z[None])[0])
    # two-sided estimators report the mean of f(z +- c u), which exceeds f(z) by about
    # c^2 tr(A) / 2 for unit-variance directions; one-sided ones report f(z) itself.
    c2 = est.step**2
    bound = 0.5 * c2 * f.a.sum() + 0.5 * c2 * np.abs(f.b).sum() + 0.1
    assert abs(np.mean(losses) - true) <= bound


def test_step_schedule_decays():
    est = SPSA(step=2.0, step_decay=0.5)
    assert est.step_at(0) == 2.0
    assert est.step_at(3) == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [{"directions": 0}, {"directions": 1.5}, {"step": 0.0},
                                 {"step": -1.0}, {"step_decay": -0.1}])
@pytest.mark.parametrize("cls", [SPSA, NES, RandomDirections])
def test_bad_arguments_raise_value_error_naming_the_value(cls, bad):
    with pytest.raises(ValueError) as err:
        cls(**bad)
    assert repr(next(iter(bad.values()))) in str(err.value)


def test_loss_function_returning_wrong_shape_is_reported():
    with pytest.raises(ValueError, match="returned shape"):
        SPSA().estimate(lambda zs: np.zeros(3), np.zeros(SHAPE), np.random.default_rng(0))


# -- one direction per image ---------------------------------------------------------------
PER_IMAGE = [PerImage(SPSA(directions=1, step=0.5)),
             PerImage(NES(directions=2, step=0.5)),
             PerImage(RandomDirections(directions=2, step=0.5))]
PER_IMAGE_IDS = [repr(e) for e in PER_IMAGE]
BATCH = 8


class PerImageLoss:
    """Image b's loss is a Smooth of its own (seed b): candidates (M, B, *SHAPE) -> (M, B)."""

    def __init__(self) -> None:
        self.parts = [Smooth(b) for b in range(BATCH)]
        self.calls = 0

    def __call__(self, zs: np.ndarray) -> np.ndarray:
        self.calls += 1
        assert zs.shape[1] == BATCH
        return np.stack([p(zs[:, b]) for b, p in enumerate(self.parts)], axis=1)

    def grad(self, z: np.ndarray) -> np.ndarray:  # of the batch-mean loss
        return np.mean([p.grad(z) for p in self.parts], axis=0)


def test_per_image_directions_cut_the_variance_for_the_same_queries():
    """Same images sent (2 x batch); B directions instead of one: lower error to the truth."""
    f = PerImageLoss()
    z = np.random.default_rng(5).normal(size=SHAPE)
    true = f.grad(z)

    def shared(zs):  # the shared-direction estimator sees the batch-mean loss
        return f(np.repeat(zs[:, None], BATCH, axis=1)).mean(axis=1)

    def err(est, fn, **kw):
        rng = np.random.default_rng(0)
        return np.mean([np.sum((est.estimate(fn, z, rng, **kw)[0] - true) ** 2)
                        for _ in range(400)])

    e_shared = err(SPSA(step=0.5), shared)
    e_image = err(PerImage(SPSA(step=0.5)), f, batch=BATCH)
    assert e_image < 0.4 * e_shared, (e_image, e_shared)


def test_per_image_needs_the_batch_and_wraps_a_shared_estimator():
    with pytest.raises(ValueError, match="needs batch >= 1 .*got None"):
        PerImage(SPSA()).estimate(PerImageLoss(), np.zeros(SHAPE), np.random.default_rng(0))
    with pytest.raises(ValueError, match="PerImage base must be SPSA, NES or RandomDirections"):
        PerImage(PerImage())
    with pytest.raises(ValueError, match="PerImage base must be"):
        PerImage("spsa")  # type: ignore[arg-type]


def test_configs_written_with_the_per_image_flag_load_as_per_image():
    """Files from before PerImage existed stored ``"per_image": true`` on SPSA/NES/RD."""
    old = {"type": "NES", "directions": 2, "step": 1.0, "step_decay": 0.0, "per_image": True}
    est = estimator_from_config(old)
    assert isinstance(est, PerImage) and isinstance(est.base, NES)
    assert (est.directions, est.step) == (2, 1.0)
