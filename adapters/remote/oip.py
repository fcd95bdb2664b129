"""Open Inference Protocol v2 (KServe, Triton, MLServer): both halves of the wire format."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from blackbox_dft.adapters.errors import ResponseFormatError
from blackbox_dft.adapters.remote.presets import Preset, WireRequest
from blackbox_dft.adapters.remote.wire import Encoder, b64, decode_stack, json_body, keys_of, unb64

__all__ = ["OIPPreset"]


class OIPPreset(Preset):
    """Open Inference Protocol v2 (KServe, Triton, MLServer): ``POST /v2/models/{name}/infer``.

    Sends one input tensor: ``tensor="uint8"`` a UINT8 ``[N, H, W, 3]`` tensor (exact,
    what most image models take), or ``tensor="bytes"`` a BYTES ``[N]`` tensor of
    base64 image files. Reads the output named ``output_name`` (default: the first),
    of shape ``[N, K]`` or ``[N]``.
    Source: https://kserve.github.io/website/docs/concepts/architecture/data-plane/v2-protocol
    """

    name = "oip"
    path_template = "/v2/models/{model}/infer"

    def __init__(self, *, input_name: str = "images", output_name: str | None = None,
                 tensor: str = "uint8", **kw: Any) -> None:
        super().__init__(**kw)
        if tensor not in ("uint8", "bytes"):
            raise ValueError(f"tensor must be 'uint8' or 'bytes', got {tensor!r}")
        self.input_name, self.output_name, self.tensor = input_name, output_name, tensor

    def build_request(self, images: np.ndarray, encode: Encoder,
                      secrets: Mapping[str, str]) -> WireRequest:
        if self.tensor == "uint8":
            inp: dict[str, Any] = {"name": self.input_name, "shape": list(images.shape),
                                   "datatype": "UINT8", "data": images.ravel().tolist()}
        else:
            inp = {"name": self.input_name, "shape": [len(images)], "datatype": "BYTES",
                   "data": [b64(encode(im)) for im in images]}
        return WireRequest(json={"inputs": [inp]}, headers=self.auth_headers(secrets))

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
        if arr.ndim == 0 or arr.shape[0] != n:
            raise ResponseFormatError(
                f"output has shape {list(arr.shape)}, expected [{n}, K] for {n} images")
        return arr.reshape(n, -1)

    def read_request(self, body: bytes, content_type: str) -> np.ndarray:
        payload = json_body(body)
        inp = payload["inputs"][0]
        if inp["datatype"] == "UINT8":
            return np.asarray(inp["data"], dtype=np.uint8).reshape(inp["shape"])
        if inp["datatype"] == "BYTES":
            return decode_stack([unb64(s) for s in inp["data"]])
        raise ValueError(f"unsupported datatype {inp['datatype']!r}; send UINT8 or BYTES")

    def write_response(self, scores: np.ndarray) -> Any:
        return {"model_name": "standin", "outputs": [{
            "name": self.output_name or "scores", "shape": list(scores.shape),
            "datatype": "FP64", "data": scores.ravel().tolist()}]}

    def __repr__(self) -> str:
        return f"OIPPreset(tensor={self.tensor!r}, input_name={self.input_name!r})"
