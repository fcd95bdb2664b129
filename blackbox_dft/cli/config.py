"""Typed options of the command line: one :class:`Option` per name, checked the same way
whether it comes from a flag, a ``--config`` file (JSON or TOML) or a run's ``config.json``.

Why typed: a config is data, not Python. ``skip_bad = "no"`` must not skip (a non-empty
string is true), ``evaluate = "no"`` must not evaluate and pay, ``checkpoint_every = 0``
must not silently become 10, and ``--epsilon inf`` must be refused as an epsilon, not
reported later as a learning rate. Each check fails in one line naming the option, the
value and what is accepted: ``config run.toml: skip_bad must be true or false, got 'no'``.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Option", "ConfigError", "csv_list", "flag_type", "check_value", "check_options",
           "read_config_file"]


class ConfigError(ValueError):
    """A bad option or config file (exit code 2)."""


def csv_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [t.strip() for t in str(text).split(",") if t.strip()]


@dataclass(frozen=True)
class Option:
    """One option: its default, flag type and help; ``accepts``: further value types a
    config file may give (e.g. a budget as a number or a string); ``check``: a range
    (a key of :data:`RANGES`)."""

    name: str
    default: Any
    help: str
    type: Any = str
    flag: str = "value"  # "value", "bool" (--x / --no-x), "list" (repeatable)
    choices: tuple[str, ...] | None = None
    accepts: tuple[type, ...] = ()
    check: str | None = None


_Range = tuple[Callable[[float], bool], str]
RANGES: dict[str, _Range] = {
    "positive": (lambda v: 0 < v < math.inf, "a finite number > 0"),
    "nonnegative": (lambda v: 0 <= v < math.inf, "a finite number >= 0"),
    "fraction": (lambda v: 0 <= v < 1, "a number >= 0 and < 1"),
    "probability": (lambda v: 0 < v < 1, "a number > 0 and < 1"),
    "cosine": (lambda v: -1 <= v <= 1, "a cosine similarity in [-1, 1]"),
    "count": (lambda v: v >= 1, "a whole number >= 1"),
    "seed": (lambda v: v >= 0, "a whole number >= 0"),
    "finite": (lambda v: math.isfinite(v), "a finite number"),
}


def _show(value: Any) -> str:
    text = " ".join(json.dumps(value).split()) if isinstance(value, (bool, type(None))) \
        else " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


def _type_error(o: Option, value: Any) -> str | None:
    """Why ``value`` does not fit option ``o`` (None if it does)."""
    if o.flag == "bool":
        return None if isinstance(value, bool) else "must be true or false"
    if o.name == "model_options":
        ok = isinstance(value, dict) or (isinstance(value, list)
                                         and all(isinstance(v, str) for v in value))
        return None if ok else "must be an object or a list of KEY=VALUE strings"
    if o.type is csv_list:
        ok = isinstance(value, str) or (isinstance(value, list)
                                        and all(isinstance(v, str) for v in value))
        return None if ok else "must be a comma-separated string or a list of strings"
    if isinstance(value, bool):
        pass  # a bool is an int to Python, never a number or a string to a user
    elif isinstance(value, o.accepts):
        return None
    elif o.type is int and isinstance(value, int):
        return None
    elif o.type is float and isinstance(value, (int, float)):
        return None
    elif o.type is str and isinstance(value, str):
        return None
    names = {str: "a string", int: "a whole number", float: "a number", list: "a list",
             dict: "an object"}
    return "must be " + " or ".join(names.get(t, t.__name__) for t in (o.type, *o.accepts))


def check_value(o: Option, value: Any) -> str | None:
    """Why ``value`` is not a valid value of ``o`` (None if it is); None is always valid
    for an option whose default is None (the library's default)."""
    if value is None and o.default is None:
        return None
    why = _type_error(o, value)
    if why:
        return why
    if o.choices is not None and value not in o.choices:
        return f"must be one of {', '.join(o.choices)}"
    if o.check and isinstance(value, (int, float)) and not isinstance(value, bool):
        ok, must = RANGES[o.check]
        if not ok(value):
            return f"must be {must}"
    return None


def flag_type(o: Option) -> Callable[[str], Any]:
    """The argparse ``type`` of option ``o``: converts and range-checks, so that
    ``--epsilon inf`` fails at parse time as "epsilon must be a finite number > 0"."""
    def convert(text: str) -> Any:
        try:
            value = o.type(text) if o.type in (int, float) else text
        except ValueError:
            kind = "a whole number" if o.type is int else "a number"
            raise argparse.ArgumentTypeError(f"{o.name} must be {kind}, got {text!r}") from None
        if o.check and isinstance(value, (int, float)):
            ok, must = RANGES[o.check]
            if not ok(value):
                raise argparse.ArgumentTypeError(f"{o.name} must be {must}, got {text}")
        return value

    convert.__name__ = getattr(o.type, "__name__", "value")
    return convert


def check_options(values: dict[str, Any], table: dict[str, Option], where: str,
                  suffix: str = "") -> dict[str, Any]:
    """``values`` checked against ``table``: ConfigError ``"{where}: {name} must be ...,
    got ...{suffix}"`` for the first bad one, naming the closest option for an unknown
    key. Keys may use ``-`` or ``_``; returns them with ``_``."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name == "model_option":
            name = "model_options"
        if name not in table:
            near = difflib.get_close_matches(name, list(table), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(f"{where}: unknown key {str(key)!r}{hint}; keys are the "
                              f"option names (see --help){suffix}")
        if name in out:
            raise ConfigError(f"{where}: {name} is given twice (as {name!r} and with dashes)")
        why = check_value(table[name], value)
        if why:
            raise ConfigError(f"{where}: {name} {why}, got {_show(value)}{suffix}")
        out[name] = value
    return out


def _load(path: str) -> Any:
    is_toml = path.lower().endswith(".toml")
    try:
        if is_toml:
            try:
                import tomllib
            except ImportError:  # Python 3.10
                raise ConfigError("TOML config files need Python 3.11+; use JSON") from None
            with open(path, "rb") as fh:
                return tomllib.load(fh)
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # JSON/TOMLDecodeError
        raise ConfigError(f"config {path} is not valid {'TOML' if is_toml else 'JSON'}: "
                          f"{' '.join(str(exc).split())[:120]}") from None
    except OSError as exc:
        raise ConfigError(f"config {path} cannot be read: {exc.strerror or exc}") from None


def read_config_file(path: str, options: Iterable[Option]) -> dict[str, Any]:
    """Options from a JSON or TOML (``.toml``) file, each checked against ``options``."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    data = _load(path)
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must hold an object of options (option name: value), "
                          f"got a {type(data).__name__}")
    return check_options(data, {o.name: o for o in options}, f"config {path}")
