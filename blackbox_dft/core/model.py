"""The Model protocol, checks on what a model returns, query counting and the budget guard.

A *model* is any object with ``predict(images) -> scores``: images uint8
``(N, H, W, 3)`` RGB, scores float ``(N, K)`` (or ``(N,)`` for a binary score).
Counting happens in one place, :class:`QueryCounter`, never in the estimators.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from blackbox_dft.core.checks import check_int, show

__all__ = [
    "Model",
    "ModelError",
    "BudgetExhausted",
    "check_scores",
    "model_name",
    "QueryCounter",
    "attach_answered",
    "answered_of",
    "unsent_of",
    "images_sent",
]


@runtime_checkable
class Model(Protocol):
    """Anything that maps uint8 RGB images ``(N, H, W, 3)`` to float scores ``(N, K)``."""

    def predict(self, images: np.ndarray) -> np.ndarray: ...


class ModelError(RuntimeError):
    """The model failed or returned something unusable (wrong shape, NaN, ...)."""


class BudgetExhausted(RuntimeError):
    """A predict call would have crossed the query budget; it was not sent."""


def attach_answered(exc: BaseException, rows: Any, scores: Any,
                    unsent: Any = None) -> BaseException:
    """Record on ``exc`` the answers that came back before a ``predict`` call failed.

    A model that splits one call into several paid requests (an HTTP endpoint) raises
    when one of them fails, but the others may have been answered and paid. It attaches
    them here so that a wrapper (the query cache) can keep them before the error
    propagates: ``rows`` int ``(R,)`` are row numbers into the images given to that
    ``predict`` call, ``scores`` float ``(R, K)`` their answers. ``unsent``: row numbers of
    images that were certainly never sent (requests stopped before they went out); every
    other row without an answer may have been paid. Returns ``exc``.
    """
    r = np.asarray(rows, dtype=np.int64).reshape(-1)
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 1:
        s = s[:, None]
    if s.shape[0] != r.shape[0]:
        raise ValueError(f"attach_answered: {r.shape[0]} rows but {s.shape[0]} score rows")
    exc.answered = (r, s)  # type: ignore[attr-defined]
    if unsent is not None:
        exc.unsent = np.asarray(unsent, dtype=np.int64).reshape(-1)  # type: ignore[attr-defined]
    return exc


def answered_of(exc: BaseException) -> tuple[np.ndarray, np.ndarray] | None:
    """The ``(rows, scores)`` recorded by :func:`attach_answered` on ``exc`` (or None)."""
    got = getattr(exc, "answered", None)
    if not isinstance(got, tuple) or len(got) != 2:
        return None
    return got


def unsent_of(exc: BaseException) -> np.ndarray:
    """Row numbers recorded by :func:`attach_answered` as never sent (empty if none)."""
    got = getattr(exc, "unsent", None)
    return got if isinstance(got, np.ndarray) else np.zeros(0, dtype=np.int64)


def model_name(model: Any) -> str:
    """A short, secret-free name for error messages."""
    name = getattr(model, "name", None)
    if isinstance(name, str) and name:
        return name
    return type(model).__name__


def check_scores(scores: Any, n_images: int, model: Any = None) -> np.ndarray:
    """Validate raw model output; return float64 ``(N, K)`` (a ``(N,)`` vector becomes ``(N, 1)``).

    Raises :class:`ModelError` naming the model when the output has the wrong
    number of rows, the wrong rank, or non-finite values.
    """
    who = model_name(model) if model is not None else "model"
    kind = getattr(scores, "dtype", None)
    if getattr(kind, "kind", "") in ("c", "m", "M", "S", "U", "V"):
        # complex, dates, bytes, text: numpy would drop parts or read dates as numbers
        raise ModelError(f"{who}.predict returned an array of dtype {kind}, not real scores")
    try:
        arr = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ModelError(
            f"{who}.predict returned {show(scores)}, which is not a numeric array "
            f"({show(str(exc), 80)})"
        ) from None
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ModelError(
            f"{who}.predict must return scores of shape (N, K) or (N,), got shape {arr.shape}"
        )
    if arr.shape[0] != n_images:
        raise ModelError(
            f"{who}.predict returned {arr.shape[0]} rows of scores for {n_images} images"
        )
    if arr.shape[1] == 0:
        raise ModelError(f"{who}.predict returned zero scores per image (shape {arr.shape})")
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise ModelError(f"{who}.predict returned {bad} NaN or inf scores")
    return arr


def images_sent(model: Any) -> int | None:
    """The images ``model`` has passed on to the paid model so far, if it says (else None).

    A wrapper that answers some images without sending them (the query cache, the money
    meter) exposes ``images_sent``: a monotonic count of the images it really sent, kept
    across processes where it can. :class:`QueryCounter` charges only those.
    """
    got = getattr(model, "images_sent", None)
    if isinstance(got, (int, np.integer)) and not isinstance(got, bool):
        return int(got)
    return None


class QueryCounter:
    """Wrap a model: check its output, count every image asked and paid, enforce a hard budget.

    ``queries`` counts the images the caller asked for (the fit's schedule: deterministic,
    so a resumed fit replays the uninterrupted one); ``paid`` the images sent to the model.
    Every image of a call is charged to both *before* the call, and a call that would push
    either past ``budget`` raises :class:`BudgetExhausted` with nothing sent. The images of
    a call that fails stay paid (their answers are unknown). When the model tells how many
    images it really sent (``images_sent``, see :func:`images_sent`: a query cache), the
    ones it answered itself are refunded from ``paid`` after the call: replaying answered
    images costs nothing.
    """

    def __init__(self, model: Any, budget: int | None = None, queries: int = 0) -> None:
        if not callable(getattr(model, "predict", None)) and \
                not callable(getattr(model, "compare", None)):
            raise TypeError(
                f"model must have a predict(images) -> scores method (or, for a pair model, "
                f"compare(images_a, images_b) -> similarities), got {type(model).__name__}"
            )
        self.model = model
        self.budget = None if budget is None else check_int("budget", budget, 0)
        self.queries = check_int("queries", queries, 0)
        self.paid = self.queries
        self.name = model_name(model)

    @property
    def remaining(self) -> float:
        """Images that may still be asked (inf without a budget). A fit plans its steps on
        this count, which does not depend on faults, so a resumed fit replays the
        uninterrupted one; :meth:`affords` also checks the images paid."""
        if self.budget is None:
            return float("inf")
        return self.budget - self.queries

    def affords(self, n: int) -> bool:
        """Whether ``n`` more images fit in the budget, both as asked and as paid (images paid
        twice after a fault come out of the budget: the fit then ends earlier)."""
        if self.budget is None:
            return True
        return n <= self.budget - max(self.queries, self.paid)

    def mark(self) -> int | None:
        """The model's own count of images sent (None if it keeps none): saved with a
        checkpoint so that a resumed fit can add what was sent after it (see :meth:`resume`)."""
        return images_sent(self.model)

    def resume(self, queries: int, paid: int, mark: int | None) -> None:
        """Continue from a checkpoint that had asked ``queries`` and paid ``paid`` images when
        the model's count was ``mark``: images the model sent since (steps after the
        checkpoint of a killed process, answered into a persistent cache) were paid too."""
        self.queries, self.paid = int(queries), int(paid)
        now = self.mark()
        if mark is not None and now is not None and now > mark:
            self.paid += now - int(mark)

    def _call(self, n: int, what: str, call: Any) -> Any:
        """Charge ``n`` images (or raise BudgetExhausted sending nothing), run ``call()``,
        then refund the images the model answered without sending them."""
        if not self.affords(n):
            raise BudgetExhausted(
                f"sending {what} would exceed the query budget "
                f"({max(self.queries, self.paid)} used of {self.budget})"
            )
        before = self.mark()
        self.queries += n
        self.paid += n
        try:
            return call()
        finally:
            after = self.mark()
            if before is not None and after is not None:
                self.paid -= n - min(n, max(0, after - before))

    def predict(self, images: np.ndarray) -> np.ndarray:
        n = images.shape[0]
        scores = self._call(n, f"{n} images", lambda: self.model.predict(images))
        return check_scores(scores, n, self.model)

    def compare(self, images_a: np.ndarray, images_b: np.ndarray) -> np.ndarray:
        """Similarities float64 ``(P,)`` of ``P`` image pairs from a pair model (one whose
        ``compare(a, b)`` answers a face-compare call); counts ``2 P`` images."""
        p = images_a.shape[0]
        raw = self._call(2 * p, f"{2 * p} images ({p} pairs)",
                         lambda: self.model.compare(images_a, images_b))
        sims = check_scores(raw, p, self.model)
        if sims.shape[1] != 1:
            raise ModelError(f"{self.name}.compare must return one similarity per pair, got "
                             f"{sims.shape[1]} values per pair")
        return sims[:, 0]

    def __repr__(self) -> str:
        return (f"QueryCounter({self.name}, queries={self.queries}, paid={self.paid}, "
                f"budget={self.budget})")
