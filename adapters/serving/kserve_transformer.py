"""A KServe transformer: a fitted delta added to the images of Open Inference Protocol v2
requests before KServe forwards them to the predictor (``blackbox-dft transformer``).

:func:`make_transformer` builds a :class:`kserve.Model` whose ``preprocess`` perturbs the
image input of each v2 ``InferRequest`` in place (:func:`perturb_request`, the proxy's
arithmetic: :func:`~blackbox_dft.adapters.serving.proxy_rewrite.perturb_oip_input`): pixel
tensors (UINT8 / FP32 / FP16, NHWC / NCHW, the run's scale, mean and std) go back to uint8
images, get ``clip(x + round(delta_for(H, W)))`` and are made again in the request's shape
and datatype, binary if they came binary; BYTES image files come back as PNG (lossless).
(Image files must come as JSON base64 strings: KServe 0.21 decodes binary BYTES tensors as
UTF-8 and refuses image files with a 500 before the model sees them. It also turns binary
tensors into Python lists before ``preprocess``: ~70 ms of CPU for a 224x224 UINT8 image,
~120 ms for FP32, against 4 and 15 ms for the perturbation itself.)
Every other input, the parameters and the request id pass through; KServe's own ``predict``
sends the request to the predictor (``--predictor_host``, OIP v2 REST) and its answer comes
back as KServe decodes it (values, id, outputs; binary outputs when the request asked for
them; KServe drops ``model_version``). A request whose image input cannot be read is a
one-line 400; a predictor that refuses or fails gives its status and one line (502 when it
cannot be reached, 504 on its timeout), never a traceback. Model metadata
(``GET /v2/models/NAME``) is the predictor's, so clients that read it (Triton's, ours) see
the model's input. :class:`~blackbox_dft.adapters.serving.proxy_state.DeltaState` decides
per request: perturbed, or passed through (scheduled checks, or the operator's
``/admin/bypass?state=on|off|auto``, as the proxy's).

:func:`serve_transformer` runs KServe's ModelServer (REST, one worker: the state lives in
one process; scale with replicas) with that route, the counters in its Prometheus
``/metrics`` (``blackbox_dft_transformer_*``) and the schedule started on its event loop.
KServe (the ``kserve`` extra) is imported inside these functions only, so this module
imports and type-checks without it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from blackbox_dft.adapters.remote.oip_binary import HEADER
from blackbox_dft.adapters.remote.tensors import Preprocessing
from blackbox_dft.adapters.remote.wire import b64
from blackbox_dft.adapters.serving.admin import asgi_admin_refusal
from blackbox_dft.adapters.serving.proxy_rewrite import (
    NoImages,
    Perturb,
    image_input,
    perturb_oip_input,
)
from blackbox_dft.adapters.serving.proxy_state import DeltaState

__all__ = ["Counts", "Refused", "PREFIX", "perturb_request", "make_transformer",
           "kserve_options", "serve_transformer"]

log = logging.getLogger("blackbox_dft.transformer")
PREFIX = "blackbox_dft_transformer_"
#: seconds the predictor's model metadata is kept before it is asked again
METADATA_TTL = 60.0


class Refused(Exception):
    """An answer of the transformer's own: HTTP ``status`` and one line, logged as one line
    (KServe's handlers log a traceback for every refused request)."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(" ".join(why.split()))
        self.status, self.why = status, " ".join(why.split())


@dataclass
class Counts:
    """Requests and images, for /metrics (written on the event loop only)."""

    images_perturbed: int = 0
    requests_perturbed: int = 0
    requests_bypassed: int = 0
    requests_refused: int = 0
    predictor_errors: int = 0

    def render(self, state: DeltaState) -> str:
        """The Prometheus text of the counters, the bypass flag and ``state``'s lines."""
        p = PREFIX
        lines = []
        for name, n in vars(self).items():
            lines += [f"# TYPE {p}{name}_total counter", f"{p}{name}_total {n}"]
        lines += [f"# HELP {p}bypass 1 when requests pass through unperturbed.",
                  f"# TYPE {p}bypass gauge", f"{p}bypass {int(state.bypass)}"]
        return "\n".join(lines + state.render(p)) + "\n"


def perturb_request(request: Any, perturb: Perturb, pre: Preprocessing,
                    input_name: str | None, *, binary: bool = False) -> int:
    """Perturb the image input of a KServe ``InferRequest`` in place; the images perturbed.

    The image input is the one named ``input_name``, else the first. Pixels go back binary
    when ``binary`` (the request came binary) or FP16 (which JSON cannot carry), else as a
    JSON list; image files as base64 strings (the JSON form of BYTES, as our client sends
    them). NoImages (one line) if the input is not images of the run's form.
    """
    inputs = list(getattr(request, "inputs", None) or [])
    if not inputs:
        raise NoImages('no "inputs" in the request')
    inp = inputs[image_input([{"name": t.name} for t in inputs], input_name)]
    try:
        data = inp.data if inp.data is not None else inp.as_numpy()  # gRPC: raw bytes
    except (ValueError, TypeError) as exc:
        raise NoImages(f"input {inp.name!r}: {exc}") from None
    meta = {"name": inp.name, "datatype": inp.datatype, "shape": list(inp.shape)}
    new, n = perturb_oip_input(meta, data, pre, perturb)
    if inp.datatype == "BYTES":
        text = np.array([b64(f) for f in new], dtype=object).reshape(inp.shape)
        inp.set_data_from_numpy(text, binary_data=False)
    else:
        inp.set_data_from_numpy(np.asarray(new), binary_data=binary or inp.datatype == "FP16")
    return n


class _DeltaModel:
    """The transformer's handlers, mixed into ``kserve.Model`` by :func:`make_transformer`
    (KServe is imported there and in these methods only)."""

    BadImages: type[Refused]  # Refused and KServe's InvalidInput: a 400 wherever served
    predictor_config: Any  # kserve.Model's (its property; this only tells the type checker)

    def __init__(self, name: str, perturb: Perturb, state: DeltaState, pre: Preprocessing,
                 input_name: str | None, counts: Counts) -> None:
        super().__init__(name)  # type: ignore[call-arg]  # kserve.Model's
        self.name, self.perturb, self.state, self.counts = name, perturb, state, counts
        self.pre, self.input_name = pre, input_name
        self.ready, self.engine = True, True  # engine: start_engine runs on KServe's loop
        self._metadata: tuple[float, dict[str, Any]] | None = None

    async def start_engine(self) -> None:
        self.state.start()
        self.ready = True

    def stop_engine(self) -> None:  # ModelServer.stop: on KServe's loop, if it still runs
        try:
            asyncio.get_running_loop().create_task(self.state.stop())
        except RuntimeError:  # no loop any more: asyncio.run cancelled the schedule
            pass
        self.ready = False

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        from kserve import InferRequest

        if not isinstance(payload, InferRequest):
            self.counts.requests_refused += 1
            raise self.BadImages(400, "blackbox-dft transformer: send Open Inference "
                                 "Protocol v2 requests (POST /v2/models/NAME/infer), not v1")
        if self.state.bypass:
            self.counts.requests_bypassed += 1
            return payload
        binary = HEADER.lower() in {k.lower() for k in (headers or {})}
        try:  # decoding, cv2 and PNG work: off the event loop
            n = await asyncio.to_thread(perturb_request, payload, self.perturb, self.pre,
                                        self.input_name, binary=binary)
        except NoImages as exc:
            self.counts.requests_refused += 1
            raise self.BadImages(400, f"blackbox-dft transformer: {exc}") from None
        self.counts.images_perturbed += n
        self.counts.requests_perturbed += 1
        return payload

    async def predict(self, payload: Any, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> Any:
        import httpx
        from kserve import InferResponse

        host = self.predictor_config.predictor_host
        try:
            answer = await super().predict(  # type: ignore[misc]  # kserve.Model's
                payload, headers, response_headers)
        except httpx.HTTPError as exc:
            self.counts.predictor_errors += 1
            raise _predictor_failed(host, exc) from None
        if not isinstance(answer, InferResponse):
            return answer
        names = {o.name for o in answer.outputs}
        wanted = payload.request_outputs
        # as KServe's own predictors answer: binary outputs when the request asked for them
        return InferResponse(
            response_id=answer.id, model_name=answer.model_name, infer_outputs=answer.outputs,
            parameters=answer.parameters, use_binary_outputs=payload.use_binary_outputs,
            requested_outputs=wanted if wanted and all(o.name in names for o in wanted)
            else None)

    async def _predictor_metadata(self) -> dict[str, Any]:
        import httpx

        now = time.monotonic()
        if self._metadata is not None and now - self._metadata[0] < METADATA_TTL:
            return self._metadata[1]
        cfg = self.predictor_config
        url = f"{cfg.predictor_base_url}/v2/models/{self.name}"
        verify = os.environ.get("REQUESTS_CA_BUNDLE") or True  # as KServe's own client
        try:
            async with httpx.AsyncClient(timeout=10.0, verify=verify) as client:
                response = await client.get(url)
                response.raise_for_status()
                meta = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("model metadata of predictor %s not read (%s): the transformer lists "
                        "no inputs", cfg.predictor_host, type(exc).__name__)
            return {}
        self._metadata = (now, meta if isinstance(meta, dict) else {})
        return self._metadata[1]

    async def get_input_types(self) -> list[dict[str, Any]]:
        return _tensors(await self._predictor_metadata(), "inputs")

    async def get_output_types(self) -> list[dict[str, Any]]:
        return _tensors(await self._predictor_metadata(), "outputs")


def make_transformer(name: str, perturb: Perturb, state: DeltaState, *,
                     pre: Preprocessing | None = None, input_name: str | None = None,
                     counts: Counts | None = None) -> Any:
    """The ``kserve.Model`` named ``name`` (the predictor's model name: KServe forwards to
    ``/v2/models/NAME/infer``) that perturbs with ``perturb`` (uint8 ``(N, H, W, 3)`` ->
    same) in the tensor form ``pre`` (the run's OIP preprocessing) unless ``state`` says
    pass-through; ``counts`` collects what it did (``model.counts``)."""
    from kserve import Model
    from kserve.errors import InvalidInput

    bad = type("BadImages", (Refused, InvalidInput), {})
    cls = type("DeltaTransformer", (_DeltaModel, Model), {"BadImages": bad})
    return cls(name, perturb, state, pre or Preprocessing(), input_name, counts or Counts())


def _predictor_failed(host: str, exc: Exception) -> Refused:
    """The answer for a predictor that refused (its status and reason), timed out (504) or
    could not be reached (502)."""
    import httpx

    if isinstance(exc, httpx.HTTPStatusError):
        code = exc.response.status_code
        return Refused(code, f"predictor {host} answered HTTP {code}: {_reason(exc.response)}")
    if isinstance(exc, httpx.TimeoutException):
        return Refused(504, f"predictor {host}: no answer in time ({type(exc).__name__})")
    return Refused(502, f"predictor {host} cannot be reached: {type(exc).__name__}")


def _reason(response: Any) -> str:
    """The predictor's one-line reason: its JSON ``error``, else its text (300 chars)."""
    try:
        body = response.json()
        text = str(body.get("error", body)) if isinstance(body, dict) else str(body)
    except ValueError:
        text = response.text
    return " ".join(text.split())[:300] or "(no body)"


def _tensors(meta: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The metadata tensors KServe's answer can carry (name, datatype, shape)."""
    items = meta.get(key)
    return [{"name": t["name"], "datatype": t["datatype"], "shape": t["shape"]}
            for t in (items if isinstance(items, list) else [])
            if isinstance(t, dict) and isinstance(t.get("name"), str)
            and isinstance(t.get("datatype"), str) and isinstance(t.get("shape"), list)]


def kserve_options(argv: list[str]) -> argparse.Namespace:
    """KServe's own ModelServer arguments (``--enable_latency_logging false``,
    ``--predictor_use_ssl true``, ...) parsed by KServe's parser; ValueError (one line) for
    one it does not know or cannot read. KServe parses ``sys.argv`` when imported: it is
    imported here with none, and its module-level arguments are set to these."""
    saved = sys.argv
    sys.argv = [saved[0] if saved else "blackbox-dft"]
    try:
        from kserve import model_server
    finally:
        sys.argv = saved
    parser = model_server.parser
    parser.exit_on_error = False  # a bad value is our one-line error, not a usage dump
    try:
        known, unknown = parser.parse_known_args(argv)
    except argparse.ArgumentError as exc:
        raise ValueError(f"transformer: {exc}") from None
    if unknown:
        raise ValueError(f"transformer: unrecognized arguments: {' '.join(unknown)} (neither "
                         "blackbox-dft transformer's nor KServe ModelServer's)")
    vars(model_server.args).update(vars(known))  # what ModelServer reads at run time
    return known


def serve_transformer(model: Any, kserve: argparse.Namespace, *, predictor_host: str,
                      http_port: int, host: str = "0.0.0.0", grpc: bool = False,
                      admin_token: str | None = None) -> None:
    """Serve ``model`` with KServe's ModelServer on ``host:http_port`` until SIGTERM or
    Ctrl-C; ``kserve``: :func:`kserve_options`'s (predictor TLS, timeout, retries, logging,
    gRPC port...). Adds ``/admin/bypass`` and the counters to KServe's /metrics; a POST
    there needs ``admin_token`` as a Bearer token, or (None) a caller on this machine."""
    import prometheus_client
    import uvicorn
    from fastapi import Request
    from fastapi.responses import JSONResponse
    from kserve import ModelServer, PredictorConfig, model_server
    from prometheus_client.parser import text_string_to_metric_families

    state, counts = model.state, model.counts

    class Collector:
        def collect(self) -> Any:
            yield from text_string_to_metric_families(counts.render(state))

    async def admin(request: Request) -> JSONResponse:
        which = request.query_params.get("state")
        if request.method == "POST":
            refused = asgi_admin_refusal(request.scope, admin_token)  # logs a refusal
            if refused is not None:
                return JSONResponse({"error": refused[1]}, status_code=refused[0])
            if which not in ("on", "off", "auto"):
                return JSONResponse({"error": "POST /admin/bypass takes state=on (pass-through)"
                                     ", off (apply the delta) or auto (the scheduled checks "
                                     f"decide), got {str(which)[:40]!r}"}, status_code=400)
            state.force(which)
        return JSONResponse({"bypass": state.bypass, "state": state.state})

    async def refused(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Refused)
        log.warning("refused %s (HTTP %d): %s", request.url.path, exc.status, exc.why)
        return JSONResponse({"error": exc.why}, status_code=exc.status)

    app = model_server.app
    app.add_route("/admin/bypass", admin, methods=["GET", "POST"])  # Starlette: no DI
    app.add_exception_handler(Refused, refused)
    prometheus_client.REGISTRY.register(Collector())

    class _Bound(uvicorn.Config):  # KServe's REST server binds 0.0.0.0, always
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["host"] = host
            super().__init__(*args, **kwargs)

    if kserve.workers > 1:
        log.warning("--workers %d ignored: the transformer's state lives in one process "
                    "(scale with replicas)", kserve.workers)
    server = ModelServer(
        http_port=http_port, grpc_port=kserve.grpc_port, workers=1, enable_grpc=grpc,
        max_threads=kserve.max_threads, max_asyncio_workers=kserve.max_asyncio_workers,
        enable_docs_url=kserve.enable_docs_url, event_loop=kserve.event_loop,
        enable_latency_logging=kserve.enable_latency_logging,
        access_log_format=kserve.access_log_format, timeout_keep_alive=kserve.timeout_keep_alive,
        ssl_certfile=kserve.ssl_certfile, ssl_keyfile=kserve.ssl_keyfile,
        predictor_config=PredictorConfig(
            predictor_host=predictor_host, predictor_protocol="v2",
            predictor_use_ssl=kserve.predictor_use_ssl,
            predictor_request_timeout_seconds=kserve.predictor_request_timeout_seconds,
            predictor_request_retries=kserve.predictor_request_retries,
            predictor_health_check=kserve.enable_predictor_health_check))
    # uvicorn's access log: off, as the proxy's (a request line can carry a key)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    original, uvicorn.Config = uvicorn.Config, _Bound  # type: ignore[misc]
    try:
        server.start([model])
    finally:
        uvicorn.Config = original  # type: ignore[misc]
