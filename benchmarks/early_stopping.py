"""Early stopping: queries saved and held-out accuracy lost against spending the whole budget.

Writes ``benchmarks/results/early_stopping.{json,md}`` whole. Usage::

    python benchmarks/early_stopping.py            # face task, budget 10,000, seeds 0-2
    python benchmarks/early_stopping.py --quick    # synthetic task, budget 2,000, seed 0
    python benchmarks/early_stopping.py --budget 30000 --seeds 0,1,2,3,4

For each seed: one DataFineTuner fit with the library defaults and the whole budget, and one
per patience (a share of the budget, ``EarlyStopping(patience)``); the stopped fit follows the
same trajectory until it stops, so the difference is what stopping cost. Held-out accuracy
is ``evaluate`` on the task's test split.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
from common import command_line, load_task, out_dir, parser, task_kind, write_results

from blackbox_dft import DataFineTuner
from blackbox_dft.core.stopping import EarlyStopping

SHARES = (0.1, 0.2, 0.3)


def one_fit(task: Any, seed: int, budget: int, patience: int | None) -> dict[str, Any]:
    """Queries, steps and held-out accuracy of one fit (patience None: the whole budget)."""
    t0 = time.time()
    es = None if patience is None else EarlyStopping(patience=patience)
    tuner = DataFineTuner(task.model, task_kind(task), scores=getattr(task, "scores",
                                                                      "probabilities"),
                          query_budget=budget, early_stopping=es, seed=seed, progress=False)
    ev = tuner.fit(*task.train, validation=task.val).evaluate(*task.test)
    return {"queries": tuner.queries_, "stopped": tuner.stopped_early_,
            "saved": tuner.queries_saved_by_stopping_, "steps": tuner.n_steps_,
            "before": ev["accuracy_before"], "after": ev["accuracy_after"],
            "seconds": round(time.time() - t0, 1)}


def run(task_name: str, budget: int, seeds: list[int],
        shares: tuple[float, ...] = SHARES) -> dict[str, Any]:
    """Every seed's full fit and its early-stopped fits, and the means per patience."""
    task = load_task(task_name)
    rows = []
    for seed in seeds:
        row: dict[str, Any] = {"seed": seed, "full": one_fit(task, seed, budget, None)}
        for share in shares:
            row[f"{share:g}"] = one_fit(task, seed, budget, round(share * budget))
        print(f"seed {seed}: {row}", flush=True)
        rows.append(row)
    summary = {}
    for share in shares:
        k = f"{share:g}"
        summary[k] = {
            "patience": round(share * budget),
            "saved_mean": float(np.mean([r[k]["saved"] for r in rows])),
            "saved_share_mean": float(np.mean([r[k]["saved"] for r in rows])) / budget,
            "stopped": sum(bool(r[k]["stopped"]) for r in rows),
            "accuracy_lost_mean": float(np.mean([r["full"]["after"] - r[k]["after"]
                                                 for r in rows])),
            "accuracy_lost_max": float(max(r["full"]["after"] - r[k]["after"] for r in rows))}
    return {"task": task_name, "budget": budget, "seeds": seeds, "shares": list(shares),
            "runs": rows, "summary": summary}


def markdown(res: dict[str, Any]) -> str:
    """The table: per patience, queries saved and held-out accuracy lost (means over seeds)."""
    b, n = res["budget"], len(res["seeds"])
    full = np.mean([r["full"]["after"] for r in res["runs"]])
    before = np.mean([r["full"]["before"] for r in res["runs"]])
    lines = [f"# Early stopping: {res['task']} task, budget {b}, seeds {res['seeds']}", "",
             f"Whole budget: held-out accuracy {before:.3f} -> {full:.3f} (mean of {n}).", "",
             "| patience (queries) | fits stopped | queries saved (mean) | share of budget "
             "| accuracy lost (mean) | accuracy lost (worst seed) |",
             "|---|---|---|---|---|---|"]
    for k, s in res["summary"].items():
        lines.append(f"| {s['patience']} ({float(k):.0%}) | {s['stopped']}/{n} | "
                     f"{s['saved_mean']:.0f} | {s['saved_share_mean']:.1%} | "
                     f"{s['accuracy_lost_mean']:+.4f} | {s['accuracy_lost_max']:+.4f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__, "synthetic task, budget 2,000, seed 0 (smoke test)")
    ap.add_argument("--budget", type=int, default=None, help="query budget (default 10000)")
    ap.add_argument("--seeds", default=None, help="comma list (default 0,1,2)")
    ap.add_argument("--task", default=None, help="face, smiling or synthetic (default face)")
    ap.add_argument("--shares", default=None, help="patience as shares of the budget, a comma "
                    "list (default 0.1,0.2,0.3)")
    args = ap.parse_args(argv)
    shares = tuple(float(s) for s in args.shares.split(",")) if args.shares else SHARES
    out = out_dir(ap, args, "early_stopping")
    task = args.task or ("synthetic" if args.quick else "face")
    budget = args.budget or (2000 if args.quick else 10_000)
    seeds = [int(s) for s in (args.seeds or ("0" if args.quick else "0,1,2")).split(",")]
    t0 = time.time()
    res = run(task, budget, seeds, shares)
    write_results(out, "early_stopping", res, markdown(res),
                  command=command_line(__file__, argv), quick=args.quick,
                  seconds=time.time() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
