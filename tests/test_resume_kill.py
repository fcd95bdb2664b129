"""Kill a command-line fit halfway (SIGKILL, SIGINT), resume it, get the uninterrupted result.

The fit runs in a subprocess against the synthetic black box (``python:cli_synthetic:predict``),
which appends the size of every batch it is sent to a counter file: the model-side count.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from cli_synthetic import count, write_npz

from blackbox_dft.core.state import FitState, read_npz_json

HERE = os.path.dirname(os.path.abspath(__file__))
BATCH, EVERY, BUDGET = 16, 4, 2550  # 110 images to spare at the end: room for a batch paid twice
STEP_COST = 2 * BATCH  # SPSA, one direction


def _env(counter: str, delay: float = 0.0) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = HERE + os.pathsep + env.get("PYTHONPATH", "")
    env["BBDFT_TEST_COUNTER"] = counter
    env["BBDFT_TEST_DELAY"] = str(delay)
    env.pop("BLACKBOX_DFT_DEBUG", None)
    return env


def _fit_args(data: str, out: str) -> list[str]:
    return [sys.executable, "-m", "blackbox_dft.cli.main", "fit", "--model",
            "python:cli_synthetic:predict", "--data", data, "--out", out, "--scores", "logits",
            "--budget", str(BUDGET), "--batch-size", str(BATCH), "--checkpoint-every",
            str(EVERY), "--validation-every", "5", "--seed", "7", "--no-progress",
            # the whole budget: an early stop could end the fit as the signal is sent
            "--no-early-stopping"]


def _delta(run: str) -> np.ndarray:
    return read_npz_json(os.path.join(run, "delta.npz"))[0]["delta"]


def _step(run: str) -> int:
    try:
        return FitState.load(os.path.join(run, "checkpoint.npz"))[0].step
    except (FileNotFoundError, ValueError):
        return 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run: its folder, its model-side image count."""
    tmp = tmp_path_factory.mktemp("ref")
    data = str(tmp / "d.npz")
    write_npz(data)
    out, counter = str(tmp / "run"), str(tmp / "count.txt")
    proc = subprocess.run(_fit_args(data, out), env=_env(counter), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return data, out, count(counter)


def _sigint_default() -> None:
    """In the child, before exec: SIGINT back to its default. A parent started in the
    background by a non-interactive shell (``cmd &``, nohup) ignores SIGINT, its children
    inherit that, and Python then installs no KeyboardInterrupt handler: the signal the test
    sends would be ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(tmp, data: str, sig: int, at_step: int) -> tuple[str, str, subprocess.Popen]:
    out, counter = str(tmp / "run"), str(tmp / "count.txt")
    proc = subprocess.Popen(_fit_args(data, out), env=_env(counter, delay=0.08),
                            preexec_fn=_sigint_default,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while _step(out) < at_step:
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the fit never reached the step"
        time.sleep(0.02)
    time.sleep(0.12)  # land between checkpoints, in the middle of a step
    assert proc.poll() is None, "the fit ended before the signal: slow the model down"
    proc.send_signal(sig)
    proc.wait(timeout=30)
    return out, counter, proc


def _resume(out: str, counter: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "blackbox_dft.cli.main", "resume", out,
                           "--no-progress"], env=_env(counter), capture_output=True, text=True,
                          timeout=120)


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path, reference):
    data, ref_out, ref_seen = reference
    out, counter, proc = _interrupt(tmp_path, data, signal.SIGKILL, at_step=30)
    assert proc.returncode == -signal.SIGKILL
    killed_at = _step(out)
    total_steps = FitState.load(os.path.join(ref_out, "checkpoint.npz"))[0].step
    assert 0 < killed_at < total_steps
    assert not os.path.exists(os.path.join(out, "delta.npz"))
    done = _resume(out, counter)
    assert done.returncode == 0, done.stderr
    assert np.array_equal(_delta(out), _delta(ref_out))
    # The model saw at most one checkpoint interval of repeated images; the cache
    # answered the replayed steps (only a batch in flight at the kill is paid twice).
    extra = count(counter) - ref_seen
    print(f"killed at step {killed_at}; model saw {extra} images more than uninterrupted")
    assert 0 <= extra <= EVERY * STEP_COST
    report = __import__("json").load(open(os.path.join(out, "report.json")))
    assert report["spend"]["saved"] > 0
    # The ledger counts every image the model was sent, the killed process's included,
    # and the fit's own count (the in-flight batch paid twice included) stays in budget.
    assert report["spend"]["paid"] == count(counter)
    state = FitState.load(os.path.join(out, "checkpoint.npz"))[0]
    assert state.queries <= BUDGET
    assert report["test"] == __import__("json").load(
        open(os.path.join(ref_out, "report.json")))["test"]


def test_sigint_writes_a_checkpoint_exits_130_and_resumes(tmp_path, reference):
    data, ref_out, _ = reference
    out, counter, proc = _interrupt(tmp_path, data, signal.SIGINT, at_step=10)
    err = proc.stderr.read() if proc.stderr else ""
    assert proc.returncode == 130, err
    assert "resume" in err and "Traceback" not in err
    assert [ln for ln in err.splitlines() if "interrupted" in ln] == err.splitlines()[-1:]
    step = _step(out)
    assert step >= 10
    info = subprocess.run([sys.executable, "-m", "blackbox_dft.cli.main", "info", out],
                          env=_env(counter), capture_output=True, text=True, timeout=60)
    assert info.returncode == 0 and "resumable" in info.stdout
    done = _resume(out, counter)
    assert done.returncode == 0, done.stderr
    assert np.array_equal(_delta(out), _delta(ref_out))
