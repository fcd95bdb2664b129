"""Reduce a scoring model to what a coarser API returns: a label, or a few ordinal levels.

Real face APIs do not all return clean probabilities. :class:`LabelOnly` keeps only the
decision (one-hot rows, or int labels), :class:`Ordinal` keeps ``levels`` likelihood levels
(Google Vision returns five: VERY_UNLIKELY .. VERY_LIKELY, read as 0, .25, .5, .75, 1).
Both are Models and declare ``output_kind`` so that the core can refuse a loss that does
not fit the output (``"labels"`` needs ``scores="labels"``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from blackbox_dft.adapters.base import BaseModel
from blackbox_dft.core.checks import check_int, check_number, show
from blackbox_dft.core.model import check_scores, model_name

__all__ = ["LabelOnly", "Ordinal", "MultiModel"]


class LabelOnly(BaseModel):
    """Only the model's decision per image: one-hot rows ``(N, K)`` or int labels ``(N, 1)``.

    model: a Model returning scores ``(N, K)``; threshold: for a binary model (K = 2 or 1),
    the decision is ``P(class 1) >= threshold`` (default 0.5); for K > 2 the argmax.
    onehot: True returns one-hot float rows ``(N, K)`` (K = 2 for binary), False returns
    the label index as ``(N, 1)``.
    """

    output_kind = "labels"

    def __init__(self, model: Any, threshold: float = 0.5, onehot: bool = True) -> None:
        if not hasattr(model, "predict"):
            raise TypeError(f"model must have a predict method, got {type(model).__name__}")
        self.threshold = check_number("threshold", threshold, 0.0, 1.0)
        if not isinstance(onehot, (bool, np.bool_)):
            raise ValueError(f"onehot must be True or False, got {show(onehot)}")
        self.model = model
        self.onehot = bool(onehot)
        self.name = f"LabelOnly({model_name(model)})"

    def _predict(self, images: np.ndarray) -> np.ndarray:
        s = check_scores(self.model.predict(images), images.shape[0], self.model)
        if s.shape[1] <= 2:
            p1 = s[:, -1]
            labels = (p1 >= self.threshold).astype(np.int64)
            k = 2
        else:
            labels = s.argmax(axis=1)
            k = s.shape[1]
        if not self.onehot:
            return labels[:, None].astype(np.float64)
        return np.eye(k)[labels]


class Ordinal(BaseModel):
    """Scores rounded to ``levels`` evenly spaced likelihood levels in [0, 1].

    model: a Model returning probabilities ``(N, K)``; levels: number of levels (5 as in
    Google Vision: 0, .25, .5, .75, 1). Each probability is rounded to the nearest level,
    so the output still has the score shape ``(N, K)`` (not renormalised). Use it with
    ``scores="probabilities"`` (the score path) or ``scores="labels"`` after
    :class:`LabelOnly`; whichever measures better on your data.
    """

    output_kind = "ordinal"

    def __init__(self, model: Any, levels: int = 5) -> None:
        if not hasattr(model, "predict"):
            raise TypeError(f"model must have a predict method, got {type(model).__name__}")
        self.model = model
        self.levels = check_int("levels", levels, 2)
        self.name = f"Ordinal{self.levels}({model_name(model)})"

    def _predict(self, images: np.ndarray) -> np.ndarray:
        s = check_scores(self.model.predict(images), images.shape[0], self.model)
        if s.min() < -1e-6 or s.max() > 1 + 1e-6:
            raise ValueError(f"{self.name} needs probabilities in [0, 1] from "
                             f"{model_name(self.model)}, got [{s.min():.3g}, {s.max():.3g}]")
        step = self.levels - 1
        return np.rint(np.clip(s, 0.0, 1.0) * step) / step


class MultiModel(BaseModel):
    """Several models behind one call, as an attribute API returns many attributes at once.

    heads: ``[(attribute name, model, score column), ...]``; ``predict`` returns
    ``(N, A)`` with column ``a`` = ``heads[a].model.predict(images)[:, column]`` (a
    probability per attribute: the multilabel score shape).
    """

    def __init__(self, heads: list[tuple[str, Any, int]], name: str = "multi") -> None:
        if isinstance(heads, (str, bytes)) or not hasattr(heads, "__iter__") or (
                isinstance(heads, np.ndarray) and heads.ndim == 0):
            raise TypeError(f"heads must be a list of (attribute, model, column), "
                            f"got {show(heads)}")
        heads = list(heads)
        if not heads:
            raise ValueError("heads must name at least one (attribute, model, column)")
        for head in heads:
            if not isinstance(head, (tuple, list)) or len(head) != 3:
                raise TypeError(f"each head must be (attribute, model, column), got {show(head)}")
            attr, model, col = head
            if not hasattr(model, "predict"):
                raise TypeError(f"head {attr!r}: model has no predict method")
            if isinstance(col, (bool, np.bool_)) or not isinstance(col, (int, np.integer)):
                raise TypeError(f"head {attr!r}: column must be an int, got {show(col)}")
        self.heads = [(str(a), m, int(c)) for a, m, c in heads]
        self.attributes = tuple(a for a, _, _ in self.heads)
        self.name = name

    def _predict(self, images: np.ndarray) -> np.ndarray:
        cols = []
        for attr, model, col in self.heads:
            s = check_scores(model.predict(images), images.shape[0], model)
            if not -s.shape[1] <= col < s.shape[1]:
                raise ValueError(f"head {attr!r}: column {col} outside the {s.shape[1]} scores "
                                 f"of {model_name(model)}")
            cols.append(s[:, col])
        return np.stack(cols, axis=1)
