"""A client no one here wrote, tritonclient[http], against the stand-in OIP server: in process
(StandInServer) and as ``serve --protocol oip`` in its own process. Every call of the issue:
is_server_live, is_server_ready, is_model_ready, get_server_metadata, get_model_metadata,
infer with binary_data True and False (and tritonclient's default: binary outputs)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _http_helpers import dataset, linear_softmax

from blackbox_dft.adapters.remote.tensors import Preprocessing
from blackbox_dft.adapters.serving.server import StandInServer

th = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is in the test extra")
pytestmark = pytest.mark.network

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = {"datatype": "FP32", "layout": "NCHW", "size": [16, 16], "mean": "imagenet"}
#: what the client sends that model: FP32 NCHW, ImageNet-normalised
SPEC = Preprocessing(mean="imagenet").spec("FP32", "NCHW", (16, 16))
SERVE = """
import sys
sys.path.insert(0, {tests!r})
from _http_helpers import linear_softmax
from blackbox_dft.adapters.serving import server
server._load_model = lambda name: linear_softmax()
sys.exit(server.serve_main(sys.argv[1:]))
"""


def _client(base_url: str) -> th.InferenceServerClient:
    return th.InferenceServerClient(base_url.removeprefix("http://"), connection_timeout=5.0,
                                    network_timeout=10.0)


def _every_call(base_url: str, name: str, version: str) -> None:
    """Each tritonclient call against a server of ``linear_softmax`` named ``name``."""
    local, x = linear_softmax(), dataset(5)[0]
    with _client(base_url) as c:
        assert c.is_server_live() and c.is_server_ready()
        assert c.is_model_ready(name) and c.is_model_ready(name, version)
        assert not c.is_model_ready("nosuch") and not c.is_model_ready(name, "99")
        server = c.get_server_metadata()
        assert server["name"] == "blackbox_dft-standin" and "binary_tensor_data" in server[
            "extensions"]
        for meta in (c.get_model_metadata(name), c.get_model_metadata(name, version)):
            assert (meta["name"], meta["versions"]) == (name, [version])
            assert meta["inputs"] == [{"name": "images", "datatype": "FP32",
                                       "shape": [-1, 3, 16, 16]}]
            assert meta["outputs"][0]["name"] == "scores"
        with pytest.raises(th.InferenceServerException, match="unknown model 'nosuch'"):
            c.get_model_metadata("nosuch")
        tensor = SPEC.to_tensor(x)
        for binary in (True, False, None):  # None: no output asked, tritonclient's default
            inp = th.InferInput("images", list(tensor.shape), "FP32")
            inp.set_data_from_numpy(tensor, binary_data=binary is not False)
            outputs = None if binary is None else [th.InferRequestedOutput(
                "scores", binary_data=binary)]
            r = c.infer(name, [inp], outputs=outputs, request_id=f"req-{binary}",
                        model_version=version)
            answer = r.get_response()
            assert (answer["id"], answer["model_name"], answer["model_version"]) == (
                f"req-{binary}", name, version)
            out = answer["outputs"][0]
            assert ("parameters" in out) == (binary is not False)  # binary_data_size
            assert ("data" in out) == (binary is False)
            assert np.array_equal(r.as_numpy("scores"), local.predict(x))


def test_tritonclient_against_the_stand_in_server():
    with StandInServer(linear_softmax(), "oip", model_name="smile", model_version="2",
                       **OPTIONS) as srv:
        _every_call(srv.base_url, "smile", "2")
        assert srv.images_served == 15 and srv.counts["rejected"] == 3  # the 404s asked for


def test_tritonclient_errors_are_the_servers_words():
    with StandInServer(linear_softmax(), "oip", **OPTIONS) as srv, _client(srv.base_url) as c:
        inp = th.InferInput("images", [1, 16, 16, 3], "UINT8")
        inp.set_data_from_numpy(dataset(1)[0])
        with pytest.raises(th.InferenceServerException, match=r"input 'images' UINT8: this model "
                                                              r"takes 'images' FP32 \[-1, 3, 16"):
            c.infer("standin", [inp])
        with pytest.raises(th.InferenceServerException, match="has no version '7'"):
            c.infer("standin", [inp], model_version="7")
        assert srv.images_served == 0


def test_tritonclient_against_serve_protocol_oip(tmp_path):
    options = [f"--preset-option={k}={v}".replace("'", '"') for k, v in OPTIONS.items()]
    argv = ["--model", "toy", "--protocol", "oip", "--port", "0", "--model-name", "smile",
            *options, "--preset-option", "model_version=2"]
    log = open(tmp_path / "serve.log", "w+")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", SERVE.format(tests=str(ROOT / "tests")),
                             *argv], stdout=log, stderr=subprocess.STDOUT, env=env, text=True)
    try:
        deadline, url = time.monotonic() + 30, ""
        while not url:
            log.seek(0)
            text = log.read()
            url = next((w for w in text.split() if w.startswith("http://127.0.0.1:")), "")
            assert proc.poll() is None, text
            assert time.monotonic() < deadline, f"serve did not start: {text}"
            time.sleep(0.1)
        assert url.endswith("/v2/models/smile/infer")
        _every_call(url.split("/v2/")[0], "smile", "2")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
