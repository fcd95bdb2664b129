"""Model specs of the command line -> Model objects (imports adapters: only the CLI imports this).

=============================== ==================================================
spec                            model
=============================== ==================================================
``standin:blazeface``           a stand-in (blazeface, gender, emotion, smiling)
``standin:emotion-embedding``   face-embedding stand-ins (output_kind "embedding": for
``standin:hog-embedding``       ``fit --pairs``): a CNN's last feature map; HOG + a
                                random projection
``path/to/net.onnx``            a model file run by cv2.dnn (``dnn:`` prefix optional);
                                options: input_size, color, mean, scale, layout, ...
``litert:path/to/net.tflite``   a TFLite file run by LiteRT
``http(s)://host/...``          an HTTP endpoint in a preset's wire format
                                (``--preset``; keys from ``--api-key-env``, or as
                                ``${VAR}`` in the URL: see :mod:`.spec_secrets`)
``python:module:function``      ``function(uint8 images) -> scores`` imported from a
                                module on PYTHONPATH (a closed SDK, a test double)
=============================== ==================================================
"""

from __future__ import annotations

import importlib
import json
import os
import re
from typing import Any

from blackbox_dft.adapters import spec_secrets
from blackbox_dft.adapters.base import CallableModel
from blackbox_dft.adapters.local.dnn import DNNModel, LiteRTModel
from blackbox_dft.adapters.local.embedding import HOGEmbedding
from blackbox_dft.adapters.remote.http import HTTPModel
from blackbox_dft.adapters.standins.models import STANDINS, load_standin
from blackbox_dft.core.images import check_images
from blackbox_dft.core.model import Model, ModelError

__all__ = ["SpecError", "MissingDependency", "build_model", "model_key", "parse_option"]

_FILE_EXTS = (".onnx", ".tflite", ".pb", ".caffemodel", ".prototxt", ".t7", ".net", ".weights")
_SECRET = re.compile(r"key|token|secret|password|signature|auth", re.I)
_TUPLES = ("input_size", "mean", "labels", "timeout")


class SpecError(ValueError):
    """A model spec or its options that cannot be used (exit code 2)."""


class MissingDependency(SpecError):
    """The model needs an optional package that is not installed (exit code 4)."""


def parse_option(text: str) -> tuple[str, Any]:
    """``"input_size=[64,64]"`` -> ``("input_size", [64, 64])``; values are JSON when they parse."""
    if "=" not in text:
        raise SpecError(f"--model-option must be KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip().replace("-", "_")
    if not key.isidentifier():
        raise SpecError(f"--model-option key {key!r} is not a valid name")
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, value


def _kwargs(options: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in options.items():
        if _SECRET.search(k) and k not in ("api_key_env", "api_secret_env"):
            raise SpecError(f"model option {k!r} looks like a secret; secrets come only from "
                            "environment variables (--api-key-env / --api-secret-env)")
        if k == "headers":  # saved in config.json: secret values only as ${VAR}
            try:
                spec_secrets.check_headers(v)
            except ValueError as exc:
                raise SpecError(str(exc)) from None
        out[k] = tuple(v) if k in _TUPLES and isinstance(v, list) else v
    return out


def _env(name: str | None, what: str) -> str | None:
    if not name:
        return None
    value = os.environ.get(name)
    if not value:
        raise SpecError(f"environment variable {name} (given as {what}) is not set")
    spec_secrets.remember_secret(value)
    return value


def _http_model(spec: str, preset: str | None, opts: dict[str, Any],
                api_key_env: str | None, api_secret_env: str | None) -> HTTPModel:
    """An HTTPModel on the expanded URL (``${VAR}`` from the environment; a stored form is
    mapped back to the spec as given in this process: :mod:`.spec_secrets`)."""
    try:
        url = spec_secrets.expand(spec_secrets.raw_spec(spec))
        if "headers" in opts:
            opts = {**opts, "headers": spec_secrets.expand_headers(opts["headers"])}
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    return HTTPModel(url, preset=preset or "json",
                     api_key=_env(api_key_env, "--api-key-env"),
                     api_secret=_env(api_secret_env, "--api-secret-env"), **opts)


def model_key(spec: str, preset: str | None, options: dict[str, Any]) -> str:
    """Secret-free identity of a model for the query cache: spec + preset + options.

    A URL enters in its stored form (literal secrets as ``***``, ``${VAR}`` by name): a
    rotated key keeps the cache's answers; endpoints that differ only in a query value
    share them (give such a run its own ``--cache-path``).
    """
    spec = spec_secrets.stored_spec(spec)
    spec_id = spec
    path = spec.split(":", 1)[1] if spec.startswith(("dnn:", "litert:")) else spec
    if os.path.isfile(path):  # a model file: the same file under another name is the same model
        st = os.stat(path)
        spec_id = f"{spec}|{st.st_size}|{int(st.st_mtime)}"
    return json.dumps({"spec": spec_id, "preset": preset, "options": options}, sort_keys=True)


def _python_model(target: str, options: dict[str, Any]) -> _Guarded:
    mod_name, _, attr = target.rpartition(":")
    if not mod_name or not attr:
        raise SpecError(f"python model spec must be python:module:function, got python:{target}")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise SpecError(f"cannot import module {mod_name!r} for the model: {exc}") from None
    obj = getattr(module, attr, None)
    if obj is None:
        raise SpecError(f"module {mod_name!r} has no attribute {attr!r}")
    if options:
        obj = obj(**options)  # a factory taking the model options
    if hasattr(obj, "predict"):
        return _Guarded(obj, f"python:{target}")
    if not callable(obj):
        raise SpecError(f"{mod_name}:{attr} is neither callable nor a model with predict()")
    return _Guarded(CallableModel(obj, name=f"{mod_name}:{attr}"), f"python:{target}")


class _Guarded:
    """A user's Python model whose failures during ``predict`` are model failures.

    An exception raised inside the user's code (a lost connection, an SDK error) becomes a
    :class:`ModelError` naming the model, so the command exits with code 3 and the run can be
    resumed, instead of being taken for bad arguments. Bad input is checked first, so that it
    stays a TypeError / ValueError naming the input. Other attributes pass through.
    """

    def __init__(self, model: Any, spec: str) -> None:
        self._model, self._spec = model, spec

    def predict(self, images: Any) -> Any:
        """The user's model's answer to uint8 ``(N, H, W, 3)`` images (checked first)."""
        x = check_images(images)
        try:
            return self._model.predict(x)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"model {self._spec} failed: {type(exc).__name__}: {exc}") from exc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def build_model(spec: str, *, preset: str | None = None, options: dict[str, Any] | None = None,
                api_key_env: str | None = None, api_secret_env: str | None = None) -> Model:
    """The Model named by ``spec`` (see the module docstring); SpecError for bad specs."""
    opts = _kwargs(dict(options or {}))
    if not isinstance(spec, str) or not spec:
        raise SpecError("--model is required (e.g. standin:blazeface, net.onnx, https://...)")
    try:
        if spec.startswith("standin:"):
            name = spec.split(":", 1)[1]
            if name == "hog-embedding":
                if opts:
                    raise SpecError(f"stand-in hog-embedding takes no option, got {sorted(opts)}")
                return HOGEmbedding()
            if name not in STANDINS:
                raise SpecError(f"unknown stand-in {name!r}; valid names: "
                                f"{', '.join(sorted([*STANDINS, 'hog-embedding']))}")
            try:
                return load_standin(name, **opts)
            except ValueError as exc:  # an unknown option or backend: named, one line
                raise SpecError(str(exc)) from None
        if spec_secrets.is_url(spec):
            return _http_model(spec, preset, opts, api_key_env, api_secret_env)
        if spec.startswith("python:"):
            return _python_model(spec[len("python:"):], opts)
        runtime, path = "dnn", spec
        if spec.startswith(("dnn:", "litert:")):
            runtime, path = spec.split(":", 1)
        elif not spec.lower().endswith(_FILE_EXTS):
            raise SpecError(f"unknown model spec {spec!r}; use standin:NAME, a model file "
                            "(.onnx, .tflite, ...), litert:FILE, an http(s):// URL or "
                            "python:module:function")
        if not os.path.isfile(path):
            raise SpecError(f"model file not found: {path}")
        if "input_size" not in opts:
            raise SpecError("a model file needs its input size: --model-option input_size=[H,W] "
                            "(and color, mean, scale, layout, postprocess as the network expects)")
        cls = LiteRTModel if runtime == "litert" else DNNModel
        return cls(path, **opts)
    except TypeError as exc:
        raise SpecError(f"bad model options for {spec_secrets.stored_spec(spec)!r}: "
                        f"{spec_secrets.scrub(str(exc))}") from None
    except ModuleNotFoundError as exc:
        raise MissingDependency(str(exc)) from None
    except FileNotFoundError as exc:
        raise SpecError(str(exc)) from None
    except ImportError as exc:
        raise MissingDependency(f"{spec_secrets.stored_spec(spec)}: {exc}") from None
