"""Dataset loaders: ImageFolder trees, CSV files, CelebA attribute lists and ``.npz`` arrays.

:func:`load_dataset` picks the loader from the path and returns a
:class:`~blackbox_dft.data.datasets.Dataset`. Every problem is a :class:`DataError` with one
line that names the file, row or class at fault.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from typing import Any

import numpy as np

from blackbox_dft.data.datasets import (
    IMAGE_EXTENSIONS,
    SPLITS,
    DataError,
    Dataset,
    as_uint8_images,
    fit_size,
    normalize_split,
    read_images,
)
from blackbox_dft.data.files import list_images, pixel_limit
from blackbox_dft.data.tables import (
    celeba_dataset,
    class_order,
    csv_dataset,
    labels_from_names,
    subset_rows,
)

__all__ = ["load_dataset", "list_images"]

_CELEBA_ATTR = "list_attr_celeba.txt"
def _image_folder(root: str, classes: list[str] | None, opts: dict[str, Any]) -> Dataset:
    subdirs = sorted(d for d in os.listdir(root)
                     if not d.startswith(".") and os.path.isdir(os.path.join(root, d)))
    if not subdirs:
        raise DataError(f"{root} has no class folders; an ImageFolder is root/<class>/<image>")
    split_dirs = [d for d in subdirs if d.lower() in
                  ("train", "training", "val", "valid", "validation", "test", "testing")]
    has_split = bool(split_dirs) and any(normalize_split(d, root) == "train" for d in split_dirs)
    tops = split_dirs if has_split else [""]
    paths, names, label_names, split = [], [], [], []
    class_dirs: set[str] = set()
    for top in tops:
        base = os.path.join(root, top)
        for cls in sorted(d for d in os.listdir(base)
                          if not d.startswith(".") and os.path.isdir(os.path.join(base, d))):
            class_dirs.add(cls)
            for rel in list_images(os.path.join(base, cls)):
                paths.append(os.path.join(base, cls, rel))
                names.append(os.path.join(top, cls, rel) if top else os.path.join(cls, rel))
                label_names.append(cls)
                split.append(normalize_split(top, root) if top else "")
    empty = sorted(class_dirs - set(label_names))
    if empty:
        raise DataError(f"{root}: class {empty[0]!r} has no images")
    if not paths:
        raise DataError(f"{root}: no image files found ({', '.join(IMAGE_EXTENSIONS)})")
    order = class_order(label_names, classes, root)
    images, kept, skipped = read_images(paths, names, opts["size"], opts["size_mode"],
                                        opts["skip_bad"], opts["max_pixels"])
    labels = labels_from_names([label_names[i] for i in kept], order)
    return Dataset(images, labels, order, [names[i] for i in kept],
                   np.asarray([split[i] for i in kept]) if has_split else None,
                   False, skipped)


def _read_npz(path: str) -> dict[str, np.ndarray]:
    """The named arrays of an ``.npz`` file (no pickle); DataError for anything else."""
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: holds one .npy array, not named arrays; save images "
                            "and labels with numpy.savez")
        with z:
            return {k: z[k] for k in z.files}
    except DataError:
        raise
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{path}: cannot read as .npz without pickle (damaged, truncated or "
                        f"not an .npz): {' '.join(str(exc).split())[:200]}") from None


def _npz_pairs(path: str, arrays: dict[str, np.ndarray]) -> list[tuple[str, Any, Any]]:
    """``(split, images, labels)`` per split (x_train/y_train...), or one unsplit pair."""
    pairs = []
    for s in SPLITS:
        for xk, yk in ((f"x_{s}", f"y_{s}"), (f"images_{s}", f"labels_{s}")):
            if xk in arrays:
                if yk not in arrays:
                    raise DataError(f"{path}: has {xk} but no {yk}")
                pairs.append((s, arrays[xk], arrays[yk]))
    if not pairs:
        xkey = next((k for k in ("images", "x", "X") if k in arrays), None)
        ykey = next((k for k in ("labels", "y", "Y") if k in arrays), None)
        if xkey is None or ykey is None:
            raise DataError(f"{path}: expected arrays images+labels (or x+y, or x_train, y_train, "
                            f"x_val, ...); found {', '.join(sorted(arrays)) or 'none'}")
        pairs.append(("", arrays[xkey], arrays[ykey]))
    return pairs


def _npz_labels(path: str, y: np.ndarray, arrays: dict[str, np.ndarray],
                classes: list[str] | None) -> tuple[np.ndarray, list[str], bool]:
    """``(labels, class or attribute names, multilabel)`` from the stacked label array."""
    if y.ndim == 2:
        if not np.all(np.isin(y, (-1, 0, 1))):
            raise DataError(f"{path}: attribute labels must be 0/1 or -1/1")
        names_cls = [str(c) for c in arrays["classes"]] if "classes" in arrays else [
            f"attr{j}" for j in range(y.shape[1])]
        return (y > 0).astype(np.uint8), names_cls, True
    if not np.issubdtype(y.dtype, np.integer) and y.dtype.kind not in "US":
        if not np.all(np.isfinite(y)) or not np.all(y == np.rint(y)):
            raise DataError(f"{path}: labels must be integers or strings")
    text = [str(int(v)) if y.dtype.kind not in "US" else str(v) for v in y]
    given = classes or ([str(c) for c in arrays["classes"]] if "classes" in arrays
                        and y.dtype.kind in "US" else None)
    names_cls = class_order(text, given, path)
    labels = labels_from_names(text, names_cls)
    if "classes" in arrays and y.dtype.kind not in "US":
        names_cls = [str(c) for c in arrays["classes"]]
    return labels, names_cls, False


def _npz(path: str, classes: list[str] | None, opts: dict[str, Any]) -> Dataset:
    arrays = _read_npz(path)
    pairs = _npz_pairs(path, arrays)
    xs, ys, split, names = [], [], [], []
    for s, x, y in pairs:
        x = as_uint8_images(x, path)
        y = np.asarray(y)
        if y.ndim not in (1, 2) or y.dtype.kind not in "biufUS":
            raise DataError(f"{path}: labels must be a (N,) or (N, A) array of numbers or "
                            f"strings, got shape {y.shape} dtype {y.dtype}")
        if y.shape[0] != x.shape[0]:
            raise DataError(f"{path}: {x.shape[0]} images but {y.shape[0]} labels")
        xs.append(x)
        ys.append(y)
        split += [s] * x.shape[0]
        names += [f"{os.path.basename(path)}[{s + ':' if s else ''}{i}]" for i in range(len(x))]
    if len({x.shape[1:] for x in xs}) > 1 and opts["size"] is None:
        raise DataError(f"{path}: splits differ in image size; choose one with --size HxW")
    if opts["size"] is not None:
        xs = [np.stack([fit_size(im, opts["size"], opts["size_mode"]) for im in x]) for x in xs]
    images = np.concatenate(xs)
    labels, names_cls, multilabel = _npz_labels(path, np.concatenate(ys), arrays, classes)
    idx = subset_rows(images.shape[0], opts["limit"], opts["seed"])
    ds = Dataset(images, labels, names_cls, names,
                 np.asarray(split) if pairs[0][0] else None, multilabel)
    return ds.subset(idx) if idx.size < images.shape[0] else ds


def load_dataset(path: str, *, size: tuple[int, int] | None = None, size_mode: str = "resize",
                 skip_bad: bool = False, classes: list[str] | None = None,
                 attributes: list[str] | None = None, image_root: str | None = None,
                 limit: int | None = None, seed: int | None = 0,
                 max_pixels: int | None = None) -> Dataset:
    """Load a labelled image set; the format is chosen from ``path``.

    A folder: ImageFolder (``root/<class>/<image>``, optionally under ``train/``, ``val/``,
    ``test/``) or a CelebA folder (holding ``list_attr_celeba.txt``). A ``.csv``: ``path,label``
    or ``path`` + attribute columns (+ optional ``split``). ``list_attr_celeba.txt`` itself.
    A ``.npz``: ``images``/``labels`` or ``x_train``/``y_train``/``x_val``/... .
    size: ``(h, w)`` to resize or crop every image to (``size_mode``); classes: class names in
    id order; attributes: attribute columns to use; limit: a seeded random subset;
    max_pixels: refuse (or with ``skip_bad`` skip) image files whose header claims more
    pixels (default :data:`blackbox_dft.data.files.MAX_IMAGE_PIXELS`), before decoding them.
    Malformed text files are one :class:`DataError` naming ``file:line``.
    """
    if limit is not None and int(limit) < 1:
        raise DataError(f"--limit must be >= 1, got {limit!r}")
    opts = {"size": size, "size_mode": size_mode, "skip_bad": skip_bad,
            "image_root": image_root, "limit": limit, "seed": seed,
            "max_pixels": pixel_limit(max_pixels)}
    if image_root is not None and not os.path.isdir(image_root):
        raise DataError(f"image root folder not found: {image_root}")
    if not os.path.exists(path):
        raise DataError(f"data not found: {path} (no such file or folder)")
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, _CELEBA_ATTR)):
            return celeba_dataset(os.path.join(path, _CELEBA_ATTR), attributes, opts)
        return _image_folder(path, classes, opts)
    low = path.lower()
    if os.path.basename(low) == _CELEBA_ATTR:
        return celeba_dataset(path, attributes, opts)
    if low.endswith(".csv"):
        return csv_dataset(path, classes, attributes, opts)
    if low.endswith(".npz"):
        return _npz(path, classes, opts)
    raise DataError(f"{path}: unknown data format; use a folder, a .csv, a .npz or "
                    f"{_CELEBA_ATTR}")
