"""Golden results: exact outputs of each tuner on fixed seeds, pinned before code moves.

``python tests/golden.py`` prints the current figures; ``--write`` stores them in
``tests/golden.json``. ``tests/test_golden.py`` checks that every tuner still gives them
bit for bit: the SHA-256 of the perturbation's bytes, ``queries_``, the number of steps
and the SHA-256 of the history. A change that is meant to alter a result (a bug fix)
rewrites the file in the same commit and says so in the CHANGELOG with old and new figures.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "golden.json")
if HERE not in sys.path:
    sys.path.insert(0, HERE)


def _digest(array: np.ndarray) -> str:
    a = np.ascontiguousarray(array)
    return hashlib.sha256(repr((a.dtype.str, a.shape)).encode() + a.tobytes()).hexdigest()


def _history_digest(history: list[dict[str, Any]]) -> str:
    text = json.dumps(history, sort_keys=True, allow_nan=True)  # floats as repr: exact
    return hashlib.sha256(text.encode()).hexdigest()


def summary(tuner: Any, delta: np.ndarray) -> dict[str, Any]:
    """What is pinned of one fitted tuner."""
    return {"delta_sha256": _digest(delta), "delta_abs_sum": round(float(np.abs(delta).sum()), 3),
            "queries": int(tuner.queries_), "steps": len(tuner.history_),
            "history_sha256": _history_digest(tuner.history_)}


#: DataFineTuner's defaults of issue 14 (before issue 16), spelled out: the cases pinned with
#: them before the defaults changed keep their digests
ISSUE14 = {"batch_size": 16, "learning_rate": 0.5, "lr_schedule": "constant",
           "validation_every": 10, "sampling": "uniform"}


def _classification_synthetic(**kw: Any) -> Callable[[], dict[str, Any]]:
    def run() -> dict[str, Any]:
        from blackbox_dft import DataFineTuner
        from blackbox_dft.testing import make_problem

        p = make_problem(seed=0)
        t = DataFineTuner(p.model, task="multiclass", scores="logits", query_budget=3_000,
                          seed=0, progress=False, **kw).fit(*p.train, validation=p.val)
        return summary(t, t.delta_)
    return run


def _classification_shared_sgd() -> dict[str, Any]:
    from blackbox_dft import SPSA, DataFineTuner, LowResolution
    from blackbox_dft.testing import make_problem

    p = make_problem(seed=1)
    t = DataFineTuner(p.model, task="multiclass", scores="logits", epsilon=6,
                      perturbation=LowResolution((8, 8)),
                      estimator=SPSA(directions=2, step=2.0), optimizer="sgd",
                      learning_rate=2.0, batch_size=24, query_budget=2_500, seed=4,
                      lr_schedule="constant", validation_every=10, sampling="uniform",
                      progress=False).fit(*p.train, validation=p.val)
    return summary(t, t.delta_)


def _classification_face(**kw: Any) -> Callable[[], dict[str, Any]]:
    def run() -> dict[str, Any]:
        from blackbox_dft import DataFineTuner
        from blackbox_dft.adapters import load_task

        task = load_task("face", shift="blur:sigma=1")
        t = DataFineTuner(task.model, task="binary", query_budget=2_000, seed=0,
                          progress=False, **kw).fit(*task.train, validation=task.val)
        return summary(t, t.delta_)
    return run


def _verification() -> dict[str, Any]:
    from test_verification import _linear_embedding_problem

    from blackbox_dft.tasks.verification import VerificationTuner

    model, train, val, _ = _linear_embedding_problem()
    t = VerificationTuner(model, query_budget=3_000, seed=1).fit(*train, validation=val)
    return summary(t, t.delta_)


def _attributes(mode: str) -> Callable[[], dict[str, Any]]:
    def run() -> dict[str, Any]:
        from test_multiattr import _multilabel_problem

        from blackbox_dft.tasks.attributes import MultiAttributeTuner

        model, train, val, _ = _multilabel_problem()
        t = MultiAttributeTuner(model, ["a0", "a1", "a2"], mode=mode, query_budget=4_000,
                                seed=1).fit(*train, validation=val)
        return summary(t, t.deltas_)
    return run


CASES: dict[str, Callable[[], dict[str, Any]]] = {
    "classification_synthetic_default": _classification_synthetic(),
    "classification_synthetic_issue14": _classification_synthetic(**ISSUE14),
    "classification_synthetic_shared_sgd": _classification_shared_sgd,
    "classification_face_blazeface": _classification_face(),
    "classification_face_blazeface_issue14": _classification_face(**ISSUE14),
    "verification_linear_embedding": _verification,
    "attributes_per_attribute": _attributes("per_attribute"),
    "attributes_shared": _attributes("shared"),
}


def main(argv: list[str]) -> int:
    results = {name: run() for name, run in CASES.items()}
    print(json.dumps(results, indent=2, sort_keys=True))
    if "--write" in argv:
        with open(GOLDEN, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=2, sort_keys=True)
            fh.write("\n")
        print(f"wrote {GOLDEN}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
