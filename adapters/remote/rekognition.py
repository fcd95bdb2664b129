"""AWS Rekognition DetectFaces as a ``Model`` and CompareFaces as a pair model, through boto3
(an optional import).

Rekognition requests are signed (SigV4), so they go through boto3 rather than
:class:`blackbox_dft.adapters.remote.http.HTTPModel`; credentials come from boto3's own chain
(environment, ``~/.aws``, instance role) and never pass through this module.
One image per call; calls run on ``concurrency`` threads; throttles and
transient errors are retried by botocore (``retries={"mode": "adaptive"}``).
Source: https://docs.aws.amazon.com/rekognition/latest/APIReference/API_DetectFaces.html,
https://docs.aws.amazon.com/rekognition/latest/APIReference/API_Smile.html,
https://docs.aws.amazon.com/rekognition/latest/APIReference/API_Emotion.html,
https://docs.aws.amazon.com/rekognition/latest/APIReference/API_CompareFaces.html
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from blackbox_dft.adapters.base import BaseModel
from blackbox_dft.adapters.errors import (
    AuthenticationError,
    EndpointUnreachable,
    HTTPModelError,
    HTTPStatusError,
    ResponseFormatError,
)
from blackbox_dft.adapters.remote.wire import encode_image
from blackbox_dft.core.images import check_image_pairs

__all__ = ["RekognitionModel", "RekognitionCompareModel", "parse_face_details",
           "REKOGNITION_EMOTIONS"]

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

    _operation = "DetectFaces"

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
        where = f"Rekognition {self._operation} ({self.region or 'default region'})"
        if code in _AUTH_CODES:
            with self._lock:
                self._fatal = AuthenticationError(
                    f"{where}: credentials refused ({code}: {msg}). Check the AWS credentials "
                    f"and that they allow rekognition:{self._operation}", vendor_message=msg)
            return self._fatal
        if code:
            return HTTPStatusError(f"{where}: {code}: {msg} (after {self.max_retries} retries)",
                                   vendor_message=msg)
        return EndpointUnreachable(f"{where}: no answer ({type(exc).__name__}: {exc}). "
                                   "Check the region and the network")

    def _calls(self, call: Callable[[Any], Any], items: Sequence[Any]) -> np.ndarray:
        """``call`` on every item, ``concurrency`` at a time, results in input order."""
        if self.concurrency == 1 or len(items) == 1:
            out = [call(it) for it in items]
        else:
            with ThreadPoolExecutor(self.concurrency) as pool:
                out = list(pool.map(call, items))
        return np.asarray(out, dtype=np.float64)

    def _predict(self, images: np.ndarray) -> np.ndarray:
        return self._calls(self._one, list(images))

    def reset(self) -> None:
        """Forget a latched credentials error."""
        self._fatal = None

    def __repr__(self) -> str:
        return (f"RekognitionModel(outputs={self.outputs}, region={self.region!r}, "
                f"concurrency={self.concurrency})")


class RekognitionCompareModel(RekognitionModel):
    """AWS Rekognition CompareFaces as a pair model: ``compare(a, b) -> (P,)`` similarities.

    One call per pair (source = image ``a``, target = image ``b``, ``SimilarityThreshold=0``
    so that every target face is scored); the pair's similarity is the best
    ``FaceMatches[].Similarity / 100``. A pair in which Rekognition finds no face (no match
    listed, or ``InvalidParameterException``, its answer when the source has no face) gets
    ``no_face`` (default 0.0: "no match"), counted in ``no_face_pairs``. Same client,
    concurrency, retries and latched credential errors as :class:`RekognitionModel`; fit it
    with ``VerificationTuner(model, threshold=t)``, ``t`` the similarity / 100 your product
    accepts (Rekognition's default is 80%).
    """

    output_kind = "similarity"
    _operation = "CompareFaces"

    def __init__(self, *, region: str | None = None, client: Any = None,
                 concurrency: int = 4, max_retries: int = 5, no_face: float = 0.0,
                 name: str | None = None) -> None:
        super().__init__(region=region, client=client, concurrency=concurrency,
                         max_retries=max_retries, no_face=no_face,
                         name=name or f"RekognitionCompare({region or 'default region'})")
        self.no_face_pairs = 0

    def _pair(self, pair: tuple[np.ndarray, np.ndarray]) -> float:
        if self._fatal is not None:
            raise self._fatal
        try:
            resp = self._client.compare_faces(
                SourceImage={"Bytes": encode_image(pair[0], "png")},
                TargetImage={"Bytes": encode_image(pair[1], "png")}, SimilarityThreshold=0.0)
        except Exception as exc:  # botocore's classes are optional imports: match by name
            code = getattr(exc, "response", {}).get("Error", {}).get("Code") \
                if hasattr(exc, "response") else None
            if code != "InvalidParameterException":
                raise self._convert(exc) from None
            resp = {"FaceMatches": []}
        matches = resp.get("FaceMatches")
        if not isinstance(matches, list):
            raise ResponseFormatError(
                f"no 'FaceMatches' list in the answer (keys: {sorted(resp)[:8]})")
        if not matches:
            with self._lock:
                self.no_face_pairs += 1
            return self.no_face
        try:
            return max(float(m["Similarity"]) for m in matches) / 100.0
        except (KeyError, TypeError, ValueError) as exc:
            raise ResponseFormatError(f"a face match has no usable Similarity ({exc})") from None

    def compare(self, images_a: np.ndarray, images_b: np.ndarray) -> np.ndarray:
        """Similarities float64 ``(P,)`` in [0, 1] of pairs ``(images_a[i], images_b[i])``."""
        a, b = check_image_pairs(images_a, images_b)
        return self._calls(self._pair, list(zip(a, b, strict=True)))

    def _predict(self, images: np.ndarray) -> np.ndarray:
        raise TypeError(f"{self.name} compares pairs of images: call compare(images_a, "
                        "images_b), or fit it with VerificationTuner")

    def __repr__(self) -> str:
        return (f"RekognitionCompareModel(region={self.region!r}, "
                f"concurrency={self.concurrency})")
