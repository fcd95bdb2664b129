"""A good citizen of Python (issue 14, point 4): files written with the user's umask,
``python -m blackbox_dft``, logging in the library (a NullHandler, no print), progress bars
only on a terminal and off with TQDM_DISABLE.

The CLI's flags (-q, -v, --help defaults, one-line errors) are in tests/test_cli_citizen.py.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest
from cli_synthetic import write_npz

from blackbox_dft import DataFineTuner
from blackbox_dft.cli.main import main
from blackbox_dft.core.state_checks import atomic_write_bytes
from blackbox_dft.data.files import write_image
from blackbox_dft.testing import make_problem

SPEC = "python:cli_synthetic:predict"


# -- files written with the user's umask -----------------------------------------------------
@pytest.fixture(params=[0o022, 0o077, 0o002], ids=["umask022", "umask077", "umask002"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """022 and 077 (tempfile's 0600 differs from both), and 002 (a shared group: sqlite's
    own 0644 differs from open()'s 0664)."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _modes(folder: str) -> dict[str, int]:
    """Permission bits of every file and folder under ``folder`` (relative names)."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            out[os.path.relpath(path, folder)] = stat.S_IMODE(os.lstat(path).st_mode)
    return out


def _plain_open_modes(umask: int) -> tuple[int, int]:
    """The modes ``open(path, "w")`` and ``os.makedirs`` give under ``umask``."""
    return 0o666 & ~umask, 0o777 & ~umask


def test_atomic_writers_follow_the_umask_at_write_time(tmp_path, umask) -> None:
    """The umask is read when the file is written (not once at import), and the temp file
    is renamed, not left beside the target."""
    file_mode, _ = _plain_open_modes(umask)
    atomic_write_bytes(tmp_path / "a.bin", b"x")
    write_image(str(tmp_path / "b.png"), np.zeros((2, 3, 3), np.uint8))
    with open(tmp_path / "c.txt", "w") as fh:  # the reference: a plain open()
        fh.write("x")
    assert _modes(str(tmp_path)) == {"a.bin": file_mode, "b.png": file_mode,
                                     "c.txt": file_mode}


def test_tuner_save_follows_the_umask(tmp_path, umask) -> None:
    p = make_problem(seed=0, n_train=32, n_val=16, n_test=16)
    tuner = DataFineTuner(p.model, scores="logits", query_budget=300, batch_size=8,
                          validation_every=5, progress=False)
    tuner.fit(*p.train, p.val, checkpoint=str(tmp_path / "checkpoint.npz"))
    tuner.save(tmp_path / "delta.npz")
    file_mode, _ = _plain_open_modes(umask)
    assert _modes(str(tmp_path)) == {"checkpoint.npz": file_mode, "delta.npz": file_mode}


def test_every_file_of_a_cli_run_follows_the_umask(tmp_path, umask, capsys) -> None:
    """fit (checkpoint.npz, delta.npz, config.json, report.json/png, history.jsonl,
    spend.json, the query cache, the lock) then apply (the perturbed copies)."""
    data = str(tmp_path / "d.npz")
    write_npz(data)
    os.chmod(data, 0o666 & ~umask)
    out, images, copies = (str(tmp_path / n) for n in ("run", "images", "copies"))
    assert main(["fit", "--model", SPEC, "--data", data, "--out", out, "--scores", "logits",
                 "--budget", "400", "--no-progress", "--no-evaluate"]) == 0
    os.mkdir(images)
    write_image(os.path.join(images, "one.png"), np.full((16, 16, 3), 100, np.uint8))
    assert main(["apply", "--run", out, "--input", images, "--output", copies]) == 0
    capsys.readouterr()
    file_mode, dir_mode = _plain_open_modes(umask)
    for folder in (out, copies):
        modes = _modes(folder)
        assert modes, folder
        want = {name: dir_mode if os.path.isdir(os.path.join(folder, name)) else file_mode
                for name in modes}
        assert modes == want, folder
        assert stat.S_IMODE(os.stat(folder).st_mode) == dir_mode
    assert {"delta.npz", "checkpoint.npz", "config.json", "cache.sqlite"} <= set(_modes(out))


# -- python -m blackbox_dft ------------------------------------------------------------------
def test_python_m_blackbox_dft_is_the_command_line(tmp_path) -> None:
    """``python -m blackbox_dft`` runs the CLI: its version, and its exit codes."""
    from blackbox_dft import __version__

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "blackbox_dft", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)

    got = run("--version")
    assert (got.returncode, got.stdout.strip()) == (0, f"blackbox-dft {__version__}")
    got = run("info", str(tmp_path / "no-such-run"))
    assert got.returncode == 2 and len(got.stderr.strip().splitlines()) == 1, got.stderr
    assert "no-such-run" in got.stderr and "Traceback" not in got.stderr


# -- logging in the library --------------------------------------------------------------------
PACKAGE = os.path.dirname(os.path.abspath(__import__("blackbox_dft").__file__))
# print() belongs to the command line: blackbox_dft/cli, and serve's entry point.
PRINT_ALLOWED = {os.path.join("adapters", "serving", "server.py"): {"serve_main"}}


def _prints(path: str) -> list[tuple[int, str]]:
    """``(line, enclosing function)`` of every print() call and sys.stdout/stderr write."""
    import ast

    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, func: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, (ast.FunctionDef,
                                                    ast.AsyncFunctionDef)) else func
            if isinstance(child, ast.Call):
                f = child.func
                if (isinstance(f, ast.Name) and f.id == "print") or (
                        isinstance(f, ast.Attribute) and f.attr == "write"
                        and isinstance(f.value, ast.Attribute)
                        and f.value.attr in ("stdout", "stderr")):
                    found.append((child.lineno, func))
            visit(child, name)

    visit(tree, "<module>")
    return found


def test_the_library_does_not_print() -> None:
    """No print() (nor sys.stdout/stderr.write) outside the command line: the library
    logs (and warns) instead, so an application decides what is shown."""
    offenders, seen = [], 0
    for root, _, files in os.walk(PACKAGE, followlinks=True):  # adapters: a link
        rel_root = os.path.relpath(root, PACKAGE)
        if rel_root.split(os.sep)[0] == "cli":
            continue
        for name in files:
            if not name.endswith(".py"):
                continue
            rel = os.path.normpath(os.path.join(rel_root, name))
            seen += 1
            allowed = PRINT_ALLOWED.get(rel, set())
            offenders += [f"{rel}:{line} in {func}" for line, func in
                          _prints(os.path.join(root, name)) if func not in allowed]
    assert seen > 60 and not offenders, offenders
    server = os.path.join(PACKAGE, "adapters", "serving", "server.py")
    assert _prints(server), "the allowance for serve_main is no longer needed"


def test_the_package_logger_has_a_null_handler_and_nothing_else() -> None:
    import logging

    handlers = logging.getLogger("blackbox_dft").handlers
    assert [type(h) for h in handlers] == [logging.NullHandler]


def test_a_library_fit_logs_start_resume_checkpoint_and_end(tmp_path, caplog, capsys) -> None:
    """INFO: the fit's start (budget, costs), a resume, its end; DEBUG: checkpoints. A
    library fit with progress=True prints nothing when stderr is not a terminal."""
    import logging

    p = make_problem(seed=0, n_train=32, n_val=16, n_test=16)
    ckpt = str(tmp_path / "checkpoint.npz")

    def fit(budget: int, resume: bool) -> None:
        DataFineTuner(p.model, scores="logits", query_budget=budget, batch_size=8,
                      validation_every=5, progress=True).fit(*p.train, p.val, checkpoint=ckpt,
                                                             resume=resume)

    with caplog.at_level(logging.DEBUG, logger="blackbox_dft"):
        fit(300, resume=False)
    text = [r.getMessage() for r in caplog.records]
    assert any(t.startswith("DataFineTuner fit of ") and "budget 300 queries" in t
               for t in text), text
    assert "fit started: budget 300 queries; a step costs 16, a validation 16" in text
    assert any(t.startswith("checkpoint written: " + ckpt) for t in text), text
    assert any(t.startswith("fit finished: ") and "queries of a budget of 300" in t
               for t in text), text
    assert {r.name for r in caplog.records} == {"blackbox_dft.tasks.base",
                                               "blackbox_dft.core.engine"}
    assert capsys.readouterr() == ("", "")  # no bar: stderr is not a terminal here
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="blackbox_dft"):
        fit(300, resume=True)  # a finished checkpoint: resumes, nothing left to do
    text = [r.getMessage() for r in caplog.records]
    assert any(t.startswith(f"DataFineTuner resumes from {ckpt}") for t in text), text
    assert any(t.startswith("fit resumed at step ") for t in text), text
    assert not any(t.startswith("checkpoint written") for t in text)  # DEBUG, not INFO


def test_http_retries_are_logged_without_the_url_secrets(caplog) -> None:
    """Each failed attempt and each wait at INFO (a status, never the URL); urllib3's own
    DEBUG lines carry the URL with its query values redacted."""
    import logging

    from _http_helpers import dataset, linear_softmax

    from blackbox_dft.adapters.remote.http import HTTPModel
    from blackbox_dft.adapters.serving.server import Faults, StandInServer
    from blackbox_dft.core.model import ModelError

    secret = "s3cr3t-v4lue-in-the-query"
    with StandInServer(linear_softmax(), "json", faults=Faults(throttle=1.0)) as srv, \
            caplog.at_level(logging.DEBUG):
        model = HTTPModel(f"{srv.url}?code={secret}", preset="json", max_retries=2,
                          backoff=0.01, max_backoff=0.05, timeout=(2.0, 10.0))
        with pytest.raises(ModelError):
            model.predict(dataset(2)[0])
        model.close()
    ours = [r.getMessage() for r in caplog.records
            if r.name == "blackbox_dft.adapters.remote.transport"]
    assert ours[:4] == ["HTTP attempt 1 failed (HTTP 429)",
                        "waiting 0.00 s before the next attempt (Retry-After)",
                        "HTTP attempt 2 failed (HTTP 429)",
                        "waiting 0.00 s before the next attempt (Retry-After)"], ours
    urllib3 = [r.getMessage() for r in caplog.records if r.name.startswith("urllib3")]
    assert any("code=***" in t for t in urllib3), urllib3
    assert not any(secret in r.getMessage() for r in caplog.records)


# -- progress bars -----------------------------------------------------------------------------
_BAR_SCRIPT = """
import sys
from blackbox_dft.core.progress import progress_bar
bar = progress_bar(sys.argv[1] == "on", total=3, unit="img", desc="BARTEST")
for _ in range(3):
    bar.update(1)
bar.close()
"""


def _stderr_of_bar(progress: str, tty: bool, env: dict[str, str]) -> str:
    """What a bar writes on stderr, stderr being a terminal (a pty) or a pipe."""
    import fcntl
    import pty
    import struct
    import termios

    env = {**{k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}, **env}
    if not tty:
        return subprocess.run([sys.executable, "-c", _BAR_SCRIPT, progress], env=env,
                              capture_output=True, text=True, timeout=60).stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 0 columns: no bar
    try:
        proc = subprocess.Popen([sys.executable, "-c", _BAR_SCRIPT, progress], env=env,
                                stdout=subprocess.DEVNULL, stderr=slave)
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        proc.wait(timeout=60)
    finally:
        os.close(master)
    return b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_bars_only_on_a_terminal_and_never_with_tqdm_disable() -> None:
    assert "BARTEST" in _stderr_of_bar("on", tty=True, env={})
    assert "BARTEST" not in _stderr_of_bar("on", tty=False, env={})  # a pipe or a log file
    assert "BARTEST" not in _stderr_of_bar("off", tty=True, env={})  # progress=False
    assert "BARTEST" not in _stderr_of_bar("on", tty=True, env={"TQDM_DISABLE": "1"})


def test_tqdm_disable_is_read_as_the_installed_tqdm_reads_it() -> None:
    """Ours and tqdm's own reading of TQDM_DISABLE (tqdm reads it at import, for bars that
    do not pass ``disable``) agree, including on the values that look false."""
    code = ("import io; from tqdm.auto import tqdm; "
            "from blackbox_dft.core.progress import bar_disabled; "
            "print(bool(tqdm(total=1, file=io.StringIO()).disable), bar_disabled(True) is True)")
    for value in ("1", "0", ""):  # tqdm's rule: any non-empty value disables, "0" too
        env = {**os.environ, "TQDM_DISABLE": value}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=60).stdout.split()
        assert out[0] == out[1] == str(value != ""), (value, out)
