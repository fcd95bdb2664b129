"""A small model served by KServe's ModelServer, for tests/test_oip_kserve.py.

Run with the Python of an environment that has ``kserve`` (the ``kserve`` extra, which
cannot share one with the ``server`` extra's mlserver; ``make kserve`` makes .venv-kserve):

    python tests/kserve_model.py HTTP_PORT [MODEL_NAME]

It serves MODEL_NAME (default "toy") on 127.0.0.1:HTTP_PORT (REST only), taking what most
models on Triton and KServe take: a normalised FP32 NCHW tensor ``pixel_values`` of shape
``[-1, 3, 16, 16]``, and answering ``probabilities`` FP64 ``[N, 3]``: a fixed linear softmax
(:func:`scores`, which the test computes locally too). It needs only kserve and numpy.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

SIZE = 16
CLASSES = 3


def weights() -> np.ndarray:
    """Fixed weights ``(CLASSES, 3, SIZE, SIZE)``: a formula, so that any numpy gives them."""
    k = np.arange(3 * SIZE * SIZE, dtype=np.float64)
    return np.stack([np.cos(k * 0.37 * (c + 1)) for c in range(CLASSES)]).reshape(
        CLASSES, 3, SIZE, SIZE) / 40.0


def scores(x: np.ndarray) -> np.ndarray:
    """Softmax of a linear map of a float NCHW tensor ``(N, 3, SIZE, SIZE)`` -> ``(N, 3)``."""
    w = weights()
    z = np.stack([(x.astype(np.float64) * w[c]).sum(axis=(1, 2, 3)) for c in range(CLASSES)],
                 axis=1)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def main(argv: list[str]) -> None:  # pragma: no cover - runs in the kserve environment
    import uvicorn
    from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
    from kserve.errors import InvalidInput

    class _Loopback(uvicorn.Config):
        """KServe's REST server binds 0.0.0.0: the tests talk to 127.0.0.1 only."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["host"] = "127.0.0.1"
            super().__init__(*args, **kwargs)

    uvicorn.Config = _Loopback  # type: ignore[misc]

    class Toy(Model):
        def __init__(self, name: str) -> None:
            super().__init__(name)
            self.ready = True

        def get_input_types(self) -> list[dict[str, Any]]:
            return [{"name": "pixel_values", "datatype": "FP32", "shape": [-1, 3, SIZE, SIZE]}]

        def get_output_types(self) -> list[dict[str, Any]]:
            return [{"name": "probabilities", "datatype": "FP64", "shape": [-1, CLASSES]}]

        async def predict(self, payload: InferRequest, headers: Any = None,
                          response_headers: Any = None) -> InferResponse:
            inp = payload.inputs[0]
            if (inp.name, inp.datatype) != ("pixel_values", "FP32") or \
                    list(inp.shape[1:]) != [3, SIZE, SIZE]:
                raise InvalidInput(f"expected pixel_values FP32 [-1, 3, {SIZE}, {SIZE}], got "
                                   f"{inp.name} {inp.datatype} {inp.shape}")
            s = scores(inp.as_numpy())
            out = InferOutput("probabilities", list(s.shape), "FP64")
            out.set_data_from_numpy(s, binary_data=payload.use_binary_outputs)
            return InferResponse(response_id=payload.id, model_name=self.name,
                                 infer_outputs=[out], use_binary_outputs=payload.use_binary_outputs)

    port, name = int(argv[0]), (argv[1] if len(argv) > 1 else "toy")
    ModelServer(http_port=port, enable_grpc=False, workers=1).start([Toy(name)])


if __name__ == "__main__":
    main(sys.argv[1:])
