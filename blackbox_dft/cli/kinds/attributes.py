"""The per-attribute run kind: ``fit --attribute-mode per_attribute`` on multilabel data fits a
:class:`MultiAttributeTuner` (one perturbation per attribute, the attributes' candidates sent
together in one call) into ``deltas.npz``; no figure; ``apply`` refuses it (it holds one
perturbation per attribute)."""

from __future__ import annotations

from typing import Any

import numpy as np

from blackbox_dft.adapters.spec_secrets import model_label
from blackbox_dft.cli.config import ConfigError
from blackbox_dft.cli.jobs import (
    base_name,
    check_classifier,
    fit_budget,
    load_splits,
    open_model,
    print_split,
    xy,
)
from blackbox_dft.cli.kinds.base import Job, RunKind, StepCallback, Transformer
from blackbox_dft.cli.meter import Meter
from blackbox_dft.cli.options import FitOptions
from blackbox_dft.cli.runs import RunFolder
from blackbox_dft.cli.tuner_args import attribute_kwargs
from blackbox_dft.data.datasets import DataError, Dataset
from blackbox_dft.tasks.attributes import MultiAttributeTuner

__all__ = ["PerAttribute", "PER_ATTRIBUTE"]


def _saved(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` with the queries that sharing calls saved."""
    metrics["queries_saved"] = metrics["queries_separate"] - metrics["queries"]
    return metrics


def _attribute_line(name: str, row: dict[str, Any], what: str = "accuracy") -> str:
    return (f"{name}: {what} before {row['accuracy_before']:.3f}  after "
            f"{row['accuracy_after']:.3f}  (balanced {row['balanced_accuracy_before']:.3f} "
            f"-> {row['balanced_accuracy_after']:.3f})")


class PerAttribute(RunKind[MultiAttributeTuner]):
    """``fit --attribute-mode per_attribute``: see the module docstring."""

    name = "per_attribute"
    tuner_class = MultiAttributeTuner
    result_name = "deltas.npz"
    has_figure = False
    how = "fitted with --attribute-mode per_attribute"
    flag = "--attribute-mode per_attribute"
    unused = ("task", "label_map", "class_weight", "selection", "lr_schedule", "sampling",
              "far", "threshold")

    def build_job(self, opts: FitOptions) -> Job:
        self.check_options(opts)
        train, val, test = load_splits(opts)
        model, key = open_model(opts.model)
        check_classifier(model, opts.model.model)
        if not train.multilabel:
            raise ConfigError(
                f"--attribute-mode per_attribute needs multilabel data (a CSV with two or more "
                f"attribute columns, or a CelebA list); {opts.data.source} is single-label "
                f"({len(train.classes)} classes): use --attribute-mode shared or leave it out")
        n_test = len(test) if test is not None else 0
        budget = fit_budget(opts, self.eval_cost(n_test, len(train.classes)),
                            f"the {n_test} test images once clean and once per attribute")
        tuner = MultiAttributeTuner(model, **attribute_kwargs(opts, budget, train.classes))
        print_split(f"{train.describe()} for training",
                    {n: len(d) for n, d in (("train", train), ("val", val), ("test", test))
                     if d is not None})
        return Job(self, "fit", model, key, (train.images, train.labels), xy(val), xy(test),
                   list(train.classes), tuner.get_config(),
                   f"{model_label(model)} per attribute on {base_name(opts.data.source or '')}",
                   run=opts.run, cost_per_1000=opts.model.cost_per_1000)

    def eval_cost(self, n_test: int, n_outputs: int) -> int:
        return (1 + n_outputs) * n_test  # once clean, once per attribute's perturbation

    def fit(self, tuner: MultiAttributeTuner, job: Job, checkpoint: str,
            on_step: StepCallback) -> None:
        tuner.fit(job.train[0], job.train[1], validation=job.val, checkpoint=checkpoint,
                  checkpoint_every=job.run.checkpoint_every, resume=True)

    def test_results(self, tuner: MultiAttributeTuner, job: Job,
                     meter: Meter) -> dict[str, Any]:
        if not job.evaluates or job.test is None:
            return {"test": None}
        return {"test": _saved(tuner.evaluate(*job.test))}

    def report_fields(self, tuner: MultiAttributeTuner, job: Job) -> dict[str, Any]:
        names = job.classes
        baseline = getattr(tuner, "baseline_", None)
        return {"attributes": names,
                "fit": {"queries": tuner.queries_, "steps": tuner.n_steps_,
                        "queries_separate": tuner.queries_separate_,
                        "queries_saved": tuner.queries_saved_,
                        "best_step": dict(zip(names, tuner.best_step_, strict=True)),
                        "baseline": None if baseline is None else
                        dict(zip(names, baseline, strict=True))},
                "max_abs_delta": {a: float(np.abs(d).max())
                                  for a, d in zip(names, tuner.deltas_, strict=True)}}

    def evaluate(self, run: RunFolder, ds: Dataset, meter: Meter, where: str
                 ) -> tuple[dict[str, Any], list[str]]:
        tuner = MultiAttributeTuner.load(self.result_path(run), meter)
        if not ds.multilabel or list(ds.classes) != tuner.attributes_:
            raise DataError(f"run {run.path} was fitted on attributes "
                            f"{', '.join(tuner.attributes_)}; the data has "
                            f"{'attributes' if ds.multilabel else 'classes'} "
                            f"{', '.join(ds.classes)} (pass the same --attributes at fit time)")
        m = _saved(tuner.evaluate(ds.images, ds.labels))
        lines = [_attribute_line(n, row) for n, row in m["per_attribute"].items()]
        lines.append(f"mean accuracy before {m['accuracy_before']:.3f}  after "
                     f"{m['accuracy_after']:.3f} ({m['n_images']} images); {m['queries']} "
                     f"queries instead of {m['queries_separate']}")
        return m, lines

    def transformer(self, run: RunFolder) -> Transformer:
        raise self.refusal("apply", run, f"it holds one perturbation per attribute "
                           f"({self.result_path(run)}), and apply writes images with one")

    def summary(self, report: dict[str, Any]) -> list[str]:
        m, fit, spend = report.get("test"), report["fit"], report["spend"]
        lines = []
        if m:
            lines += [_attribute_line(n, row, "test accuracy")
                      for n, row in m["per_attribute"].items()]
            lines.append(f"test evaluation: {m['queries']} queries instead of "
                         f"{m['queries_separate']} ({m['queries_saved']} saved by sharing "
                         "calls)")
        return lines + [
            f"queries used: {fit['queries']} by the fit ({fit['steps']} lockstep steps); "
            f"separate per-attribute fits would have sent {fit['queries_separate']} "
            f"({fit['queries_saved']} saved by sharing calls)",
            f"{spend['asked']} images asked in all, {spend['paid']} paid, {spend['saved']} "
            "answered by the cache"]

    def result_lines(self, report: dict[str, Any]) -> list[str]:
        fit, m = report["fit"], report.get("test")
        lines = [f"queries saved by sharing calls: {fit['queries_saved']} in the fit"
                 + (f", {m['queries_saved']} in the test evaluation" if m else "")]
        if m:
            lines.append("test accuracy per attribute: " + ", ".join(
                f"{n} {r['accuracy_before']:.3f} -> {r['accuracy_after']:.3f}"
                for n, r in m["per_attribute"].items()))
        return lines


PER_ATTRIBUTE = PerAttribute()
