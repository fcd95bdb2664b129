"""Argument checks shared by the tuners and their components.

Every check fails in ONE line that names the argument, shows the offending value (short,
newlines removed) and says what is accepted; a misspelt name gets the closest valid one.
Checks raise ``ValueError`` (for a value of the wrong kind too, as the tuners always have),
never a numpy or builtin error from deep inside.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["show", "closest", "check_choice", "check_number", "check_int", "check_seed",
           "check_instance"]

_REALS = (int, float, np.integer, np.floating)


def show(value: Any, limit: int = 60) -> str:
    """A short one-line ``repr`` of ``value`` for an error message (arrays by shape)."""
    if isinstance(value, np.ndarray) and value.size > 4:
        return f"array of shape {value.shape} and dtype {value.dtype}"
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__ must not replace the real error
        text = f"<{type(value).__name__}>"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _listed(choices: Sequence[str]) -> str:
    quoted = [repr(c) for c in choices]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def closest(value: Any, choices: Sequence[str], cutoff: float = 0.5, fmt: str = "{!r}") -> str:
    """``"; did you mean 'x'?"`` for the choice closest to a misspelt string, else ``""``."""
    if not isinstance(value, str):
        return ""
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(value.lower(), list(lowered), n=1, cutoff=cutoff)
    return f"; did you mean {fmt.format(lowered[close[0]])}?" if close else ""


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``; else ValueError naming the closest choice."""
    if isinstance(value, str) and value in choices:
        return value
    raise ValueError(f"{name} must be one of {_listed(choices)}, got {show(value)}"
                     f"{closest(value, choices)}")


def _where(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high:g}"
    return ""


def check_number(name: str, value: Any, low: float | None = None, high: float | None = None,
                 *, low_open: bool = False, high_open: bool = False, unit: str = "") -> float:
    """A finite real number within the given bounds, as float; ValueError otherwise
    (bools, strings and arrays included: the message names their type)."""
    what = f"{name} must be a finite number{_where(low, high, low_open, high_open)}{unit}"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, _REALS):
        raise ValueError(f"{what}, got {show(value)} ({type(value).__name__})")
    try:
        v = float(value)
    except OverflowError:  # a Python int beyond the float range
        v = math.inf if value > 0 else -math.inf
    lo_ok = low is None or (v > low if low_open else v >= low)
    hi_ok = high is None or (v < high if high_open else v <= high)
    if not (math.isfinite(v) and lo_ok and hi_ok):
        raise ValueError(f"{what}, got {show(value)}")
    return v


def check_int(name: str, value: Any, low: int = 1) -> int:
    """An int (not a bool, not a float) ``>= low``; ValueError otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int >= {low}, got {show(value)} "
                         f"({type(value).__name__})")
    if value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {show(value)}")
    return int(value)


def check_seed(value: Any) -> int | None:
    """``None`` (fresh entropy) or an int >= 0, as ``numpy.random.default_rng`` takes."""
    if value is None:
        return None
    return check_int("seed", value, 0)


def check_instance(name: str, value: Any, cls: type, names: Sequence[str]) -> Any:
    """``value`` if it is ``None`` or a ``cls`` instance; else ValueError listing the
    classes ``names``, naming the closest one when ``value`` is a misspelt name."""
    if value is None or isinstance(value, cls):
        return value
    listed = ", ".join(f"{n}(...)" for n in names)
    raise ValueError(f"{name} must be an object, one of {listed}, or None for the default, "
                     f"got {show(value)} ({type(value).__name__})"
                     f"{closest(value, names, cutoff=0.3, fmt='{}()')}")
