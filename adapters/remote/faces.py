"""The shared base of face-detection presets: which attributes, and what a face-less image gets.

A face preset maps the vendor's answer for one image to a fixed-length vector of floats in
``[0, 1]`` (``outputs`` chooses which attributes and in what order). An image in which the
vendor finds no face gets ``no_face`` for every output (default 0.0: "not smiling"), and is
counted in ``no_face_count`` (``HTTPModel.stats["no_face"]``). Subclasses name their
``choices`` and read one face in ``_face_row``; the vendors are in
:mod:`blackbox_dft.adapters.remote.facepp` and :mod:`blackbox_dft.adapters.remote.vendors`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from blackbox_dft.adapters.errors import ResponseFormatError
from blackbox_dft.adapters.remote.presets import Preset

__all__ = ["FacePreset"]


class FacePreset(Preset):
    """Shared parts: ``outputs`` (attribute names) and the no-face fill value."""

    choices: tuple[str, ...] = ()

    def __init__(self, *, outputs: Sequence[str] | None = None, no_face: float = 0.0,
                 **kw: Any) -> None:
        super().__init__(**kw)
        outs = list(outputs) if outputs is not None else [self.choices[0]]
        bad = [o for o in outs if o not in self.choices]
        if bad or not outs:
            raise ValueError(f"outputs {bad or outs} not supported by {self.name}; "
                             f"choose from {self.choices}")
        self.outputs = outs
        self.no_face = float(no_face)
        self.no_face_count = 0
        self._lock = threading.Lock()

    def _face_row(self, face: Any, i: int) -> list[float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _rows(self, faces_per_image: list[Any], n: int) -> np.ndarray:
        """Scores ``(n, len(outputs))`` from the faces found in each of the ``n`` images
        (the first face of an image counts; an image without one gets ``no_face``)."""
        if len(faces_per_image) != n:
            raise ResponseFormatError(
                f"the answer covers {len(faces_per_image)} images, {n} were sent")
        rows = []
        for i, faces in enumerate(faces_per_image):
            if not faces:
                with self._lock:
                    self.no_face_count += 1
                rows.append([self.no_face] * len(self.outputs))
                continue
            try:
                rows.append(self._face_row(faces[0], i))
            except (KeyError, TypeError, ValueError) as exc:
                raise ResponseFormatError(f"image {i}: face has no {exc} in the answer") from None
        return np.asarray(rows, dtype=np.float64)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(outputs={self.outputs}, no_face={self.no_face})"
