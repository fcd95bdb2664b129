"""``check_model``: the contract every Model implementation passes, as scikit-learn's
``check_estimator`` is for estimators. Run it on your own adapter before paying for a fit::

    from blackbox_dft.testing import check_model
    check_model(my_model)  # AssertionError "check_model(<model>): <check>: <what>" if broken

It sends ``n`` random uint8 RGB images of ``height x width`` (pairs of them for a pair model)
and a few variants: about ``3 n + 1`` images (pairs) in all, plus four bad inputs that must be
refused before anything is sent. What is checked follows the model's ``output_kind``:

- every kind: ``repr`` is one line naming the class; the answer is a float ndarray with one
  finite row per image; the images given are not modified; the same images give the same
  answer, reversed images give reversed rows, one image alone gives the row it got in the
  batch; bad input (no batch axis, int32, floats outside [0, 255], a list) raises a one-line
  ValueError/TypeError naming the problem; ``n_outputs``, ``labels`` (class names) and
  ``attributes``, when the model declares them, have one entry per column;
- ``"scores"`` (default): ``(N, K)``, or ``(N,)`` (a binary score, as the core accepts);
- ``"labels"``: one-hot rows ``(N, K >= 2)`` or label indices ``(N, 1)``; ``"ordinal"``:
  values in [0, 1], on ``levels`` evenly spaced levels when the model declares ``levels``;
- ``"embedding"``: ``(N, D)``, and different images do not all get the same vector;
- ``"similarity"`` (a pair model): ``compare(images_a, images_b) -> (P,)``; bad pairs
  (different counts, no batch axis, int32, a list) are refused the same way.

Determinism: a model whose answers carry noise (a vendor that samples) says so with an
attribute ``deterministic = False`` or is checked with ``check_model(model,
deterministic=False)``; its answers are then compared by shape only. Answers of a
deterministic model are compared with ``atol`` (1e-5: batched networks differ in low bits).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np

from blackbox_dft.core.checks import check_int, check_number, show
from blackbox_dft.core.model import model_name

__all__ = ["check_model", "check_model_repr", "check_model_kind", "check_model_output",
           "check_model_n_outputs", "check_model_values", "check_model_deterministic",
           "check_model_row_order", "check_model_single_image", "check_model_bad_input",
           "model_inputs", "OUTPUT_KINDS", "ATOL"]

OUTPUT_KINDS = ("scores", "labels", "ordinal", "embedding", "similarity")
#: answers compared across calls may differ by this much (a network run on a batch of a
#: different size rounds differently in its last bits)
ATOL = 1e-5

Inputs = Any  # images uint8 (N, H, W, 3), or a pair model's (images_a, images_b)


def _who(model: Any) -> str:
    name, cls = model_name(model), type(model).__name__
    return cls if name == cls else f"{cls} {name!r}"


def _fail(model: Any, check: str, what: str, cause: BaseException | None = None) -> NoReturn:
    raise AssertionError(" ".join(f"check_model({_who(model)}): {check}: {what}".split())) \
        from cause


def _is_pair(model: Any) -> bool:
    return getattr(model, "output_kind", None) == "similarity"


def _take(inputs: Inputs, rows: Any) -> Inputs:
    return tuple(x[rows] for x in inputs) if isinstance(inputs, tuple) else inputs[rows]


def _call(model: Any) -> str:
    return "compare(images_a, images_b)" if _is_pair(model) else "predict(images)"


def _ask(model: Any, inputs: Inputs, check: str) -> np.ndarray:
    """The model's answer to ``inputs``; an exception from it is ``check``'s failure."""
    try:
        out = model.compare(*inputs) if _is_pair(model) else model.predict(inputs)
    except Exception as exc:
        _fail(model, check, f"{_call(model)} raised {type(exc).__name__}: "
              f"{show(str(exc), 200)}", exc)
    if not isinstance(out, np.ndarray):
        _fail(model, check, f"{_call(model)} returned {type(out).__name__}, not a numpy array")
    return out


def _rows(model: Any, out: np.ndarray) -> np.ndarray:
    """An answer as rows ``(N, K)``: a pair model's ``(P,)`` and a binary ``(N,)`` as one column."""
    return out[:, None] if out.ndim == 1 else out


def model_inputs(model: Any, height: int = 25, width: int = 25, n: int = 3,
                 seed: int = 0) -> Inputs:
    """Random uint8 RGB images ``(n, height, width, 3)``, or two such stacks for a pair model."""
    rng = np.random.default_rng(seed)
    size = (n, height, width, 3)
    if _is_pair(model):
        return (rng.integers(0, 256, size, dtype=np.uint8),
                rng.integers(0, 256, size, dtype=np.uint8))
    return rng.integers(0, 256, size, dtype=np.uint8)


def check_model_repr(model: Any) -> None:
    """``repr(model)`` is one line that names the model's class."""
    try:
        text = repr(model)
    except Exception as exc:
        _fail(model, "check_model_repr", f"repr raised {type(exc).__name__}: "
              f"{show(str(exc), 120)}", exc)
    if not isinstance(text, str) or "\n" in text or type(model).__name__ not in text:
        _fail(model, "check_model_repr", f"repr must be one line naming the class "
              f"{type(model).__name__}, got {text!r:.120}")


def check_model_kind(model: Any) -> str:
    """``output_kind`` (default "scores") is a known kind, with the method it needs; returns it."""
    kind = getattr(model, "output_kind", None) or "scores"
    if kind not in OUTPUT_KINDS:
        _fail(model, "check_model_kind", f"output_kind must be one of {OUTPUT_KINDS}, "
              f"got {show(kind)}")
    method = "compare" if kind == "similarity" else "predict"
    if not callable(getattr(model, method, None)):
        _fail(model, "check_model_kind", f"output_kind {kind!r} needs a {method} method")
    return str(kind)


def check_model_output(model: Any, inputs: Inputs) -> np.ndarray:
    """A float ndarray with one finite row per image (``(P,)`` for a pair model), and the
    images given left unchanged; returns the answer."""
    before = [x.copy() for x in (inputs if isinstance(inputs, tuple) else (inputs,))]
    out = _ask(model, inputs, "check_model_output")
    n = before[0].shape[0]
    if _is_pair(model):
        if out.shape != (n,):
            _fail(model, "check_model_output", f"compare of {n} pairs must return shape "
                  f"({n},), got {out.shape}")
    elif out.ndim not in (1, 2) or out.shape[0] != n or (out.ndim == 2 and out.shape[1] == 0):
        _fail(model, "check_model_output", f"predict of {n} images must return shape "
              f"({n}, K), got {out.shape}")
    kind = getattr(model, "output_kind", None) or "scores"
    if out.ndim == 1 and kind not in ("scores", "similarity"):
        _fail(model, "check_model_output", f"output_kind {kind!r} answers rows (N, K), "
              f"got shape {out.shape}")
    if not np.issubdtype(out.dtype, np.floating):
        _fail(model, "check_model_output", f"answers must be floats, got dtype {out.dtype}")
    if not np.all(np.isfinite(out)):
        _fail(model, "check_model_output",
              f"{int(np.count_nonzero(~np.isfinite(out)))} NaN or inf values in the answer")
    after = inputs if isinstance(inputs, tuple) else (inputs,)
    if any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True)):
        _fail(model, "check_model_output", f"{_call(model)} modified the images it was given")
    return out


def check_model_n_outputs(model: Any, out: np.ndarray) -> None:
    """``n_outputs``, ``labels`` and ``attributes``, when the model declares them, have one
    entry per column of ``out`` (the answer of :func:`check_model_output`)."""
    k = _rows(model, out).shape[1]
    declared = getattr(model, "n_outputs", None)
    if declared is not None and (not isinstance(declared, (int, np.integer)) or declared != k):
        _fail(model, "check_model_n_outputs", f"n_outputs={show(declared)} but predict "
              f"returned {k} columns")
    if (getattr(model, "output_kind", None), k) == ("labels", 1):
        return  # label indices: one column whatever the number of classes
    for attr in ("labels", "attributes"):
        names = getattr(model, attr, None)
        if isinstance(names, (list, tuple)) and names and len(names) != k:
            _fail(model, "check_model_n_outputs", f"{attr} names {len(names)} columns "
                  f"{show(names)} but predict returned {k}")


def _first_bad(rows: np.ndarray, bad: np.ndarray) -> str:
    """``row i = [a, b, ...]`` for the first row flagged in ``bad`` (bool ``(N,)``)."""
    i = int(np.flatnonzero(bad)[0])
    values = ", ".join(f"{v:.4g}" for v in rows[i][:6]) + (", ..." if rows.shape[1] > 6 else "")
    return f"row {i} = [{values}]"


def check_model_values(model: Any, out: np.ndarray) -> None:
    """What the model's ``output_kind`` promises about the values of ``out``."""
    kind, rows = getattr(model, "output_kind", None) or "scores", _rows(model, out)
    what = ""
    if kind == "labels" and rows.shape[1] == 1:
        bad = (rows[:, 0] < 0) | (rows[:, 0] != np.rint(rows[:, 0]))
        if bad.any():
            what = f"label indices (N, 1) must be integers >= 0, got {_first_bad(rows, bad)}"
    elif kind == "labels":
        bad = ~np.all((rows == 0) | (rows == 1), axis=1) | (rows.sum(axis=1) != 1)
        if bad.any():
            what = f"rows (N, {rows.shape[1]}) must be one-hot, got {_first_bad(rows, bad)}"
    elif kind == "ordinal":
        levels = getattr(model, "levels", None)
        bad = np.any((rows < 0) | (rows > 1), axis=1)
        if bad.any():
            what = f"values must lie in [0, 1], got {_first_bad(rows, bad)}"
        elif isinstance(levels, (int, np.integer)) and levels >= 2:
            scaled = rows * (levels - 1)
            bad = np.any(np.abs(scaled - np.rint(scaled)) > 1e-9, axis=1)
            if bad.any():
                what = (f"values must be one of {levels} evenly spaced levels in [0, 1], got "
                        f"{_first_bad(rows, bad)}")
    elif kind == "embedding" and rows.shape[0] > 1 and np.all(rows == rows[:1]):
        what = f"{rows.shape[0]} different images got the same embedding"
    if what:
        _fail(model, "check_model_values", f"output_kind {kind!r}: {what}")


def _same(model: Any, check: str, got: np.ndarray, want: np.ndarray, how: str,
          atol: float | None) -> None:
    if got.shape != want.shape:
        _fail(model, check, f"{how} has shape {got.shape}, expected {want.shape}")
    if atol is not None and not np.allclose(got, want, rtol=0.0, atol=atol):
        gap = float(np.max(np.abs(got.astype(np.float64) - want)))
        _fail(model, check, f"{how} differs by up to {gap:.3g} (atol {atol:g})")


def check_model_deterministic(model: Any, inputs: Inputs, out: np.ndarray,
                              atol: float = ATOL) -> None:
    """The same images asked again give the same answer ``out``."""
    again = _ask(model, inputs, "check_model_deterministic")
    _same(model, "check_model_deterministic", again, out,
          f"a second {_call(model)} of the same images (the model claims to be "
          f"deterministic; a noisy one sets deterministic = False)", atol)


def check_model_row_order(model: Any, inputs: Inputs, out: np.ndarray,
                          atol: float | None = ATOL) -> None:
    """Rows follow the input order: reversed images give ``out`` reversed (shape only if
    ``atol`` is None: a non-deterministic model)."""
    got = _ask(model, _take(inputs, slice(None, None, -1)), "check_model_row_order")
    _same(model, "check_model_row_order", got, out[::-1],
          "the answer to the reversed images, against the first answer reversed,", atol)


def check_model_single_image(model: Any, inputs: Inputs, out: np.ndarray,
                             atol: float | None = ATOL) -> None:
    """One image alone (a batch of one) gets the row it got in the batch ``out``."""
    got = _ask(model, _take(inputs, slice(1, 2)), "check_model_single_image")
    _same(model, "check_model_single_image", got, out[1:2],
          "the answer to image 1 alone, against its row in the batch,", atol)


def _refuses(model: Any, what: str, types: tuple[type[Exception], ...], match: str,
             fn: Callable[..., Any], *args: Any) -> None:
    """``fn(*args)`` raises one of ``types`` with a one-line message matching ``match``."""
    check = "check_model_bad_input"
    names = " or ".join(t.__name__ for t in types)
    try:
        fn(*args)
    except types as exc:
        text = str(exc)
        if "\n" in text or not re.search(match, text, re.IGNORECASE):
            _fail(model, check, f"{what}: the {type(exc).__name__} must be one line naming "
                  f"the problem ({match!r}), got {show(text, 200)}")
        return
    except Exception as exc:
        _fail(model, check, f"{_call(model)} of {what} raised {type(exc).__name__} "
              f"({show(str(exc), 120)}); expected a clear {names}", exc)
    _fail(model, check, f"{_call(model)} accepted {what}; expected a {names} naming the "
          "problem")


def check_model_bad_input(model: Any, inputs: Inputs) -> None:
    """Images without a batch axis, of dtype int32, floats outside [0, 255] and a list are
    refused with a one-line ValueError / TypeError naming the problem (and, for a pair
    model, stacks of different lengths)."""
    pair = _is_pair(model)
    x = inputs[0] if pair else inputs
    ask = (lambda bad: model.compare(bad, inputs[1])) if pair else model.predict
    _refuses(model, "one image without a batch axis", (ValueError,), r"shape|\(N, H, W, 3\)",
             ask, x[0])
    _refuses(model, "images of dtype int32", (TypeError, ValueError), r"dtype|uint8", ask,
             x.astype(np.int32))
    _refuses(model, "float images in [300, 555]", (ValueError,), r"outside|range|255", ask,
             x.astype(np.float32) + 300.0)
    _refuses(model, "a list instead of an array", (TypeError,), r"numpy array|ndarray", ask,
             [[1, 2, 3]])
    if pair:
        _refuses(model, f"{len(x)} images_a with {len(x) - 1} images_b", (ValueError,),
                 r"number|same|pair", model.compare, x, inputs[1][:-1])


def _deterministic(model: Any, given: bool | None) -> bool:
    value = getattr(model, "deterministic", True) if given is None else given
    if not isinstance(value, (bool, np.bool_)):
        _fail(model, "check_model_deterministic", f"deterministic must be True or False, "
              f"got {show(value)}")
    return bool(value)


def check_model(model: Any, *, height: int = 25, width: int = 25, n: int = 3, seed: int = 0,
                deterministic: bool | None = None, atol: float = ATOL) -> np.ndarray:
    """Run every model check on ``model``; return its answer to ``n`` random images.

    height, width: image size in pixels (use the size a fixed-size model accepts); n: images
    (pairs) per batch, >= 2; seed: of the random images. deterministic: None reads the
    model's ``deterministic`` attribute (default True); False compares answers by shape only.
    atol: largest difference allowed between answers to the same image.
    Returns scores ``(n, K)`` (``(n,)`` for a pair model). Raises AssertionError naming the
    model, the failed check and what was wrong (one line).
    """
    for name, value in (("height", height), ("width", width), ("seed", seed)):
        check_int(name, value, 0 if name == "seed" else 1)
    check_int("n", n, 2)
    atol = check_number("atol", atol, 0.0)
    check_model_repr(model)
    check_model_kind(model)
    inputs = model_inputs(model, height, width, n, seed)
    out = check_model_output(model, inputs)
    check_model_n_outputs(model, out)
    check_model_values(model, out)
    tol = atol if _deterministic(model, deterministic) else None
    if tol is not None:
        check_model_deterministic(model, inputs, out, tol)
    check_model_row_order(model, inputs, out, tol)
    check_model_single_image(model, inputs, out, tol)
    check_model_bad_input(model, inputs)
    return out
