"""Explicit fit state and its files: ``.npz`` arrays plus one JSON document, never pickle.

Everything a fit needs to continue bit-for-bit lives in :class:`FitState`: the
latent, the optimizer's arrays and counters, the RNG's bit-generator state, the
step and query counters, the best latent so far and the history.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from blackbox_dft.core.state_checks import (
    FileWriteError,
    StateFileError,
    atomic_write,
    check_fit_state,
    check_result,
    damaged,
)

if TYPE_CHECKING:
    from blackbox_dft.core.model import QueryCounter

__all__ = ["FitState", "write_npz_json", "read_npz_json", "read_result", "FORMAT_VERSION",
           "StateFileError", "FileWriteError",
           "check_resumable", "load_resumable", "keep_on_failure", "commit_queries",
           "resume_queries", "paid_images"]

FORMAT_VERSION = 1
_META_KEY = "__meta_json__"


def write_npz_json(path: str | os.PathLike[str], arrays: dict[str, np.ndarray],
                   meta: dict[str, Any]) -> None:
    """Write arrays and a JSON document into one ``.npz`` atomically (temp file + rename)."""
    path = os.fspath(path)
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    text = json.dumps({"format_version": FORMAT_VERSION, **meta}, allow_nan=True)
    payload[_META_KEY] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    # A temp file beside the target, renamed over it: a crash leaves the old file or the new
    # one; the temp file is removed on failure (FileWriteError names ``path``).
    atomic_write(path, lambda fh: np.savez(fh, **payload),  # type: ignore[arg-type]
                 suffix=".npz")


def _pickled(path: str) -> bool:
    """Whether ``path`` is a pickle (a protocol 2+ opcode first) or an .npy of objects."""
    with open(path, "rb") as fh:
        head = fh.read(128)
    return head[:1] == b"\x80" or (head[:6] == b"\x93NUMPY" and b"'|O'" in head)


def _load_npz(path: str) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at ``path``; StateFileError (a ValueError naming the
    file and what to do) for any damage, never a raw zipfile / EOF / numpy error."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):  # a bare .npy renamed: not ours
                raise damaged(path, "not a .npz archive")
            return {k: data[k] for k in data.files}
    except StateFileError:
        raise
    except EOFError:
        raise damaged(path, "empty or truncated") from None
    except (zipfile.BadZipFile, zlib.error) as exc:
        raise damaged(path, f"not a valid zip archive: {exc}") from None
    except ValueError as exc:
        if "pickle" in str(exc) and _pickled(path):  # never unpickle: a file must not run code
            raise StateFileError(f"{path} holds pickled Python objects; refused (a loaded file "
                                 "must not run code)") from None
        if "pickle" in str(exc):  # numpy's guess for anything that is neither zip nor .npy
            raise damaged(path, "not a .npz archive") from None
        raise damaged(path, f"unreadable array: {' '.join(str(exc).split())[:80]}") from None
    except (OSError, KeyError, UnicodeDecodeError, RuntimeError) as exc:
        raise damaged(path, f"{type(exc).__name__}: {' '.join(str(exc).split())[:80]}") \
            from None


def read_npz_json(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a file written by :func:`write_npz_json`; refuses pickled objects.

    FileNotFoundError when ``path`` is missing; StateFileError (a ValueError) naming the
    file when it is damaged (truncated, zero bytes, garbage) or of another format.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    arrays = _load_npz(path)
    if _META_KEY not in arrays:
        raise damaged(path, "no blackbox_dft metadata inside; was it written by blackbox_dft?")
    try:
        meta = json.loads(arrays.pop(_META_KEY).tobytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise damaged(path, f"its metadata is not valid JSON: {type(exc).__name__}") from None
    if not isinstance(meta, dict):
        raise damaged(path, "its metadata is not a JSON object")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path} has format version {version!r}; this blackbox_dft reads version "
            f"{FORMAT_VERSION}"
        )
    return arrays, meta


def read_result(path: str | os.PathLike[str], kind: str,
                owner: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a fitted result written by ``owner.save``; ValueError if it is another kind."""
    arrays, meta = read_npz_json(path)
    if meta.get("kind") != kind:
        raise ValueError(f"{os.fspath(path)} is not a saved {owner} result")
    check_result(os.fspath(path), arrays, meta)  # finite, consistent, within epsilon
    return arrays, meta


@dataclass
class FitState:
    """All mutable state of a fit. Arrays are float64 latents; counters are ints."""

    z: np.ndarray
    opt_state: dict[str, Any]
    rng_state: dict[str, Any]
    step: int = 0
    queries: int = 0
    best_z: np.ndarray | None = None
    best_score: list[float] | None = None  # (selection metric, -validation loss)
    best_step: int = 0
    baseline: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False
    lost_queries: int = 0  # asked for steps that failed or were interrupted (replayed on resume)
    extra: dict[str, Any] = field(default_factory=dict)  # a tuner's own JSON-able bookkeeping

    def save(self, path: str | os.PathLike[str], meta: dict[str, Any]) -> None:
        """Write the state (and caller metadata such as the config) atomically."""
        arrays = {"z": self.z}
        if self.best_z is not None:
            arrays["best_z"] = self.best_z
        counters = {}
        for k, v in self.opt_state.items():
            if isinstance(v, np.ndarray):
                arrays[f"opt.{k}"] = v
            else:
                counters[k] = v
        write_npz_json(path, arrays, {
            **meta,
            "state": {
                "rng_state": self.rng_state, "step": self.step, "queries": self.queries,
                "best_score": self.best_score, "best_step": self.best_step,
                "baseline": self.baseline, "history": self.history, "done": self.done,
                "lost_queries": self.lost_queries, "extra": self.extra,
                "opt_counters": counters,
            },
        })

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> tuple[FitState, dict[str, Any]]:
        """Read a state written by :meth:`save`; returns ``(state, metadata)``."""
        arrays, meta = read_npz_json(path)
        if "state" not in meta or "z" not in arrays:
            raise ValueError(f"{os.fspath(path)} is not a checkpoint (no fit state inside)")
        # A tampered state must not run: NaN latents, negative counters, a budget overrun.
        check_fit_state(os.fspath(path), arrays, meta)
        s = meta.pop("state")
        opt_state: dict[str, Any] = dict(s["opt_counters"])
        opt_state.update({k[4:]: v for k, v in arrays.items() if k.startswith("opt.")})
        state = cls(z=arrays["z"], opt_state=opt_state, rng_state=s["rng_state"],
                    step=s["step"], queries=s["queries"], best_z=arrays.get("best_z"),
                    best_score=s["best_score"], best_step=s["best_step"],
                    baseline=s["baseline"], history=s["history"], done=s["done"],
                    lost_queries=s.get("lost_queries", 0), extra=s.get("extra", {}))
        return state, meta


def check_resumable(old: dict[str, Any], meta: dict[str, Any], path: str | os.PathLike[str],
                    data: str) -> None:
    """ValueError unless a checkpoint's metadata ``old`` was written by the same fit as
    ``meta`` describes: same data (``fingerprint``; ``data`` names it in the message) and
    same settings (``params``; the message lists the ones that differ)."""
    if old.get("fingerprint") != meta["fingerprint"]:
        raise ValueError(
            f"checkpoint {os.fspath(path)} was made on other {data} (fingerprint differs); "
            f"use the same {data}, or start a new run"
        )
    if old.get("params") != meta["params"]:
        recorded = old.get("params")
        before: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
        now: dict[str, Any] = meta["params"]
        diff = sorted(k for k in set(now) | set(before) if before.get(k) != now.get(k))
        shown = "; ".join(f"{k}: {_short(before.get(k))} in the checkpoint, "
                          f"{_short(now.get(k))} now" for k in diff)
        hint = ""
        if any(k in now and now[k] is None and before.get(k) is not None for k in diff):
            # a checkpoint of an older version names the values its defaults had; a setting
            # left at None here takes this version's default, which may differ
            hint = ("; None is this version's default: pass the checkpoint's values to "
                    "resume it")
        raise ValueError(
            f"checkpoint {os.fspath(path)} was made with other settings ({shown}){hint}"
        )


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def load_resumable(checkpoint: str | os.PathLike[str] | None, resume: bool,
                   meta: dict[str, Any], data: str) -> FitState | None:
    """The state to continue: the checkpoint's if ``resume`` and it exists (checked with
    :func:`check_resumable`), else None (start afresh)."""
    if checkpoint is None or not resume or not os.path.exists(checkpoint):
        return None
    state, old = FitState.load(checkpoint)
    check_resumable(old, meta, checkpoint, data)
    return state


def commit_queries(state: FitState, counter: QueryCounter) -> None:
    """Record in ``state`` the images ``counter`` has asked (``queries``) and paid
    (``extra["paid"]``), and the model's own count of images sent (a cache's, kept across
    processes: ``extra["sent_mark"]``) to reconcile with on resume."""
    state.queries = counter.queries
    _record_paid(state, counter)


def _record_paid(state: FitState, counter: QueryCounter) -> None:
    state.extra["paid"] = counter.paid
    mark = counter.mark()
    if mark is None:
        state.extra.pop("sent_mark", None)
    else:
        state.extra["sent_mark"] = mark


def paid_images(state: FitState) -> int:
    """Images sent to the model by the fit so far (failed steps' included)."""
    paid = state.extra.get("paid")
    return int(paid) if isinstance(paid, int) else state.queries + state.lost_queries


def resume_queries(state: FitState, counter: QueryCounter) -> None:
    """Set ``counter`` from a checkpoint: the images asked by its committed steps (the
    replayed steps are asked again, as in an uninterrupted fit) and those paid, plus, for
    an unfinished fit, what the model sent after the checkpoint was written (a killed
    process's last steps: paid, and answered into the cache)."""
    mark = None if state.done else state.extra.get("sent_mark")
    counter.resume(state.queries, paid_images(state), mark if isinstance(mark, int) else None)


@contextmanager
def keep_on_failure(state: FitState, counter: QueryCounter,
                    save: Callable[[], None]) -> Iterator[None]:
    """Around a fit loop: on any exception (a model error, Ctrl-C) book the images asked for
    the unfinished step as ``lost_queries`` and the images paid so far (a failed call's
    included: they may have been paid), write the checkpoint, and re-raise. A resumed fit
    replays that step exactly as an uninterrupted one would, within the budget left."""
    try:
        yield
    except BaseException:
        state.lost_queries += max(0, counter.queries - state.queries)
        _record_paid(state, counter)
        save()
        raise
