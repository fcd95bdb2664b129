"""Checks of the files a fit writes (``checkpoint.npz``, saved results, run JSON files) and
the atomic writers that produce them.

A file read back may be damaged (truncated by a full disk, zero bytes after a crash) or
altered (a NaN latent, ``queries = -100000``). Either way it must be refused in one line
that names the file and the field, never accepted as garbage (a NaN latent perturbs
nothing and exits 0; a negative query count lets a resumed fit run past its budget) and
never surface as ``BadZipFile`` or ``EOFError`` from deep inside numpy.

Writers: :func:`atomic_write_bytes` / :func:`atomic_write_text` write a temp file beside
the target (``.tmp-*.part``) and rename it over the target, removing the temp file on any
failure; an ``OSError`` (disk full, quota, read-only) becomes :class:`FileWriteError`
naming the target. The file gets the permissions a plain ``open()`` gives (0666 less the
umask), like every other file of a run folder.
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Callable
from typing import IO, Any

import numpy as np

__all__ = ["StateFileError", "FileWriteError", "damaged", "atomic_write", "atomic_write_bytes",
           "atomic_write_text", "check_fit_state", "check_result", "check_history",
           "TEMP_PREFIX"]

TEMP_PREFIX = ".tmp-"  # temp files of atomic writes: .tmp-XXXX.npz, .tmp-XXXX.part
# O_EXCL: never reuse (or follow a symlink planted at) an existing name.
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) \
    | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class StateFileError(ValueError):
    """A run or result file that is damaged or was altered (names the file and the field)."""


class FileWriteError(OSError):
    """Writing a file failed (disk full, quota, read-only file system...).

    ``filename`` is the file that could not be written, ``errno`` / ``strerror`` the
    operating system's reason; no temp file is left behind.
    """

    def __init__(self, path: str, exc: OSError) -> None:
        super().__init__(exc.errno, exc.strerror or str(exc) or type(exc).__name__, path)

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


def damaged(path: str | os.PathLike[str], reason: str) -> StateFileError:
    """The error of a file that cannot be read back: names it, why, and what to do."""
    path = os.fspath(path)
    name, folder = os.path.basename(path), os.path.dirname(path) or "."
    if name == "checkpoint.npz":
        hint = ("delete it to start the fit over (answers already paid for stay in the query "
                "cache), or restore it from a backup")
    else:
        hint = "restore it from a backup, or delete it and write it again"
    return StateFileError(f"{name} in {folder} is damaged ({reason}); {hint}")


def _altered(path: str, field: str, value: Any, must: str) -> StateFileError:
    shown = " ".join(repr(value).split())
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return StateFileError(f"{path}: {field} is {shown}, must be {must}; the file was altered "
                          "or damaged")


# -- writers ---------------------------------------------------------------------------------
def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any], *,
                 suffix: str = ".part", fsync: bool = True) -> None:
    """Call ``write(fh)`` on a temp file beside ``path`` and rename it over ``path``.

    The temp file (``.tmp-XXXX<suffix>``) is removed if anything fails (Ctrl-C included);
    an ``OSError`` is raised as :class:`FileWriteError` naming ``path``. ``fsync``: flush
    to the disk before the rename, so that a crash leaves the old file or the new one.
    """
    path = os.fspath(path)
    try:
        fd, tmp = _create_temp(os.path.dirname(os.path.abspath(path)), suffix)
    except OSError as exc:
        raise FileWriteError(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and not isinstance(exc, FileWriteError):
            raise FileWriteError(path, exc) from None
        raise


def _create_temp(directory: str, suffix: str) -> tuple[int, str]:
    """A new file ``.tmp-<random><suffix>`` in ``directory``: its descriptor and path.

    Created with mode 0o666, so the process's umask at this moment gives it the permissions
    a plain ``open(path, "w")`` would (``tempfile.mkstemp`` makes 0600 whatever the umask:
    a result the user's group may read would come out unreadable to it)."""
    for _ in range(100):  # a name taken (by chance, or planted) is drawn again
        tmp = os.path.join(directory, f"{TEMP_PREFIX}{secrets.token_hex(6)}{suffix}")
        try:
            return os.open(tmp, _CREATE, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {directory} after 100 tries")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda fh: fh.write(data), fsync=fsync)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, fsync: bool = True) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


# -- checks ----------------------------------------------------------------------------------
def _count(path: str, field: str, value: Any, upper: int | None = None,
           what: str = "") -> int:
    """``value`` as an int >= 0 (and <= ``upper``), else StateFileError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise _altered(path, field, value, "a whole number >= 0")
    if value < 0:
        raise _altered(path, field, value, ">= 0")
    if upper is not None and value > upper:
        raise _altered(path, field, value, f"<= {what or upper}")
    return int(value)


def _array(path: str, field: str, arr: Any, ndim: int | None = None) -> np.ndarray:
    """A real numeric, all-finite array (of ``ndim`` dimensions), else StateFileError."""
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
        kind = getattr(arr, "dtype", type(arr).__name__)
        raise StateFileError(f"{path}: {field} has type {kind}, must be a float array; the "
                             "file was altered or damaged")
    if ndim is not None and arr.ndim != ndim:
        raise StateFileError(f"{path}: {field} has shape {arr.shape}, must have {ndim} "
                             "dimensions; the file was altered or damaged")
    if arr.size == 0:
        raise StateFileError(f"{path}: {field} is empty; the file was altered or damaged")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise StateFileError(f"{path}: {field} holds {bad} non-finite values (NaN or inf) of "
                             f"{arr.size}; the file was altered or damaged")
    return arr


def _budget(meta: dict[str, Any]) -> int | None:
    params = meta.get("params")
    budget = params.get("query_budget") if isinstance(params, dict) else None
    if isinstance(budget, (int, np.integer)) and not isinstance(budget, bool) and budget > 0:
        return int(budget)
    return None


def check_history(path: str, history: Any, field: str = "history") -> list[dict[str, Any]]:
    """A fit history: a list of dicts whose ``queries`` are ints >= 0, non-decreasing, and
    whose ``step`` (where given) increases."""
    if not isinstance(history, list):
        raise _altered(path, field, type(history).__name__, "a list of steps")
    last_q, last_step = 0, 0
    for i, rec in enumerate(history):
        if not isinstance(rec, dict):
            raise _altered(path, f"{field}[{i}]", rec, "an object")
        if "queries" in rec:
            q = _count(path, f"{field}[{i}].queries", rec["queries"])
            if q < last_q:
                raise _altered(path, f"{field}[{i}].queries", q,
                               f">= the step before's {last_q} (queries never decrease)")
            last_q = q
        if "step" in rec:
            s = _count(path, f"{field}[{i}].step", rec["step"])
            if s <= last_step and i:
                raise _altered(path, f"{field}[{i}].step", s, f"> {last_step}")
            last_step = s
    return history


def _image_shape(path: str, meta: dict[str, Any]) -> tuple[int, int] | None:
    shape = meta.get("image_shape")
    if shape is None:
        return None
    if (not isinstance(shape, list) or len(shape) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in shape)):
        raise _altered(path, "image_shape", shape, "two positive whole numbers [H, W]")
    return int(shape[0]), int(shape[1])


def check_fit_state(path: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Validate a checkpoint's arrays and ``meta["state"]`` before :class:`FitState` is built:
    finite latents of one shape, counters ints >= 0 within the budget, a sane history."""
    s = meta["state"]
    if not isinstance(s, dict):
        raise _altered(path, "state", type(s).__name__, "an object")
    for key in ("rng_state", "step", "queries", "best_step", "history", "done",
                "opt_counters"):
        if key not in s:
            raise StateFileError(f"{path}: state.{key} is missing; the file was altered or "
                                 "damaged")
    z = _array(path, "z", arrays["z"])
    for name, arr in arrays.items():
        if name == "z":
            continue
        _array(path, name, arr)
        # best_z and the optimizer's moments are shaped like z (per attribute: like one
        # attribute's latent, z[a])
        shapes = (z.shape,) if name == "best_z" else (z.shape, z.shape[1:])
        if (name == "best_z" or name.startswith("opt.")) and arr.shape not in shapes:
            raise StateFileError(f"{path}: {name} has shape {arr.shape} but z has {z.shape}; "
                                 "the file was altered or damaged")
    step = _count(path, "state.step", s["step"])
    budget = _budget(meta)
    _count(path, "state.queries", s["queries"], budget, f"the query budget {budget}")
    _count(path, "state.lost_queries", s.get("lost_queries", 0))
    _count(path, "state.best_step", s["best_step"], step, f"state.step {step}")
    if not isinstance(s["done"], bool):
        raise _altered(path, "state.done", s["done"], "true or false")
    if not isinstance(s["opt_counters"], dict):
        raise _altered(path, "state.opt_counters", s["opt_counters"], "an object")
    for key, value in s["opt_counters"].items():
        if key == "count":
            _count(path, "state.opt_counters.count", value)
    for key in ("baseline", "extra"):
        if s.get(key) is not None and not isinstance(s[key], dict):
            raise _altered(path, f"state.{key}", s[key], "an object")
    extra = s.get("extra") or {}
    if "paid" in extra:  # images paid, failed steps included: within the budget too
        _count(path, "state.extra.paid", extra["paid"], budget, f"the query budget {budget}")
    if "sent_mark" in extra:
        _count(path, "state.extra.sent_mark", extra["sent_mark"])
    score = s.get("best_score")
    if score is not None and (not isinstance(score, list) or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v)
            for v in score)):
        raise _altered(path, "state.best_score", score, "a list of numbers")
    check_history(path, s["history"], "state.history")
    _image_shape(path, meta)
    try:  # numpy checks a generator state thoroughly; a bad one must not crash the fit later
        np.random.default_rng().bit_generator.state = s["rng_state"]
    except (TypeError, ValueError, KeyError) as exc:
        raise StateFileError(f"{path}: state.rng_state is not a PCG64 generator state "
                             f"({type(exc).__name__}); the file was altered or damaged") from None


_RESULT_ARRAYS = {"result": ("delta", "latent", 3), "verification_result": ("delta", "latent", 3),
                  "multiattr_result": ("deltas", "latents", 4)}


def check_result(path: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Validate a saved result (``delta.npz`` / ``deltas.npz``): finite arrays, a perturbation
    of the saved image shape within epsilon, counters ints >= 0, a sane history."""
    kind = meta.get("kind")
    delta_key, latent_key, ndim = _RESULT_ARRAYS.get(str(kind), ("delta", "latent", 3))
    for key in (delta_key, latent_key):
        if key not in arrays:
            raise StateFileError(f"{path}: the array {key!r} is missing; the file was altered "
                                 "or damaged")
    delta = _array(path, delta_key, arrays[delta_key], ndim)
    _array(path, latent_key, arrays[latent_key])
    if delta.shape[-1] != 3:
        raise StateFileError(f"{path}: {delta_key} has shape {delta.shape}, must end in 3 "
                             "colour channels; the file was altered or damaged")
    shape = _image_shape(path, meta)
    if shape is None:
        raise StateFileError(f"{path}: image_shape is missing; the file was altered or damaged")
    if tuple(delta.shape[-3:-1]) != shape:
        raise StateFileError(f"{path}: {delta_key} has shape {delta.shape} but image_shape is "
                             f"{list(shape)}; the file was altered or damaged")
    if kind == "multiattr_result":
        attrs = meta.get("attributes")
        if not isinstance(attrs, list) or len(attrs) != delta.shape[0]:
            raise _altered(path, "attributes", attrs, f"a list of {delta.shape[0]} names")
    params = meta.get("params")
    if not isinstance(params, dict):
        raise _altered(path, "params", params, "an object")
    eps = params.get("epsilon")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < math.inf:
        raise _altered(path, "params.epsilon", eps, "a finite number > 0")
    peak = float(np.abs(delta).max())
    if peak > eps * (1 + 1e-4) + 1e-4:  # float32 rounding of a clipped delta
        raise _altered(path, f"max |{delta_key}|", round(peak, 4), f"<= epsilon {eps:g}")
    _count(path, "queries", meta.get("queries"))
    steps = meta.get("n_steps")
    if steps is not None:
        steps = _count(path, "n_steps", steps)
    best = meta.get("best_step")
    for i, b in enumerate(best if isinstance(best, list) else [best]):
        field = f"best_step[{i}]" if isinstance(best, list) else "best_step"
        _count(path, field, b, steps, f"n_steps {steps}")
    check_history(path, meta.get("history"))
    for key in ("threshold", "baseline_threshold"):
        if key in meta:
            t = meta[key]
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
                raise _altered(path, key, t, "a finite similarity threshold")
