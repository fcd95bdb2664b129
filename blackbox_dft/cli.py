"""``blackbox-dft``: the command line (composition root: argument parsing and run folders).

Subcommands: ``fit``, ``resume``, ``evaluate``, ``apply``, ``info``, ``demo``, ``serve``.
Exit codes: 0 done, 2 bad arguments or data, 3 model/API failure after retries (the run
is resumable), 130 interrupted (checkpoint written), 1 an internal error. Every error is
one line on stderr (set ``BLACKBOX_DFT_DEBUG=1`` for the traceback).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from typing import Any, NoReturn

from . import __version__
from .model import BudgetExhausted, ModelError

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_MODEL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class UsageError(Exception):
    """Bad command-line arguments (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit code 2, never a usage dump."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _demo_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="fit the built-in face (or smiling) task end to end",
                       description="Run the built-in task: BlazeFace on blurred LFW face crops "
                       "by default; writes a run folder with delta.npz, report.json, report.png.")
    p.add_argument("--task", default="face", choices=("face", "smiling"))
    p.add_argument("--shift", default=None,
                   help="domain shift spec (default: Gaussian blur on the crops, sigma 1 px for "
                   "face, 0.7 px for smiling: the benchmarks' settings)")
    p.add_argument("--epsilon", type=float, default=None, help="L-inf budget, grey levels (8)")
    p.add_argument("--budget", default="10000", help="query budget (images, or $ with a price)")
    p.add_argument("--cost-per-1000", dest="cost_per_1000", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join("runs", "demo"),
                   help="run folder (auto-suffixed -2, -3, ... when it exists)")
    p.add_argument("--force", action="store_true", help="reuse --out, replacing its run files")
    p.add_argument("--cache", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--checkpoint-every", dest="checkpoint_every", type=int, default=10)
    p.add_argument("--no-progress", dest="progress", action="store_false")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand except ``serve`` (which delegates its arguments)."""
    from .cli_options import add_fit_options

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
                       "--model standin:hog-embedding).")
    p.add_argument("--config", default=None, help="JSON or TOML file of options")
    add_fit_options(p)
    p.add_argument("--force", action="store_true", help="replace the run files in --out")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p = sub.add_parser("resume", help="continue an interrupted fit from its checkpoint")
    p.add_argument("run", help="run folder")
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
    from .cli_options import read_config_file, resolve_options
    from .cli_run import execute, fit_job, print_summary
    from .runs import RunFolder

    flags = {k: v for k, v in vars(args).items()
             if k not in ("command", "config", "force", "progress")}
    config = read_config_file(args.config) if args.config else {}
    opts = resolve_options(config, flags)
    job = fit_job(opts)  # data and model first: bad input leaves no run folder behind
    run = RunFolder.create(opts["out"], force=args.force)
    run.write_config({"command": "fit", "kind": job.kind, "options": opts,
                      "params": job.params})
    return _execute(job, run, args.progress, execute, print_summary)


def _execute(job: Any, run: Any, progress: bool, execute: Any, print_summary: Any) -> int:
    try:
        report = execute(job, run, progress=progress)
    except KeyboardInterrupt:
        print(f"interrupted; checkpoint written: continue with 'blackbox-dft resume "
              f"{run.path}'", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ModelError, BudgetExhausted) as exc:
        print(f"model failed: {_one_line(exc)}; the run is resumable: "
              f"'blackbox-dft resume {run.path}'", file=sys.stderr)
        return EXIT_MODEL
    print_summary(report, run)
    return EXIT_OK


def _cmd_resume(args: argparse.Namespace) -> int:
    from .cli_run import demo_job, execute, fit_job, print_summary
    from .cli_tools import run_options
    from .runs import RunFolder

    run = RunFolder.open(args.run)
    cfg = run.read_config()
    if os.path.exists(run.report_json):
        print(f"run {run.path} is complete; nothing to resume (see 'blackbox-dft info')")
        return EXIT_OK
    opts = cfg.get("options", {}) if cfg.get("command") == "demo" else run_options(cfg)
    job = demo_job(opts) if cfg.get("command") == "demo" else fit_job(opts)
    if job.params != cfg.get("params"):
        diff = sorted(k for k in job.params if job.params[k] != cfg.get("params", {}).get(k))
        print(f"warning: settings rebuilt differ from the saved ones ({', '.join(diff)}); "
              "using the saved ones", file=sys.stderr)
        job.params = cfg["params"]
    return _execute(job, run, args.progress, execute, print_summary)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .cli_run import demo_job, execute, print_summary
    from .runs import RunFolder

    opts = {k: v for k, v in vars(args).items() if k not in ("command", "force", "progress")}
    job = demo_job(opts)
    run = RunFolder.create(args.out, force=args.force, auto_suffix=True)
    run.write_config({"command": "demo", "options": opts, "params": job.params})
    print(f"{job.title}; run folder {run.path}", file=sys.stderr)
    return _execute(job, run, args.progress, execute, print_summary)


def _dispatch(args: argparse.Namespace) -> int:
    from . import cli_tools

    if args.command == "fit":
        return _cmd_fit(args)
    if args.command == "resume":
        return _cmd_resume(args)
    if args.command == "demo":
        return _cmd_demo(args)
    if args.command == "evaluate":
        cli_tools.evaluate_run(args.run, args.data, split=args.split, shift=args.shift,
                               size=args.size, json_out=args.json_out, force=args.force,
                               cache=args.cache, progress=args.progress)
    elif args.command == "apply":
        cli_tools.apply_run(args.run, args.input, args.output, force=args.force,
                            skip_bad=args.skip_bad, max_pixels=args.max_image_pixels)
    elif args.command == "info":
        cli_tools.info_run(args.run)
    return EXIT_OK


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # the fit loop writes its checkpoint, as on Ctrl-C


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        from adapters.server import serve_main  # lazy: only serve needs the server

        return int(serve_main(argv[1:]))
    debug = bool(os.environ.get("BLACKBOX_DFT_DEBUG"))
    try:
        if hasattr(signal, "SIGTERM"):
            signal.signal(signal.SIGTERM, _sigterm)
        args = build_parser().parse_args(argv)
        return _dispatch(args)
    except UsageError as exc:
        print(_one_line(exc), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ModelError, BudgetExhausted) as exc:
        if debug:
            traceback.print_exc()
        print(f"blackbox-dft: model failed: {_one_line(exc)}", file=sys.stderr)
        return EXIT_MODEL
    except (ValueError, TypeError, OSError, ImportError) as exc:
        if debug:
            traceback.print_exc()
        print(f"blackbox-dft: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # a bug: still one line, with the way to see more
        if debug:
            traceback.print_exc()
        print(f"blackbox-dft: internal error ({type(exc).__name__}): {_one_line(exc)}; "
              "set BLACKBOX_DFT_DEBUG=1 for the traceback", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
