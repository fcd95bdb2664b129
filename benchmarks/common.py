"""What every benchmark shares: its command line, machine facts, the tasks, a worker pool,
and writing its results files whole, stamped with the command and the machine.

A benchmark is a script ``benchmarks/NAME.py`` whose ``main(argv)`` takes ``--quick`` (a
smoke run of seconds) and ``--out DIR``; ``run_all.py`` runs every such script. A full
run writes ``benchmarks/results/NAME.json`` and ``NAME.md`` (each whole: nothing is
appended or merged); a quick run writes to a fresh temporary folder and refuses the
committed results folder.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import multiprocessing as mp
import os
import platform
import shlex
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
# The stand-in tasks' shifts: under them the stand-in models lose accuracy on held-out data.
TASKS = {"face": "blur:sigma=1", "smiling": "blur:sigma=0.7"}
# Optional packages whose versions go into the machine facts (None when not installed).
_PACKAGES = ("scipy", "nevergrad", "cma", "matplotlib", "ai-edge-litert", "scikit-image",
             "requests")


# -- command line --------------------------------------------------------------------------
def parser(doc: str | None, quick_help: str) -> argparse.ArgumentParser:
    """An argument parser with the flags every benchmark takes: ``--quick`` and ``--out``.

    doc: the benchmark's module docstring; its first line becomes the description.
    """
    ap = argparse.ArgumentParser(description=(doc or "").strip().split("\n")[0] or None)
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--out", default=None, help="folder for the results files (default: "
                    "benchmarks/results, or a new temporary folder with --quick)")
    return ap


def out_dir(ap: argparse.ArgumentParser, args: argparse.Namespace, name: str) -> str:
    """The folder to write to: ``--out``, else the results folder (a full run) or a new
    temporary folder (``--quick``). A quick run never writes over the committed results."""
    if args.out is None:
        return tempfile.mkdtemp(prefix=f"{name}-quick-") if args.quick else RESULTS
    if args.quick and os.path.realpath(args.out) == os.path.realpath(RESULTS):
        ap.error(f"--quick writes smoke-test figures; --out {args.out} is the committed "
                 f"results folder: give another folder or leave --out out")
    return str(args.out)


def command_line(script: str, argv: list[str] | None) -> str:
    """The command that runs ``script`` with ``argv`` (``sys.argv[1:]`` when None), as
    typed from the repository root: ``python benchmarks/NAME.py --flag value``."""
    args = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["python", _rel(script), *args])


def _rel(path: str) -> str:
    path = os.path.abspath(path)
    return os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path


# -- machine facts -------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_facts() -> dict[str, Any]:
    """CPU model and cores, OS, Python, numpy, OpenCV, blackbox_dft and optional packages'
    versions, and the date (UTC): what a reader needs to compare figures across runs."""
    import cv2

    import blackbox_dft

    facts: dict[str, Any] = {
        "cpu": cpu_model(), "cores": os.cpu_count(), "machine": platform.machine(),
        "platform": platform.platform(), "python": platform.python_version(),
        "numpy": np.__version__, "cv2": cv2.__version__,
        "blackbox_dft": blackbox_dft.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    for name in _PACKAGES:
        try:
            facts[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            facts[name] = None
    return facts


def stamp_line(doc: dict[str, Any]) -> str:
    """One markdown line saying which command made the results, in what time, where."""
    m = doc["machine"]
    return (f"Produced by `{doc['command']}` in {doc['seconds']:.0f} s on {m['cores']} cores "
            f"of {m['cpu']}, Python {m['python']}, numpy {m['numpy']}, OpenCV {m['cv2']}, "
            f"blackbox_dft {m['blackbox_dft']}, {m['date']}"
            + (" (quick smoke run: not figures to quote)" if doc["quick"] else "") + ".")


# -- writing results -----------------------------------------------------------------------
def write_results(out: str, name: str, payload: dict[str, Any], markdown: str, *,
                  command: str, quick: bool, seconds: float) -> list[str]:
    """Write ``out/name.json`` and ``out/name.md`` whole (replacing any earlier ones).

    The JSON is ``payload`` under a header: benchmark, command, quick, seconds (wall
    time of the run) and machine facts; the markdown starts with :func:`stamp_line`.
    Prints the markdown and the paths; returns the paths.
    """
    doc = {"benchmark": name, "command": command, "quick": bool(quick),
           "seconds": float(seconds), "machine": machine_facts(), **payload}
    os.makedirs(out, exist_ok=True)
    paths = [os.path.join(out, f"{name}.json"), os.path.join(out, f"{name}.md")]
    write_text(paths[0], json.dumps(doc, indent=1, allow_nan=True) + "\n")
    text = stamp_line(doc) + "\n\n" + markdown.rstrip("\n") + "\n"
    write_text(paths[1], text)
    print(text + "\nwrote " + ", ".join(paths), flush=True)
    return paths


def write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: a reader (or an
    interrupted run) never sees half a file."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


# -- tasks ---------------------------------------------------------------------------------
class SyntheticTask:
    """The synthetic black box of ``blackbox_dft.testing`` shaped like a stand-in task
    (``model``, ``train``/``val``/``test`` splits, ``test_clean``): 16x16 images, 4 classes,
    logits; no model files, so quick runs need nothing but the package."""

    name = "synthetic"
    shift = None
    scores = "logits"

    def __init__(self, seed: int = 0) -> None:
        from blackbox_dft.testing import make_problem

        p = make_problem(seed, n_train=100, n_val=40, n_test=60)
        self.model, self.train, self.val, self.test = p.model, p.train, p.val, p.test
        self.test_clean = p.test_clean


_TASK_CACHE: dict[str, Any] = {}


def load_task(name: str) -> Any:
    """The task called ``name`` (``face``, ``smiling`` under their :data:`TASKS` shift, or
    ``synthetic``), built once per process."""
    if name not in _TASK_CACHE:
        if name == "synthetic":
            _TASK_CACHE[name] = SyntheticTask()
        elif name in TASKS:
            from blackbox_dft.adapters.standins.tasks import load_task as load_standin_task

            _TASK_CACHE[name] = load_standin_task(name, shift=TASKS[name])
        else:
            raise ValueError(f"unknown task {name!r}; choose from synthetic, "
                             f"{', '.join(TASKS)}")
    return _TASK_CACHE[name]


def task_kind(task: Any) -> str:
    """``"binary"`` for two-class tasks, else ``"multiclass"``."""
    return "binary" if int(task.train[1].max()) <= 1 else "multiclass"


# -- workers -------------------------------------------------------------------------------
def one_thread() -> None:
    """Keep OpenCV to one thread: the pool's workers are the parallelism."""
    import cv2

    cv2.setNumThreads(1)


def parallel_map(fn: Callable[[Any], Any], jobs: Iterable[Any], workers: int,
                 ordered: bool = True) -> Iterator[Any]:
    """``fn(job)`` for every job on ``workers`` spawned processes (in this one when 1),
    in job order, or as they finish when not ``ordered``. ``fn`` must be importable."""
    jobs = list(jobs)
    if workers <= 1:
        one_thread()
        yield from map(fn, jobs)
        return
    with mp.get_context("spawn").Pool(workers, initializer=one_thread) as pool:
        yield from (pool.imap if ordered else pool.imap_unordered)(fn, jobs)
        # let the workers exit on their own (leaving the block terminates them, which
        # leaves their semaphores to the resource tracker's warnings)
        pool.close()
        pool.join()
