"""Open Inference Protocol v2 (KServe, Triton, MLServer): both halves of its infer call.

Client (:class:`OIPPreset` under :class:`blackbox_dft.adapters.remote.http.HTTPModel`): before
the first request it reads the model metadata (``GET /v2/models/NAME[/versions/V]``) for the
input's name, datatype and shape, and the server metadata (``GET /v2``) for the binary tensor
extension (:mod:`.oip_metadata`); then each request carries an ``id`` and one input tensor made
by the preprocessing spec (:mod:`.tensors`): UINT8 / FP32 / FP16 pixels, NHWC or NCHW, resized
or letterboxed, normalised; or BYTES image files. Tensors travel as JSON or, with Triton's
binary extension, as bytes after the JSON (:mod:`.oip_binary`), both ways.
Server (the stand-in, :mod:`blackbox_dft.adapters.serving.oip_routes`): ``read_infer`` turns a
request into uint8 images and ``write_infer`` scores into an answer, with the request's ``id``,
the model's name and version, and binary outputs when asked for.
Source: https://kserve.github.io/website/docs/concepts/architecture/data-plane/v2-protocol
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from blackbox_dft.adapters.errors import ResponseFormatError
from blackbox_dft.adapters.remote.oip_binary import (
    HEADER,
    decode_outputs,
    pack,
    split,
    tensor_bytes,
)
from blackbox_dft.adapters.remote.oip_metadata import Route, choose_input, takes_binary
from blackbox_dft.adapters.remote.presets import Preset, WireRequest, parse_json
from blackbox_dft.adapters.remote.tensors import Preprocessing, TensorSpec
from blackbox_dft.adapters.remote.wire import Encoder, b64, decode_stack, json_body, keys_of, unb64

__all__ = ["OIPPreset"]

_BINARY = "application/octet-stream"


class OIPPreset(Preset):
    """Open Inference Protocol v2: ``POST /v2/models/{name}[/versions/{v}]/infer``.

    input_name: the input tensor (default: the image input the model metadata lists, else
    "images"). output_name: the output read (default: the first). datatype: UINT8, FP32,
    FP16 or BYTES (base64 image files in JSON, the files' bytes in binary); ``tensor="uint8"``
    / ``"bytes"`` is the older spelling. layout (NHWC/NCHW), size (H, W), fit
    ("resize"/"letterbox"), scale, mean, std ("imagenet" or per channel), channels
    (RGB/BGR): the preprocessing (:class:`~blackbox_dft.adapters.remote.tensors.Preprocessing`);
    a float tensor is ``(pixel * scale - mean) / std``, scale 1/255 by default.
    What is not given is read from the model metadata (datatype, layout, a fixed size, a
    batch axis), or defaults to UINT8 NHWC at the images' size. binary: True, False or
    "auto" (binary when the server lists ``binary_tensor_data``, or for FP16, which JSON
    cannot carry). model_version: the version path (also read from the URL).
    metadata: False reads nothing from the server (for a server without metadata routes).
    """

    name = "oip"
    path_template = "/v2/models/{model}/infer"

    def __init__(self, *, input_name: str | None = None, output_name: str | None = None,
                 tensor: str | None = None, datatype: str | None = None,
                 layout: str | None = None, size: Any = None, fit: str = "resize",
                 scale: float | None = None, mean: Any = None, std: Any = None,
                 channels: str = "RGB", binary: bool | str = "auto",
                 model_version: str | int | None = None, metadata: bool = True,
                 **kw: Any) -> None:
        super().__init__(**kw)
        if tensor is not None:
            if tensor not in ("uint8", "bytes"):
                raise ValueError(f"tensor must be 'uint8' or 'bytes', got {tensor!r}")
            if datatype is not None and str(datatype).upper() != tensor.upper():
                raise ValueError(f"tensor={tensor!r} and datatype={datatype!r} disagree: "
                                 "give datatype= only")
            datatype = tensor.upper()
        self.pre = Preprocessing(datatype=datatype, layout=layout, size=size, fit=fit,
                                 scale=scale, mean=mean, std=std, channels=channels)
        if binary not in (True, False, "auto"):
            raise ValueError(f"binary must be True, False or 'auto', got {binary!r}")
        _check_fp16(self.pre.datatype, binary)
        for what, value in (("input_name", input_name), ("output_name", output_name)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{what} must be a non-empty string, got {value!r}")
        if not isinstance(metadata, bool):
            raise ValueError(f"metadata must be True or False, got {metadata!r}")
        self.input_name, self.output_name = input_name, output_name
        self.binary, self.metadata = binary, metadata
        self.model_version = None if model_version is None else str(model_version)
        #: (input name, tensor spec, binary) once decided: by prepare(), else offline
        self._resolved: tuple[str, TensorSpec, bool] | None = None

    # -- client side ---------------------------------------------------------------
    def _reads_model_metadata(self) -> bool:
        pre = self.pre
        known = (self.input_name is not None and pre.datatype is not None
                 and (pre.datatype == "BYTES" or pre.layout is not None))
        return self.metadata and not known

    def prepare(self, url: str, get: Callable[[str], Any]) -> str:
        """Read the model (and server) metadata; decide the input and the tensor format;
        return the infer URL (with the version path if ``model_version`` was given).
        ValueError (one line) if the metadata and the options cannot be reconciled."""
        route = (Route.parse(url, self.model_version)
                 if self.metadata or self.model_version is not None else None)
        meta = None
        if route is not None and self._reads_model_metadata():
            meta = get(route.model_url)
            if not isinstance(meta, dict) or not isinstance(meta.get("inputs"), list):
                raise ValueError(f"unusable answer to GET {urlsplit(route.model_url).path}: "
                                 "a model metadata is an object with an 'inputs' list, got "
                                 f"{keys_of(meta)}")
        name, spec = choose_input(meta, self.input_name, self.pre)
        binary = self.binary
        if binary == "auto":
            binary = spec.datatype == "FP16" or (route is not None and self.metadata
                                                  and takes_binary(get(route.server_url)))
        _check_fp16(spec.datatype, binary)
        self._resolved = (name, spec, bool(binary))
        if not spec.batched:  # a model without a batch axis: one image per request
            self.max_images_per_request = self.default_images_per_request = 1
        return route.infer_url if route is not None else url

    @property
    def resolved(self) -> tuple[str, TensorSpec, bool] | None:
        """(input name, tensor spec, binary) as decided before the first request (None
        before it): what the requests carry."""
        return self._resolved

    def _decided(self) -> tuple[str, TensorSpec, bool]:
        """The input, spec and binary flag: prepare()'s, else what the options alone say."""
        if self._resolved is None:
            name, spec = choose_input(None, self.input_name, self.pre)
            self._resolved = (name, spec, self.binary is True or spec.datatype == "FP16")
        return self._resolved

    def build_request(self, images: np.ndarray, encode: Encoder,
                      secrets: Mapping[str, str]) -> WireRequest:
        name, spec, binary = self._decided()
        if spec.datatype == "BYTES":
            data: Any = [encode(im) for im in spec.resized(images)]
            shape = [len(data)] if spec.batched else [1]
        else:
            data = spec.to_tensor(images)
            shape = list(data.shape)
        inp: dict[str, Any] = {"name": name, "shape": shape, "datatype": spec.datatype}
        request: dict[str, Any] = {"id": uuid.uuid4().hex, "inputs": [inp]}
        auth = self.auth_headers(secrets)
        if binary:
            blob = tensor_bytes(data, spec.datatype)
            inp["parameters"] = {"binary_data_size": len(blob)}
            request["parameters"] = {"binary_data_output": True}
            body, k = pack(request, [blob])
            return WireRequest(content=body, headers={"Content-Type": _BINARY, HEADER: str(k),
                                                      **auth})
        inp["data"] = [b64(x) for x in data] if spec.datatype == "BYTES" else data.ravel().tolist()
        return WireRequest(json=request, headers=auth)

    def parse_body(self, raw: bytes, headers: Mapping[str, str]) -> tuple[Any, str]:
        try:
            parts = split(raw, headers)
        except ValueError as exc:
            return None, f"not a binary tensor answer ({exc})"
        if parts is None:
            return parse_json(raw)
        body, why = parse_json(parts[0])
        if not isinstance(body, dict):
            return None, f"a binary tensor answer whose JSON header is {why or 'not an object'}"
        try:
            decode_outputs(body, parts[1])
        except ValueError as exc:
            return None, f"a binary tensor answer that does not add up ({exc})"
        return body, ""

    def parse_response(self, body: Any, n: int) -> np.ndarray:
        outputs = body.get("outputs") if isinstance(body, dict) else None
        if not isinstance(outputs, list) or not outputs:
            raise ResponseFormatError(f"no 'outputs' list in the answer (keys: {keys_of(body)})")
        if self.output_name is None:
            out = outputs[0]
        else:
            named = [o for o in outputs
                     if isinstance(o, dict) and o.get("name") == self.output_name]
            if not named:
                names = [o.get("name") for o in outputs if isinstance(o, dict)]
                raise ResponseFormatError(f"no output named {self.output_name!r}; outputs: {names}")
            out = named[0]
        try:
            arr = np.asarray(out["data"], dtype=np.float64).reshape(out["shape"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ResponseFormatError(
                f"output is not a numeric tensor with data and shape: {exc}") from None
        if self._resolved is not None and not self._resolved[1].batched and n == 1:
            arr = arr.reshape(1, -1)  # a model without a batch axis answers one image
        if arr.ndim == 0 or arr.shape[0] != n:
            raise ResponseFormatError(
                f"output has shape {list(arr.shape)}, expected [{n}, K] for {n} images")
        return arr.reshape(n, -1)

    # -- server side ---------------------------------------------------------------
    def server_input(self) -> tuple[str, TensorSpec, bool]:
        """The stand-in server's input: (name, spec, strict). Not strict (no datatype
        configured): UINT8 NHWC or BYTES are both taken, as before."""
        name, spec = choose_input(None, self.input_name, self.pre)
        return name, spec, self.pre.datatype is not None

    def read_infer(self, body: bytes, headers: Mapping[str, str]) -> tuple[np.ndarray, dict]:
        """(uint8 RGB images, the request's JSON) of an infer request, JSON or binary.
        ValueError/KeyError/TypeError naming what is wrong."""
        parts = split(body, headers)
        request = json_body(body if parts is None else parts[0])
        if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
            raise ValueError('expected {"inputs": [...]}')
        if parts is not None:
            decode_outputs(request, parts[1], what="inputs")
        name, spec, strict = self.server_input()
        inp = request["inputs"][0]
        if strict and (inp.get("name"), inp.get("datatype")) != (name, spec.datatype):
            raise ValueError(f"input {inp.get('name')!r} {inp.get('datatype')}: this model takes "
                             f"{name!r} {spec.datatype} {spec.shape()}")
        datatype, data = inp["datatype"], inp["data"]
        if datatype == "BYTES":
            files = [x if isinstance(x, bytes) else unb64(x) for x in data]
            return decode_stack(files), request
        if datatype not in ("UINT8", "FP32", "FP16") or (datatype != "UINT8" and not strict):
            raise ValueError(f"unsupported datatype {datatype!r}; this model takes "
                             f"{spec.datatype if strict else 'UINT8 or BYTES'}")
        tensor = np.asarray(data, dtype=np.float64 if datatype != "UINT8" else np.uint8)
        return spec.from_tensor(tensor.reshape(inp["shape"])), request

    def read_request(self, body: bytes, content_type: str) -> np.ndarray:
        return self.read_infer(body, {})[0]

    def write_infer(self, scores: np.ndarray, request: Mapping[str, Any], model_name: str,
                    version: str | None) -> tuple[bytes, dict[str, str]]:
        """(body, headers) of the answer: the request's id, the model's name and version,
        the scores as FP64 ``[N, K]``, binary if the request asked for it."""
        out: dict[str, Any] = {"name": self.output_name or "scores",
                               "shape": list(scores.shape), "datatype": "FP64"}
        answer: dict[str, Any] = {"model_name": model_name, "outputs": [out]}
        if version is not None:
            answer["model_version"] = version
        if request.get("id") is not None:
            answer = {"id": request["id"], **answer}
        if not _wants_binary(request):
            out["data"] = scores.ravel().tolist()
            return json.dumps(answer).encode(), {"Content-Type": "application/json"}
        blob = tensor_bytes(scores, "FP64")
        out["parameters"] = {"binary_data_size": len(blob)}
        body, k = pack(answer, [blob])
        return body, {"Content-Type": _BINARY, HEADER: str(k)}

    def write_response(self, scores: np.ndarray) -> Any:
        return json_body(self.write_infer(scores, {}, "standin", None)[0])

    def __repr__(self) -> str:
        if self._resolved is not None:  # what is sent, once decided
            name, spec, binary = self._resolved
            return (f"OIPPreset(input={name!r} {spec.datatype} {spec.shape()}, binary={binary}, "
                    f"{self.pre!r})")
        opts = [f"input_name={self.input_name!r}", repr(self.pre), f"binary={self.binary!r}"]
        if self.model_version is not None:
            opts.append(f"model_version={self.model_version!r}")
        return f"OIPPreset({', '.join(opts)})"


def _wants_binary(request: Mapping[str, Any]) -> bool:
    """Whether an infer request asks for binary outputs (request-wide, or on an output)."""
    params = request.get("parameters")
    wanted = bool(params.get("binary_data_output")) if isinstance(params, dict) else False
    for out in request.get("outputs") or []:
        p = out.get("parameters") if isinstance(out, dict) else None
        if isinstance(p, dict) and "binary_data" in p:
            wanted = bool(p["binary_data"])
    return wanted


def _check_fp16(datatype: str | None, binary: bool | str) -> None:
    if datatype == "FP16" and binary is False:
        raise ValueError("datatype FP16 cannot travel as JSON numbers (Triton and KServe refuse "
                         "it): pass binary=True or binary='auto'")
