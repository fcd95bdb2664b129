"""Commands that read a run folder: ``evaluate`` (the run's result on a dataset) and ``info``
(settings, progress, results, money). Each is written once over the run's kind; no math."""

from __future__ import annotations

import os
from typing import Any

from blackbox_dft.cli.cache import open_cache
from blackbox_dft.cli.jobs import load_data, open_model
from blackbox_dft.cli.logs import NOTES
from blackbox_dft.cli.meter import Meter, money
from blackbox_dft.cli.report import stopping_line
from blackbox_dft.cli.runs import RunError, RunFolder, write_json
from blackbox_dft.cli.saved import SavedRun, read_saved, use_model_url
from blackbox_dft.core.progress import progress_bar
from blackbox_dft.data.datasets import SPLITS, DataError, Dataset, split_dataset

__all__ = ["evaluate_run", "info_run"]


def evaluate_run(run_path: str, data: str, *, split: str = "all", shift: str | None = None,
                 size: str | None = None, json_out: str | None = None, force: bool = False,
                 cache: bool = True, progress: bool = True,
                 model_url: str | None = None) -> dict[str, Any]:
    """The run's result before / after on ``data`` (its ``split``; ``shift`` and ``size``
    replace the run's, ``"none"``: no shift); prints the metrics and writes them to
    ``json_out``. Holds the run's lock while it writes to the run's query cache."""
    run = RunFolder.open(run_path)
    saved = read_saved(run)
    cache_path = saved.options.run.cache_path or run.cache
    inside = os.path.dirname(os.path.realpath(cache_path)) == os.path.realpath(run.path)
    if cache and inside:
        run.lock("evaluate")
    with run:
        saved.kind.check_evaluable(run)
        use_model_url(saved, model_url, run)
        d = saved.options.data
        if shift is not None:
            d.shift = None if shift in ("", "none") else shift
        if size is not None:
            d.size = size
        if json_out and os.path.exists(json_out) and not force:
            raise RunError(f"{json_out} exists; pass --force to overwrite it")
        ds = _part(saved, data, split)
        metrics = _evaluate(run, saved, ds, f"{data} ({split}, {len(ds)} images)",
                            cache_path if cache else None, progress)
    metrics.update(data=data, split=split)
    if json_out:
        write_json(json_out, metrics)
    return metrics


def _part(saved: SavedRun, data: str, split: str) -> Dataset:
    """``data`` loaded as the run's data was, and its ``split`` part (``all``: the whole)."""
    opts = saved.options
    whole = load_data(opts.data, opts.seed, data)
    if split == "all":
        return whole
    parts = split_dataset(whole, opts.data.val_fraction, opts.data.test_fraction, opts.seed)
    part = dict(zip(SPLITS, parts, strict=True))[split]
    if part is None:
        raise DataError(f"{data} has no {split} split")
    return part


def _evaluate(run: RunFolder, saved: SavedRun, ds: Dataset, where: str,
              cache_path: str | None, progress: bool) -> dict[str, Any]:
    """Metrics of the run's result on ``ds`` through the cache and the meter, printed."""
    model, key = open_model(saved.options.model)
    cached = open_cache(model, cache_path, key) if cache_path else None
    planned = saved.kind.eval_cost(len(ds), len(ds.classes))
    bar = progress_bar(progress, total=planned, unit="img", desc="evaluate")
    meter = Meter(cached or model, bar, cached, saved.options.model.cost_per_1000, planned)
    try:
        metrics, lines = saved.kind.evaluate(run, ds, meter, where)
    finally:
        bar.close()
        if cached is not None:
            cached.close()
    metrics["spend"] = sp = meter.totals()
    line = f"queries: {sp['asked']} asked, {sp['paid']} paid, {sp['saved']} answered by the cache"
    if sp.get("cost") is not None:
        line += f"; money spent {money(sp['cost'])}"
    print("\n".join([*lines, line]))
    return metrics


def info_run(run_path: str) -> dict[str, Any]:
    """Print what a run folder holds: settings, progress, results, queries and money."""
    run = RunFolder.open(run_path)  # never locked: info only reads, and reads atomic files
    cfg = run.read_config()
    saved = read_saved(run)
    budget = saved.params.get("query_budget", 0)
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
        raise RunError(f"{run.config}: params.query_budget is {budget!r}, must be a whole "
                       "number >= 0; the file was altered or damaged")
    out: dict[str, Any] = {"path": run.path, "command": saved.command,
                           "version": cfg.get("version")}
    print(f"run folder: {run.path} ({saved.command}, blackbox_dft {cfg.get('version')})")
    opts = saved.options
    what = f"model: {opts.model.spec}" + (f" (preset {opts.model.preset})"
                                          if opts.model.preset else "")
    if saved.demo is not None:
        what += f"; task {saved.demo.task} under shift {saved.demo.shift}"
    else:
        source = f"pairs: {opts.data.pairs}" if opts.data.pairs else f"data: {opts.data.source}"
        what += f"; {source}" + (f", shift {opts.data.shift}" if opts.data.shift else "")
    print(what)
    params = saved.params
    print(f"mode: {saved.kind.name}; epsilon {params.get('epsilon')} grey levels, budget "
          f"{budget} queries, seed {params.get('seed')}")
    status, queries, state = run.fit_progress()
    report = run.read_report()
    if state is not None:
        out.update(step=state.step, best_step=state.best_step, done=state.done)
        for line in saved.kind.progress_lines(state):
            print(line)
    elif report is not None:  # a finished run written without a checkpoint
        status, queries = "fit done", int(report["fit"].get("queries", 0))
    print(f"status: {status}; fit queries {queries} of {budget}")
    out.update(status=status, queries=queries)
    if report is not None:
        for line in saved.kind.result_lines(report):
            print(line)
        stopping = stopping_line(report)
        if stopping is not None:
            print(stopping)
        if report.get("test"):
            out["test"] = report["test"]
    _info_spend(run, opts.model.cost_per_1000, out, budget, queries, report)
    return out


def _info_spend(run: RunFolder, price: float | None, out: dict[str, Any], budget: int,
                queries: int, report: dict[str, Any] | None) -> None:
    try:
        spend = run.read_spend()
    except RunError as exc:  # say so loudly, but still show the rest of the run
        NOTES.warning("%s", exc)
        spend = {}
    if spend:
        print(f"images asked {spend.get('asked', 0)}, paid {spend.get('paid', 0)}, answered by "
              f"the cache {spend.get('saved', 0)}")
    if price is not None:
        spent = spend.get("paid", 0) * price / 1000.0
        rest = 0 if report else max(0, budget - queries)
        print(f"money spent {money(spent)}; projected total {money(spent + rest * price / 1000)}"
              f" (at {money(price)} per 1000 images)")
        out.update(spent=spent, projected=spent + rest * price / 1000)
    out["spend"] = spend
