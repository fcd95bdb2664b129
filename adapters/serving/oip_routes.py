"""The Open Inference Protocol v2 routes of the stand-in server, as Triton and KServe answer them.

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

import re
from typing import Any
from urllib.parse import unquote

from blackbox_dft._version import __version__
from blackbox_dft.adapters.remote.oip import OIPPreset

__all__ = ["OIPRoutes"]

_MODEL = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?"
                    r"(?P<what>/ready|/infer)?/?$")


class OIPRoutes:
    """The routes of one model ``model_name`` served with ``preset``."""

    def __init__(self, preset: OIPPreset, model_name: str) -> None:
        self.preset, self.model_name = preset, model_name
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

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        """(status, JSON answer) of a GET."""
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

    def infer_error(self, path: str, headers: Any) -> tuple[int, str]:
        """(status, why) if a POST to ``path`` cannot be an infer call of the served model;
        (0, "") if it can."""
        m, why = self._model(path)
        if m is None or m["what"] != "/infer":
            return 404, why or f"no route POST {path}; POST {path.rstrip('/')}/infer"
        if not self.binary and headers.get("Inference-Header-Content-Length") is not None:
            return 400, ("this server does not take binary tensors (binary_tensor_data is not "
                         "in its extensions)")
        return 0, ""
