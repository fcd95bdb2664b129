"""Run folders: one folder per fit, holding everything needed to resume, evaluate and apply it.

=================== ===========================================================
file                contents
=================== ===========================================================
``config.json``     options of the run (no secrets), run-format version
``checkpoint.npz``  fit state (latent, optimizer, RNG, step, queries), atomic
``history.jsonl``   one JSON line per optimizer step
``delta.npz``       the learned perturbation (:meth:`DataFineTuner.save`; with
                    ``fit --pairs``: :meth:`VerificationTuner.save`)
``deltas.npz``      one perturbation per attribute (``fit --attribute-mode
                    per_attribute``: :meth:`MultiAttributeTuner.save`)
``report.json``     metrics, queries, cost; ``report.png`` the figure
``spend.json``      images asked, paid and answered by the cache; money
``cache.sqlite``    the query cache (kept by ``--force``: its answers stay valid)
``.lock``           the lock of the process working on the run (:mod:`.run_lock`)
=================== ===========================================================

Every file is written atomically (a temp file beside it, renamed over it; the temp file
is removed if the write fails) and checked when read back: a damaged or altered file is
refused in one line naming it and saying what to do. Temp files left by a killed process
(``.tmp-*``, ``*.part``) are removed when the next process takes the run's lock.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from blackbox_dft._version import __version__
from blackbox_dft.cli.run_lock import LOCK_NAME, RunBusy, RunLock
from blackbox_dft.core.state import FitState, paid_images
from blackbox_dft.core.state_checks import (
    TEMP_PREFIX,
    StateFileError,
    atomic_write_text,
    check_history,
)

__all__ = ["RUN_FORMAT", "RunError", "RunBusy", "RunFolder", "write_json", "read_json",
           "jsonable"]

RUN_FORMAT = 1
_OUTPUTS = ("config.json", "checkpoint.npz", "history.jsonl", "delta.npz", "deltas.npz",
            "report.json", "report.png", "spend.json")
_COUNTS = ("asked", "paid", "saved", "cache_sent")  # spend.json fields: ints >= 0


class RunError(ValueError):
    """A run folder that cannot be used as asked (exists, missing, incompatible, damaged)."""


def jsonable(obj: Any) -> Any:
    """``obj`` with numpy scalars/arrays as Python values and non-finite floats as None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):
        return jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str, obj: Any, *, lines: bool = False) -> None:
    """Write ``obj`` as JSON (or one JSON document per line) atomically; FileWriteError (an
    OSError naming ``path``) when the disk is full, leaving no temp file behind."""
    if lines:
        text = "".join(json.dumps(jsonable(o), sort_keys=True) + "\n" for o in obj)
    else:
        text = json.dumps(jsonable(obj), indent=2, sort_keys=True) + "\n"
    atomic_write_text(path, text)


def _damaged(path: str, reason: str, hint: str) -> RunError:
    return RunError(f"{os.path.basename(path)} in {os.path.dirname(path) or '.'} is damaged "
                    f"({reason}); {hint}")


def read_json(path: str, hint: str = "restore it from a backup") -> Any:
    """Read a JSON file; RunError naming it when it is missing or damaged (``hint``: what
    to do then)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise RunError(f"missing file {path}") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # JSONDecodeError too
        reason = "empty" if os.path.getsize(path) == 0 else \
            f"not valid JSON: {' '.join(str(exc).split())[:60]}"
        raise _damaged(path, reason, hint) from None
    except OSError as exc:
        raise RunError(f"cannot read {path}: {exc.strerror or exc}") from None


def _listing(path: str) -> list[str]:
    """The names in a folder that are not the lock or a temp file of an atomic write."""
    return [n for n in os.listdir(path) if n != LOCK_NAME and not _is_temp(n)]


def _is_temp(name: str) -> bool:
    return name.startswith(TEMP_PREFIX) or name.endswith(".part")


class RunFolder:
    """Paths and files of one run folder (see the module docstring).

    A run that a command works on is locked (:meth:`lock`; :meth:`create` locks the new
    run); use it as a context manager, or call :meth:`unlock`, to let it go.
    """

    def __init__(self, path: str) -> None:
        self.path = os.fspath(path)
        self._lock = RunLock(self.path)

    def file(self, name: str) -> str:
        """Path of ``name`` inside the folder."""
        return os.path.join(self.path, name)

    config = property(lambda self: self.file("config.json"))
    checkpoint = property(lambda self: self.file("checkpoint.npz"))
    history = property(lambda self: self.file("history.jsonl"))
    delta = property(lambda self: self.file("delta.npz"))
    deltas = property(lambda self: self.file("deltas.npz"))
    report_json = property(lambda self: self.file("report.json"))
    report_png = property(lambda self: self.file("report.png"))
    cache = property(lambda self: self.file("cache.sqlite"))
    spend = property(lambda self: self.file("spend.json"))

    # -- the lock ------------------------------------------------------------------------------
    def lock(self, command: str) -> RunFolder:
        """Take the run's lock for ``command`` (RunBusy naming the holder's pid if another
        process has it), then remove temp files a killed writer left behind."""
        self._lock.acquire(command)
        for name in os.listdir(self.path):
            if _is_temp(name):  # only now: before the lock, a live writer may own them
                try:
                    os.unlink(self.file(name))
                except OSError:
                    pass
        return self

    def unlock(self) -> None:
        """Let the lock go (the operating system also does at process exit)."""
        self._lock.release()

    @property
    def locked(self) -> bool:
        """Whether this object holds the run's lock."""
        return self._lock.held

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.unlock()

    # -- creating and opening ------------------------------------------------------------------
    @classmethod
    def create(cls, path: str, *, force: bool = False, auto_suffix: bool = False,
               command: str = "fit") -> RunFolder:
        """A locked folder for a new run: refuses to overwrite one unless ``force``; with
        ``auto_suffix`` picks ``path-2``, ``path-3``, ... instead (also past a busy one)."""
        base, k = os.fspath(path), 2
        path = base
        while True:
            if auto_suffix and not force and os.path.isdir(path) and _listing(path):
                path, k = f"{base}-{k}", k + 1
                continue
            try:
                return cls._create_one(path, force, command)
            except RunBusy:
                if not auto_suffix or force:
                    raise
                path, k = f"{base}-{k}", k + 1

    @classmethod
    def _create_one(cls, path: str, force: bool, command: str) -> RunFolder:
        if os.path.exists(path) and not os.path.isdir(path):
            raise RunError(f"{path} exists and is not a folder")
        run = cls(path)
        if os.path.isdir(path) and _listing(path) and not force:
            raise run._occupied()
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise RunError(f"cannot create run folder {path}: {exc.strerror or exc}") from None
        run.lock(command)
        try:  # checked again under the lock: another process may have just written a run
            if _listing(path) and not force:
                raise run._occupied()
            for name in _OUTPUTS:
                if os.path.exists(run.file(name)):
                    os.unlink(run.file(name))
        except BaseException:
            run.unlock()
            raise
        return run

    def _occupied(self) -> RunError:
        what = "a run" if os.path.exists(self.config) else "files"
        return RunError(f"run folder {self.path} already holds {what}; continue it with "
                        f"'blackbox-dft resume {self.path}', or pass --force to start over")

    @classmethod
    def open(cls, path: str, *, lock: str | None = None) -> RunFolder:
        """An existing run folder, checked to be one this version can read; locked for the
        command ``lock`` if given (RunBusy if another process works on it)."""
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise RunError(f"run folder not found: {path}")
        run = cls(path)
        if not os.path.exists(run.config):
            raise RunError(f"{path} is not a run folder (no config.json)")
        if lock:
            run.lock(lock)
        try:
            cfg = run.read_config()
            fmt = cfg.get("run_format")
            if fmt != RUN_FORMAT:
                raise RunError(f"run folder {path} has run format {fmt!r} (written by "
                               f"blackbox_dft {cfg.get('version', '?')}); this version "
                               f"{__version__} reads run format {RUN_FORMAT}: re-run the fit "
                               "with this version")
        except BaseException:
            run.unlock()
            raise
        return run

    # -- files ---------------------------------------------------------------------------------
    def read_config(self) -> dict[str, Any]:
        """The run's ``config.json`` as a dict (RunError if it is damaged)."""
        cfg = read_json(self.config, "restore it from a backup: without it the run cannot be "
                        "resumed, evaluated or applied")
        if not isinstance(cfg, dict):
            raise _damaged(self.config, "not a JSON object", "restore it from a backup")
        for key in ("options", "params"):
            if key in cfg and not isinstance(cfg[key], dict):
                raise RunError(f"{self.config}: {key} is not an object; the file was altered "
                               "or damaged")
        if cfg.get("command") not in ("fit", "demo"):
            raise RunError(f"{self.config}: command is {cfg.get('command')!r}, must be 'fit' or "
                           "'demo'; the file was altered or damaged")
        return cfg

    def write_config(self, config: dict[str, Any]) -> None:
        """Write ``config.json`` (stamped with the run format and package version)."""
        write_json(self.config, {"run_format": RUN_FORMAT, "version": __version__, **config})

    def write_history(self, history: list[dict[str, Any]]) -> None:
        """Write ``history.jsonl``, one step per line."""
        write_json(self.history, history, lines=True)

    def read_history(self) -> list[dict[str, Any]]:
        """The steps in ``history.jsonl`` (empty if absent); RunError naming the line of a
        damaged file."""
        if not os.path.exists(self.history):
            return []
        out = []
        with open(self.history, encoding="utf-8", errors="replace") as fh:
            for i, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    out.append(json.loads(line))
                except ValueError:
                    raise _damaged(self.history, f"line {i} is not valid JSON",
                                   "delete it: the checkpoint holds the same history") from None
        try:
            return check_history(self.history, out)
        except StateFileError as exc:
            raise RunError(str(exc)) from None

    def read_spend(self) -> dict[str, Any]:
        """The money ledger ``spend.json`` (``{}`` before the first paid call); RunError when
        it is damaged, never a silent reset of the money spent to 0."""
        if not os.path.exists(self.spend):
            return {}
        hint = ("the money already spent would be counted from 0: restore it from a backup, "
                "or delete it to count from 0 again (the query cache keeps every paid answer)")
        data = read_json(self.spend, hint)
        if not isinstance(data, dict):
            raise _damaged(self.spend, "not a JSON object", hint)
        for key in _COUNTS:
            v = data.get(key, 0)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise RunError(f"{self.spend}: {key} is {v!r}, must be a whole number >= 0; "
                               f"the file was altered or damaged; {hint}")
        for key in ("cost", "cost_per_1000"):
            v = data.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                                  or not 0 <= v < math.inf):
                raise RunError(f"{self.spend}: {key} is {v!r}, must be a finite number >= 0; "
                               f"the file was altered or damaged; {hint}")
        return data

    def read_report(self) -> dict[str, Any] | None:
        """``report.json`` (None before the fit finished); RunError if it is damaged."""
        if not os.path.exists(self.report_json):
            return None
        hint = "delete it and run 'blackbox-dft resume' on the run to write it again"
        report = read_json(self.report_json, hint)
        if not isinstance(report, dict) or not isinstance(report.get("fit"), dict) or not \
                isinstance(report.get("spend"), dict) or not isinstance(
                    report.get("test") or {}, dict):
            raise _damaged(self.report_json, "not a report: fit, spend or test missing", hint)
        return report

    def fit_progress(self) -> tuple[str, int, FitState | None]:
        """``(status, fit queries, state)`` from the checkpoint: ``"not started"``,
        ``"in progress (resumable): step N"`` or ``"fit done"``."""
        if not os.path.exists(self.checkpoint):
            return "not started", 0, None
        state, _ = FitState.load(self.checkpoint)
        status = "fit done" if state.done else f"in progress (resumable): step {state.step}"
        return status, paid_images(state), state  # failed steps' images included

    def __repr__(self) -> str:
        return f"RunFolder({self.path!r})"
