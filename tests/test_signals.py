"""SIGTERM during a CLI fit whose API throttles with a huge Retry-After: the process ends
within seconds with exit 130 and a checkpoint, and a resume finishes the fit within budget."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from cli_synthetic import PROBLEM, write_npz

from blackbox_dft.adapters.serving.server import Faults, StandInServer
from blackbox_dft.core.state import FitState, paid_images

HERE = os.path.dirname(os.path.abspath(__file__))
BUDGET = 3000

pytestmark = [pytest.mark.network, pytest.mark.slow]


def _step(run: str) -> int:
    try:
        return FitState.load(os.path.join(run, "checkpoint.npz"))[0].step
    except (FileNotFoundError, ValueError):
        return 0


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "blackbox_dft.cli.main", *args]


def test_sigterm_while_a_retry_sleeps_ends_the_fit_at_once_and_it_resumes(tmp_path):
    data, out = str(tmp_path / "d.npz"), str(tmp_path / "run")
    write_npz(data)
    env = {**os.environ, "PYTHONPATH": HERE + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("BLACKBOX_DFT_DEBUG", None)
    with StandInServer(PROBLEM.model, "oip") as srv:
        proc = subprocess.Popen(
            _cli("fit", "--model", srv.url, "--preset", "oip", "--data", data, "--out", out,
                 "--scores", "logits", "--budget", str(BUDGET), "--checkpoint-every", "1",
                 "--no-progress"),
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while _step(out) < 3:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the fit never reached step 3"
                time.sleep(0.02)
            # From now on every request is throttled for ~30 years (capped by max_backoff,
            # 30 s by default): the fit's next call sleeps in a retry.
            srv.faults = Faults(throttle=1.0, retry_after=10**9)
            while srv.counts["throttle"] < 1:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.02)
            time.sleep(0.3)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=20)  # a bound on a hang, under max_backoff
            took = time.monotonic() - t0
        finally:
            proc.kill()
        assert proc.returncode == 130, err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert "interrupted; checkpoint written" in lines[-1] and "Traceback" not in err
        print(f"SIGTERM to exit: {took:.2f} s")
        stopped_at = _step(out)
        assert stopped_at >= 3
        srv.faults = Faults()
        done = subprocess.run(_cli("resume", out, "--no-progress"), env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        served = srv.images_served
    state = FitState.load(os.path.join(out, "checkpoint.npz"))[0]
    assert state.done and state.step > stopped_at
    assert paid_images(state) <= BUDGET
    spend = json.load(open(os.path.join(out, "report.json")))["spend"]
    # every image the server answered is in the ledger; the interrupted call's images are
    # too (charged before it went out: whether the vendor billed a throttled call is unknown)
    assert served <= spend["paid"] <= served + len(PROBLEM.val[0])
