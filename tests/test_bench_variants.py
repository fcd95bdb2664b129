"""The variant estimators the default search tried (benchmarks/qe_methods.py, not library
estimators): coarse-to-fine directions are block-constant before their stage ends and full
after it; clipped finite differences are cut at k times the step's median, or to signs."""

from __future__ import annotations

import os

import numpy as np
import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


@pytest.fixture
def qe(monkeypatch):
    monkeypatch.syspath_prepend(BENCH)
    import qe_methods

    return qe_methods


def _block_constant(u: np.ndarray, block: int) -> bool:
    """Every (block x block) tile of the last three axes (h, w, c) holds one value."""
    h, w = u.shape[-3:-1]
    tiles = u.reshape(*u.shape[:-3], h // block, block, w // block, block, u.shape[-1])
    return bool(np.all(tiles == tiles[..., :1, :, :1, :]))


def test_coarse_to_fine_directions_follow_their_stages(qe):
    est = qe.build_estimator(["CoarseToFine", {"stages": [[3, 4], [6, 8]], "step": 2.0}])
    z, rng = np.zeros((16, 16, 3)), np.random.default_rng(0)
    for t, block in ((0, 4), (2, 4), (3, 2), (5, 2)):
        u = est.ask(z, rng, t, batch=5).directions  # (q, batch, 16, 16, 3)
        assert u.shape == (1, 5, 16, 16, 3) and set(np.unique(u)) == {-1.0, 1.0}
        assert _block_constant(u, block), (t, block)
        assert not _block_constant(u, block * 2), (t, block)  # and no coarser
    full = est.ask(z, rng, 6, batch=5).directions
    assert not _block_constant(full, 2)
    # a block side must divide the latent's
    bad = qe.build_estimator(["CoarseToFine", {"stages": [[3, 5]], "step": 2.0}])
    with pytest.raises(ValueError, match="side 5 does not divide the latent 16x16"):
        bad.ask(z, rng, 0, batch=2)


@pytest.mark.parametrize("clip", [3.0, 1.5, 0.0])
def test_clipped_differences_are_cut_at_k_medians_or_to_signs(qe, clip):
    est = qe.ClippedSPSA(clip=clip, step=1.0)
    u = np.array([[1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [1.0, 1.0]])  # 4 directions, d = 2
    diffs = np.array([1.0, -2.0, 10.0, 0.5])  # median of |diffs|: 1.5
    losses = np.concatenate([2 * diffs, np.zeros(4)])  # (f(z + u) - f(z - u)) / 2c = diff
    g, _ = est._combine(losses, u, 1.0)
    cut = np.sign(diffs) * 1.5 if clip == 0 else np.clip(diffs, -clip * 1.5, clip * 1.5)
    np.testing.assert_allclose(g, cut @ u / 4)
    if clip == 3.0:  # only the outlier (10) was cut, to 4.5
        assert np.array_equal(cut, [1.0, -2.0, 4.5, 0.5])


def test_random_subspace_is_a_fixed_linear_map_into_the_nearest_grid(qe):
    from blackbox_dft.core.images import apply_delta

    pert = qe.make_perturbation("subspace-96")
    assert pert.latent_shape((25, 25)) == (32, 1, 3)
    again = qe.make_perturbation("subspace-96")
    np.testing.assert_array_equal(pert.matrix, again.matrix)  # the same P in every fit
    rng = np.random.default_rng(1)
    z = rng.choice([-1.0, 1.0], size=(32, 1, 3))
    grid = (pert.matrix @ z.ravel()).reshape(16, 16, 3)
    assert 0.8 < float(np.sqrt(np.mean(grid ** 2))) < 1.25  # RMS 1 for a Rademacher z
    np.testing.assert_allclose(pert.to_delta(z, (25, 25), 8.0),
                               pert.grid.to_delta(grid, (25, 25), 8.0), atol=1e-5)
    x = rng.integers(0, 256, (3, 25, 25, 3), dtype=np.uint8)
    zs = 4 * rng.standard_normal((3, 32, 1, 3))
    paired = pert.perturb_paired(x, zs, 8.0)
    for i in range(3):
        np.testing.assert_array_equal(paired[i],
                                      apply_delta(x[i:i + 1], pert.to_delta(zs[i], (25, 25),
                                                                            8.0))[0])
    with pytest.raises(ValueError, match="k must be a multiple of 3, got 100"):
        qe.make_perturbation("subspace-100")


def test_low_rank_latent_starts_at_zero_and_moves_through_either_factor(qe):
    from blackbox_dft.core.images import apply_delta

    pert = qe.make_perturbation("lowrank-2")
    assert pert.latent_shape((25, 25)) == (32, 2, 3)
    zero = np.zeros((32, 2, 3))
    assert not pert.to_delta(zero, (25, 25), 8.0).any()  # z = 0: no perturbation
    b_only = zero.copy()
    b_only[16:] = 1.0  # B moves the grid at z = 0 (A0 is fixed and not 0)
    grid = pert._grids(b_only)[0]
    np.testing.assert_allclose(grid, np.einsum("irc,jrc->ijc", pert.a0, b_only[16:]),
                               rtol=1e-6)
    assert np.abs(grid).max() > 0.5
    a_only = zero.copy()
    a_only[:16] = 1.0  # A alone does not (B = 0): the product's other factor
    assert not pert._grids(a_only).any()
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (2, 25, 25, 3), dtype=np.uint8)
    zs = rng.standard_normal((2, 32, 2, 3))
    paired = pert.perturb_paired(x, zs, 8.0)
    for i in range(2):
        np.testing.assert_array_equal(
            paired[i], apply_delta(x[i:i + 1], pert.to_delta(zs[i], (25, 25), 8.0))[0])


class _Quadratic:
    """A stand-in problem for the averaging wrapper: gradient ``z - target`` (exact),
    projection onto ``[-1, 1]``; records the latents its gradient was asked at."""

    def __init__(self, target: np.ndarray) -> None:
        self.target, self.asked = target, []

    def gradient(self, z: np.ndarray, *args) -> np.ndarray:
        self.asked.append(z.copy())
        return z - self.target

    def project(self, z: np.ndarray) -> np.ndarray:
        return np.clip(z, -1.0, 1.0)


def test_averaged_iterate_steps_the_raw_latent_and_shows_the_ema(qe):
    """The engine's loop (z = project(z - lr * gradient(z))) through the wrapper: the
    gradient is taken at the raw iterate (plain projected descent), and what the engine
    holds is the EMA zbar += (raw - zbar) / (1 + share * t), starting from zbar = 0."""
    inner = _Quadratic(np.array([0.5, 3.0]))
    wrapped = qe._Averaged(inner, share=0.5)
    z_engine, raw, zbar, lr = np.zeros(2), np.zeros(2), np.zeros(2), 0.3
    for t in range(1, 8):
        z_engine = wrapped.project(z_engine - lr * wrapped.gradient(z_engine))
        np.testing.assert_allclose(inner.asked[-1], raw)  # asked at the raw iterate
        raw = np.clip(raw - lr * (raw - inner.target), -1.0, 1.0)
        zbar = zbar + (raw - zbar) / (1.0 + 0.5 * t)
        np.testing.assert_allclose(wrapped.raw, raw)
        np.testing.assert_allclose(z_engine, zbar)
    # the gradient was asked at the raw iterates (not the averages), and the average lags
    assert not np.allclose(inner.asked[-1], z_engine)
    assert np.all(np.abs(z_engine) < np.abs(wrapped.raw))
    assert wrapped.target is inner.target  # everything else is the inner problem's


@pytest.mark.parametrize("variant", ["prob", "brier", "capped-1.5"])
def test_loss_variants(qe, variant):
    from blackbox_dft.core.objectives import Objective

    tuner_cls = qe.loss_tuner(qe.DataFineTuner, variant)
    tuner = tuner_cls(model=None, task="binary")
    objective, _, _ = tuner._components()
    assert isinstance(objective, Objective)
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.99, 0.01]])
    labels = np.array([0, 0, 1])
    py = np.array([0.9, 0.2, 0.01])
    want = {"prob": 1 - py, "brier": (1 - py) ** 2,
            "capped-1.5": np.minimum(-np.log(py), 1.5)}[variant]
    np.testing.assert_allclose(objective.loss(scores, labels), want)
    np.testing.assert_allclose(objective.loss(scores, labels, np.array([2.0, 0.5])),
                               want * np.array([2.0, 2.0, 0.5]))
