"""Triton's binary tensor extension of the Open Inference Protocol, both directions.

A body is the JSON header followed by the tensors' bytes (little-endian, row-major; a BYTES
element is a 4-byte little-endian length and its bytes), in the order of the tensors in the
header; each such tensor carries ``parameters.binary_data_size`` and the HTTP header
``Inference-Header-Content-Length`` gives the JSON's length. Outputs come back binary when
the request says ``parameters.binary_data_output`` (or ``binary_data`` on a requested output).
Source: https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_binary_data.md
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["HEADER", "NUMPY_TYPES", "pack", "split", "tensor_bytes", "tensor_from_bytes",
           "decode_outputs"]

HEADER = "Inference-Header-Content-Length"
#: OIP datatypes with a fixed-size numpy type, little-endian (BYTES and BF16 are not here)
NUMPY_TYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(t).newbyteorder("<") for name, t in (
        ("BOOL", np.bool_), ("UINT8", np.uint8), ("UINT16", np.uint16), ("UINT32", np.uint32),
        ("UINT64", np.uint64), ("INT8", np.int8), ("INT16", np.int16), ("INT32", np.int32),
        ("INT64", np.int64), ("FP16", np.float16), ("FP32", np.float32), ("FP64", np.float64))}


def tensor_bytes(value: np.ndarray | Sequence[bytes], datatype: str) -> bytes:
    """The binary form of one tensor: little-endian elements, or length-prefixed BYTES."""
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(item)) + bytes(item) for item in value)
    return np.ascontiguousarray(value, dtype=NUMPY_TYPES[datatype]).tobytes()


def tensor_from_bytes(data: bytes, datatype: str, shape: Sequence[int]) -> Any:
    """A tensor back from its binary form: a numpy array of ``shape``, or for BYTES a list
    of the elements' bytes. ValueError naming the mismatch otherwise."""
    count = int(np.prod(shape)) if len(shape) else 1
    if datatype == "BYTES":
        items, at = [], 0
        while at < len(data):
            if at + 4 > len(data):
                raise ValueError("a BYTES element's length is cut short")
            (k,) = struct.unpack_from("<I", data, at)
            if at + 4 + k > len(data):
                raise ValueError(f"a BYTES element of {k} bytes runs past the tensor's end")
            items.append(data[at + 4:at + 4 + k])
            at += 4 + k
        if len(items) != count:
            raise ValueError(f"{len(items)} BYTES elements for shape {list(shape)}")
        return items
    if datatype not in NUMPY_TYPES:
        raise ValueError(f"datatype {datatype!r} is not readable here; expected one of "
                         f"{sorted(NUMPY_TYPES)}")
    dtype = NUMPY_TYPES[datatype]
    if len(data) != count * dtype.itemsize:
        raise ValueError(f"{len(data)} bytes for a {datatype} tensor of shape {list(shape)} "
                         f"({count * dtype.itemsize} expected)")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def pack(header: dict[str, Any], blobs: Sequence[bytes]) -> tuple[bytes, int]:
    """(body, length of its JSON header): ``header`` as JSON, then the ``blobs``."""
    text = json.dumps(header).encode()
    return text + b"".join(blobs), len(text)


def split(raw: bytes, headers: Mapping[str, str]) -> tuple[bytes, bytes] | None:
    """(JSON header, binary tail) of a body with ``Inference-Header-Content-Length``; None
    for a plain JSON body. ValueError if the length is not one that fits the body."""
    value = headers.get(HEADER)
    if value is None:
        return None
    text = str(value).strip()
    if not text.isdigit() or int(text) > len(raw):
        raise ValueError(f"{HEADER} is {text[:20]!r}, not a length within the body's "
                         f"{len(raw)} bytes")
    k = int(text)
    return raw[:k], raw[k:]


def decode_outputs(body: dict[str, Any], tail: bytes, what: str = "outputs") -> None:
    """Put the binary data of each tensor of ``body[what]`` (those with
    ``parameters.binary_data_size``) into its ``data`` field, in place. ValueError if the
    sizes do not add up to the tail's length."""
    at = 0
    for tensor in body.get(what) or []:
        params = tensor.get("parameters") if isinstance(tensor, dict) else None
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is None:
            continue
        if isinstance(size, bool) or not isinstance(size, int) or size < 0 \
                or at + size > len(tail):
            raise ValueError(f"{what[:-1]} {tensor.get('name')!r}: binary_data_size {size!r} "
                             f"does not fit the {len(tail) - at} bytes left")
        shape = tensor.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) for d in shape):
            raise ValueError(f"{what[:-1]} {tensor.get('name')!r}: shape {shape!r} is not a "
                             "list of integers")
        datatype = str(tensor.get("datatype"))
        piece = tail[at:at + size]
        # an output of a type read nowhere here (BF16) stays bytes: an error only if used
        tensor["data"] = (tensor_from_bytes(piece, datatype, shape)
                          if datatype in NUMPY_TYPES or datatype == "BYTES" else piece)
        at += size
    if at != len(tail):
        raise ValueError(f"{len(tail) - at} bytes after the last binary tensor")
