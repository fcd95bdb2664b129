"""The proxy's third half of a wire format: the images of a request body, replaced in place.

For each preset a rewriter finds the images where the preset's client puts them (base64
files in JSON, form fields, a raw file body, OIP tensors as JSON or Triton binary), hands
them to ``perturb`` (uint8 ``(N, H, W, 3)`` RGB -> the same shape) and writes them back in
the same form, leaving every other field as it came. An image file comes back as PNG
(lossless: the delta survives; uncompressed up to :data:`STORED_MAX_BYTES`, see
:data:`PNG_CHOICES`), or as JPEG when it came as JPEG and ``jpeg_quality`` is set (the
caller's format; the compression then eats part of the delta). A request whose images
are not where the preset puts them raises :class:`NoImages`: the proxy forwards it as it is.

Shared with the KServe transformer (:mod:`.kserve_transformer`): :func:`perturb_oip_input`
(one OIP input tensor, pixels or image files), :func:`perturb_files` and :func:`image_input`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

import numpy as np

from blackbox_dft.adapters.remote.facepp import FacePPComparePreset, FacePPPreset
from blackbox_dft.adapters.remote.hf import HFPreset
from blackbox_dft.adapters.remote.oip import OIPPreset
from blackbox_dft.adapters.remote.oip_binary import HEADER, split, tensor_bytes, tensor_from_bytes
from blackbox_dft.adapters.remote.oip_metadata import choose_input
from blackbox_dft.adapters.remote.presets import JSONPreset, Preset, TFServingPreset
from blackbox_dft.adapters.remote.tensors import Preprocessing
from blackbox_dft.adapters.remote.vendors import ClarifaiPreset, GoogleVisionPreset
from blackbox_dft.adapters.remote.wire import (
    b64,
    decode_image,
    encode_image,
    quote_b64,
    unb64,
    unquote_form,
)
from blackbox_dft.core.images import side_by_side, split_pair

__all__ = ["Perturb", "NoImages", "Rewritten", "Rewriter", "perturb_files",
           "perturb_oip_input", "image_input", "PNG_CHOICES", "STORED_MAX_BYTES", "png_mode"]

#: uint8 RGB images (N, H, W, 3) -> their perturbed copies, same shape
Perturb = Callable[[np.ndarray], np.ndarray]

#: how a perturbed image file goes upstream as PNG. "stored": uncompressed (a tenth of the
#: CPU of "fast" to write and to read, 1.7x its bytes on photos); "fast": zlib run-length
#: compressed (``wire._FAST_PNG``); "auto": stored up to :data:`STORED_MAX_BYTES` of pixels,
#: fast above, where a vendor's upload limit may bite (Face++ takes files up to 2 MB)
PNG_CHOICES = ("auto", "stored", "fast")
#: "auto"'s largest uncompressed image: 1 MiB of pixels (up to ~590x590 RGB; 1.4 MB as base64)
STORED_MAX_BYTES = 1 << 20


def png_mode(choice: str, image: np.ndarray) -> str:
    """The ``wire.encode_image`` PNG mode for ``image`` under ``choice`` (:data:`PNG_CHOICES`)."""
    if choice == "auto":
        return "stored" if image.size <= STORED_MAX_BYTES else "fast"
    if choice not in PNG_CHOICES:
        raise ValueError(f"png must be one of {', '.join(PNG_CHOICES)}, got {choice!r}")
    return choice


class NoImages(ValueError):
    """The body holds no image where the preset puts them (forwarded unperturbed)."""


@dataclass
class Rewritten:
    """The new body, headers to set on the forwarded request, and the images perturbed."""

    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    images: int = 0


def _is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


class Rewriter:
    """Perturb the images of request bodies in the wire format of ``preset``.

    perturb: see :data:`Perturb`. jpeg_quality: re-encode a JPEG input as JPEG at this
    quality (None: as PNG, lossless, which the upstream must accept). png: how PNG files
    are written (:data:`PNG_CHOICES`).
    """

    def __init__(self, preset: Preset, perturb: Perturb, *,
                 jpeg_quality: int | None = None, png: str = "auto") -> None:
        png_mode(png, np.zeros(0, np.uint8))  # a bad choice fails here, not per request
        self.preset, self.perturb, self.jpeg_quality = preset, perturb, jpeg_quality
        self.png = png

    # -- image files ---------------------------------------------------------------
    def _file(self, data: bytes) -> bytes:
        return self._files([data])[0]

    def _files(self, files: list[bytes]) -> list[bytes]:
        """Perturbed copies of image files, each in its own format (see the class)."""
        return perturb_files(files, self.perturb, self.jpeg_quality, self.png)

    def _encode(self, image: np.ndarray, original: bytes) -> bytes:
        return _encode(image, original, self.jpeg_quality, self.png)

    def _b64s(self, items: list[Any]) -> list[str]:
        try:
            files = [unb64(s) for s in items]
        except ValueError as exc:
            raise NoImages(str(exc)) from None
        return [b64(f) for f in self._files(files)]

    # -- bodies --------------------------------------------------------------------
    def rewrite(self, body: bytes, headers: Mapping[str, str]) -> Rewritten:
        """The body with its images perturbed; :class:`NoImages` if it holds none where the
        preset puts them. ``headers``: the request's, lower-case names."""
        p = self.preset
        if isinstance(p, OIPPreset):
            return self._oip(body, headers)
        if isinstance(p, FacePPComparePreset):
            return self._form_pair(body)
        if isinstance(p, FacePPPreset):
            return self._form(body, "image_base64")
        if isinstance(p, HFPreset) and not _looks_json(body, headers):
            return Rewritten(self._file(body), images=1)
        if p.name == "torchserve":
            return Rewritten(self._file(body), images=1)
        payload = _json(body)
        n = self._json(payload)
        if n == 0:
            raise NoImages("no image in the JSON body")
        return Rewritten(json.dumps(payload).encode(), images=n)

    def _json(self, payload: Any) -> int:
        """Perturb the images of a parsed JSON body in place; the number perturbed."""
        p = self.preset
        if isinstance(p, JSONPreset):
            return self._template(p.template, payload)
        if isinstance(p, TFServingPreset):
            return self._tfserving(payload)
        if isinstance(p, GoogleVisionPreset):
            holders = [r["image"] for r in _list(payload, "requests")
                       if isinstance(r, dict) and isinstance(r.get("image"), dict)
                       and "content" in r["image"]]
            return self._in_place(holders, "content")
        if isinstance(p, ClarifaiPreset):
            holders = [x["data"]["image"] for x in _list(payload, "inputs")
                       if isinstance(x, dict) and isinstance(x.get("data"), dict)
                       and isinstance(x["data"].get("image"), dict)
                       and "base64" in x["data"]["image"]]
            return self._in_place(holders, "base64")
        if isinstance(p, HFPreset):
            inputs = payload.get("inputs") if isinstance(payload, dict) else None
            if isinstance(inputs, str):
                payload["inputs"] = self._b64s([inputs])[0]
                return 1
            if isinstance(inputs, list):
                payload["inputs"] = self._b64s(inputs)
                return len(inputs)
            return 0
        raise NoImages(f"the proxy does not know where preset {p.name!r} puts its images")

    def _in_place(self, holders: list[dict[str, Any]], key: str) -> int:
        for holder, new in zip(holders, self._b64s([h[key] for h in holders]), strict=True):
            holder[key] = new
        return len(holders)

    def _template(self, template: Any, node: Any) -> int:
        """Walk the JSON preset's template and the body together; replace at ``$image(s)``."""
        if isinstance(template, dict) and isinstance(node, dict):
            n = 0
            for k, t in template.items():
                if k not in node:
                    continue
                if t == "$image":
                    node[k] = self._b64s([node[k]])[0]
                    n += 1
                elif t == "$images" and isinstance(node[k], list):
                    node[k] = self._b64s(node[k])
                    n += len(node[k])
                else:
                    n += self._template(t, node[k])
            return n
        if isinstance(template, list) and isinstance(node, list):
            return sum(self._template(t, v) for t, v in zip(template, node, strict=False))
        return 0

    def _tfserving(self, payload: Any) -> int:
        inst = _list(payload, "instances")
        if not inst:
            return 0
        if all(isinstance(x, dict) and "b64" in x for x in inst):
            return self._in_place(inst, "b64")
        try:
            images = np.asarray(inst)
        except ValueError:
            raise NoImages("instances are not one [H][W][3] array per image") from None
        if images.ndim != 4 or images.shape[-1] != 3 or images.min() < 0 or images.max() > 255:
            raise NoImages(f"instances of shape {list(images.shape)} are not uint8 images")
        payload["instances"] = self.perturb(images.astype(np.uint8)).tolist()
        return len(images)

    def _form(self, body: bytes, *names: str) -> Rewritten:
        """A form body: each field in ``names`` (base64 image files) replaced; every other
        field keeps its bytes (keys and secrets included)."""
        parts = body.split(b"&")
        where = {}
        for i, part in enumerate(parts):
            key = unquote_plus(part.split(b"=", 1)[0].decode("ascii", "replace"))
            if key in names:
                where[key] = i
        if set(where) != set(names):
            raise NoImages(f"no form field(s) {sorted(set(names) - set(where))}")
        values = [unquote_form(parts[where[k]].split(b"=", 1)[1]) for k in names]
        new = self._b64_pair(values) if len(names) == 2 else self._b64s(values)
        for k, v in zip(names, new, strict=True):
            parts[where[k]] = parts[where[k]].split(b"=", 1)[0] + b"=" + quote_b64(v).encode()
        return Rewritten(b"&".join(parts), images=1)

    def _form_pair(self, body: bytes) -> Rewritten:
        return self._form(body, "image_base64_1", "image_base64_2")

    def _b64_pair(self, values: list[str]) -> list[str]:
        """A face-compare pair: perturbed as the side-by-side image the fit saw."""
        try:
            files = [unb64(v) for v in values]
            a, b = (decode_image(f) for f in files)
            pair = side_by_side(a[None], b[None])
        except ValueError as exc:
            raise NoImages(str(exc)) from None
        pa, pb = split_pair(self.perturb(pair)[0])
        return [b64(self._encode(im, f)) for im, f in zip((pa, pb), files, strict=True)]

    # -- OIP -----------------------------------------------------------------------
    def _oip(self, body: bytes, headers: Mapping[str, str]) -> Rewritten:
        p = self.preset
        assert isinstance(p, OIPPreset)
        try:
            parts = split(body, {HEADER: headers[HEADER.lower()]}
                          if HEADER.lower() in headers else {})
        except ValueError as exc:
            raise NoImages(str(exc)) from None
        request = _json(body if parts is None else parts[0])
        inputs = request.get("inputs") if isinstance(request, dict) else None
        if not isinstance(inputs, list) or not inputs:
            raise NoImages('no "inputs" list')
        pieces = _binary_pieces(inputs, parts[1]) if parts is not None else {}
        i = image_input(inputs, p.input_name)
        inp = inputs[i]
        data = pieces[i] if i in pieces else inp.get("data")
        if i in pieces:
            data = tensor_from_bytes(data, str(inp.get("datatype")), inp.get("shape") or [])
        new, n = perturb_oip_input(inp, data, p.pre, self.perturb, self.jpeg_quality,
                                   self.png)
        if parts is None:
            inp["data"] = ([b64(x) for x in new] if inp["datatype"] == "BYTES"
                           else np.asarray(new).ravel().tolist())
            return Rewritten(json.dumps(request).encode(), images=n)
        pieces[i] = tensor_bytes(new, inp["datatype"])
        inp["parameters"]["binary_data_size"] = len(pieces[i])
        head = json.dumps(request).encode()
        tail = b"".join(pieces[k] for k in sorted(pieces))
        return Rewritten(head + tail, {HEADER: str(len(head))}, images=n)


def _encode(image: np.ndarray, original: bytes, jpeg_quality: int | None,
            png: str = "auto") -> bytes:
    if _is_jpeg(original) and jpeg_quality is not None:
        return encode_image(image, "jpeg", jpeg_quality)
    return encode_image(image, "png", png=png_mode(png, image))  # lossless


def perturb_files(files: list[bytes], perturb: Perturb, jpeg_quality: int | None = None,
                  png: str = "auto") -> list[bytes]:
    """Perturbed copies of image files (PNG / JPEG bytes, any sizes): each decoded, perturbed
    at its own size and encoded again as PNG (lossless; ``png``: :data:`PNG_CHOICES`), or as
    JPEG at ``jpeg_quality`` when it came as JPEG and that is set. NoImages for bytes that
    are not an image."""
    try:
        images = [decode_image(f) for f in files]
    except ValueError as exc:
        raise NoImages(str(exc)) from None
    out = [perturb(im[None])[0] for im in images]  # sizes may differ per file
    return [_encode(im, f, jpeg_quality, png) for im, f in zip(out, files, strict=True)]


def perturb_oip_input(inp: Mapping[str, Any], data: Any, pre: Preprocessing, perturb: Perturb,
                      jpeg_quality: int | None = None, png: str = "auto") -> tuple[Any, int]:
    """One OIP input of images, perturbed: (the new tensor, the number of images).

    inp: the input's ``datatype`` and ``shape`` as the request gives them; data: its values
    (a flat or nested list, an array; for BYTES, base64 strings or bytes). BYTES: image
    files, returned as a list of files (:func:`perturb_files`). UINT8 / FP32 / FP16 pixels:
    the tensor spec is the request's own (datatype, layout from the 3-channel axis, size,
    batch axis) with the run's preprocessing ``pre`` (scale, mean, std, channels; a datatype
    or layout it names must be the request's); the tensor goes back to uint8 images
    (``TensorSpec.from_tensor``, exact for the tensors a client makes with the same spec), is
    perturbed at that size and made again (``to_tensor``): an array of the request's shape
    and datatype. NoImages (one line) for an input that is not images of that form.
    """
    datatype = inp.get("datatype")
    if datatype == "BYTES":
        items = np.asarray(data, dtype=object).ravel().tolist() if data is not None else None
        if not items:
            raise NoImages("a BYTES input without a list of image files")
        files = [x if isinstance(x, bytes) else _unb64(x) for x in items]
        return perturb_files(files, perturb, jpeg_quality, png), len(files)
    if datatype not in ("UINT8", "FP32", "FP16"):
        raise NoImages(f"input datatype {datatype!r} is not images (UINT8, FP32, FP16 pixels "
                       "or BYTES image files)")
    if pre.datatype is not None and datatype != pre.datatype:
        raise NoImages(f"input datatype {datatype!r}: the run's preprocessing makes "
                       f"{pre.datatype} tensors")
    shape = inp.get("shape")
    try:
        _, spec = choose_input({"inputs": [{"name": inp.get("name"), "datatype": datatype,
                                            "shape": shape}]}, None, pre)
        tensor = np.asarray(data, dtype=np.uint8 if datatype == "UINT8" else np.float64)
        images = spec.from_tensor(tensor.reshape(shape))
    except (ValueError, TypeError, OverflowError) as exc:  # OverflowError: 300 as UINT8
        raise NoImages("input tensor: " + " ".join(str(exc).split())[:300]) from None
    return spec.to_tensor(perturb(images)), len(images)


def _unb64(text: Any) -> bytes:
    try:
        return unb64(text)
    except ValueError as exc:
        raise NoImages(str(exc)) from None


def _binary_pieces(inputs: list[Any], tail: bytes) -> dict[int, bytes]:
    """Input index -> its bytes in the binary tail (inputs with ``binary_data_size``)."""
    out, at = {}, 0
    for i, t in enumerate(inputs):
        params = t.get("parameters") if isinstance(t, dict) else None
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is None:
            continue
        if not isinstance(size, int) or size < 0 or at + size > len(tail):
            raise NoImages(f"binary_data_size {size!r} does not fit the body")
        out[i], at = tail[at:at + size], at + size
    if at != len(tail):
        raise NoImages(f"{len(tail) - at} bytes after the last binary input")
    return out


def image_input(inputs: list[Any], name: str | None) -> int:
    """Index of the image input among ``inputs`` (objects with a ``name``): the one named
    ``name``, else the first. NoImages if there is no such input."""
    for i, t in enumerate(inputs):
        if isinstance(t, dict) and name is not None and t.get("name") == name:
            return i
    if name is not None and len(inputs) > 1:
        raise NoImages(f"no input named {name!r}")
    if not isinstance(inputs[0], dict):
        raise NoImages("an input is not an object")
    return 0


def _looks_json(body: bytes, headers: Mapping[str, str]) -> bool:
    return "json" in headers.get("content-type", "").lower() or body.lstrip()[:1] == b"{"


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise NoImages(f"the body is not JSON ({type(exc).__name__})") from None


def _list(payload: Any, key: str) -> list[Any]:
    value = payload.get(key) if isinstance(payload, dict) else None
    return value if isinstance(value, list) else []
