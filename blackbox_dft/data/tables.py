"""Labelled images listed in text files: CSV tables and CelebA attribute lists.

Used by :func:`blackbox_dft.data.loaders.load_dataset`. Malformed text (not UTF-8, NUL bytes,
csv's field limit, wrong field counts, bad values) is one :class:`DataError` naming
``file:line``; rows keep their line numbers through subsetting for that.
"""

from __future__ import annotations

import csv
import io
import os
import re
from typing import Any

import numpy as np

from blackbox_dft.data.datasets import DataError, Dataset, normalize_split, read_images, read_text

__all__ = ["csv_dataset", "celeba_dataset", "class_order", "labels_from_names", "subset_rows"]

_PATH_COLUMNS = ("path", "file", "filename", "file_name", "image", "image_path", "img")
_CELEBA_PART = "list_eval_partition.txt"
_MAX_CLASS_ID = 1_000_000  # integer labels are output indices; more is a broken file
Rows = list[tuple[int, list[str]]]  # (line number in the file, cells) per data row


def _is_int(text: str) -> bool:
    return re.fullmatch(r"-?[0-9]+", text) is not None


def class_order(names: list[str], classes: list[str] | None, where: str) -> list[str]:
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


def labels_from_names(names: list[str], order: list[str]) -> np.ndarray:
    """Class ids int64 ``(N,)`` of label texts, in the order of :func:`class_order`."""
    pos = {c: i for i, c in enumerate(order)}
    if all(_is_int(c) for c in order):
        return np.asarray([int(n) for n in names], dtype=np.int64)
    return np.asarray([pos[n] for n in names], dtype=np.int64)


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


def subset_rows(n: int, limit: int | None, seed: int | None) -> np.ndarray:
    """Sorted indices of a seeded random subset of ``limit`` of ``n`` rows (all when None)."""
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
    start = 1  # the line the next row starts on: the one to name when it is malformed
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                table.append((start, row))
            start = reader.line_num + 1
    except csv.Error as exc:
        line = start
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


def csv_dataset(path: str, classes: list[str] | None, attributes: list[str] | None,
                opts: dict[str, Any]) -> Dataset:
    """A CSV of ``path,label`` or ``path`` + attribute columns (+ ``split``); ``opts`` as
    built by :func:`blackbox_dft.data.loaders.load_dataset`."""
    header, rows = _csv_rows(path)
    lower = [h.lower() for h in header]
    pcol = next((lower.index(c) for c in _PATH_COLUMNS if c in lower), 0)
    scol = lower.index("split") if "split" in lower else None
    numbers = {line: k + 1 for k, (line, _) in enumerate(rows)}  # data row number per line
    rows = [rows[i] for i in subset_rows(len(rows), opts["limit"], opts["seed"])]
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
        order = class_order(label_names, classes, path)
        labels: np.ndarray = labels_from_names(label_names, order)
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


def celeba_dataset(attr_file: str, attributes: list[str] | None,
                   opts: dict[str, Any]) -> Dataset:
    """A CelebA ``list_attr_celeba.txt`` (+ ``list_eval_partition.txt`` beside it, if any)."""
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
    rows = [rows[i] for i in subset_rows(len(rows), opts["limit"], opts["seed"])]
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
