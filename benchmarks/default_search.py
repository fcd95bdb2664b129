"""Search for better defaults on the face task: DataFineTuner variants, 1,000-10,000 queries.

The variants are committed in ``benchmarks/variants/default_search.json``: campaigns, each
with its seeds, a base spec and variants (overrides of the base, in the spec form of
``qe_methods.run_ours``). Every (campaign, variant, seed) is fitted on the face task under
blur (sigma 1), epsilon 8, and scored on the held-out test split at the table's milestones
(1,000 / 3,000 / 10,000 queries), with the PSNR of the perturbation kept at the largest.
A campaign either fits once at its budget and reads each milestone off that fit (the best
latent by validation so far: ``"fits": "read"``, the earlier campaigns), or, with
``"per_budget": true``, fits once per milestone up to its budget and reads each at its end
(``"fits": "each"``: what a user with that budget gets, budget-dependent schedules
included). A campaign's ``budget`` (default: the file's) caps its milestones: screening
campaigns stop at 3,000. Later campaigns re-run a winner on fresh seeds, to confirm it
without the selection bias of the seeds it was picked on.

    python benchmarks/default_search.py                    # every campaign (hours)
    python benchmarks/default_search.py --campaigns 18,19   # some (written whole, alone)
    python benchmarks/default_search.py --campaigns 20 --merge   # plus the committed rest
    python benchmarks/default_search.py --quick             # synthetic task, seconds

``--merge`` keeps the runs of the campaigns not run now from the results file being
replaced (same ``--out``); the results keep, per campaign, the command that ran it
(``provenance``, carried over with the runs), and the table's note lists them.
"% of limit gain" is ``(accuracy - baseline) / (limit - baseline)``: the baseline (the
unperturbed shifted test split) is measured here, the limit is read from
``results/query_efficiency.json`` (blank where that file has no limit for the task).
Writes ``results/default_search.json`` and ``.md`` whole.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import numpy as np
from common import (
    HERE,
    RESULTS,
    command_line,
    load_task,
    out_dir,
    parallel_map,
    parser,
    write_results,
)
from qe_methods import EPSILON, make_perturbation, run_ours, test_metrics

from blackbox_dft.core.images import apply_delta, psnr

VARIANTS = os.path.join(HERE, "variants", "default_search.json")
Job = tuple[str, Any, str, dict[str, Any], int, list[int], bool]


def job(args: Job) -> dict[str, Any]:
    """One (campaign, variant, seed): ``(task, campaign id, variant, spec, seed, milestones,
    per_budget)`` -> a run: held-out accuracy at each milestone, PSNR at the largest."""
    task_name, campaign, name, spec, seed, milestones, per_budget = args
    task = load_task(task_name)
    t0 = time.perf_counter()
    acc = {}
    for budget in (milestones if per_budget else milestones[-1:]):
        snaps, pert = run_ours(task, seed, budget, dict(spec))
        for m in ([budget] if per_budget else milestones):
            z = [z for q, z in snaps if q <= m][-1]
            acc[str(m)] = test_metrics(task, pert, z)[0]
    x = task.test[0]
    delta = pert.to_delta(np.asarray(z, np.float32), (int(x.shape[1]), int(x.shape[2])), EPSILON)
    return {"campaign": campaign, "variant": name, "spec": spec, "seed": seed,
            "accuracy": acc, "fits": "each" if per_budget else "read",
            "psnr_db": psnr(x, apply_delta(x, delta)), "wall_s": time.perf_counter() - t0}


def limit_accuracy(task: str, path: str = os.path.join(RESULTS, "query_efficiency.json")
                   ) -> float | None:
    """The limit's held-out accuracy on ``task`` from query_efficiency's results, if any."""
    try:
        with open(path, encoding="utf-8") as fh:
            limit = json.load(fh)["summary"].get(task, {}).get("limit")
    except (OSError, ValueError, KeyError):
        return None
    return None if limit is None else float(limit["accuracy"])


def _psnr(rs: list[dict[str, Any]]) -> str:
    v = [r["psnr_db"] for r in rs if r.get("psnr_db") is not None]
    if not v:
        return "-"  # not recorded (a run read from log lines)
    finite = [p for p in v if np.isfinite(p)]
    if not finite:
        return "inf (delta 0)"
    return f"{np.mean(finite):.2f}" + (f" ({len(v) - len(finite)} x delta 0)"
                                        if len(finite) < len(v) else "")


def _cell(rs: list[dict[str, Any]], m: int, baseline: float, limit: float | None) -> str:
    """``mean ± std (% of limit gain)`` at milestone ``m`` over the runs that reached it."""
    a = np.array([r["accuracy"][str(m)] for r in rs if str(m) in r["accuracy"]])
    if not len(a):
        return "-"
    gain = "" if limit is None or limit <= baseline else \
        f" ({(a.mean() - baseline) / (limit - baseline):.0%})"
    return f"{a.mean():.3f} ± {a.std():.3f}{gain}"


def table(runs: list[dict[str, Any]], milestones: list[int], baseline: float,
          limit: float | None, retired: list[dict[str, Any]]) -> str:
    """Mean ± std over seeds (and % of the limit's gain) per (campaign, variant), in order."""
    lines = ["| variant | campaign | seeds | fits | "
             + " | ".join(f"acc @ {m:,} (% of limit gain)" for m in milestones)
             + " | PSNR dB (largest budget) |",
             "|---|---|---|---|" + "---|" * (len(milestones) + 1)]
    for campaign, name in dict.fromkeys((r["campaign"], r["variant"]) for r in runs):
        rs = [r for r in runs if r["variant"] == name and r["campaign"] == campaign]
        seeds = sorted(r["seed"] for r in rs)
        lines.append(f"| {name} | {campaign} | {_seeds(seeds)} | {rs[0].get('fits', 'read')} | "
                     + " | ".join(_cell(rs, m, baseline, limit) for m in milestones)
                     + f" | {_psnr(rs)} |")
    lines += ["", f"Baseline (shifted test split, no perturbation): {baseline:.3f}; limit: "
              + ("-" if limit is None else f"{limit:.3f} (results/query_efficiency.json)") + ".",
              "fits: `read` = one fit at the campaign's budget read at each milestone (the best "
              "latent by validation so far); `each` = one fit per budget, read at its end."]
    lines += [f"Campaign {c['id']} not run: {c['retired']}." for c in retired]
    return "\n".join(lines) + "\n"


def _seeds(seeds: list[int]) -> str:
    """``0-9`` for a run of consecutive seeds, else the list."""
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(str(s) for s in seeds)


def make_jobs(section: dict[str, Any], campaigns: list[dict[str, Any]]) -> list[Job]:
    """One job per (campaign, variant, seed) of the campaigns not retired."""
    jobs = []
    for c in campaigns:
        if "retired" in c:
            continue
        budget = int(c.get("budget", section["budget"]))
        ms = [int(m) for m in c.get("milestones", section["milestones"]) if int(m) <= budget]
        for name, over in c["variants"].items():
            jobs += [(section["task"], c["id"], name, {**c["base"], **over}, seed, ms,
                      bool(c.get("per_budget", False))) for seed in c["seeds"]]
    return jobs


def carried_over(path: str, ran: set[str], known: set[str]
                 ) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The runs of ``path`` (an earlier results file) whose campaign is in ``known`` and not
    in ``ran``, and where each of their campaigns came from (the file's ``provenance``; for
    a file written before it was kept, the file's own command)."""
    try:
        with open(path, encoding="utf-8") as fh:
            old = json.load(fh)
    except (OSError, ValueError):
        return [], {}
    keep = []
    for r in old.get("runs", []):
        # files written before issue 16 name the campaign "batch" and the PSNR by budget
        r = {**r, "campaign": r.get("campaign", r.get("batch")),
             "psnr_db": r.get("psnr_db", r.get("psnr_db_10000"))}
        if str(r["campaign"]) in known - ran:
            keep.append(r)
    fallback = f"`{old['command']}`" if old.get("command") else \
        "an earlier `python benchmarks/default_search.py`"
    prov = old.get("provenance") or {}
    return keep, {c: str(prov.get(c, fallback)) for c in {str(r["campaign"]) for r in keep}}


def provenance_note(prov: dict[str, str], order: list[str]) -> str:
    """One line per source: which campaigns each command (or record) produced."""
    groups: dict[str, list[str]] = {}
    for c in sorted(prov, key=order.index):
        groups.setdefault(prov[c], []).append(c)
    parts = [f"campaign{'s' if len(cs) > 1 else ''} {', '.join(cs)}: {src}"
             for src, cs in groups.items()]
    return "Where each campaign's runs come from: " + "; ".join(parts) + ".\n\n"


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__, "synthetic task, 2 variants, 1 seed, 1,200 queries (smoke test)")
    ap.add_argument("--variants", default=VARIANTS,
                    help="variant table (default: benchmarks/variants/default_search.json)")
    ap.add_argument("--campaigns", default=None, help="comma list of campaign ids (default: all)")
    ap.add_argument("--merge", action="store_true", help="keep the other campaigns' runs from "
                    "the results file being replaced (default: write only what ran)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    out = out_dir(ap, args, "default_search")
    with open(args.variants, encoding="utf-8") as fh:
        spec = json.load(fh)
    section = spec["quick"] if args.quick else spec
    campaigns = all_campaigns = section["campaigns"]
    if args.campaigns:
        ids = [c.strip() for c in args.campaigns.split(",") if c.strip()]
        known = [str(c["id"]) for c in campaigns]
        bad = [c for c in ids if c not in known]
        if bad:
            ap.error(f"unknown campaign {bad[0]!r}; the table has {', '.join(known)}")
        campaigns = [c for c in campaigns if str(c["id"]) in ids]
    task = section["task"]
    milestones = sorted({int(m) for c in all_campaigns
                         for m in c.get("milestones", section["milestones"])})
    kept, prov = carried_over(os.path.join(out, "default_search.json"),
                              {str(c["id"]) for c in campaigns},
                              {str(c["id"]) for c in all_campaigns}) if args.merge else ([], {})
    command = command_line(__file__, argv)
    prov.update({str(c["id"]): f"`{command}`" for c in campaigns})
    t0 = time.perf_counter()
    runs = []
    for r in parallel_map(job, make_jobs(section, campaigns), args.workers, ordered=True):
        runs.append(r)
        print(r["campaign"], r["variant"], r["seed"], r["accuracy"], flush=True)
    order = [str(c["id"]) for c in all_campaigns]
    if args.merge:
        runs = sorted(kept + runs, key=lambda r: order.index(str(r["campaign"])))
    note = provenance_note(prov, order)
    baseline = test_metrics(load_task(task), make_perturbation("1x1"), np.zeros((1, 1, 3)))[0]
    limit = limit_accuracy(task)
    retired = [c for c in all_campaigns if "retired" in c]
    md = note + table(runs, milestones, baseline, limit, retired)
    payload = {"task": task, "epsilon": EPSILON, "budget": int(section["budget"]),
               "milestones": milestones,
               "variants_file": os.path.relpath(args.variants, os.path.dirname(HERE)),
               "baseline": baseline, "limit": limit,
               "retired": {str(c["id"]): c["retired"] for c in retired},
               "provenance": {c: prov[c] for c in sorted(prov, key=order.index)}, "runs": runs}
    write_results(out, "default_search", payload, md, command=command, quick=args.quick,
                  seconds=time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
