"""Ready-made tasks: real images, real labels, a stand-in model and a fixed split.

Images come from scikit-image's ``data/lfw_subset.npy`` (200 grey crops, 25x25, float in
[0, 1]: rows 0-99 are faces, rows 100-199 non-faces), read with ``numpy.load`` from the
installed package without importing it, and returned as uint8 RGB ``(N, 25, 25, 3)``
(grey replicated). Labels ``y`` are int64 class indices, equal to the model's score columns.

=========== ======================================= ================= =====================
task        labels                                  model             train / val / test
=========== ======================================= ================= =====================
face        rows 0-99 face (1), 100-199 no face (0) stand-in blazeface 100 / 40 / 60
smiling     rows 0-99, adapters/data/                stand-in smiling  50 / 20 / 30
            lfw_subset_smiling.csv (36 smiling = 1)
=========== ======================================= ================= =====================

The split is stratified and deterministic: within each class the rows are shuffled by
``numpy.random.default_rng(seed)``, each row gets the position ``(rank + 0.5) / n_class``
and rows are sorted by position (ties broken by the shuffle) then cut at the split sizes,
so every split keeps the class proportions to within one image (face: 50/20/30 per class;
smiling: 18/7/11 smiling and 32/13/19 not). The default seed is 0.

The shift (the user's capture conditions) is applied to every split with noise drawn from
``default_rng([seed, 1])``; ``test_clean`` keeps the unshifted test images for the report.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from blackbox_dft.adapters.standins.models import blazeface, smiling, standin_file
from blackbox_dft.data.shifts import Identity, Shift, parse_shift

__all__ = ["Task", "face_task", "smiling_task", "TASKS", "load_task", "lfw_subset",
           "smiling_labels", "stratified_split", "DEFAULT_SEED"]

DEFAULT_SEED = 0
_SMILING_CSV = os.path.join(os.path.dirname(__file__), "data", "lfw_subset_smiling.csv")

Split = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True, eq=False)
class Task:
    """A model plus shifted, labelled images in train / val / test splits.

    train, val, test: ``(X, y)``, X uint8 RGB ``(n, H, W, 3)`` with the shift applied,
    y int64 ``(n,)`` class indices into ``class_names`` (= the model's score columns).
    test_clean: the same test images without the shift.
    """

    name: str
    model: Any
    train: Split
    val: Split
    test: Split
    test_clean: np.ndarray
    class_names: tuple[str, ...]
    description: str
    shift: Shift = field(default_factory=Identity)
    seed: int = DEFAULT_SEED

    def __repr__(self) -> str:
        sizes = "/".join(str(len(s[1])) for s in (self.train, self.val, self.test))
        return (f"Task({self.name!r}, model={self.model!r}, shift={self.shift.spec()!r}, "
                f"train/val/test={sizes}, seed={self.seed})")


def lfw_subset() -> np.ndarray:
    """scikit-image's LFW subset as uint8 RGB ``(200, 25, 25, 3)`` (rows 0-99 faces)."""
    path = standin_file("skimage", os.path.join("data", "lfw_subset.npy"),
                        pip="pip install scikit-image")
    grey = np.load(path, allow_pickle=False)
    if grey.shape != (200, 25, 25):
        raise ValueError(f"{path} has shape {grey.shape}, expected (200, 25, 25)")
    x = np.clip(np.rint(np.asarray(grey, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    return np.repeat(x[..., None], 3, axis=-1)


def smiling_labels(path: str = _SMILING_CSV) -> np.ndarray:
    """Smile labels int64 ``(100,)`` of LFW-subset rows 0-99 (1 = smiling), from the CSV."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    index = [int(r["index"]) for r in rows]
    if index != list(range(100)):
        raise ValueError(f"{path} must list indices 0..99 in order, got {len(index)} rows")
    return np.array([int(r["smiling"]) for r in rows], dtype=np.int64)


def stratified_split(y: np.ndarray, sizes: tuple[int, ...],
                     seed: int = DEFAULT_SEED) -> list[np.ndarray]:
    """Row indices of each split, stratified by the labels ``y (n,)``; sizes sum to n."""
    y = np.asarray(y)
    if sum(sizes) != len(y) or min(sizes) < 1:
        raise ValueError(f"split sizes {sizes} must be positive and sum to {len(y)}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    position = np.empty(len(y))
    for c in np.unique(y):
        rows = order[y[order] == c]  # this class, shuffled
        position[rows] = (np.arange(len(rows)) + 0.5) / len(rows)
    tie = np.empty(len(y))
    tie[order] = np.arange(len(y))
    ranked = np.lexsort((tie, position))
    cuts = np.cumsum(sizes)[:-1]
    return [np.sort(part) for part in np.split(ranked, cuts)]


def _make_task(name: str, x: np.ndarray, y: np.ndarray, model: Any,
               sizes: tuple[int, int, int], shift: Shift | str | None, seed: int,
               class_names: tuple[str, ...], description: str) -> Task:
    shift_obj = shift if isinstance(shift, Shift) else parse_shift(shift)
    shifted = shift_obj(x, np.random.default_rng([seed, 1]))
    tr, va, te = stratified_split(y, sizes, seed)
    return Task(name=name, model=model, train=(shifted[tr], y[tr]), val=(shifted[va], y[va]),
                test=(shifted[te], y[te]), test_clean=x[te], class_names=class_names,
                description=description, shift=shift_obj, seed=seed)


def face_task(shift: Shift | str | None = None, seed: int = DEFAULT_SEED,
              model: Any = None) -> Task:
    """Face vs non-face on the 200 LFW-subset crops with BlazeFace; 100/40/60 split.

    shift: a Shift or spec string (e.g. ``"blur:sigma=1"``); model: override the stand-in.
    """
    x = lfw_subset()
    y = np.r_[np.ones(100, np.int64), np.zeros(100, np.int64)]
    return _make_task("face", x, y, model if model is not None else blazeface(),
                      (100, 40, 60), shift, seed, ("no_face", "face"),
                      "Is there a face? 25x25 grey LFW crops, 100 faces and 100 non-faces, "
                      "scored by MediaPipe BlazeFace (short range).")


def smiling_task(shift: Shift | str | None = None, seed: int = DEFAULT_SEED,
                 model: Any = None) -> Task:
    """Smiling vs not on the 100 LFW-subset faces with the FER-based smile model; 50/20/30.

    shift: a Shift or spec string; model: override the stand-in (default needs LiteRT).
    """
    x = lfw_subset()[:100]
    y = smiling_labels()
    return _make_task("smiling", x, y, model if model is not None else smiling(),
                      (50, 20, 30), shift, seed, ("not_smiling", "smiling"),
                      "Is the person smiling? 100 25x25 grey LFW faces (36 smiling), "
                      "scored by P(happy) of the FER emotion network.")


TASKS: dict[str, Callable[..., Task]] = {"face": face_task, "smiling": smiling_task}


def load_task(name: str, shift: Shift | str | None = None, seed: int = DEFAULT_SEED,
              model: Any = None) -> Task:
    """Build the task called ``name`` (one of :data:`TASKS`); see :func:`face_task`."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid names: {', '.join(sorted(TASKS))}")
    return TASKS[name](shift=shift, seed=seed, model=model)
