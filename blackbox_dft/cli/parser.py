"""The argument parser of every subcommand except ``serve`` (which delegates its arguments):
one-line errors (exit code 2), never a usage dump. The flags of ``fit`` and ``demo`` come
from the option tables of :mod:`.options`; every ``--help`` states each option's default.
``-q/--quiet`` and ``-v/--verbose`` (:mod:`.logs`) go before or after the subcommand."""

from __future__ import annotations

import argparse
import copy
from typing import Any, NoReturn

from blackbox_dft._version import __version__
from blackbox_dft.cli.config import csv_list, flag_type
from blackbox_dft.cli.options import DEMO_OPTIONS, FIT_OPTIONS, DemoOptions
from blackbox_dft.cli.proxy import add_proxy_parser
from blackbox_dft.cli.transformer import add_transformer_parser

__all__ = ["UsageError", "Parser", "DefaultsHelpFormatter", "build_parser", "add_fit_options",
           "verbosity"]

_Subparsers = argparse._SubParsersAction  # what add_subparsers returns (no public name)


class UsageError(Exception):
    """Bad command-line arguments (exit code 2)."""


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """argparse's ArgumentDefaultsHelpFormatter, once and only where it says something:
    ``(default: X)`` after an option whose default is a value (not None or empty, not a
    flag's True/False), unless its help states the default already; options without help
    too."""

    def _format_action(self, action: argparse.Action) -> str:
        default, text = action.default, action.help or ""
        if action.option_strings and action.help is not argparse.SUPPRESS \
                and default is not None and default is not argparse.SUPPRESS \
                and not isinstance(default, bool) and default not in ([], {}, "") \
                and "(default" not in text:
            action = copy.copy(action)
            action.help = f"{text} (default: %(default)s)".strip()
        return super()._format_action(action)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit code 2, never a usage dump, and
    whose ``--help`` states the defaults (:class:`DefaultsHelpFormatter`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


class _BoolFlag(argparse.BooleanOptionalAction):
    """``--x`` / ``--no-x`` whose help states its default once, in our words (Python 3.11's
    BooleanOptionalAction appends ``(default: True)`` to any help)."""

    def __init__(self, *args: Any, help: str | None = None, **kwargs: Any) -> None:  # noqa: A002
        super().__init__(*args, help=help, **kwargs)
        self.help = help


def _common_flags(p: argparse.ArgumentParser, *, progress: bool = True,
                  top: bool = False) -> None:
    """``--no-progress`` (with ``progress``) and ``-q`` / ``-v``: given before the
    subcommand (``top``) or after it (then absent unless given: the subcommand's parser
    must not overwrite the top one's)."""
    if progress:
        p.add_argument("--no-progress", dest="progress", action="store_false",
                       help="no progress bar (default: a bar on stderr when it is a terminal, "
                       "unless TQDM_DISABLE is set)")
    unset: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no notes: "
                   "warnings and errors only", **unset)
    p.add_argument("-v", "--verbose", action="count", help="log the library's steps (INFO): "
                   "fit start and end, resume, retries, cache; -vv: DEBUG, urllib3's requests "
                   "included (URL secrets redacted)", **({"default": 0} if top else unset))


def verbosity(args: argparse.Namespace) -> int:
    """-1 for ``-q``, 0 by default, 1 for ``-v``, 2 for ``-vv`` (:mod:`.logs`); ``-q``
    with ``-v`` is a usage error."""
    quiet, verbose = bool(getattr(args, "quiet", False)), int(getattr(args, "verbose", 0) or 0)
    if quiet and verbose:
        raise UsageError("blackbox-dft: give -q (quiet) or -v (verbose), not both")
    return -1 if quiet else min(verbose, 2)


_MODEL_URL_HELP = ("the model URL again, for a run fitted with literal secrets in its URL "
                   "(saved as ***, so not resumable on their own): it must equal the saved "
                   "URL once secrets are masked; write secrets as ${VAR} (environment "
                   "variables), e.g. https://host/api?code=${AZ_CODE}, so that no URL has to "
                   "be given again (default: the saved URL)")
_FIT_HELP = ("Learn a perturbation. Options may come from --config (JSON or TOML, keys = option "
             "names); flags override it. Modes: classification (--data); many attributes "
             "(--data with attribute columns, --attribute-mode shared|per_attribute); face "
             "verification (--pairs pairs.txt --image-root DIR with an embedding model, e.g. "
             "--model standin:hog-embedding). A model URL may take secrets from the environment "
             "as ${VAR} (e.g. ?code=${AZ_CODE}); literal query values and user:password@ are "
             "saved as *** and the run is then resumable only with resume --model-url.")


def add_fit_options(parser: argparse.ArgumentParser) -> None:
    """Add every fit option as a flag whose absence leaves no attribute (so configs apply)."""
    for o in FIT_OPTIONS:
        flag = "--" + o.name.replace("_", "-")
        if o.name == "model_options":
            parser.add_argument("--model-option", dest=o.name, action="append",
                                default=argparse.SUPPRESS, metavar="KEY=VALUE",
                                help=o.help_text())
        elif o.flag == "bool":
            parser.add_argument(flag, dest=o.name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=o.help_text())
        else:
            parser.add_argument(flag, dest=o.name, default=argparse.SUPPRESS, choices=o.choices,
                                type=flag_type(o) if o.type is not csv_list else str,
                                help=o.help_text())


def _demo_parser(sub: _Subparsers) -> None:
    p = sub.add_parser("demo", help="fit the built-in face (or smiling) task end to end",
                       description="Run the built-in task: BlazeFace on blurred LFW face crops "
                       "by default; writes a run folder with delta.npz, report.json, report.png.")
    defaults = DemoOptions()
    for o in DEMO_OPTIONS.values():
        flag = "--" + o.name.replace("_", "-")
        default = getattr(defaults, o.name)
        if o.flag == "bool":
            p.add_argument(flag, dest=o.name, action=_BoolFlag, default=default,
                           help=o.help_text())
        else:
            p.add_argument(flag, dest=o.name, default=default, choices=o.choices,
                           type=flag_type(o) if o.type in (int, float) else str,
                           help=o.help_text())
    p.add_argument("--force", action="store_true", help="reuse --out, replacing its run files")
    _common_flags(p)


def _run_parsers(sub: _Subparsers) -> None:
    """``resume``, ``evaluate``, ``apply`` and ``info``: commands on an existing run folder."""
    p = sub.add_parser("resume", help="continue an interrupted fit from its checkpoint")
    p.add_argument("run", help="run folder")
    p.add_argument("--model-url", dest="model_url", default=None, help=_MODEL_URL_HELP)
    p.add_argument("--cache", action=_BoolFlag, default=None,
                   help="the on-disk query cache (default: as the fit was run)")
    _common_flags(p)
    p = sub.add_parser("evaluate", help="accuracy before/after, PSNR, SSIM on a dataset",
                       description="Accuracy before/after a run's perturbation on a dataset; "
                       "for an --attribute-mode per_attribute run, per attribute. Face "
                       "verification runs (fit --pairs) are not handled: see their report.json.")
    p.add_argument("--run", required=True, help="run folder")
    p.add_argument("--data", required=True, help="dataset (same formats as fit)")
    p.add_argument("--split", default="all", choices=("all", "train", "val", "test"),
                   help="which part of the data: all, or a part of the split the fit used")
    p.add_argument("--shift", default=None, help="shift to apply (default: the run's; 'none')")
    p.add_argument("--size", default=None, help="image size N or HxW (default: the run's)")
    p.add_argument("--json", dest="json_out", default=None,
                   help="also write the metrics to this file (default: none)")
    p.add_argument("--force", action="store_true", help="overwrite --json")
    p.add_argument("--cache", action=_BoolFlag, default=True,
                   help="answer repeated images from the run's query cache (default: --cache)")
    p.add_argument("--model-url", dest="model_url", default=None, help=_MODEL_URL_HELP)
    _common_flags(p)
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
    _common_flags(p, progress=False)
    p = sub.add_parser("info", help="what a run folder holds: progress, results, money")
    p.add_argument("run", help="run folder")
    _common_flags(p, progress=False)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand except ``serve`` (which delegates its arguments)."""
    parser = Parser(prog="blackbox-dft", description="Data Fine-tuning of black-box image "
                    "classifiers: learn one small additive perturbation from queries only.")
    parser.add_argument("--version", action="version", version=f"blackbox-dft {__version__}")
    _common_flags(parser, progress=False, top=True)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    p = sub.add_parser("fit", help="learn a perturbation; writes a run folder",
                       description=_FIT_HELP)
    p.add_argument("--config", default=None,
                   help="JSON or TOML file of options (default: none)")
    add_fit_options(p)
    p.add_argument("--force", action="store_true", help="replace the run files in --out")
    _common_flags(p)
    _run_parsers(sub)
    _demo_parser(sub)
    # check (issue 15): the model-update guard on a run's canary set (cli/check.py)
    p = sub.add_parser("check", help="does the run's delta still help its model? (canary)",
                       description="Send the run's canary images (kept by the fit) to the "
                       "model again, without and with the delta; print whether the model's "
                       "answers changed and whether the delta still helps; write RUN/check.json;"
                       " exit 0 if it helps, 7 if it no longer does. The query cache is not "
                       "used (it would answer with the old model's scores).")
    p.add_argument("run", help="run folder")
    p.add_argument("--model-url", dest="model_url", default=None, help=_MODEL_URL_HELP)
    p.add_argument("--tolerance", type=float, default=0.05, help="score distance (mean "
                   "|difference| / spread of the stored scores) and fraction of changed "
                   "decisions up to which the model counts as unchanged")
    p.add_argument("--budget", type=int, default=None, help="images it may send (default: "
                   "the canary set twice); fewer canary images are used to stay within it")
    _common_flags(p, progress=False)
    add_proxy_parser(sub)  # proxy (issue 15): its arguments live in cli/proxy.py
    add_transformer_parser(sub)  # KServe transformer (issue 15): cli/transformer.py
    sub.add_parser("serve", help="serve a stand-in model over HTTP (see serve --help)",
                   add_help=False)
    return parser
