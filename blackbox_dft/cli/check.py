"""``blackbox-dft check RUN``: does the run's delta still help the model behind its spec?

Re-queries the run's canary set (kept by the fit: :mod:`blackbox_dft.tasks.guard`) without
and with the delta, prints the one-line report, writes it to ``RUN/check.json`` (atomic)
and exits 0 when the delta still helps, :data:`EXIT_DELTA_HURTS` (7) when it no longer
does. The model is built from the run's saved spec (``--model-url`` as for ``resume``),
never through the run's query cache: a cache would answer with the old model's scores.
Holds the run's lock while it works.
"""

from __future__ import annotations

from blackbox_dft.cli.exits import EXIT_DELTA_HURTS, EXIT_OK
from blackbox_dft.cli.jobs import open_model
from blackbox_dft.cli.runs import RunError, RunFolder, write_json
from blackbox_dft.cli.saved import read_saved, use_model_url
from blackbox_dft.tasks.guard import GuardReport, check_delta

__all__ = ["check_run", "EXIT_DELTA_HURTS", "CHECK_FILE"]

#: exit code of ``check`` when the delta no longer helps the model (the model changed)
CHECK_FILE = "check.json"


def check_run(run_path: str, *, model_url: str | None = None, tolerance: float = 0.05,
              budget: int | None = None) -> tuple[int, GuardReport]:
    """Check the run at ``run_path``; returns the exit code and the report (printed, and
    written to ``RUN/check.json``). budget: images it may send (None: the canary twice)."""
    with RunFolder.open(run_path, lock="check") as run:
        saved = read_saved(run)
        if saved.kind.name != "classification":
            raise RunError(f"run {run.path} is a {saved.kind.name} run; check works on "
                           "classification runs (fit --data, demo), whose result keeps a "
                           "canary set")
        saved.kind.check_fitted(run)
        use_model_url(saved, model_url, run)
        model, _ = open_model(saved.options.model)
        report = check_delta(saved.kind.result_path(run), model, tolerance=tolerance,
                             budget=budget)
        write_json(run.file(CHECK_FILE), report.to_dict())
    print(report.summary())
    return (EXIT_OK if report.delta_helps else EXIT_DELTA_HURTS), report

