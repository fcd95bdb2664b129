"""The command line beyond one classifier: per-attribute fits and face verification.

``fit --attribute-mode per_attribute`` on multilabel data fits a
:class:`~blackbox_dft.tasks.attributes.MultiAttributeTuner` (one perturbation per attribute, the
attributes' candidates sent together in one call); ``fit --pairs pairs.txt --image-root DIR``
fits a :class:`~blackbox_dft.tasks.verification.VerificationTuner` on an embedding model. Both
write ``report.json`` and ``history.jsonl`` in the run folder; the perturbations go to
``deltas.npz`` (per attribute) or ``delta.npz`` (verification), ``.npz`` arrays plus JSON.
These fits keep no checkpoint: an interrupted one is re-run with ``fit --force``.
Composition only: the math lives in the library.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from adapters.spec_secrets import model_label
from adapters.specs import SpecError, build_model, model_key
from blackbox_dft.cli.cache import open_cache
from blackbox_dft.cli.meter import Meter, money
from blackbox_dft.cli.options import (
    ConfigError,
    check_mode_options,
    multiattr_kwargs,
    verification_kwargs,
)
from blackbox_dft.cli.report import render_report, save_png
from blackbox_dft.cli.runs import RunError, RunFolder, write_json
from blackbox_dft.data.datasets import DataError, Dataset, parse_size
from blackbox_dft.data.pairs import load_lfw_pairs, split_pairs
from blackbox_dft.data.shifts import parse_shift
from blackbox_dft.tasks.attributes import MultiAttributeTuner
from blackbox_dft.tasks.verification import VerificationTuner

__all__ = ["KINDS", "check_classifier", "attribute_job", "verification_job", "execute_beyond",
           "print_beyond_summary", "evaluate_attributes", "info_beyond", "not_for"]

KINDS = ("classification", "per_attribute", "verification")
_VERIFY_HINT = ("fit it in face-verification mode: --pairs pairs.txt --image-root DIR "
                "instead of --data")


def _is_embedding(model: Any) -> bool:
    """An embedding model or a pair model (a face-compare API): what ``--pairs`` fits."""
    return getattr(model, "output_kind", None) in ("embedding", "similarity")


def check_classifier(model: Any, opts: dict[str, Any]) -> None:
    """SpecError when an embedding or pair model is asked for a classification fit."""
    if _is_embedding(model):
        what = ("embeddings (output_kind 'embedding')"
                if getattr(model, "output_kind", None) == "embedding"
                else "pair similarities (output_kind 'similarity')")
        raise SpecError(f"--model {opts['model']} returns {what}, not class scores; "
                        f"{_VERIFY_HINT}")


def attribute_job(opts: dict[str, Any], model: Any, train: Dataset, val: Dataset | None,
                  test: Dataset | None) -> Any:
    """A ``per_attribute`` job: multilabel splits and :class:`MultiAttributeTuner` params."""
    from blackbox_dft.cli.run import Job, fit_budget

    if not train.multilabel:
        raise ConfigError(
            f"--attribute-mode per_attribute needs multilabel data (a CSV with two or more "
            f"attribute columns, or a CelebA list); {opts['data']} is single-label "
            f"({len(train.classes)} classes): use --attribute-mode shared or leave it out")
    check_mode_options(opts, "per_attribute")
    n_attr = len(train.classes)
    n_test = len(test) if test is not None else 0
    budget = fit_budget(opts, (1 + n_attr) * n_test,
                        f"the {n_test} test images once clean and once per attribute")
    tuner = MultiAttributeTuner(model, **multiattr_kwargs(opts, budget, train.classes))
    parts = ", ".join(f"{n} {len(d)}" for n, d in (("train", train), ("val", val), ("test", test))
                      if d is not None)
    print(f"data: {train.describe()} for training; split {parts}", file=sys.stderr)
    return Job("fit", opts, model,
               model_key(opts["model"], opts["preset"], opts["model_options"]),
               (train.images, train.labels), _xy(val), _xy(test), list(train.classes),
               tuner.get_config(),
               f"{model_label(model)} per attribute on "
               f"{os.path.basename(os.path.normpath(opts['data']))}", kind="per_attribute")


def _xy(ds: Dataset | None) -> tuple[np.ndarray, np.ndarray] | None:
    return None if ds is None else (ds.images, ds.labels)


def verification_job(opts: dict[str, Any]) -> Any:
    """A ``verification`` job: LFW pairs split train / val / test and an embedding model."""
    from blackbox_dft.cli.run import Job, fit_budget

    check_mode_options(opts, "verification")
    try:
        images, pairs = load_lfw_pairs(opts["pairs"], opts["image_root"],
                                       size=parse_size(opts["size"]),
                                       max_pixels=opts.get("max_image_pixels"))
    except FileNotFoundError as exc:
        if not os.path.isfile(opts["pairs"]):
            raise DataError(f"--pairs file not found: {opts['pairs']}") from None
        raise DataError(f"--pairs: {exc}") from None
    if opts.get("shift"):
        images = parse_shift(opts["shift"])(images, np.random.default_rng([opts["seed"], 1]))
    train, val, test = split_pairs(images, pairs, opts["val_fraction"], opts["test_fraction"],
                                   opts["seed"])
    if val is None:
        raise ConfigError("--pairs needs validation pairs (they choose the threshold, or with "
                          "--threshold keep the best perturbation): use --val-fraction > 0")
    model = build_model(opts["model"], preset=opts["preset"], options=opts["model_options"],
                        api_key_env=opts["api_key_env"], api_secret_env=opts["api_secret_env"])
    if not _is_embedding(model):
        raise SpecError(
            f"--pairs fits face verification and needs an embedding model (output_kind "
            f"'embedding', e.g. standin:emotion-embedding) or a face-compare API (--preset "
            f"facepp_compare); {opts['model']} is a classifier: fit "
            "it in classification mode with --data DATASET instead of --pairs")
    n_test = len(test[0]) if test is not None else 0
    budget = fit_budget(opts, 2 * n_test, f"the {n_test} test images twice")
    tuner = VerificationTuner(model, **verification_kwargs(opts, budget))
    parts = ", ".join(f"{n} {len(d[1])}" for n, d in (("train", train), ("val", val),
                                                       ("test", test)) if d is not None)
    print(f"data: {len(pairs)} pairs over {len(images)} images {images.shape[1]}x"
          f"{images.shape[2]}; split {parts} pairs", file=sys.stderr)
    return Job("fit", opts, model,
               model_key(opts["model"], opts["preset"], opts["model_options"]),
               train, val, test, ["different", "same"], tuner.get_config(),
               f"{model_label(model)} verification on "
               f"{os.path.basename(os.path.normpath(opts['pairs']))}", kind="verification")


def _fit_and_evaluate(job: Any, tuner: Any, evaluate: bool,
                      run: RunFolder) -> dict[str, Any] | None:
    kw = {"checkpoint": run.checkpoint, "resume": True,  # resumable from the run folder
          "checkpoint_every": int(job.options.get("checkpoint_every", 10))}
    try:
        tuner.fit(job.train[0], job.train[1], validation=job.val, **kw)
    except ValueError as exc:
        if "query_budget" in str(exc):
            raise ConfigError(f"--budget too small: {exc}; re-run the fit with a larger "
                              "--budget and --force") from None
        raise
    return tuner.evaluate(*job.test) if evaluate and job.test is not None else None


def execute_beyond(job: Any, run: RunFolder, *, progress: bool = True) -> dict[str, Any]:
    """Fit a ``per_attribute`` or ``verification`` job in ``run``; write its files."""
    t0 = time.time()
    opts = job.options
    cls = MultiAttributeTuner if job.kind == "per_attribute" else VerificationTuner
    tuner: Any = cls.from_config(None, job.params)
    cache = None
    if opts.get("cache", True):
        cache = open_cache(job.model, opts.get("cache_path") or run.cache, job.key)
    evaluate = bool(opts.get("evaluate", True)) and job.test is not None
    n_test = 0 if job.test is None else len(job.test[0])
    eval_cost = 0
    if evaluate:
        eval_cost = (1 + len(job.classes)) * n_test if job.kind == "per_attribute" \
            else 2 * n_test
    budget = int(tuner.query_budget)
    run.read_spend()  # a damaged ledger is refused before anything is paid, never reset to 0
    bar = tqdm(total=budget + eval_cost, unit="img", desc=f"DFT {model_label(job.model)}",
               disable=not progress, dynamic_ncols=True, file=sys.stderr)
    meter = Meter(cache if cache is not None else job.model, bar, cache,
                  opts.get("cost_per_1000"), budget + eval_cost, ledger=run.spend)
    meter.name = model_label(job.model)  # what the saved result names: scrubbed of secrets
    tuner.model = meter
    try:
        try:
            metrics = _fit_and_evaluate(job, tuner, evaluate, run)
        finally:
            if hasattr(tuner, "history_"):
                run.write_history(tuner.history_)
        tuner.save(run.deltas if job.kind == "per_attribute" else run.delta)
    finally:
        bar.close()
        if cache is not None:
            cache.close()
    spend = meter.totals()
    report: dict[str, Any] = {
        "command": job.command, "kind": job.kind, "title": job.title,
        "model": model_label(job.model), "params": job.params, "test": metrics,
        "spend": spend, "wall_time_s": round(time.time() - t0, 2)}
    if job.kind == "per_attribute":
        report["attributes"] = job.classes
        report["fit"] = {"queries": tuner.queries_, "steps": tuner.n_steps_,
                         "queries_separate": tuner.queries_separate_,
                         "queries_saved": tuner.queries_saved_,
                         "best_step": dict(zip(job.classes, tuner.best_step_, strict=True)),
                         "baseline": None if not hasattr(tuner, "baseline_") else
                         dict(zip(job.classes, tuner.baseline_, strict=True))}
        report["max_abs_delta"] = {a: float(np.abs(d).max())
                                   for a, d in zip(job.classes, tuner.deltas_, strict=True)}
        if metrics is not None:
            metrics["queries_saved"] = metrics["queries_separate"] - metrics["queries"]
    else:
        report["fit"] = {"queries": tuner.queries_, "steps": len(tuner.history_),
                         "best_step": tuner.best_step_, "threshold": tuner.threshold_,
                         "baseline_threshold": tuner.baseline_threshold_,
                         "baseline": getattr(tuner, "baseline_", None)}
        report["max_abs_delta"] = float(np.abs(tuner.delta_).max())
    write_json(run.report_json, report)
    if job.kind == "verification":
        _verification_png(job, tuner, report, run)
    return report


def _verification_png(job: Any, tuner: VerificationTuner, report: dict[str, Any],
                      run: RunFolder) -> None:
    shown = (job.test or job.val)[0][:8]
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
    fig = render_report([("images", shown), ("+ delta", tuner.transform(shown))],
                        tuner.delta_, float(tuner.epsilon), tuner.history_,
                        getattr(tuner, "baseline_", None), job.title, lines, None,
                        tuner.best_step_)
    save_png(run.report_png, fig)


def print_beyond_summary(report: dict[str, Any], run: RunFolder) -> None:
    """The end-of-run summary of a ``per_attribute`` or ``verification`` fit on stdout."""
    m, fit, spend = report.get("test"), report["fit"], report["spend"]
    print(f"run folder: {run.path}")
    if report["kind"] == "per_attribute":
        if m:
            for name, row in m["per_attribute"].items():
                print(f"{name}: test accuracy before {row['accuracy_before']:.3f}  after "
                      f"{row['accuracy_after']:.3f}  (balanced "
                      f"{row['balanced_accuracy_before']:.3f} -> "
                      f"{row['balanced_accuracy_after']:.3f})")
            print(f"test evaluation: {m['queries']} queries instead of "
                  f"{m['queries_separate']} ({m['queries_saved']} saved by sharing calls)")
        print(f"queries used: {fit['queries']} by the fit ({fit['steps']} lockstep steps); "
              f"separate per-attribute fits would have sent {fit['queries_separate']} "
              f"({fit['queries_saved']} saved by sharing calls)")
        files = [run.deltas, run.report_json]
    else:
        if m:
            print(f"held-out verification accuracy: before {m['accuracy_before']:.3f}  after "
                  f"{m['accuracy_after']:.3f}  ({m['n_pairs']} pairs)")
            print(f"TAR at FAR {m['far']:g}: before {m['tar_at_far_before']:.3f}  after "
                  f"{m['tar_at_far_after']:.3f};  ROC AUC {m['auc_before']:.3f} -> "
                  f"{m['auc_after']:.3f};  PSNR {m['psnr']:.2f} dB")
        print(f"queries used: {fit['queries']} by the fit ({fit['steps']} steps, kept step "
              f"{fit['best_step']})")
        files = [run.delta, run.report_json, run.report_png]
    print(f"{spend['asked']} images asked in all, {spend['paid']} paid, {spend['saved']} "
          "answered by the cache")
    if spend.get("cost") is not None:
        print(f"money spent: {money(spend['cost'])}")
    print(f"wrote {', '.join(files)}")


def not_for(kind: str, what: str, run: RunFolder, hint: str | None = None) -> RunError:
    """The one-line error of a subcommand ``what`` that cannot handle a run of ``kind``."""
    how = {"per_attribute": "fitted with --attribute-mode per_attribute",
           "verification": "fitted with --pairs (face verification)"}[kind]
    hint = hint or (f"its test metrics are in {run.report_json} "
                    f"(see 'blackbox-dft info {run.path}')")
    return RunError(f"{what} does not handle run {run.path} ({how}); {hint}")


def evaluate_attributes(run: RunFolder, opts: dict[str, Any], ds: Dataset, meter: Any
                        ) -> dict[str, Any]:
    """Per-attribute accuracy before / after the run's deltas on a multilabel dataset."""
    if not os.path.exists(run.deltas):
        raise RunError(f"run {run.path} has no deltas.npz (the fit did not finish); re-run it "
                       "with 'blackbox-dft fit ... --force'")
    tuner = MultiAttributeTuner.load(run.deltas, meter)
    if not ds.multilabel or list(ds.classes) != tuner.attributes_:
        raise DataError(f"run {run.path} was fitted on attributes {', '.join(tuner.attributes_)}"
                        f"; the data has {'attributes' if ds.multilabel else 'classes'} "
                        f"{', '.join(ds.classes)} (pass the same --attributes at fit time)")
    metrics = tuner.evaluate(ds.images, ds.labels)
    metrics["queries_saved"] = metrics["queries_separate"] - metrics["queries"]
    for name, row in metrics["per_attribute"].items():
        print(f"{name}: accuracy before {row['accuracy_before']:.3f}  after "
              f"{row['accuracy_after']:.3f}  (balanced {row['balanced_accuracy_before']:.3f} "
              f"-> {row['balanced_accuracy_after']:.3f})")
    print(f"mean accuracy before {metrics['accuracy_before']:.3f}  after "
          f"{metrics['accuracy_after']:.3f} ({metrics['n_images']} images); "
          f"{metrics['queries']} queries instead of {metrics['queries_separate']}")
    return metrics


def info_beyond(run: RunFolder, cfg: dict[str, Any], report: dict[str, Any] | None,
                out: dict[str, Any]) -> None:
    """The ``info`` lines on progress and results of a per-attribute or verification run."""
    params = cfg.get("params", {})
    kind = cfg.get("kind")
    print(f"mode: {kind}; epsilon {params.get('epsilon')} grey levels, budget "
          f"{params.get('query_budget')} queries, seed {params.get('seed')}")
    if report is None:
        status, queries, state = run.fit_progress()
        if state is not None:
            out.update(step=state.step, done=state.done)
        print(f"status: {status}; fit queries {queries} of {params.get('query_budget')}")
        out.update(status=status, queries=queries)
        return
    fit, m = report["fit"], report.get("test")
    print(f"status: fit done; fit queries {fit['queries']} of {params.get('query_budget')}")
    out.update(status="fit done", queries=fit["queries"], test=m)
    if kind == "per_attribute":
        print(f"queries saved by sharing calls: {fit['queries_saved']} in the fit"
              + (f", {m['queries_saved']} in the test evaluation" if m else ""))
        if m:
            print("test accuracy per attribute: " + ", ".join(
                f"{n} {r['accuracy_before']:.3f} -> {r['accuracy_after']:.3f}"
                for n, r in m["per_attribute"].items()))
    elif m:
        print(f"test verification accuracy {m['accuracy_before']:.3f} -> "
              f"{m['accuracy_after']:.3f}, TAR at FAR {m['far']:g} "
              f"{m['tar_at_far_before']:.3f} -> {m['tar_at_far_after']:.3f}, PSNR "
              f"{m['psnr']:.2f} dB")
