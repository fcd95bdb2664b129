"""What an Open Inference Protocol server says it takes, turned into what the client sends.

- :class:`Route`: an infer URL ``.../v2/models/NAME[/versions/V]/infer`` and the metadata URLs
  beside it (model: ``/v2/models/NAME[/versions/V]``, server: ``/v2``).
- :func:`choose_input`: the model metadata's ``inputs`` + what the user said -> the input's
  name and :class:`~blackbox_dft.adapters.remote.tensors.TensorSpec`. What the user gave
  wins; the metadata fills the rest (name, datatype, layout, size, batch axis); a value
  that contradicts a fixed shape in the metadata, or a tensor that is not an image, is a
  one-line ValueError naming it.
- :func:`takes_binary`: whether the server metadata lists ``binary_tensor_data``.

Source: https://kserve.github.io/website/docs/concepts/architecture/data-plane/v2-protocol
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from blackbox_dft.adapters.remote.tensors import DATATYPES, Preprocessing, TensorSpec

__all__ = ["Route", "choose_input", "takes_binary", "FALLBACK_INPUT"]

#: the input name sent when neither the user nor the metadata names one
FALLBACK_INPUT = "images"
_INFER = re.compile(r"^(?P<base>.*?)/v2/models/(?P<name>[^/]+)"
                    r"(?:/versions/(?P<version>[^/]+))?(?:/infer)?/?$")


@dataclass(frozen=True)
class Route:
    """An OIP infer URL taken apart: scheme://host/base + /v2/models/name[/versions/v]/infer
    (the model's URL without /infer is taken too; its query string, which may hold a key,
    is kept on every URL made from it)."""

    url: str
    base: str
    name: str
    version: str | None

    @classmethod
    def parse(cls, url: str, version: str | None = None) -> Route:
        """The route of ``url``; ``version`` (if given) must agree with the URL's. ValueError
        if the path is not an OIP infer path."""
        parts = urlsplit(url)
        m = _INFER.match(parts.path)
        if m is None:
            raise ValueError(f"the URL path {parts.path!r} is not an Open Inference Protocol infer "
                             "path (.../v2/models/NAME[/versions/V]/infer); fix the URL, or pass "
                             "input_name=, datatype= and layout= with metadata=False")
        in_url = m["version"]
        given = None if version is None else quote(str(version), safe="")
        if given is not None and in_url is not None and given != in_url:
            raise ValueError(f"model_version={version!r} but the URL asks for version "
                             f"{in_url!r}: give one")
        return cls(url, urlunsplit(parts._replace(path=m["base"])), m["name"], in_url or given)

    def _url(self, path: str) -> str:
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(path=urlsplit(self.base).path + path))

    @property
    def model_path(self) -> str:
        tail = "" if self.version is None else f"/versions/{self.version}"
        return f"/v2/models/{self.name}{tail}"

    @property
    def infer_url(self) -> str:
        """The infer URL, with the version path when a version was given."""
        return self._url(self.model_path + "/infer")

    @property
    def model_url(self) -> str:
        return self._url(self.model_path)

    @property
    def server_url(self) -> str:
        return self._url("/v2")


def takes_binary(server_metadata: Any) -> bool:
    """Whether the server metadata lists the binary tensor data extension."""
    ext = server_metadata.get("extensions") if isinstance(server_metadata, dict) else None
    return isinstance(ext, list) and "binary_tensor_data" in ext


def _describe(inp: dict[str, Any]) -> str:
    return f"{inp.get('name')!r} {inp.get('datatype')} {inp.get('shape')}"


def _channels_at(shape: list[int]) -> str | None:
    """NCHW / NHWC from a 3-D or 4-D shape with a 3-channel axis (None: neither or both)."""
    dims = shape[-3:]
    first, last = dims[0] == 3, dims[2] == 3
    if first == last:
        return None
    return "NCHW" if first else "NHWC"


def _image_like(inp: dict[str, Any]) -> bool:
    shape = inp.get("shape")
    if not isinstance(shape, list):
        return False
    if inp.get("datatype") == "BYTES":
        return len(shape) in (1, 2)
    return len(shape) in (3, 4) and 3 in (shape[-3], shape[-1])


def _pick(inputs: list[dict[str, Any]], name: str | None) -> dict[str, Any] | None:
    """The metadata entry of the input to send (None: the metadata lists no input)."""
    if not inputs:
        return None
    if name is not None:
        named = [i for i in inputs if i.get("name") == name]
        if not named:
            raise ValueError(f"input_name={name!r} is not an input of the model; its inputs: "
                             f"{', '.join(_describe(i) for i in inputs)}")
        return named[0]
    images = [i for i in inputs if _image_like(i)] if len(inputs) > 1 else inputs
    if len(images) != 1:
        raise ValueError(f"the model has {len(inputs)} inputs ({', '.join(map(_describe, inputs))})"
                         "; pass input_name= to say which one takes the images")
    return images[0]


def _shape_of(inp: dict[str, Any]) -> list[int]:
    shape = inp.get("shape")
    if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise ValueError(f"the model metadata gives input {inp.get('name')!r} the shape "
                         f"{shape!r}, not a list of integers")
    return shape


def _tensor_spec(inp: dict[str, Any], pre: Preprocessing, datatype: str) -> TensorSpec:
    """The spec of an image tensor input listed as ``inp``."""
    shape = _shape_of(inp)
    if datatype == "BYTES":
        return pre.spec("BYTES", "NHWC", pre.size, batched=not (len(shape) == 1 and shape[0] > 0))
    where = _channels_at(shape) if len(shape) in (3, 4) else None
    if len(shape) not in (3, 4) or (where is None and pre.layout is None):
        raise ValueError(f"the model's input {_describe(inp)} is not an image tensor with 3 "
                         "channels first or last; pass layout='NCHW' or 'NHWC' if it is one")
    layout = pre.layout or where or "NHWC"  # (never the default: one of them is set)
    if where is not None and pre.layout is not None and pre.layout != where:
        raise ValueError(f"layout={pre.layout!r} contradicts the model's input {_describe(inp)} "
                         f"({where}); drop layout=")
    dims = shape[-3:]
    hw = (dims[1], dims[2]) if layout == "NCHW" else (dims[0], dims[1])
    fixed = (hw[0], hw[1]) if hw[0] > 0 and hw[1] > 0 else None
    if pre.size is not None and fixed is not None and pre.size != fixed:
        raise ValueError(f"size={list(pre.size)} contradicts the model's input {_describe(inp)} "
                         f"({fixed[0]}x{fixed[1]}); drop size=")
    return pre.spec(datatype, layout, pre.size or fixed, batched=len(shape) == 4)


def choose_input(metadata: Any, name: str | None, pre: Preprocessing) -> tuple[str, TensorSpec]:
    """(input name, tensor spec) from the model ``metadata`` (None: not read) and what the
    user said (``name``, ``pre``). A metadata without inputs (MLServer's, when the model
    settings list none) leaves the user's values and the defaults (UINT8 NHWC, "images")."""
    inputs = metadata.get("inputs") if isinstance(metadata, dict) else None
    listed = [i for i in inputs if isinstance(i, dict)] if isinstance(inputs, list) else []
    inp = _pick(listed, name)
    if inp is None:
        return name or FALLBACK_INPUT, pre.spec(pre.datatype or "UINT8", pre.layout or "NHWC",
                                                pre.size)
    datatype = pre.datatype or str(inp.get("datatype"))
    if datatype not in DATATYPES:
        raise ValueError(f"the model's input {_describe(inp)} is not one of the datatypes "
                         f"images are sent as ({', '.join(DATATYPES)}); pass datatype= if the "
                         "server converts")
    return str(inp.get("name")), _tensor_spec(inp, pre, datatype)
