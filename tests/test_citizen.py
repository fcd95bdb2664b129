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
