"""Commands that use a finished run folder: evaluate, apply and info. No math here."""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm.auto import tqdm

from adapters import spec_secrets as cli_secrets
from adapters.specs import build_model, model_key
from blackbox_dft.cli.cache import open_cache
from blackbox_dft.cli.meter import Meter, money
from blackbox_dft.cli.options import FIT_OPTIONS, check_saved_options
from blackbox_dft.cli.run import DEMO_MODELS, load_data
from blackbox_dft.cli.runs import RunError, RunFolder, write_json
from blackbox_dft.data.datasets import SPLITS, DataError, read_image, split_dataset, write_image
from blackbox_dft.data.files import (
    FolderScan,
    pixel_limit,
    probe_image,
    remove_stale_parts,
    scan_images,
)
from blackbox_dft.tasks.classification import DataFineTuner
from blackbox_dft.tasks.verification import VerificationTuner

__all__ = ["evaluate_run", "apply_run", "info_run", "run_options", "use_model_url"]

_LOSSLESS = (".png", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")


def run_options(cfg: dict[str, Any], path: str = "config.json") -> dict[str, Any]:
    """The fit options of a run (defaults filled in; demo runs map to their stand-in),
    each checked as a config file's (``path``: the config.json, for the message)."""
    opts = {o.name: o.default for o in FIT_OPTIONS}
    saved = check_saved_options(cfg, path)
    if cfg.get("command") == "demo":
        opts["model"] = DEMO_MODELS.get(saved.get("task", ""), opts.get("model"))
        saved.pop("task", None)  # the demo's task (face, smiling) is not the fit's objective
    opts.update(saved)
    return opts


def use_model_url(opts: dict[str, Any], model_url: str | None, run: RunFolder) -> None:
    """Check the run's saved model URL can be used, with ``--model-url`` if given: a URL
    saved with literal secrets masked (``***``) needs it, equal to the saved one once every
    secret is masked; the model is then built from it (options keep the saved form)."""
    saved = opts.get("model")
    if model_url is None:
        if cli_secrets.is_url(saved) and cli_secrets.MASK in str(saved):
            raise RunError(f"run {run.path} was fitted with literal secrets in its model URL "
                           f"({saved}), which were not saved; give the URL again with "
                           "--model-url URL (better: its secrets as ${VAR}, environment "
                           "variables)")
        return
    if not cli_secrets.is_url(saved):
        raise RunError(f"run {run.path} has no model URL (its model is {saved}); "
                       "--model-url does not apply")
    if not cli_secrets.same_url(model_url, str(saved)):
        raise RunError(f"--model-url {cli_secrets.stored_spec(model_url)} is not the URL run "
                       f"{run.path} was fitted with ({saved}), secrets aside")
    cli_secrets.register_spec(model_url, as_spec=str(saved))


def _fitted(run: RunFolder) -> None:
    if not os.path.exists(run.delta):
        raise RunError(f"run {run.path} has no delta.npz yet (the fit did not finish); "
                       f"continue it with 'blackbox-dft resume {run.path}'")


def evaluate_run(run_path: str, data: str, *, split: str = "all", shift: str | None = None,
                 size: str | None = None, json_out: str | None = None, force: bool = False,
                 cache: bool = True, progress: bool = True,
                 model_url: str | None = None) -> dict[str, Any]:
    """Accuracy before/after the run's delta on ``data``; prints a summary, returns the
    metrics. Holds the run's lock while it writes to the run's query cache."""
    run = RunFolder.open(run_path)
    cfg = run.read_config()
    opts = run_options(cfg, run.config)
    cache_path = opts.get("cache_path") or run.cache
    inside = os.path.dirname(os.path.realpath(cache_path)) == os.path.realpath(run.path)
    if cache and inside:
        run.lock("evaluate")
    with run:
        return _evaluate(run, cfg, opts, data, split, shift, size, json_out, force,
                         cache_path if cache else None, progress, model_url)


def _evaluate(run: RunFolder, cfg: dict[str, Any], opts: dict[str, Any], data: str,
              split: str, shift: str | None, size: str | None, json_out: str | None,
              force: bool, cache_path: str | None, progress: bool,
              model_url: str | None) -> dict[str, Any]:
    from blackbox_dft.cli.beyond import evaluate_attributes, not_for

    kind = cfg.get("kind", "classification")
    if kind == "verification":
        raise not_for(kind, "evaluate", run)
    if kind == "classification":
        _fitted(run)
    use_model_url(opts, model_url, run)
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
    cached = open_cache(model, cache_path,
                         model_key(opts["model"], opts["preset"], opts["model_options"])
                         ) if cache_path else None
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


def _inside(path: str, folder: str) -> bool:
    """True when real path ``path`` is ``folder`` or lies under it (both real paths)."""
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:  # different drives (Windows)
        return False


def _apply_folders(input_dir: str, output_dir: str) -> tuple[str, str]:
    """Real paths of the input and output folders; DataError when writing the output could
    touch the input: the same folder (symlinks resolved), or one inside the other."""
    if not os.path.isdir(input_dir):
        raise DataError(f"input folder not found: {input_dir}")
    if os.path.lexists(output_dir) and not os.path.isdir(output_dir):
        raise DataError(f"--output {output_dir} exists and is not a folder")
    src, dst = os.path.realpath(input_dir), os.path.realpath(output_dir)
    if src == dst:
        raise DataError(f"--output {output_dir} is the --input folder {input_dir} (real path "
                        f"{src}); the originals would be overwritten: choose another folder")
    if _inside(dst, src):
        raise DataError(f"--output {output_dir} lies inside --input {input_dir} (real path "
                        f"{dst}); the next apply would perturb these copies again: choose a "
                        "folder outside it")
    if _inside(src, dst):
        raise DataError(f"--input {input_dir} lies inside --output {output_dir} (real path "
                        f"{src}); choose an output folder that does not hold the originals")
    return src, dst


def _apply_targets(input_dir: str, output_dir: str, files: list[str],
                   dst: str) -> dict[str, str]:
    """Output name (relative) -> input name for each file; lossy formats become .png.

    DataError when two inputs map to one output, or when an output path leads, through a
    symlinked file or folder, to an input file or out of the output folder (real ``dst``).
    """
    targets: dict[str, str] = {}
    for rel in files:
        stem, ext = os.path.splitext(rel)
        out = rel if ext.lower() in _LOSSLESS else stem + ".png"  # keep the delta exact
        if out in targets:
            raise DataError(f"{targets[out]} and {rel} would both be written as {out}")
        targets[out] = rel
    originals = {os.path.realpath(os.path.join(input_dir, rel)): rel for rel in files}
    for out in targets:
        dest = os.path.join(output_dir, out)
        real = os.path.realpath(dest)
        if real in originals:
            raise DataError(f"{dest} leads to the input file {originals[real]} (a symlink); "
                            "writing it would overwrite an original: remove the link")
        parent = os.path.realpath(os.path.dirname(dest))
        if not _inside(parent, dst):
            raise DataError(f"{os.path.dirname(dest)} leads outside --output {output_dir} (a "
                            f"symlinked folder, to {parent}): remove the link")
    return targets


def _shown(text: str) -> str:
    """``text`` safe to print on one line: control characters and undecodable bytes of file
    names (surrogates) escaped, as repr() would."""
    return "".join(c if c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF
                   else repr(c)[1:-1] for c in text)


def _names(items: list[str], what: str, first: int = 3) -> str:
    shown = ", ".join(_shown(n) for n in items[:first]) + (", ..." if len(items) > first else "")
    return f"{len(items)} {what}: {shown}"


def _apply_summary(written: int, output_dir: str, targets: dict[str, str],
                   unreadable: list[str], scan: FolderScan, stale: list[str]) -> str:
    """apply's summary line: what was written, and everything not written, with names."""
    renamed = sum(out != rel for out, rel in targets.items() if rel not in unreadable)
    notes = [f"{renamed} lossy files written as .png so the perturbation survives"] \
        if renamed else []
    skipped = [_names(items, what) for items, what in (
        (unreadable, "unreadable or over the pixel limit"),
        (scan.hidden, "hidden (name starts with '.')"), (scan.not_images, "not images"),
        (scan.links, "symlinked folders, not followed"),
        (scan.errors, "folders that could not be listed")) if items]
    if skipped:
        notes.append("skipped " + "; ".join(skipped))
    if stale:
        notes.append(f"removed {len(stale)} temporary files of an interrupted apply")
    return f"wrote {written} perturbed images to {_shown(output_dir)}" + (
        f" ({'; '.join(notes)})" if notes else "")


def apply_run(run_path: str, input_dir: str, output_dir: str, *, force: bool = False,
              skip_bad: bool = False, max_pixels: int | None = None) -> int:
    """Write perturbed, lossless copies of every image under ``input_dir``; returns the count.

    The originals are never written: the folders are compared by real path (symlinks
    resolved) and may not be nested; no output path may lead to an input file or out of
    ``output_dir``; each copy is written atomically (a temporary file, then a rename) and
    temporary files of a killed earlier apply are removed. Names starting with ".",
    symlinked folders (not followed) and non-image files are not processed and are counted
    in the summary line, as are unreadable images (``skip_bad``; else an error). Images over
    ``max_pixels`` (default :data:`blackbox_dft.data.files.MAX_IMAGE_PIXELS`) are refused before
    decoding.
    """
    from blackbox_dft.cli.beyond import not_for

    run = RunFolder.open(run_path)
    kind = run.read_config().get("kind", "classification")
    if kind == "per_attribute":
        raise not_for(kind, "apply", run, f"it holds one perturbation per attribute "
                      f"({run.deltas}), and apply writes images with one")
    _fitted(run)
    pixel_limit(max_pixels)
    _, dst = _apply_folders(input_dir, output_dir)
    tuner: Any = VerificationTuner.load(run.delta, None) if kind == "verification" \
        else DataFineTuner.load(run.delta, None)
    scan = scan_images(input_dir)
    if scan.errors and not skip_bad:
        raise DataError(f"cannot list {os.path.join(input_dir, scan.errors[0])}; fix it or pass "
                        "--skip-bad")
    if not scan.files:
        hidden = f"; skipped {_names(scan.hidden, 'hidden')}" if scan.hidden else ""
        raise DataError(f"no images under {input_dir}{hidden}")
    targets = _apply_targets(input_dir, output_dir, scan.files, dst)
    clash = [o for o in targets if os.path.lexists(os.path.join(output_dir, o))]
    if clash and not force:
        raise RunError(f"{os.path.join(output_dir, clash[0])} exists ({len(clash)} files would "
                       "be overwritten); pass --force")
    unreadable: list[str] = []

    def skip(rel: str, exc: DataError) -> None:
        if not skip_bad:
            raise exc
        reason = str(exc).split("; fix or remove it")[0].split("; skip it with")[0]
        print(f"skipped (--skip-bad): {_shown(reason)}", file=sys.stderr)
        unreadable.append(rel)

    for rel in scan.files:  # headers first (no decoding): a bad file stops before any write
        try:
            probe_image(os.path.join(input_dir, rel), max_pixels)
        except DataError as exc:
            skip(rel, exc)
    stale = remove_stale_parts(output_dir) if os.path.isdir(output_dir) else []
    written = 0
    for out, rel in targets.items():
        if rel in unreadable:
            continue
        try:
            img = read_image(os.path.join(input_dir, rel), max_pixels)
        except DataError as exc:  # past its header: broken pixel data
            skip(rel, exc)
            continue
        dest = os.path.join(output_dir, out)
        try:
            os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
            write_image(dest, tuner.transform(img[None])[0])
        except OSError as exc:
            raise DataError(f"cannot write {dest}: {exc.strerror or exc} ({written} of "
                            f"{len(targets)} written; each file is whole or absent)") from None
        written += 1
    print(_apply_summary(written, output_dir, targets, unreadable, scan, stale))
    if written == 0:
        raise DataError(f"no image under {input_dir} could be read ({len(unreadable)} skipped)")
    return written


def info_run(run_path: str) -> dict[str, Any]:
    """Print what a run folder holds: settings, progress, results, queries and money."""
    run = RunFolder.open(run_path)  # never locked: info only reads, and reads atomic files
    cfg = run.read_config()
    opts = run_options(cfg, run.config)
    params = cfg.get("params", {})
    budget = params.get("query_budget", 0)
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
        raise RunError(f"{run.config}: params.query_budget is {budget!r}, must be a whole "
                       "number >= 0; the file was altered or damaged")
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
        from blackbox_dft.cli.beyond import info_beyond

        report = run.read_report()
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
    report = run.read_report()
    if report and report.get("test"):
        m = report["test"]
        print(f"test accuracy {m['accuracy_before']:.3f} -> {m['accuracy_after']:.3f}, "
              f"PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f}")
        out["test"] = m
    _info_spend(run, opts, out, budget, queries, report)
    return out


def _info_spend(run: RunFolder, opts: dict[str, Any], out: dict[str, Any], budget: int,
                queries: int, report: Any) -> None:
    try:
        spend = run.read_spend()
    except RunError as exc:  # say so loudly, but still show the rest of the run
        print(f"warning: {exc}", file=sys.stderr)
        spend = {}
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
