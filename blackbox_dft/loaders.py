"""Dataset loaders: ImageFolder trees, CSV files, CelebA attribute lists and ``.npz`` arrays.

:func:`load_dataset` picks the loader from the path and returns a
:class:`~blackbox_dft.data.Dataset`. Every problem is a :class:`DataError` with one
line that names the file, row or class at fault.
"""

from __future__ import annotations

import csv
import io
import os
import re
import zipfile
import zlib
from typing import Any

import numpy as np

from .data import (
    IMAGE_EXTENSIONS,
    SPLITS,
    DataError,
    Dataset,
    as_uint8_images,
    normalize_split,
    read_images,
    read_text,
)
from .files import list_images, pixel_limit

__all__ = ["load_dataset", "list_images"]

_PATH_COLUMNS = ("path", "file", "filename", "file_name", "image", "image_path", "img")
_CELEBA_ATTR = "list_attr_celeba.txt"
_CELEBA_PART = "list_eval_partition.txt"
_MAX_CLASS_ID = 1_000_000  # integer labels are output indices; more is a broken file
Rows = list[tuple[int, list[str]]]  # (line number in the file, cells) per data row


def _is_int(text: str) -> bool:
    return re.fullmatch(r"-?[0-9]+", text) is not None


def _class_order(names: list[str], classes: list[str] | None, where: str) -> list[str]:
    """Class names in id order: ``classes`` if given, else numeric or alphabetical order."""
    present = sorted(set(names))
    if classes is not None:
        unknown = [c for c in present if c not in classes]
        if unknown:
            raise DataError(f"{where}: labels {unknown[:5]} are not among --classes "
                            f"{','.join(classes)}")
        empty = [c for c in classes if c not in present]
        if empty:
            raise DataError(f"{where}: class {empty[0]!r} has no images")
        return list(classes)
    if all(_is_int(c) for c in present):
        ids = sorted(int(c) for c in present)
        if ids[0] < 0:
            raise DataError(f"{where}: class ids must be >= 0, got {ids[0]}")
        if ids[-1] > _MAX_CLASS_ID:
            raise DataError(f"{where}: class id {ids[-1]} is over {_MAX_CLASS_ID:,}; integer "
                            "labels are the model's output indices")
        # Integer labels are the model's output indices: keep them, even with gaps.
        return [str(i) for i in range(ids[-1] + 1)]
    return present


def _labels_from_names(names: list[str], order: list[str]) -> np.ndarray:
    pos = {c: i for i, c in enumerate(order)}
    if all(_is_int(c) for c in order):
        return np.asarray([int(n) for n in names], dtype=np.int64)
    return np.asarray([pos[n] for n in names], dtype=np.int64)


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
    order = _class_order(label_names, classes, root)
    images, kept, skipped = read_images(paths, names, opts["size"], opts["size_mode"],
                                        opts["skip_bad"], opts["max_pixels"])
    labels = _labels_from_names([label_names[i] for i in kept], order)
    return Dataset(images, labels, order, [names[i] for i in kept],
                   np.asarray([split[i] for i in kept]) if has_split else None,
                   False, skipped)


def _binary(value: str, where: str) -> int:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "1.0"):
        return 1
    if v in ("0", "-1", "false", "no", "0.0", "-1.0"):
        return 0
    raise DataError(f"{where}: attribute value {value!r} is not 0/1, -1/1 or true/false")


def _attribute_labels(rows: Rows, names: list[str], attrs: list[str],
                      where: str, row_names: list[str]) -> tuple[np.ndarray, bool]:
    cols = []
    for a in attrs:
        if a not in names:
            raise DataError(f"{where}: no column {a!r}; columns are {', '.join(names)}")
        cols.append(names.index(a))
    lab = np.zeros((len(rows), len(cols)), dtype=np.uint8)
    for i, (line, row) in enumerate(rows):
        for j, c in enumerate(cols):
            cell = row[c] if c < len(row) else ""
            if cell.strip() == "":
                raise DataError(f"{where}:{line}: label missing for {row_names[i]} "
                                f"(column {attrs[j]!r})")
            lab[i, j] = _binary(cell, f"{where}:{line}")
    if len(attrs) == 1:
        return lab[:, 0].astype(np.int64), False
    return lab, True


def _subset_rows(n: int, limit: int | None, seed: int | None) -> np.ndarray:
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=int(limit), replace=False))


def _csv_rows(path: str) -> tuple[list[str], Rows]:
    """Header cells and the non-empty data rows of a CSV file, each with its line number.

    Malformed files (not UTF-8, NUL bytes, a field over csv's limit, e.g. after an
    unclosed quote, more cells than the header) are one DataError naming ``path:line``.
    """
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    table: Rows = []
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                table.append((reader.line_num, row))
    except csv.Error as exc:
        line = reader.line_num + 1
        if "field larger than field limit" in str(exc):
            raise DataError(f"{path}:{line}: a field is longer than {csv.field_size_limit():,} "
                            "characters; look for an unclosed quote (\") there") from None
        raise DataError(f"{path}:{line}: not valid CSV ({exc})") from None
    if len(table) < 2:
        raise DataError(f"{path}: needs a header line and at least one row")
    header = [h.strip() for h in table[0][1]]
    for line, row in table[1:]:
        if len(row) > len(header) and any(c.strip() for c in row[len(header):]):
            raise DataError(f"{path}:{line}: {len(row)} fields, but the header has "
                            f"{len(header)} ({','.join(header)}); quote fields that hold commas")
    return header, table[1:]


def _csv(path: str, classes: list[str] | None, attributes: list[str] | None,
         opts: dict[str, Any]) -> Dataset:
    header, rows = _csv_rows(path)
    lower = [h.lower() for h in header]
    pcol = next((lower.index(c) for c in _PATH_COLUMNS if c in lower), 0)
    scol = lower.index("split") if "split" in lower else None
    numbers = {line: k + 1 for k, (line, _) in enumerate(rows)}  # data row number per line
    rows = [rows[i] for i in _subset_rows(len(rows), opts["limit"], opts["seed"])]
    label_cols = [h for i, h in enumerate(header) if i not in (pcol, scol)]
    if attributes is None and "label" in lower:
        lcol: int | None = lower.index("label")
    elif attributes is None and len(label_cols) == 1:
        lcol = header.index(label_cols[0])
    else:
        lcol = None
    base = opts["image_root"] or os.path.dirname(os.path.abspath(path))
    names, paths = [], []
    for line, r in rows:
        rel = r[pcol].strip() if pcol < len(r) else ""
        if not rel:
            raise DataError(f"{path}:{line}: row {numbers[line]} has no image path")
        names.append(rel)
        paths.append(rel if os.path.isabs(rel) else os.path.join(base, rel))
    if lcol is not None:
        label_names = []
        for i, (line, r) in enumerate(rows):
            cell = r[lcol].strip() if lcol < len(r) else ""
            if not cell:
                raise DataError(f"{path}:{line}: label missing for {names[i]} (row "
                                f"{numbers[line]}, column {header[lcol]!r})")
            label_names.append(cell)
        order = _class_order(label_names, classes, path)
        labels: np.ndarray = _labels_from_names(label_names, order)
        multilabel = False
    else:
        if not label_cols:
            raise DataError(f"{path}: no label column; expected path,label or attribute columns")
        attrs = attributes or label_cols
        labels, multilabel = _attribute_labels(rows, header, attrs, path, names)
        order = list(attrs) if multilabel else [f"not_{attrs[0]}", attrs[0]]
    split = None
    if scol is not None:
        split = np.asarray([normalize_split(r[scol] if scol < len(r) else "", f"{path}:{line}")
                            for line, r in rows])
    images, kept, skipped = read_images(paths, names, opts["size"], opts["size_mode"],
                                        opts["skip_bad"], opts["max_pixels"])
    return Dataset(images, labels[kept], order, [names[i] for i in kept],
                   None if split is None else split[kept], multilabel, skipped)


def _word_lines(path: str) -> Rows:
    """The non-blank lines of a whitespace-separated text file, split, with line numbers."""
    return [(i + 1, ln.split()) for i, ln in enumerate(read_text(path).splitlines())
            if ln.strip()]


def _partition(part_file: str, files: list[str]) -> np.ndarray:
    part: dict[str, str] = {}
    for line, tok in _word_lines(part_file):
        if len(tok) != 2:
            raise DataError(f"{part_file}:{line}: expected '<image> <0|1|2>', got "
                            f"{' '.join(tok)[:80]!r}")
        part[tok[0]] = normalize_split(tok[1], f"{part_file}:{line}")
    missing = [f for f in files if f not in part]
    if missing:
        raise DataError(f"{part_file}: no partition for {missing[0]}")
    return np.asarray([part[f] for f in files])


def _celeba(attr_file: str, attributes: list[str] | None, opts: dict[str, Any]) -> Dataset:
    folder = os.path.dirname(os.path.abspath(attr_file))
    lines = _word_lines(attr_file)
    if len(lines) < 3 or len(lines[0][1]) != 1 or not lines[0][1][0].isdecimal():
        raise DataError(f"{attr_file}: not a CelebA attribute list (count line, names line, rows)")
    attr_names = lines[1][1]
    rows = lines[2:]
    for line, r in rows:
        if len(r) != len(attr_names) + 1:
            raise DataError(f"{attr_file}:{line}: {r[0]} has {len(r) - 1} attribute values, "
                            f"expected {len(attr_names)}")
    rows = [rows[i] for i in _subset_rows(len(rows), opts["limit"], opts["seed"])]
    files = [r[0] for _, r in rows]
    values = [(line, r[1:]) for line, r in rows]
    labels, multilabel = _attribute_labels(values, attr_names, attributes or attr_names,
                                           attr_file, files)
    attrs = attributes or attr_names
    order = list(attrs) if multilabel else [f"not_{attrs[0]}", attrs[0]]
    part_file = os.path.join(folder, _CELEBA_PART)
    split = _partition(part_file, files) if os.path.isfile(part_file) else None
    root = opts["image_root"] or next(
        (d for d in (os.path.join(folder, "img_align_celeba"), folder)
         if os.path.isdir(d) and os.path.exists(os.path.join(d, files[0]))),
        os.path.join(folder, "img_align_celeba"))
    images, kept, skipped = read_images([os.path.join(root, f) for f in files], files,
                                        opts["size"], opts["size_mode"], opts["skip_bad"],
                                        opts["max_pixels"])
    return Dataset(images, labels[kept], order, [files[i] for i in kept],
                   None if split is None else split[kept], multilabel, skipped)


def _npz(path: str, classes: list[str] | None, opts: dict[str, Any]) -> Dataset:
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: holds one .npy array, not named arrays; save images "
                            "and labels with numpy.savez")
        with z:
            arrays = {k: z[k] for k in z.files}
    except DataError:
        raise
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{path}: cannot read as .npz without pickle (damaged, truncated or "
                        f"not an .npz): {' '.join(str(exc).split())[:200]}") from None
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
        from .data import fit_size
        xs = [np.stack([fit_size(im, opts["size"], opts["size_mode"]) for im in x]) for x in xs]
    images = np.concatenate(xs)
    y = np.concatenate(ys)
    if y.ndim == 2:
        if not np.all(np.isin(y, (-1, 0, 1))):
            raise DataError(f"{path}: attribute labels must be 0/1 or -1/1")
        labels: np.ndarray = (y > 0).astype(np.uint8)
        names_cls = [str(c) for c in arrays["classes"]] if "classes" in arrays else [
            f"attr{j}" for j in range(y.shape[1])]
        multilabel = True
    else:
        if not np.issubdtype(y.dtype, np.integer) and y.dtype.kind not in "US":
            if not np.all(np.isfinite(y)) or not np.all(y == np.rint(y)):
                raise DataError(f"{path}: labels must be integers or strings")
        text = [str(int(v)) if y.dtype.kind not in "US" else str(v) for v in y]
        given = classes or ([str(c) for c in arrays["classes"]] if "classes" in arrays
                            and y.dtype.kind in "US" else None)
        names_cls = _class_order(text, given, path)
        labels = _labels_from_names(text, names_cls)
        if "classes" in arrays and y.dtype.kind not in "US":
            names_cls = [str(c) for c in arrays["classes"]]
        multilabel = False
    idx = _subset_rows(images.shape[0], opts["limit"], opts["seed"])
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
    pixels (default :data:`blackbox_dft.files.MAX_IMAGE_PIXELS`), before decoding them.
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
            return _celeba(os.path.join(path, _CELEBA_ATTR), attributes, opts)
        return _image_folder(path, classes, opts)
    low = path.lower()
    if os.path.basename(low) == _CELEBA_ATTR:
        return _celeba(path, attributes, opts)
    if low.endswith(".csv"):
        return _csv(path, classes, attributes, opts)
    if low.endswith(".npz"):
        return _npz(path, classes, opts)
    raise DataError(f"{path}: unknown data format; use a folder, a .csv, a .npz or "
                    f"{_CELEBA_ATTR}")
