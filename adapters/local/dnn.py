"""Local model files as Models: ``cv2.dnn`` networks and LiteRT (TFLite) interpreters.

Both adapters take uint8 RGB images ``(N, H, W, 3)`` of any size, apply one declared
:class:`Preprocess` (colour, resize, ``(x - mean) * scale``, layout), run the network and
map its raw output to scores ``(N, K)`` with a declared post-processing.

Grey input ``(N, H, W)`` or ``(N, H, W, 1)`` is also accepted by these local adapters
(:func:`as_rgb` replicates it to RGB before the usual checks); the core itself always
sends RGB.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
from scipy.special import expit

from blackbox_dft.adapters.base import BaseModel
from blackbox_dft.core.model import ModelError

__all__ = ["Preprocess", "DNNModel", "LiteRTModel", "as_rgb", "postprocess_scores",
           "LITERT_PIP"]

LITERT_PIP = "pip install ai-edge-litert==2.3.0"

Color = Literal["rgb", "bgr", "grey"]
Layout = Literal["nchw", "nhwc"]
Resize = Literal["resize", "pad_edge"]
PostProcess = str | Callable[[np.ndarray], np.ndarray]
_POSTPROCESS = ("none", "softmax", "sigmoid", "sigmoid_max")


def as_rgb(images: Any) -> Any:
    """Replicate grey ``(N, H, W)`` or ``(N, H, W, 1)`` arrays to RGB ``(N, H, W, 3)``.

    Anything else is returned unchanged (and validated later by ``check_images``). A 3-D
    array 3 pixels wide is refused: it is one RGB image without its batch axis far more
    often than grey images 3 pixels wide (which would be scored as ``H`` images).
    """
    if isinstance(images, np.ndarray):
        if images.ndim == 3 and images.shape[-1] == 3:
            raise ValueError(
                f"images must have shape (N, H, W, 3) (RGB), got shape {images.shape}: one "
                "image without its batch axis? pass images[None]; grey images 3 pixels wide "
                "need a channel axis, (N, H, 3, 1)")
        if images.ndim == 3:
            return np.repeat(images[..., None], 3, axis=-1)
        if images.ndim == 4 and images.shape[-1] == 1:
            return np.repeat(images, 3, axis=-1)
    return images


@dataclass(frozen=True)
class Preprocess:
    """The declared input pipeline of a network: uint8 RGB ``(N, H, W, 3)`` -> float32 blob.

    input_size: network input ``(height, width)`` in pixels.
    color: ``"rgb"``, ``"bgr"`` or ``"grey"`` (one channel, ``cv2`` luma weights).
    mean, scale: the blob is ``(pixel - mean) * scale`` (grey levels; mean per channel or one).
    layout: ``"nchw"`` (cv2.dnn) or ``"nhwc"`` (LiteRT).
    resize: ``"resize"`` stretches to ``input_size``; ``"pad_edge"`` keeps the aspect ratio,
    scales the longer side to ``fill`` of the frame and replicates the border pixels around it.
    """

    input_size: tuple[int, int]
    color: Color = "rgb"
    mean: float | tuple[float, ...] = 0.0
    scale: float = 1.0
    layout: Layout = "nchw"
    resize: Resize = "resize"
    fill: float = 1.0

    def __post_init__(self) -> None:
        size = tuple(self.input_size)
        if len(size) != 2 or not all(isinstance(s, int | np.integer) and s > 0 for s in size):
            raise ValueError(f"input_size must be (height, width) positive ints, got {size!r}")
        object.__setattr__(self, "input_size", (int(size[0]), int(size[1])))
        if self.color not in ("rgb", "bgr", "grey"):
            raise ValueError(f"color must be 'rgb', 'bgr' or 'grey', got {self.color!r}")
        if self.layout not in ("nchw", "nhwc"):
            raise ValueError(f"layout must be 'nchw' or 'nhwc', got {self.layout!r}")
        if self.resize not in ("resize", "pad_edge"):
            raise ValueError(f"resize must be 'resize' or 'pad_edge', got {self.resize!r}")
        if not 0.0 < float(self.fill) <= 1.0:
            raise ValueError(f"fill must be in (0, 1], got {self.fill!r}")
        mean = np.atleast_1d(np.asarray(self.mean, dtype=np.float64))
        if mean.ndim != 1 or mean.size not in (1, self.channels):
            raise ValueError(
                f"mean must be one value or {self.channels} (one per channel), got {self.mean!r}"
            )
        if not (np.isfinite(self.scale) and self.scale != 0):
            raise ValueError(f"scale must be finite and non-zero, got {self.scale!r}")

    @property
    def channels(self) -> int:
        """Number of input channels (1 for grey, else 3)."""
        return 1 if self.color == "grey" else 3

    def _fit(self, image: np.ndarray) -> np.ndarray:
        """Resize one ``(H, W, C)`` uint8 image to ``input_size`` with cv2."""
        th, tw = self.input_size
        h, w = image.shape[:2]
        if self.resize == "resize":
            if (h, w) == (th, tw):
                return image
            return cv2.resize(image, (tw, th), interpolation=cv2.INTER_LINEAR)
        k = self.fill * min(th / h, tw / w)
        nh, nw = max(1, round(h * k)), max(1, round(w * k))
        small = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        top, left = (th - nh) // 2, (tw - nw) // 2
        return cv2.copyMakeBorder(small, top, th - nh - top, left, tw - nw - left,
                                  cv2.BORDER_REPLICATE)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Blob float32 ``(N, C, h, w)`` or ``(N, h, w, C)`` from uint8 RGB ``(N, H, W, 3)``."""
        n, h, w, _ = images.shape
        if self.color == "grey":
            # One cvtColor call on the stacked rows instead of N calls.
            x = cv2.cvtColor(np.ascontiguousarray(images.reshape(n * h, w, 3)),
                             cv2.COLOR_RGB2GRAY).reshape(n, h, w, 1)
        elif self.color == "bgr":
            x = images[..., ::-1]
        else:
            x = images
        fitted = [self._fit(np.ascontiguousarray(im)) for im in x]
        c = self.channels
        blob = np.stack([f.reshape(*self.input_size, c) for f in fitted]).astype(np.float32)
        blob -= np.asarray(self.mean, dtype=np.float32)
        blob *= np.float32(self.scale)
        if self.layout == "nchw":
            blob = blob.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(blob)


def postprocess_scores(raw: np.ndarray, how: PostProcess) -> np.ndarray:
    """Map a raw network output ``(N, ...)`` to scores float64 ``(N, K)``.

    ``"none"``: flatten; ``"softmax"``: softmax over the flattened outputs; ``"sigmoid"``:
    element-wise (multi-label); ``"sigmoid_max"``: ``p = sigmoid(max logit)`` (a detector
    read as a binary classifier) -> ``(N, 2)`` ``[1 - p, p]``; a callable gets ``raw``.
    """
    if callable(how):
        return np.asarray(how(raw), dtype=np.float64)
    x = np.asarray(raw, dtype=np.float64).reshape(raw.shape[0], -1)
    if how == "none":
        return x
    if how == "softmax":
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if how == "sigmoid":
        return expit(x)
    if how == "sigmoid_max":
        p = expit(x.max(axis=1))
        return np.stack([1.0 - p, p], axis=1)
    raise ValueError(f"postprocess must be one of {_POSTPROCESS} or a callable, got {how!r}")


class _FileModel(BaseModel):
    """Shared parts: file check, preprocessing, batching, post-processing, grey input."""

    def __init__(self, path: str | os.PathLike[str], preprocess: Preprocess,
                 postprocess: PostProcess, batch: bool, max_batch: int,
                 name: str | None, labels: tuple[str, ...] | None) -> None:
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"model file not found: {self.path}")
        if not callable(postprocess) and postprocess not in _POSTPROCESS:
            raise ValueError(
                f"postprocess must be one of {_POSTPROCESS} or a callable, got {postprocess!r}"
            )
        if int(max_batch) < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch!r}")
        self.preprocess = preprocess
        self.postprocess = postprocess
        self.batch = bool(batch)
        self.max_batch = int(max_batch)
        self.name = name or os.path.basename(self.path)
        self.labels = tuple(labels) if labels is not None else None
        # Neither a cv2.dnn Net nor a LiteRT interpreter may run two forwards at once.
        self._lock = threading.Lock()

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Scores float64 ``(N, K)`` for uint8 RGB ``(N, H, W, 3)`` (grey also accepted)."""
        return super().predict(as_rgb(images))

    def _predict(self, images: np.ndarray) -> np.ndarray:
        blob = self.preprocess(images)
        step = self.max_batch if self.batch else 1
        with self._lock:
            raw = [self._forward(blob[i:i + step]) for i in range(0, blob.shape[0], step)]
        scores = postprocess_scores(np.concatenate(raw, axis=0), self.postprocess)
        if self.labels is not None and scores.ndim == 2 and scores.shape[1] != len(self.labels):
            raise ModelError(
                f"{self.name} returned {scores.shape[1]} scores per image but has "
                f"{len(self.labels)} labels {self.labels}"
            )
        return scores

    def _forward(self, blob: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        p = self.preprocess
        post = getattr(self.postprocess, "__name__", self.postprocess)
        return (f"{type(self).__name__}(name={self.name!r}, file={os.path.basename(self.path)!r}, "
                f"input_size={p.input_size}, color={p.color!r}, resize={p.resize!r}, "
                f"postprocess={post!r}, batch={self.batch})")


class DNNModel(_FileModel):
    """A model file run by ``cv2.dnn`` (ONNX, TFLite, Caffe, ...) behind a declared preprocessing.

    path: model file; input_size ``(h, w)``; color/mean/scale/layout/resize/fill: see
    :class:`Preprocess`; output: layer name to read (None: the default output);
    postprocess: see :func:`postprocess_scores`; batch: False runs one image per forward
    (needed when a graph gives wrong batched outputs, e.g. BlazeFace TFLite in cv2.dnn);
    max_batch: largest forward when batching; labels: optional class names, one per score.
    """

    def __init__(self, path: str | os.PathLike[str], *, input_size: tuple[int, int],
                 color: Color = "rgb", mean: float | tuple[float, ...] = 0.0,
                 scale: float = 1.0, layout: Layout = "nchw", output: str | None = None,
                 postprocess: PostProcess = "none", batch: bool = True,
                 resize: Resize = "resize", fill: float = 1.0, max_batch: int = 64,
                 name: str | None = None, labels: tuple[str, ...] | None = None) -> None:
        pre = Preprocess(input_size, color, mean, scale, layout, resize, fill)
        super().__init__(path, pre, postprocess, batch, max_batch, name, labels)
        self.output = output
        try:
            self._net = cv2.dnn.readNet(self.path)
        except cv2.error as exc:
            raise ValueError(f"cv2.dnn cannot load {self.path}: {exc}") from None
        if output is not None:
            names = list(self._net.getLayerNames())
            if output not in names:
                raise ValueError(f"{self.name}: no layer named {output!r} in {self.path}")

    def _forward(self, blob: np.ndarray) -> np.ndarray:
        self._net.setInput(blob)
        out = self._net.forward(self.output) if self.output else self._net.forward()
        return np.array(out, dtype=np.float32, copy=True)


def _quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Float blob -> the tensor's dtype, using its ``(scale, zero_point)`` when integer."""
    dtype = np.dtype(detail["dtype"])
    if not np.issubdtype(dtype, np.integer):
        return x.astype(dtype)
    scale, zero = detail["quantization"]
    if not scale:
        raise ValueError(f"integer input tensor {detail.get('name')!r} has no quantization scale")
    info = np.iinfo(dtype)
    q = np.rint(x / scale + zero)
    return np.clip(q, info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Tensor output -> float32, ``(q - zero_point) * scale`` when integer-quantized."""
    scale, zero = detail["quantization"]
    if np.issubdtype(np.dtype(detail["dtype"]), np.integer) and scale:
        return ((y.astype(np.float32) - zero) * scale).astype(np.float32)
    return y.astype(np.float32)


#: what the LiteRT runtime prints on every interpreter it makes (to the process's stderr,
#: from C++): noise on every CLI run with a LiteRT stand-in
_LITERT_NOISE = ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",)


@contextlib.contextmanager
def _quiet_litert() -> Iterator[None]:
    """Drop LiteRT's own INFO lines from file descriptor 2 while an interpreter is made;
    anything else it prints (a warning, an error) still reaches stderr."""
    fd = 2  # the C++ runtime writes to the descriptor, whatever sys.stderr is
    with tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()  # what Python buffered goes out before the descriptor moves
        saved = os.dup(fd)
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            kept = [ln for ln in tmp.read().decode(errors="replace").splitlines()
                    if ln.strip() and ln.strip() not in _LITERT_NOISE]
            if kept:  # the runtime's own output, passed on to the descriptor it wrote to
                os.write(fd, ("\n".join(kept) + "\n").encode())


class LiteRTModel(_FileModel):
    """A TFLite file run by LiteRT (``ai_edge_litert``) behind a declared preprocessing.

    Same arguments as :class:`DNNModel` (layout defaults to ``"nhwc"``, TFLite's own);
    output: output tensor name (None: the first output), or the name of any tensor of the
    graph (an inner feature map read as an embedding; the interpreter then keeps every
    intermediate tensor). Integer-quantized input/output tensors are (de)quantized with
    their ``(scale, zero_point)``. batch=True resizes the input tensor to the batch (checked
    equal to one-by-one results in the tests).
    """

    def __init__(self, path: str | os.PathLike[str], *, input_size: tuple[int, int],
                 color: Color = "rgb", mean: float | tuple[float, ...] = 0.0,
                 scale: float = 1.0, layout: Layout = "nhwc", output: str | None = None,
                 postprocess: PostProcess = "none", batch: bool = True,
                 resize: Resize = "resize", fill: float = 1.0, max_batch: int = 64,
                 name: str | None = None, labels: tuple[str, ...] | None = None,
                 num_threads: int | None = None) -> None:
        pre = Preprocess(input_size, color, mean, scale, layout, resize, fill)
        super().__init__(path, pre, postprocess, batch, max_batch, name, labels)
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise ImportError(
                f"{self.name} needs the LiteRT runtime (package ai-edge-litert): {LITERT_PIP}"
            ) from exc
        with _quiet_litert():
            self._interp = Interpreter(model_path=self.path, num_threads=num_threads)
            self._interp.allocate_tensors()
        outs = self._interp.get_output_details()
        if output is None:
            self._out = outs[0]
        else:
            match = [d for d in outs if d["name"] == output]
            if not match:  # an inner tensor: only readable if the interpreter keeps them all
                inner = [d for d in self._interp.get_tensor_details() if d["name"] == output]
                if not inner:
                    raise ValueError(f"{self.name}: no output or tensor {output!r}; outputs "
                                     f"are {[d['name'] for d in outs]}")
                with warnings.catch_warnings(), _quiet_litert():  # "for debugging": memory
                    warnings.simplefilter("ignore", UserWarning)
                    self._interp = Interpreter(model_path=self.path, num_threads=num_threads,
                                               experimental_preserve_all_tensors=True)
                    self._interp.allocate_tensors()
                match = inner
            self._out = match[0]
        self._interp.allocate_tensors()
        self._in = self._interp.get_input_details()[0]
        self.output = self._out["name"]
        shape = tuple(int(s) for s in self._in["shape"])
        want = (*pre.input_size, pre.channels) if layout == "nhwc" else (pre.channels,
                                                                          *pre.input_size)
        if shape[1:] != want:
            raise ValueError(f"{self.name}: the file expects input {shape}, the declared "
                             f"preprocessing gives (N, {', '.join(map(str, want))})")
        self._batch_size = shape[0]

    def _forward(self, blob: np.ndarray) -> np.ndarray:
        n = blob.shape[0]
        if n != self._batch_size:
            self._interp.resize_tensor_input(self._in["index"], [n, *blob.shape[1:]])
            self._interp.allocate_tensors()
            self._batch_size = n
        self._interp.set_tensor(self._in["index"], _quantize(blob, self._in))
        self._interp.invoke()
        return _dequantize(self._interp.get_tensor(self._out["index"]), self._out)
