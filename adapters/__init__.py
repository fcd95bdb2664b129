"""Adapters: things that implement the Model protocol ``predict(images) -> scores``.

Adapters import ``blackbox_dft``; ``blackbox_dft`` never imports adapters
(the CLI is the one place that knows both). Importing this package loads no
model file and no optional runtime.
"""

from blackbox_dft.adapters.base import BaseModel, CallableModel, CallablePairModel
from blackbox_dft.adapters.errors import (
    AuthenticationError,
    EndpointUnreachable,
    HTTPModelError,
    HTTPStatusError,
    ResponseFormatError,
    ThrottledError,
)
from blackbox_dft.adapters.local.dnn import DNNModel, LiteRTModel, Preprocess
from blackbox_dft.adapters.remote.http import HTTPModel, safe_url
from blackbox_dft.adapters.remote.rekognition import RekognitionCompareModel, RekognitionModel
from blackbox_dft.adapters.remote.vendors import PRESETS, make_preset
from blackbox_dft.adapters.serving.server import Faults, StandInServer, serve_main
from blackbox_dft.adapters.standins.models import (
    EMOTION_LABELS,
    STANDINS,
    blazeface,
    emotion,
    gender,
    load_standin,
    smiling,
)
from blackbox_dft.adapters.standins.tasks import TASKS, Task, face_task, load_task, smiling_task

__all__ = [
    "BaseModel", "CallableModel", "CallablePairModel",
    "DNNModel", "LiteRTModel", "Preprocess",
    "STANDINS", "EMOTION_LABELS", "load_standin", "blazeface", "gender", "emotion", "smiling",
    "Task", "TASKS", "load_task", "face_task", "smiling_task",
    "HTTPModel", "safe_url", "PRESETS", "make_preset", "RekognitionModel",
    "RekognitionCompareModel",
    "StandInServer", "Faults", "serve_main",
    "HTTPModelError", "EndpointUnreachable", "HTTPStatusError", "AuthenticationError",
    "ThrottledError", "ResponseFormatError",
]
