"""Vendor face APIs as presets: their documented request and answer formats -> score vectors.

Each preset maps the vendor's answer for one image to a fixed-length vector of
floats in ``[0, 1]`` (``outputs`` chooses which attributes and in what order).
An image in which the vendor finds no face gets ``no_face`` for every output
(default 0.0: "not smiling"), and is counted in ``HTTPModel.stats["no_face"]``.
Also here: :func:`make_preset`, the registry of every preset by name.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs

import numpy as np

from adapters.errors import ResponseFormatError
from adapters.remote.presets import (
    JSONPreset,
    OIPPreset,
    Preset,
    TFServingPreset,
    TorchServePreset,
    WireRequest,
)
from adapters.remote.wire import Encoder, b64, decode_image, decode_stack, json_body, short, unb64
from blackbox_dft.core.images import side_by_side, split_pair

__all__ = ["FacePPPreset", "FacePPComparePreset", "GoogleVisionPreset", "ClarifaiPreset",
           "PRESETS", "make_preset", "side_by_side", "split_pair", "SideBySide"]


class _FacePreset(Preset):
    """Shared parts: ``outputs`` (attribute names) and the no-face fill value."""

    choices: tuple[str, ...] = ()

    def __init__(self, *, outputs: Sequence[str] | None = None, no_face: float = 0.0,
                 **kw: Any) -> None:
        super().__init__(**kw)
        outs = list(outputs) if outputs is not None else [self.choices[0]]
        bad = [o for o in outs if o not in self.choices]
        if bad or not outs:
            raise ValueError(f"outputs {bad or outs} not supported by {self.name}; "
                             f"choose from {self.choices}")
        self.outputs = outs
        self.no_face = float(no_face)
        self.no_face_count = 0
        self._lock = threading.Lock()

    def _face_row(self, face: Any, i: int) -> list[float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _rows(self, faces_per_image: list[Any], n: int) -> np.ndarray:
        if len(faces_per_image) != n:
            raise ResponseFormatError(
                f"the answer covers {len(faces_per_image)} images, {n} were sent")
        rows = []
        for i, faces in enumerate(faces_per_image):
            if not faces:
                with self._lock:
                    self.no_face_count += 1
                rows.append([self.no_face] * len(self.outputs))
                continue
            try:
                rows.append(self._face_row(faces[0], i))
            except (KeyError, TypeError, ValueError) as exc:
                raise ResponseFormatError(f"image {i}: face has no {exc} in the answer") from None
        return np.asarray(rows, dtype=np.float64)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(outputs={self.outputs}, no_face={self.no_face})"


FACEPP_EMOTIONS = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")


class _FacePPCommon(Preset):
    """What every Face++ endpoint shares: keys as form fields, one request per image (or
    pair), 403 ``CONCURRENCY_LIMIT_EXCEEDED`` as the throttle, 401/403 as a bad key."""

    max_images_per_request: int | None = 1
    default_images_per_request = 1
    secret_env = {"api_key": "FACEPP_API_KEY", "api_secret": "FACEPP_API_SECRET"}
    required_secrets: tuple[str, ...] = ("api_key", "api_secret")

    def is_throttle(self, status: int, body: Any) -> bool:
        return status == 403 and self.vendor_message(body) == "CONCURRENCY_LIMIT_EXCEEDED"

    def is_auth_error(self, status: int, body: Any) -> bool:
        return status in (401, 403) and not self.is_throttle(status, body)

    def server_auth_ok(self, headers: Mapping[str, str], body: bytes, expected: str) -> bool:
        form = parse_qs(body.decode("ascii", "replace"))
        return form.get("api_key", [""])[0] == expected

    def throttle_answer(self) -> tuple[int, Any]:
        return 403, {"error_message": "CONCURRENCY_LIMIT_EXCEEDED"}

    def auth_answer(self) -> tuple[int, Any]:
        return 401, {"error_message": "AUTHENTICATION_ERROR"}


class FacePPPreset(_FacePPCommon, _FacePreset):
    """Face++ Detect API v3 ``POST /facepp/v3/detect`` (form fields, one image per request).

    Sends ``api_key``/``api_secret`` (env ``FACEPP_API_KEY``/``FACEPP_API_SECRET``)
    and ``image_base64`` as form fields; reads ``faces[0].attributes``: ``smile``
    -> ``smile.value / 100``, ``emotion:<name>`` -> ``emotion.<name> / 100``.
    Face++ answers 403 ``CONCURRENCY_LIMIT_EXCEEDED`` when throttling (retried).
    Source: https://console.faceplusplus.com/documents/5679127
    """

    name = "facepp"
    path_template = "/facepp/v3/detect"
    choices = ("smile",) + tuple(f"emotion:{e}" for e in FACEPP_EMOTIONS)

    def build_request(self, images: np.ndarray, encode: Encoder,
                      secrets: Mapping[str, str]) -> WireRequest:
        wanted = {"smiling" if o == "smile" else "emotion" for o in self.outputs}
        return WireRequest(data={
            "api_key": secrets.get("api_key", ""), "api_secret": secrets.get("api_secret", ""),
            "image_base64": b64(encode(images[0])), "return_attributes": ",".join(sorted(wanted))})

    def parse_response(self, body: Any, n: int) -> np.ndarray:
        if not isinstance(body, dict) or not isinstance(body.get("faces"), list):
            raise ResponseFormatError(f"no 'faces' list in the answer (got {short(body)})")
        return self._rows([body["faces"]], n)

    def _face_row(self, face: Any, i: int) -> list[float]:
        attrs = face["attributes"]
        return [attrs["smile"]["value"] / 100.0 if o == "smile"
                else attrs["emotion"][o.split(":", 1)[1]] / 100.0 for o in self.outputs]

    def read_request(self, body: bytes, content_type: str) -> np.ndarray:
        form = parse_qs(body.decode("ascii"))
        return decode_image(unb64(form["image_base64"][0]))[None]

    def write_response(self, scores: np.ndarray) -> Any:
        p = scores[0]
        attrs: dict[str, Any] = {"smile": {"value": 100.0 * float(p[-1] if p.size <= 2 else p[3]),
                                           "threshold": 50.0}}
        if p.size == len(FACEPP_EMOTIONS):
            attrs["emotion"] = {e: 100.0 * float(v)
                                for e, v in zip(FACEPP_EMOTIONS, p, strict=True)}
        token = hashlib.sha1(p.tobytes()).hexdigest()[:32]
        return {"request_id": token, "time_used": 5, "image_id": token, "face_num": 1,
                "faces": [{"face_token": token, "attributes": attrs,
                           "face_rectangle": {"top": 0, "left": 0, "width": 1, "height": 1}}]}


class SideBySide:
    """A pair model served as ``predict(side-by-side pairs (P, H, 2W, 3)) -> (P, 1)``: how
    :class:`~adapters.serving.server.StandInServer` answers a face-compare preset locally.

    pair_model: anything with ``compare(images_a, images_b) -> (P,)`` similarities.
    """

    def __init__(self, pair_model: Any, name: str | None = None) -> None:
        if not callable(getattr(pair_model, "compare", None)):
            raise TypeError(f"pair_model must have compare(images_a, images_b), got "
                            f"{type(pair_model).__name__}")
        self.pair_model = pair_model
        self.name = name or f"SideBySide({getattr(pair_model, 'name', 'pairs')})"

    def predict(self, images: np.ndarray) -> np.ndarray:
        halves = [split_pair(im) for im in images]
        a = np.stack([h[0] for h in halves])
        b = np.stack([h[1] for h in halves])
        return np.asarray(self.pair_model.compare(a, b), dtype=np.float64).reshape(-1, 1)


class FacePPComparePreset(_FacePPCommon):
    """Face++ Compare API v3 ``POST /facepp/v3/compare`` (form fields, one pair per request).

    Sends ``api_key``/``api_secret`` (env ``FACEPP_API_KEY``/``FACEPP_API_SECRET``) and
    ``image_base64_1`` / ``image_base64_2`` (the two halves of a side-by-side pair, see
    :func:`side_by_side`); reads ``confidence`` (0-100) as the pair's similarity
    ``confidence / 100``. Face++ leaves ``confidence`` out when it finds no face in an image:
    that pair gets ``no_face`` (default 0.0: "no match"). The vendor's own thresholds
    (``thresholds`` at false accept rates 1e-3 / 1e-4 / 1e-5, same 0-100 scale) are the
    threshold to pass to the tuner, divided by 100. Throttling: 403
    ``CONCURRENCY_LIMIT_EXCEEDED`` (retried).
    Source: https://console.faceplusplus.com/documents/5679308
    """

    name = "facepp_compare"
    path_template = "/facepp/v3/compare"
    output_kind = "similarity"

    def __init__(self, *, no_face: float = 0.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.no_face = float(no_face)
        self.no_face_count = 0
        self._lock = threading.Lock()

    def build_request(self, images: np.ndarray, encode: Encoder,
                      secrets: Mapping[str, str]) -> WireRequest:
        a, b = split_pair(images[0])
        return WireRequest(data={
            "api_key": secrets.get("api_key", ""), "api_secret": secrets.get("api_secret", ""),
            "image_base64_1": b64(encode(a)), "image_base64_2": b64(encode(b))})

    def parse_response(self, body: Any, n: int) -> np.ndarray:
        if not isinstance(body, dict):
            raise ResponseFormatError(f"the answer is not a JSON object (got {short(body)})")
        if "confidence" not in body:
            if not isinstance(body.get("faces1"), list) or not isinstance(body.get("faces2"),
                                                                          list):
                raise ResponseFormatError(f"no 'confidence' and no 'faces1'/'faces2' lists in "
                                          f"the answer (got {short(body)})")
            with self._lock:
                self.no_face_count += 1
            return np.full((n, 1), self.no_face)
        try:
            return np.array([[float(body["confidence"]) / 100.0]])
        except (TypeError, ValueError):
            raise ResponseFormatError(f"'confidence' is not a number: "
                                      f"{body['confidence']!r}") from None

    def read_request(self, body: bytes, content_type: str) -> np.ndarray:
        form = parse_qs(body.decode("ascii"))
        a = decode_image(unb64(form["image_base64_1"][0]))
        b = decode_image(unb64(form["image_base64_2"][0]))
        return side_by_side(a[None], b[None])

    def write_response(self, scores: np.ndarray) -> Any:
        c = 100.0 * float(scores[0, 0])
        token = hashlib.sha1(scores.tobytes()).hexdigest()[:32]
        face = [{"face_token": token,
                 "face_rectangle": {"top": 0, "left": 0, "width": 1, "height": 1}}]
        return {"request_id": token, "time_used": 5, "confidence": c,
                "thresholds": {"1e-3": 62.327, "1e-4": 69.101, "1e-5": 73.975},
                "faces1": face, "faces2": face}


GCV_LIKELIHOOD = {"UNKNOWN": 0.5, "VERY_UNLIKELY": 0.0, "UNLIKELY": 0.25, "POSSIBLE": 0.5,
                  "LIKELY": 0.75, "VERY_LIKELY": 1.0}
_GCV_LEVELS = ("VERY_UNLIKELY", "UNLIKELY", "POSSIBLE", "LIKELY", "VERY_LIKELY")


class GoogleVisionPreset(_FacePreset):
    """Google Cloud Vision ``POST /v1/images:annotate`` with FACE_DETECTION, up to 16 images.

    The key (env ``GOOGLE_API_KEY``) goes in the ``X-Goog-Api-Key`` header, never
    in the URL. ``outputs`` name likelihoods (``joy``, ``sorrow``, ``anger``,
    ``surprise``, ...), each an enum mapped to an ordinal score: VERY_UNLIKELY 0,
    UNLIKELY 0.25, POSSIBLE 0.5, LIKELY 0.75, VERY_LIKELY 1 (UNKNOWN 0.5). Only five
    levels: a finite difference across a small perturbation is usually zero.
    Source: https://cloud.google.com/vision/docs/detecting-faces and
    https://cloud.google.com/vision/docs/reference/rest/v1/AnnotateImageResponse#likelihood
    """

    name = "gcv"
    path_template = "/v1/images:annotate"
    max_images_per_request = 16
    default_images_per_request = 16
    secret_env = {"api_key": "GOOGLE_API_KEY"}
    required_secrets = ("api_key",)
    choices = ("joy", "sorrow", "anger", "surprise", "underExposed", "blurred", "headwear")

    def auth_headers(self, secrets: Mapping[str, str]) -> dict[str, str]:
        return {"X-Goog-Api-Key": secrets["api_key"]} if secrets.get("api_key") else {}

    def build_request(self, images: np.ndarray, encode: Encoder,
                      secrets: Mapping[str, str]) -> WireRequest:
        reqs = [{"image": {"content": b64(encode(im))},
                 "features": [{"type": "FACE_DETECTION", "maxResults": 1}]} for im in images]
        return WireRequest(json={"requests": reqs}, headers=self.auth_headers(secrets))

    def parse_response(self, body: Any, n: int) -> np.ndarray:
        resps = body.get("responses") if isinstance(body, dict) else None
        if not isinstance(resps, list):
            raise ResponseFormatError(f"no 'responses' list in the answer (got {short(body)})")
        for i, r in enumerate(resps):
            if not isinstance(r, dict):  # an image without a face is {}, not something else
                raise ResponseFormatError(f"image {i}: the response is not an object "
                                          f"(got {short(r)})")
            if "error" in r:
                raise ResponseFormatError(
                    f"image {i}: Vision answered an error: {self.vendor_message(r)}")
        faces = [r.get("faceAnnotations", []) for r in resps]
        return self._rows(faces, n)

    def _face_row(self, face: Any, i: int) -> list[float]:
        return [GCV_LIKELIHOOD[face[f"{o}Likelihood"]] for o in self.outputs]

    def vendor_message(self, body: Any) -> str:
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            return f"{err.get('status', err.get('code', ''))}: {err.get('message', '')}"
        return super().vendor_message(body)

    def read_request(self, body: bytes, content_type: str) -> np.ndarray:
        return decode_stack([unb64(r["image"]["content"]) for r in json_body(body)["requests"]])

    def write_response(self, scores: np.ndarray) -> Any:
        out = []
        for p in scores:
            level = _GCV_LEVELS[min(4, int(float(p[-1]) * 5))]
            face: dict[str, Any] = {f"{c}Likelihood": "VERY_UNLIKELY" for c in self.choices}
            face.update({"joyLikelihood": level, "detectionConfidence": 0.99})
            out.append({"faceAnnotations": [face]})
        return {"responses": out}

    def server_auth_ok(self, headers: Mapping[str, str], body: bytes, expected: str) -> bool:
        return headers.get("X-Goog-Api-Key", "") == expected

    def throttle_answer(self) -> tuple[int, Any]:
        return 429, {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
                               "message": "Quota exceeded"}}

    def auth_answer(self) -> tuple[int, Any]:
        return 403, {"error": {"code": 403, "status": "PERMISSION_DENIED",
                               "message": "API key not valid. Please pass a valid API key."}}


CLARIFAI_THROTTLE = {11005: "CONN_THROTTLED", 10030: "TRY_AGAIN"}
CLARIFAI_AUTH = {11000, 11001, 11002, 11007, 11008, 11009}


class ClarifaiPreset(Preset):
    """Clarifai predict ``POST /v2/models/{model}/outputs``: concepts, up to 128 inputs.

    Header ``Authorization: Key <PAT>`` (env ``CLARIFAI_PAT``); inputs as
    ``{"data": {"image": {"base64": ...}}}``; reads ``outputs[i].data.concepts`` and
    returns the ``value`` of each concept named (or with the id) in ``labels``, in that
    order (a concept absent from the answer scores 0). Throttling comes in the JSON
    body (status code 11005 CONN_THROTTLED), whatever the HTTP status: retried.
    Sources: https://docs.clarifai.com/api-guide/predict/images,
    https://docs.clarifai.com/resources/api-overview/status-codes,
    https://docs.clarifai.com/api-guide/api-overview/rate-limits
    """

    name = "clarifai"
    path_template = "/v2/models/{model}/outputs"
    max_images_per_request = 128
    default_images_per_request = 32
    secret_env = {"api_key": "CLARIFAI_PAT"}
    required_secrets = ("api_key",)

    def __init__(self, *, labels: Sequence[str] | None = None, **kw: Any) -> None:
        if not labels:
            raise ValueError(
                "the clarifai preset needs labels=[concept names or ids] in score order")
        super().__init__(labels=labels, auth_scheme="Key", **kw)

    def build_request(self, images: np.ndarray, encode: Encoder,
                      secrets: Mapping[str, str]) -> WireRequest:
        inputs = [{"data": {"image": {"base64": b64(encode(im))}}} for im in images]
        return WireRequest(json={"inputs": inputs}, headers=self.auth_headers(secrets))

    @staticmethod
    def _code(body: Any) -> int | None:
        status = body.get("status") if isinstance(body, dict) else None
        code = status.get("code") if isinstance(status, dict) else None
        return int(code) if isinstance(code, (int, float)) else None

    def parse_response(self, body: Any, n: int) -> np.ndarray:
        code = self._code(body)
        if code not in (10000, None):
            raise ResponseFormatError(f"Clarifai status {code}: {self.vendor_message(body)}")
        outs = body.get("outputs") if isinstance(body, dict) else None
        if not isinstance(outs, list) or len(outs) != n:
            got = len(outs) if isinstance(outs, list) else "no"
            raise ResponseFormatError(f"the answer has {got} outputs for {n} images")
        rows = []
        for i, out in enumerate(outs):
            try:
                concepts = out["data"].get("concepts", [])
                values = {c.get("name"): c["value"] for c in concepts}
                values.update({c.get("id"): c["value"] for c in concepts})
            except (KeyError, TypeError, AttributeError):
                raise ResponseFormatError(f"output {i} has no data.concepts with values") from None
            assert self.labels is not None
            rows.append([float(values.get(k, 0.0)) for k in self.labels])
        return np.asarray(rows, dtype=np.float64)

    def is_throttle(self, status: int, body: Any) -> bool:
        return self._code(body) in CLARIFAI_THROTTLE

    def is_auth_error(self, status: int, body: Any) -> bool:
        return status in (401, 403) or self._code(body) in CLARIFAI_AUTH

    def vendor_message(self, body: Any) -> str:
        status = body.get("status") if isinstance(body, dict) else None
        if isinstance(status, dict):
            parts = (str(status.get(k, "")) for k in ("code", "description", "details"))
            return " ".join(parts).strip()
        return super().vendor_message(body)

    def read_request(self, body: bytes, content_type: str) -> np.ndarray:
        inputs = json_body(body)["inputs"]
        return decode_stack([unb64(x["data"]["image"]["base64"]) for x in inputs])

    def write_response(self, scores: np.ndarray) -> Any:
        assert self.labels is not None
        ok = {"code": 10000, "description": "Ok"}
        outputs = [{"status": ok, "data": {"concepts": [
            {"id": k, "name": k, "value": float(v)}
            for k, v in zip(self.labels, row, strict=True)]}} for row in scores]
        return {"status": ok, "outputs": outputs}

    def throttle_answer(self) -> tuple[int, Any]:
        # Clarifai puts the throttle in the body; sent with HTTP 200, the worst case
        # for a client that only looks at the status line.
        return 200, {"status": {"code": 11005, "description": "Making too many requests",
                                "details": "exceeded limit of 15 requests per second"}}

    def auth_answer(self) -> tuple[int, Any]:
        return 401, {"status": {"code": 11009, "description": "API key not found"}}


PRESETS: dict[str, type[Preset]] = {
    "json": JSONPreset, "oip": OIPPreset, "tfserving": TFServingPreset,
    "torchserve": TorchServePreset, "facepp": FacePPPreset, "gcv": GoogleVisionPreset,
    "clarifai": ClarifaiPreset, "facepp_compare": FacePPComparePreset,
}


def make_preset(preset: str | Preset, **options: Any) -> Preset:
    """A :class:`Preset` from its name (see ``PRESETS``) and options, or the instance given."""
    if isinstance(preset, Preset):
        if options:
            raise TypeError(
                f"options {sorted(options)} given with a Preset instance; set them on it")
        return preset
    if preset == "rekognition":
        raise ValueError("AWS Rekognition is reached through boto3 (SigV4 signing), not a plain "
                         "HTTP preset: use adapters.remote.rekognition.RekognitionModel")
    if preset not in PRESETS:
        raise ValueError(
            f"unknown preset {preset!r}; choose from {sorted(PRESETS)} or 'rekognition'")
    try:
        return PRESETS[preset](**options)
    except TypeError as exc:
        raise TypeError(f"preset {preset!r}: {exc}") from None
