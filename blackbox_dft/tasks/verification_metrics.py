"""Verification metrics and inputs: pairs, cosine similarities, thresholds, TAR@FAR, AUC.

Pairs are int arrays ``(P, 3)``: ``(index a, index b, same in {0, 1})`` into an image array;
a pair is declared *same* when its similarity is at least a threshold.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from blackbox_dft.core.checks import show

__all__ = ["check_pairs", "cosine_similarities", "best_threshold", "verification_accuracy",
           "tar_at_far", "roc_auc", "verification_metrics", "check_embedding"]


# -- metrics ---------------------------------------------------------------------------------
def verification_accuracy(sims: np.ndarray, same: np.ndarray, threshold: float) -> float:
    """Fraction of pairs decided right: same iff ``sims >= threshold``. sims, same: ``(P,)``."""
    return float(np.mean((sims >= threshold) == (same == 1)))


def best_threshold(sims: np.ndarray, same: np.ndarray) -> float:
    """The threshold maximising accuracy on these pairs (midpoint between sorted sims)."""
    s = np.sort(np.unique(sims))
    cands = np.concatenate([[s[0] - 1e-6], (s[:-1] + s[1:]) / 2.0, [s[-1] + 1e-6]])
    acc = [verification_accuracy(sims, same, float(t)) for t in cands]
    return float(cands[int(np.argmax(acc))])


def tar_at_far(sims: np.ndarray, same: np.ndarray, far: float = 0.1) -> float:
    """True accept rate at the threshold where at most ``far`` of different pairs pass."""
    neg = np.sort(sims[same == 0])[::-1]
    pos = sims[same == 1]
    if neg.size == 0 or pos.size == 0:
        return float("nan")
    k = int(np.floor(far * neg.size))  # number of false accepts allowed
    t = neg[k] if k < neg.size else -np.inf
    return float(np.mean(pos > t))


def roc_auc(sims: np.ndarray, same: np.ndarray) -> float:
    """Probability that a same pair scores above a different pair (ties count half)."""
    pos, neg = sims[same == 1], sims[same == 0]
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    diff = pos[:, None] - neg[None, :]
    return float(np.mean((diff > 0) + 0.5 * (diff == 0)))


def verification_metrics(sims: np.ndarray, same: np.ndarray, threshold: float,
                         far: float = 0.1) -> dict[str, float]:
    """Accuracy at ``threshold``, TAR at ``far``, ROC AUC and mean same/different similarity."""
    return {"accuracy": verification_accuracy(sims, same, threshold),
            "tar_at_far": tar_at_far(sims, same, far), "auc": roc_auc(sims, same),
            "mean_sim_same": float(sims[same == 1].mean()) if (same == 1).any() else np.nan,
            "mean_sim_diff": float(sims[same == 0].mean()) if (same == 0).any() else np.nan}


# -- inputs ----------------------------------------------------------------------------------
def check_pairs(pairs: Any, n_images: int, name: str = "pairs") -> np.ndarray:
    """Validate pairs against ``n_images`` images; return int64 ``(P, 3)``."""
    try:
        arr = np.asarray(pairs)
    except (TypeError, ValueError):  # ragged nested lists
        raise ValueError(f"{name} must be an int array of shape (P, 3), got {show(pairs)}") \
            from None
    if arr.ndim != 2 or arr.shape[1] != 3 or arr.shape[0] == 0:
        raise ValueError(f"{name} must have shape (P, 3) rows (index a, index b, same), "
                         f"got shape {arr.shape}")
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer)
                                 or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must hold integers (indices and 0/1), got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and not (
            np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
        raise ValueError(f"{name} must hold whole numbers (indices and 0/1), got fractions, "
                         "NaN or inf")
    # Ranges are checked in the given dtype, before the int64 cast: a float 1e19 or a
    # uint64 would wrap around to a valid-looking index.
    bad = np.flatnonzero((arr[:, :2] < 0).any(axis=1) | (arr[:, :2] >= n_images).any(axis=1))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{name} row {i} names image {show(arr[i, :2].tolist())} but there are only "
            f"{n_images} images (indices 0..{n_images - 1}); {bad.size} rows name missing images")
    if not np.all((arr[:, 2] == 0) | (arr[:, 2] == 1)):
        raise ValueError(f"{name} column 2 (same) must be 0 or 1")
    return arr.astype(np.int64)


def cosine_similarities(emb: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Cosine similarity ``(P,)`` of embedding rows ``emb (N, D)`` for pairs ``(P, >=2)``."""
    e = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return np.einsum("pd,pd->p", e[pairs[:, 0]], e[pairs[:, 1]])


def check_embedding(emb: np.ndarray, who: str) -> None:
    """ValueError unless ``emb (N, D)`` has D >= 2 (an embedding, not one score per image)."""
    if emb.shape[1] < 2:
        raise ValueError(
            f"{who} returned {emb.shape[1]} score per image, not an embedding; for a "
            "classifier use DataFineTuner (task='binary'/'multiclass')")
