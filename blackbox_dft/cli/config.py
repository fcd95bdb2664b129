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
import dataclasses
import difflib
import json
import math
import os
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

try:
    import tomllib
except ImportError:  # Python 3.10: TOML config files are refused in one line
    tomllib = None  # type: ignore[assignment]

__all__ = ["Option", "ConfigError", "csv_list", "flag_type", "check_value", "check_options",
           "read_config_file", "option", "option_table", "to_flat", "from_flat"]

D = TypeVar("D")


class ConfigError(ValueError):
    """A bad option or config file (exit code 2)."""


def csv_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [t.strip() for t in str(text).split(",") if t.strip()]


@dataclass(frozen=True)
class Option:
    """One option: its default, flag type and help; ``accepts``: further value types a
    config file may give (e.g. a budget as a number or a string); ``check``: a range
    (a key of :data:`RANGES`); ``shown``: the default as ``--help`` states it, when the
    stored default (None) means a library default (e.g. ``"16"`` for ``batch_size``)."""

    name: str
    default: Any
    help: str
    type: Any = str
    flag: str = "value"  # "value", "bool" (--x / --no-x), "list" (repeatable)
    choices: tuple[str, ...] | None = None
    accepts: tuple[type, ...] = ()
    check: str | None = None
    shown: str | None = None

    def help_text(self) -> str:
        """The help with the default: ``(default: X)`` unless the help states it already."""
        if "(default" in self.help:
            return self.help
        if self.shown is not None and self.shown.startswith("required"):
            return f"{self.help} ({self.shown})"
        if self.shown is not None:
            shown = self.shown
        elif self.flag == "bool" and self.default is not None:
            shown = "--" + ("" if self.default else "no-") + self.name.replace("_", "-")
        elif self.default is None or self.default == {}:
            shown = "none"
        else:
            shown = str(self.default)
        return f"{self.help} (default: {shown.replace('%', '%%')})"


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
            if tomllib is None:
                raise ConfigError("TOML config files need Python 3.11+; use JSON")
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


# -- options as dataclass fields -------------------------------------------------------------
def option(default: Any, help: str, type_: Any = str, *, name: str | None = None,  # noqa: A002
           flag: str = "value", choices: tuple[str, ...] | None = None,
           accepts: tuple[type, ...] = (), check: str | None = None,
           shown: str | None = None) -> Any:
    """A dataclass field that is an :class:`Option` (same arguments); ``name``: the option's
    name when it is not the field's. A dataclass of such fields, and of dataclasses of them
    (groups), is an option table: :func:`option_table`, :func:`to_flat`, :func:`from_flat`."""
    meta = {"help": help, "type": type_, "flag": flag, "choices": choices, "accepts": accepts,
            "check": check, "name": name, "shown": shown}
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _groups(cls: type) -> dict[str, type]:
    """The fields of dataclass ``cls`` that are groups (dataclasses): name -> class."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)
            if dataclasses.is_dataclass(hints[f.name])}


def _leaves(cls: type) -> Iterator[tuple[tuple[str, ...], dataclasses.Field[Any]]]:
    """``(path of field names, field)`` of every option of dataclass ``cls``, in order."""
    groups = _groups(cls)
    for f in dataclasses.fields(cls):
        if f.name in groups:
            for path, leaf in _leaves(groups[f.name]):
                yield (f.name, *path), leaf
        else:
            yield (f.name,), f


def _name(f: dataclasses.Field[Any]) -> str:
    return str(f.metadata["name"] or f.name)


def option_table(cls: type) -> tuple[Option, ...]:
    """The :class:`Option` of every field of dataclass ``cls`` (groups flattened)."""
    out = []
    for _, f in _leaves(cls):
        m = f.metadata
        factory: Any = f.default_factory
        default = f.default if f.default is not dataclasses.MISSING else factory()
        out.append(Option(_name(f), default, m["help"], m["type"], m["flag"], m["choices"],
                          m["accepts"], m["check"], m["shown"]))
    return tuple(out)


def to_flat(obj: Any) -> dict[str, Any]:
    """``{option name: value}`` of an option dataclass (groups flattened)."""
    out = {}
    for path, f in _leaves(type(obj)):
        value = obj
        for part in path:
            value = getattr(value, part)
        out[_name(f)] = value
    return out


def from_flat(cls: type[D], values: dict[str, Any]) -> D:
    """An instance of option dataclass ``cls`` (groups built) from ``{option name: value}``;
    options not in ``values`` keep their defaults."""
    top: dict[str, Any] = {}
    groups: dict[str, dict[str, Any]] = {}
    for path, f in _leaves(cls):
        if _name(f) in values:
            if len(path) == 1:
                top[path[0]] = values[_name(f)]
            else:
                groups.setdefault(path[0], {})[path[1]] = values[_name(f)]
    for name, group in _groups(cls).items():
        if name in groups:
            top[name] = group(**groups[name])
    return cls(**top)
