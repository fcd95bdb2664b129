"""Bytes on the wire: image files, base64, and finding scores in parsed JSON answers.

Images are uint8 ``(H, W, 3)`` RGB in memory; OpenCV encodes BGR, so the colour
order is converted here, once, in each direction.
"""

from __future__ import annotations

import base64
import binascii
import json
import reprlib
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, unquote_plus

import cv2
import numpy as np

from blackbox_dft.adapters.errors import ResponseFormatError

__all__ = ["Encoder", "encode_image", "decode_image", "b64", "unb64", "decode_stack",
           "get_path", "Labelled", "class_row", "rows_from_entries", "json_body", "short",
           "quote_b64", "unquote_form"]

Encoder = Callable[[np.ndarray], bytes]

_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 3, 60, 60
_SHORT.maxlist = _SHORT.maxdict = _SHORT.maxtuple = 6


def short(value: Any, limit: int = 120) -> str:
    """A short text of a parsed JSON value for error messages: bounded in depth and length,
    so that a huge or deeply nested answer costs nothing (``str()`` of one can recurse)."""
    text = _SHORT.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


#: PNG with one filter (Average) and run-length matching only (zlib's Z_RLE), instead of
#: libpng's adaptive choice among five filters and full deflate: lossless all the same, and on
#: 224x224 photos half the CPU to encode and 3/4 to decode for a file of the same size (8
#: scikit-image photos: 6.1 ms, 84 KB, decoded in 3.1 ms against 12.1 ms, 83.5 KB, 4.2 ms,
#: on a loaded machine); flat areas still shrink to nothing, as runs. Older OpenCV builds
#: without IMWRITE_PNG_FILTER keep the adaptive filters.
_FAST_PNG = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY,
             cv2.IMWRITE_PNG_STRATEGY_RLE] + (
    [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_AVG]
    if hasattr(cv2, "IMWRITE_PNG_FILTER") else [])


#: PNG with neither filter nor compression (zlib level 0, deflate's stored blocks): still
#: lossless and readable by any PNG decoder, 1.7x the bytes of :data:`_FAST_PNG` on photos,
#: for about a tenth of its CPU to encode and of the decoder's (224x224 photos: 0.25 against
#: 3.3 ms to encode, 0.18 against 1.5 ms to decode; 151 against 90 KB)
_STORED_PNG = [cv2.IMWRITE_PNG_COMPRESSION, 0] + (
    [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE]
    if hasattr(cv2, "IMWRITE_PNG_FILTER") else [])
#: the PNG encodings :func:`encode_image` writes (``png=``)
PNG_MODES = ("client", "fast", "stored")


def encode_image(image: np.ndarray, encoding: str = "png", quality: int = 95, *,
                 png: str = "client") -> bytes:
    """Encode one uint8 RGB image ``(H, W, 3)`` as PNG (lossless) or JPEG bytes.

    png: which lossless encoding (PNG only). "client": zlib level 1 with libpng's adaptive
    filters, the bytes the HTTP client has always sent; "fast": :data:`_FAST_PNG`, half its
    CPU for a file of the same size; "stored": :data:`_STORED_PNG`, uncompressed, a tenth of
    the CPU for 1.7x the bytes (the deployment proxy's choices, which encode every image of
    its traffic).
    """
    if png not in PNG_MODES:
        raise ValueError(f"png must be one of {', '.join(PNG_MODES)}, got {png!r}")
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)  # OpenCV writes BGR: convert once, here
    if encoding == "png":
        params = {"client": [cv2.IMWRITE_PNG_COMPRESSION, 1], "fast": _FAST_PNG,
                  "stored": _STORED_PNG}[png]
        ok, buf = cv2.imencode(".png", bgr, params)
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


_B64_ALPHABET = (string.ascii_letters + string.digits + "+/=").encode("ascii")


def quote_b64(text: str) -> str:
    """``urllib.parse.quote_plus(text)`` for base64 text, without its loop over characters
    (13 ms for a 224x224 PNG's base64, under 1 ms here): only ``+``, ``/`` and ``=``
    need escaping. Any other text goes through ``quote_plus``."""
    if text.isascii() and not text.encode("ascii").translate(None, _B64_ALPHABET):
        return text.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")
    return quote_plus(text)


#: hex digit -> its value, any other byte -> -1
_HEX = np.full(256, -1, np.int16)
_HEX[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
_HEX[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16)
_HEX[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)


def unquote_form(raw: bytes) -> str:
    """``urllib.parse.unquote_plus`` of a form value's bytes (undecodable bytes replaced).

    ASCII values whose escapes are all ``%XX`` of ASCII characters (what every client sends
    for a base64 image: thousands of ``%2B``, ``%2F``, ``%3D``) are decoded as arrays,
    without Python's loop over escapes or a pass per kind of escape (0.4 against 0.9 ms for
    a 224x224 PNG's base64); anything else goes through ``unquote_plus``. Same result."""
    a = np.frombuffer(raw, np.uint8)
    if a.size and int(a.max()) < 128:
        at = np.flatnonzero(a == 37)  # "%"
        if not at.size or at[-1] + 2 < a.size:
            hi, lo = _HEX[a[at + 1]], _HEX[a[at + 2]]
            if not at.size or (min(int(hi.min()), int(lo.min())) >= 0 and int(hi.max()) < 8):
                out = a.copy()
                out[a == 43] = 32  # a bare "+" is a space (an escaped one is decoded below)
                out[at] = hi * 16 + lo
                keep = np.ones(a.size, bool)
                keep[at + 1] = keep[at + 2] = False
                return out[keep].tobytes().decode("ascii")
    return unquote_plus(raw.decode("ascii", "replace"))


def decode_stack(items: Sequence[bytes]) -> np.ndarray:
    """Decode several image files to one uint8 ``(N, H, W, 3)`` stack (all the same size)."""
    imgs = [decode_image(x) for x in items]
    if not imgs:
        raise ValueError("the request holds no image")
    if len({im.shape for im in imgs}) != 1:
        sizes = sorted({im.shape for im in imgs})
        raise ValueError(f"images of different sizes in one request: {sizes}")
    return np.stack(imgs)


#: keys that name an item's class in a list answer (``[{"label": "cat", "score": 0.9}, ...]``)
LABEL_KEYS = ("label", "class", "class_name", "category", "name")


@dataclass(frozen=True)
class Labelled:
    """Values read under a ``*`` whose items name their class: ``(label, value)`` pairs in the
    server's order (often ranked by score, not class order): only ``labels`` can order them."""

    pairs: tuple[tuple[str, Any], ...]


def _label_key(items: list[Any], rest: str) -> str | None:
    """The key naming each item's class, when every item is a dict with one (a string) and
    ``rest`` reads another field of it (``"score"``; reading the label itself is no reorder)."""
    if not items or not rest:
        return None
    for key in LABEL_KEYS:
        if all(isinstance(it, dict) and isinstance(it.get(key), str) for it in items):
            return None if rest.split(".", 1)[0] == key else key
    return None


def get_path(body: Any, path: str, *, labelled: bool = False) -> Any:
    """Follow a dotted path (``"outputs.0.data"``; integers index lists) into parsed JSON.

    ``*`` maps the rest of the path over a list (``"results.*.label"``: one label per item).
    labelled: a ``*`` over items that name their class (:data:`LABEL_KEYS`) gives a
    :class:`Labelled` (label, value) list instead of a plain list, so that no caller can
    take the server's order (``[{"label", "score"}]`` sorted by score) for class order.
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
            rest = ".".join(parts[i + 1:])
            values = [get_path(item, rest, labelled=labelled) for item in node]
            key = _label_key(node, rest) if labelled else None
            return values if key is None else Labelled(
                tuple(zip((item[key] for item in node), values, strict=True)))
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


def class_row(pairs: Iterable[tuple[Any, Any]], labels: Sequence[str], i: int) -> list[float]:
    """One image's scores in the order of ``labels``, from ``(label, score)`` pairs in any order.

    Each label must come exactly once, and no other: a label the answer lacks, repeats or
    that ``labels`` does not know is a one-line ValueError naming it, never a reordering.
    """
    index = {label: j for j, label in enumerate(labels)}
    row: list[float | None] = [None] * len(labels)
    for label, score in pairs:
        j = index.get(label) if isinstance(label, str) else None
        if j is None:
            raise ValueError(f"image {i}: label {short(label, 60)} in the answer is not one of "
                             f"labels={short(list(labels))}; list every class the model "
                             "returns, in class order")
        if row[j] is not None:
            raise ValueError(f"image {i}: label {label!r} comes twice in the answer")
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise ValueError(f"image {i}: the score of label {label!r} is {short(score, 60)}, "
                             "not a number")
        row[j] = float(score)
    missing = [labels[j] for j, v in enumerate(row) if v is None]
    if missing:
        raise ValueError(
            f"image {i}: no score for label(s) {short(missing, 80)} in the answer "
            f"({len(labels) - len(missing)} of {len(labels)} labels came; a server that "
            f"answers its top k must be asked for all {len(labels)})")
    return [float(v) for v in row if v is not None]


def _row(entry: Any, labels: Sequence[str] | None, i: int) -> list[float]:
    if isinstance(entry, Labelled):
        if not labels:
            found = short([label for label, _ in entry.pairs[:4]], 80)
            raise ValueError(
                f"image {i}: the items under '*' name their class ({found}) and come in the "
                "server's order (often ranked by score), not class order; pass labels=[...] "
                "(every class, in class order), or preset='hf' for a [{label, score}] answer")
        return class_row(entry.pairs, labels, i)
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
