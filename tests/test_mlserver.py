"""A real model server: MLServer serving a stand-in through the custom runtime, over OIP.

Skipped when mlserver is not installed (``pip install .[server]``). To use an
mlserver installed in another environment, point BLACKBOX_DFT_MLSERVER at its
``mlserver`` executable (that environment needs numpy and opencv-python too).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from _http_helpers import dataset, linear_softmax

from blackbox_dft.adapters.errors import HTTPStatusError
from blackbox_dft.adapters.remote.http import HTTPModel

pytestmark = [pytest.mark.network, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
STARTUP_TIMEOUT = 60.0


def _mlserver_command() -> list[str] | None:
    override = os.environ.get("BLACKBOX_DFT_MLSERVER")
    if override:
        return [override]
    if importlib.util.find_spec("mlserver") is None:
        return None
    script = Path(sys.executable).with_name("mlserver")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mlserver.cli.main"]


def _free_ports(k: int) -> list[int]:
    socks = [socket.socket() for _ in range(k)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def mlserver(tmp_path_factory):
    cmd = _mlserver_command()
    if cmd is None:
        pytest.skip("mlserver is not installed (pip install .[server])")
    folder = tmp_path_factory.mktemp("mlserver")
    http_port, grpc_port, metrics_port = _free_ports(3)
    (folder / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": http_port, "grpc_port": grpc_port,
        "metrics_port": metrics_port, "metrics_endpoint": None, "parallel_workers": 0,
        "debug": False, "load_models_at_startup": True}))
    (folder / "toy").mkdir()
    (folder / "toy" / "model-settings.json").write_text(json.dumps({
        "name": "toy",
        "implementation": "blackbox_dft.adapters.serving.mlserver_runtime.StandInRuntime",
        "parameters": {"extra": {"factory": "_http_helpers:linear_softmax"}}}))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(TESTS)]))
    log = open(folder / "mlserver.log", "w+b")
    proc = subprocess.Popen([*cmd, "start", str(folder)], cwd=folder, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if proc.poll() is not None:
                log.seek(0)
                tail = log.read().decode()[-3000:]
                pytest.fail(f"mlserver exited with {proc.returncode}:\n{tail}")
            try:
                if requests.get(f"{base}/v2/models/toy/ready", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                log.seek(0)
                tail = log.read().decode()[-3000:]
                pytest.fail(f"mlserver not ready after {STARTUP_TIMEOUT}s:\n{tail}")
            time.sleep(0.25)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()
        shutil.rmtree(folder / ".metrics", ignore_errors=True)


@pytest.mark.parametrize("tensor", ["uint8", "bytes"])
def test_mlserver_answers_exactly_the_local_scores(mlserver, tensor):
    local = linear_softmax()
    x = dataset(40)[0]
    with HTTPModel(f"{mlserver}/v2/models/toy/infer", preset="oip", tensor=tensor,
                   concurrency=4, images_per_request=16) as m:
        assert np.array_equal(m.predict(x), local.predict(x))
        assert m.stats["images_answered"] == 40 and m.stats["failed_attempts"] == 0


def test_mlserver_errors_are_clear(mlserver):
    m = HTTPModel(f"{mlserver}/v2/models/nosuch/infer", preset="oip", max_retries=1, backoff=0.01)
    with pytest.raises(HTTPStatusError, match=r"HTTP 404.*nosuch"):
        m.predict(dataset(2)[0])


def test_fit_through_mlserver_equals_the_local_fit(mlserver):
    from blackbox_dft import SPSA, DataFineTuner, LowResolution

    x, y = dataset(64)

    def fit(model):
        return DataFineTuner(model, task="binary", epsilon=8, perturbation=LowResolution((8, 8)),
                             estimator=SPSA(directions=1, step=2.0), optimizer="adam",
                             learning_rate=1.0, batch_size=32, query_budget=1000, seed=0,
                             progress=False).fit(x, y)

    ref = fit(linear_softmax())
    with HTTPModel(f"{mlserver}/v2/models/toy/infer", preset="oip", concurrency=4) as m:
        remote = fit(m)
        assert m.stats["images_answered"] == remote.queries_ == ref.queries_
    assert np.array_equal(remote.delta_, ref.delta_)
