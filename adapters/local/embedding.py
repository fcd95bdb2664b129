"""A stand-in face-embedding model: HOG features (cv2) through a fixed random projection.

Face-recognition APIs return an embedding per face (or a match score for a pair); this
stand-in returns an L2-normalised ``(N, dim)`` float embedding so that verification can be
tested and benchmarked offline. It is *not* a trained face recogniser: HOG captures the
crop's gradient layout, so two views of one crop are close and different crops are
farther apart, and blur (fewer, weaker gradients) moves them all, which is what a
verification tuner has to undo.
"""

from __future__ import annotations

import cv2
import numpy as np

from blackbox_dft.adapters.base import BaseModel

__all__ = ["HOGEmbedding"]

_BINS = 9


class HOGEmbedding(BaseModel):
    """``predict(uint8 RGB (N, H, W, 3)) -> (N, dim)`` unit-norm embeddings, seeded.

    Each image is converted to grey, resized to ``size x size`` pixels (bilinear), described
    by a histogram of oriented gradients (``cv2.Sobel`` gradients, 4x4 cells of ``size / 4``
    px, 9 unsigned orientation bins, 2x2-cell blocks with a one-cell stride, L2-Hys block
    normalisation: Dalal-Triggs, as ``cv2.HOGDescriptor`` did before OpenCV 5 moved it out),
    centred by a fixed offset, multiplied by a fixed Gaussian matrix drawn from
    ``numpy.random.default_rng(seed)`` and L2-normalised.
    size: working resolution in pixels (multiple of 4); dim: embedding length.
    """

    output_kind = "embedding"

    def __init__(self, dim: int = 64, size: int = 24, seed: int = 0,
                 name: str = "hog-embedding") -> None:
        if not isinstance(dim, (int, np.integer)) or dim < 2:
            raise ValueError(f"dim must be an int >= 2, got {dim!r}")
        if not isinstance(size, (int, np.integer)) or size < 8 or size % 4:
            raise ValueError(f"size must be an int >= 8 and a multiple of 4, got {size!r}")
        self.dim, self.size, self.seed, self.name = int(dim), int(size), int(seed), name
        n_feat = 3 * 3 * 4 * _BINS
        rng = np.random.default_rng(self.seed)
        self._proj = rng.standard_normal((n_feat, self.dim)) / np.sqrt(n_feat)
        # HOG blocks are L2-Hys normalised, so every feature is >= 0 with a mean near
        # 1/sqrt(36); removing it lets cosines spread over [-1, 1] instead of near 1.
        self._offset = 1.0 / 6.0

    def features(self, images: np.ndarray) -> np.ndarray:
        """HOG descriptors float64 ``(N, 324)`` of uint8 RGB ``(N, H, W, 3)``."""
        s, c = self.size, self.size // 4
        grey = np.empty((images.shape[0], s, s), dtype=np.float32)
        for i, im in enumerate(images):
            g = cv2.cvtColor(np.ascontiguousarray(im), cv2.COLOR_RGB2GRAY)
            if g.shape != (s, s):
                g = cv2.resize(g, (s, s), interpolation=cv2.INTER_LINEAR)
            grey[i] = g
        stack = grey.reshape(-1, s)  # Sobel on the stacked images: one call, (N*s, s)
        gx = cv2.Sobel(stack, cv2.CV_32F, 1, 0, ksize=1).reshape(-1, s, s)
        gy = cv2.Sobel(stack, cv2.CV_32F, 0, 1, ksize=1).reshape(-1, s, s)
        gy[:, [0, -1], :] = 0.0  # rows of the stack touch the next image's rows: drop them
        mag = np.hypot(gx, gy).astype(np.float64)
        ang = np.mod(np.arctan2(gy, gx), np.pi) * (_BINS / np.pi)  # unsigned, in bins
        lo = np.floor(ang - 0.5).astype(np.int64)  # linear vote between the two nearest bins
        w_hi = ang - 0.5 - lo
        hist = np.zeros((grey.shape[0], 4, 4, _BINS))
        cell_r = (np.arange(s) // c)[None, :, None]
        cell_c = (np.arange(s) // c)[None, None, :]
        n_idx = np.arange(grey.shape[0])[:, None, None]
        for b, w in ((lo % _BINS, 1.0 - w_hi), ((lo + 1) % _BINS, w_hi)):
            np.add.at(hist, (n_idx, cell_r, cell_c, b), mag * w)
        blocks = np.stack([hist[:, i:i + 2, j:j + 2].reshape(hist.shape[0], -1)
                           for i in range(3) for j in range(3)], axis=1)  # (N, 9, 36)
        for _ in range(2):  # L2-Hys: normalise, clip at 0.2, normalise again
            blocks = blocks / np.sqrt((blocks**2).sum(axis=2, keepdims=True) + 1e-6)
            blocks = np.minimum(blocks, 0.2) if _ == 0 else blocks
        return blocks.reshape(blocks.shape[0], -1)

    def _predict(self, images: np.ndarray) -> np.ndarray:
        e = (self.features(images) - self._offset) @ self._proj
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)

    def __repr__(self) -> str:
        return f"HOGEmbedding(dim={self.dim}, size={self.size}, seed={self.seed})"
