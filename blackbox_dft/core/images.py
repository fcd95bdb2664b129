"""Image arrays at the boundary: validation, applying a perturbation, resizing it.

Images everywhere in blackbox_dft are ``numpy.ndarray`` of shape ``(N, H, W, 3)``,
``uint8``, RGB. A perturbed image is ``clip(round(x + delta), 0, 255)`` as uint8:
exactly what a remote model receives.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

__all__ = ["check_images", "check_delta", "apply_delta", "apply_deltas", "resize_delta", "psnr",
           "check_image_pairs", "side_by_side", "split_pair"]


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    return f"{type(value).__name__}"


def check_images(images: Any, name: str = "images") -> np.ndarray:
    """Validate a batch of images and return it as uint8 ``(N, H, W, 3)`` RGB.

    Accepts uint8, or floats already in grey levels ``[0, 255]`` (rounded).
    Raises ``TypeError``/``ValueError`` naming the problem and the value.
    """
    if not isinstance(images, np.ndarray):
        raise TypeError(
            f"{name} must be a numpy array of shape (N, H, W, 3), got {_describe(images)}"
        )
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"{name} must have shape (N, H, W, 3) (RGB), got shape {images.shape}; "
            "add a batch axis with images[None] for one image, or convert grey to RGB"
        )
    if images.shape[0] == 0 or images.shape[1] == 0 or images.shape[2] == 0:
        raise ValueError(f"{name} is empty: shape {images.shape}")
    if images.dtype == np.uint8:
        return images
    if np.issubdtype(images.dtype, np.floating):
        if not np.all(np.isfinite(images)):
            raise ValueError(f"{name} contains NaN or inf values")
        lo, hi = float(images.min()), float(images.max())
        if lo < 0.0 or hi > 255.0:
            raise ValueError(
                f"{name} are floats outside [0, 255] grey levels (min {lo:g}, max {hi:g}); "
                "pass uint8 images or floats in [0, 255]"
            )
        return np.rint(images).astype(np.uint8)
    raise TypeError(
        f"{name} must be uint8 (or float in [0, 255]), got dtype {images.dtype}; "
        "convert 0-255 integers with images.astype(np.uint8)"
    )


def resize_delta(delta: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a perturbation ``(h, w, 3)`` float32 to ``(height, width, 3)`` bilinearly."""
    delta = np.asarray(delta, dtype=np.float32)
    if delta.shape[:2] == (height, width):
        return delta
    out = cv2.resize(delta, (width, height), interpolation=cv2.INTER_LINEAR)
    return out.reshape(height, width, 3)


def split_rounded(deltas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rounded deltas (any shape) split into uint8 magnitudes to add and to subtract."""
    q = np.rint(np.asarray(deltas, dtype=np.float32))
    return np.clip(q, 0, 255).astype(np.uint8), np.clip(-q, 0, 255).astype(np.uint8)


def nearest_rows(src: int, dst: int) -> np.ndarray:
    """Source row of each of ``dst`` rows in cv2's INTER_NEAREST resize from ``src`` rows,
    int64 ``(dst,)``: read off cv2 itself (a resized column of row numbers), so a row
    gather with it equals ``cv2.resize`` exactly."""
    col = np.arange(src, dtype=np.float32).reshape(src, 1)
    return cv2.resize(col, (1, dst), interpolation=cv2.INTER_NEAREST).ravel().astype(np.int64)


def add_saturating(image: np.ndarray, up: np.ndarray, down: np.ndarray,
                   out: np.ndarray) -> None:
    """``out = clip(image + up - down, 0, 255)`` for one uint8 ``(H, W, 3)`` image, with
    OpenCV's saturating add then subtract (exact: ``up`` and ``down`` never both > 0)."""
    cv2.add(image, up, dst=out)
    cv2.subtract(out, down, dst=out)


def apply_deltas(images: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """Every image under every delta: uint8 ``(M * N, H, W, 3)``, candidate-major.

    images: uint8 ``(N, H, W, 3)``; deltas: float ``(M, H, W, 3)`` grey levels.
    Each output is ``clip(images + round(delta), 0, 255)``, which equals
    ``clip(round(images + delta))`` because images are integers (up to how exact
    .5 ties round). OpenCV's saturating uint8 add and subtract keep this far cheaper
    than going through float32, which matters at 224x224 where it is the library's
    main cost per query.
    """
    images = np.ascontiguousarray(images)
    up, down = split_rounded(deltas)
    out = np.empty((up.shape[0], *images.shape), dtype=np.uint8)
    for m in range(up.shape[0]):
        for n in range(images.shape[0]):
            add_saturating(images[n], up[m], down[m], out[m, n])
    return out.reshape(-1, *images.shape[1:])


def apply_paired(images: np.ndarray, deltas: np.ndarray,
                 out: np.ndarray | None = None) -> np.ndarray:
    """Image ``i`` under delta ``i``: uint8 ``(N, H, W, 3)``, ``clip(x_i + round(d_i))``.

    images: uint8 ``(N, H, W, 3)``; deltas: float ``(N, H, W, 3)`` grey levels (the
    per-image probes of an estimator with one direction per image); out: optional
    contiguous uint8 ``(N, H, W, 3)`` to write into.
    """
    images = np.ascontiguousarray(images)
    up, down = split_rounded(deltas)
    if out is None:
        out = np.empty_like(images)
    for n in range(images.shape[0]):
        add_saturating(images[n], up[n], down[n], out[n])
    return out


def check_delta(delta: Any, name: str = "delta") -> np.ndarray:
    """Validate one perturbation: finite real ``(h, w, 3)`` grey levels, as float32."""
    arr = np.asarray(delta) if not isinstance(delta, np.ndarray) else delta
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer)
                                 or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{name} must be a float array (H, W, 3) of grey levels, "
                        f"got {_describe(delta)}")
    if arr.ndim != 3 or arr.shape[-1] != 3 or 0 in arr.shape:
        raise ValueError(f"{name} must have shape (H, W, 3) with H, W >= 1, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf values")
    return arr.astype(np.float32, copy=False)


def apply_delta(images: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Return ``clip(images + round(delta), 0, 255)`` as uint8 ``(N, H, W, 3)``.

    images: uint8 ``(N, H, W, 3)`` (or floats in [0, 255], see :func:`check_images`);
    delta: float ``(H, W, 3)`` in grey levels (resized bilinearly when its size differs
    from the images'). ``round`` is numpy's ``rint`` (ties to even): at an exact .5 this
    can differ by one grey level from ``rint(images + delta)``.
    """
    x = check_images(images)
    h, w = x.shape[1:3]
    return apply_deltas(x, resize_delta(check_delta(delta), h, w)[None])


def check_image_pairs(images_a: Any, images_b: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate the two stacks of a pair model's call (image ``i`` of each: pair ``i``) and
    return them as uint8 ``(P, H, W, 3)``; ValueError when their counts differ."""
    a, b = check_images(images_a, "images_a"), check_images(images_b, "images_b")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"images_a and images_b must hold the same number of images "
                         f"(one per pair), got {a.shape[0]} and {b.shape[0]}")
    return a, b


def side_by_side(images_a: np.ndarray, images_b: np.ndarray) -> np.ndarray:
    """Pairs as one stack ``(P, H, 2W, 3)``: image ``a`` on the left, ``b`` on the right.

    How a pair travels through an HTTP adapter (one "image" per pair, so
    batching, retries and the count of answers work unchanged); :func:`split_pair` undoes it.
    """
    if images_a.shape != images_b.shape:
        raise ValueError(f"both images of a pair must have the same shape, got "
                         f"{images_a.shape[1:]} and {images_b.shape[1:]}")
    return np.concatenate([images_a, images_b], axis=2)


def split_pair(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One side-by-side pair ``(H, 2W, 3)`` -> its two images ``(H, W, 3)``."""
    w = image.shape[1] // 2
    if image.shape[1] != 2 * w:
        raise ValueError(f"a side-by-side pair has an even width, got {image.shape[1]}")
    return image[:, :w], image[:, w:]


def psnr(clean: np.ndarray, perturbed: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB between two uint8 image stacks (inf if equal)."""
    clean, perturbed = np.asarray(clean), np.asarray(perturbed)
    if clean.shape != perturbed.shape or clean.size == 0:
        raise ValueError(f"psnr needs two non-empty stacks of one shape, got {clean.shape} "
                         f"and {perturbed.shape}")
    diff = clean.astype(np.float64) - perturbed.astype(np.float64)
    mse = float(np.mean(diff * diff))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(255.0**2 / mse))
