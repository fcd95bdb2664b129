"""AWS Rekognition DetectFaces as a ``Model``, through boto3 (an optional import).

Rekognition requests are signed (SigV4), so they go through boto3 rather than
:class:`adapters.http.HTTPModel`; credentials come from boto3's own chain
(environment, ``~/.aws``, instance role) and never pass through this module.
One image per call; calls run on ``concurrency`` threads; throttles and
transient errors are retried by botocore (``retries={"mode": "adaptive"}``).
Source: https://docs.aws.amazon.com/rekognition/latest/APIReference/API_DetectFaces.html,
https://docs.aws.amazon.com/rekognition/latest/APIReference/API_Smile.html,
https://docs.aws.amazon.com/rekognition/latest/APIReference/API_Emotion.html
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .base import BaseModel
from .errors import (
    AuthenticationError,
    EndpointUnreachable,
    HTTPModelError,
    HTTPStatusError,
    ResponseFormatError,
)
from .wire import encode_image

__all__ = ["RekognitionModel", "parse_face_details", "REKOGNITION_EMOTIONS"]

REKOGNITION_EMOTIONS = ("HAPPY", "SAD", "ANGRY", "CONFUSED", "DISGUSTED", "SURPRISED", "CALM",
                        "UNKNOWN", "FEAR")
_AUTH_CODES = {"AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException",
               "ExpiredTokenException", "InvalidClientTokenId"}
_CHOICES = ("smile",) + tuple(f"emotion:{e}" for e in REKOGNITION_EMOTIONS)


def _bool_probability(attr: dict[str, Any]) -> float:
    """``{"Value": bool, "Confidence": 0..100}`` -> P(True) in [0, 1]."""
    c = float(attr["Confidence"]) / 100.0
    return c if attr["Value"] else 1.0 - c


def parse_face_details(response: dict[str, Any], outputs: Sequence[str],
                       no_face: float = 0.0) -> list[float]:
    """Score vector of one DetectFaces answer: ``smile`` -> P(smiling), ``emotion:X`` -> conf/100.

    The first face of ``FaceDetails`` is used; no face gives ``no_face`` for every output.
    """
    faces = response.get("FaceDetails")
    if not isinstance(faces, list):
        raise ResponseFormatError(
            f"no 'FaceDetails' list in the answer (keys: {sorted(response)[:8]})")
    if not faces:
        return [no_face] * len(outputs)
    face = faces[0]
    try:
        emotions = {e["Type"]: float(e["Confidence"]) / 100.0 for e in face.get("Emotions", [])}
        return [_bool_probability(face["Smile"]) if o == "smile"
                else emotions.get(o.split(":", 1)[1], 0.0) for o in outputs]
    except (KeyError, TypeError) as exc:
        raise ResponseFormatError(f"face has no {exc} (request Attributes=['ALL'])") from None


class RekognitionModel(BaseModel):
    """AWS Rekognition DetectFaces -> scores ``(N, len(outputs))`` in [0, 1].

    outputs: ``"smile"`` and/or ``"emotion:HAPPY"`` ... (see ``REKOGNITION_EMOTIONS``).
    region: AWS region; client: a ready boto3 ``rekognition`` client (tests pass a fake).
    concurrency: calls in flight; max_retries: botocore retries per call.
    no_face: score given to every output when no face is found.
    """

    def __init__(self, *, outputs: Sequence[str] = ("smile",), region: str | None = None,
                 client: Any = None, concurrency: int = 4, max_retries: int = 5,
                 no_face: float = 0.0, name: str | None = None) -> None:
        bad = [o for o in outputs if o not in _CHOICES]
        if bad or not outputs:
            raise ValueError(
                f"outputs {bad or list(outputs)} not supported; choose from {_CHOICES}")
        self.outputs, self.region, self.no_face = list(outputs), region, float(no_face)
        self.concurrency, self.max_retries = int(concurrency), int(max_retries)
        self.name = name or f"Rekognition({region or 'default region'})"
        self._client = client if client is not None else self._make_client()
        self._fatal: HTTPModelError | None = None
        self._lock = threading.Lock()

    def _make_client(self) -> Any:
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise ImportError("RekognitionModel needs boto3: pip install boto3") from None
        cfg = Config(retries={"max_attempts": self.max_retries + 1, "mode": "adaptive"},
                     max_pool_connections=self.concurrency)
        return boto3.client("rekognition", region_name=self.region, config=cfg)

    def _one(self, image: np.ndarray) -> list[float]:
        if self._fatal is not None:
            raise self._fatal
        try:
            resp = self._client.detect_faces(Image={"Bytes": encode_image(image, "png")},
                                             Attributes=["ALL"])
        except Exception as exc:  # botocore's classes are optional imports: match by name
            raise self._convert(exc) from None
        return parse_face_details(resp, self.outputs, self.no_face)

    def _convert(self, exc: Exception) -> HTTPModelError:
        err = getattr(exc, "response", {}).get("Error", {}) if hasattr(exc, "response") else {}
        code, msg = str(err.get("Code", "")), str(err.get("Message", ""))
        where = f"Rekognition DetectFaces ({self.region or 'default region'})"
        if code in _AUTH_CODES:
            with self._lock:
                self._fatal = AuthenticationError(
                    f"{where}: credentials refused ({code}: {msg}). Check the AWS credentials "
                    "and that they allow rekognition:DetectFaces", vendor_message=msg)
            return self._fatal
        if code:
            return HTTPStatusError(f"{where}: {code}: {msg} (after {self.max_retries} retries)",
                                   vendor_message=msg)
        return EndpointUnreachable(f"{where}: no answer ({type(exc).__name__}: {exc}). "
                                   "Check the region and the network")

    def _predict(self, images: np.ndarray) -> np.ndarray:
        if self.concurrency == 1 or len(images) == 1:
            rows = [self._one(im) for im in images]
        else:
            with ThreadPoolExecutor(self.concurrency) as pool:
                rows = list(pool.map(self._one, images))
        return np.asarray(rows, dtype=np.float64)

    def reset(self) -> None:
        """Forget a latched credentials error."""
        self._fatal = None

    def __repr__(self) -> str:
        return (f"RekognitionModel(outputs={self.outputs}, region={self.region!r}, "
                f"concurrency={self.concurrency})")
