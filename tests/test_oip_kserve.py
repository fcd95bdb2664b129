"""Our OIP client against a real server no one here wrote: KServe's ModelServer (0.21) serving
a small model that takes a normalised FP32 NCHW tensor (tests/kserve_model.py).

KServe cannot share an environment with mlserver (the ``server`` extra): it runs from its own,
``.venv-kserve`` (``make kserve``; CI makes it), or the Python named by
BLACKBOX_DFT_KSERVE_PYTHON. Without one the tests are skipped, except in CI (CI set), where
that is a failure. The server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from kserve_model import scores

from blackbox_dft.adapters.base import CallableModel
from blackbox_dft.adapters.errors import HTTPStatusError
from blackbox_dft.adapters.remote.http import HTTPModel
from blackbox_dft.adapters.remote.tensors import Preprocessing

pytestmark = [pytest.mark.network, pytest.mark.kserve]

ROOT = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT = 60.0
#: images of another size than the model's 16x16: the client resizes them
X = np.random.default_rng(3).integers(0, 256, size=(12, 24, 20, 3), dtype=np.uint8)


def _kserve_python() -> str | None:
    path = os.environ.get("BLACKBOX_DFT_KSERVE_PYTHON") or str(ROOT / ".venv-kserve/bin/python")
    return path if Path(path).exists() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def kserve(tmp_path_factory):
    python = _kserve_python()
    if python is None:
        if os.environ.get("CI"):
            pytest.fail("CI has no KServe environment: .ci/run must run `make kserve`")
        pytest.skip("no KServe environment: `make kserve` makes .venv-kserve")
    port = _free_port()
    log = open(tmp_path_factory.mktemp("kserve") / "kserve.log", "w+b")
    proc = subprocess.Popen([python, str(ROOT / "tests/kserve_model.py"), str(port), "toy"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT / "tests")
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"KServe did not start (exit {proc.poll()}):\n"
                            f"{log.read().decode()[-3000:]}")
            try:
                if requests.get(f"{base}/v2/models/toy/ready", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


def _local(fit: str = "resize") -> CallableModel:
    """The model as the client's preprocessing + the server's function, in this process."""
    spec = Preprocessing(mean="imagenet", fit=fit).spec("FP32", "NCHW", (16, 16))
    return CallableModel(lambda x: scores(spec.to_tensor(x)), name="kserve-toy-local")


def test_one_line_reads_the_metadata_and_gets_the_models_scores(kserve):
    with HTTPModel(f"{kserve}/v2/models/toy/infer", preset="oip", mean="imagenet") as m:
        got = m.predict(X)
        assert np.abs(got - _local().predict(X)).max() <= 1e-12
        # the name, datatype and shape came from KServe's metadata; KServe does not list
        # binary_tensor_data in GET /v2, so 'auto' sent JSON
        assert repr(m.preset).startswith(
            "OIPPreset(input='pixel_values' FP32 [-1, 3, 16, 16], binary=False")
        assert m.stats["metadata_requests"] == 2 and m.stats["requests"] == 1


@pytest.mark.parametrize("fit", ["resize", "letterbox"])
def test_binary_tensors_both_ways_through_kserve(kserve, fit):
    with HTTPModel(f"{kserve}/v2/models/toy/infer", preset="oip", mean="imagenet", fit=fit,
                   binary=True, images_per_request=5, concurrency=2) as m:
        got = m.predict(X)
        assert m.preset.resolved is not None and m.preset.resolved[2] is True
        assert np.abs(got - _local(fit).predict(X)).max() <= 1e-12
        assert m.stats["requests"] == 3 and m.stats["failed_attempts"] == 0


def test_kserves_refusals_are_one_line_errors(kserve):
    x = X[:2]
    m = HTTPModel(f"{kserve}/v2/models/toy/infer", preset="oip", datatype="UINT8", max_retries=1)
    with pytest.raises(HTTPStatusError, match=r"HTTP 400.*expected pixel_values FP32 "
                                              r"\[-1, 3, 16, 16\], got pixel_values UINT8"):
        m.predict(x)
    m = HTTPModel(f"{kserve}/v2/models/nosuch/infer", preset="oip", max_retries=1)
    with pytest.raises(HTTPStatusError, match=r"GET /v2/models/nosuch \(metadata.*HTTP 404"):
        m.predict(x)
    m = HTTPModel(f"{kserve}/v2/models/toy/infer", preset="oip", mean="imagenet",
                  model_version=2, max_retries=1)
    with pytest.raises(HTTPStatusError, match=r"GET /v2/models/toy/versions/2 .*HTTP 501.*"
                                              r"versioning not supported") as info:
        m.predict(x)
    assert "\n" not in str(info.value)


def test_fit_through_kserve_equals_the_local_fit(kserve):
    from blackbox_dft import SPSA, DataFineTuner, LowResolution

    y = np.arange(len(X)) % 3

    def fit(model):
        return DataFineTuner(model, task="multiclass", epsilon=8,
                             perturbation=LowResolution((6, 5)),
                             estimator=SPSA(directions=1, step=2.0), optimizer="adam",
                             learning_rate=1.0, batch_size=12, query_budget=300, seed=0,
                             progress=False).fit(X, y)

    ref = fit(_local())
    with HTTPModel(f"{kserve}/v2/models/toy/infer", preset="oip", mean="imagenet",
                   concurrency=2) as m:
        remote = fit(m)
        assert m.stats["images_answered"] == remote.queries_ == ref.queries_
    assert np.abs(ref.delta_).max() > 0 and np.array_equal(remote.delta_, ref.delta_)
