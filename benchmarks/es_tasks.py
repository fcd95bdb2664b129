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

import argparse
import copy
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
from blackbox_dft.core.state import FitState
from blackbox_dft.core.stopping import EarlyStopping
from blackbox_dft.data.shifts import parse_shift
from blackbox_dft.tasks.attributes import MultiAttributeTuner
from blackbox_dft.tasks.verification import (
    VerificationTuner,
    best_threshold,
    cosine_similarities,
)

__all__ = ["BUILDERS", "FITS", "Fit", "TASK_NAMES", "add_arguments", "patience_table", "settings",
           "trace"]

#: fit(seed, budget, early stopping or None) -> its figures
Fit = Callable[[int, int, EarlyStopping | None], dict[str, Any]]
ATTRIBUTES = ("face", "smiling", "male")


Built = tuple[Any, tuple[Any, Any], tuple[Any, Any], tuple[Any, Any],
              Callable[[dict[str, Any]], tuple[float, float]]]


def _figures(tuner: Any, before: float, after: float) -> dict[str, Any]:
    return {"queries": int(tuner.queries_), "stopped": bool(tuner.stopped_early_),
            "saved": int(tuner.queries_saved_by_stopping_), "before": float(before),
            "after": float(after)}


def _single(ev: dict[str, Any]) -> tuple[float, float]:
    return float(ev["accuracy_before"]), float(ev["accuracy_after"])


def _classification(name: str) -> Callable[[int, int, EarlyStopping | None], Built]:
    def build(seed: int, budget: int, es: EarlyStopping | None) -> Built:
        task = load_task(name)
        tuner = DataFineTuner(task.model, task_kind(task),
                              scores=getattr(task, "scores", "probabilities"),
                              query_budget=budget, early_stopping=es, seed=seed,
                              progress=False)
        return tuner, task.train, task.val, task.test, _single
    return build


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


def _attribute_means(ev: dict[str, Any]) -> tuple[float, float]:
    per = ev["per_attribute"]
    return (float(np.mean([per[a]["accuracy_before"] for a in ATTRIBUTES])),
            float(np.mean([per[a]["accuracy_after"] for a in ATTRIBUTES])))


def _attributes(seed: int, budget: int, es: EarlyStopping | None) -> Built:
    model, train, val, test = _attributes_problem()
    tuner = MultiAttributeTuner(model, list(ATTRIBUTES), mode="per_attribute",
                                query_budget=budget, early_stopping=es, seed=seed)
    return tuner, train, val, test, _attribute_means


def _verification(seed: int, budget: int, es: EarlyStopping | None) -> Built:
    model = emotion_embedding()
    task = verification_task(shift="blur:sigma=1", seed=seed, model=model)
    clean = verification_task(shift=None, seed=seed, model=model)
    xc, pc = clean.train  # the vendor's threshold: the best one on clean training pairs
    vendor = best_threshold(cosine_similarities(model.predict(xc), pc), pc[:, 2])
    tuner = VerificationTuner(model, query_budget=budget, seed=seed, threshold=vendor,
                              perturbation=FullResolution(), early_stopping=es)
    return tuner, task.train, task.val, task.test, _single


BUILDERS: dict[str, Callable[[int, int, EarlyStopping | None], Built]] = {
    "face": _classification("face"),
    "smiling": _classification("smiling"),
    "attributes": _attributes,
    "verification": _verification,
    "synthetic": _classification("synthetic"),
}


def _fit(name: str) -> Fit:
    def fit(seed: int, budget: int, es: EarlyStopping | None) -> dict[str, Any]:
        tuner, train, val, test, score = BUILDERS[name](seed, budget, es)
        before, after = score(tuner.fit(*train, validation=val).evaluate(*test))
        return _figures(tuner, before, after)
    return fit


FITS: dict[str, Fit] = {name: _fit(name) for name in BUILDERS}


def _best_steps(state: FitState) -> list[int]:
    """The step each slot's kept latent comes from (one slot: ``[best_step]``)."""
    steps = state.extra.get("best_step")
    return [int(s) for s in steps] if isinstance(steps, list) else [int(state.best_step)]


def trace(name: str, seed: int, budget: int) -> dict[str, Any]:
    """A whole-budget fit seen at every validation, for replaying stopping rules offline.

    Returns ``validations``: per validation (the baseline first), the queries spent after
    it, the best step of every slot then, and the held-out accuracy of the latent kept
    then (``evaluate`` on the test split: free, local); ``steps``: the queries after each
    step and its training loss (the mean of its minibatch's answers, already paid for; the
    mean over attributes for the per-attribute fit; None when a step reports none).
    A fit stopped by a rule after validation ``i`` returns validation ``i``'s kept latent
    (the engine stops right after a validation), so its held-out accuracy is read here.
    """
    tuner, train, val, test, score = BUILDERS[name](seed, budget, None)
    kept: list[tuple[int, list[int], FitState]] = []
    steps: list[tuple[int, float | None]] = []

    def snapshot(state: FitState, queries: int) -> None:
        best = _best_steps(state)
        if kept and kept[-1][1] == best:  # nothing new kept: the same latent
            kept.append((queries, best, kept[-1][2]))
            return
        snap = copy.copy(state)
        snap.best_z = None if state.best_z is None else state.best_z.copy()
        snap.extra = copy.deepcopy(state.extra)
        snap.history = list(state.history)
        kept.append((queries, best, snap))

    def callback(record: dict[str, Any], state: FitState) -> bool:
        validated = any(k.startswith("val_accuracy") for k in record)
        losses = [float(v) for k, v in record.items() if k == "loss" or k.startswith("loss/")]
        steps.append((int(record["queries"]), float(np.mean(losses)) if losses else None))
        if len(steps) == 1:  # the baseline's kept latent (zero), its queries set below
            assert not validated, "the first step validated: the baseline is not separable"
            snapshot(state, -1)
        if len(steps) == 2:  # the baseline's queries: before the first step's
            assert not validated, "the second step validated: the step cost is unknown"
            kept[0] = (2 * steps[0][0] - steps[1][0], *kept[0][1:])
        if validated:
            snapshot(state, int(record["queries"]))
        return False

    tuner.fit(*train, validation=val, callback=callback)
    before, after = score(tuner.evaluate(*test))
    queries = int(tuner.queries_)  # before the snapshots below overwrite the fitted fields
    accuracy: dict[int, float] = {}
    rows = []
    for at, best, snap in kept:
        if id(snap) not in accuracy:
            tuner._set_fitted(snap, None)
            accuracy[id(snap)] = score(tuner.evaluate(*test))[1]
        rows.append({"queries": at, "best_steps": best, "accuracy": accuracy[id(snap)]})
    return {"task": name, "seed": seed, "budget": budget, "before": before, "after": after,
            "queries": queries, "validations": rows, "steps": steps}


#: the four fits issue 16 measures early stopping on (the default of both scripts)
TASK_NAMES = ("face", "smiling", "attributes", "verification")


def add_arguments(ap: argparse.ArgumentParser, name: str, shares: tuple[float, ...],
                  shares_help: str) -> None:
    """The arguments early_stopping.py and stopping_rules.py share: budget, seeds, tasks,
    shares (patiences as shares of the budget), workers and the results ``name``."""
    ap.add_argument("--budget", type=int, default=None, help="query budget (default 30000)")
    ap.add_argument("--seeds", default=None, help="comma list (default 100-104)")
    ap.add_argument("--tasks", default=None, help="comma list of " + ", ".join(BUILDERS)
                    + " (default: " + ",".join(TASK_NAMES) + ")")
    ap.add_argument("--shares", default=None, help=shares_help + ", a comma list (default "
                    + ",".join(f"{s:g}" for s in shares) + ")")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--name", default=name, help=f"results file name (default {name})")


def settings(ap: argparse.ArgumentParser, args: argparse.Namespace,
             shares: tuple[float, ...]) -> tuple[list[str], int, list[int], tuple[float, ...]]:
    """The tasks, budget, seeds and shares :func:`add_arguments`' flags ask for (``--quick``:
    the synthetic task, 2,000 queries, seed 0); a bad name or task is an argparse error."""
    if not args.name.replace("_", "").replace("-", "").isalnum():
        ap.error(f"--name takes letters, digits, '_' and '-', got {args.name!r}")
    tasks = (args.tasks or ("synthetic" if args.quick else ",".join(TASK_NAMES))).split(",")
    bad = [t for t in tasks if t not in BUILDERS]
    if bad:
        ap.error(f"unknown task {bad[0]!r}; choose from {', '.join(BUILDERS)}")
    budget = args.budget or (2000 if args.quick else 30_000)
    seeds = [int(s) for s in (args.seeds or ("0" if args.quick else "100,101,102,103,104")
                              ).split(",")]
    chosen = tuple(float(s) for s in args.shares.split(",")) if args.shares else shares
    return tasks, budget, seeds, chosen


def patience_table(res: dict[str, Any]) -> list[str]:
    """Markdown rows per task and patience of a results document (``summary``,
    ``patiences``, ``seeds``): fits stopped, budget saved, accuracy lost (mean, worst)."""
    n = len(res["seeds"])
    lines = ["| task | accuracy (whole budget) | patience (queries) | fits stopped "
             "| budget saved (mean) | accuracy lost (mean) | accuracy lost (worst seed) |",
             "|---|---|---|---|---|---|---|"]
    for task, s in res["summary"].items():
        for label, p in res["patiences"].items():
            e = s[label]
            lines.append(f"| {task} | {s['before']:.3f} -> {s['after_full']:.3f} | {p} "
                         f"({label}) | {e['stopped']}/{n} | {e['saved_share_mean']:.1%} "
                         f"| {e['accuracy_lost_mean']:+.4f} | {e['accuracy_lost_max']:+.4f} |")
    return lines
