"""Domain shifts: a user's capture conditions applied to clean images, seeded.

Every shift maps uint8 RGB ``(N, H, W, 3)`` to uint8 RGB of the same shape; random parts
(sensor noise) come from the ``rng`` passed in (a seed or a ``numpy.random.Generator``;
None means seed 0), so the same seed gives the same images.

========== ============================== ==========================================
name       parameters (defaults)          effect
========== ============================== ==========================================
none       -                              identity
blur       sigma=1.0 (pixels)             Gaussian blur (out of focus, motion-free)
low_light  gamma=2.0, noise_std=6.0       ``255 (x/255)^gamma`` + N(0, noise_std) grey
                                          levels of sensor noise
color_cast gains=1.15/1.0/0.8,            ``x * gains + offsets`` per RGB channel
           offsets=0/0/0                  (default: warm tungsten light)
jpeg       quality=20 (1-100)             JPEG re-compression with cv2
contrast   factor=0.5                     ``m + factor (x - m)``, m = the image mean
========== ============================== ==========================================

Spec strings: ``"blur"``, ``"blur:sigma=2.5"``, ``"low_light:gamma=2.2,noise_std=4"``,
``"color_cast:gains=1.2/1/0.8"`` (tuples with ``/``), composed left to right with ``+``:
``"blur:sigma=1+jpeg:quality=30"``. :func:`parse_shift` reads them, ``get_config`` /
:func:`shift_from_config` round-trip through JSON-able dicts.
"""

from __future__ import annotations

from typing import Any, ClassVar

import cv2
import numpy as np

from blackbox_dft.core.images import check_images

__all__ = ["Shift", "Identity", "Blur", "LowLight", "ColorCast", "Jpeg", "Contrast",
           "Compose", "SHIFTS", "make_shift", "parse_shift", "shift_from_config"]

RngLike = int | np.random.Generator | None


def _rng(rng: RngLike) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(0 if rng is None else rng)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _fmt(v: float) -> str:
    """Shortest text that parses back to exactly ``v``."""
    short = f"{v:g}"
    return short if float(short) == v else repr(float(v))


def _number(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False) -> float:
    """``value`` as a float in [lo, hi] (or (lo, hi]); ValueError naming it otherwise."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v) or v > hi or v < lo or (lo_open and v == lo):
        interval = f"({lo:g}, {hi:g}]" if lo_open else f"[{lo:g}, {hi:g}]"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return v


def _triple(name: str, value: Any, lo: float, hi: float) -> tuple[float, float, float]:
    """One number or three (R, G, B) in [lo, hi] -> a 3-tuple of floats."""
    parts = value.split("/") if isinstance(value, str) else value
    vals = list(parts) if isinstance(parts, list | tuple | np.ndarray) else [parts]
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3:
        raise ValueError(f"{name} must be one number or three (R, G, B), got {value!r}")
    r, g, b = (_number(f"{name}[{i}]", v, lo, hi) for i, v in enumerate(vals))
    return (r, g, b)


class Shift:
    """Base class: ``shift(images, rng) -> images``, uint8 RGB ``(N, H, W, 3)`` in and out.

    Subclasses set ``name`` and implement ``_apply(images, rng)`` and ``params()``.
    """

    name: ClassVar[str] = "shift"

    def __call__(self, images: np.ndarray, rng: RngLike = None) -> np.ndarray:
        """Shifted copy of uint8 RGB ``images (N, H, W, 3)``; ``rng``: seed or Generator."""
        x = check_images(images)
        out = self._apply(x, _rng(rng))
        assert out.shape == x.shape and out.dtype == np.uint8
        return out

    def _apply(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError  # pragma: no cover

    def params(self) -> dict[str, Any]:
        """The constructor arguments, JSON-able."""
        return {}

    def get_config(self) -> dict[str, Any]:
        """JSON-able ``{"name": ..., **params}``; :func:`shift_from_config` inverts it."""
        return {"name": self.name, **self.params()}

    def spec(self) -> str:
        """The spec string that :func:`parse_shift` turns back into this shift."""
        parts = []
        for k, v in self.params().items():
            text = "/".join(map(_fmt, v)) if isinstance(v, list) else _fmt(v)
            parts.append(f"{k}={text}")
        return self.name + (":" + ",".join(parts) if parts else "")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Shift) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash(self.spec())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


class Identity(Shift):
    """No shift (the clean domain)."""

    name = "none"

    def _apply(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return images.copy()


class Blur(Shift):
    """Gaussian blur of standard deviation ``sigma`` pixels (0: identity), reflected border."""

    name = "blur"

    def __init__(self, sigma: float = 1.0) -> None:
        self.sigma = _number("blur sigma (pixels)", sigma, 0.0, 100.0)

    def _apply(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.sigma == 0.0:
            return images.copy()
        return np.stack([cv2.GaussianBlur(im, (0, 0), self.sigma) for im in images])

    def params(self) -> dict[str, Any]:
        return {"sigma": self.sigma}


class LowLight(Shift):
    """Dim scene: ``255 (x / 255) ** gamma`` plus Gaussian sensor noise (grey levels).

    gamma: > 1 darkens (1: unchanged); noise_std: standard deviation of the additive noise,
    independent per pixel and channel, in grey levels.
    """

    name = "low_light"

    def __init__(self, gamma: float = 2.0, noise_std: float = 6.0) -> None:
        self.gamma = _number("low_light gamma", gamma, 0.0, 20.0, lo_open=True)
        self.noise_std = _number("low_light noise_std (grey levels)", noise_std, 0.0, 255.0)

    def _apply(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = 255.0 * (images / 255.0) ** self.gamma
        if self.noise_std > 0:
            x = x + rng.normal(0.0, self.noise_std, size=images.shape)
        return _to_uint8(x)

    def params(self) -> dict[str, Any]:
        return {"gamma": self.gamma, "noise_std": self.noise_std}


class ColorCast(Shift):
    """White-balance error: ``x * gains + offsets`` per RGB channel, clipped to [0, 255].

    gains: one or three (R, G, B) factors in [0, 10]; offsets: grey levels in [-255, 255].
    """

    name = "color_cast"

    def __init__(self, gains: Any = (1.15, 1.0, 0.8), offsets: Any = (0.0, 0.0, 0.0)) -> None:
        self.gains = _triple("color_cast gains", gains, 0.0, 10.0)
        self.offsets = _triple("color_cast offsets", offsets, -255.0, 255.0)

    def _apply(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return _to_uint8(images * np.asarray(self.gains) + np.asarray(self.offsets))

    def params(self) -> dict[str, Any]:
        return {"gains": list(self.gains), "offsets": list(self.offsets)}


class Jpeg(Shift):
    """JPEG re-compression at ``quality`` (integer 1-100, cv2/libjpeg scale; 100 near lossless)."""

    name = "jpeg"

    def __init__(self, quality: int = 20) -> None:
        q = _number("jpeg quality", quality, 1, 100)
        if q != int(q):
            raise ValueError(f"jpeg quality must be an integer in [1, 100], got {quality!r}")
        self.quality = int(q)

    def _apply(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = np.empty_like(images)
        flags = [int(cv2.IMWRITE_JPEG_QUALITY), self.quality]
        for i, im in enumerate(images):
            ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(im[..., ::-1]), flags)
            decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else None
            if decoded is None:  # pragma: no cover - cv2 always round-trips uint8 BGR
                raise RuntimeError("cv2 failed to re-compress an image as JPEG")
            out[i] = decoded[..., ::-1]
        return out

    def params(self) -> dict[str, Any]:
        return {"quality": self.quality}


class Contrast(Shift):
    """Contrast change about each image's mean grey level: ``m + factor (x - m)``.

    factor: in [0, 10]; < 1 is a loss of contrast (haze, flat lighting), 0 a uniform image.
    """

    name = "contrast"

    def __init__(self, factor: float = 0.5) -> None:
        self.factor = _number("contrast factor", factor, 0.0, 10.0)

    def _apply(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = images.astype(np.float64)
        m = x.mean(axis=(1, 2, 3), keepdims=True)
        return _to_uint8(m + self.factor * (x - m))

    def params(self) -> dict[str, Any]:
        return {"factor": self.factor}


class Compose(Shift):
    """Several shifts applied left to right; each draws from its own child of ``rng``."""

    name = "compose"

    def __init__(self, shifts: list[Shift]) -> None:
        shifts = list(shifts)
        for s in shifts:
            if not isinstance(s, Shift):
                raise ValueError(f"Compose takes Shift objects, got {s!r}")
        self.shifts = shifts

    def _apply(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = images
        seeds = rng.integers(0, 2**63, size=len(self.shifts))
        for s, seed in zip(self.shifts, seeds, strict=True):
            x = s(x, np.random.default_rng(int(seed)))
        return x.copy() if x is images else x

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "shifts": [s.get_config() for s in self.shifts]}

    def spec(self) -> str:
        return "+".join(s.spec() for s in self.shifts) or "none"

    def __repr__(self) -> str:
        return f"Compose({self.shifts!r})"


SHIFTS: dict[str, type[Shift]] = {
    cls.name: cls for cls in (Identity, Blur, LowLight, ColorCast, Jpeg, Contrast)
}


def make_shift(name: str, **params: Any) -> Shift:
    """Build the shift called ``name`` (see :data:`SHIFTS`) with keyword parameters."""
    if name not in SHIFTS:
        raise ValueError(f"unknown shift {name!r}; valid names: {', '.join(SHIFTS)}, "
                         "or compose several with '+'")
    cls = SHIFTS[name]
    try:
        return cls(**params)
    except TypeError:
        allowed = list(cls().params())
        bad = [k for k in params if k not in allowed]
        raise ValueError(f"shift {name!r} has no parameter {', '.join(map(repr, bad))}; "
                         f"its parameters are {allowed or 'none'}") from None


def parse_shift(spec: str | None) -> Shift:
    """Shift from a spec string such as ``"blur:sigma=2.5+jpeg:quality=30"`` (None/"": none)."""
    if spec is not None and not isinstance(spec, str):
        raise ValueError(f"shift spec must be a string, got {spec!r}")
    if spec is None or not spec.strip():
        return Identity()
    parts = [p.strip() for p in spec.split("+")]
    shifts = []
    for part in parts:
        name, _, args = part.partition(":")
        params: dict[str, Any] = {}
        for item in filter(None, (a.strip() for a in args.split(","))):
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise ValueError(f"bad shift parameter {item!r} in {spec!r}; write key=value")
            params[key.strip()] = value.strip()
        shifts.append(make_shift(name.strip(), **params))
    return shifts[0] if len(shifts) == 1 else Compose(shifts)


def shift_from_config(config: dict[str, Any]) -> Shift:
    """Inverse of ``Shift.get_config``: ``{"name": ..., **params}`` -> Shift."""
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError(f"shift config must be a dict with a 'name', got {config!r}")
    params = {k: v for k, v in config.items() if k != "name"}
    if config["name"] == Compose.name:
        return Compose([shift_from_config(c) for c in params.get("shifts", [])])
    return make_shift(config["name"], **params)
