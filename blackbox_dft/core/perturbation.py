"""Perturbation families: a latent ``z`` mapped to ``delta`` of image size, within an L-inf budget.

The optimizer works on the latent (grey levels). ``delta = clip(resize(z), -eps, eps)``;
``project`` keeps ``z`` itself inside ``[-eps, eps]`` so that the optimizer state
never drifts outside the feasible set. A low-resolution latent is the main lever
on query cost: a zeroth-order estimate's variance grows with the dimension.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from blackbox_dft.core.checks import check_choice, check_int, show
from blackbox_dft.core.images import add_saturating, apply_paired, nearest_rows, split_rounded

__all__ = ["Perturbation", "FullResolution", "LowResolution", "perturbation_from_config"]

_INTERPOLATIONS = {
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "nearest": cv2.INTER_NEAREST,
}


class Perturbation:
    """Base class: maps latents ``(*latent_shape)`` to deltas ``(H, W, 3)`` in grey levels."""

    def latent_shape(self, image_shape: tuple[int, int]) -> tuple[int, int, int]:
        """Shape of the latent for images of ``(H, W)``."""
        raise NotImplementedError

    def to_delta(self, z: np.ndarray, image_shape: tuple[int, int], epsilon: float) -> np.ndarray:
        """Map one latent to a float32 ``(H, W, 3)`` delta with ``|delta| <= epsilon``."""
        raise NotImplementedError

    def to_deltas(self, zs: np.ndarray, image_shape: tuple[int, int],
                  epsilon: float) -> np.ndarray:
        """Map a stack of latents ``(M, *latent)`` to deltas ``(M, H, W, 3)`` float32."""
        return np.stack([self.to_delta(z, image_shape, epsilon) for z in zs])

    def perturb_paired(self, images: np.ndarray, zs: np.ndarray, epsilon: float,
                       out: np.ndarray | None = None) -> np.ndarray:
        """Image ``i`` under latent ``zs[i]``: uint8 ``(N, H, W, 3)`` from ``(N, *latent)``,
        exactly ``clip(x_i + round(delta(z_i)), 0, 255)``; written into ``out`` if given."""
        h, w = int(images.shape[1]), int(images.shape[2])
        return apply_paired(images, self.to_deltas(zs, (h, w), epsilon), out)

    def project(self, z: np.ndarray, epsilon: float) -> np.ndarray:
        """Clip the latent into the feasible box ``[-epsilon, epsilon]``."""
        return np.clip(z, -epsilon, epsilon)

    def get_config(self) -> dict[str, Any]:
        """JSON-able description, inverse of :func:`perturbation_from_config`."""
        raise NotImplementedError


class FullResolution(Perturbation):
    """One latent value per pixel and channel: ``delta = clip(z)``, dimension ``H*W*3``."""

    def latent_shape(self, image_shape: tuple[int, int]) -> tuple[int, int, int]:
        return (int(image_shape[0]), int(image_shape[1]), 3)

    def to_delta(self, z: np.ndarray, image_shape: tuple[int, int], epsilon: float) -> np.ndarray:
        h, w = image_shape
        z = np.asarray(z, dtype=np.float32)
        if z.shape[:2] != (h, w):
            z = cv2.resize(z, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, 3)
        return np.clip(z, -epsilon, epsilon).astype(np.float32, copy=False)

    def to_deltas(self, zs: np.ndarray, image_shape: tuple[int, int],
                  epsilon: float) -> np.ndarray:
        if zs.shape[1:3] == tuple(image_shape):
            return np.clip(zs, -epsilon, epsilon).astype(np.float32, copy=False)
        return super().to_deltas(zs, image_shape, epsilon)

    def get_config(self) -> dict[str, Any]:
        return {"type": "FullResolution"}

    def __repr__(self) -> str:
        return "FullResolution()"


class LowResolution(Perturbation):
    """A coarse ``(h, w, 3)`` latent grid resized to image size with cv2 (bilinear by default).

    size: ``(h, w)`` of the latent grid; interpolation: ``"linear"``, ``"cubic"`` or
    ``"nearest"``. Dimension ``h*w*3`` regardless of image size.
    """

    #: a latent side this large is a full-resolution latent (and a larger one costs hundreds
    #: of MB per copy): use FullResolution
    MAX_SIDE = 1024

    def __init__(self, size: tuple[int, int] = (8, 8), interpolation: str = "linear") -> None:
        if isinstance(size, (str, bytes)) or not hasattr(size, "__len__") or len(size) != 2:
            raise ValueError(f"size must be a pair (h, w) of positive ints, got {show(size)}")
        h, w = (check_int(f"size[{i}]", s, 1) for i, s in enumerate(size))
        if max(h, w) > self.MAX_SIDE:
            raise ValueError(f"size must be at most {self.MAX_SIDE} per side (a latent that "
                             f"large is FullResolution()), got {show(size)}")
        self.size = (h, w)
        self.interpolation = check_choice("interpolation", interpolation,
                                          sorted(_INTERPOLATIONS))

    def latent_shape(self, image_shape: tuple[int, int]) -> tuple[int, int, int]:
        return (self.size[0], self.size[1], 3)

    def to_delta(self, z: np.ndarray, image_shape: tuple[int, int], epsilon: float) -> np.ndarray:
        h, w = image_shape
        z = np.asarray(z, dtype=np.float32)
        d = cv2.resize(z, (w, h), interpolation=_INTERPOLATIONS[self.interpolation])
        return np.clip(d.reshape(h, w, 3), -epsilon, epsilon)

    def perturb_paired(self, images: np.ndarray, zs: np.ndarray, epsilon: float,
                       out: np.ndarray | None = None) -> np.ndarray:
        if self.interpolation != "nearest":
            return super().perturb_paired(images, zs, epsilon, out)
        # Nearest-neighbour upsampling only replicates values, so rounding and clipping
        # commute with it: round on the small grid, upsample uint8 magnitudes, and add them
        # with OpenCV's saturating arithmetic (the same result, a fraction of the work).
        # Upsampling is split: cv2 widens the few latent rows, then np.repeat fills the
        # height with the row counts of cv2's INTER_NEAREST map (monotone, so exact); about
        # 4x cheaper than one full-size resize at 224x224.
        h, w = int(images.shape[1]), int(images.shape[2])
        images = np.ascontiguousarray(images)
        up, down = split_rounded(np.clip(np.asarray(zs, dtype=np.float32), -epsilon, epsilon))
        lh = up.shape[1]
        counts = np.bincount(nearest_rows(lh, h), minlength=lh)
        if out is None:
            out = np.empty_like(images)
        for i in range(images.shape[0]):
            u, d = (np.repeat(cv2.resize(a[i], (w, lh), interpolation=cv2.INTER_NEAREST)
                              .reshape(lh, w, 3), counts, axis=0) for a in (up, down))
            add_saturating(images[i], u, d, out[i])
        return out

    def get_config(self) -> dict[str, Any]:
        return {"type": "LowResolution", "size": list(self.size),
                "interpolation": self.interpolation}

    def __repr__(self) -> str:
        return f"LowResolution({self.size}, interpolation={self.interpolation!r})"


def perturbation_from_config(config: dict[str, Any]) -> Perturbation:
    """Rebuild a perturbation from :meth:`Perturbation.get_config` output."""
    if not isinstance(config, dict):
        raise ValueError(f"a perturbation config must be a dict, got {show(config)}")
    kind = check_choice("perturbation type", config.get("type"),
                        ("FullResolution", "LowResolution"))
    if kind == "FullResolution":
        return FullResolution()
    return LowResolution(config.get("size", (8, 8)), config.get("interpolation", "linear"))
