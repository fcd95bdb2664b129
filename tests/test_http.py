"""HTTPModel against the stand-in server: formats, order, batching, secrets, bad answers, e2e."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from _http_helpers import Recorder, dataset, linear_softmax, mean_colour

from blackbox_dft.adapters.errors import (
    AuthenticationError,
    EndpointUnreachable,
    HTTPStatusError,
    ResponseFormatError,
)
from blackbox_dft.adapters.remote.http import HTTPModel, safe_url
from blackbox_dft.adapters.serving.server import StandInServer
from blackbox_dft.core.model import ModelError
from blackbox_dft.testing import check_model

pytestmark = pytest.mark.network

FAST = {"backoff": 0.01, "max_backoff": 0.05, "timeout": (2.0, 10.0)}
LABELS = ["no", "yes"]
SECRET = "sk-test-0123456789abcdef"

# protocol -> (server options, client options): every preset that answers exact scores
EXACT = {
    "oip": ({}, {}),
    "oip-bytes": ({}, {"tensor": "bytes"}),
    "json": ({}, {}),
    "tfserving": ({}, {}),
    "tfserving-b64": ({}, {"tensor": "b64"}),
    "torchserve": ({"labels": LABELS}, {"labels": LABELS}),
    "clarifai": ({"labels": LABELS}, {"labels": LABELS, "api_key": SECRET}),
}


@pytest.fixture(scope="module")
def model():
    return linear_softmax()


@pytest.fixture(scope="module")
def images():
    return dataset(40)[0]


@pytest.mark.parametrize("case", sorted(EXACT))
def test_every_exact_preset_round_trips_bit_for_bit(case, model, images):
    server_opts, client_opts = EXACT[case]
    proto = case.split("-")[0]
    with StandInServer(model, proto, **server_opts) as srv, \
            HTTPModel(srv.url, preset=proto, concurrency=3, **FAST, **client_opts) as remote:
        got = remote.predict(images)
        assert np.array_equal(got, model.predict(images))
        assert srv.images_served == len(images) == remote.stats["images_answered"]


def test_scores_come_back_in_input_order_across_many_concurrent_requests():
    local = mean_colour()
    x = np.random.default_rng(3).integers(0, 256, size=(97, 5, 7, 3), dtype=np.uint8)
    with StandInServer(local, "json") as srv, \
            HTTPModel(srv.url, concurrency=8, images_per_request=3, **FAST) as remote:
        assert np.array_equal(remote.predict(x), local.predict(x))
        assert remote.stats["requests"] == 33  # ceil(97 / 3), no retry
        check_model(remote)


def test_png_is_lossless_and_the_server_sees_exactly_the_images_sent(images):
    rec = Recorder(linear_softmax())
    with StandInServer(rec, "oip") as srv, \
            HTTPModel(srv.url, preset="oip", tensor="bytes", images_per_request=40, **FAST) as m:
        m.predict(images)
    assert len(rec.seen) == 1 and np.array_equal(rec.seen[0], images)


def test_jpeg_warns_and_is_lossy(images):
    rec = Recorder(linear_softmax())
    with pytest.warns(UserWarning, match="lossy"):
        m = HTTPModel("http://127.0.0.1:1/x", preset="json", encoding="jpeg")
    with StandInServer(rec, "json") as srv:
        m.url = srv.url
        m.predict(images)
    assert not np.array_equal(np.concatenate(rec.seen), images)


def test_batching_respects_the_vendor_cap():
    with pytest.raises(ValueError, match="at most 16"):
        HTTPModel("http://127.0.0.1:1/v1/images:annotate", preset="gcv", api_key="k",
                  images_per_request=17)
    with pytest.raises(ValueError, match="at most 1 "):
        HTTPModel("http://127.0.0.1:1/facepp/v3/detect", preset="facepp", api_key="k",
                  api_secret="s", images_per_request=2)
    m = HTTPModel("http://h/x", preset="clarifai", labels=["a"], api_key="k")
    assert m.images_per_request == 32


def test_rate_limit_spaces_request_starts(images):
    with StandInServer(linear_softmax(), "json") as srv, \
            HTTPModel(srv.url, images_per_request=4, concurrency=4, rate_limit=40.0, **FAST) as m:
        t0 = time.monotonic()
        m.predict(images)  # 10 requests at 40 per second: at least 9 intervals of 25 ms
        assert time.monotonic() - t0 >= 0.2


def test_secrets_never_appear_in_repr_errors_or_messages(images, monkeypatch):
    monkeypatch.setenv("CLARIFAI_PAT", SECRET)
    with StandInServer(linear_softmax(), "clarifai", labels=LABELS, api_key="other") as srv:
        m = HTTPModel(srv.url + f"?key={SECRET}", preset="clarifai", labels=LABELS, **FAST,
                      headers={"X-Api-Token": SECRET + "x"})
        assert SECRET not in repr(m) and "hidden" in repr(m)
        with pytest.raises(AuthenticationError) as info:
            m.predict(images)
    text = str(info.value) + info.value.url + info.value.vendor_message
    assert SECRET not in text and "11009" in text and "CLARIFAI_PAT" in text
    assert safe_url(f"http://u:{SECRET}@h:1/p?key={SECRET}") == "http://h:1/p?key=***"


def test_a_wrong_key_gives_one_clear_error_and_no_further_paid_requests(images):
    with StandInServer(linear_softmax(), "facepp", api_key="right") as srv:
        m = HTTPModel(srv.url, preset="facepp", api_key="wrong", api_secret="s",
                      concurrency=1, **FAST)
        with pytest.raises(AuthenticationError, match=r"HTTP 401.*AUTHENTICATION_ERROR"):
            m.predict(images)
        for _ in range(3):  # a caller's loop: latched, nothing more is sent
            with pytest.raises(AuthenticationError, match="nothing was sent"):
                m.predict(images)
        assert srv.counts["requests"] == 1 and srv.images_served == 0
        m.reset()
        with pytest.raises(AuthenticationError):
            m.predict(images[:1])
        assert srv.counts["requests"] == 2


def test_a_url_that_does_not_answer_names_the_url_and_what_to_check(images):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    m = HTTPModel(f"http://127.0.0.1:{port}/predict", max_retries=2, **FAST)
    t0 = time.monotonic()
    pattern = rf"127.0.0.1:{port}/predict.*no answer.*server is up"
    with pytest.raises(EndpointUnreachable, match=pattern):
        m.predict(images)
    assert time.monotonic() - t0 < 5
    assert isinstance(EndpointUnreachable("x"), ModelError)


class _Canned(BaseHTTPRequestHandler):
    """Answers every POST with the class's canned (status, content-type, body)."""

    protocol_version = "HTTP/1.1"
    answer: tuple[int, str, bytes] = (200, "application/json", b"{}")
    hits = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).hits += 1
        status, ctype, body = self.answer
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("answer, error, pattern", [
    ((200, "text/html", b"<html>login</html>"), ResponseFormatError, "not JSON.*<html>"),
    ((200, "application/json", b'{"predictions": [[0.5]]}'), ResponseFormatError,
     r"scores_path 'scores' not in the answer.*keys there: \['predictions'\]"),
    ((200, "application/json", b'{"scores": [[0.5, 0.5]]}'), ResponseFormatError,
     "scores for 1 images, 4 were sent"),
    ((403, "application/json", b'{"error": "key revoked"}'), AuthenticationError,
     "HTTP 403.*key revoked.*API key"),
    ((404, "application/json", b'{"error": "no such model"}'), HTTPStatusError,
     "HTTP 404.*no such model.*URL path"),
    ((500, "text/plain", b"boom"), HTTPStatusError, "after 2 retries.*HTTP 500.*boom"),
])
def test_bad_answers_give_one_clear_error(answer, error, pattern):
    handler = type("H", (_Canned,), {"answer": answer, "hits": 0})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/predict"
        m = HTTPModel(url, max_retries=2, **FAST)
        x = np.zeros((4, 8, 8, 3), np.uint8)
        with pytest.raises(error, match=pattern):
            m.predict(x)
        assert handler.hits == (3 if answer[0] == 500 else 1)  # only 5xx are retried
        if answer[0] != 500:  # latched: a second call sends nothing
            with pytest.raises(error):
                m.predict(x)
            assert handler.hits == 1
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_generic_json_template_dotted_path_labels_and_callable(images):
    local = linear_softmax()
    with StandInServer(local, "json") as srv:
        m = HTTPModel(srv.url, template={"images": "$images", "top_k": 2}, scores_path="scores")
        assert np.array_equal(m.predict(images), local.predict(images))
        m2 = HTTPModel(srv.url, parse=lambda body, n: [row[::-1] for row in body["scores"]])
        assert np.array_equal(m2.predict(images), local.predict(images)[:, ::-1])
    from blackbox_dft.adapters.remote.wire import get_path, rows_from_entries
    body = {"result": {"items": [{"cat": 0.1, "dog": 0.9}, {"dog": 0.2, "cat": 0.8}]}}
    got = rows_from_entries(get_path(body, "result.items"), 2, ["dog", "cat"])
    assert got.tolist() == [[0.9, 0.1], [0.2, 0.8]]
    assert get_path({"outputs": [{"data": [1, 2]}]}, "outputs.0.data") == [1, 2]
    with pytest.raises(ValueError, match='"\\$images"'):
        HTTPModel("http://h/x", template={"inputs": []})


def test_vendor_presets_map_documented_answers_to_scores():
    from blackbox_dft.adapters.remote.vendors import make_preset

    facepp = make_preset("facepp", outputs=["smile", "emotion:happiness"])
    doc = {"request_id": "1", "faces": [{"face_token": "t", "attributes": {
        "smile": {"value": 92.5, "threshold": 50.0},
        "emotion": {"anger": 0.1, "disgust": 0.1, "fear": 0.1, "happiness": 97.0,
                    "neutral": 2.5, "sadness": 0.1, "surprise": 0.1}}}], "face_num": 1}
    assert np.allclose(facepp.parse_response(doc, 1), [[0.925, 0.97]])
    assert facepp.parse_response({"faces": []}, 1).tolist() == [[0.0, 0.0]]
    assert facepp.is_throttle(403, {"error_message": "CONCURRENCY_LIMIT_EXCEEDED"})
    assert facepp.is_auth_error(403, {"error_message": "AUTHORIZATION_ERROR:Denied"})

    gcv = make_preset("gcv", outputs=["joy", "sorrow"])
    doc = {"responses": [{"faceAnnotations": [{"joyLikelihood": "VERY_LIKELY",
                                               "sorrowLikelihood": "UNLIKELY"}]}, {}]}
    assert gcv.parse_response(doc, 2).tolist() == [[1.0, 0.25], [0.0, 0.0]]
    with pytest.raises(ResponseFormatError, match="INVALID_ARGUMENT"):
        gcv.parse_response({"responses": [{"error": {"code": 3, "status": "INVALID_ARGUMENT",
                                                     "message": "Bad image data."}}]}, 1)

    clarifai = make_preset("clarifai", labels=["smiling", "neutral"])
    doc = {"status": {"code": 10000, "description": "Ok"}, "outputs": [{"data": {"concepts": [
        {"id": "ai_1", "name": "smiling", "value": 0.8}]}}]}
    assert clarifai.parse_response(doc, 1).tolist() == [[0.8, 0.0]]
    throttled = {"status": {"code": 11005, "description": "Making too many requests"}}
    assert clarifai.is_throttle(200, throttled) and not clarifai.is_throttle(200, doc)
    assert clarifai.is_auth_error(200, {"status": {"code": 11008}})
    with pytest.raises(ValueError, match="labels"):
        make_preset("clarifai")
    with pytest.raises(ValueError, match="RekognitionModel"):
        make_preset("rekognition")


def test_vendor_round_trip_through_the_stand_in_server(images):
    local = linear_softmax()
    p_yes = local.predict(images)[:, 1]
    with StandInServer(local, "facepp") as srv, HTTPModel(
            srv.url, preset="facepp", api_key="k", api_secret="s", concurrency=4, **FAST) as m:
        assert np.allclose(m.predict(images)[:, 0], p_yes)
    with StandInServer(local, "gcv") as srv, \
            HTTPModel(srv.url, preset="gcv", api_key="k", **FAST) as m:
        expected = np.minimum(4, (p_yes * 5).astype(int)) / 4.0
        assert np.array_equal(m.predict(images)[:, 0], expected)
        assert srv.counts["requests"] == 3  # 40 images in requests of up to 16


def test_rekognition_with_a_fake_client_maps_smile_and_emotions():
    from blackbox_dft.adapters.remote.rekognition import RekognitionModel

    class FakeClient:
        calls = 0

        def detect_faces(self, Image, Attributes):
            assert Image["Bytes"][:4] == b"\x89PNG" and Attributes == ["ALL"]
            FakeClient.calls += 1
            if Image["Bytes"] == self.empty:
                return {"FaceDetails": []}
            return {"FaceDetails": [{"Smile": {"Value": False, "Confidence": 90.0},
                                     "Emotions": [{"Type": "HAPPY", "Confidence": 20.0}]}]}

    from blackbox_dft.adapters.remote.wire import encode_image
    x = np.zeros((3, 8, 8, 3), np.uint8)
    x[1] += 1
    client = FakeClient()
    client.empty = encode_image(x[2])
    x[2] += 2
    client.empty = encode_image(x[2])
    m = RekognitionModel(outputs=["smile", "emotion:HAPPY"], client=client, concurrency=2)
    assert np.allclose(m.predict(x), [[0.1, 0.2], [0.1, 0.2], [0.0, 0.0]])

    class Denied(Exception):
        response = {"Error": {"Code": "UnrecognizedClientException", "Message": "bad token"}}

    class DenyingClient:
        calls = 0

        def detect_faces(self, **kw):
            DenyingClient.calls += 1
            raise Denied()

    m = RekognitionModel(client=DenyingClient(), concurrency=1)
    with pytest.raises(AuthenticationError, match="bad token"):
        m.predict(x)
    with pytest.raises(AuthenticationError):
        m.predict(x)
    assert DenyingClient.calls == 1


def test_rekognition_compare_faces_with_a_fake_client_is_a_pair_model():
    from blackbox_dft.adapters.remote.rekognition import RekognitionCompareModel
    from blackbox_dft.adapters.remote.wire import decode_image
    from blackbox_dft.tasks.verification import VerificationTuner

    class InvalidParameter(Exception):
        response = {"Error": {"Code": "InvalidParameterException",
                              "Message": "There are no faces in the image"}}

    class FakeClient:
        calls = 0

        def compare_faces(self, SourceImage, TargetImage, SimilarityThreshold):
            assert SimilarityThreshold == 0.0
            FakeClient.calls += 1
            a, b = decode_image(SourceImage["Bytes"]), decode_image(TargetImage["Bytes"])
            if a.max() == 0:  # a black source: Rekognition finds no face in it
                raise InvalidParameter()
            if b.max() == 0:
                return {"FaceMatches": [], "UnmatchedFaces": []}
            sim = 100.0 - float(np.abs(a.astype(int) - b.astype(int)).mean())
            return {"FaceMatches": [{"Similarity": sim - 5.0}, {"Similarity": sim}],
                    "UnmatchedFaces": []}

    rng = np.random.default_rng(0)
    a = rng.integers(1, 256, size=(4, 8, 8, 3), dtype=np.uint8)
    b = a.copy()
    b[1] = np.clip(b[1].astype(int) + 20, 0, 255).astype(np.uint8)
    a[2] = 0
    b[3] = 0
    m = RekognitionCompareModel(client=FakeClient(), concurrency=2)
    sims = m.compare(a, b)
    assert sims[0] == 1.0 and 0.75 < sims[1] < 0.85 and sims[2] == sims[3] == 0.0
    assert m.no_face_pairs == 2 and FakeClient.calls == 4
    with pytest.raises(TypeError, match="compare"):
        m.predict(a)
    # a fit through it: pairs cost 2 images each, and the vendor's threshold is kept
    x = rng.integers(1, 256, size=(12, 8, 8, 3), dtype=np.uint8)
    pairs = np.array([[i, (i + 1) % 12, int(i % 2 == 0)] for i in range(12)])
    t = VerificationTuner(m, threshold=0.8, query_budget=600, batch_size=4,
                          validation_every=2, seed=0).fit(x, pairs, validation=(x, pairs))
    assert t.queries_ <= 600 and t.threshold_ == 0.8 and t.queries_ % 2 == 0




def _fit(model):
    from blackbox_dft import SPSA, DataFineTuner, LowResolution

    x, y = dataset(64)
    return DataFineTuner(model, task="binary", epsilon=8, perturbation=LowResolution((8, 8)),
                         estimator=SPSA(directions=1, step=2.0), optimizer="adam",
                         learning_rate=1.0, batch_size=32, query_budget=2000, seed=0,
                         progress=False).fit(x, y)


@pytest.mark.parametrize("protocol", ["oip", "json"])
def test_fit_through_http_equals_the_local_fit_and_the_server_count(protocol):
    local = linear_softmax()
    ref = _fit(local)
    with StandInServer(local, protocol) as srv, \
            HTTPModel(srv.url, preset=protocol, concurrency=4, images_per_request=16, **FAST) as m:
        remote = _fit(m)
        assert srv.images_served == remote.queries_
    assert remote.queries_ == ref.queries_ > 0
    assert np.array_equal(remote.delta_, ref.delta_)
    assert np.abs(ref.delta_).max() > 0


def test_environment_secrets_and_missing_secret_message(monkeypatch):
    monkeypatch.delenv("FACEPP_API_SECRET", raising=False)
    monkeypatch.setenv("FACEPP_API_KEY", "from-env")
    with pytest.raises(ValueError, match=r"\['api_secret'\].*FACEPP_API_SECRET"):
        HTTPModel("http://h/facepp/v3/detect", preset="facepp")
    monkeypatch.setenv("FACEPP_API_SECRET", "also-env")
    m = HTTPModel("http://h/facepp/v3/detect", preset="facepp")
    assert "from-env" not in repr(m) and "also-env" not in repr(m)
    assert os.environ["FACEPP_API_KEY"] == "from-env"


def test_a_decision_only_api_is_read_as_one_hot_labels_and_needs_the_label_loss():
    from blackbox_dft import DataFineTuner
    from blackbox_dft.adapters.remote.wire import get_path, rows_from_entries
    body = {"results": [{"label": "smiling"}, {"label": "not_smiling"}, {"label": "smiling"},
                        {"label": "not_smiling"}]}
    handler = type("H", (_Canned,), {"answer": (200, "application/json",
                                                json.dumps(body).encode()), "hits": 0})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/predict"
        m = HTTPModel(url, scores_path="results.*.label", labels=["not_smiling", "smiling"],
                      output_kind="labels", images_per_request=4, **FAST)
        got = m.predict(np.zeros((4, 8, 8, 3), np.uint8))
        assert got.tolist() == [[0, 1], [1, 0], [0, 1], [1, 0]]
        x, y = np.zeros((8, 8, 8, 3), np.uint8), np.array([0, 1] * 4)
        with pytest.raises(ValueError, match="returns only labels.*scores='labels'"):
            DataFineTuner(m, "binary", query_budget=100, progress=False).fit(x, y)
        assert handler.hits == 1  # refused before any paid request
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert rows_from_entries([True, False], 2).tolist() == [[0, 1], [1, 0]]
    with pytest.raises(ResponseFormatError, match="'happy' is not one of"):
        rows_from_entries(["happy"], 1, ["not_smiling", "smiling"])
    with pytest.raises(ResponseFormatError, match="pass labels="):
        rows_from_entries(["smiling"], 1)
    with pytest.raises(KeyError, match="'\\*' needs a list"):
        get_path({"results": {"a": 1}}, "results.*.label")
    with pytest.raises(ValueError, match="output_kind must be one of"):
        HTTPModel(url, output_kind="decision")
