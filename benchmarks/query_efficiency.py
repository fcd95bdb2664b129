"""Query efficiency: held-out accuracy against queries, ours vs peers vs controls vs the limit.

On the stand-in tasks with real faces (face vs non-face under blur with BlazeFace;
smiling under a contrast shift with the emotion model), every method gets the same
loss, latent, epsilon (8 grey levels) and query accounting (every image sent to the
model counts, validation included). Held-out test accuracy and balanced accuracy
are recorded at query milestones, mean and spread over seeds; the near-exact
gradient run ("limit") and the no-optimization controls frame the gains.

    python benchmarks/query_efficiency.py            # full run, writes results/query_efficiency.*
    python benchmarks/query_efficiency.py --quick    # CI smoke run on a synthetic black box
    python benchmarks/query_efficiency.py --tasks face --seeds 3
    python benchmarks/query_efficiency.py --methods none --merge a.json b.partial.jsonl

Methods without a budget-dependent schedule (all of ours with constant step sizes,
all peers, whose update rules do not read the budget) run ONCE per seed at the
largest budget and are read at every milestone (the best latent by validation so far,
exactly what a run stopped at that budget would return, up to its final validation);
methods with a budget-dependent schedule (cosine) run once per budget.
Peers run on the library default's latent (16x16, nearest) and on 8x8 bilinear; the
limit runs on 8x8 bilinear (192 coordinates; 5 steps of ``2 x 192 x 100`` queries).
Needs the ``bench`` extra (nevergrad, cma, matplotlib) and the ``standins`` extra.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from qe_methods import RUNNERS, best_constant_offset, make_perturbation, random_latents, task_kind  # noqa: E402
from qe_report import summarize, write_outputs  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
EPSILON = 8.0
MILESTONES = (1000, 3000, 10000, 30000)
GRID = (250, 500, 750, 1000, 1500, 2000, 3000, 4000, 5000, 7000, 10000, 14000, 20000, 30000,
        36000, 42000, 45000, 60000)
TASKS = {"face": "blur:sigma=1", "smiling": "blur:sigma=0.7"}

# name -> (group, runner, spec, budget-dependent schedule?, largest budget)
Method = tuple[str, str, dict[str, Any], bool, int]


def methods(quick: bool, variants_top: int = 10000, peer_top: int = 30000) -> dict[str, Method]:
    """Every method in the comparison; ``quick`` keeps one of each kind.

    The library default and the peers run to 30,000 queries; our other variants to
    ``variants_top`` (10,000 by default, to keep the run under 30 minutes on 2 cores); the
    peers to ``peer_top`` (30,000 by default; 45,000 tells whether a peer needs 3x the
    default's queries to reach 90% of the limit's gain).
    """
    top, mid = 30000, variants_top
    # Step sizes put each variant's typical step near the default's (SPSA gradient RMS is
    # about 0.013 per grey level on the face task at z = 0).
    sgd_lr = {"sgd": 75.0, "momentum": 15.0, "nesterov": 15.0, "sign_sgd": 0.5, "adam": 0.5}

    def ours(est: str, opt: str, latent: str = "8x8", **kw: Any) -> dict[str, Any]:
        return {"estimator": [est, {"directions": 1, "step": 2.0}], "optimizer": opt,
                "learning_rate": sgd_lr[opt], "latent": latent, **kw}

    m: dict[str, Method] = {
        "default": ("ours", "ours", {}, False, top),
        "shared SPSA b32 (old default)": ("ours", "ours", {
            "estimator": ["SPSA", {"directions": 1, "step": 2.0}], "batch_size": 32,
            "latent": "16x16-nearest"}, False, top),
        "SPSA+Adam 8x8": ("ours", "ours", ours("SPSA", "adam"), False, top),
        "old default (Adam lr eps/8)": ("ours", "ours", {**ours("SPSA", "adam"),
                                                         "learning_rate": 1.0}, False, mid),
        "SPSA+Adam full": ("ours", "ours", ours("SPSA", "adam", "full"), False, mid),
        "per-image SPSA b16": ("ours", "ours", {
            "estimator": ["SPSA", {"directions": 1, "step": 2.0, "per_image": True}],
            "batch_size": 16}, False, top),
        "per-image SPSA b8": ("ours", "ours", {
            "estimator": ["SPSA", {"directions": 1, "step": 2.0, "per_image": True}],
            "batch_size": 8}, False, top),
        "NES+Adam 8x8": ("ours", "ours", ours("NES", "adam"), False, mid),
        "RandomDirections+Adam 8x8": ("ours", "ours", ours("RandomDirections", "adam"), False, mid),
        "SPSA+momentum 8x8": ("ours", "ours", ours("SPSA", "momentum"), False, mid),
        "SPSA+Nesterov 8x8": ("ours", "ours", ours("SPSA", "nesterov"), False, mid),
        "SPSA+signSGD 8x8": ("ours", "ours", ours("SPSA", "sign_sgd"), False, mid),
        "SPSA+signSGD full": ("ours", "ours", ours("SPSA", "sign_sgd", "full"), False, mid),
    }
    # Peers on the default's latent (16x16, nearest) and on 8x8 bilinear.
    peers: dict[str, dict[str, Any]] = {
             "ng OnePlusOne": {"peer": "OnePlusOne"}, "ng DiagonalCMA": {"peer": "DiagonalCMA"},
             "ng SPSA": {"peer": "SPSA", "batch": 32}, "ng TBPSA": {"peer": "TBPSA", "batch": 32},
             "pycma diagonal": {"peer": "cma"}, "random search": {"peer": "random"}}
    for name, spec in peers.items():
        m[name] = ("peer", "peer", {**spec, "latent": "16x16-nearest"}, False, peer_top)
        m[f"{name} 8x8"] = ("peer", "peer", {**spec, "latent": "8x8"}, False, peer_top)
    if quick:
        keep = ("default", "SPSA+signSGD 8x8", "ng OnePlusOne", "pycma diagonal",
                "random search", "ng SPSA")
        m = {k: (g, r, s, sched, 2000) for k, (g, r, s, sched, _) in m.items() if k in keep}
    return m


# -- tasks ---------------------------------------------------------------------------------
class SyntheticTask:
    """The synthetic black box of ``blackbox_dft.testing`` shaped like an adapters Task."""

    scores = "logits"

    def __init__(self) -> None:
        from blackbox_dft.testing import make_problem

        p = make_problem(0, n_train=100, n_val=40, n_test=60)
        self.model, self.train, self.val, self.test = p.model, p.train, p.val, p.test


_TASK_CACHE: dict[str, Any] = {}


def get_task(name: str) -> Any:
    """Build (once per process) the task called ``name``; ``synthetic`` for --quick."""
    if name not in _TASK_CACHE:
        if name == "synthetic":
            _TASK_CACHE[name] = SyntheticTask()
        else:
            from adapters.standins.tasks import load_task
            _TASK_CACHE[name] = load_task(name, shift=TASKS[name])
    return _TASK_CACHE[name]


def test_metrics(task: Any, latent: str, z: np.ndarray) -> tuple[float, float]:
    """Held-out (accuracy, balanced accuracy) of latent ``z``; not counted as queries."""
    from blackbox_dft.core.images import apply_delta
    from blackbox_dft.core.metrics import classification_metrics
    from blackbox_dft.core.objectives import Objective
    x, y = task.test
    pert = make_perturbation(latent)
    delta = pert.to_delta(np.asarray(z, np.float32), (int(x.shape[1]), int(x.shape[2])), EPSILON)
    obj = Objective(task_kind(task), getattr(task, "scores", "probabilities"))
    pred = obj.predict_labels(task.model.predict(apply_delta(x, delta)))
    m = classification_metrics(y, pred, task_kind(task), int(y.max()) + 1)
    return float(m["accuracy"]), float(m["balanced_accuracy"])


# -- one job -------------------------------------------------------------------------------
def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run one (task, method, seed, budget) and score its snapshots on the test split."""
    import cv2
    cv2.setNumThreads(1)  # one core per worker
    task = get_task(job["task"])
    t0 = time.perf_counter()
    snaps = RUNNERS[job["runner"]](task, job["seed"], job["budget"], job["spec"])
    wall = time.perf_counter() - t0
    latent = job["spec"].get("latent")
    if latent is None:  # ours without a latent: the library default's; peers: 8x8
        from blackbox_dft import DataFineTuner
        latent = (_latent_name(DataFineTuner(None)._components()[1])
                  if job["runner"] == "ours" else "8x8")
    points = job["points"] if job["points"] else [q for q, _ in snaps]
    scored: dict[int, tuple[float, float]] = {}
    out = []
    for p in points:
        i = max((k for k, (q, _) in enumerate(snaps) if q <= p), default=0)
        if i not in scored:
            scored[i] = test_metrics(task, latent, snaps[i][1])
        out.append({"queries": int(p), "accuracy": scored[i][0],
                    "balanced_accuracy": scored[i][1]})
    return {**{k: job[k] for k in ("task", "method", "seed", "budget")},
            "points": out, "queries_used": int(snaps[-1][0]), "wall_s": wall}


def _latent_name(pert: Any) -> str:
    cfg = pert.get_config()
    if cfg["type"] == "FullResolution":
        return "full"
    size = "x".join(map(str, cfg["size"]))
    return size if cfg["interpolation"] == "linear" else f"{size}-{cfg['interpolation']}"


def make_jobs(task_names: list[str], seeds: list[int], quick: bool, limit_steps: int,
              peers_8x8: bool = False, peer_top: int = 30000) -> list[dict[str, Any]]:
    """All jobs, longest first (better packing on the worker pool).

    Peers on the 8x8 bilinear latent only with ``peers_8x8`` (they double the peers' cost).
    """
    jobs = []
    for t in task_names:
        for name, (group, runner, spec, scheduled, top) in methods(
                quick, peer_top=peer_top).items():
            if group == "peer" and name.endswith(" 8x8") and not peers_8x8:
                continue
            budgets = [b for b in MILESTONES if b <= top] or [top]
            if quick:
                budgets = [top]
            for seed in seeds:
                if scheduled:
                    for b in budgets:
                        jobs.append({"task": t, "method": name, "seed": seed, "budget": b,
                                     "runner": runner, "spec": spec, "points": [b]})
                else:
                    pts = [g for g in GRID if g <= top] if not quick else [500, 1000, top]
                    jobs.append({"task": t, "method": name, "seed": seed, "budget": top,
                                 "runner": runner, "spec": spec, "points": pts})
        jobs.append({"task": t, "method": "limit", "seed": 0, "budget": 0, "runner": "limit",
                     "spec": {"steps": limit_steps, "latent": "8x8"}, "points": None})
    cost = {"limit": 1e9}
    return sorted(jobs, key=lambda j: -cost.get(j["method"], j["budget"]))


def controls(task_name: str, draws: int = 5) -> dict[str, Any]:
    """Baseline, random perturbations (best and mean of ``draws``) and the best offset."""
    task = get_task(task_name)
    out: dict[str, Any] = {"baseline": test_metrics(task, "1x1", np.zeros((1, 1, 3)))}
    for latent in ("8x8", "full"):
        accs = [test_metrics(task, latent, z) for z in random_latents(task, latent, draws, 0)]
        a = np.array(accs)
        out[f"random {latent}"] = {"mean": a.mean(axis=0).tolist(), "best": a.max(axis=0).tolist(),
                                   "draws": a.tolist()}
    z, q = best_constant_offset(task)
    out["constant offset"] = {"offset": float(z.ravel()[0]), "queries": q,
                              "test": test_metrics(task, "1x1", z)}
    return out


def machine_facts() -> dict[str, Any]:
    """Versions and machine facts recorded with the results."""
    import blackbox_dft
    facts: dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(),
        "machine": platform.machine(), "processor": platform.processor(),
        "cpus": os.cpu_count(), "blackbox_dft": blackbox_dft.__version__,
        "numpy": np.__version__}
    for mod in ("cv2", "nevergrad", "cma", "matplotlib"):
        try:
            facts[mod] = __import__(mod).__version__
        except ImportError:
            facts[mod] = None
    return facts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="synthetic model, tiny budgets (CI)")
    ap.add_argument("--tasks", default=None, help="comma list (default: face,smiling)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--methods", default=None, help="comma list of method names to run")
    ap.add_argument("--limit-steps", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--peers-8x8", action="store_true",
                    help="also run the peers on the 8x8 bilinear latent")
    ap.add_argument("--peer-budget", type=int, default=45000,
                    help="largest budget of the peers (default 45000: 3x the default's 90%% point)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--name", default="query_efficiency")
    ap.add_argument("--merge", nargs="*", default=[], metavar="JSON",
                    help="also take the runs of earlier outputs for (task, method) not rerun")
    args = ap.parse_args(argv)
    tasks = ["synthetic"] if args.quick else (args.tasks or "face,smiling").split(",")
    seeds = list(range(2 if args.quick else args.seeds))
    jobs = make_jobs(tasks, seeds, args.quick, 2 if args.quick else args.limit_steps,
                     args.peers_8x8, args.peer_budget)
    if args.methods:
        keep = set(args.methods.split(","))
        jobs = [j for j in jobs if j["method"] in keep]
    t0 = time.perf_counter()
    results = []
    os.makedirs(args.out, exist_ok=True)
    partial = os.path.join(args.out, f"{args.name}.partial.jsonl")
    with mp.get_context("spawn").Pool(args.workers) as pool, open(partial, "w") as log:
        for r in pool.imap_unordered(run_job, jobs):
            results.append(r)
            log.write(json.dumps(r) + "\n")  # kept if the run is interrupted (--merge it)
            log.flush()
            print(f"[{time.perf_counter() - t0:6.0f}s] {r['task']:8s} {r['method']:26s} "
                  f"seed {r['seed']} budget {r['budget']:6d}: test acc "
                  f"{r['points'][-1]['accuracy']:.3f} ({r['wall_s']:.0f}s)", flush=True)
    for old_path in args.merge:
        with open(old_path) as fh:
            old_runs = ([json.loads(line) for line in fh if line.strip()]
                        if old_path.endswith(".jsonl") else json.load(fh)["runs"])
        rerun = {(r["task"], r["method"]) for r in results}
        results += [r for r in old_runs if (r["task"], r["method"]) not in rerun]
        seen = {r["task"] for r in results}
        tasks = [t for t in dict.fromkeys(tasks + [r["task"] for r in results]) if t in seen]
        seeds = sorted(set(seeds) | {r["seed"] for r in old_runs})
    ctrl = {t: controls(t) for t in tasks}
    doc = {"benchmark": "query_efficiency", "quick": args.quick, "epsilon": EPSILON,
           "seeds": seeds, "milestones": [500, 1000, 2000] if args.quick else list(MILESTONES),
           "tasks": {t: TASKS.get(t) for t in tasks},
           "methods": {k: {"group": g, "spec": s, "budget_dependent_schedule": sch}
                       for k, (g, _, s, sch, _) in methods(args.quick).items()},
           "peer_budget": args.peer_budget,
           "machine": machine_facts(), "wall_seconds": time.perf_counter() - t0,
           "workers": args.workers, "merged_from": [os.path.basename(m) for m in args.merge],
           "job_seconds_total": sum(r["wall_s"] for r in results),
           "controls": ctrl, "runs": results}
    doc["summary"] = summarize(doc)
    write_outputs(doc, args.out, args.name)
    print(f"done in {doc['wall_seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
