"""The verification run kind: ``fit --pairs pairs.txt --image-root DIR`` fits a
:class:`VerificationTuner` on an embedding model or a face-compare API into ``delta.npz``,
with a report figure; ``evaluate`` refuses it (its test metrics are in report.json)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from blackbox_dft.adapters.spec_secrets import model_label
from blackbox_dft.adapters.specs import SpecError
from blackbox_dft.cli.config import ConfigError
from blackbox_dft.cli.jobs import base_name, fit_budget, is_embedding, open_model, print_split
from blackbox_dft.cli.kinds.base import Job, RunKind, StepCallback, Transformer
from blackbox_dft.cli.meter import Meter
from blackbox_dft.cli.options import FitOptions
from blackbox_dft.cli.report import render_report
from blackbox_dft.cli.runs import RunFolder
from blackbox_dft.cli.tuner_args import verification_kwargs
from blackbox_dft.data.datasets import DataError, Dataset, parse_size
from blackbox_dft.data.pairs import PairSplit, load_lfw_pairs, split_pairs
from blackbox_dft.data.shifts import parse_shift
from blackbox_dft.tasks.verification import VerificationTuner

__all__ = ["Verification", "VERIFICATION"]


def _load_pairs(opts: FitOptions) -> tuple[np.ndarray, np.ndarray]:
    """The images and pairs of ``--pairs`` over ``--image-root``, shifted."""
    pairs_file, d = str(opts.data.pairs), opts.data
    try:
        images, pairs = load_lfw_pairs(pairs_file, str(d.image_root), size=parse_size(d.size),
                                       max_pixels=d.max_image_pixels)
    except FileNotFoundError as exc:
        if not os.path.isfile(pairs_file):
            raise DataError(f"--pairs file not found: {pairs_file}") from None
        raise DataError(f"--pairs: {exc}") from None
    if d.shift:
        images = parse_shift(d.shift)(images, np.random.default_rng([opts.seed, 1]))
    return images, pairs


class Verification(RunKind[VerificationTuner]):
    """``fit --pairs``: see the module docstring."""

    name = "verification"
    tuner_class = VerificationTuner
    result_name = "delta.npz"
    how = "fitted with --pairs (face verification)"
    flag = "--pairs"
    unused = ("task", "scores", "label_map", "class_weight", "selection", "lr_schedule",
              "sampling", "classes", "attributes", "limit", "skip_bad")

    def check_options(self, opts: FitOptions) -> None:
        super().check_options(opts)
        if opts.data.attribute_mode != "shared":
            raise ConfigError(f"--attribute-mode {opts.data.attribute_mode} does not apply to "
                              "--pairs (face verification)")

    def build_job(self, opts: FitOptions) -> Job:
        self.check_options(opts)
        images, pairs = _load_pairs(opts)
        parts: list[PairSplit | None] = list(split_pairs(
            images, pairs, opts.data.val_fraction, opts.data.test_fraction, opts.seed))
        train, val, test = parts
        if train is None or val is None:
            raise ConfigError("--pairs needs validation pairs (they choose the threshold, or "
                              "with --threshold keep the best perturbation): use "
                              "--val-fraction > 0")
        model, key = open_model(opts.model)
        if not is_embedding(model):
            raise SpecError(
                f"--pairs fits face verification and needs an embedding model (output_kind "
                f"'embedding', e.g. standin:emotion-embedding) or a face-compare API (--preset "
                f"facepp_compare); {opts.model.model} is a classifier: fit it in "
                "classification mode with --data DATASET instead of --pairs")
        n_test = len(test[1]) if test is not None else 0
        budget = fit_budget(opts, self.eval_cost(n_test, 2), f"the {n_test} test images twice")
        tuner = VerificationTuner(model, **verification_kwargs(opts, budget))
        print_split(f"{len(pairs)} pairs over {len(images)} images {images.shape[1]}x"
                    f"{images.shape[2]}", {n: len(p[1]) for n, p in
                                           zip(("train", "val", "test"), parts, strict=True)
                                           if p is not None}, " pairs")
        return Job(self, "fit", model, key, train, val, test, ["different", "same"],
                   tuner.get_config(),
                   f"{model_label(model)} verification on {base_name(str(opts.data.pairs))}",
                   run=opts.run, cost_per_1000=opts.model.cost_per_1000)

    def fit(self, tuner: VerificationTuner, job: Job, checkpoint: str,
            on_step: StepCallback) -> None:
        tuner.fit(job.train[0], job.train[1], validation=job.val, checkpoint=checkpoint,
                  checkpoint_every=job.run.checkpoint_every, resume=True)

    def test_results(self, tuner: VerificationTuner, job: Job, meter: Meter) -> dict[str, Any]:
        return {"test": tuner.evaluate(*job.test) if job.evaluates and job.test else None}

    def report_fields(self, tuner: VerificationTuner, job: Job) -> dict[str, Any]:
        return {"fit": {"queries": tuner.queries_, "steps": len(tuner.history_),
                        "best_step": tuner.best_step_, "threshold": tuner.threshold_,
                        "baseline_threshold": tuner.baseline_threshold_,
                        "baseline": getattr(tuner, "baseline_", None)},
                "max_abs_delta": float(np.abs(tuner.delta_).max())}

    def figure(self, tuner: VerificationTuner, job: Job, report: dict[str, Any]) -> np.ndarray:
        shown = (job.test or job.val or job.train)[0][:8]
        m, fit, spend = report["test"], report["fit"], report["spend"]
        lines = [f"face verification, epsilon {tuner.epsilon:g} grey levels, seed {tuner.seed}"]
        if m:
            lines += [f"test accuracy {m['accuracy_before']:.3f} -> {m['accuracy_after']:.3f} "
                      f"({m['n_pairs']} pairs)",
                      f"TAR at FAR {m['far']:g}: {m['tar_at_far_before']:.3f} -> "
                      f"{m['tar_at_far_after']:.3f}",
                      f"PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}"]
        lines += [f"fit queries {fit['queries']} of {tuner.query_budget}, kept step "
                  f"{fit['best_step']}",
                  f"images asked {spend['asked']}, paid {spend['paid']}, cache {spend['saved']}"]
        return render_report([("images", shown), ("+ delta", tuner.transform(shown))],
                             tuner.delta_, float(tuner.epsilon), tuner.history_,
                             getattr(tuner, "baseline_", None), job.title, lines, None,
                             tuner.best_step_)

    def check_evaluable(self, run: RunFolder) -> None:
        raise self.refusal("evaluate", run)

    def evaluate(self, run: RunFolder, ds: Dataset, meter: Meter, where: str
                 ) -> tuple[dict[str, Any], list[str]]:
        raise self.refusal("evaluate", run)

    def transformer(self, run: RunFolder) -> Transformer:
        self.check_fitted(run)
        return VerificationTuner.load(self.result_path(run), None)

    def summary(self, report: dict[str, Any]) -> list[str]:
        m, fit, spend = report.get("test"), report["fit"], report["spend"]
        lines = []
        if m:
            lines += [f"held-out verification accuracy: before {m['accuracy_before']:.3f}  "
                      f"after {m['accuracy_after']:.3f}  ({m['n_pairs']} pairs)",
                      f"TAR at FAR {m['far']:g}: before {m['tar_at_far_before']:.3f}  after "
                      f"{m['tar_at_far_after']:.3f};  ROC AUC {m['auc_before']:.3f} -> "
                      f"{m['auc_after']:.3f};  PSNR {m['psnr']:.2f} dB"]
        return lines + [
            f"queries used: {fit['queries']} by the fit ({fit['steps']} steps, kept step "
            f"{fit['best_step']})",
            f"{spend['asked']} images asked in all, {spend['paid']} paid, {spend['saved']} "
            "answered by the cache"]

    def result_lines(self, report: dict[str, Any]) -> list[str]:
        m = report.get("test")
        if not m:
            return []
        return [f"test verification accuracy {m['accuracy_before']:.3f} -> "
                f"{m['accuracy_after']:.3f}, TAR at FAR {m['far']:g} "
                f"{m['tar_at_far_before']:.3f} -> {m['tar_at_far_after']:.3f}, PSNR "
                f"{m['psnr']:.2f} dB"]


VERIFICATION = Verification()
