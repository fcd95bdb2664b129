"""Stopping rules replayed on whole-budget fits: queries saved and held-out accuracy lost.

``early_stopping.py`` runs one stopped fit per patience. A stopped fit follows the
whole-budget fit's trajectory until it stops, right after a validation, and keeps the
latent kept at that validation. So one traced whole-budget fit per (task, seed)
(``es_tasks.trace``: every validation, which latent it kept, that latent's held-out
accuracy) answers any patience offline. The replay is checked against the real stopped
fits: ``--check early_stopping`` compares every (task, seed, patience) that
``results/early_stopping.json`` ran.

    python benchmarks/stopping_rules.py --seeds 100,...,114 --name stopping_rules
    python benchmarks/stopping_rules.py --quick    # synthetic task, budget 2,000, seed 0

Writes ``results/<name>.{json,md}``: per task and patience (shares of the budget, at
least the CLI's floor of 1,000 queries), the fits stopped, the mean share of the budget
saved, the mean and worst held-out accuracy lost, and the mean over tasks.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from typing import Any

import numpy as np
from common import command_line, out_dir, parallel_map, parser, write_results
from es_tasks import add_arguments, patience_table, settings, trace

import blackbox_dft
from blackbox_dft.cli.tuner_args import PATIENCE_FLOOR

SHARES = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4)


def code_key() -> str:
    """A digest of the code a trace depends on (the package, es_tasks, common): cached
    traces are reused only by the same code."""
    h = hashlib.sha256()
    pkg = os.path.dirname(os.path.abspath(blackbox_dft.__file__))
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(pkg) for f in fs
                   if f.endswith(".py"))
    here = os.path.dirname(os.path.abspath(__file__))
    for path in files + [os.path.join(here, "es_tasks.py"), os.path.join(here, "common.py")]:
        with open(path, "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()[:16]


def job(args: tuple[str, int, int, str | None]) -> dict[str, Any]:
    """One traced whole-budget fit, read from / written to the cache folder (if any) so a
    failure later in the run loses none of the fits already done."""
    task, seed, budget, cache = args
    path = None if cache is None else os.path.join(cache, f"{task}-{seed}-{budget}.json")
    if path is not None and os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            return {**json.load(fh), "cached": True}
    t0 = time.time()
    out = trace(task, seed, budget)
    out["seconds"] = round(time.time() - t0, 1)
    print(f"{task} seed {seed}: {out['before']:.3f} -> {out['after']:.3f}, "
          f"{len(out['validations'])} validations, {out['seconds']} s", flush=True)
    if path is not None:
        os.makedirs(cache, exist_ok=True)
        with open(path + ".tmp", "w", encoding="utf-8") as fh:
            json.dump(out, fh)
        os.replace(path + ".tmp", path)
    return out


def stop_at(validations: list[dict[str, Any]], patience: int) -> int | None:
    """The validation after which ``EarlyStopping(patience)`` stops the fit (None: never).

    Mirrors the engine: the baseline sets each slot's "since", a validation whose kept
    latent changed for a slot (its key beat that slot's best) resets it, and the fit stops
    after the first validation where every slot went ``patience`` queries unimproved.
    """
    since: list[int] = []
    for i, v in enumerate(validations):
        if i == 0:
            since = [v["queries"]] * len(v["best_steps"])
            continue
        prev = validations[i - 1]["best_steps"]
        since = [v["queries"] if b != p else s
                 for b, p, s in zip(v["best_steps"], prev, since, strict=True)]
        if all(v["queries"] - s >= patience for s in since):
            return i
    return None


def replay(tr: dict[str, Any], patience: int) -> dict[str, Any]:
    """A traced fit stopped by ``patience``: stopped, queries saved, accuracy kept."""
    vs, budget = tr["validations"], tr["budget"]
    i = stop_at(vs, patience)
    if i is None:
        return {"stopped": False, "saved": 0, "after": tr["after"]}
    return {"stopped": True, "saved": budget - vs[i]["queries"], "after": vs[i]["accuracy"]}


def summarize(traces: list[dict[str, Any]], pats: dict[str, int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for task in dict.fromkeys(t["task"] for t in traces):
        ts = [t for t in traces if t["task"] == task]
        budget = ts[0]["budget"]
        out[task] = {"before": float(np.mean([t["before"] for t in ts])),
                     "after_full": float(np.mean([t["after"] for t in ts]))}
        for label, p in pats.items():
            rs = [replay(t, p) for t in ts]
            lost = [t["after"] - r["after"] for t, r in zip(ts, rs, strict=True)]
            out[task][label] = {
                "patience": p, "stopped": sum(r["stopped"] for r in rs),
                "saved_share_mean": float(np.mean([r["saved"] for r in rs])) / budget,
                "accuracy_lost_mean": float(np.mean(lost)),
                "accuracy_lost_max": float(max(lost))}
    return out


def check_against(traces: list[dict[str, Any]], path: str) -> list[str]:
    """Differences between the replay and the real stopped fits of ``path`` (an
    ``early_stopping.py`` results file), for every (task, seed, patience) both have."""
    with open(path, encoding="utf-8") as f:
        real = json.load(f)
    pats = real["patiences"]
    by_key = {(t["task"], t["seed"], t["budget"]): t for t in traces}
    diffs, compared = [], 0
    for row in real["runs"]:
        tr = by_key.get((row["task"], row["seed"], real["budget"]))
        if tr is None:
            continue
        if abs(tr["after"] - row["full"]["after"]) > 1e-9:
            diffs.append(f"{row['task']} seed {row['seed']}: whole-budget accuracy "
                         f"{tr['after']} here, {row['full']['after']} there")
        for label, p in pats.items():
            r, want = replay(tr, p), row[label]
            compared += 1
            if (r["stopped"], r["saved"]) != (want["stopped"], want["saved"]) \
                    or abs(r["after"] - want["after"]) > 1e-9:
                diffs.append(f"{row['task']} seed {row['seed']} patience {p}: replay "
                             f"{r}, real {({k: want[k] for k in r})}")
    return [f"compared {compared} stopped fits of {os.path.basename(path)}"] + diffs


def markdown(res: dict[str, Any]) -> str:
    b = res["budget"]
    lines = [f"# Stopping rules replayed: budget {b}, seeds {res['seeds']}", "",
             "Each (task, seed) is one whole-budget fit traced at every validation; a "
             "patience stops it after the first validation where no slot improved for "
             "that many queries, keeping that validation's latent. Accuracy lost = the "
             "whole-budget fit's held-out accuracy minus the stopped one's.", "",
             *patience_table(res)]
    lines += ["", "| patience | budget saved (mean over tasks) | accuracy lost (mean over "
              "tasks) |", "|---|---|---|"]
    for label, p in res["patiences"].items():
        es = [s[label] for s in res["summary"].values()]
        lines.append(f"| {p} ({label}) | {np.mean([e['saved_share_mean'] for e in es]):.1%} "
                     f"| {np.mean([e['accuracy_lost_mean'] for e in es]):+.4f} |")
    cached = sum(bool(t.get("cached")) for t in res["traces"])
    if cached:
        lines += ["", f"{cached} of {len(res['traces'])} traced fits were read from the cache "
                  "(traced by an earlier run of the same code; their time is not in this "
                  "run's)."]
    if res.get("check"):
        lines += ["", "Replay checked against the real stopped fits: " + "; ".join(res["check"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__, "synthetic task, budget 2,000, seed 0 (smoke test)")
    add_arguments(ap, "stopping_rules", SHARES, "patiences as shares of the budget")
    ap.add_argument("--check", default=None, help="an early_stopping.py results name in "
                    "the output folder to check the replay against (e.g. early_stopping)")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(),
                                                    "blackbox_dft_stopping_rules"),
                    help="folder keeping each traced fit as it finishes, per version of the "
                    "code (a rerun reuses them; default: in the temporary folder)")
    ap.add_argument("--no-cache", dest="no_cache", action="store_true",
                    help="trace every fit again and keep nothing")
    args = ap.parse_args(argv)
    tasks, budget, seeds, shares = settings(ap, args, SHARES)
    out = out_dir(ap, args, "stopping_rules")
    pats = {f"{s:g}": max(PATIENCE_FLOOR, round(s * budget)) for s in shares}
    t0 = time.time()
    cache = None if args.no_cache or args.quick else os.path.join(args.cache, code_key())
    jobs = [(t, s, budget, cache) for t in tasks for s in seeds]
    traces = list(parallel_map(job, jobs, 1 if args.quick else args.workers))
    # the results keep each trace's validations (what the replay reads); the per-step
    # training losses stay in the cache folder
    res: dict[str, Any] = {"tasks": tasks, "budget": budget, "seeds": seeds,
                           "patiences": pats, "summary": summarize(traces, pats),
                           "traces": [{k: v for k, v in t.items() if k != "steps"}
                                      for t in traces]}
    if args.check:
        res["check"] = check_against(traces, os.path.join(out, f"{args.check}.json"))
        print("\n".join(res["check"]), flush=True)
    write_results(out, args.name, res, markdown(res), command=command_line(__file__, argv),
                  quick=args.quick, seconds=time.time() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
