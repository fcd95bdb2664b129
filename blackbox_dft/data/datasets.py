"""Labelled image sets in memory: reading images once as RGB, fixing their size, splitting.

A :class:`Dataset` holds uint8 RGB images ``(N, H, W, 3)``, labels (int ``(N,)`` for
classes, ``{0, 1}`` ``(N, A)`` for attributes), names and an optional split column.
Images are read with cv2 (BGR) and converted to RGB here, once. Loaders for folder
trees, CSV, CelebA and ``.npz`` files are in :mod:`blackbox_dft.data.loaders`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

# Reading and writing files lives in .files; re-exported here, where callers know them from.
from blackbox_dft.data.files import (
    IMAGE_EXTENSIONS,
    DataError,
    pixel_limit,
    read_image,
    read_text,
    remove_stale_parts,
    write_image,
)

__all__ = ["DataError", "Dataset", "IMAGE_EXTENSIONS", "parse_size", "read_image",
           "fit_size", "read_images", "write_image", "remove_stale_parts", "read_text",
           "split_dataset", "SPLITS", "as_uint8_images"]

SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {"train": "train", "training": "train", "0": "train",
                  "val": "val", "valid": "val", "validation": "val", "dev": "val", "1": "val",
                  "test": "test", "testing": "test", "2": "test"}


@dataclass
class Dataset:
    """Images uint8 ``(N, H, W, 3)`` RGB with labels and names.

    labels: int64 ``(N,)`` class ids, or uint8 ``(N, A)`` in {0, 1} when ``multilabel``.
    classes: class names (index = class id) or attribute names (multilabel).
    names: where each image came from (a relative path, or ``file.npz[i]``).
    split: ``None`` or an array of ``"train"``/``"val"``/``"test"`` per image.
    skipped: names of images that could not be read and were skipped (``--skip-bad``).
    """

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    names: list[str]
    split: np.ndarray | None = None
    multilabel: bool = False
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: np.ndarray) -> Dataset:
        """The images at ``index`` (int array), in that order."""
        idx = np.asarray(index, dtype=np.int64)
        return Dataset(self.images[idx], self.labels[idx], list(self.classes),
                       [self.names[i] for i in idx],
                       None if self.split is None else self.split[idx], self.multilabel)

    def describe(self) -> str:
        """One line: size, image shape and class counts."""
        h, w = self.images.shape[1:3]
        if self.multilabel:
            sums = self.labels.sum(0)
            pos = ", ".join(f"{c} {int(s)}" for c, s in zip(self.classes, sums, strict=True))
            return f"{len(self)} images {h}x{w}, positives per attribute: {pos}"
        counts = np.bincount(self.labels, minlength=len(self.classes))
        per = ", ".join(f"{c} {int(n)}" for c, n in zip(self.classes, counts, strict=False))
        return f"{len(self)} images {h}x{w} ({per})"


def parse_size(text: Any) -> tuple[int, int] | None:
    """``"64"`` -> (64, 64); ``"64x48"`` (height x width) -> (64, 48); None stays None."""
    if text is None or text == "":
        return None
    if isinstance(text, (list, tuple)) and len(text) == 2:
        h, w = int(text[0]), int(text[1])
    else:
        m = re.fullmatch(r"\s*(\d+)\s*(?:[xX,]\s*(\d+))?\s*", str(text))
        if not m:
            raise DataError(f"--size must be N or HxW in pixels (e.g. 64 or 64x48), got {text!r}")
        h = int(m.group(1))
        w = int(m.group(2)) if m.group(2) else h
    if h < 1 or w < 1:
        raise DataError(f"--size must be positive, got {text!r}")
    return h, w


def fit_size(image: np.ndarray, size: tuple[int, int], mode: str = "resize") -> np.ndarray:
    """Bring an ``(H, W, 3)`` image to ``size = (h, w)``: ``resize`` stretches; ``crop`` scales
    the image to cover ``size`` and cuts the centre out (keeps the aspect ratio)."""
    th, tw = size
    h, w = image.shape[:2]
    if (h, w) == (th, tw):
        return image
    if mode == "crop":
        k = max(th / h, tw / w)
        nh, nw = max(th, round(h * k)), max(tw, round(w * k))
        interp = cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
        scaled = cv2.resize(image, (nw, nh), interpolation=interp) if (nh, nw) != (h, w) else image
        top, left = (nh - th) // 2, (nw - tw) // 2
        return np.ascontiguousarray(scaled[top:top + th, left:left + tw])
    if mode != "resize":
        raise DataError(f"--size-mode must be 'resize' or 'crop', got {mode!r}")
    interp = cv2.INTER_AREA if th * tw < h * w else cv2.INTER_LINEAR
    return cv2.resize(image, (tw, th), interpolation=interp)


def read_images(paths: list[str], names: list[str], size: tuple[int, int] | None = None,
                mode: str = "resize", skip_bad: bool = False, max_pixels: int | None = None
                ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read files into one uint8 ``(N, H, W, 3)`` RGB stack.

    Returns ``(images, kept, skipped)``: ``kept`` are the indices of the files read,
    ``skipped`` the names of those that were not (only with ``skip_bad``: unreadable,
    corrupt or over ``max_pixels``, see :func:`read_image`).
    Without ``size`` every image must have the same size.
    """
    pixel_limit(max_pixels)  # a bad limit is an error even when every file is skipped
    out: list[np.ndarray] = []
    kept: list[int] = []
    skipped: list[str] = []
    first: tuple[str, tuple[int, ...]] | None = None
    for i, (path, name) in enumerate(zip(paths, names, strict=True)):
        try:
            img = read_image(path, max_pixels)
        except DataError:
            if not skip_bad:
                raise
            skipped.append(name)
            continue
        if size is not None:
            img = fit_size(img, size, mode)
        elif first is None:
            first = (name, img.shape)
        elif img.shape != first[1]:
            raise DataError(
                f"images differ in size: {first[0]} is {first[1][0]}x{first[1][1]}, {name} is "
                f"{img.shape[0]}x{img.shape[1]}; choose one size with --size HxW "
                "(and --size-mode resize or crop)")
        out.append(img)
        kept.append(i)
    if not out:
        raise DataError("no readable images" + (f" ({len(skipped)} skipped)" if skipped else ""))
    return np.stack(out), np.asarray(kept, dtype=np.int64), skipped


def as_uint8_images(arr: np.ndarray, where: str) -> np.ndarray:
    """Array from a file -> uint8 ``(N, H, W, 3)``: grey replicated, floats in [0, 1] or [0, 255]
    rescaled/rounded."""
    a = np.asarray(arr)
    if a.ndim == 3 or (a.ndim == 4 and a.shape[-1] == 1):
        a = np.repeat(a.reshape(*a.shape[:3], 1), 3, axis=-1)
    if a.ndim != 4 or a.shape[-1] != 3 or a.shape[0] == 0:
        raise DataError(f"{where}: images must have shape (N, H, W, 3) or (N, H, W), "
                        f"got {a.shape}")
    if a.dtype == np.uint8:
        return a
    if np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer):
        f = a.astype(np.float64)
        if not np.all(np.isfinite(f)):
            raise DataError(f"{where}: images contain NaN or inf")
        lo, hi = float(f.min()), float(f.max())
        if lo < 0 or hi > 255:
            raise DataError(f"{where}: pixel values span [{lo:g}, {hi:g}]; expected uint8, "
                            "or floats in [0, 1] or [0, 255]")
        if np.issubdtype(a.dtype, np.floating) and hi <= 1.0:
            f = f * 255.0
        return np.clip(np.rint(f), 0, 255).astype(np.uint8)
    raise DataError(f"{where}: images have dtype {a.dtype}; expected uint8 or float")


def normalize_split(value: str, where: str) -> str:
    """``"validation"`` -> ``"val"`` etc.; DataError for anything else."""
    key = str(value).strip().lower()
    if key not in _SPLIT_ALIASES:
        raise DataError(f"{where}: unknown split {value!r}; use train, val or test")
    return _SPLIT_ALIASES[key]


def _strata(ds: Dataset) -> np.ndarray:
    if not ds.multilabel:
        return ds.labels
    _, inverse = np.unique(ds.labels, axis=0, return_inverse=True)
    return inverse.reshape(-1)


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """DataError unless both fractions are in [0, 1) and leave room for training."""
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= float(frac) < 1.0:
            raise DataError(f"{name} must be in [0, 1), got {frac!r}")
    if val_fraction + test_fraction >= 1.0:
        raise DataError(f"val_fraction + test_fraction must be < 1, got "
                        f"{val_fraction} + {test_fraction}")


def split_dataset(ds: Dataset, val_fraction: float = 0.2, test_fraction: float = 0.2,
                  seed: int | None = 0) -> tuple[Dataset, Dataset | None, Dataset | None]:
    """Train / validation / test parts: the data's own split if it has one, else a seeded
    stratified split (per class, or per attribute pattern). Order within a part is kept.

    A data split with no validation part gets one carved out of its training part.
    Parts with fraction 0 are None.
    """
    check_fractions(val_fraction, test_fraction)
    rng = np.random.default_rng(seed)
    if ds.split is not None:
        parts = {s: np.flatnonzero(ds.split == s) for s in SPLITS}
        if parts["train"].size == 0:
            raise DataError("the data's own split has no training images")
        if parts["val"].size == 0 and val_fraction > 0:
            train = ds.subset(parts["train"])
            sub_train, sub_val = _stratified(_strata(train), (val_fraction,), rng)
            parts["val"] = parts["train"][sub_val[0]]
            parts["train"] = parts["train"][sub_train]
    else:
        train_idx, (val_idx, test_idx) = _stratified(
            _strata(ds), (val_fraction, test_fraction), rng)
        parts = {"train": train_idx, "val": val_idx, "test": test_idx}
    if parts["train"].size == 0:
        raise DataError(f"the training split is empty ({len(ds)} images in all)")
    if val_fraction > 0 and parts["val"].size == 0:
        raise DataError(f"the validation split is empty ({len(ds)} images); use more images "
                        "or a larger --val-fraction, or --val-fraction 0")
    return (ds.subset(parts["train"]),
            ds.subset(parts["val"]) if parts["val"].size else None,
            ds.subset(parts["test"]) if parts["test"].size else None)


def _stratified(strata: np.ndarray, fractions: tuple[float, ...],
                rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """Split indices per stratum: ``(rest, [part for each fraction])``, each sorted."""
    rest: list[np.ndarray] = []
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for value in np.unique(strata):
        idx = np.flatnonzero(strata == value)
        idx = idx[rng.permutation(idx.size)]
        start = 0
        for j, frac in enumerate(fractions):
            k = int(round(frac * idx.size))
            if frac > 0 and k == 0 and idx.size - start >= 3:
                k = 1  # a small class still appears in every part
            parts[j].append(idx[start:start + k])
            start += k
        rest.append(idx[start:])
    return (np.sort(np.concatenate(rest)),
            [np.sort(np.concatenate(p)) if p else np.empty(0, np.int64) for p in parts])
