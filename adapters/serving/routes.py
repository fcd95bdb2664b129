"""The routes of the stand-in server: one POST path for most presets; OIP v2's in full.

:class:`PlainRoutes`: the preset's one POST path; its body read and written by the preset.
:class:`OIPRoutes`, the Open Inference Protocol v2 as Triton and KServe answer it:
``GET /v2/health/live``, ``/v2/health/ready``, ``/v2`` (server metadata: ``extensions`` lists
``binary_tensor_data`` unless the preset says ``binary=False``), ``/v2/models/NAME`` and
``/v2/models/NAME/versions/V`` (model metadata: the input's name, datatype and shape, the
output, the versions), ``.../ready``; ``POST .../infer`` with or without the version path.
The model is served under its real name and version (the preset's ``model_version``, else
"1"); an unknown name or version is a 404 that says what is served. The infer body itself
is read and written by :class:`blackbox_dft.adapters.remote.oip.OIPPreset`.
Source: https://kserve.github.io/website/docs/concepts/architecture/data-plane/v2-protocol
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote

from blackbox_dft._version import __version__
from blackbox_dft.adapters.remote.oip import OIPPreset
from blackbox_dft.adapters.remote.presets import Preset

__all__ = ["PlainRoutes", "OIPRoutes", "routes_for"]

_MODEL = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?"
                    r"(?P<what>/ready|/infer)?/?$")


def routes_for(preset: Preset, model_name: str) -> PlainRoutes:
    """The routes of ``model_name`` served in the wire format of ``preset``."""
    if isinstance(preset, OIPPreset):
        return OIPRoutes(preset, model_name)
    return PlainRoutes(preset, model_name)


class PlainRoutes:
    """The preset's one POST path (``preset.path(model_name)``); no GET route of its own."""

    def __init__(self, preset: Preset, model_name: str) -> None:
        self.preset, self.model_name = preset, model_name
        self.path = preset.path(model_name)

    def get(self, path: str) -> tuple[int, dict[str, Any]] | None:
        """(status, JSON answer) of a GET of ``path``, or None: the server's own."""
        return None

    def infer_error(self, path: str, headers: Any) -> tuple[int, str]:
        """(status, why) if a POST to ``path`` is not a call of the served model;
        (0, "") if it is."""
        if path == self.path:
            return 0, ""
        return 404, f"no route POST {path}; this server answers POST {self.path}"

    def read(self, body: bytes, headers: Any) -> tuple[Any, dict[str, Any]]:
        """(uint8 images, the request as the answer needs it) of a request body."""
        return self.preset.read_request(body, headers.get("Content-Type", "")), {}

    def write(self, scores: Any, request: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        """(body, headers) of the answer to ``request``."""
        return json.dumps(self.preset.write_response(scores)).encode(), {}


class OIPRoutes(PlainRoutes):
    """The OIP routes of one model ``model_name`` served with ``preset``."""

    preset: OIPPreset

    def __init__(self, preset: OIPPreset, model_name: str) -> None:
        super().__init__(preset, model_name)
        self.version = preset.model_version or "1"
        self.binary = preset.binary is not False

    def server_metadata(self) -> dict[str, Any]:
        return {"name": "blackbox_dft-standin", "version": __version__,
                "extensions": ["binary_tensor_data"] if self.binary else []}

    def model_metadata(self) -> dict[str, Any]:
        name, spec, strict = self.preset.server_input()
        # not strict (no datatype configured): UINT8 is declared, BYTES is taken too
        return {"name": self.model_name, "versions": [self.version],
                "platform": "blackbox_dft-standin",
                "inputs": [{"name": name, "datatype": spec.datatype, "shape": spec.shape()}],
                "outputs": [{"name": self.preset.output_name or "scores", "datatype": "FP64",
                             "shape": [-1, -1]}]}

    def _model(self, path: str) -> tuple[re.Match[str] | None, str]:
        """(the match of a path about the served model, "") or (None, why it is a 404)."""
        m = _MODEL.match(path)
        served = (f"this server answers POST /v2/models/{self.model_name}/infer (version "
                  f"{self.version!r})")
        if m is None:
            return None, f"no route {path}; {served}"
        if unquote(m["name"]) != self.model_name:
            return None, f"unknown model {unquote(m['name'])!r}; {served}"
        if m["version"] is not None and unquote(m["version"]) != self.version:
            version = unquote(m["version"])
            return None, f"model {self.model_name!r} has no version {version!r}; {served}"
        return m, ""

    def get(self, path: str) -> tuple[int, dict[str, Any]] | None:
        if not path.startswith("/v2"):
            return None
        if path == "/v2/health/live":
            return 200, {"live": True}
        if path == "/v2/health/ready":
            return 200, {"ready": True}
        if path in ("/v2", "/v2/"):
            return 200, self.server_metadata()
        m, why = self._model(path)
        if m is None or m["what"] == "/infer":
            return 404, {"error": why or f"GET {path}: infer takes POST"}
        if m["what"] == "/ready":
            return 200, {"name": self.model_name, "ready": True}
        return 200, self.model_metadata()

    def read(self, body: bytes, headers: Any) -> tuple[Any, dict[str, Any]]:
        return self.preset.read_infer(body, headers)

    def write(self, scores: Any, request: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        return self.preset.write_infer(scores, request, self.model_name, self.version)

    def infer_error(self, path: str, headers: Any) -> tuple[int, str]:
        m, why = self._model(path)
        if m is None or m["what"] != "/infer":
            return 404, why or f"no route POST {path}; POST {path.rstrip('/')}/infer"
        if not self.binary and headers.get("Inference-Header-Content-Length") is not None:
            return 400, ("this server does not take binary tensors (binary_tensor_data is not "
                         "in its extensions)")
        return 0, ""
