"""Early stopping on the validation curve, with patience counted in queries.

A fit stops once ``patience`` queries (steps and validations alike: both are paid) have
been sent since the best validation score last improved by more than ``min_delta``; with
several slots (one perturbation per attribute) it stops when no slot improved for that
long. The rule is only checked after a validation, so it never stops before the patience
is spent. Its bookkeeping lives in ``FitState.extra`` (JSON, saved in checkpoints), so a
resumed fit stops at the same step as an uninterrupted one.

Like Keras' ``EarlyStopping(patience, min_delta)`` and scikit-learn's
``n_iter_no_change`` / ``tol``, but the patience is in queries, the unit users pay for,
not in epochs or validations (those depend on the batch size and ``validation_every``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from blackbox_dft.core.checks import check_int, check_number, show

__all__ = ["EarlyStopping", "check_early_stopping", "early_stopping_from_config"]


@dataclass
class EarlyStopping:
    """Stop a fit after ``patience`` queries without a validation improvement.

    patience: queries (images sent, validation included) since the last improvement.
    min_delta: an improvement must raise the first validation key (e.g. the accuracy) by
    more than this; 0 counts any improvement the fit keeps as a new best.
    """

    patience: int = 3000
    min_delta: float = 0.0

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's arguments (scikit-learn convention)."""
        return {"patience": self.patience, "min_delta": self.min_delta}

    def set_params(self, **params: Any) -> EarlyStopping:
        """Set ``patience`` / ``min_delta``; returns ``self``."""
        for key, value in params.items():
            if key not in ("patience", "min_delta"):
                raise ValueError(f"invalid parameter {key!r} for EarlyStopping; "
                                 "valid parameters: patience, min_delta")
            setattr(self, key, value)
        return self

    def get_config(self) -> dict[str, Any]:
        """JSON form (what checkpoints and saved results store)."""
        return {"patience": self.patience, "min_delta": self.min_delta}

    def check(self) -> None:
        """ValueError (one line) for a bad patience or min_delta."""
        check_int("early_stopping.patience", self.patience, 1)
        check_number("early_stopping.min_delta", self.min_delta, 0.0)

    def improved(self, key: list[float], ref: list[float]) -> bool:
        """Whether validation ``key`` beats ``ref`` by more than ``min_delta`` (first item);
        ties on it fall back to the engine's own comparison of the whole key."""
        if self.min_delta > 0:
            return bool(key[0] - ref[0] > self.min_delta)
        return key > ref

    def update(self, extra: dict[str, Any], keys: list[list[float]], queries: int) -> bool:
        """Record the validation ``keys`` (one per slot) seen after ``queries`` images and
        return whether the fit should stop (patience spent in every slot)."""
        refs = extra.get("es_ref")
        since = extra.get("es_since")
        if refs is None or since is None:  # the first validation (the baseline) sets them
            extra["es_ref"], extra["es_since"] = [list(k) for k in keys], [queries] * len(keys)
            return False
        for a, key in enumerate(keys):
            if self.improved(list(key), refs[a]):
                refs[a], since[a] = list(key), queries
        extra["es_ref"], extra["es_since"] = refs, since
        return all(queries - s >= self.patience for s in since)


def check_early_stopping(value: Any) -> EarlyStopping | None:
    """``None``, an :class:`EarlyStopping` or an int patience (queries) as an
    :class:`EarlyStopping` (checked), or a one-line ValueError."""
    if value is None:
        return None
    if isinstance(value, EarlyStopping):
        value.check()
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        es = EarlyStopping(patience=value)
        es.check()
        return es
    raise ValueError(f"early_stopping must be None, an int patience in queries or "
                     f"EarlyStopping(patience=..., min_delta=...), got {show(value)}")


def early_stopping_from_config(config: dict[str, Any]) -> EarlyStopping:
    """Inverse of :meth:`EarlyStopping.get_config`."""
    return EarlyStopping(**config)
