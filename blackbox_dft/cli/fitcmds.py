"""The commands that fit: ``fit`` (a new run), ``resume`` (continue one from its checkpoint)
and ``demo`` (a built-in task). Each builds its job (bad input fails before a run folder
exists), writes ``config.json`` and runs the job in the folder, turning what can stop a
fit (an interrupt, a model failure, a full disk, a damaged cache) into its exit code and a
line that says how to resume."""

from __future__ import annotations

import os
import sqlite3
import sys

from blackbox_dft.adapters import spec_secrets
from blackbox_dft.cli.demo import demo_job
from blackbox_dft.cli.exits import (
    DISK_ERRNOS,
    EXIT_INTERRUPTED,
    EXIT_MODEL,
    EXIT_OK,
    EXIT_USAGE,
    EXIT_WRITE,
    one_line,
)
from blackbox_dft.cli.fitting import execute
from blackbox_dft.cli.kinds import Job, kind_for
from blackbox_dft.cli.logs import NOTES
from blackbox_dft.cli.meter import money
from blackbox_dft.cli.options import DemoOptions, FitOptions
from blackbox_dft.cli.report import stopping_line
from blackbox_dft.cli.runs import RunFolder
from blackbox_dft.cli.saved import read_saved, use_model_url
from blackbox_dft.core.model import BudgetExhausted, ModelError
from blackbox_dft.core.state_checks import FileWriteError

__all__ = ["fit", "resume", "demo", "run_job"]


def fit(opts: FitOptions, *, force: bool = False, progress: bool = True) -> int:
    """``blackbox-dft fit``: a new run folder ``opts.run.out`` for the options' kind."""
    # From here on options, files and messages see the model URL with its literal secrets
    # masked (config.json keeps ${VAR} references; the model is built from the expansion).
    literal = spec_secrets.literal_secrets(opts.model.model)
    opts.model.spec = spec_secrets.register_spec(opts.model.model)
    kind = kind_for(opts)
    job = kind.build_job(opts)  # data and model first: bad input leaves no run folder behind
    if literal:
        NOTES.warning("the model URL holds literal secrets (%s); they are saved as ***, so "
                      "this run can only be resumed with 'resume --model-url URL': write them "
                      "as ${VAR} (environment variables) to make it resumable",
                      ", ".join(literal))
    with RunFolder.create(str(opts.run.out), force=force, command="fit") as run:
        run.write_config({"command": "fit", "kind": kind.name, "options": opts.flat(),
                          "params": job.params})
        return run_job(job, run, progress)


def resume(path: str, *, model_url: str | None = None, cache: bool | None = None,
           progress: bool = True) -> int:
    """``blackbox-dft resume RUN``: continue an interrupted fit (nothing to do when done)."""
    with RunFolder.open(path, lock="resume") as run:
        if os.path.exists(run.report_json):
            print(f"run {run.path} is complete; nothing to resume (see 'blackbox-dft info')")
            return EXIT_OK
        run.fit_progress()  # a damaged or altered checkpoint or ledger is refused before the
        run.read_spend()  # data and the model are loaded, and before anything is paid
        saved = read_saved(run)
        if cache is not None:  # --no-cache: the advice of a damaged cache holds here too
            saved.set_cache(cache)
        use_model_url(saved, model_url, run)
        job = saved.build_job()
        if job.params != saved.params:
            diff = sorted(k for k in job.params if job.params[k] != saved.params.get(k))
            NOTES.warning("settings rebuilt differ from the saved ones (%s); using the saved "
                          "ones", ", ".join(diff))
            job.params = saved.params
        return run_job(job, run, progress)


def demo(opts: DemoOptions, *, force: bool = False, progress: bool = True) -> int:
    """``blackbox-dft demo``: fit a built-in task in a new (auto-suffixed) run folder."""
    job = demo_job(opts)
    with RunFolder.create(opts.out, force=force, auto_suffix=True, command="demo") as run:
        run.write_config({"command": "demo", "options": opts.flat(), "params": job.params})
        NOTES.info("%s; run folder %s", job.title, run.path)
        return run_job(job, run, progress)


def run_job(job: Job, run: RunFolder, progress: bool) -> int:
    """Run ``job`` in ``run`` and print its summary; the exit code, with one line on stderr
    saying how to resume when the fit stopped."""
    again = f"'blackbox-dft resume {run.path}'"
    try:
        report = execute(job, run, progress=progress)
    except KeyboardInterrupt:
        print(f"interrupted; checkpoint written: continue with {again}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ModelError, BudgetExhausted) as exc:
        print(f"model failed: {one_line(exc)}; the run is resumable: {again}", file=sys.stderr)
        return EXIT_MODEL
    except OSError as exc:  # FileWriteError names the file; a bare one only says why
        if not isinstance(exc, FileWriteError) and exc.errno not in DISK_ERRNOS:
            raise
        what = str(exc) if isinstance(exc, FileWriteError) else \
            f"cannot write {exc.filename or f'a file in {run.path}'}: {exc.strerror}"
        print(f"blackbox-dft: {spec_secrets.scrub(what)}; the run is resumable once there is "
              f"space: {again}", file=sys.stderr)
        return EXIT_WRITE
    except sqlite3.Error as exc:  # the query cache: disk full, or a damaged file
        if "full" in str(exc):
            print(f"blackbox-dft: cannot write the query cache in {run.path}: {exc}; the run "
                  f"is resumable once there is space: {again}", file=sys.stderr)
            return EXIT_WRITE
        print(f"blackbox-dft: the query cache failed: {exc}; delete its file (its answers "
              f"will be paid again) or continue with {again} --no-cache", file=sys.stderr)
        return EXIT_USAGE
    print(f"run folder: {run.path}")
    for line in job.kind.summary(report):
        print(line)
    stopping = stopping_line(report)
    if stopping is not None:
        print(stopping)
    spend = report["spend"]
    if spend.get("cost") is not None:
        print(f"money spent: {money(spend['cost'])}")
    print(f"wrote {', '.join(job.kind.files(run))}")
    return EXIT_OK
