"""The Open Inference Protocol client: preprocessing, metadata, the binary extension, request
ids, versions, against the stand-in server (and its metadata GETs against hostile servers)."""

from __future__ import annotations

import json
import logging
import re
import time

import cv2
import numpy as np
import pytest
from _http_helpers import dataset, linear_softmax
from test_hostile_http import (  # the hostile-server table, reused for the metadata GETs
    EXPECT,
    HANG,
    HDR,
    KEY,
    LATCHED,
    OPTS,
    QS,
    SHORT_DEADLINE,
    chain_texts,
    expectation,
    leaks,
    servers,  # noqa: F401 - a fixture
)

from blackbox_dft.adapters.errors import EndpointUnreachable, HTTPStatusError, ResponseFormatError
from blackbox_dft.adapters.remote.http import HTTPModel
from blackbox_dft.adapters.remote.oip import OIPPreset
from blackbox_dft.adapters.remote.oip_binary import (
    HEADER,
    decode_outputs,
    pack,
    split,
    tensor_bytes,
)
from blackbox_dft.adapters.remote.oip_metadata import Route, choose_input
from blackbox_dft.adapters.remote.tensors import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from blackbox_dft.adapters.remote.wire import encode_image
from blackbox_dft.adapters.serving.server import StandInServer
from blackbox_dft.core.model import ModelError, answered_of, unsent_of

pytestmark = pytest.mark.network
FAST = {"max_retries": 1, "backoff": 0.01, "timeout": (2.0, 10.0)}
RNG = np.random.default_rng(5)
X = RNG.integers(0, 256, size=(6, 20, 24, 3), dtype=np.uint8)


# -- preprocessing -----------------------------------------------------------------------
@pytest.mark.parametrize("datatype", ["FP32", "FP16", "UINT8"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("channels", ["RGB", "BGR"])
def test_tensor_is_the_formula_and_the_server_inverts_it_exactly(datatype, layout, channels):
    x = X[:, :16, :16]
    norm = {"mean": "imagenet"} if datatype != "UINT8" else {}
    spec = Preprocessing(channels=channels, **norm).spec(datatype, layout, None)
    t = spec.to_tensor(x)
    want = x[..., ::-1] if channels == "BGR" else x
    if datatype != "UINT8":
        mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
        if channels == "BGR":
            mean, std = mean[::-1], std[::-1]
        want = (want / 255.0 - mean) / std
    if layout == "NCHW":
        want = want.transpose(0, 3, 1, 2)
    assert t.dtype == {"FP32": np.float32, "FP16": np.float16, "UINT8": np.uint8}[datatype]
    assert t.shape == want.shape and t.flags.c_contiguous
    tol = {"FP32": 1e-5, "FP16": 4e-3, "UINT8": 0}[datatype]
    assert np.abs(t.astype(np.float64) - want).max() <= tol
    assert np.array_equal(spec.from_tensor(t), x)  # exact, FP16 included


def test_resize_and_letterbox_bring_images_to_the_size():
    white = np.full((1, 10, 20, 3), 255, np.uint8)  # wide: bars above and below
    box = Preprocessing(fit="letterbox").spec("UINT8", "NHWC", (16, 16)).resized(white)[0]
    assert box.shape == (16, 16, 3)
    assert (box[:4] == 0).all() and (box[12:] == 0).all() and (box[4:12] == 255).all()
    stretched = Preprocessing().spec("UINT8", "NHWC", (16, 16)).resized(X)
    want = np.stack([cv2.resize(im, (16, 16), interpolation=cv2.INTER_AREA) for im in X])
    assert np.array_equal(stretched, want)
    spec = Preprocessing().spec("UINT8", "NHWC", None)
    assert spec.resized(X) is X and spec.shape() == [-1, -1, -1, 3]


@pytest.mark.parametrize("options, pattern", [
    ({"datatype": "INT64"}, r"datatype must be one of .*got 'INT64'"),
    ({"layout": "NWHC"}, r"layout must be one of .*got 'NWHC'"),
    ({"size": 0}, r"size must be a positive int or \[height, width\], got 0"),
    ({"size": [1, 2, 3]}, r"got \[1, 2, 3\]"),
    ({"scale": 0}, r"scale must be a number > 0 .*got 0"),
    ({"mean": [1, 2]}, r"mean must be a number, 3 numbers .*got \[1, 2\]"),
    ({"std": [1, 0, 1]}, r"std must be a number, 3 positive numbers .*got \[1, 0, 1\]"),
    ({"fit": "crop"}, r"fit must be one of \['resize', 'letterbox'\], got 'crop'"),
    ({"channels": "RGBA"}, r"got 'RGBA'"),
    ({"tensor": "float"}, r"tensor must be 'uint8' or 'bytes', got 'float'"),
    ({"tensor": "uint8", "datatype": "FP32"}, r"tensor='uint8' and datatype='FP32' disagree"),
    ({"binary": "yes"}, r"binary must be True, False or 'auto', got 'yes'"),
    ({"datatype": "FP16", "binary": False}, r"FP16 cannot travel as JSON .*binary=True"),
    ({"input_name": ""}, r"input_name must be a non-empty string, got ''"),
])
def test_option_errors_are_one_line_naming_the_value(options, pattern):
    with pytest.raises(ValueError, match=pattern) as info:
        OIPPreset(**options)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("options, datatype, pattern", [
    ({"mean": "imagenet"}, "UINT8", r"\{'mean': 'imagenet'\} needs a float tensor, but the input "
                                    r"is UINT8: pass datatype='FP32'"),
    ({"scale": 0.5}, "BYTES", r"\{'scale': 0.5\} needs a float tensor, but the input is BYTES"),
    ({"layout": "NCHW"}, "BYTES", r"layout='NCHW' / channels='RGB' apply to tensors of pixels"),
    ({"fit": "letterbox"}, "FP32", r"fit='letterbox' needs a size"),
])
def test_combinations_that_cannot_work_are_one_line_errors(options, datatype, pattern):
    with pytest.raises(ValueError, match=pattern):
        Preprocessing(**options).spec(datatype, "NCHW" if datatype != "BYTES" else "NHWC", None)


# -- metadata ------------------------------------------------------------------------------
def _meta(*inputs):
    return {"name": "m", "inputs": [{"name": n, "datatype": d, "shape": s} for n, d, s in inputs]}


def test_the_metadata_says_the_input_name_datatype_layout_size_and_batch_axis():
    pre = Preprocessing(mean="imagenet")
    name, spec = choose_input(_meta(("pixel_values", "FP32", [-1, 3, 224, 224])), None, pre)
    assert (name, spec.datatype, spec.layout, spec.size, spec.batched) == (
        "pixel_values", "FP32", "NCHW", (224, 224), True)
    assert spec.mean == IMAGENET_MEAN and spec.scale == pytest.approx(1 / 255)
    name, spec = choose_input(_meta(("x", "UINT8", [-1, -1, -1, 3])), None, Preprocessing())
    assert (name, spec.datatype, spec.layout, spec.size) == ("x", "UINT8", "NHWC", None)
    name, spec = choose_input(_meta(("x", "FP16", [3, 32, 32])), None, Preprocessing())
    assert (spec.batched, spec.size, spec.shape(1)) == (False, (32, 32), [3, 32, 32])
    two = _meta(("mask", "INT64", [-1, 7]), ("img", "FP32", [-1, 64, 64, 3]))
    assert choose_input(two, None, Preprocessing())[0] == "img"  # the one image input
    name, spec = choose_input({"name": "m", "inputs": []}, None, Preprocessing())
    assert (name, spec.datatype, spec.layout) == ("images", "UINT8", "NHWC")  # MLServer's
    name, spec = choose_input(_meta(("a", "FP32", [-1, 3, 8, 8])), "a", Preprocessing(size=8))
    assert spec.size == (8, 8)  # the user's value agrees with the metadata


@pytest.mark.parametrize("meta, name, options, pattern", [
    (_meta(("a", "FP32", [-1, 3, 8, 8]), ("b", "FP32", [-1, 3, 8, 8])), None, {},
     r"the model has 2 inputs \('a' FP32 \[-1, 3, 8, 8\], 'b' .*pass input_name="),
    (_meta(("a", "FP32", [-1, 3, 8, 8])), "images", {},
     r"input_name='images' is not an input of the model; its inputs: 'a' FP32"),
    (_meta(("a", "INT64", [-1, 3, 8, 8])), None, {}, r"'a' INT64 \[-1, 3, 8, 8\] is not one of"),
    (_meta(("a", "FP32", [-1, 1, 28, 28])), None, {}, r"'a' FP32 \[-1, 1, 28, 28\] is not an "
                                                      r"image tensor with 3 channels"),
    (_meta(("a", "FP32", [-1, 3, 8, 8])), None, {"layout": "NHWC"},
     r"layout='NHWC' contradicts the model's input 'a' FP32 \[-1, 3, 8, 8\] \(NCHW\)"),
    (_meta(("a", "FP32", [-1, 3, 8, 8])), None, {"size": 16},
     r"size=\[16, 16\] contradicts the model's input .* \(8x8\)"),
    (_meta(("a", "FP32", "[-1, 3, 8, 8]")), None, {}, r"shape '\[-1, 3, 8, 8\]', not a list"),
])
def test_metadata_that_does_not_fit_is_a_one_line_error(meta, name, options, pattern):
    with pytest.raises(ValueError, match=pattern) as info:
        choose_input(meta, name, Preprocessing(**options))
    assert "\n" not in str(info.value)


def test_routes_from_the_infer_url_keep_its_query_and_version():
    r = Route.parse("https://h:8/base/v2/models/res%20net/infer?key=K")
    assert (r.name, r.version) == ("res%20net", None)
    assert r.model_url == "https://h:8/base/v2/models/res%20net?key=K"
    assert r.server_url == "https://h:8/base/v2?key=K"
    v = Route.parse("http://h/v2/models/m/infer", version=3)
    assert v.infer_url == "http://h/v2/models/m/versions/3/infer"
    assert Route.parse("http://h/v2/models/m/versions/3/infer", "3").model_url.endswith(
        "/v2/models/m/versions/3")
    with pytest.raises(ValueError, match="model_version='4' but the URL asks for version '3'"):
        Route.parse("http://h/v2/models/m/versions/3/infer", "4")
    assert Route.parse("http://h/v2/models/m/").infer_url == "http://h/v2/models/m/infer"
    with pytest.raises(ValueError, match=r"'/predict' is not an Open Inference Protocol infer"):
        Route.parse("http://h/predict")


# -- binary tensor extension ------------------------------------------------------------
def test_binary_tensors_round_trip_and_bad_sizes_are_refused():
    scores = RNG.normal(size=(3, 5))
    files = [b"\x89PNG one", b"", b"three"]
    header = {"outputs": [
        {"name": "s", "datatype": "FP64", "shape": [3, 5], "parameters": {}},
        {"name": "f", "datatype": "BYTES", "shape": [3], "parameters": {}},
        {"name": "j", "datatype": "FP32", "shape": [1], "data": [0.5]}]}
    blobs = [tensor_bytes(scores, "FP64"), tensor_bytes(files, "BYTES")]
    header["outputs"][0]["parameters"]["binary_data_size"] = len(blobs[0])
    header["outputs"][1]["parameters"]["binary_data_size"] = len(blobs[1])
    body, k = pack(header, blobs)
    head, tail = split(body, {HEADER: str(k)})
    assert len(blobs[0]) == 15 * 8 and len(blobs[1]) == 3 * 4 + 13
    import json
    got = json.loads(head)
    decode_outputs(got, tail)
    assert np.array_equal(got["outputs"][0]["data"], scores)
    assert got["outputs"][1]["data"] == files and got["outputs"][2]["data"] == [0.5]
    assert split(b"{}", {}) is None
    with pytest.raises(ValueError, match=f"{HEADER} is '99', not a length within"):
        split(b"{}", {HEADER: "99"})
    with pytest.raises(ValueError, match="binary_data_size 200 does not fit the 145 bytes"):
        got = json.loads(head)
        got["outputs"][0]["parameters"]["binary_data_size"] = 200
        decode_outputs(got, tail)
    with pytest.raises(ValueError, match="3 bytes after the last binary tensor"):
        decode_outputs(json.loads(head), tail + b"xyz")


# -- against the stand-in server ---------------------------------------------------------
class _Wire:
    """Records, on the server, what each infer request carried."""

    def __init__(self, server: StandInServer) -> None:
        self.seen: list[tuple[bool, str, str, list]] = []
        preset, read = server.routes.preset, server.routes.preset.read_infer

        def recording(body, headers):
            images, request = read(body, headers)
            inp = request["inputs"][0]
            self.seen.append((headers.get(HEADER) is not None, request.get("id"),
                              inp["datatype"], inp["shape"]))
            return images, request

        preset.read_infer = recording


@pytest.mark.parametrize("datatype, layout, binary", [
    (d, layout, b) for d, layout in (("FP32", "NCHW"), ("FP16", "NCHW"), ("FP32", "NHWC"),
                                     ("UINT8", "NCHW"))
    for b in ("auto", True, False) if (d, b) != ("FP16", False)])  # FP16: binary only
def test_one_line_client_gets_the_local_scores_in_every_format(datatype, layout, binary):
    local, x = linear_softmax(), dataset(10)[0]
    norm = {"mean": "imagenet"} if datatype != "UINT8" else {}
    with StandInServer(local, "oip", model_name="smile", datatype=datatype, layout=layout,
                       size=[16, 16], **norm) as srv:
        wire = _Wire(srv)
        with HTTPModel(srv.url, preset="oip", binary=binary, images_per_request=4, **norm,
                       **FAST) as m:
            assert np.array_equal(m.predict(x), local.predict(x))
            assert m.stats["requests"] == 3 and srv.images_served == 10
            name, spec, sent_binary = m.preset.resolved
    assert (name, spec.datatype, spec.layout, spec.size) == ("images", datatype, layout,
                                                             (16, 16))
    assert sent_binary == (binary is not False)  # the stand-in lists binary_tensor_data
    shape = [3, 16, 16] if layout == "NCHW" else [16, 16, 3]
    assert {(b, d, str(s[1:])) for b, _, d, s in wire.seen} == {(sent_binary, datatype,
                                                                 str(shape))}
    assert sorted(s[0] for *_, s in wire.seen) == [2, 4, 4]
    ids = [i for _, i, _, _ in wire.seen]
    assert len(set(ids)) == 3 and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


def test_the_client_preprocesses_images_of_any_size_to_the_model_size():
    local = linear_softmax()
    with StandInServer(local, "oip", datatype="FP32", layout="NCHW", size=[16, 16],
                       mean=0.5, std=0.25) as srv:
        for fit in ("resize", "letterbox"):
            with HTTPModel(srv.url, preset="oip", mean=0.5, std=0.25, fit=fit, **FAST) as m:
                want = Preprocessing(fit=fit).spec("UINT8", "NHWC", (16, 16)).resized(X)
                assert np.array_equal(m.predict(X), local.predict(want))


def test_bytes_tensors_resized_and_binary():
    local, x = linear_softmax(), dataset(4)[0]
    big = np.stack([cv2.resize(im, (32, 32), interpolation=cv2.INTER_NEAREST) for im in x])
    with StandInServer(local, "oip") as srv:
        wire = _Wire(srv)
        with HTTPModel(srv.url, preset="oip", datatype="BYTES", size=16, binary=True,
                       **FAST) as m:
            want = Preprocessing().spec("UINT8", "NHWC", (16, 16)).resized(big)
            assert np.array_equal(m.predict(big), local.predict(want))
    assert wire.seen[0][0] and wire.seen[0][2:] == ("BYTES", [4])
    assert encode_image(x[0])  # the files are PNG: lossless


def test_versions_name_and_id_on_the_wire_and_in_the_answer():
    local, x = linear_softmax(), dataset(3)[0]
    with StandInServer(local, "oip", model_name="smile", model_version="3") as srv:
        with HTTPModel(srv.url, preset="oip", model_version=3, **FAST) as m:
            assert np.array_equal(m.predict(x), local.predict(x))
            assert m.url.endswith("/v2/models/smile/versions/3/infer")
        with HTTPModel(srv.base_url + "/v2/models/smile", preset="oip", **FAST) as m:
            assert np.array_equal(m.predict(x), local.predict(x))  # the model's URL will do
            assert m.url == srv.url
        m = HTTPModel(srv.url, preset="oip", model_version="4", **FAST)
        with pytest.raises(HTTPStatusError, match=r"GET /v2/models/smile/versions/4 \(metadata.*"
                                                  r"HTTP 404.*has no version '4'") as info:
            m.predict(x)
        assert answered_of(info.value)[0].size == 0  # nothing answered, nothing sent:
        assert unsent_of(info.value).tolist() == [0, 1, 2]
        import requests

        body = {"id": "my-id", "inputs": [{"name": "images", "shape": [1, 16, 16, 3],
                                           "datatype": "UINT8", "data": x[0].ravel().tolist()}]}
        answer = requests.post(srv.base_url + "/v2/models/smile/versions/3/infer", json=body,
                               timeout=5).json()
        assert (answer["id"], answer["model_name"], answer["model_version"]) == (
            "my-id", "smile", "3")


def test_a_metadata_that_does_not_fit_is_latched_and_nothing_is_sent():
    with StandInServer(linear_softmax(), "oip", datatype="FP32", layout="NCHW",
                       size=[16, 16]) as srv:
        m = HTTPModel(srv.url, preset="oip", layout="NHWC", **FAST)
        for _ in range(2):
            with pytest.raises(ResponseFormatError, match=r"layout='NHWC' contradicts the "
                                                          r"model's input 'images' FP32"):
                m.predict(dataset(2)[0])
        assert m.stats["metadata_requests"] == 1 and srv.counts["requests"] == 0
        m.reset()
        with pytest.raises(ResponseFormatError):
            m.predict(dataset(2)[0])
        assert m.stats["metadata_requests"] == 2


def test_metadata_false_reads_nothing_and_sends_the_defaults():
    local, x = linear_softmax(), dataset(3)[0]
    with StandInServer(local, "oip") as srv:
        wire = _Wire(srv)
        with HTTPModel(srv.url, preset="oip", metadata=False, **FAST) as m:
            assert np.array_equal(m.predict(x), local.predict(x))
            assert m.stats["metadata_requests"] == 0
    assert wire.seen[0][0] is False and wire.seen[0][2:] == ("UINT8", [3, 16, 16, 3])


def test_a_model_without_batch_axis_gets_one_image_per_request():
    preset = OIPPreset()
    meta = _meta(("x", "FP32", [3, 16, 16]))
    url = preset.prepare("http://h/v2/models/m/infer",
                         lambda u: meta if u.endswith("/m") else {"extensions": []})
    assert url == "http://h/v2/models/m/infer" and preset.max_images_per_request == 1
    request = preset.build_request(dataset(1)[0], encode_image, {}).json
    assert request["inputs"][0]["shape"] == [3, 16, 16]
    answer = {"outputs": [{"name": "p", "shape": [2], "datatype": "FP32", "data": [0.25, 0.75]}]}
    assert preset.parse_response(answer, 1).tolist() == [[0.25, 0.75]]


# -- the metadata GETs against the hostile-server table -----------------------------------
_JSON_200 = {"deep-800", "nan", "infinity", "json-as-html"}  # a GET answered 200 with JSON


@pytest.mark.parametrize("case", sorted(EXPECT))
def test_metadata_get_fails_closed_like_the_request(servers, case, caplog):  # noqa: F811
    hostile, other = servers
    error, pattern, hits = expectation(case, "oip")
    if case in _JSON_200:  # JSON that is not a model metadata: unusable, at once
        error, pattern, hits = ResponseFormatError, r"unusable answer to GET .*'inputs' list", 1
    caplog.set_level(logging.DEBUG, logger="urllib3")
    before = hostile.count(case)
    opts = {**OPTS, **(SHORT_DEADLINE if error is EndpointUnreachable else {})}
    url = f"{hostile.base}/{case}/oip/v2/models/m/infer?code={QS}"
    m = HTTPModel(url, preset="oip", api_key=KEY, headers={"X-Api-Key": HDR}, **opts)
    t0 = time.monotonic()
    try:
        with pytest.raises(ModelError) as info:
            m.predict(np.full((1, 8, 16, 3), 100, np.uint8))
        exc = info.value
        assert type(exc) is error, f"{type(exc).__name__}: {exc}"
        assert re.search(pattern, str(exc)) and "\n" not in str(exc), str(exc)
        assert f"GET /{case}/oip/v2/models/m" in str(exc)
        assert exc.__context__ is None and exc.__cause__ is None
        assert not [hit for t in chain_texts(exc) + [caplog.text] for hit in leaks(t)]
        assert time.monotonic() - t0 < HANG
        assert hostile.count(case) - before == hits  # GETs only: the infer POST never went
        assert all(r.method == "GET" for r in hostile.requests if r.case == case)
        if isinstance(exc, LATCHED) or case.startswith("redirect"):
            with pytest.raises(error, match="nothing was sent"):
                m.predict(np.full((1, 8, 16, 3), 100, np.uint8))
            assert hostile.count(case) - before == hits
        assert other.count() == 0
    finally:
        m.close()


# -- the CLI's equivalent of the one line ----------------------------------------------------
def test_cli_fit_through_a_raw_tensor_model_with_model_options(tmp_path):
    from cli_synthetic import PROBLEM, write_npz

    from blackbox_dft.cli.main import main

    data, out = str(tmp_path / "d.npz"), str(tmp_path / "run")
    write_npz(data)
    with StandInServer(PROBLEM.model, "oip", model_name="resnet", datatype="FP32",
                       layout="NCHW", size=[16, 16], mean="imagenet") as srv:
        assert main(["fit", "--model", srv.url, "--preset", "oip", "--model-option",
                     "mean=imagenet", "--data", data, "--out", out, "--scores", "logits",
                     "--budget", "400", "--no-progress"]) == 0
        served = srv.images_served
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["options"]["model_options"] == {"mean": "imagenet"}
    spend = json.loads((tmp_path / "run" / "spend.json").read_text())
    assert served == spend["paid"] > 0  # every paid query went through the tensor path
