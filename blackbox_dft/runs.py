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
=================== ===========================================================
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from . import __version__
from .state import FitState

__all__ = ["RUN_FORMAT", "RunError", "RunFolder", "write_json", "read_json", "jsonable"]

RUN_FORMAT = 1
_OUTPUTS = ("config.json", "checkpoint.npz", "history.jsonl", "delta.npz", "deltas.npz",
            "report.json", "report.png", "spend.json")


class RunError(ValueError):
    """A run folder that cannot be used as asked (exists, missing, incompatible)."""


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
    """Write ``obj`` as JSON (or one JSON document per line) atomically."""
    if lines:
        text = "".join(json.dumps(jsonable(o), sort_keys=True) + "\n" for o in obj)
    else:
        text = json.dumps(jsonable(obj), indent=2, sort_keys=True) + "\n"
    tmp = f"{path}.{os.getpid()}.part"  # beside the target, so the rename is atomic
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_json(path: str) -> Any:
    """Read a JSON file; RunError naming it when it is missing or malformed."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise RunError(f"missing file {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{path} is not valid JSON: {exc}") from None


class RunFolder:
    """Paths and files of one run folder (see the module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = os.fspath(path)

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

    @classmethod
    def create(cls, path: str, *, force: bool = False, auto_suffix: bool = False) -> RunFolder:
        """A folder for a new run: refuses to overwrite one unless ``force``; with
        ``auto_suffix`` picks ``path-2``, ``path-3``, ... instead."""
        path = os.fspath(path)
        if auto_suffix and not force:
            base, k = path, 2
            while os.path.exists(path) and os.listdir(path):
                path, k = f"{base}-{k}", k + 1
        if os.path.exists(path) and not os.path.isdir(path):
            raise RunError(f"{path} exists and is not a folder")
        run = cls(path)
        if os.path.isdir(path) and os.listdir(path):
            if not force:
                what = "a run" if os.path.exists(run.config) else "files"
                raise RunError(f"run folder {path} already holds {what}; continue it with "
                               f"'blackbox-dft resume {path}', or pass --force to start over")
            for name in _OUTPUTS:
                if os.path.exists(run.file(name)):
                    os.unlink(run.file(name))
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise RunError(f"cannot create run folder {path}: {exc.strerror or exc}") from None
        return run

    @classmethod
    def open(cls, path: str) -> RunFolder:
        """An existing run folder, checked to be one this version can read."""
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise RunError(f"run folder not found: {path}")
        run = cls(path)
        if not os.path.exists(run.config):
            raise RunError(f"{path} is not a run folder (no config.json)")
        cfg = run.read_config()
        fmt = cfg.get("run_format")
        if fmt != RUN_FORMAT:
            raise RunError(f"run folder {path} has run format {fmt!r} (written by blackbox_dft "
                           f"{cfg.get('version', '?')}); this version {__version__} reads run "
                           f"format {RUN_FORMAT}: re-run the fit with this version")
        return run

    def read_config(self) -> dict[str, Any]:
        """The run's ``config.json`` as a dict."""
        cfg = read_json(self.config)
        if not isinstance(cfg, dict):
            raise RunError(f"{self.config} does not hold a JSON object")
        return cfg

    def write_config(self, config: dict[str, Any]) -> None:
        """Write ``config.json`` (stamped with the run format and package version)."""
        write_json(self.config, {"run_format": RUN_FORMAT, "version": __version__, **config})

    def write_history(self, history: list[dict[str, Any]]) -> None:
        """Write ``history.jsonl``, one step per line."""
        write_json(self.history, history, lines=True)

    def read_history(self) -> list[dict[str, Any]]:
        """The steps in ``history.jsonl`` (empty if absent)."""
        if not os.path.exists(self.history):
            return []
        with open(self.history, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    def fit_progress(self) -> tuple[str, int, FitState | None]:
        """``(status, fit queries, state)`` from the checkpoint: ``"not started"``,
        ``"in progress (resumable): step N"`` or ``"fit done"``."""
        if not os.path.exists(self.checkpoint):
            return "not started", 0, None
        state, _ = FitState.load(self.checkpoint)
        status = "fit done" if state.done else f"in progress (resumable): step {state.step}"
        return status, state.queries + state.lost_queries, state

    def __repr__(self) -> str:
        return f"RunFolder({self.path!r})"
