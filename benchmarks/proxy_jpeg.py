"""What JPEG does to the gain when the deployment proxy passes a JPEG on as JPEG.

Writes ``benchmarks/results/proxy_jpeg.{json,md}`` whole. Usage::

    python benchmarks/proxy_jpeg.py            # face task, budget 10,000, seeds 0-2
    python benchmarks/proxy_jpeg.py --quick    # synthetic task, budget 1,000, seed 0

``blackbox-dft proxy`` re-encodes a JPEG image as JPEG (``--jpeg-quality``, 95 by default) after
adding the delta. For each seed: one DataFineTuner fit with the library defaults; then the
held-out test images, clean and with the delta (``transform``), each sent to the model
lossless and through a JPEG round trip at each quality (cv2, as the proxy encodes), and the
accuracy of each. The gain at a quality is ``accuracy(JPEG of delta-added) - accuracy(JPEG
of clean)``: what an app sending JPEGs through the proxy gains over the same app without it.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import cv2
import numpy as np
from common import command_line, load_task, out_dir, parser, task_kind, write_results

from blackbox_dft import DataFineTuner
from blackbox_dft.core.objectives import Objective

QUALITIES = (95, 90, 75)


def jpeg(images: np.ndarray, quality: int) -> np.ndarray:
    """uint8 RGB ``(N, H, W, 3)`` through a JPEG encode / decode at ``quality`` (cv2)."""
    out = np.empty_like(images)
    for i, im in enumerate(images):
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(im, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        out[i] = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return out


def one_seed(task: Any, seed: int, budget: int) -> dict[str, Any]:
    """Held-out accuracy, clean and with the delta, lossless and at each JPEG quality."""
    kind, scores = task_kind(task), getattr(task, "scores", "probabilities")
    tuner = DataFineTuner(task.model, kind, scores=scores, query_budget=budget, seed=seed,
                          progress=False).fit(*task.train, validation=task.val)
    x, y = task.test
    objective = Objective(kind, scores)

    def accuracy(images: np.ndarray) -> float:
        return float(np.mean(objective.predict_labels(task.model.predict(images)) == y))

    perturbed = tuner.transform(x)
    row: dict[str, Any] = {"seed": seed, "queries": tuner.queries_,
                           "lossless": {"clean": accuracy(x), "delta": accuracy(perturbed)}}
    for q in QUALITIES:
        row[f"jpeg{q}"] = {"clean": accuracy(jpeg(x, q)), "delta": accuracy(jpeg(perturbed, q))}
    return row


def markdown(res: dict[str, Any]) -> str:
    """Per encoding: mean accuracy clean / with the delta, and the gain (mean, min)."""
    rows = res["runs"]
    lines = [f"# JPEG after the delta: {res['task']} task, budget {res['budget']}, "
             f"seeds {res['seeds']}", "",
             "| images sent as | accuracy clean | accuracy with delta | gain (mean) "
             "| gain (worst seed) |", "|---|---|---|---|---|"]
    for key in ["lossless", *[f"jpeg{q}" for q in QUALITIES]]:
        clean = [r[key]["clean"] for r in rows]
        delta = [r[key]["delta"] for r in rows]
        gains = [d - c for c, d in zip(clean, delta, strict=True)]
        name = "PNG (lossless)" if key == "lossless" else f"JPEG quality {key[4:]}"
        lines.append(f"| {name} | {np.mean(clean):.3f} | {np.mean(delta):.3f} | "
                     f"{np.mean(gains):+.3f} | {min(gains):+.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__, "synthetic task, budget 1,000, seed 0 (smoke test)")
    ap.add_argument("--budget", type=int, default=None, help="query budget (default 10000)")
    ap.add_argument("--seeds", default=None, help="comma list (default 0,1,2)")
    args = ap.parse_args(argv)
    out = out_dir(ap, args, "proxy_jpeg")
    task_name = "synthetic" if args.quick else "face"
    budget = args.budget or (1000 if args.quick else 10_000)
    seeds = [int(s) for s in (args.seeds or ("0" if args.quick else "0,1,2")).split(",")]
    t0 = time.time()
    task = load_task(task_name)
    rows = []
    for seed in seeds:
        rows.append(one_seed(task, seed, budget))
        print(f"seed {seed}: {rows[-1]}", flush=True)
    res = {"task": task_name, "budget": budget, "seeds": seeds, "qualities": list(QUALITIES),
           "runs": rows}
    write_results(out, "proxy_jpeg", res, markdown(res), command=command_line(__file__, argv),
                  quick=args.quick, seconds=time.time() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
