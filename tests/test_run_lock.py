"""One process at a time on a run folder: a second ``resume`` is refused at once naming the
holder's pid (exit 6) and the model answers exactly the images of one resume; a SIGKILLed
holder never leaves the run stuck; stale temp files go when the lock is taken.

The concurrent and kill cases run real processes against the synthetic black box
(``python:cli_synthetic:predict``), which appends the size of every batch it answers to a
counter file.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from cli_synthetic import count, write_npz

from blackbox_dft.cli.main import EXIT_BUSY, main
from blackbox_dft.cli.run_lock import RunBusy, RunLock
from blackbox_dft.cli.runs import RunFolder
from blackbox_dft.core.state import read_npz_json

HERE = os.path.dirname(os.path.abspath(__file__))
SPEC = "python:cli_synthetic:predict"


def _env(counter: str, delay: float = 0.0) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = HERE + os.pathsep + env.get("PYTHONPATH", "")
    env["BBDFT_TEST_COUNTER"] = counter
    env["BBDFT_TEST_DELAY"] = str(delay)
    for name in ("BLACKBOX_DFT_DEBUG", "BBDFT_TEST_FAIL_AFTER"):
        env.pop(name, None)
    return env


def _resume(run: str, counter: str, delay: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "blackbox_dft.cli.main", "resume", run,
                             "--no-progress"], env=_env(counter, delay), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _holder_pid(run: str) -> int | None:
    try:
        first = open(os.path.join(run, ".lock"), encoding="utf-8").readline().strip()
    except OSError:
        return None
    return int(first) if first.isdigit() else None


def _wait_for_lock(run: str, proc: subprocess.Popen, deadline: float = 60.0) -> None:
    end = time.time() + deadline
    while _holder_pid(run) != proc.pid:
        assert proc.poll() is None, proc.communicate()
        assert time.time() < end, "the process never took the lock"
        time.sleep(0.02)


@pytest.fixture()
def failed_run(tmp_path, monkeypatch) -> tuple[str, str]:
    """A run whose fit failed halfway (the model went down): ``(run, counter)``."""
    data = str(tmp_path / "d.npz")
    write_npz(data)
    out, counter = str(tmp_path / "failed"), str(tmp_path / "failed.txt")
    monkeypatch.setenv("BBDFT_TEST_COUNTER", counter)
    monkeypatch.setenv("BBDFT_TEST_FAIL_AFTER", "1200")
    assert main(["fit", "--model", SPEC, "--data", data, "--out", out, "--scores", "logits",
                 "--budget", "2500", "--batch-size", "16", "--checkpoint-every", "4",
                 "--no-progress"]) == 3
    monkeypatch.delenv("BBDFT_TEST_FAIL_AFTER")
    monkeypatch.delenv("BBDFT_TEST_COUNTER")
    return out, counter


@pytest.mark.slow
def test_two_concurrent_resumes_one_runs_the_other_is_refused(tmp_path, failed_run):
    failed, counter = failed_run
    before = count(counter)
    # What one resume of this run sends to the model.
    single, c1 = str(tmp_path / "single"), str(tmp_path / "single.txt")
    shutil.copytree(failed, single)
    alone = _resume(single, c1)
    assert alone.wait(timeout=120) == 0, alone.communicate()
    # Two at once: A (slowed down) takes the lock; B starts while A works.
    pair, c2 = str(tmp_path / "pair"), str(tmp_path / "pair.txt")
    shutil.copytree(failed, pair)
    a = _resume(pair, c2, delay=0.12)
    _wait_for_lock(pair, a)
    b = _resume(pair, c2)
    b_out, b_err = b.communicate(timeout=60)
    assert a.poll() is None, "A ended before B asked: slow the model down"
    assert b.returncode == EXIT_BUSY, b_err
    lines = [ln for ln in b_err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in b_err, b_err
    assert f"run {pair} is in use by process {a.pid} (blackbox-dft resume, started " in lines[0]
    assert "wait for it to finish or stop it" in lines[0]
    assert a.wait(timeout=120) == 0, a.communicate()
    # The model answered exactly the images of one resume; both reach the same result.
    assert count(c2) == count(c1) > 0
    assert before > 0
    same = [read_npz_json(os.path.join(r, "delta.npz"))[0]["delta"] for r in (single, pair)]
    assert np.array_equal(*same)


_HOLD = ("import sys, time; from blackbox_dft.cli.runs import RunFolder; "
         "r = RunFolder.open(sys.argv[1], lock='resume'); print('locked', flush=True); "
         "time.sleep(120)")


def test_sigkill_of_the_holder_never_leaves_the_run_stuck(tmp_path, failed_run):
    run, _ = failed_run
    for _ in range(3):  # the same run, killed holders one after another
        holder = subprocess.Popen([sys.executable, "-c", _HOLD, run], env=_env(""),
                                  stdout=subprocess.PIPE, text=True)
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunBusy, match=f"in use by process {holder.pid} "):
            RunFolder(run).lock("test")
        holder.send_signal(signal.SIGKILL)
        assert holder.wait(timeout=30) == -signal.SIGKILL
        with RunFolder(run).lock("test") as mine:  # the kernel dropped the lock
            assert mine.locked and _holder_pid(run) == os.getpid()
    assert _holder_pid(run) is None  # released: no stale pid for the next reader


def test_every_writing_command_is_refused_while_another_holds_the_run(tmp_path, failed_run,
                                                                      capsys):
    run, _ = failed_run
    data = str(tmp_path / "d.npz")
    with RunFolder(run).lock("resume"):
        for argv in (["resume", run, "--no-progress"],
                     ["fit", "--model", SPEC, "--data", data, "--out", run, "--force",
                      "--no-progress"],
                     ["evaluate", "--run", run, "--data", data, "--no-progress"]):
            assert main(argv) == EXIT_BUSY, argv
            err = capsys.readouterr().err
            lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("data")]
            assert len(lines) == 1, err
            assert f"in use by process {os.getpid()} (blackbox-dft resume" in lines[0]
        assert main(["info", run]) == 0  # info only reads: never locks
        assert "resumable" in capsys.readouterr().out
        # without --force a new fit into a run refuses as before, naming resume
        assert main(["fit", "--model", SPEC, "--data", data, "--out", run,
                     "--no-progress"]) == 2
        assert "already holds a run" in capsys.readouterr().err
    assert main(["resume", run, "--no-progress", "--no-cache"]) == 0  # free again


def test_stale_temp_files_go_when_the_lock_is_taken_not_before(tmp_path, failed_run, capsys):
    run, _ = failed_run
    stale = [".tmp-k1ll3d.npz", ".tmp-abc.part", "spend.json.part", "history.jsonl.77.part"]
    for name in stale:
        open(os.path.join(run, name), "wb").write(b"half")
    other = RunLock(run)
    other.acquire("fit")  # another process is writing: its temp files must stay
    assert main(["info", run]) == 0
    assert all(os.path.exists(os.path.join(run, n)) for n in stale)
    other.release()
    with RunFolder(run).lock("resume"):
        assert not any(os.path.exists(os.path.join(run, n)) for n in stale)
    assert os.path.exists(os.path.join(run, "checkpoint.npz"))  # run files untouched


def test_a_demo_out_folder_in_use_moves_to_the_next_suffix(tmp_path):
    busy = str(tmp_path / "demo")
    os.makedirs(busy)
    with _held(busy):
        run = RunFolder.create(busy, auto_suffix=True, command="demo")
        try:
            assert run.path == busy + "-2" and run.locked
        finally:
            run.unlock()


class _held:
    """A RunLock held for a ``with`` block."""

    def __init__(self, folder: str) -> None:
        self.lock = RunLock(folder)

    def __enter__(self) -> RunLock:
        self.lock.acquire("demo")
        return self.lock

    def __exit__(self, *exc: object) -> None:
        self.lock.release()
