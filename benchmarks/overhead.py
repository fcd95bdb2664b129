"""The library's own cost per step, excluding the model: CPU time and peak memory.

Runs DataFineTuner steps against a model that costs nothing (it returns fixed
scores), so all time and memory measured are the library's: perturbing the
minibatch, the estimator, the optimizer, bookkeeping. Measured at 224x224x3 for a
full-resolution latent and for low-resolution latents of growing size; peak memory
is traced with tracemalloc (numpy's allocations are included). If the BlazeFace
stand-in is installed, its time per image is measured in the same run and the
library's CPU time per query is reported as a fraction of it.

    python benchmarks/overhead.py            # writes benchmarks/results/overhead.{json,md}
    python benchmarks/overhead.py --quick    # 3 steps, batch 8, 3 latents (smoke test)
"""

from __future__ import annotations

import sys
import time
import tracemalloc
from typing import Any

import numpy as np
from common import command_line, out_dir, parser, write_results

from blackbox_dft import SPSA, DataFineTuner, FullResolution, LowResolution


class Free:
    """A model that answers instantly: isolates the library's own overhead."""

    name = "free"

    def predict(self, images: np.ndarray) -> np.ndarray:
        return np.tile([0.4, 0.6], (images.shape[0], 1))


def measure(pert: Any, size: int, steps: int, batch: int | None, est: Any = None) -> dict:
    """Library CPU per step and per query, and peak memory, of a fit against ``Free``.

    pert, est: the perturbation and estimator (None: the DataFineTuner default); batch:
    images per minibatch (None: the default). The budget buys ``steps`` steps.
    """
    kw: dict[str, Any] = {} if batch is None else {"batch_size": batch}
    batch = int(DataFineTuner(Free(), **kw).batch_size)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(batch * 2, size, size, 3), dtype=np.uint8)
    y = rng.integers(0, 2, size=batch * 2)
    budget = steps * 2 * batch

    def run() -> DataFineTuner:
        return DataFineTuner(Free(), "binary", epsilon=8, perturbation=pert, estimator=est,
                             query_budget=budget, seed=0, progress=False, **kw).fit(x, y)

    run()  # warm up (imports, caches)
    t0, c0 = time.perf_counter(), time.process_time()
    t = run()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    tracemalloc.start()
    run()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    d = int(np.prod(t.latent_.shape))
    return {
        "perturbation": repr(t.perturbation_),
        "estimator": "default" if est is None else repr(est), "image": f"{size}x{size}x3",
        "latent_dim": d,
        "batch_size": batch, "steps": t.n_steps_, "queries": t.queries_,
        "wall_ms_per_step": 1e3 * wall / t.n_steps_, "cpu_ms_per_step": 1e3 * cpu / t.n_steps_,
        "cpu_us_per_query": 1e6 * cpu / t.queries_, "peak_mib": peak / 2**20,
    }


def blazeface_ms_per_image(size: int) -> float | None:
    try:
        from blackbox_dft.adapters.standins.models import load_standin
        model = load_standin("blazeface")
        x = np.random.default_rng(0).integers(0, 256, size=(32, size, size, 3), dtype=np.uint8)
        model.predict(x[:2])
        c0 = time.process_time()
        model.predict(x)
        return 1e3 * (time.process_time() - c0) / len(x)
    except Exception as exc:  # the stand-in is optional here
        print(f"BlazeFace not measured: {exc}", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__, "3 steps, batch 8, latents full/8x8/16x16 (smoke test)")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args(argv)
    out = out_dir(ap, args, "overhead")
    t0 = time.perf_counter()
    steps, batch = (3, 8) if args.quick else (args.steps, args.batch)
    grids = (8, 16) if args.quick else (8, 16, 32, 64, 128)
    shared = SPSA(directions=1, step=2.0)
    rows = [measure(FullResolution(), 224, steps, batch, shared)]
    for g in grids:
        rows.append(measure(LowResolution((g, g)), 224, steps, batch, shared))
    # the defaults (one direction per image, batch 16) and one direction shared by a
    # minibatch of 32 (the earlier default), on the default latent
    extra = [measure(None, 224, steps, None),
             measure(None, 224, steps, batch, shared)]
    # memory attributable to the latent: the slope of peak memory against latent dimension
    lows = [r for r in rows if r["perturbation"].startswith("LowRes")]
    dims = np.array([r["latent_dim"] for r in lows], dtype=float)
    peaks = np.array([r["peak_mib"] * 2**20 for r in lows])
    slope, icpt = np.polyfit(dims, peaks, 1)
    resid = float(np.max(np.abs(peaks - (slope * dims + icpt))) / peaks.max())
    bf = blazeface_ms_per_image(224)
    full = rows[0]
    result = {
        "rows": rows,
        "memory_bytes_per_latent_dim": float(slope),
        "memory_fixed_mib": float(icpt / 2**20),
        "memory_linear_fit_max_relative_residual": resid,
        "blazeface_cpu_ms_per_image_224": bf,
        "library_cpu_fraction_of_blazeface_full_res": (
            full["cpu_us_per_query"] / 1e3 / bf if bf else None),
        "library_cpu_fraction_of_blazeface_16x16": (
            rows[2]["cpu_us_per_query"] / 1e3 / bf if bf else None),
        "defaults": extra[0], "shared_direction": extra[1],
        "library_cpu_fraction_of_blazeface_defaults": (
            extra[0]["cpu_us_per_query"] / 1e3 / bf if bf else None),
        "library_cpu_fraction_of_blazeface_shared_direction": (
            extra[1]["cpu_us_per_query"] / 1e3 / bf if bf else None),
    }
    lines = ["| perturbation | estimator | batch | latent dim | CPU ms/step | CPU us/query "
             "| peak MiB |", "|---|---|---|---|---|---|---|"]
    for r in rows + extra:
        lines.append(f"| {r['perturbation']} | {r['estimator']} | {r['batch_size']} "
                     f"| {r['latent_dim']} | {r['cpu_ms_per_step']:.1f} "
                     f"| {r['cpu_us_per_query']:.1f} | {r['peak_mib']:.1f} |")
    lines.append("")
    lines.append(f"Peak memory = {result['memory_fixed_mib']:.1f} MiB + "
                 f"{slope:.1f} bytes x latent dim (max residual of the linear fit "
                 f"{100 * resid:.1f}%).")
    if bf:
        lines.append(f"BlazeFace CPU time per 224x224 image: {bf:.2f} ms; library CPU per query: "
                     f"{100 * result['library_cpu_fraction_of_blazeface_full_res']:.2f}% of it "
                     f"(full resolution), "
                     f"{100 * result['library_cpu_fraction_of_blazeface_16x16']:.2f}% (16x16x3 "
                     f"bilinear), "
                     f"{100 * result['library_cpu_fraction_of_blazeface_defaults']:.2f}% "
                     f"(the DataFineTuner defaults), "
                     f"{100 * result['library_cpu_fraction_of_blazeface_shared_direction']:.2f}% "
                     f"(the default latent, one SPSA direction shared by a batch of {batch}).")
    md = "\n".join(lines) + "\n"
    write_results(out, "overhead", result, md, command=command_line(__file__, argv),
                  quick=args.quick, seconds=time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
