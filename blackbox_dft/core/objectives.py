"""From raw scores and labels to per-image losses, predictions and label checks.

An :class:`Objective` knows the task (``multiclass``, ``binary``, ``multilabel``),
whether scores are probabilities, logits or only labels (a decision per image), and
an optional label map from the model's outputs to the task's classes (several
outputs summed into one class). With ``scores="labels"`` the loss is the 0-1 loss
(1 if misclassified), whose gradient is estimated from label flips.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import expit, log_softmax, softmax

from blackbox_dft.core.checks import check_choice, check_int, check_number, closest, show

__all__ = ["Objective", "TASKS", "SCORES", "MAX_CLASS", "check_class_weight"]

TASKS = ("multiclass", "binary", "multilabel")
SCORES = ("probabilities", "logits", "labels")
_EPS = 1e-7


class Objective:
    """Task-aware cross-entropy on black-box scores.

    task: ``"multiclass"`` (scores (N, K), labels int (N,)), ``"binary"`` (scores
    (N,) or (N, 1) = P(positive), or (N, 2); labels 0/1), ``"multilabel"``
    (scores (N, A), labels {0, 1} (N, A)).
    scores: ``"probabilities"``, ``"logits"`` or ``"labels"``: the model returns only its
    decision, as one-hot rows (N, K) (binary: also int labels (N,) / (N, 1) in {0, 1};
    multilabel: (N, A) in {0, 1}); the loss is then the 0-1 loss (weighted if asked).
    label_map: for multiclass/binary, a list with one entry per model output giving
    the task class it counts towards (``None`` to ignore that output); the
    probabilities of outputs mapped to one class are summed.
    """

    def __init__(self, task: str = "multiclass", scores: str = "probabilities",
                 label_map: list[int | None] | None = None) -> None:
        self.task = check_choice("task", task, TASKS)
        self.scores = check_choice("scores", scores, SCORES)
        self.label_map = None if label_map is None else _check_label_map(label_map, task)

    # -- scores -> probabilities -------------------------------------------------------------
    def probabilities(self, raw: np.ndarray) -> np.ndarray:
        """Class probabilities ``(N, C)`` (binary: C = 2; multilabel: (N, A) of P(attribute))."""
        raw = np.asarray(raw, dtype=np.float64)
        if raw.ndim == 1:
            raw = raw[:, None]
        if self.scores == "labels":
            raw = self._decisions(raw)
        if self.task == "multilabel":
            p = expit(raw) if self.scores == "logits" else raw
            return self._check_range(p)
        if self.label_map is not None:
            if raw.shape[1] != len(self.label_map):
                raise ValueError(
                    f"label_map has {len(self.label_map)} entries but the model returns "
                    f"{raw.shape[1]} scores per image"
                )
            p_out = softmax(raw, axis=1) if self.scores == "logits" else raw
            n_classes = max(c for c in self.label_map if c is not None) + 1
            p = np.zeros((raw.shape[0], n_classes))
            for j, c in enumerate(self.label_map):
                if c is not None:
                    p[:, c] += p_out[:, j]
            # Outputs mapped to no class are dropped; renormalise over the kept ones.
            p /= np.maximum(p.sum(axis=1, keepdims=True), _EPS)
            return self._check_range(p)
        if self.task == "binary" and raw.shape[1] == 1:
            p1 = expit(raw[:, 0]) if self.scores == "logits" else raw[:, 0]
            return self._check_range(np.stack([1.0 - p1, p1], axis=1))
        if self.task == "binary" and raw.shape[1] != 2:
            raise ValueError(
                f"a binary task needs scores of shape (N,), (N, 1) or (N, 2), got {raw.shape}; "
                "use task='multiclass' or a label_map"
            )
        if self.scores == "logits":
            return np.exp(log_softmax(raw, axis=1))
        return self._check_range(raw)

    def _decisions(self, raw: np.ndarray) -> np.ndarray:
        """Label-only output -> one-hot rows ``(N, K)`` (multilabel: ``(N, A)`` in {0, 1})."""
        if not np.all((raw == 0.0) | (raw == 1.0)):
            bad = raw[(raw != 0.0) & (raw != 1.0)][0]
            raise ValueError(
                f"scores='labels' expects one-hot rows or 0/1 labels, but the model returned "
                f"{bad:.4g}; for probabilities or logits pass scores='probabilities' / 'logits'"
            )
        if self.task == "multilabel":
            return raw
        if raw.shape[1] == 1:
            if self.task != "binary":
                raise ValueError(
                    "scores='labels' with one column per image (int labels) is only supported "
                    "for task='binary'; return one-hot rows (N, K) for multiclass "
                    "(blackbox_dft.adapters.local.wrappers.LabelOnly does)"
                )
            return np.eye(2)[raw[:, 0].astype(np.int64)]
        if not np.all(raw.sum(axis=1) == 1.0):
            raise ValueError(
                "scores='labels' expects exactly one 1 per row (one-hot decisions), got rows "
                f"summing to {sorted(set(raw.sum(axis=1).tolist()))[:5]}"
            )
        return raw

    def check_model(self, model: Any) -> None:
        """Refuse a model whose declared ``output_kind`` does not fit this objective.

        ``output_kind`` (optional attribute): ``"labels"`` needs ``scores="labels"``;
        ``"embedding"`` and ``"similarity"`` (pair models) belong to face verification, not to
        a classification task.
        """
        kind = getattr(model, "output_kind", None)
        name = getattr(model, "name", None) or type(model).__name__
        if kind == "labels" and self.scores != "labels":
            raise ValueError(
                f"{name} returns only labels (output_kind='labels'), so a score-based loss "
                f"(scores={self.scores!r}) gets no gradient from it; pass scores='labels' "
                "(0-1 loss estimated from label flips)"
            )
        if kind in ("embedding", "similarity"):
            what = "embeddings" if kind == "embedding" else "similarities of image pairs"
            raise ValueError(
                f"{name} returns {what} (output_kind={kind!r}), not class scores, so "
                f"it cannot be tuned for task={self.task!r}; use "
                "blackbox_dft.tasks.verification.VerificationTuner with pairs of images"
            )

    def _check_range(self, p: np.ndarray) -> np.ndarray:
        if self.scores == "probabilities" and (p.min() < -1e-6 or p.max() > 1.0 + 1e-6):
            raise ValueError(
                f"scores='probabilities' but the model returned values in "
                f"[{p.min():.4g}, {p.max():.4g}]; pass scores='logits' if these are logits"
            )
        return p

    def n_outputs(self, raw: np.ndarray) -> int:
        """Number of task classes (or attributes) implied by raw scores ``(N, K)``."""
        return int(self.probabilities(raw[:1]).shape[1])

    # -- losses and predictions ---------------------------------------------------------------
    def loss(self, raw: np.ndarray, labels: np.ndarray,
             weights: np.ndarray | None = None) -> np.ndarray:
        """Per-image cross-entropy ``(N,)`` in nats; ``weights`` are per-class (C,) or None."""
        p = self.probabilities(raw)
        self.check_against(p.shape[1], labels)
        if self.scores == "labels":  # 0-1 loss: p is one-hot (or all zero: no kept class)
            if self.task == "multilabel":
                wrong = np.abs(p - labels)
                if weights is not None:
                    wrong = wrong * np.where(labels == 1, weights[:, 1], weights[:, 0])
                return wrong.mean(axis=1)
            zero_one = 1.0 - p[np.arange(p.shape[0]), labels]
            return zero_one * weights[labels] if weights is not None else zero_one
        if self.task == "multilabel":
            q = np.clip(p, _EPS, 1.0 - _EPS)
            y = labels.astype(np.float64)
            per_attr = -(y * np.log(q) + (1.0 - y) * np.log1p(-q))
            if weights is not None:  # weights (A, 2): weight of label 0 / 1 per attribute
                per_attr = per_attr * np.where(labels == 1, weights[:, 1], weights[:, 0])
            return per_attr.mean(axis=1)
        py = p[np.arange(p.shape[0]), labels]
        nll = -np.log(np.clip(py, _EPS, 1.0))
        if weights is not None:
            nll = nll * weights[labels]
        return nll

    def known_outputs(self) -> int | None:
        """Task classes known without asking the model (binary: 2; a label map's classes)."""
        if self.task == "binary":
            return 2
        if self.label_map is not None:
            return max(c for c in self.label_map if c is not None) + 1
        return None

    def check_against(self, n_outputs: int, labels: np.ndarray) -> None:
        """Refuse checked labels that ``n_outputs`` task classes (:meth:`n_outputs`) cannot
        score: a class index ``>= n_outputs``, or (multilabel) another number of attributes."""
        if self.task == "multilabel":
            if labels.ndim != 2 or labels.shape[1] != n_outputs:
                raise ValueError(
                    f"the labels have {labels.shape[1] if labels.ndim == 2 else 1} "
                    f"attributes but the model returns {n_outputs} scores per image; "
                    "give one label column per score column")
            return
        top = int(labels.max()) if labels.size else -1
        if top >= n_outputs:
            raise ValueError(
                f"labels go up to {top} but the model's scores give {n_outputs} classes "
                f"(0..{n_outputs - 1}); check the labels or pass a label_map")

    def predict_labels(self, raw: np.ndarray) -> np.ndarray:
        """Predicted labels: int ``(N,)``, or ``(N, A)`` {0, 1} for multilabel (threshold 0.5)."""
        p = self.probabilities(raw)
        if self.task == "multilabel":
            return (p >= 0.5).astype(np.int64)
        pred = p.argmax(axis=1).astype(np.int64)
        if self.scores == "labels":  # a decision mapped to no class (label_map None)
            pred[p.sum(axis=1) == 0.0] = -1
        return pred

    # -- labels -------------------------------------------------------------------------------
    def check_labels(self, labels: Any, n_images: int, name: str = "labels") -> np.ndarray:
        """Validate labels for this task; return int64 ``(N,)`` or ``(N, A)``."""
        n_images = check_int("n_images", n_images, 1)
        try:
            arr = np.asarray(labels)
        except (TypeError, ValueError):  # ragged nested lists
            raise ValueError(f"{name} must be an array of integers of one shape "
                             f"(N,){' or (N, A)' if self.task == 'multilabel' else ''}, "
                             f"got {show(labels)}") from None
        if arr.dtype == bool:
            arr = arr.astype(np.int64)
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise TypeError(f"{name} must be integers, got dtype {arr.dtype}")
        if arr.ndim == 0 or arr.shape[0] != n_images:
            raise ValueError(
                f"{name} has length {arr.shape[0] if arr.ndim else 'scalar'} "
                f"but there are {n_images} images"
            )
        if arr.size == 0:
            raise ValueError(f"{name} has no values (shape {arr.shape}); "
                             "give at least one label per image")
        if np.issubdtype(arr.dtype, np.floating):
            if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                raise ValueError(f"{name} must be whole numbers, got non-integer values")
        # Range before the cast: a float 1e19 or a uint64 would wrap to a negative int64.
        lo, hi = arr.min(), arr.max()
        if lo < 0:
            raise ValueError(f"{name} must be >= 0, found {show(lo.item())}")
        if hi > MAX_CLASS:
            raise ValueError(f"{name} must be class indices up to {MAX_CLASS:,}, found "
                             f"{show(hi.item())}")
        arr = arr.astype(np.int64)
        if self.task == "multilabel":
            if arr.ndim != 2:
                raise ValueError(f"multilabel {name} must have shape (N, A), got {arr.shape}")
            bad = arr[(arr != 0) & (arr != 1)]
            if bad.size:
                raise ValueError(f"multilabel {name} must be 0 or 1, found {int(bad[0])}")
            return arr
        if arr.ndim != 1:
            raise ValueError(f"{self.task} {name} must have shape (N,), got {arr.shape}")
        if self.task == "binary" and arr.max() > 1:
            raise ValueError(f"binary {name} must be 0 or 1, found {int(arr.max())}")
        return arr

    def class_weights(self, labels: np.ndarray, n_classes: int,
                      class_weight: Any) -> np.ndarray | None:
        """Per-class loss weights: None, ``"balanced"`` (n / (C * count)) or a {class: w} dict."""
        class_weight = check_class_weight(class_weight, self.task)
        if class_weight is None:
            return None
        if self.task == "multilabel":
            # kept off 0 and 1 (no infinite weight); max(N, 2): one image would give [1, 0]
            lo = 1.0 / max(labels.shape[0], 2)
            pos = labels.mean(axis=0).clip(lo, 1.0 - lo)
            return np.stack([0.5 / (1.0 - pos), 0.5 / pos], axis=1)
        if class_weight == "balanced":
            counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
            w = np.where(counts > 0, labels.shape[0] / (n_classes * np.maximum(counts, 1)), 0.0)
            return w
        w = np.ones(n_classes)
        for k, v in class_weight.items():
            if not 0 <= k < n_classes:
                raise ValueError(f"class_weight names class {k!r}, outside 0..{n_classes - 1}")
            w[k] = v
        return w

    def get_config(self) -> dict[str, Any]:
        return {"task": self.task, "scores": self.scores, "label_map": self.label_map}

    def __repr__(self) -> str:
        return f"Objective(task={self.task!r}, scores={self.scores!r}, label_map={self.label_map})"


#: The largest class index a label may hold (the data loaders' limit too). Larger "labels"
#: are data errors, would wrap around in int64, and would make per-class tables (class
#: weights, recalls) of billions of entries before the model's answer could refuse them.
MAX_CLASS = 1_000_000


def _check_label_map(label_map: Any, task: str) -> list[int | None]:
    """A label map as a list of ``int >= 0`` or ``None`` (one entry per model output)."""
    if task == "multilabel":
        raise ValueError("label_map is only supported for multiclass and binary tasks")
    if isinstance(label_map, (str, bytes, dict)) or not hasattr(label_map, "__iter__"):
        raise ValueError(f"label_map must be a list with one class (int >= 0, or None) per "
                        f"model output, got {show(label_map)}")
    out = [None if c is None else check_int("label_map entry", c, 0) for c in label_map]
    if not any(c is not None for c in out):
        raise ValueError(f"label_map must map at least one output to a class, got {show(out)}")
    return out


def check_class_weight(class_weight: Any, task: str) -> None | str | dict[int, float]:
    """``None``, ``"balanced"`` or (multiclass/binary) ``{class int >= 0: weight >= 0}``;
    a one-line error otherwise. Returns the dict with plain int keys and float weights."""
    if class_weight is None:
        return None
    if isinstance(class_weight, str) and class_weight == "balanced":
        return "balanced"
    if isinstance(class_weight, str) or not isinstance(class_weight, dict) \
            or task == "multilabel":
        what = "None or 'balanced'" if task == "multilabel" else \
            "None, 'balanced' or a dict {class: weight}"
        raise ValueError(f"class_weight must be {what} for task={task!r}, "
                         f"got {show(class_weight)}{closest(class_weight, ['balanced'])}")
    return {check_int("class_weight class", k, 0):
            check_number(f"class_weight[{k!r}]", v, 0.0) for k, v in class_weight.items()}
