"""The hf preset (Hugging Face image classification) and the json preset's '*' paths.

huggingface_hub's own ``InferenceClient`` (test extra) talks to the stand-in server in
``hf`` format: its requests are byte for byte ours, and it reads the same scores that
``HTTPModel(preset="hf")`` puts in class order. Bad answers (a label unknown, missing or
repeated) are one-line errors, never a reordering. Every server is on 127.0.0.1.
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
from typing import Any

import numpy as np
import pytest
import requests
from _http_helpers import dataset, linear_softmax

from blackbox_dft.adapters.errors import AuthenticationError, ResponseFormatError
from blackbox_dft.adapters.remote.hf import HFPreset
from blackbox_dft.adapters.remote.http import HTTPModel
from blackbox_dft.adapters.remote.presets import JSONPreset
from blackbox_dft.adapters.remote.wire import Labelled, b64, encode_image, get_path
from blackbox_dft.adapters.serving import server as server_mod
from blackbox_dft.adapters.serving.server import StandInServer, serve_main

pytestmark = pytest.mark.network

FAST = {"backoff": 0.01, "max_backoff": 0.05, "timeout": (2.0, 10.0)}
SEVEN = [f"class_{i}" for i in range(7)]  # more than the 5 labels HF answers by default
ABC = ["a", "b", "c"]
SECRET = "hf_test_0123456789abcdefghij"


@pytest.fixture(scope="module")
def model7():
    return linear_softmax(seed=3, classes=7)


@pytest.fixture(scope="module")
def images():
    return dataset(6)[0]


@pytest.fixture
def inference_client(monkeypatch):
    """huggingface_hub.InferenceClient, with no token from the environment and offline mode
    (which refuses even 127.0.0.1) off."""
    hub = pytest.importorskip("huggingface_hub", reason="test extra: pip install '.[test]'")
    constants = importlib.import_module("huggingface_hub.constants")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False, raising=False)
    if hasattr(constants, "is_offline_mode"):
        monkeypatch.setattr(constants, "is_offline_mode", lambda: False)
    return hub.InferenceClient


class Recording(HFPreset):
    """The hf server half, keeping every request body and Content-Type it reads."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.seen: list[tuple[bytes, str]] = []

    def read_request(self, body: bytes, content_type: str) -> np.ndarray:
        self.seen.append((body, content_type))
        return super().read_request(body, content_type)


class Canned(HFPreset):
    """The hf server half answering ``answer`` whatever the image."""

    def __init__(self, answer: Any, **kw: Any) -> None:
        super().__init__(**kw)
        self.answer = answer

    def write_response(self, scores: np.ndarray) -> Any:
        return self.answer


# -- the same wire format as huggingface_hub --------------------------------------------
def test_our_requests_are_the_bytes_inference_client_sends(inference_client, model7, images):
    png = encode_image(images[0])
    rec = Recording(labels=SEVEN)
    with StandInServer(model7, rec) as srv:
        client = inference_client(model=srv.url, timeout=10)
        client.image_classification(png)
        client.image_classification(png, top_k=7, function_to_apply="softmax")
        with HTTPModel(srv.url, preset="hf", labels=SEVEN, body="raw", **FAST) as m, \
                pytest.raises(ResponseFormatError, match="top 5: use body='json'"):
            m.predict(images[:1])  # the server answers its default top 5 of 7 labels
        with HTTPModel(srv.url, preset="hf", labels=SEVEN, function_to_apply="softmax",
                       **FAST) as m:
            m.predict(images[:1])
    (their_raw, _), (their_json, their_type), (our_raw, our_type), (our_json, _) = rec.seen
    assert their_raw == our_raw == png and our_type == "image/png"
    expected = {"inputs": b64(png), "parameters": {"top_k": 7, "function_to_apply": "softmax"}}
    assert json.loads(their_json) == json.loads(our_json) == expected
    assert their_type.startswith("application/json")


def test_inference_client_and_the_hf_preset_read_the_same_class_ordered_scores(
        inference_client, model7, images):
    truth = model7.predict(images)
    with StandInServer(model7, "hf", labels=SEVEN) as srv, \
            HTTPModel(srv.url, preset="hf", labels=SEVEN, concurrency=3, **FAST) as ours:
        assert ours.preset.body == "json" and ours.images_per_request == 1
        got = ours.predict(images)
        client = inference_client(base_url=srv.url, timeout=10)
        answers = [client.image_classification(encode_image(im), top_k=7) for im in images]
        default = client.image_classification(encode_image(images[0]))  # no parameter: raw
    assert np.array_equal(got, truth)  # exact: class order, float64 through JSON
    for i, answer in enumerate(answers):
        assert {e.label: e.score for e in answer} == dict(zip(SEVEN, got[i], strict=True))
        assert [e.score for e in answer] == sorted(got[i], reverse=True)  # HF's rank order
    # rank order is not class order here: reading scores by position would be wrong
    assert any([e.label for e in a] != SEVEN for a in answers)
    assert [e.label for e in default] == [e.label for e in answers[0]][:5]


def test_a_token_goes_in_the_bearer_header_from_the_argument_or_hf_token(
        inference_client, monkeypatch, images):
    model = linear_softmax(classes=2)
    with StandInServer(model, "hf", labels=["no", "yes"], api_key=SECRET) as srv:
        client = inference_client(model=srv.url, token=SECRET, timeout=10)
        theirs = {e.label: e.score for e in client.image_classification(encode_image(images[0]))}
        with HTTPModel(srv.url, preset="hf", labels=["no", "yes"], api_key=SECRET, **FAST) as m:
            assert m.preset.body == "raw"
            assert m.predict(images[:1])[0].tolist() == [theirs["no"], theirs["yes"]]
        monkeypatch.setenv("HF_TOKEN", SECRET)
        with HTTPModel(srv.url, preset="hf", labels=["no", "yes"], **FAST) as m:
            assert np.array_equal(m.predict(images), model.predict(images))
        with HTTPModel(srv.url, preset="hf", labels=["no", "yes"], api_key="hf_wrong",
                       **FAST) as m, pytest.raises(AuthenticationError) as info:
            m.predict(images[:1])
    assert "Invalid credentials" in str(info.value) and "hf_wrong" not in str(info.value)


def test_a_json_batch_sends_a_list_of_inputs_and_reads_one_list_per_image(model7, images):
    rec = Recording(labels=SEVEN)
    with StandInServer(model7, rec) as srv, HTTPModel(
            srv.url, preset="hf", labels=SEVEN, images_per_request=4, **FAST) as m:
        assert np.array_equal(m.predict(images), model7.predict(images))
    sent = [json.loads(body)["inputs"] for body, _ in rec.seen]
    assert sorted(len(x) if isinstance(x, list) else 1 for x in sent) == [2, 4]


# -- answers put in class order, or refused -----------------------------------------------
def test_any_rank_order_of_the_answer_gives_the_same_class_order():
    preset = HFPreset(labels=ABC)
    items = [{"label": k, "score": s} for k, s in zip(ABC, [0.25, 0.5, 0.125], strict=True)]
    for perm in itertools.permutations(items):
        assert preset.parse_response(list(perm), 1).tolist() == [[0.25, 0.5, 0.125]]
        assert preset.parse_response([list(perm)], 1).tolist() == [[0.25, 0.5, 0.125]]
    two = preset.parse_response([items[::-1], items[1:] + items[:1]], 2)
    assert two.tolist() == [[0.25, 0.5, 0.125]] * 2


def _items(*pairs: tuple[Any, Any]) -> list[dict[str, Any]]:
    return [{"label": k, "score": s} for k, s in pairs]


BAD_ANSWERS = {
    "unknown": (_items(("b", 0.5), ("zebra", 0.3), ("a", 0.1), ("c", 0.1)),
                r"image 0: label 'zebra' in the answer is not one of labels=\['a', 'b', 'c'\]"),
    "missing": (_items(("b", 0.7), ("a", 0.3)),
                r"image 0: no score for label\(s\) \['c'\] in the answer \(2 of 3 labels"),
    "duplicate": (_items(("a", 0.5), ("b", 0.3), ("a", 0.1), ("c", 0.1)),
                  r"image 0: label 'a' comes twice in the answer"),
    "not_a_number": (_items(("a", "high"), ("b", 0.3), ("c", 0.1)),
                     r"the score of label 'a' is 'high', not a number"),
    "no_score": ([{"label": "a"}], r"an item is not \{label, score\}"),
    "an_object": ({"error": "Model is loading"}, r"expected a list of \{label, score\}"),
    "two_images": ([_items(("a", 1), ("b", 0), ("c", 0))] * 2,
                   r"the answer has 2 lists of labels, 1 images were sent"),
}


@pytest.mark.parametrize("case", sorted(BAD_ANSWERS))
def test_a_bad_answer_is_a_one_line_error_naming_the_label_and_is_latched(case, images):
    answer, message = BAD_ANSWERS[case]
    with StandInServer(linear_softmax(classes=3), Canned(answer, labels=ABC)) as srv, \
            HTTPModel(srv.url, preset="hf", labels=ABC, **FAST) as m:
        with pytest.raises(ResponseFormatError, match=message) as info:
            m.predict(images[:1])
        assert "\n" not in str(info.value) and info.value.__cause__ is None
        sent = srv.counts["requests"]
        with pytest.raises(ResponseFormatError):
            m.predict(images[:1])
        assert srv.counts["requests"] == sent == 1  # nothing more paid for a broken answer


def test_labels_are_checked_when_the_preset_is_made():
    with pytest.raises(ValueError, match="needs labels="):
        HFPreset()
    with pytest.raises(ValueError, match="label 'a' is given twice"):
        HFPreset(labels=["a", "b", "a"])
    with pytest.raises(ValueError, match="got the string 'ab'"):
        HFPreset(labels="ab")
    with pytest.raises(ValueError, match=r"ids must be 0..1, got \[0, 2\]"):
        HFPreset(labels={"0": "cat", "2": "dog"})
    assert HFPreset(labels={"1": "dog", "0": "cat"}).labels == ["cat", "dog"]  # id2label
    with pytest.raises(ValueError, match="body must be one of"):
        HFPreset(labels=ABC, body="xml")
    with pytest.raises(ValueError, match="function_to_apply must be one of"):
        HFPreset(labels=ABC, function_to_apply="relu")
    with pytest.raises(ValueError, match="needs body='json'"):
        HFPreset(labels=ABC, body="raw", function_to_apply="softmax")
    auto = {(len(labels), f): HFPreset(labels=labels, function_to_apply=f).body
            for labels in (ABC, SEVEN) for f in (None, "sigmoid")}
    assert auto == {(3, None): "raw", (3, "sigmoid"): "json", (7, None): "json",
                    (7, "sigmoid"): "json"}
    with pytest.raises(ValueError, match="images_per_request=2 out of range"):
        HTTPModel("http://127.0.0.1:1/x", preset="hf", labels=ABC, images_per_request=2)


def test_the_stand_in_refuses_requests_hugging_face_would_refuse(images):
    with StandInServer(linear_softmax(classes=3), "hf", labels=ABC) as srv:
        for body, headers in [(b"not an image", {}), (b'{"image": "x"}', {}),
                              (json.dumps({"inputs": b64(encode_image(images[0])),
                                           "parameters": {"top_k": 0}}).encode(), {}),
                              (b'{"inputs": "x", "parameters": [1]}',
                               {"Content-Type": "application/json"})]:
            r = requests.post(srv.url, data=body, headers=headers, timeout=5)
            assert r.status_code == 400 and "bad request" in r.json()["error"], body[:30]
        assert srv.images_served == 0 and srv.counts["rejected"] == 4


# -- the json preset's '*' never reorders classes -----------------------------------------
def test_a_json_wildcard_over_labelled_items_is_read_by_labels_or_refused(model7, images):
    truth = model7.predict(images[:3])
    one = {"template": {"inputs": "$image", "parameters": {"top_k": 7}}, "scores_path": "*.score"}
    with StandInServer(model7, "hf", labels=SEVEN) as srv:
        with HTTPModel(srv.url, **one, **FAST) as m, pytest.raises(
                ResponseFormatError, match=r"name their class.*not class order; pass "
                r"labels=.*or preset='hf'"):
            m.predict(images[:1])  # the silent rank-order reading of issue 14
        with HTTPModel(srv.url, **one, labels=SEVEN, **FAST) as m:
            assert np.array_equal(m.predict(images[:3]), truth)
        with HTTPModel(srv.url, template={"inputs": "$images", "parameters": {"top_k": 7}},
                       scores_path="*.*.score", labels=SEVEN, images_per_request=3,
                       **FAST) as m:
            assert np.array_equal(m.predict(images[:3]), truth)
        with HTTPModel(srv.url, **one, labels=SEVEN[:6], **FAST) as m, pytest.raises(
                ResponseFormatError, match="label 'class_6' in the answer is not one of"):
            m.predict(images[:1])


def test_a_json_wildcard_reads_labels_themselves_and_refuses_top1_items_as_images():
    body = {"predictions": [{"label": "cat", "score": 0.9}, {"label": "dog", "score": 0.6}]}
    assert get_path(body, "predictions.*.label", labelled=True) == ["cat", "dog"]
    assert get_path(body, "predictions.*.score") == [0.9, 0.6]  # unchanged without labelled
    found = get_path(body, "predictions.*.score", labelled=True)
    assert found == Labelled((("cat", 0.9), ("dog", 0.6)))
    top1 = JSONPreset(scores_path="predictions.*.score", labels=["cat", "dog"])
    with pytest.raises(ResponseFormatError, match="not one entry per image"):
        top1.parse_response(body, 2)
    names = JSONPreset(scores_path="predictions.*.label", labels=["cat", "dog"])
    assert names.parse_response(body, 2).tolist() == [[1, 0], [0, 1]]


# -- a fit through it, and the CLI --------------------------------------------------------
@pytest.mark.slow
def test_a_fit_through_the_hf_preset_improves_held_out_accuracy_like_the_local_fit():
    from blackbox_dft import DataFineTuner
    from blackbox_dft.testing import make_problem

    p = make_problem(seed=0)
    labels = [f"c{i}" for i in range(4)]

    def fit(model: Any) -> Any:
        return DataFineTuner(model, task="multiclass", scores="logits", query_budget=1500,
                             seed=0, progress=False).fit(*p.train, validation=p.val)

    with StandInServer(p.model, "hf", labels=labels) as srv, \
            HTTPModel(srv.url, preset="hf", labels=labels, concurrency=4, **FAST) as m:
        assert m.preset.body == "raw"  # one image file per request, as HF takes it
        remote = fit(m)
        assert srv.images_served == remote.queries_ <= 1500
    local = fit(p.model)
    assert np.array_equal(remote.delta_, local.delta_)

    def accuracy(x: np.ndarray) -> float:
        return float(np.mean(p.model.predict(x).argmax(axis=1) == p.test[1]))

    before, after = accuracy(p.test[0]), accuracy(remote.transform(p.test[0]))
    assert after > before + 0.1, (before, after)


def test_serve_protocol_hf_and_its_labels(monkeypatch, capsys):
    monkeypatch.setattr(server_mod, "_load_model", lambda name: linear_softmax())
    assert serve_main(["--model", "toy", "--protocol", "hf", "--port", "0",
                       "--labels", "no,yes"], block=False) == 0
    assert "as hf at http://127.0.0.1:" in capsys.readouterr().out
    assert serve_main(["--model", "toy", "--protocol", "hf", "--port", "0"], block=False) == 2
    err = capsys.readouterr().err.strip()
    assert "needs labels=" in err and "\n" not in err


def test_cli_fit_through_an_hf_endpoint_keeps_the_token_out(tmp_path, monkeypatch, capsys):
    from cli_synthetic import PROBLEM, write_npz

    from blackbox_dft.cli.main import main

    data = str(tmp_path / "d.npz")
    write_npz(data)
    monkeypatch.setenv("MY_HF_TOKEN", SECRET)
    out = str(tmp_path / "run")
    labels = json.dumps([f"c{i}" for i in range(4)])
    with StandInServer(PROBLEM.model, "hf", labels=json.loads(labels), api_key=SECRET) as srv:
        assert main(["fit", "--model", srv.url, "--preset", "hf", "--model-option",
                     f"labels={labels}", "--api-key-env", "MY_HF_TOKEN", "--data", data,
                     "--out", out, "--scores", "logits", "--budget", "400", "--no-evaluate",
                     "--no-progress"]) == 0
        assert 0 < srv.images_served <= 400
    said = capsys.readouterr()
    assert SECRET not in said.out + said.err
    for name in os.listdir(out):
        with open(os.path.join(out, name), "rb") as fh:
            assert SECRET.encode() not in fh.read(), name
    assert json.load(open(os.path.join(out, "config.json")))["options"]["preset"] == "hf"
