"""An MLServer custom runtime that serves any stand-in model over the Open Inference Protocol.

Needs ``mlserver`` (the ``server`` extra). In ``model-settings.json``::

    {"name": "smiling", "implementation":
    "blackbox_dft.adapters.serving.mlserver_runtime.StandInRuntime",
     "parameters": {"extra": {"standin": "smiling"}}}

``extra`` names the model: ``{"standin": NAME}``
(``blackbox_dft.adapters.standins.models.load_standin``)
or ``{"factory": "module:function"}`` (a callable returning an object with
``predict``; the module must be importable by the server process).
Input: one tensor, UINT8 ``[N, H, W, 3]`` RGB, or BYTES ``[N]`` of base64 PNG/JPEG
files (what :class:`blackbox_dft.adapters.remote.oip.OIPPreset` sends). Output: ``scores``,
FP64 ``[N, K]``.
Source: https://mlserver.readthedocs.io/en/latest/user-guide/custom.html
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse, RequestInput

from blackbox_dft.adapters.remote.wire import decode_stack, unb64

__all__ = ["StandInRuntime", "load_model_spec", "decode_images"]


def load_model_spec(extra: dict[str, Any]) -> Any:
    """The model named by a runtime's ``extra`` settings (``standin`` or ``factory``)."""
    if "standin" in extra:
        from blackbox_dft.adapters.standins.models import (
            load_standin,  # lazy: stand-ins pull in optional packages
        )

        return load_standin(str(extra["standin"]))
    if "factory" in extra:
        module, _, attr = str(extra["factory"]).partition(":")
        if not attr:
            raise ValueError(f"factory must look like 'module:function', got {extra['factory']!r}")
        return getattr(importlib.import_module(module), attr)(**extra.get("kwargs", {}))
    raise ValueError(f"parameters.extra must name a 'standin' or a 'factory', got {sorted(extra)}")


def decode_images(inp: RequestInput) -> np.ndarray:
    """uint8 ``(N, H, W, 3)`` RGB from a UINT8 tensor or a BYTES tensor of base64 image files."""
    if inp.datatype == "BYTES":
        items = [s.decode() if isinstance(s, bytes) else s for s in inp.data]
        return decode_stack([unb64(s) for s in items])
    if inp.datatype != "UINT8":
        raise ValueError(f"input {inp.name!r} has datatype {inp.datatype}; send UINT8 or BYTES")
    x = NumpyCodec.decode_input(inp)
    return np.ascontiguousarray(x, dtype=np.uint8)


class StandInRuntime(MLModel):
    """MLServer runtime: OIP request -> ``model.predict(images)`` -> ``scores`` FP64 ``[N, K]``."""

    async def load(self) -> bool:
        params = self.settings.parameters
        extra = (params.extra if params is not None else None) or {}
        self._model = load_model_spec(extra)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        if len(payload.inputs) != 1:
            raise MLServerError(f"expected one input tensor of images, got {len(payload.inputs)}")
        try:
            images = decode_images(payload.inputs[0])
        except ValueError as exc:
            raise MLServerError(str(exc), status_code=400) from None
        scores = np.asarray(self._model.predict(images), dtype=np.float64)
        if scores.ndim == 1:
            scores = scores[:, None]
        return InferenceResponse(model_name=self.name, model_version=self.version,
                                 outputs=[NumpyCodec.encode_output("scores", scores)])
