"""Domain shifts: deterministic, shape/dtype preserving, and doing what they say."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from blackbox_dft.data.shifts import (
    SHIFTS,
    Blur,
    ColorCast,
    Compose,
    Contrast,
    Identity,
    Jpeg,
    LowLight,
    Shift,
    make_shift,
    parse_shift,
    shift_from_config,
)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Smooth random scenes plus texture: uint8 (6, 40, 30, 3)."""
    rng = np.random.default_rng(123)
    coarse = rng.uniform(40, 215, size=(6, 5, 4, 3)).astype(np.float32)
    smooth = np.stack([cv2.resize(c, (30, 40), interpolation=cv2.INTER_CUBIC) for c in coarse])
    texture = rng.normal(0, 20, size=smooth.shape)
    return np.clip(np.rint(smooth + texture), 0, 255).astype(np.uint8)


ALL_SPECS = ["none", "blur", "blur:sigma=2.5", "low_light", "color_cast", "jpeg", "contrast",
             "blur:sigma=1+low_light:gamma=1.5,noise_std=3+jpeg:quality=40"]


def _high_freq_energy(x: np.ndarray) -> float:
    grey = x.astype(np.float64).mean(axis=-1)
    lap = grey[:, 1:-1, 1:-1] * 4 - grey[:, :-2, 1:-1] - grey[:, 2:, 1:-1] \
        - grey[:, 1:-1, :-2] - grey[:, 1:-1, 2:]
    return float(np.mean(lap**2))


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_shape_dtype_and_input_untouched(spec: str, images: np.ndarray) -> None:
    before = images.copy()
    out = parse_shift(spec)(images, rng=0)
    assert out.shape == images.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(images, before)
    assert out is not images


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_same_seed_same_images(spec: str, images: np.ndarray) -> None:
    s = parse_shift(spec)
    np.testing.assert_array_equal(s(images, 7), s(images, np.random.default_rng(7)))
    np.testing.assert_array_equal(s(images), s(images, None))


def test_noise_depends_on_seed(images: np.ndarray) -> None:
    s = LowLight(gamma=1.0, noise_std=5.0)
    assert not np.array_equal(s(images, 1), s(images, 2))
    comp = Compose([Blur(1.0), LowLight()])
    assert not np.array_equal(comp(images, 1), comp(images, 2))


def test_identity(images: np.ndarray) -> None:
    for s in (Identity(), Blur(0.0), LowLight(gamma=1.0, noise_std=0.0),
              ColorCast(gains=1.0, offsets=0.0), Contrast(1.0)):
        np.testing.assert_array_equal(s(images), images)


def test_blur_removes_high_frequencies(images: np.ndarray) -> None:
    e0 = _high_freq_energy(images)
    e1 = _high_freq_energy(Blur(1.0)(images))
    e2 = _high_freq_energy(Blur(2.5)(images))
    assert e2 < e1 < 0.5 * e0
    assert abs(Blur(2.5)(images).astype(float).mean() - images.mean()) < 2.0


def test_low_light_darkens_and_adds_noise() -> None:
    flat = np.full((4, 32, 32, 3), 128, np.uint8)
    dark = LowLight(gamma=2.0, noise_std=0.0)(flat)
    assert abs(float(dark.mean()) - 255 * (128 / 255) ** 2) < 0.6
    noisy = LowLight(gamma=1.0, noise_std=5.0)(flat, rng=0).astype(float)
    assert abs(noisy.mean() - 128) < 0.5
    assert 4.5 < noisy.std() < 5.5


def test_low_light_reduces_mean(images: np.ndarray) -> None:
    assert LowLight()(images).mean() < images.mean() - 30


def test_color_cast_scales_channels() -> None:
    flat = np.full((2, 8, 8, 3), 100, np.uint8)
    out = ColorCast(gains=(1.2, 1.0, 0.5), offsets=(0, 10, -5))(flat)
    np.testing.assert_array_equal(out[0, 0, 0], [120, 110, 45])


def test_jpeg_loss_grows_as_quality_drops(images: np.ndarray) -> None:
    def mse(q: int) -> float:
        return float(np.mean((Jpeg(q)(images).astype(float) - images) ** 2))
    assert mse(95) < mse(50) < mse(10)
    assert mse(10) > 10.0


def test_contrast_scales_spread_keeps_mean(images: np.ndarray) -> None:
    out = Contrast(0.5)(images).astype(float)
    x = images.astype(float)
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), x.mean(axis=(1, 2, 3)), atol=0.5)
    np.testing.assert_allclose(out.std(axis=(1, 2, 3)), 0.5 * x.std(axis=(1, 2, 3)), rtol=0.03)


def test_compose_of_deterministic_shifts_is_sequential(images: np.ndarray) -> None:
    a, b = Blur(1.5), Contrast(0.7)
    np.testing.assert_array_equal(Compose([a, b])(images), b(a(images)))


@pytest.mark.parametrize("spec", ALL_SPECS + ["color_cast:gains=1.2/1/0.8,offsets=3",
                                              "blur:sigma=0.123456789"])
def test_config_and_spec_round_trip(spec: str) -> None:
    s = parse_shift(spec)
    cfg = json.loads(json.dumps(s.get_config()))
    assert shift_from_config(cfg) == s
    assert parse_shift(s.spec()) == s
    assert isinstance(repr(s), str) and type(s).__name__ in repr(s)


def test_parse_defaults_and_empty() -> None:
    assert parse_shift(None) == Identity() == parse_shift("") == parse_shift("none")
    assert parse_shift("blur") == Blur(1.0)
    assert parse_shift("low_light") == LowLight(2.0, 6.0)
    assert make_shift("jpeg", quality=30) == Jpeg(30)
    assert set(SHIFTS) == {"none", "blur", "low_light", "color_cast", "jpeg", "contrast"}
    assert all(issubclass(c, Shift) for c in SHIFTS.values())


@pytest.mark.parametrize("spec, needle", [
    ("blur:sigma=-1", "-1"),
    ("blur:sigma=abc", "abc"),
    ("blur:sigma=nan", "nan"),
    ("low_light:gamma=0", "gamma"),
    ("low_light:noise_std=-2", "-2"),
    ("jpeg:quality=0", "0"),
    ("jpeg:quality=101", "101"),
    ("jpeg:quality=2.5", "2.5"),
    ("contrast:factor=-0.5", "-0.5"),
    ("color_cast:gains=1/2", "1/2"),
    ("color_cast:offsets=300", "300"),
    ("blur:radius=2", "radius"),
    ("blur:sigma", "key=value"),
    ("fog", "blur"),  # the error lists the valid names
])
def test_bad_parameters_raise_value_error(spec: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle.replace("+", r"\+").replace(".", r"\.")):
        parse_shift(spec)


def test_bad_configs_and_images() -> None:
    with pytest.raises(ValueError, match="name"):
        shift_from_config({"sigma": 1.0})
    with pytest.raises(ValueError, match="fog"):
        make_shift("fog")
    with pytest.raises(ValueError, match="Shift"):
        Compose(["blur"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="string"):
        parse_shift(2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        Blur()(np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(TypeError):
        Blur()(np.zeros((2, 8, 8, 3), np.int64))


def test_shifts_do_not_import_adapters() -> None:
    code = ("import sys, blackbox_dft.data.shifts; "
            "bad = [m for m in sys.modules if m.startswith('blackbox_dft.adapters')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
