"""``demo``: a classification job on a built-in task (BlazeFace on blurred LFW face crops, or
the smiling stand-in), and the fit options a demo run stands for (for evaluate and info)."""

from __future__ import annotations

from typing import Any

from blackbox_dft.adapters.spec_secrets import model_label
from blackbox_dft.adapters.specs import model_key
from blackbox_dft.adapters.standins.tasks import load_task
from blackbox_dft.cli.jobs import budget_images
from blackbox_dft.cli.kinds import CLASSIFICATION, Job
from blackbox_dft.cli.options import DemoOptions, FitOptions, RunOptions
from blackbox_dft.tasks.classification import DataFineTuner

__all__ = ["DEMO_MODELS", "DEMO_SHIFTS", "demo_job", "demo_fit_options"]

DEMO_MODELS = {"face": "standin:blazeface", "smiling": "standin:smiling"}
DEMO_SHIFTS = {"face": "blur:sigma=1", "smiling": "blur:sigma=0.7"}


def demo_job(opts: DemoOptions) -> Job:
    """The demo's job; ``opts.shift`` is set to the task's default shift when not given (so
    that config.json names it)."""
    shift = opts.shift = opts.shift or DEMO_SHIFTS.get(opts.task)
    task = load_task(opts.task, shift=shift, seed=opts.seed)
    kw: dict[str, Any] = {"task": "multiclass", "seed": opts.seed, "progress": False}
    if opts.epsilon is not None:
        kw["epsilon"] = float(opts.epsilon)
    kw["query_budget"] = budget_images(opts.budget, opts.cost_per_1000)
    params = DataFineTuner(task.model, **kw).get_config()
    spec = DEMO_MODELS.get(opts.task, f"task:{opts.task}")
    return Job(CLASSIFICATION, "demo", task.model, model_key(spec, None, {}), task.train,
               task.val, task.test, list(task.class_names), params,
               f"demo: {opts.task} task under {task.shift.spec()} with "
               f"{model_label(task.model)}",
               run=RunOptions(checkpoint_every=opts.checkpoint_every, cache=opts.cache,
                              out=opts.out),
               cost_per_1000=opts.cost_per_1000, test_clean=task.test_clean)


def demo_fit_options(demo: DemoOptions) -> FitOptions:
    """The fit options a demo run stands for: its stand-in model, its shift, budget, price,
    seed and run settings (the demo's task names no data: evaluate takes ``--data``)."""
    opts = FitOptions()
    opts.model.spec = DEMO_MODELS.get(demo.task)
    opts.model.cost_per_1000 = demo.cost_per_1000
    opts.data.shift = demo.shift
    opts.tuner.epsilon = demo.epsilon
    opts.tuner.budget = demo.budget
    opts.seed = demo.seed
    opts.run = RunOptions(checkpoint_every=demo.checkpoint_every, cache=demo.cache,
                          out=demo.out)
    return opts
