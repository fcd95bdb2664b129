"""Run a job in its run folder, whatever its kind: the query cache, the money meter and the
progress bar around the tuner; then the result, ``history.jsonl``, ``report.json`` and the
figure. Written once over :class:`~blackbox_dft.cli.kinds.RunKind`; no math here."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tqdm.auto import tqdm

from blackbox_dft.adapters.spec_secrets import model_label
from blackbox_dft.cli.cache import CachedModel, open_cache
from blackbox_dft.cli.config import ConfigError
from blackbox_dft.cli.kinds import Job
from blackbox_dft.cli.meter import Meter
from blackbox_dft.cli.report import save_png
from blackbox_dft.cli.runs import RunFolder, write_json
from blackbox_dft.core.progress import progress_bar
from blackbox_dft.core.state import FitState
from blackbox_dft.core.stopping import check_early_stopping

__all__ = ["execute"]


@contextmanager
def _metered(job: Job, run: RunFolder, budget: int,
             progress: bool) -> Iterator[tuple[Meter, tqdm[Any]]]:
    """The job's model behind the query cache (unless ``--no-cache``) and a meter with its
    progress bar; both closed at the end. The bar counts the fit's budget plus the
    evaluation, starting at the queries a checkpoint already holds."""
    cache: CachedModel | None = None
    if job.run.cache:
        cache = open_cache(job.model, job.run.cache_path or run.cache, job.key)
    done = 0
    if os.path.exists(run.checkpoint):
        done = FitState.load(run.checkpoint)[0].queries  # lost queries are replayed
    eval_cost = job.eval_cost()
    bar = progress_bar(progress, total=budget + eval_cost, initial=min(done, budget),
                       unit="img", desc=f"DFT {model_label(job.model)}")
    try:
        meter = Meter(cache if cache is not None else job.model, bar, cache, job.cost_per_1000,
                      budget - done + eval_cost, ledger=run.spend)
        meter.name = model_label(job.model)  # what the saved result names: scrubbed of secrets
        yield meter, bar
    finally:
        bar.close()
        if cache is not None:
            cache.close()


def _patience(tuner: Any) -> int | None:
    """The tuner's early-stopping patience in queries (None: off)."""
    es = check_early_stopping(getattr(tuner, "early_stopping", None))
    return None if es is None else int(es.patience)


def execute(job: Job, run: RunFolder, *, progress: bool = True) -> dict[str, Any]:
    """Fit (or continue from its checkpoint) ``job`` in ``run``; write its result, history,
    report and figure; return the report."""
    t0 = time.time()
    kind = job.kind
    tuner = kind.make_tuner(job.params)
    run.read_spend()  # a damaged ledger is refused before anything is paid, never reset to 0
    with _metered(job, run, int(tuner.query_budget), progress) as (meter, bar):
        tuner.model = meter

        def on_step(rec: dict[str, Any], state: FitState) -> bool:
            post = meter.postfix()
            if "val_accuracy" in rec:
                post = {"val_acc": f"{rec['val_accuracy']:.3f}", **post}
            bar.set_postfix(post, refresh=False)
            return False  # never stops the fit

        try:
            kind.fit(tuner, job, run.checkpoint, on_step)
        except ValueError as exc:
            if "early_stopping needs validation data" in str(exc):
                raise ConfigError("early stopping needs a validation split: give "
                                  "--val-fraction > 0 or --no-early-stopping") from None
            if "query_budget" in str(exc):
                raise ConfigError(f"--budget too small: {exc}; re-run the fit with a larger "
                                  "--budget and --force") from None
            raise
        finally:
            if hasattr(tuner, "history_"):
                run.write_history(tuner.history_)
        tuner.save(kind.result_path(run))
        results = kind.test_results(tuner, job, meter)
    report: dict[str, Any] = {
        "command": job.command, "kind": kind.name, "title": job.title,
        "model": model_label(job.model), "params": job.params, **results,
        **kind.report_fields(tuner, job), "spend": meter.totals(),
        "early_stopping": {"patience": _patience(tuner),
                           "stopped": bool(getattr(tuner, "stopped_early_", False)),
                           "queries_saved": int(getattr(tuner, "queries_saved_by_stopping_",
                                                        0))},
        "wall_time_s": round(time.time() - t0, 2)}
    write_json(run.report_json, report)
    figure = kind.figure(tuner, job, report)
    if figure is not None:
        save_png(run.report_png, figure)
    return report
