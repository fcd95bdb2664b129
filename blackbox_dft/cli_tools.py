"""Commands that use a finished run folder: evaluate, apply and info. No math here."""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm.auto import tqdm

from .cache import CachedModel
from .cli_models import build_model, model_key
from .cli_options import FIT_OPTIONS
from .cli_run import DEMO_MODELS, load_data
from .data import SPLITS, DataError, read_image, split_dataset, write_image
from .loaders import list_images
from .meter import Meter, money, read_ledger
from .runs import RunError, RunFolder, read_json, write_json
from .tuner import DataFineTuner
from .verification import VerificationTuner

__all__ = ["evaluate_run", "apply_run", "info_run", "run_options"]

_LOSSLESS = (".png", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")


def run_options(cfg: dict[str, Any]) -> dict[str, Any]:
    """The fit options of a run (defaults filled in; demo runs map to their stand-in)."""
    opts = {o.name: o.default for o in FIT_OPTIONS}
    opts.update(cfg.get("options", {}))
    if cfg.get("command") == "demo":
        opts["model"] = DEMO_MODELS.get(opts.get("task", ""), opts.get("model"))
    return opts


def _fitted(run: RunFolder) -> None:
    if not os.path.exists(run.delta):
        raise RunError(f"run {run.path} has no delta.npz yet (the fit did not finish); "
                       f"continue it with 'blackbox-dft resume {run.path}'")


def evaluate_run(run_path: str, data: str, *, split: str = "all", shift: str | None = None,
                 size: str | None = None, json_out: str | None = None, force: bool = False,
                 cache: bool = True, progress: bool = True) -> dict[str, Any]:
    """Accuracy before/after the run's delta on ``data``; prints a summary, returns the metrics."""
    from .cli_beyond import evaluate_attributes, not_for

    run = RunFolder.open(run_path)
    cfg = run.read_config()
    kind = cfg.get("kind", "classification")
    if kind == "verification":
        raise not_for(kind, "evaluate", run)
    if kind == "classification":
        _fitted(run)
    opts = run_options(cfg)
    if shift is not None:
        opts["shift"] = None if shift in ("", "none") else shift
    if size is not None:
        opts["size"] = size
    if json_out and os.path.exists(json_out) and not force:
        raise RunError(f"{json_out} exists; pass --force to overwrite it")
    whole = load_data(opts, data)
    if split == "all":
        ds = whole
    else:
        parts = split_dataset(whole, opts["val_fraction"], opts["test_fraction"], opts["seed"])
        part = dict(zip(SPLITS, parts, strict=True))[split]
        if part is None:
            raise DataError(f"{data} has no {split} split")
        ds = part
    model = build_model(opts["model"], preset=opts["preset"], options=opts["model_options"],
                        api_key_env=opts["api_key_env"], api_secret_env=opts["api_secret_env"])
    cached = CachedModel(model, opts.get("cache_path") or run.cache,
                         model_key(opts["model"], opts["preset"], opts["model_options"])
                         ) if cache else None
    planned = (1 + len(ds.classes) if kind == "per_attribute" else 2) * len(ds)
    bar = tqdm(total=planned, unit="img", desc="evaluate", disable=not progress,
               file=sys.stderr)
    meter = Meter(cached or model, bar, cached, opts.get("cost_per_1000"), planned)
    try:
        if kind == "per_attribute":
            metrics = evaluate_attributes(run, opts, ds, meter)
        else:
            tuner = DataFineTuner.load(run.delta, meter)
            metrics = tuner.evaluate(ds.images, ds.labels)
    finally:
        bar.close()
        if cached is not None:
            cached.close()
    metrics["spend"] = meter.totals()
    metrics["data"] = data
    metrics["split"] = split
    if kind == "per_attribute":
        _print_spend(metrics["spend"])
        if json_out:
            write_json(json_out, metrics)
        return metrics
    print(f"{data} ({split}, {len(ds)} images): accuracy before {metrics['accuracy_before']:.3f}"
          f"  after {metrics['accuracy_after']:.3f}")
    print(f"balanced accuracy before {metrics['balanced_accuracy_before']:.3f}  after "
          f"{metrics['balanced_accuracy_after']:.3f}")
    for tag in ("before", "after"):
        per = metrics.get(f"per_class_recall_{tag}")
        if per is not None:
            names = ds.classes
            shown = ", ".join(f"{names[int(k)] if int(k) < len(names) else k} "
                              f"{'-' if v is None else f'{v:.3f}'}" for k, v in per.items())
            print(f"recall per class {tag}: {shown}")
        att = metrics.get(f"per_attribute_{tag}")
        if att is not None:
            shown = ", ".join(f"{n} {a['accuracy']:.3f}"
                              for n, a in zip(ds.classes, att, strict=False))
            print(f"accuracy per attribute {tag}: {shown}")
    print(f"PSNR {metrics['psnr']:.2f} dB   SSIM {metrics['ssim']:.4f}")
    _print_spend(metrics["spend"])
    if json_out:
        write_json(json_out, metrics)
    return metrics


def _print_spend(sp: dict[str, Any]) -> None:
    line = f"queries: {sp['asked']} asked, {sp['paid']} paid, {sp['saved']} answered by the cache"
    if sp.get("cost") is not None:
        line += f"; money spent {money(sp['cost'])}"
    print(line)


def apply_run(run_path: str, input_dir: str, output_dir: str, *, force: bool = False,
              skip_bad: bool = False) -> int:
    """Write perturbed, lossless copies of every image under ``input_dir``; returns the count."""
    from .cli_beyond import not_for

    run = RunFolder.open(run_path)
    kind = run.read_config().get("kind", "classification")
    if kind == "per_attribute":
        raise not_for(kind, "apply", run, f"it holds one perturbation per attribute "
                      f"({run.deltas}), and apply writes images with one")
    _fitted(run)
    if not os.path.isdir(input_dir):
        raise DataError(f"input folder not found: {input_dir}")
    if os.path.abspath(input_dir) == os.path.abspath(output_dir):
        raise DataError("--output must differ from --input (the originals would be overwritten)")
    tuner: Any = VerificationTuner.load(run.delta, None) if kind == "verification" \
        else DataFineTuner.load(run.delta, None)
    files = list_images(input_dir)
    if not files:
        raise DataError(f"no images under {input_dir}")
    targets: dict[str, str] = {}
    renamed = 0
    for rel in files:
        stem, ext = os.path.splitext(rel)
        out = rel if ext.lower() in _LOSSLESS else stem + ".png"  # keep the delta exact
        renamed += out != rel
        if out in targets:
            raise DataError(f"{targets[out]} and {rel} would both be written as {out}")
        targets[out] = rel
    clash = [o for o in targets if os.path.exists(os.path.join(output_dir, o))]
    if clash and not force:
        raise RunError(f"{os.path.join(output_dir, clash[0])} exists ({len(clash)} files would "
                       "be overwritten); pass --force")
    written = 0
    for out, rel in targets.items():
        try:
            img = read_image(os.path.join(input_dir, rel))
        except DataError:
            if not skip_bad:
                raise
            print(f"skipped unreadable image: {rel}", file=sys.stderr)
            continue
        dest = os.path.join(output_dir, out)
        os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
        write_image(dest, tuner.transform(img[None])[0])
        written += 1
    note = f" ({renamed} lossy files written as .png so the perturbation survives)" if renamed \
        else ""
    print(f"wrote {written} perturbed images to {output_dir}{note}")
    return written


def info_run(run_path: str) -> dict[str, Any]:
    """Print what a run folder holds: settings, progress, results, queries and money."""
    run = RunFolder.open(run_path)
    cfg = run.read_config()
    opts = run_options(cfg)
    params = cfg.get("params", {})
    budget = int(params.get("query_budget", 0))
    out: dict[str, Any] = {"path": run.path, "command": cfg.get("command"),
                           "version": cfg.get("version")}
    print(f"run folder: {run.path} ({cfg.get('command')}, blackbox_dft {cfg.get('version')})")
    what = f"model: {opts['model']}" + (f" (preset {opts['preset']})" if opts.get("preset") else "")
    if cfg.get("command") == "demo":
        what += f"; task {opts.get('task')} under shift {opts.get('shift')}"
    else:
        source = f"pairs: {opts['pairs']}" if opts.get("pairs") else f"data: {opts.get('data')}"
        what += f"; {source}" + (f", shift {opts['shift']}" if opts.get("shift") else "")
    print(what)
    if cfg.get("kind", "classification") != "classification":
        from .cli_beyond import info_beyond

        report = read_json(run.report_json) if os.path.exists(run.report_json) else None
        info_beyond(run, cfg, report, out)
        _info_spend(run, opts, out, budget, int(out.get("queries", 0)), report)
        return out
    print(f"epsilon {params.get('epsilon')} grey levels, budget {budget} queries, "
          f"seed {params.get('seed')}")
    status, queries, state = run.fit_progress()
    if state is not None:
        out.update(step=state.step, best_step=state.best_step, done=state.done)
        vals = [r for r in state.history if r.get("val_accuracy") is not None]
        if state.baseline:
            print(f"validation accuracy at delta=0: {state.baseline['val_accuracy']:.3f}")
        best = [r for r in vals if r["step"] == state.best_step]
        if best:
            print(f"kept step {state.best_step}: validation accuracy "
                  f"{best[0]['val_accuracy']:.3f}")
    print(f"status: {status}; fit queries {queries} of {budget}")
    out.update(status=status, queries=queries)
    report = read_json(run.report_json) if os.path.exists(run.report_json) else None
    if report and report.get("test"):
        m = report["test"]
        print(f"test accuracy {m['accuracy_before']:.3f} -> {m['accuracy_after']:.3f}, "
              f"PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f}")
        out["test"] = m
    _info_spend(run, opts, out, budget, queries, report)
    return out


def _info_spend(run: RunFolder, opts: dict[str, Any], out: dict[str, Any], budget: int,
                queries: int, report: Any) -> None:
    spend = read_ledger(run.spend)
    if spend:
        print(f"images asked {spend.get('asked', 0)}, paid {spend.get('paid', 0)}, answered by "
              f"the cache {spend.get('saved', 0)}")
    price = opts.get("cost_per_1000")
    if price is not None:
        spent = spend.get("paid", 0) * price / 1000.0
        rest = 0 if report else max(0, budget - queries)
        print(f"money spent {money(spent)}; projected total {money(spent + rest * price / 1000)}"
              f" (at {money(price)} per 1000 images)")
        out.update(spent=spent, projected=spent + rest * price / 1000)
    out["spend"] = spend
