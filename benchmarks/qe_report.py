"""Summaries, the markdown table and the figure of ``query_efficiency.py``.

gain = held-out accuracy after - unperturbed (shifted) baseline; the limit's gain is
that of the near-exact-gradient run; "above control" subtracts the best control
(random perturbations, best of the draws on the test split itself, or the best
constant offset), which is an optimistic control and so a conservative comparison.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

import numpy as np
from common import write_results

TARGET = 0.9  # fraction of the limit's gain for "queries to reach"


def _curves(runs: list[dict[str, Any]]) -> dict[str, dict[int, list[list[float]]]]:
    """method -> queries -> [[accuracy, balanced accuracy] per seed]."""
    out: dict[str, dict[int, list[list[float]]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        for p in r["points"]:
            out[r["method"]][p["queries"]].append([p["accuracy"], p["balanced_accuracy"]])
    return out


def summarize(doc: dict[str, Any]) -> dict[str, Any]:
    """Per task: baseline, limit, controls and per-method statistics at each milestone."""
    summary: dict[str, Any] = {}
    for task, ctrl in doc["controls"].items():
        runs = [r for r in doc["runs"] if r["task"] == task]
        base = ctrl["baseline"][0]
        limit_runs = [r for r in runs if r["method"] == "limit"]
        limit = limit_runs[0]["points"][-1] if limit_runs else None
        gain = (limit["accuracy"] - base) if limit else float("nan")
        best_control = max(ctrl["random 8x8"]["best"][0], ctrl["random full"]["best"][0],
                           ctrl["constant offset"]["test"][0])
        methods: dict[str, Any] = {}
        for name, curve in _curves([r for r in runs if r["method"] != "limit"]).items():
            qs = sorted(curve)
            rows = {}
            for q in qs:
                a = np.array(curve[q])
                mean = a.mean(axis=0)
                rows[q] = {"accuracy_mean": float(mean[0]), "accuracy_std": float(a[:, 0].std()),
                           "balanced_accuracy_mean": float(mean[1]),
                           "balanced_accuracy_std": float(a[:, 1].std()), "n": len(a),
                           "accuracy_min": float(a[:, 0].min()),
                           "accuracy_max": float(a[:, 0].max()),
                           "fraction_of_limit_gain": float((mean[0] - base) / gain)
                           if gain > 0 else None,
                           "above_best_control": float(mean[0] - best_control)}
            reach = next((q for q in qs if rows[q]["accuracy_mean"] >= base + TARGET * gain),
                         None) if gain > 0 else None
            methods[name] = {"points": {str(q): v for q, v in rows.items()},
                             "queries_to_90pct_of_limit_gain": reach,
                             "largest_budget": max(qs)}
        summary[task] = {"baseline_accuracy": base, "baseline_balanced_accuracy":
                         ctrl["baseline"][1], "limit": limit,
                         "limit_queries": limit_runs[0]["queries_used"] if limit_runs else None,
                         "limit_gain": gain, "best_control_accuracy": best_control,
                         "methods": methods, "figures": _figures(methods, doc)}
    return summary


def _figures(methods: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    """The issue's figures: default's fraction of the limit gain; peers' query ratios."""
    fig: dict[str, Any] = {}
    d = methods.get("default")
    if d is None:
        return fig
    ten = d["points"].get("10000")
    fig["default_fraction_of_limit_gain_at_10k"] = ten["fraction_of_limit_gain"] if ten else None
    ours_q = d["queries_to_90pct_of_limit_gain"]
    fig["default_queries_to_90pct"] = ours_q
    ratios = {}
    for name, m in methods.items():
        if doc["methods"].get(name, {}).get("group") != "peer":
            continue
        q = m["queries_to_90pct_of_limit_gain"]
        if q is None:
            ratios[name] = {"queries": None, "ratio": None,
                            "note": f"never within {m['largest_budget']} queries"
                            + (f" (ratio > {m['largest_budget'] / ours_q:.1f})" if ours_q else "")}
        else:
            ratios[name] = {"queries": q, "ratio": q / ours_q if ours_q else None}
    fig["peers"] = ratios
    reached = [r["queries"] for r in ratios.values() if r["queries"] is not None]
    fig["best_peer_queries_to_90pct"] = min(reached) if reached else None
    fig["best_peer_ratio"] = (min(reached) / ours_q) if reached and ours_q else None
    return fig


def _cell(p: dict[str, Any] | None, key: str = "accuracy", gain: bool = False) -> str:
    """``mean ± std`` (with ``gain``: and the % of the limit's gain, where there is one)."""
    if p is None:
        return "-"
    frac = p.get("fraction_of_limit_gain") if gain else None
    return f"{p[key + '_mean']:.3f} ± {p[key + '_std']:.3f}" + (
        f" ({100 * frac:.0f}%)" if frac is not None else "")


def _seed_range(seeds: list[int]) -> str:
    return f"seeds {seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else f"seed {seeds[0]}"


def markdown(doc: dict[str, Any]) -> str:
    """Tables per task: accuracy (mean ± std over seeds) at each milestone, controls, limit."""
    lines = []
    for task, s in doc["summary"].items():
        ctrl = doc["controls"][task]
        lines += [f"### {task} ({doc['tasks'][task] or 'synthetic'}), epsilon "
                  f"{doc['epsilon']:g}, mean ± std over {_seed_range(doc['seeds'])} "
                  "(% of the limit's gain)", "",
                  "| method | group | seeds | "
                  + " | ".join(f"acc @ {m:,}" for m in doc["milestones"])
                  + " | bal. acc @ 10,000 | % of limit gain @ 10,000 | queries to 90% |",
                  "|---|---|---|" + "---|" * (len(doc["milestones"]) + 3)]
        for name, m in s["methods"].items():
            pts = m["points"]
            ten = pts.get("10000")
            frac = ten.get("fraction_of_limit_gain") if ten else None
            q = m["queries_to_90pct_of_limit_gain"]
            lines.append(
                f"| {name} | {doc['methods'].get(name, {}).get('group', '')} | "
                f"{max(p['n'] for p in pts.values())} | "
                + " | ".join(_cell(pts.get(str(x)), gain=True) for x in doc["milestones"])
                + f" | {_cell(ten, 'balanced_accuracy')} | "
                + (f"{100 * frac:.0f}%" if frac is not None else "-")
                + f" | {f'{q:,}' if q else 'not within ' + format(m['largest_budget'], ',')} |")
        lim = s["limit"]
        lines += ["", f"- unperturbed (shifted) baseline: accuracy {s['baseline_accuracy']:.3f}, "
                  f"balanced {s['baseline_balanced_accuracy']:.3f}",
                  "- limit (coordinate-wise central differences, whole training set): "
                  + (f"accuracy {lim['accuracy']:.3f}, balanced {lim['balanced_accuracy']:.3f} "
                     f"after {s['limit_queries']:,} queries; gain {s['limit_gain']:+.3f}"
                     if lim else "not run"),
                  f"- random perturbations at epsilon (5 draws, test accuracy mean / best): "
                  f"8x8 {ctrl['random 8x8']['mean'][0]:.3f} / {ctrl['random 8x8']['best'][0]:.3f}"
                  f", full {ctrl['random full']['mean'][0]:.3f} / "
                  f"{ctrl['random full']['best'][0]:.3f}",
                  f"- best constant grey offset on the training split "
                  f"({ctrl['constant offset']['offset']:+g}, {ctrl['constant offset']['queries']:,}"
                  f" queries): test accuracy {ctrl['constant offset']['test'][0]:.3f}",
                  f"- best control: {s['best_control_accuracy']:.3f}"]
        if lim and lim["accuracy"] >= 1.0:
            lines.append("- the limit reaches 100% held-out accuracy, so its gain is the largest "
                         "any perturbation family can reach on this split")
        f = s["figures"]
        if f:
            frac = f.get("default_fraction_of_limit_gain_at_10k")
            lines.append("- default at 10,000 queries: "
                         + (f"{100 * frac:.0f}% of the limit's gain" if frac is not None else "-"))
            lines.append(f"- queries to reach 90% of the limit's gain: default "
                         f"{f['default_queries_to_90pct'] or 'not reached'}; peers: "
                         + "; ".join(f"{k} {v['queries'] or v['note']}"
                                     + (f" ({v['ratio']:.1f}x)" if v.get("ratio") else "")
                                     for k, v in f["peers"].items()))
        lines.append("")
    return "\n".join(lines)


def plot(doc: dict[str, Any], path: str) -> None:
    """Held-out accuracy against queries, one line per method, spread shaded, per task."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tasks = list(doc["summary"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(10 * len(tasks), 6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        s = doc["summary"][task]
        colors = [plt.get_cmap("tab20")(k) for k in range(20)]
        for i, (name, m) in enumerate(s["methods"].items()):
            qs = sorted(int(q) for q in m["points"])
            mean = np.array([m["points"][str(q)]["accuracy_mean"] for q in qs])
            std = np.array([m["points"][str(q)]["accuracy_std"] for q in qs])
            group = doc["methods"].get(name, {}).get("group", "")
            style = {"ours": "-", "peer": "--"}.get(group, ":")
            lw = 2.8 if name == "default" else 1.3
            (line,) = ax.plot(qs, mean, style, lw=lw, marker="o", ms=2.5, label=name,
                              color=colors[i % len(colors)])
            ax.fill_between(qs, mean - std, mean + std, color=line.get_color(), alpha=0.12)
        ax.axhline(s["baseline_accuracy"], color="k", lw=1, label="baseline (no delta)")
        ax.axhline(s["best_control_accuracy"], color="grey", lw=1, ls="-.", label="best control")
        if s["limit"]:
            ax.axhline(s["limit"]["accuracy"], color="red", lw=1.2, ls=":",
                       label=f"limit ({s['limit_queries']:,} queries)")
        ax.set_xscale("log")
        ax.set_xlabel("queries (images sent)")
        ax.set_ylabel("held-out accuracy")
        ax.set_title(f"{task}: {doc['tasks'][task] or 'synthetic'}, epsilon {doc['epsilon']:g}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(doc: dict[str, Any], out_dir: str, name: str, *, command: str, quick: bool,
                  seconds: float) -> list[str]:
    """``<name>.json``, ``<name>.md`` (with the figure embedded) and ``<name>.png``, each
    written whole; the JSON and markdown stamped with the command and the machine."""
    os.makedirs(out_dir, exist_ok=True)
    png = os.path.join(out_dir, f"{name}.png")
    plot(doc, png)
    text = markdown(doc) + f"\n![held-out accuracy against queries]({name}.png)\n"
    return [*write_results(out_dir, name, doc, text, command=command, quick=quick,
                           seconds=seconds), png]
