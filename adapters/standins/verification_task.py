"""A face-verification task built from shipped data: synthetic identities, stated plainly.

scikit-image's LFW subset has 100 face crops (25x25) but no identity labels, so each crop
is treated as one "identity" and its *views* are random small affine jitters of it
(rotation +-6 degrees, shift +-1.5 px, scale 0.94-1.06, brightness x0.9-1.1), made with
cv2. A *same* pair is two views of one crop; a *different* pair is views of two crops.
This is instance verification (is it the same photo, re-framed?), easier than real
identity verification, but it exercises exactly the same code path: embeddings, cosine
similarities, a threshold, pairs. For real data use :func:`blackbox_dft.data.pairs.load_lfw_pairs`.

Identities are split 50 / 20 / 30 (train / val / test); each split has one same pair per
identity and as many different pairs (between that split's identities), so no image or
identity is shared across splits. The shift (capture conditions) is applied to every view.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from blackbox_dft.adapters.local.embedding import HOGEmbedding
from blackbox_dft.adapters.standins.tasks import DEFAULT_SEED, lfw_subset
from blackbox_dft.data.shifts import Identity, Shift, parse_shift

__all__ = ["VerificationTask", "verification_task", "jitter", "FixedPattern"]

PairSplit = tuple[np.ndarray, np.ndarray]  # images (n, H, W, 3), pairs int (P, 3)


@dataclass(frozen=True, eq=False)
class VerificationTask:
    """An embedding model plus shifted image pairs in train / val / test splits.

    Each split is ``(images uint8 (n, H, W, 3), pairs int64 (P, 3))`` with pair rows
    ``(index a, index b, same)`` into that split's images; test_clean: unshifted test images.
    """

    name: str
    model: Any
    train: PairSplit
    val: PairSplit
    test: PairSplit
    test_clean: np.ndarray
    description: str
    shift: Shift = field(default_factory=Identity)
    seed: int = DEFAULT_SEED

    def __repr__(self) -> str:
        sizes = "/".join(str(len(s[1])) for s in (self.train, self.val, self.test))
        return (f"VerificationTask({self.name!r}, model={self.model!r}, "
                f"shift={self.shift.spec()!r}, pairs train/val/test={sizes}, seed={self.seed})")


class FixedPattern(Shift):
    """Fixed-pattern sensor noise: one seeded stripe-and-speckle pattern added to every image.

    amplitude: peak of the pattern in grey levels; seed: the pattern (the same camera gives
    the same pattern). Column banding plus a sparse speckle, as an ageing sensor or a dirty
    cover glass leaves; shared by all images, so it adds the same gradients to every face
    and pulls different faces' embeddings together. Not in ``parse_shift``'s registry.
    """

    name = "fixed_pattern"

    def __init__(self, amplitude: float = 12.0, seed: int = 7, width: int = 3) -> None:
        self.amplitude, self.seed, self.width = float(amplitude), int(seed), int(width)

    def _apply(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = images.shape[1:3]
        prng = np.random.default_rng(self.seed)
        k = self.width
        cols = np.repeat(prng.choice([-1.0, 1.0], size=(1, -(-w // k))), k, axis=1)[:, :w]
        speckle = prng.choice([0.0, 1.0, -1.0], p=[0.9, 0.05, 0.05], size=(h, w))
        pattern = self.amplitude * np.clip(0.6 * cols + 0.8 * speckle, -1.0, 1.0)
        out = images.astype(np.float64) + pattern[None, :, :, None]
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    def params(self) -> dict[str, Any]:
        return {"amplitude": self.amplitude, "seed": self.seed, "width": self.width}


def jitter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random view of a uint8 ``(H, W, 3)`` image: small affine warp and brightness gain."""
    h, w = image.shape[:2]
    angle = rng.uniform(-6.0, 6.0)
    scale = rng.uniform(0.94, 1.06)
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, scale)
    m[:, 2] = m[:, 2] + rng.uniform(-1.5, 1.5, size=2)
    warped = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REFLECT)
    gain = rng.uniform(0.9, 1.1)
    return np.clip(np.rint(warped.astype(np.float64) * gain), 0, 255).astype(np.uint8)


def _split(faces: np.ndarray, ids: np.ndarray, rng: np.random.Generator) -> PairSplit:
    """Two views per identity; pairs: (2i, 2i+1, 1) and (2i, 2j+1, 0) for a random j != i."""
    views = np.stack([jitter(faces[i], rng) for i in ids for _ in range(2)])
    n = len(ids)
    other = (np.arange(n) + rng.integers(1, n, size=n)) % n  # never i itself
    same = np.stack([2 * np.arange(n), 2 * np.arange(n) + 1, np.ones(n, np.int64)], axis=1)
    diff = np.stack([2 * np.arange(n), 2 * other + 1, np.zeros(n, np.int64)], axis=1)
    return views, np.concatenate([same, diff]).astype(np.int64)


def verification_task(shift: Shift | str | None = None, seed: int = DEFAULT_SEED,
                      model: Any = None) -> VerificationTask:
    """Instance verification on the 100 LFW-subset faces with :class:`HOGEmbedding`.

    shift: a Shift or spec string (e.g. ``"blur:sigma=1"``) applied to every view;
    seed: identity split, views and different-pair partners; model: override the stand-in.
    """
    faces = lfw_subset()[:100]
    rng = np.random.default_rng([seed, 2])
    order = rng.permutation(100)
    splits = [_split(faces, ids, rng) for ids in (order[:50], order[50:70], order[70:])]
    shift_obj = shift if isinstance(shift, Shift) else parse_shift(shift)
    srng = np.random.default_rng([seed, 1])
    shifted = [(shift_obj(x, srng), p) for x, p in splits]
    return VerificationTask(
        name="verification", model=model if model is not None else HOGEmbedding(),
        train=shifted[0], val=shifted[1], test=shifted[2], test_clean=splits[2][0],
        description="Same crop or not? Two jittered views per LFW-subset face "
                    "(synthetic identities), HOG + random-projection embeddings.",
        shift=shift_obj, seed=seed)
