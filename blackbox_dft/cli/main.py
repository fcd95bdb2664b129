"""``blackbox-dft``: the command line (composition root: subcommands and exit codes).

Subcommands: ``fit``, ``resume``, ``evaluate``, ``apply``, ``info``, ``demo``, ``serve``;
exit codes: :mod:`.exits` (0 done, 1 bug, 2 bad input, 3 model failure, 4 missing
dependency, 5 disk full, 6 run busy, 130 interrupted).

Every error is one line on stderr, and no message shows a secret
(:mod:`blackbox_dft.adapters.spec_secrets`); a missing optional dependency names every
missing package and the line that installs them (:mod:`.deps`). ``-q`` / ``-v`` / ``-vv``
set what else stderr shows (:mod:`.logs`).
A command that works on a run folder (fit, resume, demo, evaluate with the run's cache)
holds the run's lock (:mod:`.run_lock`) until it ends.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from types import FrameType

from blackbox_dft.adapters import spec_secrets
from blackbox_dft.adapters.serving.server import serve_main
from blackbox_dft.adapters.specs import MissingDependency
from blackbox_dft.cli import fitcmds
from blackbox_dft.cli.apply import apply_run
from blackbox_dft.cli.check import check_run
from blackbox_dft.cli.commands import evaluate_run, info_run
from blackbox_dft.cli.deps import dependency_message, standin_needs
from blackbox_dft.cli.exits import (
    EXIT_BUSY,
    EXIT_CODES,
    EXIT_DEPENDENCY,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_MODEL,
    EXIT_OK,
    EXIT_USAGE,
    EXIT_WRITE,
    one_line,
)
from blackbox_dft.cli.logs import QUIET, cli_logging
from blackbox_dft.cli.options import DEMO_OPTIONS, DemoOptions, read_config_file, resolve_options
from blackbox_dft.cli.parser import Parser, UsageError, build_parser, verbosity
from blackbox_dft.cli.proxy import proxy_run
from blackbox_dft.cli.run_lock import RunBusy
from blackbox_dft.cli.transformer import transformer_run
from blackbox_dft.core.model import BudgetExhausted, ModelError
from blackbox_dft.core.state_checks import FileWriteError

__all__ = ["main", "build_parser", "EXIT_CODES", "EXIT_BUSY"]

_NOT_OPTIONS = ("command", "config", "force", "progress", "quiet", "verbose")


def _dispatch(args: argparse.Namespace, rest: list[str]) -> int:
    if args.command == "fit":
        flags = {k: v for k, v in vars(args).items() if k not in _NOT_OPTIONS}
        config = read_config_file(args.config) if args.config else {}
        return fitcmds.fit(resolve_options(config, flags), force=args.force,
                           progress=args.progress)
    if args.command == "resume":
        return fitcmds.resume(args.run, model_url=args.model_url, cache=args.cache,
                              progress=args.progress)
    if args.command == "demo":
        demo = DemoOptions(**{name: getattr(args, name) for name in DEMO_OPTIONS})
        return fitcmds.demo(demo, force=args.force, progress=args.progress)
    if args.command == "evaluate":
        evaluate_run(args.run, args.data, split=args.split, shift=args.shift, size=args.size,
                     json_out=args.json_out, force=args.force, cache=args.cache,
                     progress=args.progress, model_url=args.model_url)
    elif args.command == "apply":
        apply_run(args.run, args.input, args.output, force=args.force,
                  skip_bad=args.skip_bad, max_pixels=args.max_image_pixels)
    elif args.command == "info":
        info_run(args.run)
    elif args.command == "check":  # issue 15: the model-update guard (exit 7: delta hurts)
        return check_run(args.run, model_url=args.model_url, tolerance=args.tolerance,
                         budget=args.budget)[0]
    elif args.command == "proxy":  # issue 15: the run's delta as an HTTP proxy
        return proxy_run(args.run, args.upstream, args.listen, preset=args.preset,
                         max_body_bytes=args.max_body_bytes, concurrency=args.concurrency,
                         deadline=args.deadline, connections=args.connections,
                         rewrite_threads=args.rewrite_threads,
                         jpeg_quality=args.jpeg_quality or None, png=args.png,
                         bypass=args.bypass, force_active=args.force_active,
                         check_every=args.check_every,
                         check_budget=args.check_budget, check_tolerance=args.check_tolerance,
                         model_url=args.model_url, admin_token_env=args.admin_token_env)
    elif args.command == "transformer":  # issue 15: the delta as a KServe transformer
        return transformer_run(args.run, args.predictor_host, args.model_name,
                               http_port=args.http_port, host=args.host, bypass=args.bypass,
                               force_active=args.force_active, check_every=args.check_every,
                               check_budget=args.check_budget,
                               check_tolerance=args.check_tolerance, model_url=args.model_url,
                               admin_token_env=args.admin_token_env, kserve_args=rest)
    return EXIT_OK


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # the fit loop writes its checkpoint, as on Ctrl-C


def _serve(argv: list[str]) -> int:
    """``blackbox-dft serve``: one-line errors (exit 2, 4) instead of usage dumps, defaults in
    ``--help``; a stand-in whose packages are missing is refused here, before serve_main's
    own one-package message, so that the line names every missing package."""
    parser = Parser(prog="blackbox-dft serve", description="Serve a stand-in model on "
                    "127.0.0.1 in a preset's wire format, with optional fault injection "
                    "(for tests and benchmarks).")
    early = argparse.ArgumentParser(add_help=False, allow_abbrev=False)  # what serve_main
    # would misreport: a port bind() cannot take, a stand-in without its packages
    early.add_argument("--model", default=None)
    early.add_argument("--port", default="0")
    known = early.parse_known_args(argv)[0]
    if not (known.port.isdigit() and int(known.port) <= 65535):  # bind(): OverflowError
        raise UsageError(f"blackbox-dft serve: --port must be a number from 0 to 65535 (0: "
                         f"any free port), got {known.port!r}")
    missing = standin_needs(known.model)
    if missing:
        raise ModuleNotFoundError(f"missing {missing[0]}", name=missing[0])
    return int(serve_main(argv, parser=parser))


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The arguments, and those left for ``serve`` (which parses its own) or for KServe
    (``transformer``)."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command not in ("serve", "transformer"):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args, rest


def _traceback(debug: bool) -> None:
    if debug:  # scrubbed too: a traceback is a log
        print(spec_secrets.scrub(traceback.format_exc()), end="", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit code
    (see :mod:`.exits`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = bool(os.environ.get("BLACKBOX_DFT_DEBUG"))
    spec_secrets.reset()  # secrets are known per command (and per process)
    try:
        if hasattr(signal, "SIGTERM"):
            signal.signal(signal.SIGTERM, _sigterm)
        args, rest = _parse(argv)
        level = verbosity(args)
        if level <= QUIET:
            args.progress = False
        with cli_logging(level):
            return _serve(rest) if args.command == "serve" else _dispatch(args, rest)
    except UsageError as exc:
        print(one_line(exc), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ModelError, BudgetExhausted) as exc:
        _traceback(debug)
        print(f"blackbox-dft: model failed: {one_line(exc)}", file=sys.stderr)
        return EXIT_MODEL
    except RunBusy as exc:
        print(f"blackbox-dft: {one_line(exc)}", file=sys.stderr)
        return EXIT_BUSY
    except (MissingDependency, ImportError) as exc:  # a module, a runtime (LiteRT), boto3
        _traceback(debug)
        print(f"blackbox-dft: missing dependency: {dependency_message(exc, one_line(exc))}",
              file=sys.stderr)
        return EXIT_DEPENDENCY
    except FileWriteError as exc:  # before any run folder holds a checkpoint
        _traceback(debug)
        print(f"blackbox-dft: {one_line(exc)}; free some space and run the command again",
              file=sys.stderr)
        return EXIT_WRITE
    except (ValueError, TypeError, OSError) as exc:
        _traceback(debug)
        print(f"blackbox-dft: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # a bug: still one line, with the way to see more
        _traceback(debug)
        print(f"blackbox-dft: internal error ({type(exc).__name__}): {one_line(exc)}; "
              "set BLACKBOX_DFT_DEBUG=1 for the traceback", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
