"""LFW ``pairs.txt`` files: read the pair list, load the images it names, as verification pairs.

Format (http://vis-www.cs.umass.edu/lfw/README.txt): an optional header line
``<folds> <pairs per fold>`` (or one number), then one pair per line, tab or space
separated: ``name n1 n2`` (two images of one person: *same*) or ``name1 n1 name2 n2``
(*different*). Image ``n`` of ``name`` is ``<root>/<name>/<name>_<n:04d>.jpg``.
The result feeds :class:`~blackbox_dft.verification.VerificationTuner`: images uint8
RGB ``(N, H, W, 3)`` (each file read once) and pairs int64 ``(P, 3)`` = (a, b, same).
"""

from __future__ import annotations

import os

import cv2
import numpy as np

__all__ = ["read_pairs", "load_lfw_pairs", "lfw_image_path"]

Pair = tuple[str, int, str, int, int]  # name a, number a, name b, number b, same


def read_pairs(path: str) -> list[Pair]:
    """Parse a ``pairs.txt`` into ``[(name_a, n_a, name_b, n_b, same), ...]``."""
    with open(path, encoding="utf-8") as fh:
        lines = [(i + 1, ln.split()) for i, ln in enumerate(fh) if ln.strip()]
    if lines and all(tok.isdigit() for tok in lines[0][1]) and len(lines[0][1]) <= 2:
        lines = lines[1:]  # header: folds and pairs per fold
    pairs: list[Pair] = []
    for lineno, tok in lines:
        try:
            if len(tok) == 3:
                pairs.append((tok[0], int(tok[1]), tok[0], int(tok[2]), 1))
            elif len(tok) == 4:
                pairs.append((tok[0], int(tok[1]), tok[2], int(tok[3]), 0))
            else:
                raise ValueError
        except ValueError:
            raise ValueError(
                f"{path}:{lineno}: expected 'name n1 n2' or 'name1 n1 name2 n2', got "
                f"{' '.join(tok)!r}") from None
    if not pairs:
        raise ValueError(f"{path} lists no pairs")
    return pairs


def lfw_image_path(root: str, name: str, number: int, ext: str = ".jpg") -> str:
    """``<root>/<name>/<name>_<number:04d><ext>``."""
    return os.path.join(root, name, f"{name}_{number:04d}{ext}")


def load_lfw_pairs(pairs_file: str, root: str, size: tuple[int, int] | None = None,
                   ext: str = ".jpg") -> tuple[np.ndarray, np.ndarray]:
    """Images and pairs of a ``pairs.txt`` over an LFW folder tree.

    size: ``(height, width)`` to resize every image to (bilinear); None requires all images
    to share one size. Raises FileNotFoundError listing the pairs that name missing images.
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
        path = lfw_image_path(root, name, n, ext)
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"cannot decode image {path}")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if size is not None:
            rgb = cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        images.append(rgb)
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise ValueError(f"images have different sizes {sorted(shapes)[:3]}; pass size=(h, w)")
    idx = np.array([[keys[(a, na)], keys[(b, nb)], same] for a, na, b, nb, same in pairs],
                   dtype=np.int64)
    return np.stack(images).astype(np.uint8), idx
