"""Wire formats of model servers: how to ask for scores and where to find them in the answer.

A :class:`Preset` has both halves of one protocol so that the client
(:class:`blackbox_dft.adapters.remote.http.HTTPModel`) and the stand-in server
(:mod:`blackbox_dft.adapters.serving.server`)
cannot drift apart:

- client: ``build_request(images, encode, secrets) -> WireRequest`` and
  ``parse_response(body, n) -> scores (n, K)``, plus how the vendor reports a
  throttle or a bad key;
- server: ``read_request(body, content_type) -> images`` and
  ``write_response(scores) -> JSON``, plus the vendor's throttle and bad-key answers.

Images: uint8 ``(N, H, W, 3)`` RGB. ``encode`` turns one such image into file
bytes (PNG by default, so that a perturbation of one grey level survives).
The vendor presets live in :mod:`blackbox_dft.adapters.remote.vendors`, the Open
Inference Protocol in :mod:`blackbox_dft.adapters.remote.oip`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from blackbox_dft.adapters.errors import ResponseFormatError
from blackbox_dft.adapters.remote.wire import (
    Encoder,
    Labelled,
    b64,
    decode_image,
    decode_stack,
    get_path,
    json_body,
    keys_of,
    rows_from_entries,
    short,
    unb64,
)

__all__ = [
    "parse_json", "WireRequest", "Preset", "JSONPreset", "TFServingPreset", "TorchServePreset",
]


def parse_json(raw: bytes) -> tuple[Any, str]:
    """(parsed JSON or None, why not). ``bytes``: json detects UTF-8/16/32 itself."""
    try:
        return json.loads(raw), ""
    except RecursionError:
        return None, "not usable JSON: nested deeper than Python's recursion limit"
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        return None, f"not JSON ({type(exc).__name__} at {getattr(exc, 'pos', '?')})"


@dataclass
class WireRequest:
    """One HTTP request body: ``json`` or form ``data`` or raw ``content``, plus headers."""

    json: Any = None
    data: Mapping[str, str] | None = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


class Preset:
    """Base wire format. Subclasses override the builders and parsers they need.

    max_images_per_request: the vendor's hard cap per request (None: no cap).
    secret_names: names of the secrets the preset sends, with their environment variables.
    """

    name = "base"
    path_template = "/"
    max_images_per_request: int | None = None
    default_images_per_request = 32
    secret_env: dict[str, str] = {"api_key": "BLACKBOX_DFT_API_KEY"}
    required_secrets: tuple[str, ...] = ()
    #: what the answers are, unless HTTPModel's output_kind says otherwise ("similarity":
    #: a face-compare API, one side-by-side pair per "image", see vendors.side_by_side)
    output_kind: str = "scores"

    def __init__(self, *, labels: Sequence[str] | None = None, auth_header: str = "Authorization",
                 auth_scheme: str = "Bearer") -> None:
        self.labels = list(labels) if labels is not None else None
        self.auth_header = auth_header
        self.auth_scheme = auth_scheme

    # -- client side ---------------------------------------------------------------
    def path(self, model_name: str) -> str:
        """The canonical endpoint path for ``model_name`` (used by the stand-in server)."""
        return self.path_template.format(model=model_name)

    def auth_headers(self, secrets: Mapping[str, str]) -> dict[str, str]:
        """Headers that carry the secrets (never the URL)."""
        key = secrets.get("api_key")
        if not key:
            return {}
        return {self.auth_header: f"{self.auth_scheme} {key}".strip()}

    def build_request(self, images: np.ndarray, encode: Encoder,
                      secrets: Mapping[str, str]) -> WireRequest:  # pragma: no cover - abstract
        raise NotImplementedError

    def secret_strings(self) -> list[str]:
        """Option values that may hold a secret (a key written into a request template):
        the client redacts them from its messages like its keys."""
        return []

    def prepare(self, url: str, get: Callable[[str], Any]) -> str:
        """Before the first request: read what the preset needs from the server with
        ``get(url) -> parsed JSON`` (OIP: the model's metadata) and return the URL to send
        requests to. Default: nothing to read, ``url``."""
        return url

    def parse_body(self, raw: bytes, headers: Mapping[str, str]) -> tuple[Any, str]:
        """(parsed answer, "") or (None, why it is unreadable) from the answer's bytes and
        headers. Default: JSON (OIP overrides it for its binary tensor extension)."""
        return parse_json(raw)

    def parse_response(self, body: Any, n: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def is_throttle(self, status: int, body: Any) -> bool:
        """True when the answer is a vendor throttle that is not a plain HTTP 429."""
        return False

    def is_auth_error(self, status: int, body: Any) -> bool:
        """True when the answer says the key is wrong (no retry can fix that)."""
        return status in (401, 403)

    def vendor_message(self, body: Any) -> str:
        """The vendor's own words about an error, from a parsed JSON body."""
        if isinstance(body, dict):
            for key in ("error", "message", "error_message", "detail"):
                if key in body:
                    val = body[key]
                    return val if isinstance(val, str) else json.dumps(val)[:300]
        return ""

    # -- server side ---------------------------------------------------------------
    def read_request(self, body: bytes, content_type: str) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def write_response(self, scores: np.ndarray) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def server_auth_ok(self, headers: Mapping[str, str], body: bytes, expected: str) -> bool:
        """Stand-in server: does the request carry the expected key?"""
        got = headers.get(self.auth_header, "")
        return got.strip() == f"{self.auth_scheme} {expected}".strip()

    def throttle_answer(self) -> tuple[int, Any]:
        """Stand-in server: the vendor's own throttle answer (status, JSON body)."""
        return 429, {"error": "rate limit exceeded"}

    def auth_answer(self) -> tuple[int, Any]:
        """Stand-in server: the vendor's answer to a bad key (status, JSON body)."""
        return 401, {"error": "invalid API key"}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class JSONPreset(Preset):
    """Generic JSON API: the user gives the request template and where the scores are.

    template: any JSON value; a string ``"$images"`` is replaced by the list of
    base64 images of the request, ``"$image"`` by one base64 image (one image per
    request). scores_path: dotted path to one entry per image (``"$images"``) or to
    the image's entry (``"$image"``); an entry is a number, a list of numbers or a
    label -> score mapping read in the order of ``labels``. A ``*`` over items that name
    their class (``"*.score"`` on ``[{"label": ..., "score": ...}]``, which servers sort by
    score) is read in the order of ``labels`` (each label once, no other), and refused
    without ``labels``: the server's order is not class order. parse: a callable
    ``(body, n) -> (n, K)`` used instead of scores_path.
    Defaults match the stand-in server: ``{"images": "$images"}`` -> ``{"scores": [[...]]}``.
    """

    name = "json"
    path_template = "/predict"

    def __init__(self, *, template: Any = None, scores_path: str = "scores",
                 labels: Sequence[str] | None = None,
                 parse: Callable[[Any, int], Any] | None = None, **kw: Any) -> None:
        super().__init__(labels=labels, **kw)
        self.template = {"images": "$images"} if template is None else template
        self.scores_path = scores_path
        self.parse = parse
        text = json.dumps(self.template)
        self.single = '"$image"' in text
        if not self.single and '"$images"' not in text:
            raise ValueError(
                'template must contain the string "$images" or "$image" where images go')
        if self.single:
            self.max_images_per_request = 1
            self.default_images_per_request = 1

    def secret_strings(self) -> list[str]:
        out: list[str] = []

        def walk(node: Any) -> None:
            if isinstance(node, str) and node not in ("$images", "$image"):
                out.append(node)
            elif isinstance(node, dict):
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)

        walk(self.template)
        return out

    def _fill(self, node: Any, images: list[str]) -> Any:
        if node == "$images":
            return images
        if node == "$image":
            return images[0]
        if isinstance(node, dict):
            return {k: self._fill(v, images) for k, v in node.items()}
        if isinstance(node, list):
            return [self._fill(v, images) for v in node]
        return node

    def build_request(self, images: np.ndarray, encode: Encoder,
                      secrets: Mapping[str, str]) -> WireRequest:
        encoded = [b64(encode(im)) for im in images]
        return WireRequest(json=self._fill(self.template, encoded),
                           headers=self.auth_headers(secrets))

    def parse_response(self, body: Any, n: int) -> np.ndarray:
        if self.parse is not None:
            return np.asarray(self.parse(body, n), dtype=np.float64)
        try:
            found = get_path(body, self.scores_path, labelled=True)
        except KeyError as exc:
            raise ResponseFormatError(
                f"scores_path {self.scores_path!r} not in the answer: {exc.args[0]}") from None
        if isinstance(found, Labelled) and not self.single:  # '*' over classes, not images
            names = short([label for label, _ in found.pairs[:4]], 80)
            raise ResponseFormatError(
                f"scores_path {self.scores_path!r}: its '*' walks items that name their class "
                f"({names}), not one entry per image; use the template \"$image\" (one image "
                "per request) with labels=[...], or preset='hf' for a [{label, score}] answer")
        return rows_from_entries([found] if self.single else found, n, self.labels)

    def read_request(self, body: bytes, content_type: str) -> np.ndarray:
        payload = json_body(body)
        items = payload.get("images") if isinstance(payload, dict) else None
        if not isinstance(items, list):
            raise ValueError('expected {"images": [base64 PNG, ...]}')
        return decode_stack([unb64(s) for s in items])

    def write_response(self, scores: np.ndarray) -> Any:
        return {"scores": scores.tolist()}

    def __repr__(self) -> str:
        return f"JSONPreset(scores_path={self.scores_path!r}, labels={self.labels})"


class TFServingPreset(Preset):
    """TensorFlow Serving REST ``POST /v1/models/{name}:predict`` (row format).

    ``instances``: one nested ``[H][W][3]`` uint8 list per image, or with
    ``tensor="b64"`` one ``{"b64": ...}`` object per image (TF Serving's binary
    convention; the model's input name must end in ``_bytes``). Reads ``predictions``.
    Source: https://www.tensorflow.org/tfx/serving/api_rest#predict_api
    """

    name = "tfserving"
    path_template = "/v1/models/{model}:predict"

    def __init__(self, *, tensor: str = "uint8", signature_name: str | None = None,
                 **kw: Any) -> None:
        super().__init__(**kw)
        if tensor not in ("uint8", "b64"):
            raise ValueError(f"tensor must be 'uint8' or 'b64', got {tensor!r}")
        self.tensor, self.signature_name = tensor, signature_name

    def build_request(self, images: np.ndarray, encode: Encoder,
                      secrets: Mapping[str, str]) -> WireRequest:
        inst: list[Any] = ([{"b64": b64(encode(im))} for im in images] if self.tensor == "b64"
                           else images.tolist())
        payload: dict[str, Any] = {"instances": inst}
        if self.signature_name:
            payload["signature_name"] = self.signature_name
        return WireRequest(json=payload, headers=self.auth_headers(secrets))

    def parse_response(self, body: Any, n: int) -> np.ndarray:
        if not isinstance(body, dict) or "predictions" not in body:
            raise ResponseFormatError(f"no 'predictions' in the answer (keys: {keys_of(body)})")
        return rows_from_entries(body["predictions"], n, self.labels)

    def read_request(self, body: bytes, content_type: str) -> np.ndarray:
        inst = json_body(body)["instances"]
        if inst and isinstance(inst[0], dict):
            return decode_stack([unb64(x["b64"]) for x in inst])
        return np.asarray(inst, dtype=np.uint8)

    def write_response(self, scores: np.ndarray) -> Any:
        return {"predictions": scores.tolist()}


class TorchServePreset(Preset):
    """TorchServe inference API ``POST /predictions/{model}``: one image file per request.

    The answer is a list of scores, or (the stock image_classifier handler) a
    ``{label: probability}`` mapping read in the order of ``labels``; that handler
    returns only its top-k labels, so every label in ``labels`` must be among them.
    Source: https://pytorch.org/serve/inference_api.html#predictions-api
    """

    name = "torchserve"
    path_template = "/predictions/{model}"
    max_images_per_request = 1
    default_images_per_request = 1

    def build_request(self, images: np.ndarray, encode: Encoder,
                      secrets: Mapping[str, str]) -> WireRequest:
        headers = {"Content-Type": "application/octet-stream", **self.auth_headers(secrets)}
        return WireRequest(content=encode(images[0]), headers=headers)

    def parse_response(self, body: Any, n: int) -> np.ndarray:
        one_dict = isinstance(body, list) and len(body) == 1 and isinstance(body[0], dict)
        entry = body[0] if one_dict else body
        return rows_from_entries([entry], n, self.labels)

    def read_request(self, body: bytes, content_type: str) -> np.ndarray:
        return decode_image(body)[None]

    def write_response(self, scores: np.ndarray) -> Any:
        if self.labels:
            return {k: float(v) for k, v in zip(self.labels, scores[0], strict=True)}
        return scores[0].tolist()

    def throttle_answer(self) -> tuple[int, Any]:
        return 503, {"code": 503, "type": "ServiceUnavailableException",
                     "message": "Model worker is busy"}
