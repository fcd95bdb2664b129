"""LFW ``pairs.txt`` files: read the pair list, load the images it names, as verification pairs.

Format (http://vis-www.cs.umass.edu/lfw/README.txt): an optional header line
``<folds> <pairs per fold>`` (or one number), then one pair per line, tab or space
separated: ``name n1 n2`` (two images of one person: *same*) or ``name1 n1 name2 n2``
(*different*). Image ``n`` of ``name`` is ``<root>/<name>/<name>_<n:04d>.jpg``.
The result feeds :class:`~blackbox_dft.tasks.verification.VerificationTuner`: images uint8
RGB ``(N, H, W, 3)`` (each file read once) and pairs int64 ``(P, 3)`` = (a, b, same).
"""

from __future__ import annotations

import os
import re

import cv2
import numpy as np

from blackbox_dft.data.datasets import (
    DataError,
    _stratified,
    check_fractions,
    read_image,
    read_text,
)

__all__ = ["read_pairs", "load_lfw_pairs", "lfw_image_path", "split_pairs"]

Pair = tuple[str, int, str, int, int]  # name a, number a, name b, number b, same


_NUMBER = re.compile(r"[0-9]{1,9}")


def _person(name: str, where: str) -> str:
    # The name becomes a folder under the root: no separators, no "..", nothing hidden.
    if name.startswith(".") or "/" in name or "\\" in name or "\0" in name:
        raise DataError(f"{where}: person name {name[:80]!r} is not a plain folder name")
    return name


def read_pairs(path: str) -> list[Pair]:
    """Parse a ``pairs.txt`` into ``[(name_a, n_a, name_b, n_b, same), ...]``.

    A malformed line (wrong field count, a number that is not a whole number >= 0, a name
    with a path separator) is one DataError naming ``path:line``.
    """
    lines = [(i + 1, ln.split()) for i, ln in enumerate(read_text(path).splitlines())
             if ln.strip()]
    if lines and all(tok.isdigit() for tok in lines[0][1]) and len(lines[0][1]) <= 2:
        lines = lines[1:]  # header: folds and pairs per fold
    pairs: list[Pair] = []
    for lineno, tok in lines:
        where = f"{path}:{lineno}"
        nums = tok[1::2] if len(tok) == 4 else tok[1:]
        if len(tok) not in (3, 4) or not all(_NUMBER.fullmatch(n) for n in nums):
            raise DataError(f"{where}: expected 'name n1 n2' or 'name1 n1 name2 n2' (n: image "
                            f"numbers), got {' '.join(tok)[:120]!r}")
        if len(tok) == 3:
            name = _person(tok[0], where)
            pairs.append((name, int(tok[1]), name, int(tok[2]), 1))
        else:
            pairs.append((_person(tok[0], where), int(tok[1]), _person(tok[2], where),
                          int(tok[3]), 0))
    if not pairs:
        raise DataError(f"{path} lists no pairs")
    return pairs


def lfw_image_path(root: str, name: str, number: int, ext: str = ".jpg") -> str:
    """``<root>/<name>/<name>_<number:04d><ext>``."""
    return os.path.join(root, name, f"{name}_{number:04d}{ext}")


def load_lfw_pairs(pairs_file: str, root: str, size: tuple[int, int] | None = None,
                   ext: str = ".jpg", max_pixels: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Images and pairs of a ``pairs.txt`` over an LFW folder tree.

    size: ``(height, width)`` to resize every image to (bilinear); None requires all images
    to share one size. max_pixels: refuse image files whose header claims more pixels
    (default :data:`blackbox_dft.data.files.MAX_IMAGE_PIXELS`), before decoding them.
    Raises FileNotFoundError listing the pairs that name missing images, DataError (a
    ValueError) for a malformed line (``file:line``) or an unreadable image.
    Returns images uint8 RGB ``(N, H, W, 3)`` and pairs int64 ``(P, 3)``.
    """
    pairs = read_pairs(pairs_file)
    keys: dict[tuple[str, int], int] = {}
    for a, na, b, nb, _ in pairs:
        for k in ((a, na), (b, nb)):
            keys.setdefault(k, len(keys))
    missing = [(i, k) for i, (a, na, b, nb, _) in enumerate(pairs)
               for k in ((a, na), (b, nb)) if not os.path.isfile(lfw_image_path(root, *k, ext))]
    if missing:
        i, k = missing[0]
        raise FileNotFoundError(
            f"{len(missing)} image(s) named by {pairs_file} are missing under {root}, first: "
            f"pair {i + 1} names {lfw_image_path(root, *k, ext)}; check the root folder "
            "(it must hold one folder per person) and the file extension")
    images = []
    for (name, n), _ in sorted(keys.items(), key=lambda kv: kv[1]):
        rgb = read_image(lfw_image_path(root, name, n, ext), max_pixels)
        if size is not None:
            rgb = cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        images.append(rgb)
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise ValueError(f"images have different sizes {sorted(shapes)[:3]}; pass size=(h, w)")
    idx = np.array([[keys[(a, na)], keys[(b, nb)], same] for a, na, b, nb, same in pairs],
                   dtype=np.int64)
    return np.stack(images).astype(np.uint8), idx


PairSplit = tuple[np.ndarray, np.ndarray]  # images (n, H, W, 3), pairs int64 (P, 3)


def split_pairs(images: np.ndarray, pairs: np.ndarray, val_fraction: float = 0.2,
                test_fraction: float = 0.2, seed: int | None = 0
                ) -> tuple[PairSplit, PairSplit | None, PairSplit | None]:
    """Train / validation / test parts of verification pairs, seeded and stratified by
    *same* / *different*; each part keeps only the images its pairs name (re-indexed).

    Pairs are split, not identities: an image named by pairs of two parts is in both.
    Parts with fraction 0 (or no pairs) are None; the training part must not be empty.
    """
    check_fractions(val_fraction, test_fraction)
    p = np.asarray(pairs, dtype=np.int64)
    rest, parts = _stratified(p[:, 2], (val_fraction, test_fraction),
                              np.random.default_rng(seed))

    def part(idx: np.ndarray) -> PairSplit | None:
        if idx.size == 0:
            return None
        sub = p[idx]
        used, inv = np.unique(sub[:, :2], return_inverse=True)
        local = np.concatenate([inv.reshape(-1, 2), sub[:, 2:3]], axis=1).astype(np.int64)
        return images[used], local

    train = part(rest)
    if train is None:
        raise DataError(f"the training split of the {p.shape[0]} pairs is empty")
    if val_fraction > 0 and parts[0].size == 0:
        raise DataError(f"the validation split of the {p.shape[0]} pairs is empty; list more "
                        "pairs or use a larger --val-fraction")
    return train, part(parts[0]), part(parts[1])
