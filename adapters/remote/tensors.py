"""Images to a model's input tensor and back: the preprocessing of raw-tensor models.

Most models behind Triton, KServe or MLServer take a float tensor of a fixed size, not image
files: ``(pixel * scale - mean) / std`` of RGB (or BGR) pixels, NCHW, FP32. A
:class:`TensorSpec` says which; it turns uint8 RGB images ``(N, h, w, 3)`` into that tensor
(resized or letterboxed with OpenCV), and, for the stand-in server, a tensor back into uint8
images. :class:`Preprocessing` holds what the user said (anything left out is read from the
server's metadata, see :mod:`blackbox_dft.adapters.remote.oip`); its errors are one line that
names the value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

__all__ = ["DATATYPES", "IMAGENET_MEAN", "IMAGENET_STD", "TensorSpec", "Preprocessing"]

#: tensor datatypes of images, with their numpy types (BYTES: one encoded image file each)
DATATYPES: dict[str, Any] = {"UINT8": np.uint8, "FP32": np.float32, "FP16": np.float16,
                             "BYTES": np.object_}
#: torchvision's ImageNet normalisation, RGB, on pixels scaled to [0, 1]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
Triple = tuple[float, float, float]


@dataclass(frozen=True)
class TensorSpec:
    """One input tensor of images.

    datatype: UINT8, FP32, FP16 or BYTES (encoded files; the other fields but size unused).
    layout: NHWC or NCHW. size: (H, W) the images are brought to (None: their own size), by
    ``fit``: "resize" (stretch) or "letterbox" (keep the aspect ratio, pad with black).
    scale, mean, std: the tensor is ``(pixel * scale - mean) / std`` per channel, in the
    model's channel order ``channels`` (RGB or BGR). batched: the tensor has a batch axis
    (a model without one takes one image per request).
    """

    datatype: str = "UINT8"
    layout: str = "NHWC"
    size: tuple[int, int] | None = None
    fit: str = "resize"
    scale: float = 1.0
    mean: Triple = (0.0, 0.0, 0.0)
    std: Triple = (1.0, 1.0, 1.0)
    channels: str = "RGB"
    batched: bool = True

    @property
    def is_float(self) -> bool:
        return self.datatype in ("FP32", "FP16")

    def shape(self, n: int = -1) -> list[int]:
        """The tensor's shape for ``n`` images (-1: any number; -1 too for a free H or W)."""
        if self.datatype == "BYTES":
            return [n] if self.batched else [1]
        h, w = self.size if self.size is not None else (-1, -1)
        dims = [3, h, w] if self.layout == "NCHW" else [h, w, 3]
        return [n, *dims] if self.batched else dims

    def resized(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``(N, H, W, 3)``: ``images`` brought to ``size`` (unchanged if None)."""
        if self.size is None or images.shape[1:3] == self.size:
            return images
        return np.stack([_fit_one(im, self.size, self.fit) for im in images])

    def to_tensor(self, images: np.ndarray) -> np.ndarray:
        """The input tensor of uint8 RGB ``images`` ``(N, h, w, 3)`` (not BYTES)."""
        x = self.resized(images)
        if self.channels == "BGR":
            x = x[..., ::-1]
        if self.is_float:  # float32 arithmetic whatever the wire type: FP16 is cast last
            x = (x.astype(np.float32) * np.float32(self.scale)
                 - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        x = np.ascontiguousarray(x, dtype=DATATYPES[self.datatype])
        return x if self.batched else x[0]

    def from_tensor(self, tensor: np.ndarray) -> np.ndarray:
        """uint8 RGB images ``(N, H, W, 3)`` back from a tensor of this spec (the stand-in
        server's side: exact for the tensors :meth:`to_tensor` makes, FP16 included)."""
        x = np.asarray(tensor)
        if not self.batched:
            x = x[None]
        want = self.shape(len(x))
        if x.ndim != 4 or any(w not in (-1, g) for w, g in zip(want, x.shape, strict=True)):
            raise ValueError(f"input shape {list(x.shape)} does not fit the model's "
                             f"{self.shape()} ({self.layout})")
        if self.layout == "NCHW":
            x = x.transpose(0, 2, 3, 1)
        if self.is_float:
            x = ((x.astype(np.float64) * np.asarray(self.std) + np.asarray(self.mean))
                 / self.scale)
            x = np.clip(np.rint(x), 0, 255)
        x = x.astype(np.uint8)
        if self.channels == "BGR":
            x = x[..., ::-1]
        return np.ascontiguousarray(x)


def _fit_one(image: np.ndarray, size: tuple[int, int], fit: str) -> np.ndarray:
    """One uint8 image ``(h, w, 3)`` brought to ``size`` (H, W) with OpenCV: area
    interpolation when shrinking (no aliasing), bilinear when enlarging."""
    (h, w), (H, W) = image.shape[:2], size
    if fit == "resize":
        inter = cv2.INTER_AREA if H * W < h * w else cv2.INTER_LINEAR
        return cv2.resize(image, (W, H), interpolation=inter)
    s = min(H / h, W / w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    inter = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    inner = cv2.resize(image, (nw, nh), interpolation=inter)
    top, left = (H - nh) // 2, (W - nw) // 2
    return cv2.copyMakeBorder(inner, top, H - nh - top, left, W - nw - left,
                              cv2.BORDER_CONSTANT, value=(0, 0, 0))


def _choice(name: str, value: Any, options: Sequence[str]) -> str | None:
    if value is None:
        return None
    text = str(value).upper() if name != "fit" else str(value).lower()
    if not isinstance(value, str) or text not in options:
        raise ValueError(f"{name} must be one of {list(options)}, got {value!r}")
    return text


def _size(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    pair = [value, value] if isinstance(value, (int, np.integer)) else value
    ok = (isinstance(pair, (list, tuple)) and len(pair) == 2
          and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0
                  for v in pair))
    if not ok:
        raise ValueError(f"size must be a positive int or [height, width], got {value!r}")
    return int(pair[0]), int(pair[1])


def _triple(name: str, value: Any, positive: bool) -> Triple | str | None:
    if value is None:
        return None
    if isinstance(value, str) and value.lower() == "imagenet":
        return "imagenet"
    if isinstance(value, np.ndarray):
        value = value.tolist()
    vals = [value] * 3 if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else value
    ok = (isinstance(vals, (list, tuple)) and len(vals) == 3
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                  and (v > 0 or not positive) for v in vals))
    if not ok:
        what = "positive numbers" if positive else "numbers"
        raise ValueError(f"{name} must be a number, 3 {what} (one per channel, in the model's "
                         f"channel order) or 'imagenet', got {value!r}")
    return float(vals[0]), float(vals[1]), float(vals[2])


class Preprocessing:
    """What the user said about the input tensor; None: read it from the server or default.

    datatype: UINT8 | FP32 | FP16 | BYTES; layout: NHWC | NCHW; size: int or (H, W);
    fit: resize | letterbox; scale (default 1/255 for a float tensor); mean, std: a number,
    3 numbers in the model's channel order, or "imagenet" (torchvision's, on pixels scaled
    to [0, 1]); channels: RGB | BGR. A value that cannot be used raises a one-line ValueError.
    """

    def __init__(self, *, datatype: str | None = None, layout: str | None = None,
                 size: Any = None, fit: str = "resize", scale: float | None = None,
                 mean: Any = None, std: Any = None, channels: str = "RGB") -> None:
        self.datatype = _choice("datatype", datatype, tuple(DATATYPES))
        self.layout = _choice("layout", layout, ("NHWC", "NCHW"))
        self.size = _size(size)
        self.fit = _choice("fit", fit, ("resize", "letterbox")) or "resize"
        self.channels = _choice("channels", channels, ("RGB", "BGR")) or "RGB"
        if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))
                                  or not 0 < scale < math.inf):
            raise ValueError(f"scale must be a number > 0 (1/255 maps pixels to [0, 1]), "
                             f"got {scale!r}")
        self.scale = None if scale is None else float(scale)
        self.mean = _triple("mean", mean, positive=False)
        self.std = _triple("std", std, positive=True)

    @property
    def normalises(self) -> bool:
        """Whether scale, mean or std was given (they need a float tensor)."""
        return self.scale is not None or self.mean is not None or self.std is not None

    def spec(self, datatype: str, layout: str, size: tuple[int, int] | None,
             batched: bool = True) -> TensorSpec:
        """The tensor spec with ``datatype``, ``layout``, ``size`` decided (given or read
        from the server); raises a one-line ValueError for a combination that cannot work."""
        if datatype in ("UINT8", "BYTES") and self.normalises:
            given = {k: v for k, v in (("scale", self.scale), ("mean", self.mean),
                                       ("std", self.std)) if v is not None}
            raise ValueError(f"{given} needs a float tensor, but the input is {datatype}: "
                             "pass datatype='FP32' (or 'FP16'), or drop scale/mean/std")
        if datatype == "BYTES" and (self.layout is not None or self.channels != "RGB"):
            raise ValueError(f"layout={self.layout!r} / channels={self.channels!r} apply to "
                             "tensors of pixels, not to BYTES (encoded image files): drop them")
        if self.fit == "letterbox" and size is None:
            raise ValueError("fit='letterbox' needs a size: pass size=[height, width] (the "
                             "model's input size is not fixed in its metadata)")
        imagenet = "imagenet" in (self.mean, self.std)
        mean = IMAGENET_MEAN if self.mean == "imagenet" or (self.mean is None and imagenet) \
            else self.mean or (0.0, 0.0, 0.0)
        std = IMAGENET_STD if self.std == "imagenet" or (self.std is None and imagenet) \
            else self.std or (1.0, 1.0, 1.0)
        if self.channels == "BGR" and imagenet:  # ImageNet's values are listed RGB
            mean, std = mean[::-1], std[::-1]
        is_float = datatype in ("FP32", "FP16")
        scale = self.scale if self.scale is not None else (1 / 255 if is_float else 1.0)
        return TensorSpec(datatype=datatype, layout=layout, size=size, fit=self.fit,
                          scale=scale, mean=tuple(mean),  # type: ignore[arg-type]
                          std=tuple(std), channels=self.channels,  # type: ignore[arg-type]
                          batched=batched)

    def __repr__(self) -> str:
        given = {k: v for k, v in vars(self).items()
                 if v is not None and (k, v) not in (("fit", "resize"), ("channels", "RGB"))}
        return "Preprocessing(" + ", ".join(f"{k}={v!r}" for k, v in given.items()) + ")"
