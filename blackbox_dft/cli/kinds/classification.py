"""The classification run kind: one perturbation for a classifier (:class:`DataFineTuner`),
``delta.npz``, a report figure with examples before / after; also what ``demo`` fits."""

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
from blackbox_dft.cli.meter import Meter, money
from blackbox_dft.cli.options import FitOptions
from blackbox_dft.cli.report import render_report
from blackbox_dft.cli.runs import RunFolder
from blackbox_dft.cli.tuner_args import classification_kwargs
from blackbox_dft.core.state import FitState
from blackbox_dft.data.datasets import Dataset
from blackbox_dft.tasks.classification import DataFineTuner

__all__ = ["Classification", "CLASSIFICATION"]


def _examples(y: np.ndarray, k: int = 8) -> np.ndarray:
    """Up to ``k`` indices, alternating between classes so that each class shows."""
    if y.ndim != 1:
        return np.arange(min(k, len(y)))
    per = [list(np.flatnonzero(y == c)) for c in np.unique(y)]
    out: list[int] = []
    while len(out) < min(k, len(y)):
        for p in per:
            if p and len(out) < k:
                out.append(int(p.pop(0)))
    return np.asarray(sorted(out))


class Classification(RunKind[DataFineTuner]):
    """``fit --data`` (and ``demo``): see the module docstring."""

    name = "classification"
    tuner_class = DataFineTuner
    result_name = "delta.npz"

    def check_options(self, opts: FitOptions) -> None:
        for name in ("far", "threshold"):
            if getattr(opts.tuner, name) is not None:
                raise ConfigError(f"--{name} is a face-verification option; it needs --pairs")

    def build_job(self, opts: FitOptions) -> Job:
        self.check_options(opts)
        train, val, test = load_splits(opts)
        model, key = open_model(opts.model)
        check_classifier(model, opts.model.model)
        n_test = len(test) if test is not None else 0
        budget = fit_budget(opts, 2 * n_test, f"the {n_test} test images twice")
        kw = classification_kwargs(opts, budget, train.multilabel)
        params = DataFineTuner(model, **kw).get_config()
        print_split(f"{train.describe()} for training",
                    {n: len(d) for n, d in (("train", train), ("val", val), ("test", test))
                     if d is not None})
        return Job(self, "fit", model, key, (train.images, train.labels), xy(val), xy(test),
                   train.classes, params,
                   f"{model_label(model)} on {base_name(opts.data.source or '')}",
                   run=opts.run, cost_per_1000=opts.model.cost_per_1000)

    def make_tuner(self, params: dict[str, Any]) -> DataFineTuner:
        return DataFineTuner.from_config(None, params, progress=False)  # the CLI's own bar

    def fit(self, tuner: DataFineTuner, job: Job, checkpoint: str,
            on_step: StepCallback) -> None:
        tuner.fit(job.train[0], job.train[1], validation=job.val, checkpoint=checkpoint,
                  checkpoint_every=job.run.checkpoint_every, resume=True, callback=on_step)

    def test_results(self, tuner: DataFineTuner, job: Job, meter: Meter) -> dict[str, Any]:
        metrics = tuner.evaluate(*job.test) if job.evaluates and job.test is not None else None
        clean = None
        if job.test_clean is not None and job.test is not None:  # what the shift cost
            raw = meter.predict(job.test_clean)
            clean = float(np.mean(tuner.objective_.predict_labels(raw) == job.test[1]))
        return {"test": metrics, "unshifted_test_accuracy": clean}

    def report_fields(self, tuner: DataFineTuner, job: Job) -> dict[str, Any]:
        kept = next((r for r in tuner.history_ if r["step"] == tuner.best_step_), None)
        return {"classes": job.classes,
                "fit": {"queries": tuner.queries_, "steps": tuner.n_steps_,
                        "best_step": tuner.best_step_, "baseline": tuner.baseline_,
                        "kept": kept},
                "max_abs_delta": float(np.abs(tuner.delta_).max())}

    def figure(self, tuner: DataFineTuner, job: Job, report: dict[str, Any]) -> np.ndarray:
        shown = job.test or job.val or job.train
        idx = _examples(shown[1])
        rows = []
        if job.test_clean is not None and shown is job.test:
            rows.append(("clean", job.test_clean[idx]))
        rows += [("shifted" if job.test_clean is not None else "images", shown[0][idx]),
                 ("+ delta", tuner.transform(shown[0][idx]))]
        captions = None
        if shown[1].ndim == 1:
            captions = [str(job.classes[int(c)]) if int(c) < len(job.classes) else str(int(c))
                        for c in shown[1][idx]]
        return render_report(rows, tuner.delta_, float(tuner.epsilon), tuner.history_,
                             tuner.baseline_, job.title, _figure_lines(tuner, report),
                             captions, tuner.best_step_)

    def evaluate(self, run: RunFolder, ds: Dataset, meter: Meter, where: str
                 ) -> tuple[dict[str, Any], list[str]]:
        metrics = DataFineTuner.load(self.result_path(run), meter).evaluate(ds.images,
                                                                             ds.labels)
        lines = [f"{where}: accuracy before {metrics['accuracy_before']:.3f}  after "
                 f"{metrics['accuracy_after']:.3f}",
                 f"balanced accuracy before {metrics['balanced_accuracy_before']:.3f}  after "
                 f"{metrics['balanced_accuracy_after']:.3f}"]
        for tag in ("before", "after"):
            per = metrics.get(f"per_class_recall_{tag}")
            if per is not None:
                names = ds.classes
                shown = ", ".join(f"{names[int(k)] if int(k) < len(names) else k} "
                                  f"{'-' if v is None else f'{v:.3f}'}" for k, v in per.items())
                lines.append(f"recall per class {tag}: {shown}")
            att = metrics.get(f"per_attribute_{tag}")
            if att is not None:
                shown = ", ".join(f"{n} {a['accuracy']:.3f}"
                                  for n, a in zip(ds.classes, att, strict=False))
                lines.append(f"accuracy per attribute {tag}: {shown}")
        lines.append(f"PSNR {metrics['psnr']:.2f} dB   SSIM {metrics['ssim']:.4f}")
        return metrics, lines

    def transformer(self, run: RunFolder) -> Transformer:
        self.check_fitted(run)
        return DataFineTuner.load(self.result_path(run), None)

    def summary(self, report: dict[str, Any]) -> list[str]:
        m, fit, spend = report.get("test"), report["fit"], report["spend"]
        lines = []
        if m:
            lines += [f"held-out test accuracy: before {m['accuracy_before']:.3f}  after "
                      f"{m['accuracy_after']:.3f}  (balanced "
                      f"{m['balanced_accuracy_before']:.3f} -> "
                      f"{m['balanced_accuracy_after']:.3f}, {m['n_images']} images)",
                      f"PSNR {m['psnr']:.2f} dB   SSIM {m['ssim']:.4f}   max |delta| "
                      f"{report['max_abs_delta']:.2f} grey levels"]
        if report.get("unshifted_test_accuracy") is not None:
            lines.append(f"accuracy on the same test images without the shift: "
                         f"{report['unshifted_test_accuracy']:.3f}")
        lines.append(f"queries used: {fit['queries']} by the fit ({fit['steps']} steps, kept "
                     f"step {fit['best_step']}); {spend['asked']} asked in all, "
                     f"{spend['paid']} paid, {spend['saved']} answered by the cache")
        return lines

    def progress_lines(self, state: FitState) -> list[str]:
        lines = []
        if state.baseline:
            lines.append(f"validation accuracy at delta=0: "
                         f"{state.baseline['val_accuracy']:.3f}")
        best = [r for r in state.history if r.get("val_accuracy") is not None
                and r["step"] == state.best_step]
        if best:
            lines.append(f"kept step {state.best_step}: validation accuracy "
                         f"{best[0]['val_accuracy']:.3f}")
        return lines

    def result_lines(self, report: dict[str, Any]) -> list[str]:
        m = report.get("test")
        if not m:
            return []
        return [f"test accuracy {m['accuracy_before']:.3f} -> {m['accuracy_after']:.3f}, "
                f"PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f}"]


def _figure_lines(tuner: DataFineTuner, report: dict[str, Any]) -> list[str]:
    """The text panel of ``report.png``."""
    m, spend, clean = report.get("test"), report["spend"], report.get("unshifted_test_accuracy")
    lines = [f"task {tuner.task}, epsilon {tuner.epsilon:g} grey levels, seed {tuner.seed}"]
    if m:
        lines += [f"test accuracy {m['accuracy_before']:.3f} -> {m['accuracy_after']:.3f} "
                  f"({m['n_images']} images)",
                  f"balanced accuracy {m['balanced_accuracy_before']:.3f} -> "
                  f"{m['balanced_accuracy_after']:.3f}",
                  f"PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}"]
    if clean is not None:
        lines.append(f"unshifted test accuracy {clean:.3f} (what the shift cost)")
    lines += [f"fit queries {tuner.queries_} of {tuner.query_budget}, {tuner.n_steps_} steps, "
              f"kept step {tuner.best_step_}",
              f"images asked {spend['asked']}, paid {spend['paid']}, answered by cache "
              f"{spend['saved']}"]
    if spend.get("cost") is not None:
        lines.append(f"money spent {money(spend['cost'])} "
                     f"(at {money(spend['cost_per_1000'])} per 1000 images)")
    return lines


CLASSIFICATION = Classification()
