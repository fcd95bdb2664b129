"""Bytes on the wire: image files, base64, and finding scores in parsed JSON answers.

Images are uint8 ``(H, W, 3)`` RGB in memory; OpenCV encodes BGR, so the colour
order is converted here, once, in each direction.
"""

from __future__ import annotations

import base64
import binascii
import json
import reprlib
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np

from blackbox_dft.adapters.errors import ResponseFormatError

__all__ = ["Encoder", "encode_image", "decode_image", "b64", "unb64", "decode_stack",
           "get_path", "rows_from_entries", "json_body", "short"]

Encoder = Callable[[np.ndarray], bytes]

_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 3, 60, 60
_SHORT.maxlist = _SHORT.maxdict = _SHORT.maxtuple = 6


def short(value: Any, limit: int = 120) -> str:
    """A short text of a parsed JSON value for error messages: bounded in depth and length,
    so that a huge or deeply nested answer costs nothing (``str()`` of one can recurse)."""
    text = _SHORT.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def encode_image(image: np.ndarray, encoding: str = "png", quality: int = 95) -> bytes:
    """Encode one uint8 RGB image ``(H, W, 3)`` as PNG (lossless) or JPEG bytes."""
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)  # OpenCV writes BGR: convert once, here
    if encoding == "png":
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    elif encoding == "jpeg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    else:
        raise ValueError(f"encoding must be 'png' or 'jpeg', got {encoding!r}")
    if not ok:
        raise ValueError(f"OpenCV could not encode an image of shape {image.shape} as {encoding}")
    return bytes(buf.tobytes())


def decode_image(data: bytes) -> np.ndarray:
    """Decode PNG/JPEG bytes to a uint8 RGB image ``(H, W, 3)``; ValueError if not an image."""
    arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if arr is None:
        raise ValueError(f"{len(data)} bytes are not a PNG/JPEG image")
    return np.ascontiguousarray(cv2.cvtColor(arr, cv2.COLOR_BGR2RGB))


def b64(data: bytes) -> str:
    """Standard base64 text of ``data``."""
    return base64.b64encode(data).decode("ascii")


def unb64(text: Any) -> bytes:
    """Bytes of a base64 string; ValueError naming the problem otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"expected a base64 string, got {type(text).__name__}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"invalid base64 image: {exc}") from None


def decode_stack(items: Sequence[bytes]) -> np.ndarray:
    """Decode several image files to one uint8 ``(N, H, W, 3)`` stack (all the same size)."""
    imgs = [decode_image(x) for x in items]
    if not imgs:
        raise ValueError("the request holds no image")
    if len({im.shape for im in imgs}) != 1:
        sizes = sorted({im.shape for im in imgs})
        raise ValueError(f"images of different sizes in one request: {sizes}")
    return np.stack(imgs)


def get_path(body: Any, path: str) -> Any:
    """Follow a dotted path (``"outputs.0.data"``; integers index lists) into parsed JSON.

    ``*`` maps the rest of the path over a list (``"results.*.label"``: one label per item).
    Raises :class:`KeyError` with the part that was missing and the keys present there.
    """
    node = body
    if not path:
        return node
    parts = path.split(".")
    for i, part in enumerate(parts):
        where = ".".join(parts[:i]) or "<top>"
        if part == "*":
            if not isinstance(node, list):
                raise KeyError(f"'*' needs a list at {where}, found a {type(node).__name__}")
            return [get_path(item, ".".join(parts[i + 1:])) for item in node]
        if isinstance(node, list):
            if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
                raise KeyError(f"{part!r} is not an index into the list of {len(node)} at {where}")
            node = node[int(part)]
        elif isinstance(node, dict):
            if part not in node:
                raise KeyError(f"no key {part!r} at {where}; keys there: {sorted(node)[:12]}")
            node = node[part]
        else:
            raise KeyError(f"cannot look up {part!r} at {where}: it is a {type(node).__name__}")
    return node


def _row(entry: Any, labels: Sequence[str] | None, i: int) -> list[float]:
    if isinstance(entry, dict):
        if not labels:
            raise ValueError(
                f"image {i}: scores are a mapping with keys {sorted(entry)[:12]}; "
                "pass labels=[...] to say which keys to read and in what order"
            )
        missing = [k for k in labels if k not in entry]
        if missing:
            raise ValueError(f"image {i}: labels {missing} not in the answer "
                             f"(keys: {sorted(entry)[:12]})")
        return [float(entry[k]) for k in labels]
    if isinstance(entry, bool):  # a yes / no decision: [no, yes]
        return [float(not entry), float(entry)]
    if isinstance(entry, str):  # a decision by name: one-hot in the order of labels
        if not labels:
            raise ValueError(f"image {i}: the answer is the label {entry[:40]!r}; pass "
                             "labels=[...] (every label it can return, in class order)")
        if entry not in labels:
            raise ValueError(f"image {i}: label {entry[:40]!r} is not one of {list(labels)}")
        return [float(k == entry) for k in labels]
    if isinstance(entry, (int, float)):
        return [float(entry)]
    if isinstance(entry, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in entry
    ):
        return [float(v) for v in entry]
    raise ValueError(f"image {i}: expected numbers, a label, or a mapping of label -> score, "
                     f"got {short(entry, 80)}")


def rows_from_entries(entries: Any, n: int, labels: Sequence[str] | None = None) -> np.ndarray:
    """Scores ``(n, K)`` from one entry per image (a number, a list, or a label->score mapping)."""
    if not isinstance(entries, list):
        raise ResponseFormatError(
            f"expected a list of {n} per-image scores, got {type(entries).__name__}")
    if len(entries) != n:
        raise ResponseFormatError(f"the answer has scores for {len(entries)} images, {n} were sent")
    try:
        rows = [_row(e, labels, i) for i, e in enumerate(entries)]
    except ValueError as exc:
        raise ResponseFormatError(str(exc)) from None
    if len({len(r) for r in rows}) != 1:
        widths = sorted({len(r) for r in rows})
        raise ResponseFormatError(f"images got different numbers of scores: {widths}")
    return np.asarray(rows, dtype=np.float64)


def json_body(body: bytes) -> Any:
    """Parsed JSON of a request body; ValueError if it is not JSON."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"request body is not JSON: {exc}") from None


def keys_of(body: Any) -> Any:
    """A short description of a JSON value's keys, for error messages."""
    return sorted(body)[:12] if isinstance(body, dict) else type(body).__name__
