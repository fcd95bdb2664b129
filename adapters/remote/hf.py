"""Hugging Face image classification: the wire format of ``huggingface_hub.InferenceClient``.

``InferenceClient.image_classification(image)`` POSTs the image file as it is (no
Content-Type) when it has no parameters, and ``{"inputs": "<base64 image>", "parameters":
{"top_k": k, "function_to_apply": f}}`` (application/json) when it has some. The answer is
``[{"label": "cat", "score": 0.93}, ...]`` **sorted by score**, the model's top ``k`` only
(transformers' pipeline answers its top 5 unless asked), or ``[[...], [...]]`` for a batch.
The serverless Inference API, Inference Endpoints (huggingface-inference-toolkit) and a
transformers pipeline behind a server all speak it. :class:`HFPreset` puts each answer in
class order by ``labels``; the same class answers in this format for the stand-in server.
Sources: https://huggingface.co/docs/huggingface_hub/package_reference/inference_client
(``image_classification``), https://huggingface.co/docs/inference-providers/tasks/image-classification,
https://huggingface.co/docs/transformers/main_classes/pipelines#transformers.ImageClassificationPipeline
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from blackbox_dft.adapters.errors import ResponseFormatError
from blackbox_dft.adapters.remote.presets import Preset, WireRequest
from blackbox_dft.adapters.remote.wire import (
    Encoder,
    b64,
    class_row,
    decode_image,
    decode_stack,
    json_body,
    short,
    unb64,
)

__all__ = ["HFPreset", "HF_DEFAULT_TOP_K"]

#: labels a transformers image-classification pipeline answers when no top_k is sent
HF_DEFAULT_TOP_K = 5
FUNCTIONS = ("sigmoid", "softmax", "none")
BODIES = ("auto", "raw", "json")


def _class_names(labels: Sequence[str] | Mapping[Any, str] | None) -> list[str]:
    """Class names in class order from a list, or from a model's ``id2label`` (config.json:
    ``{"0": "cat", "1": "dog"}``) read in id order; ValueError naming what is wrong."""
    if labels is None or len(labels) == 0:
        raise ValueError("the hf preset needs labels=[...]: every class the model returns, in "
                         "the order wanted for its scores (e.g. its config.json id2label)")
    if isinstance(labels, str):
        raise ValueError(f"labels must be a list of class names, got the string {labels[:40]!r}")
    if isinstance(labels, Mapping):
        try:
            by_id = sorted((int(k), v) for k, v in labels.items())
        except (TypeError, ValueError):
            raise ValueError("labels as a mapping must be id2label (class id -> name), got "
                             f"keys {short(list(labels), 80)}") from None
        if [k for k, _ in by_id] != list(range(len(by_id))):
            raise ValueError(f"id2label ids must be 0..{len(by_id) - 1}, got "
                             f"{short([k for k, _ in by_id], 80)}")
        labels = [v for _, v in by_id]
    names = list(labels)
    bad = [x for x in names if not isinstance(x, str)]
    if bad:
        raise ValueError(f"labels must be class names (strings), got {short(bad[0], 40)}")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"label {name!r} is given twice in labels; each class once")
        seen.add(name)
    return names


def _mime(data: bytes) -> str:
    """The Content-Type of an image file, from its first bytes."""
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    return "application/octet-stream"


class HFPreset(Preset):
    """Hugging Face image classification (Inference API, Inference Endpoints, a pipeline).

    labels (required): every class the model returns, in the order wanted for the scores:
    a list of names or the model's ``id2label`` mapping. An answer is read by label, never by
    position: a label that ``labels`` lacks, a label of ``labels`` the answer lacks, or one
    it repeats is a one-line error naming it. Labels are not read from the server: an
    endpoint does not serve its model's config.json (that is on the Hub, another host that
    would need the token too), and the class order is the user's contract with their data.
    body: ``"raw"``: the image file, one per request (what InferenceClient sends with no
    parameters; the server then answers its default top 5 labels); ``"json"``: ``{"inputs":
    base64, "parameters": {"top_k": len(labels), ...}}``, asking for every class; ``"auto"``
    (default): raw when that answers every class (at most 5 labels, no function_to_apply),
    else json. function_to_apply: ``"sigmoid"``, ``"softmax"`` or ``"none"``, sent as a
    parameter (json). With body json, ``images_per_request`` > 1 sends ``"inputs": [b64,
    ...]`` (Inference Endpoints' pipeline takes a list; the answer is one list per image).
    The token (``api_key``, env ``HF_TOKEN``) goes in ``Authorization: Bearer``.
    """

    name = "hf"
    path_template = "/models/{model}"
    default_images_per_request = 1
    secret_env = {"api_key": "HF_TOKEN"}

    def __init__(self, *, labels: Sequence[str] | Mapping[Any, str] | None = None,
                 body: str = "auto", function_to_apply: str | None = None,
                 **kw: Any) -> None:
        names = _class_names(labels)
        super().__init__(labels=names, **kw)
        self.labels: list[str] = names
        if body not in BODIES:
            raise ValueError(f"body must be one of {BODIES}, got {body!r}")
        if function_to_apply is not None and function_to_apply not in FUNCTIONS:
            raise ValueError(f"function_to_apply must be one of {FUNCTIONS} or None, got "
                             f"{function_to_apply!r}")
        if body == "auto":
            fits_raw = len(names) <= HF_DEFAULT_TOP_K and function_to_apply is None
            body = "raw" if fits_raw else "json"
        if body == "raw" and function_to_apply is not None:
            raise ValueError("function_to_apply is a parameter: it needs body='json' (a raw "
                             "image request carries none)")
        self.body = body
        self.parameters: dict[str, Any] = {"top_k": len(names)}
        if function_to_apply is not None:
            self.parameters["function_to_apply"] = function_to_apply
        self.max_images_per_request = 1 if body == "raw" else None
        self._asked = threading.local()  # server half: what the request in this thread asked

    # -- client side ---------------------------------------------------------------
    def build_request(self, images: np.ndarray, encode: Encoder,
                      secrets: Mapping[str, str]) -> WireRequest:
        headers = self.auth_headers(secrets)
        if self.body == "raw":
            if len(images) != 1:
                raise ValueError(f"body='raw' sends one image per request, got {len(images)}")
            data = encode(images[0])
            return WireRequest(content=data, headers={"Content-Type": _mime(data), **headers})
        files = [b64(encode(im)) for im in images]
        inputs: str | list[str] = files[0] if len(files) == 1 else files
        return WireRequest(json={"inputs": inputs, "parameters": dict(self.parameters)},
                           headers=headers)

    def parse_response(self, body: Any, n: int) -> np.ndarray:
        if not isinstance(body, list):
            raise ResponseFormatError(
                f"expected a list of {{label, score}} per image, got {short(body)}")
        nested = bool(body) and all(isinstance(e, list) for e in body)
        per_image = body if nested else [body]
        if len(per_image) != n:
            raise ResponseFormatError(
                f"the answer has {len(per_image)} lists of labels, {n} images were sent")
        try:
            rows = [class_row(_pairs(items, i), self.labels, i)
                    for i, items in enumerate(per_image)]
        except ValueError as exc:
            hint = ""
            if self.body == "raw" and "no score for label" in str(exc):
                hint = (f"; a raw image request gets the server's default top "
                        f"{HF_DEFAULT_TOP_K}: use body='json' (it sends top_k={len(self.labels)})")
            raise ResponseFormatError(f"{exc}{hint}") from None
        return np.asarray(rows, dtype=np.float64)

    # -- server side ---------------------------------------------------------------
    def read_request(self, body: bytes, content_type: str) -> np.ndarray:
        """Images of a raw image request or of a JSON one (InferenceClient sends raw bytes
        without a Content-Type, so JSON is also recognised by its first byte)."""
        top_k: Any = HF_DEFAULT_TOP_K
        batch = False
        if "json" in content_type.lower() or body.lstrip()[:1] == b"{":
            payload = json_body(body)
            inputs = payload.get("inputs") if isinstance(payload, dict) else None
            params = payload.get("parameters") if isinstance(payload, dict) else None
            if isinstance(inputs, str):
                images = decode_stack([unb64(inputs)])
            elif isinstance(inputs, list):
                images, batch = decode_stack([unb64(x) for x in inputs]), True
            else:
                raise ValueError('expected {"inputs": base64 image (or a list of them), '
                                 '"parameters": {...}}')
            if params is not None and not isinstance(params, dict):
                raise ValueError(f"parameters must be an object, got {short(params, 60)}")
            top_k = (params or {}).get("top_k")
            top_k = HF_DEFAULT_TOP_K if top_k is None else top_k
            if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
                raise ValueError(f"parameters.top_k must be a positive integer, got {top_k!r}")
        else:
            images = decode_image(body)[None]
        self._asked.top_k, self._asked.batch = top_k, batch
        return images

    def write_response(self, scores: np.ndarray) -> Any:
        """Each image's top ``top_k`` labels (asked, else the pipeline's default 5), sorted by
        score as Hugging Face sorts them; one list per image for a batch."""
        if scores.shape[1] != len(self.labels):
            raise ValueError(f"the model gives {scores.shape[1]} scores per image but labels "
                             f"names {len(self.labels)} classes")
        top_k = getattr(self._asked, "top_k", HF_DEFAULT_TOP_K)
        answers = [[{"label": self.labels[j], "score": float(row[j])}
                    for j in np.argsort(-row, kind="stable")[:top_k]] for row in scores]
        batch = getattr(self._asked, "batch", False) or len(answers) > 1
        return answers if batch else answers[0]

    def server_auth_ok(self, headers: Mapping[str, str], body: bytes, expected: str) -> bool:
        # header names are case-insensitive, and huggingface_hub (httpx) sends them lowercase
        got = [v for k, v in headers.items() if k.lower() == self.auth_header.lower()]
        return bool(got) and got[0].strip() == f"{self.auth_scheme} {expected}".strip()

    def auth_answer(self) -> tuple[int, Any]:
        return 401, {"error": "Invalid credentials in Authorization header"}

    def __repr__(self) -> str:
        return f"HFPreset(body={self.body!r}, labels={short(self.labels, 80)})"


def _pairs(items: Any, i: int) -> list[tuple[Any, Any]]:
    """``(label, score)`` of one image's answer ``[{"label", "score"}, ...]``."""
    if not isinstance(items, list):
        raise ValueError(f"image {i}: expected a list of {{label, score}}, got {short(items, 80)}")
    out = []
    for item in items:
        if not isinstance(item, dict) or "label" not in item or "score" not in item:
            raise ValueError(f"image {i}: an item is not {{label, score}}: {short(item, 80)}")
        out.append((item["label"], item["score"]))
    return out
