"""Vendor APIs as presets: their documented request and answer formats -> score vectors.

Here: Google Cloud Vision (face likelihoods) and Clarifai (concepts); Face++ Detect and
Compare are in :mod:`blackbox_dft.adapters.remote.facepp` and the face presets' shared base in
:mod:`blackbox_dft.adapters.remote.faces` (their names are re-exported here). Each face preset
maps the
vendor's answer for one image to a fixed-length vector of floats in ``[0, 1]``
(``outputs`` chooses which attributes and in what order); an image in which the vendor
finds no face gets ``no_face`` for every output (default 0.0: "not smiling"), and is
counted in ``HTTPModel.stats["no_face"]``.
Also here: :func:`make_preset`, the registry of every preset by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from blackbox_dft.adapters.errors import ResponseFormatError
from blackbox_dft.adapters.remote.facepp import (
    FACEPP_EMOTIONS,
    FacePPComparePreset,
    FacePPPreset,
    SideBySide,
)
from blackbox_dft.adapters.remote.faces import FacePreset
from blackbox_dft.adapters.remote.hf import HFPreset
from blackbox_dft.adapters.remote.oip import OIPPreset
from blackbox_dft.adapters.remote.presets import (
    JSONPreset,
    Preset,
    TFServingPreset,
    TorchServePreset,
    WireRequest,
)
from blackbox_dft.adapters.remote.wire import Encoder, b64, decode_stack, json_body, short, unb64
from blackbox_dft.core.images import side_by_side, split_pair

# FacePreset, FACEPP_EMOTIONS, the Face++ presets, SideBySide, side_by_side and split_pair
# are re-exported: ``from blackbox_dft.adapters.remote.vendors import X`` predates the split by
# vendor.
__all__ = ["FacePPPreset", "FacePPComparePreset", "GoogleVisionPreset", "ClarifaiPreset",
           "PRESETS", "make_preset", "side_by_side", "split_pair", "SideBySide",
           "FacePreset", "FACEPP_EMOTIONS"]


GCV_LIKELIHOOD = {"UNKNOWN": 0.5, "VERY_UNLIKELY": 0.0, "UNLIKELY": 0.25, "POSSIBLE": 0.5,
                  "LIKELY": 0.75, "VERY_LIKELY": 1.0}
_GCV_LEVELS = ("VERY_UNLIKELY", "UNLIKELY", "POSSIBLE", "LIKELY", "VERY_LIKELY")


class GoogleVisionPreset(FacePreset):
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
    "clarifai": ClarifaiPreset, "facepp_compare": FacePPComparePreset, "hf": HFPreset,
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
                         "HTTP preset: use "
                         "blackbox_dft.adapters.remote.rekognition.RekognitionModel")
    if preset not in PRESETS:
        raise ValueError(
            f"unknown preset {preset!r}; choose from {sorted(PRESETS)} or 'rekognition'")
    try:
        return PRESETS[preset](**options)
    except TypeError as exc:
        raise TypeError(f"preset {preset!r}: {exc}") from None
