"""The sqlite query cache: repeated images are answered from disk, never sent twice."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from blackbox_dft.cli.cache import CachedModel, image_keys


class Counting:
    """A model that records every image it is sent."""

    name = "counting"

    def __init__(self) -> None:
        self.seen = 0
        self.calls = 0

    def predict(self, images: np.ndarray) -> np.ndarray:
        self.seen += images.shape[0]
        self.calls += 1
        x = images.reshape(images.shape[0], -1).astype(np.float64)
        return np.stack([x.mean(1), x.std(1), x[:, 0]], axis=1)


def _images(n: int, seed: int = 0, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_repeated_images_are_answered_from_the_file(tmp_path):
    inner = Counting()
    cache = CachedModel(inner, tmp_path / "c.sqlite", "spec-a")
    x = _images(10)
    first = cache.predict(x)
    again = cache.predict(x[::-1])
    assert np.array_equal(again, first[::-1])
    assert inner.seen == 10 and cache.misses == 10 and cache.hits == 10
    assert len(cache) == 10


def test_only_new_images_are_sent_and_duplicates_in_a_batch_once(tmp_path):
    inner = Counting()
    cache = CachedModel(inner, tmp_path / "c.sqlite", "k")
    x = _images(6)
    cache.predict(x[:3])
    out = cache.predict(np.concatenate([x, x[4:5]]))  # 3 known, 3 new, one new twice
    assert inner.seen == 6
    assert cache.misses == 6 and cache.hits == 4
    assert np.array_equal(out[4], out[6])
    assert np.allclose(out, Counting().predict(np.concatenate([x, x[4:5]])))


def test_cache_persists_and_the_model_spec_is_part_of_the_key(tmp_path):
    path = tmp_path / "c.sqlite"
    x = _images(5)
    a = CachedModel(Counting(), path, "model-a")
    a.predict(x)
    a.close()
    again = Counting()
    b = CachedModel(again, path, "model-a")
    b.predict(x)
    assert again.seen == 0 and b.hits == 5
    other = Counting()
    CachedModel(other, path, "model-b").predict(x)
    assert other.seen == 5  # another model never gets model-a's answers


def test_key_depends_on_exact_bytes_and_shape():
    x = _images(2)
    y = x.copy()
    y[0, 0, 0, 0] ^= 1
    kx, ky = image_keys(x, "m"), image_keys(y, "m")
    assert kx[0] != ky[0] and kx[1] == ky[1]
    flat = x.reshape(2, 4, 16, 3)
    assert image_keys(flat, "m")[0] != kx[0]


def test_threads_share_one_cache(tmp_path):
    inner = Counting()
    cache = CachedModel(inner, tmp_path / "c.sqlite", "k")
    x = _images(40)
    errors: list[BaseException] = []

    def work(part: np.ndarray) -> None:
        try:
            for _ in range(3):
                cache.predict(part)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(x[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert cache.hits + cache.misses == 120
    assert inner.seen == cache.misses == 40


def test_a_corrupt_cache_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "c.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ValueError, match="not usable"):
        CachedModel(Counting(), bad, "k").predict(_images(1))
