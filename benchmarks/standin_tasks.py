"""The stand-in tasks with the library defaults: accuracy, balanced accuracy, PSNR, controls.

For each task (face vs non-face under blur with BlazeFace; smiling under a shift with
the emotion model) and each seed, fit ``DataFineTuner`` with its defaults (epsilon 8,
10,000 queries) on the training split (validation split for selection) and measure
on the held-out test split: accuracy and balanced accuracy before (shifted, no
perturbation) and after, PSNR and SSIM of the perturbed test images against the
shifted ones, and the control that costs no optimization: random full-resolution
perturbations at the same epsilon (entries +-epsilon; 5 draws per seed, best and mean).
The split is the task's documented one (seed 0); seeds vary the fit and the controls.

    python benchmarks/standin_tasks.py             # 2 tasks x 5 seeds, both configurations
    python benchmarks/standin_tasks.py --quick     # 1 seed, 300 queries, 2 draws (smoke test)
    python benchmarks/standin_tasks.py --energy-penalty 0.0001 --name standin_tasks_energy

A full run measures two configurations: the library defaults (``results/standin_tasks.*``)
and the defaults plus ``energy_penalty=1e-4`` (``results/standin_tasks_energy.*``);
``--energy-penalty X`` measures that one configuration only, written as ``--name``. Each
results file says how long its run took (``seconds``). Needs the ``standins`` extra and
``requirements-standins.txt``.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
from common import TASKS, command_line, load_task, out_dir, parallel_map, parser, write_results

EPSILON = 8.0
# (file stem, energy_penalty) of a full run: the defaults, and the penalty that trades a
# little accuracy for PSNR (the README compares the two).
CONFIGURATIONS = (("standin_tasks", 0.0), ("standin_tasks_energy", 1e-4))


def _metrics(task: Any, images: np.ndarray) -> tuple[float, float]:
    from blackbox_dft.core.metrics import classification_metrics
    y = task.test[1]
    pred = task.model.predict(images).argmax(1)
    m = classification_metrics(y, pred, "binary", 2)
    return float(m["accuracy"]), float(m["balanced_accuracy"])


def run_one(job: tuple[str, str, int, int, float, int]) -> dict[str, Any]:
    """Fit the defaults on one task and seed; score the test split and the controls."""
    from blackbox_dft import DataFineTuner
    from blackbox_dft.core.images import apply_delta

    name, shift, seed, budget, energy_penalty, draws = job
    task = load_task(name)
    x, _ = task.test
    t0 = time.perf_counter()
    tuner = DataFineTuner(task.model, "binary", epsilon=EPSILON, query_budget=budget,
                          energy_penalty=energy_penalty, seed=seed, progress=False)
    tuner.fit(*task.train, validation=task.val)
    wall = time.perf_counter() - t0
    ev = tuner.evaluate(*task.test)
    rng = np.random.default_rng([seed, 11])
    noise = []
    for _ in range(draws):
        d = EPSILON * (2.0 * rng.integers(0, 2, size=x.shape[1:]) - 1.0)
        noise.append(_metrics(task, apply_delta(x, d.astype(np.float32))))
    clean = _metrics(task, task.test_clean)
    return {"task": name, "shift": shift, "seed": seed, "budget": budget,
            "queries": int(tuner.queries_), "wall_s": wall,
            "clean": {"accuracy": clean[0], "balanced_accuracy": clean[1]},
            "before": {"accuracy": ev["accuracy_before"],
                       "balanced_accuracy": ev["balanced_accuracy_before"]},
            "after": {"accuracy": ev["accuracy_after"],
                      "balanced_accuracy": ev["balanced_accuracy_after"]},
            "psnr_db": ev["psnr"], "ssim": ev["ssim"],
            "max_abs_delta": ev["max_abs_delta"],
            "random_noise": {"accuracy": [a for a, _ in noise],
                             "balanced_accuracy": [b for _, b in noise]}}


def _ms(values: list[float], fmt: str = ".3f") -> str:
    a = np.asarray(values, dtype=float)
    return f"{a.mean():{fmt}} ± {a.std():{fmt}}"


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over seeds, per task."""
    out: dict[str, Any] = {}
    for name in dict.fromkeys(r["task"] for r in runs):
        rs = [r for r in runs if r["task"] == name]
        s: dict[str, Any] = {"shift": rs[0]["shift"], "seeds": len(rs)}
        for key in ("accuracy", "balanced_accuracy"):
            before = np.array([r["before"][key] for r in rs])
            after = np.array([r["after"][key] for r in rs])
            best_noise = np.array([max(r["random_noise"][key]) for r in rs])
            mean_noise = np.array([np.mean(r["random_noise"][key]) for r in rs])
            s[key] = {"clean": float(np.mean([r["clean"][key] for r in rs])),
                      "before": float(before.mean()),
                      "after_mean": float(after.mean()), "after_std": float(after.std()),
                      "gain_mean": float((after - before).mean()),
                      "gain_std": float((after - before).std()),
                      "random_noise_best_mean": float(best_noise.mean()),
                      "random_noise_mean": float(mean_noise.mean()),
                      "gain_over_best_noise_mean": float((after - best_noise).mean())}
        for key in ("psnr_db", "ssim", "queries", "wall_s"):
            v = np.array([r[key] for r in rs], dtype=float)
            v = v[np.isfinite(v)]  # PSNR is inf where validation kept delta = 0
            s[key] = ({"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min())}
                      if v.size else {"mean": None, "std": None, "min": None})
        s["seeds_with_zero_delta"] = sum(1 for r in rs if r["max_abs_delta"] == 0.0)
        out[name] = s
    return out


def markdown(runs: list[dict[str, Any]], summary: dict[str, Any], budget: int) -> str:
    draws = len(runs[0]["random_noise"]["accuracy"])
    lines = [f"### Stand-in tasks, library defaults, epsilon {EPSILON:g}, budget {budget:,} "
             f"queries, mean ± std over seeds", "",
             "| task (shift) | seeds | metric | clean | shifted baseline | after DFT | gain "
             f"| random noise at epsilon (best of {draws} / mean) | gain over best noise |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, s in summary.items():
        rs = [r for r in runs if r["task"] == name]
        for key, label in (("accuracy", "accuracy"), ("balanced_accuracy", "balanced acc.")):
            m = s[key]
            lines.append(
                f"| {name} ({s['shift']}) | {s['seeds']} | {label} | {m['clean']:.3f} "
                f"| {m['before']:.3f} | {_ms([r['after'][key] for r in rs])} "
                f"| {_ms([r['after'][key] - r['before'][key] for r in rs], '+.3f')} "
                f"| {m['random_noise_best_mean']:.3f} / {m['random_noise_mean']:.3f} "
                f"| {m['gain_over_best_noise_mean']:+.3f} |")
    lines += ["", "| task | PSNR dB (mean ± std, min) | SSIM | seeds that kept delta = 0 "
              "| queries | fit wall s |", "|---|---|---|---|---|---|"]
    for name, s in summary.items():
        p, q = s["psnr_db"], s["ssim"]
        ps = "-" if p["mean"] is None else \
            f"{p['mean']:.2f} ± {p['std']:.2f}, min {p['min']:.2f}"
        ss = "-" if q["mean"] is None else f"{q['mean']:.3f}"
        lines.append(f"| {name} | {ps} | {ss} | {s['seeds_with_zero_delta']} "
                     f"| {s['queries']['mean']:,.0f} | {s['wall_s']['mean']:.0f} |")
    lines += ["", "PSNR and SSIM compare the perturbed test images with the shifted ones "
              "(what the perturbation costs in image quality), over the seeds whose kept "
              "delta is not 0 (validation keeps delta = 0 when nothing beats it)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__, "1 seed, 300 queries, 2 noise draws (smoke test)")
    ap.add_argument("--tasks", default="face,smiling", help="comma list (default: face,smiling)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--budget", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--energy-penalty", type=float, default=None,
                    help="measure only DataFineTuner(energy_penalty=X) (default: the defaults "
                         "and energy_penalty=1e-4, two results files)")
    ap.add_argument("--name", default=None,
                    help="output file stem with --energy-penalty (default: standin_tasks)")
    args = ap.parse_args(argv)
    out = out_dir(ap, args, "standin_tasks")
    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    bad = [t for t in names if t not in TASKS]
    if bad:
        ap.error(f"unknown task {bad[0]!r}; choose from {', '.join(TASKS)}")
    if args.name is not None and args.energy_penalty is None:
        ap.error("--name goes with --energy-penalty (a full run writes both configurations)")
    configs = (CONFIGURATIONS if args.energy_penalty is None
               else ((args.name or "standin_tasks", args.energy_penalty),))
    seeds, budget = (1, 300) if args.quick else (args.seeds, args.budget)
    draws = 2 if args.quick else 5
    command = command_line(__file__, argv)
    t0 = time.perf_counter()
    # one pool for every configuration: the workers load the models once
    jobs = [(t, TASKS[t], s, budget, penalty, draws) for _, penalty in configs
            for t in names for s in range(seeds)]
    all_runs = list(parallel_map(run_one, jobs, args.workers))
    for name, penalty in configs:
        runs = [r for r, j in zip(all_runs, jobs, strict=True) if j[4] == penalty]
        summary = summarize(runs)
        md = markdown(runs, summary, budget)
        if penalty:
            md = md.replace("library defaults,", f"library defaults + energy_penalty "
                            f"{penalty:g},", 1)
        payload = {"epsilon": EPSILON, "budget": budget, "seeds": list(range(seeds)),
                   "energy_penalty": penalty, "summary": summary, "runs": runs}
        write_results(out, name, payload, md, command=command, quick=args.quick,
                      seconds=time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
