"""Face++ (Megvii) as presets: Detect (smile, emotions per face) and Compare (a pair's similarity).

Both take the keys as form fields and one image (or one pair) per request; both answer a
throttle with 403 ``CONCURRENCY_LIMIT_EXCEEDED`` (retried) and a bad key with 401/403.
A face-compare pair travels through ``predict`` as one side-by-side image
(:func:`blackbox_dft.core.images.side_by_side`), which :class:`FacePPComparePreset` splits
into the vendor's two fields; :class:`SideBySide` serves a pair model that way.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

import numpy as np

from blackbox_dft.adapters.errors import ResponseFormatError
from blackbox_dft.adapters.remote.faces import FacePreset
from blackbox_dft.adapters.remote.presets import Preset, WireRequest
from blackbox_dft.adapters.remote.wire import Encoder, b64, decode_image, short, unb64
from blackbox_dft.core.images import side_by_side, split_pair

__all__ = ["FACEPP_EMOTIONS", "FacePPPreset", "FacePPComparePreset", "SideBySide"]


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


class FacePPPreset(_FacePPCommon, FacePreset):
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
    :class:`~blackbox_dft.adapters.serving.server.StandInServer` answers a face-compare preset
    locally.

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
