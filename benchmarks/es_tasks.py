"""The four fits of the early-stopping benchmark, each as ``fit(seed, budget, stopping)``.

Issue 16 measures early stopping on the stand-in tasks (face, smiling: DataFineTuner), the
per-attribute fit (MultiAttributeTuner, one perturbation per attribute, three stand-ins
behind one call) and verification (VerificationTuner, the emotion-embedding stand-in at the
vendor's fixed threshold), each with the library defaults. A fit returns the queries it
used and saved, whether it stopped, and the held-out accuracy before and after (for the
attributes: the mean over the three attributes).

The attribute and verification problems are built as ``beyond_scores.py`` builds them (the
same data, splits, shift and vendor threshold).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np
from common import load_task, task_kind

from blackbox_dft import DataFineTuner, FullResolution
from blackbox_dft.adapters.local.wrappers import MultiModel
from blackbox_dft.adapters.standins.models import blazeface, emotion_embedding, gender, smiling
from blackbox_dft.adapters.standins.tasks import lfw_subset, smiling_labels, stratified_split
from blackbox_dft.adapters.standins.verification_task import verification_task
from blackbox_dft.core.stopping import EarlyStopping
from blackbox_dft.data.shifts import parse_shift
from blackbox_dft.tasks.attributes import MultiAttributeTuner
from blackbox_dft.tasks.verification import (
    VerificationTuner,
    best_threshold,
    cosine_similarities,
)

__all__ = ["FITS", "Fit"]

#: fit(seed, budget, early stopping or None) -> its figures
Fit = Callable[[int, int, EarlyStopping | None], dict[str, Any]]
ATTRIBUTES = ("face", "smiling", "male")


def _figures(tuner: Any, before: float, after: float) -> dict[str, Any]:
    return {"queries": int(tuner.queries_), "stopped": bool(tuner.stopped_early_),
            "saved": int(tuner.queries_saved_by_stopping_), "before": float(before),
            "after": float(after)}


def _classification(name: str) -> Fit:
    def fit(seed: int, budget: int, es: EarlyStopping | None) -> dict[str, Any]:
        task = load_task(name)
        tuner = DataFineTuner(task.model, task_kind(task),
                              scores=getattr(task, "scores", "probabilities"),
                              query_budget=budget, early_stopping=es, seed=seed,
                              progress=False)
        ev = tuner.fit(*task.train, validation=task.val).evaluate(*task.test)
        return _figures(tuner, ev["accuracy_before"], ev["accuracy_after"])
    return fit


@cache
def _attributes_problem() -> tuple[Any, ...]:
    model = MultiModel([("face", blazeface(), 1), ("smiling", smiling(), 1),
                        ("male", gender(), 1)], name="face+smiling+male")
    clean = lfw_subset()
    face = np.r_[np.ones(100, np.int64), np.zeros(100, np.int64)]
    smile = np.r_[smiling_labels(), np.zeros(100, np.int64)]
    male = (model.heads[2][1].predict(clean)[:, 1] >= 0.5).astype(np.int64)  # pseudo-labels
    y = np.stack([face, smile, male], axis=1)
    x = parse_shift("blur:sigma=1")(clean, np.random.default_rng([0, 1]))
    tr, va, te = stratified_split(face * 2 + smile, (100, 40, 60), seed=0)
    return model, (x[tr], y[tr]), (x[va], y[va]), (x[te], y[te])


def _attributes(seed: int, budget: int, es: EarlyStopping | None) -> dict[str, Any]:
    model, train, val, test = _attributes_problem()
    tuner = MultiAttributeTuner(model, list(ATTRIBUTES), mode="per_attribute",
                                query_budget=budget, early_stopping=es, seed=seed)
    ev = tuner.fit(*train, validation=val).evaluate(*test)
    per = ev["per_attribute"]
    return _figures(tuner, np.mean([per[a]["accuracy_before"] for a in ATTRIBUTES]),
                    np.mean([per[a]["accuracy_after"] for a in ATTRIBUTES]))


def _verification(seed: int, budget: int, es: EarlyStopping | None) -> dict[str, Any]:
    model = emotion_embedding()
    task = verification_task(shift="blur:sigma=1", seed=seed, model=model)
    clean = verification_task(shift=None, seed=seed, model=model)
    xc, pc = clean.train  # the vendor's threshold: the best one on clean training pairs
    vendor = best_threshold(cosine_similarities(model.predict(xc), pc), pc[:, 2])
    tuner = VerificationTuner(model, query_budget=budget, seed=seed, threshold=vendor,
                              perturbation=FullResolution(), early_stopping=es)
    ev = tuner.fit(*task.train, validation=task.val).evaluate(*task.test)
    return _figures(tuner, ev["accuracy_before"], ev["accuracy_after"])


FITS: dict[str, Fit] = {
    "face": _classification("face"),
    "smiling": _classification("smiling"),
    "attributes": _attributes,
    "verification": _verification,
    "synthetic": _classification("synthetic"),
}
