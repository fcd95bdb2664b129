"""The fitting commands of the command line (fit, resume, demo): jobs built from options,
run in a run folder with the query cache, the meter and the report. No math here."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from adapters.spec_secrets import model_label
from adapters.specs import build_model, model_key
from blackbox_dft.cli.cache import open_cache
from blackbox_dft.cli.meter import Meter, money, parse_budget
from blackbox_dft.cli.options import ConfigError, check_mode_options, tuner_kwargs
from blackbox_dft.cli.report import render_report, save_png
from blackbox_dft.cli.runs import RunFolder, write_json
from blackbox_dft.core.state import FitState
from blackbox_dft.data.datasets import Dataset, parse_size, split_dataset
from blackbox_dft.data.loaders import load_dataset
from blackbox_dft.data.shifts import parse_shift
from blackbox_dft.tasks.classification import DataFineTuner

__all__ = ["Job", "fit_job", "fit_budget", "demo_job", "execute", "load_data", "DEMO_MODELS",
           "print_summary"]

Split = tuple[np.ndarray, np.ndarray]
DEMO_MODELS = {"face": "standin:blazeface", "smiling": "standin:smiling"}
DEMO_SHIFTS = {"face": "blur:sigma=1", "smiling": "blur:sigma=0.7"}


@dataclass
class Job:
    """Everything one fit needs: the model, the splits and the tuner's parameters."""

    command: str
    options: dict[str, Any]
    model: Any
    key: str
    train: Split
    val: Split | None
    test: Split | None
    classes: list[str]
    params: dict[str, Any]
    title: str
    test_clean: np.ndarray | None = None
    kind: str = "classification"  # or "per_attribute" / "verification" (see cli_beyond)


def _xy(ds: Dataset | None) -> Split | None:
    return None if ds is None else (ds.images, ds.labels)


def load_data(opts: dict[str, Any], data: str | None = None) -> Dataset:
    """Load and shift the data named by the options (or ``data``)."""
    ds = load_dataset(data or opts["data"], size=parse_size(opts["size"]),
                      size_mode=opts["size_mode"], skip_bad=opts["skip_bad"],
                      classes=opts["classes"], attributes=opts["attributes"],
                      image_root=opts["image_root"], limit=opts["limit"], seed=opts["seed"],
                      max_pixels=opts.get("max_image_pixels"))
    for name in ds.skipped:
        print(f"skipped unreadable image: {name}", file=sys.stderr)
    if opts.get("shift"):
        ds.images = parse_shift(opts["shift"])(ds.images, np.random.default_rng([opts["seed"], 1]))
    return ds


def _budget(opts: dict[str, Any]) -> int:
    """``--budget`` in images (money converted at ``--cost-per-1000``), at least 1."""
    budget = parse_budget(opts["budget"], opts.get("cost_per_1000"))
    if budget < 1:
        raise ConfigError(f"--budget must pay for at least one image, got {opts['budget']!r}")
    return budget


def fit_budget(opts: dict[str, Any], eval_cost: int, what: str) -> int | None:
    """The fit's query budget from ``--budget``: a money budget also pays for the final
    evaluation (``eval_cost`` images, described by ``what``)."""
    if opts["budget"] is None:
        return None
    budget = _budget(opts)
    if not str(opts["budget"]).strip().isdigit() and opts["evaluate"] and eval_cost:
        budget -= eval_cost
        if budget < 1:
            raise ValueError(f"--budget {opts['budget']} does not even pay for evaluating "
                             f"{what}")
    return budget


def fit_job(opts: dict[str, Any]) -> Job:
    """A job from resolved ``fit`` options: loads the data and builds the model (face
    verification and per-attribute fits are built by :mod:`blackbox_dft.cli.beyond`)."""
    from blackbox_dft.cli import beyond as cli_beyond

    if opts.get("pairs"):
        return cli_beyond.verification_job(opts)
    train, val, test = split_dataset(load_data(opts), opts["val_fraction"],
                                     opts["test_fraction"], opts["seed"])
    model = build_model(opts["model"], preset=opts["preset"], options=opts["model_options"],
                        api_key_env=opts["api_key_env"], api_secret_env=opts["api_secret_env"])
    cli_beyond.check_classifier(model, opts)
    if opts.get("attribute_mode") == "per_attribute":
        return cli_beyond.attribute_job(opts, model, train, val, test)
    check_mode_options(opts, "classification")
    budget = fit_budget(opts, 2 * len(test) if test is not None else 0,
                        f"the {len(test) if test is not None else 0} test images twice")
    params = DataFineTuner(model, **tuner_kwargs(opts, budget, train.multilabel)).get_config()
    parts = ", ".join(f"{n} {len(d)}" for n, d in (("train", train), ("val", val), ("test", test))
                      if d is not None)
    print(f"data: {train.describe()} for training; split {parts}", file=sys.stderr)
    return Job("fit", opts, model, model_key(opts["model"], opts["preset"],
                                             opts["model_options"]),
               (train.images, train.labels), _xy(val), _xy(test), train.classes, params,
               f"{model_label(model)} on {os.path.basename(os.path.normpath(opts['data']))}")


def demo_job(opts: dict[str, Any]) -> Job:
    """A job for ``demo``: a ready-made task (face or smiling) under a shift."""
    from adapters.standins.tasks import load_task

    shift = opts["shift"] = opts["shift"] or DEMO_SHIFTS.get(opts["task"])
    task = load_task(opts["task"], shift=shift, seed=opts["seed"])
    kw: dict[str, Any] = {"task": "multiclass", "seed": opts["seed"], "progress": False}
    if opts.get("epsilon") is not None:
        kw["epsilon"] = float(opts["epsilon"])
    kw["query_budget"] = _budget(opts)
    params = DataFineTuner(task.model, **kw).get_config()
    spec = DEMO_MODELS.get(opts["task"], f"task:{opts['task']}")
    return Job("demo", opts, task.model, model_key(spec, None, {}), task.train, task.val,
               task.test, list(task.class_names), params,
               f"demo: {opts['task']} task under {task.shift.spec()} with "
               f"{model_label(task.model)}",
               test_clean=task.test_clean)


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


def _summary_lines(job: Job, tuner: DataFineTuner, metrics: dict[str, Any] | None,
                   spend: dict[str, Any], clean_acc: float | None) -> list[str]:
    eps = tuner.epsilon
    lines = [f"task {tuner.task}, epsilon {eps:g} grey levels, seed {tuner.seed}"]
    if metrics:
        lines.append(f"test accuracy {metrics['accuracy_before']:.3f} -> "
                     f"{metrics['accuracy_after']:.3f} ({metrics['n_images']} images)")
        lines.append(f"balanced accuracy {metrics['balanced_accuracy_before']:.3f} -> "
                     f"{metrics['balanced_accuracy_after']:.3f}")
        lines.append(f"PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f}")
    if clean_acc is not None:
        lines.append(f"unshifted test accuracy {clean_acc:.3f} (what the shift cost)")
    lines.append(f"fit queries {tuner.queries_} of {tuner.query_budget}, "
                 f"{tuner.n_steps_} steps, kept step {tuner.best_step_}")
    lines.append(f"images asked {spend['asked']}, paid {spend['paid']}, "
                 f"answered by cache {spend['saved']}")
    if spend.get("cost") is not None:
        lines.append(f"money spent {money(spend['cost'])} "
                     f"(at {money(spend['cost_per_1000'])} per 1000 images)")
    return lines


def execute(job: Job, run: RunFolder, *, progress: bool = True) -> dict[str, Any]:
    """Fit (or continue) ``job`` in ``run`` and write delta, history and reports."""
    if job.kind != "classification":
        from blackbox_dft.cli.beyond import execute_beyond

        return execute_beyond(job, run, progress=progress)
    t0 = time.time()
    opts = job.options
    tuner = DataFineTuner.from_config(None, job.params, progress=False)
    cache = None
    if opts.get("cache", True):
        cache = open_cache(job.model, opts.get("cache_path") or run.cache, job.key)
    evaluate = bool(opts.get("evaluate", True)) and job.test is not None
    eval_cost = (2 * len(job.test[1]) if evaluate and job.test is not None else 0) + (
        len(job.test_clean) if job.test_clean is not None else 0)
    run.read_spend()  # a damaged ledger is refused before anything is paid, never reset to 0
    done = 0
    if os.path.exists(run.checkpoint):
        state, _ = FitState.load(run.checkpoint)
        done = state.queries  # lost queries of an interrupted step are replayed
    budget = int(tuner.query_budget)
    bar = tqdm(total=budget + eval_cost, initial=min(done, budget), unit="img",
               desc=f"DFT {model_label(job.model)}", disable=not progress, dynamic_ncols=True,
               file=sys.stderr)
    meter = Meter(cache if cache is not None else job.model, bar, cache,
                  opts.get("cost_per_1000"), budget - done + eval_cost, ledger=run.spend)
    meter.name = model_label(job.model)  # what the saved result names: scrubbed of secrets
    tuner.model = meter

    def on_step(rec: dict[str, Any], state: FitState) -> bool:
        post = meter.postfix()
        if "val_accuracy" in rec:
            post = {"val_acc": f"{rec['val_accuracy']:.3f}", **post}
        bar.set_postfix(post, refresh=False)
        return False

    try:
        try:
            tuner.fit(job.train[0], job.train[1], validation=job.val, checkpoint=run.checkpoint,
                      checkpoint_every=int(opts.get("checkpoint_every", 10)), resume=True,
                      callback=on_step)
        finally:
            if hasattr(tuner, "history_"):
                run.write_history(tuner.history_)
        tuner.save(run.delta)
        metrics = tuner.evaluate(*job.test) if evaluate and job.test is not None else None
        clean_acc = None
        if job.test_clean is not None and job.test is not None:
            raw = meter.predict(job.test_clean)
            clean_acc = float(np.mean(tuner.objective_.predict_labels(raw) == job.test[1]))
    finally:
        bar.close()
        if cache is not None:
            cache.close()
    spend = meter.totals()
    report = {
        "command": job.command, "kind": job.kind, "title": job.title,
        "model": model_label(job.model),
        "classes": job.classes, "params": job.params,
        "fit": {"queries": tuner.queries_, "steps": tuner.n_steps_,
                "best_step": tuner.best_step_, "baseline": tuner.baseline_,
                "kept": next((r for r in tuner.history_ if r["step"] == tuner.best_step_), None)},
        "test": metrics, "unshifted_test_accuracy": clean_acc, "spend": spend,
        "max_abs_delta": float(np.abs(tuner.delta_).max()),
        "wall_time_s": round(time.time() - t0, 2),
    }
    write_json(run.report_json, report)
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
    fig = render_report(rows, tuner.delta_, float(tuner.epsilon), tuner.history_,
                        tuner.baseline_, job.title,
                        _summary_lines(job, tuner, metrics, spend, clean_acc),
                        captions, tuner.best_step_)
    save_png(run.report_png, fig)
    return report


def print_summary(report: dict[str, Any], run: RunFolder) -> None:
    """The end-of-run summary on stdout."""
    if report.get("kind", "classification") != "classification":
        from blackbox_dft.cli.beyond import print_beyond_summary

        print_beyond_summary(report, run)
        return
    m = report.get("test")
    spend = report["spend"]
    print(f"run folder: {run.path}")
    if m:
        print(f"held-out test accuracy: before {m['accuracy_before']:.3f}  after "
              f"{m['accuracy_after']:.3f}  (balanced {m['balanced_accuracy_before']:.3f} -> "
              f"{m['balanced_accuracy_after']:.3f}, {m['n_images']} images)")
        print(f"PSNR {m['psnr']:.2f} dB   SSIM {m['ssim']:.4f}   max |delta| "
              f"{report['max_abs_delta']:.2f} grey levels")
    if report.get("unshifted_test_accuracy") is not None:
        print(f"accuracy on the same test images without the shift: "
              f"{report['unshifted_test_accuracy']:.3f}")
    fit = report["fit"]
    print(f"queries used: {fit['queries']} by the fit ({fit['steps']} steps, kept step "
          f"{fit['best_step']}); {spend['asked']} asked in all, {spend['paid']} paid, "
          f"{spend['saved']} answered by the cache")
    if spend.get("cost") is not None:
        print(f"money spent: {money(spend['cost'])}")
    print(f"wrote {run.delta}, {run.report_json}, {run.report_png}")
