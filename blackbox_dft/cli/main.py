"""``blackbox-dft``: the command line (composition root: argument parsing and run folders).

Subcommands: ``fit``, ``resume``, ``evaluate``, ``apply``, ``info``, ``demo``, ``serve``.

==== ======================================================================================
code meaning
==== ======================================================================================
0    done
1    an internal error (a bug; ``BLACKBOX_DFT_DEBUG=1`` shows the traceback)
2    bad arguments, data, config or run files (damaged or altered files included)
3    the model or API failed after its retries; the run is resumable
4    a missing optional dependency (the message names the ``pip install``)
5    a run file could not be written (disk full, quota, read-only); the run is resumable
     once there is space
6    the run folder is in use by another process (the message names its pid)
130  interrupted (Ctrl-C or SIGTERM); the checkpoint is written, the run is resumable
==== ======================================================================================

Every error is one line on stderr, and no message shows a secret (:mod:`.cli_secrets`).
A command that works on a run folder (fit, resume, demo, evaluate with the run's cache)
holds the run's lock (:mod:`.run_lock`) until it ends.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sqlite3
import sys
import traceback
from typing import Any, NoReturn

from adapters import spec_secrets as cli_secrets
from adapters.specs import MissingDependency
from blackbox_dft._version import __version__
from blackbox_dft.cli.run_lock import RunBusy
from blackbox_dft.core.model import BudgetExhausted, ModelError
from blackbox_dft.core.state_checks import FileWriteError

__all__ = ["main", "build_parser", "EXIT_CODES"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_MODEL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_DEPENDENCY, EXIT_WRITE, EXIT_BUSY = 4, 5, 6
# A write that fails for want of room or permission: the run is fine, the disk is not.
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EIO}
EXIT_CODES = {EXIT_OK: "done", EXIT_ERROR: "internal error",
              EXIT_USAGE: "bad arguments, data, config or run files",
              EXIT_MODEL: "model or API failure (resumable)",
              EXIT_DEPENDENCY: "missing optional dependency",
              EXIT_WRITE: "a run file could not be written (resumable once there is space)",
              EXIT_BUSY: "run folder in use by another process",
              EXIT_INTERRUPTED: "interrupted (resumable)"}


class UsageError(Exception):
    """Bad command-line arguments (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit code 2, never a usage dump."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _demo_parser(sub: Any) -> None:
    from blackbox_dft.cli.config import flag_type
    from blackbox_dft.cli.options import DEMO_OPTIONS as D

    p = sub.add_parser("demo", help="fit the built-in face (or smiling) task end to end",
                       description="Run the built-in task: BlazeFace on blurred LFW face crops "
                       "by default; writes a run folder with delta.npz, report.json, report.png.")
    p.add_argument("--task", default="face", choices=("face", "smiling"))
    p.add_argument("--shift", default=None,
                   help="domain shift spec (default: Gaussian blur on the crops, sigma 1 px for "
                   "face, 0.7 px for smiling: the benchmarks' settings)")
    p.add_argument("--epsilon", type=flag_type(D["epsilon"]), default=None,
                   help="L-inf budget, grey levels (8)")
    p.add_argument("--budget", default="10000", help="query budget (images, or $ with a price)")
    p.add_argument("--cost-per-1000", dest="cost_per_1000", type=flag_type(D["cost_per_1000"]),
                   default=None)
    p.add_argument("--seed", type=flag_type(D["seed"]), default=0)
    p.add_argument("--out", default=os.path.join("runs", "demo"),
                   help="run folder (auto-suffixed -2, -3, ... when it exists)")
    p.add_argument("--force", action="store_true", help="reuse --out, replacing its run files")
    p.add_argument("--cache", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--checkpoint-every", dest="checkpoint_every",
                   type=flag_type(D["checkpoint_every"]), default=10)
    p.add_argument("--no-progress", dest="progress", action="store_false")


_MODEL_URL_HELP = ("the model URL again, for a run fitted with literal secrets in its URL "
                   "(saved as ***, so not resumable on their own): it must equal the saved "
                   "URL once secrets are masked; write secrets as ${VAR} (environment "
                   "variables), e.g. https://host/api?code=${AZ_CODE}, so that no URL has to "
                   "be given again")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand except ``serve`` (which delegates its arguments)."""
    from blackbox_dft.cli.options import add_fit_options

    parser = _Parser(prog="blackbox-dft", description="Data Fine-tuning of black-box image "
                     "classifiers: learn one small additive perturbation from queries only.")
    parser.add_argument("--version", action="version", version=f"blackbox-dft {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("fit", help="learn a perturbation; writes a run folder",
                       description="Learn a perturbation. Options may come from --config "
                       "(JSON or TOML, keys = option names); flags override it. Modes: "
                       "classification (--data); many attributes (--data with attribute "
                       "columns, --attribute-mode shared|per_attribute); face verification "
                       "(--pairs pairs.txt --image-root DIR with an embedding model, e.g. "
                       "--model standin:hog-embedding). A model URL may take secrets from "
                       "the environment as ${VAR} (e.g. ?code=${AZ_CODE}); literal query "
                       "values and user:password@ are saved as *** and the run is then "
                       "resumable only with resume --model-url.")
    p.add_argument("--config", default=None, help="JSON or TOML file of options")
    add_fit_options(p)
    p.add_argument("--force", action="store_true", help="replace the run files in --out")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p = sub.add_parser("resume", help="continue an interrupted fit from its checkpoint")
    p.add_argument("run", help="run folder")
    p.add_argument("--model-url", dest="model_url", default=None, help=_MODEL_URL_HELP)
    p.add_argument("--cache", action=argparse.BooleanOptionalAction, default=None,
                   help="the on-disk query cache (default: as the fit was run)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p = sub.add_parser("evaluate", help="accuracy before/after, PSNR, SSIM on a dataset",
                       description="Accuracy before/after a run's perturbation on a dataset; "
                       "for an --attribute-mode per_attribute run, per attribute. Face "
                       "verification runs (fit --pairs) are not handled: see their report.json.")
    p.add_argument("--run", required=True, help="run folder")
    p.add_argument("--data", required=True, help="dataset (same formats as fit)")
    p.add_argument("--split", default="all", choices=("all", "train", "val", "test"))
    p.add_argument("--shift", default=None, help="shift to apply (default: the run's; 'none')")
    p.add_argument("--size", default=None, help="image size N or HxW (default: the run's)")
    p.add_argument("--json", dest="json_out", default=None, help="also write the metrics here")
    p.add_argument("--force", action="store_true", help="overwrite --json")
    p.add_argument("--cache", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--model-url", dest="model_url", default=None, help=_MODEL_URL_HELP)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p = sub.add_parser("apply", help="write perturbed, lossless copies of a folder of images",
                       description="Write perturbed, lossless copies of a folder of images "
                       "(classification and face-verification runs; not per_attribute runs, "
                       "which hold one perturbation per attribute).")
    p.add_argument("--run", required=True, help="run folder")
    p.add_argument("--input", required=True, help="folder of images (searched recursively)")
    p.add_argument("--output", required=True, help="folder for the perturbed copies")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images")
    p.add_argument("--max-image-pixels", dest="max_image_pixels", type=int, default=None,
                   help="refuse images whose header claims more pixels (default 50000000)")
    p = sub.add_parser("info", help="what a run folder holds: progress, results, money")
    p.add_argument("run", help="run folder")
    _demo_parser(sub)
    sub.add_parser("serve", help="serve a stand-in model over HTTP (see serve --help)",
                   add_help=False)
    return parser


def _cmd_fit(args: argparse.Namespace) -> int:
    from blackbox_dft.cli.options import read_config_file, resolve_options
    from blackbox_dft.cli.run import execute, fit_job, print_summary
    from blackbox_dft.cli.runs import RunFolder

    flags = {k: v for k, v in vars(args).items()
             if k not in ("command", "config", "force", "progress")}
    config = read_config_file(args.config) if args.config else {}
    opts = resolve_options(config, flags)
    # From here on options, files and messages see the model URL with its literal secrets
    # masked (config.json keeps ${VAR} references; the model is built from the expansion).
    literal = cli_secrets.literal_secrets(opts["model"])
    opts["model"] = cli_secrets.register_spec(opts["model"])
    job = fit_job(opts)  # data and model first: bad input leaves no run folder behind
    if literal:
        print(f"warning: the model URL holds literal secrets ({', '.join(literal)}); they are "
              "saved as ***, so this run can only be resumed with 'resume --model-url URL': "
              "write them as ${VAR} (environment variables) to make it resumable",
              file=sys.stderr)
    with RunFolder.create(opts["out"], force=args.force, command="fit") as run:
        run.write_config({"command": "fit", "kind": job.kind, "options": opts,
                          "params": job.params})
        return _execute(job, run, args.progress, execute, print_summary)


def _execute(job: Any, run: Any, progress: bool, execute: Any, print_summary: Any) -> int:
    resume = f"'blackbox-dft resume {run.path}'"
    try:
        report = execute(job, run, progress=progress)
    except KeyboardInterrupt:
        print(f"interrupted; checkpoint written: continue with {resume}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ModelError, BudgetExhausted) as exc:
        print(f"model failed: {_one_line(exc)}; the run is resumable: {resume}",
              file=sys.stderr)
        return EXIT_MODEL
    except OSError as exc:  # FileWriteError names the file; a bare one only says why
        if not isinstance(exc, FileWriteError) and exc.errno not in _DISK_ERRNOS:
            raise
        what = str(exc) if isinstance(exc, FileWriteError) else \
            f"cannot write {exc.filename or f'a file in {run.path}'}: {exc.strerror}"
        print(f"blackbox-dft: {cli_secrets.scrub(what)}; the run is resumable once there is "
              f"space: {resume}", file=sys.stderr)
        return EXIT_WRITE
    except sqlite3.Error as exc:  # the query cache: disk full, or a damaged file
        if "full" in str(exc):
            print(f"blackbox-dft: cannot write the query cache in {run.path}: {exc}; the run "
                  f"is resumable once there is space: {resume}", file=sys.stderr)
            return EXIT_WRITE
        print(f"blackbox-dft: the query cache failed: {exc}; delete its file (its answers "
              f"will be paid again) or continue with {resume} --no-cache", file=sys.stderr)
        return EXIT_USAGE
    print_summary(report, run)
    return EXIT_OK


def _cmd_resume(args: argparse.Namespace) -> int:
    from blackbox_dft.cli.commands import run_options, use_model_url
    from blackbox_dft.cli.options import check_saved_options
    from blackbox_dft.cli.run import demo_job, execute, fit_job, print_summary
    from blackbox_dft.cli.runs import RunError, RunFolder

    with RunFolder.open(args.run, lock="resume") as run:
        cfg = run.read_config()
        if os.path.exists(run.report_json):
            print(f"run {run.path} is complete; nothing to resume (see 'blackbox-dft info')")
            return EXIT_OK
        run.fit_progress()  # a damaged or altered checkpoint or ledger is refused before the
        run.read_spend()  # data and the model are loaded, and before anything is paid
        demo = cfg.get("command") == "demo"
        opts = check_saved_options(cfg, run.config) if demo else run_options(cfg, run.config)
        if args.cache is not None:  # --no-cache: the advice of a damaged cache holds here too
            opts["cache"] = args.cache
        if not demo:
            use_model_url(opts, args.model_url, run)
        elif args.model_url is not None:
            raise RunError(f"run {run.path} is a demo run: it has no model URL")
        job = demo_job(opts) if demo else fit_job(opts)
        if job.params != cfg.get("params"):
            diff = sorted(k for k in job.params
                          if job.params[k] != cfg.get("params", {}).get(k))
            print(f"warning: settings rebuilt differ from the saved ones ({', '.join(diff)}); "
                  "using the saved ones", file=sys.stderr)
            job.params = cfg["params"]
        return _execute(job, run, args.progress, execute, print_summary)


def _cmd_demo(args: argparse.Namespace) -> int:
    from blackbox_dft.cli.run import demo_job, execute, print_summary
    from blackbox_dft.cli.runs import RunFolder

    opts = {k: v for k, v in vars(args).items() if k not in ("command", "force", "progress")}
    job = demo_job(opts)
    with RunFolder.create(args.out, force=args.force, auto_suffix=True, command="demo") as run:
        run.write_config({"command": "demo", "options": opts, "params": job.params})
        print(f"{job.title}; run folder {run.path}", file=sys.stderr)
        return _execute(job, run, args.progress, execute, print_summary)


def _dispatch(args: argparse.Namespace) -> int:
    from blackbox_dft.cli import commands as cli_tools

    if args.command == "fit":
        return _cmd_fit(args)
    if args.command == "resume":
        return _cmd_resume(args)
    if args.command == "demo":
        return _cmd_demo(args)
    if args.command == "evaluate":
        cli_tools.evaluate_run(args.run, args.data, split=args.split, shift=args.shift,
                               size=args.size, json_out=args.json_out, force=args.force,
                               cache=args.cache, progress=args.progress,
                               model_url=args.model_url)
    elif args.command == "apply":
        cli_tools.apply_run(args.run, args.input, args.output, force=args.force,
                            skip_bad=args.skip_bad, max_pixels=args.max_image_pixels)
    elif args.command == "info":
        cli_tools.info_run(args.run)
    return EXIT_OK


def _one_line(exc: BaseException) -> str:
    """The exception as one line, without any secret the command has seen."""
    return cli_secrets.scrub(" ".join(str(exc).split()) or type(exc).__name__)


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # the fit loop writes its checkpoint, as on Ctrl-C


def _serve(argv: list[str]) -> int:
    """``blackbox-dft serve``: one-line errors (exit 2, 4) instead of usage dumps."""
    from adapters.serving.server import serve_main  # lazy: only serve needs the server

    parser = _Parser(prog="blackbox-dft serve", description="Serve a stand-in model on "
                     "127.0.0.1 in a preset's wire format, with optional fault injection "
                     "(for tests and benchmarks).")
    return int(serve_main(argv, parser=parser))


def _traceback(debug: bool) -> None:
    if debug:  # scrubbed too: a traceback is a log
        print(cli_secrets.scrub(traceback.format_exc()), end="", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit code
    (see the module docstring's table)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = bool(os.environ.get("BLACKBOX_DFT_DEBUG"))
    cli_secrets.reset()  # secrets are known per command (and per process)
    try:
        if hasattr(signal, "SIGTERM"):
            signal.signal(signal.SIGTERM, _sigterm)
        if argv[:1] == ["serve"]:
            return _serve(argv[1:])
        args = build_parser().parse_args(argv)
        return _dispatch(args)
    except UsageError as exc:
        print(_one_line(exc), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ModelError, BudgetExhausted) as exc:
        _traceback(debug)
        print(f"blackbox-dft: model failed: {_one_line(exc)}", file=sys.stderr)
        return EXIT_MODEL
    except RunBusy as exc:
        print(f"blackbox-dft: {_one_line(exc)}", file=sys.stderr)
        return EXIT_BUSY
    except (MissingDependency, ModuleNotFoundError) as exc:
        _traceback(debug)
        print(f"blackbox-dft: missing dependency: {_one_line(exc)}", file=sys.stderr)
        return EXIT_DEPENDENCY
    except FileWriteError as exc:  # before any run folder holds a checkpoint
        _traceback(debug)
        print(f"blackbox-dft: {_one_line(exc)}; free some space and run the command again",
              file=sys.stderr)
        return EXIT_WRITE
    except (ValueError, TypeError, OSError, ImportError) as exc:
        _traceback(debug)
        print(f"blackbox-dft: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # a bug: still one line, with the way to see more
        _traceback(debug)
        print(f"blackbox-dft: internal error ({type(exc).__name__}): {_one_line(exc)}; "
              "set BLACKBOX_DFT_DEBUG=1 for the traceback", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
