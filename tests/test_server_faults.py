"""Fault injection: retries, vendor throttles, Retry-After, and exact results under faults."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from _http_helpers import dataset, linear_softmax

import blackbox_dft.adapters.serving.server as server_mod
from blackbox_dft.adapters.errors import ResponseFormatError, ThrottledError
from blackbox_dft.adapters.remote.http import HTTPModel
from blackbox_dft.adapters.serving.server import Faults, StandInServer, serve_main

pytestmark = pytest.mark.network

FAST = {"backoff": 0.01, "max_backoff": 0.05, "timeout": (2.0, 10.0)}
ISSUE_FAULTS = {"throttle": 0.20, "retry_after": 0, "error": 0.05, "drop": 0.02}


def test_predict_is_exact_under_the_issue_faults_and_counts_each_image_once():
    local = linear_softmax()
    x = dataset(200)[0]
    with StandInServer(local, "oip", faults=Faults(**ISSUE_FAULTS, seed=7)) as srv, \
            HTTPModel(srv.url, preset="oip", concurrency=8, images_per_request=5, max_retries=8,
                      **FAST) as m:
        for _ in range(3):
            assert np.array_equal(m.predict(x), local.predict(x))
        c = srv.counts
        assert c["throttle"] > 0 and c["error"] > 0 and c["drop"] > 0
        assert srv.images_served == 3 * len(x) == m.stats["images_answered"]
        assert m.stats["failed_attempts"] >= c["throttle"] + c["error"] + c["drop"]


def test_fit_under_faults_equals_the_fault_free_fit():
    from blackbox_dft import SPSA, DataFineTuner, LowResolution

    local = linear_softmax()
    x, y = dataset(64)
    results = []
    for faults in (Faults(), Faults(**ISSUE_FAULTS, seed=3)):
        with StandInServer(local, "oip", faults=faults) as srv, \
                HTTPModel(srv.url, preset="oip", concurrency=4, images_per_request=8,
                          max_retries=8, **FAST) as m:
            tuner = DataFineTuner(m, task="binary", epsilon=8, perturbation=LowResolution((8, 8)),
                                  estimator=SPSA(directions=1, step=2.0), optimizer="adam",
                                  learning_rate=1.0, batch_size=32, query_budget=2000, seed=0,
                                  progress=False).fit(x, y)
            results.append((tuner, srv.images_served, dict(srv.counts)))
    (clean, served_clean, _), (faulty, served_faulty, counts) = results
    assert counts["throttle"] > 0 and counts["error"] > 0 and counts["drop"] > 0
    assert np.array_equal(faulty.delta_, clean.delta_)
    # the budget counted every image once: same queries, and the server answered each once
    assert faulty.queries_ == clean.queries_ == served_faulty == served_clean


@pytest.mark.parametrize("protocol, options", [
    ("facepp", {"api_key": "k", "api_secret": "s"}),
    ("clarifai", {"api_key": "k", "labels": ["no", "yes"], "images_per_request": 2}),
])
def test_vendor_throttles_that_are_not_429_are_retried(protocol, options):
    local = linear_softmax()
    x = dataset(30)[0]
    labels = options.get("labels")
    server_opts = {"labels": labels} if labels else {}
    faults = Faults(throttle=0.3, throttle_style="vendor", seed=5)
    with StandInServer(local, protocol, faults=faults, **server_opts) as srv, \
            HTTPModel(srv.url, preset=protocol, concurrency=4, max_retries=10, **FAST,
                      **options) as m:
        got = m.predict(x)
        assert srv.counts["throttle"] > 0 and m.stats["throttled"] == srv.counts["throttle"]
        assert srv.images_served == len(x)
    ref = local.predict(x)
    assert np.allclose(got[:, -1], ref[:, 1])


def test_persistent_throttle_ends_in_a_clear_error_after_the_retries():
    x = dataset(4)[0]
    faults = Faults(throttle=1.0, throttle_style="vendor")
    with StandInServer(linear_softmax(), "facepp", faults=faults) as srv:
        m = HTTPModel(srv.url, preset="facepp", api_key="k", api_secret="s", concurrency=1,
                      max_retries=3, **FAST)
        with pytest.raises(ThrottledError, match=r"throttled after 3 retries.*HTTP 403.*"
                                                 r"CONCURRENCY_LIMIT_EXCEEDED.*rate_limit"):
            m.predict(x)
        assert srv.counts["requests"] == 4 and srv.images_served == 0
    with StandInServer(linear_softmax(), "oip", faults=Faults(throttle=1.0)) as srv:
        m = HTTPModel(srv.url, preset="oip", max_retries=2, **FAST)
        with pytest.raises(ThrottledError, match="HTTP 429"):
            m.predict(x)
        assert srv.counts["requests"] == 3


def test_malformed_json_is_reported_not_retried():
    x = dataset(4)[0]
    with StandInServer(linear_softmax(), "json", faults=Faults(malformed=1.0)) as srv:
        m = HTTPModel(srv.url, **FAST)
        with pytest.raises(ResponseFormatError, match="not JSON"):
            m.predict(x)
        assert srv.counts["requests"] == 1 and srv.images_served == 0


class _RetryAfterOnce(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    times: list[float] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.times.append(time.monotonic())
        first = len(self.times) == 1
        body = b'{"error": "slow down"}' if first else b'{"scores": [[1.0]]}'
        self.send_response(429 if first else 200)
        if first:
            self.send_header("Retry-After", "1")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_retry_after_is_honoured():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _RetryAfterOnce)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        # honoured up to max_backoff (a huge Retry-After is capped: tests/test_hostile_http.py)
        m = HTTPModel(f"http://127.0.0.1:{httpd.server_address[1]}/predict",
                      **{**FAST, "max_backoff": 2.0})
        assert m.predict(np.zeros((1, 4, 4, 3), np.uint8)).tolist() == [[1.0]]
        t = _RetryAfterOnce.times
        assert len(t) == 2 and t[1] - t[0] >= 0.95  # backoff alone would be ~0.01 s
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_faults_are_seeded_and_latency_is_added():
    x = dataset(8)[0]

    def run(seed: int) -> dict[str, int]:
        with StandInServer(linear_softmax(), "json",
                           faults=Faults(throttle=0.3, error=0.2, seed=seed)) as srv:
            m = HTTPModel(srv.url, images_per_request=1, concurrency=1, max_retries=20, **FAST)
            m.predict(x)
            return dict(srv.counts)

    assert run(11) == run(11)
    with StandInServer(linear_softmax(), "json", faults=Faults(latency=0.05)) as srv:
        m = HTTPModel(srv.url, images_per_request=2, concurrency=1, **FAST)
        t0 = time.monotonic()
        m.predict(x[:4])
        assert time.monotonic() - t0 >= 0.1
    with pytest.raises(ValueError, match="sum to <= 1"):
        Faults(throttle=0.8, error=0.5)


def test_server_rejects_wrong_paths_and_bad_bodies():
    x = dataset(2)[0]
    with StandInServer(linear_softmax(), "oip", model_name="smile") as srv:
        assert srv.url.endswith("/v2/models/smile/infer")
        m = HTTPModel(srv.base_url + "/v2/models/other/infer", preset="oip", **FAST)
        with pytest.raises(Exception, match="HTTP 404.*this server answers POST /v2/models/smile"):
            m.predict(x)
        import requests

        r = requests.post(srv.url, data=b"not json", timeout=5)
        assert r.status_code == 400 and "not JSON" in r.json()["error"]
        assert requests.get(srv.base_url + "/health", timeout=5).json()["status"] == "ok"
        assert srv.images_served == 0 and srv.counts["rejected"] == 2


def test_serve_main_parses_the_cli_and_serves(monkeypatch, capsys):
    monkeypatch.setattr(server_mod, "_load_model", lambda name: linear_softmax())
    rc = serve_main(["--model", "toy", "--protocol", "tfserving", "--port", "0",
                     "--latency-ms", "5", "--throttle", "0.2", "--seed", "1"], block=False)
    out = capsys.readouterr().out
    assert rc == 0 and "as tfserving at http://127.0.0.1:" in out and ":predict" in out
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    assert serve_main(["--model", "toy", "--api-key-env", "NO_SUCH_KEY_VAR"], block=False) == 2
