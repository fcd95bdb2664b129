"""The measuring phases of benchmarks/deploy.py: latency, throughput and the proxy's rewrite
path timed in this process (the model swaps are in deploy_swap.py).

Not a benchmark (no ``__main__`` block): run_all.py does not run it.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from deploy_services import App, cpu_seconds, pin

from blackbox_dft import DataFineTuner
from blackbox_dft.adapters.remote.vendors import make_preset
from blackbox_dft.adapters.remote.wire import (
    b64,
    decode_image,
    encode_image,
    quote_b64,
    unb64,
    unquote_form,
)
from blackbox_dft.adapters.serving.proxy import perturber
from blackbox_dft.adapters.serving.proxy_rewrite import Rewriter, png_mode

WAYS = ("direct", "proxy")


def _quantiles(seconds: list[float]) -> dict[str, float]:
    v = np.asarray(seconds) * 1000.0
    return {"p50_ms": float(np.percentile(v, 50)), "p99_ms": float(np.percentile(v, 99)),
            "mean_ms": float(v.mean())}


def latency(app: App, direct: str, via: str, bodies: list[bytes], pairs: int,
            rng: np.random.Generator, proxy_pid: int) -> dict[str, Any]:
    """One client, one image per request: each body sent direct and through the proxy back
    to back, in a random order per pair (a slow spell of the machine hits both alike); and
    the proxy process's CPU per request meanwhile."""
    urls = {"direct": direct, "proxy": via}
    for b in bodies:  # warm up connections and the proxy's resized delta
        for url in urls.values():
            app.ask(url, b)
    seconds: dict[str, list[float]] = {w: [] for w in WAYS}
    cpu0 = cpu_seconds(proxy_pid)
    for i in range(pairs):
        for way in rng.permutation(WAYS):
            status, _, s = app.ask(urls[str(way)], bodies[i % len(bodies)])
            assert status == 200, f"{way} request answered {status}"
            seconds[str(way)].append(s)
    cpu = ((cpu_seconds(proxy_pid) or 0.0) - (cpu0 or 0.0)) / pairs
    q = {w: _quantiles(seconds[w]) for w in WAYS}
    added = [(p - d) * 1000.0 for d, p in zip(seconds["direct"], seconds["proxy"], strict=True)]
    return {"pairs": pairs, **q,
            "added_p50_ms": q["proxy"]["p50_ms"] - q["direct"]["p50_ms"],
            "added_p99_ms": q["proxy"]["p99_ms"] - q["direct"]["p99_ms"],
            "added_median_of_pairs_ms": float(statistics.median(added)),
            "proxy_cpu_ms_per_request": 1000.0 * cpu}


def vendor_elsewhere() -> dict[str, set[int]]:
    """The "vendor elsewhere" placement of the throughput phase, process -> CPUs: the server
    alone on this process's first CPU, as a vendor's API runs on machines of its own; the
    app and the proxy beside it (a sidecar) on the second (needs 2 CPUs)."""
    first, second = sorted(os.sched_getaffinity(0))[:2]
    return {"server": {first}, "proxy": {second}, "client": {second}}


def throughput(app: App, direct: str, via: str, bodies: list[bytes], cfg: dict[str, Any],
               rng: np.random.Generator, pids: dict[str, int],
               placement: dict[str, set[int]] | None = None) -> dict[str, Any]:
    """``clients`` threads send ``per_round`` requests per round, direct and through the
    proxy in a random order per round; requests per second and CPU seconds per request of
    each process (``pids``, and this one: the client). placement: the CPUs of each process
    during the phase (``pids``' names and "client"; every thread; all CPUs again after)."""
    everything = os.sched_getaffinity(0)
    pids_all = {**pids, "client": os.getpid()}
    for name, cpus in (placement or {}).items():
        pin(pids_all[name], cpus)
    try:
        return _throughput(app, direct, via, bodies, cfg, rng, pids)
    finally:
        for name in placement or {}:
            pin(pids_all[name], everything)


def _throughput(app: App, direct: str, via: str, bodies: list[bytes], cfg: dict[str, Any],
                rng: np.random.Generator, pids: dict[str, int]) -> dict[str, Any]:
    urls = {"direct": direct, "proxy": via}
    work = [bodies[i % len(bodies)] for i in range(cfg["per_round"])]
    pool = ThreadPoolExecutor(cfg["clients"])  # started after pinning: the client's CPUs

    def one(url: str) -> tuple[float, dict[str, float]]:
        before = {n: cpu_seconds(p) for n, p in pids.items()}
        c0, t0 = time.process_time(), time.perf_counter()
        codes = list(pool.map(lambda b: app.ask(url, b)[0], work))
        wall = time.perf_counter() - t0
        assert codes == [200] * len(work), f"failed requests: {sorted(set(codes))}"
        cpu = {n: ((cpu_seconds(p) or 0.0) - (before[n] or 0.0)) / len(work)
               for n, p in pids.items()}
        cpu["client"] = (time.process_time() - c0) / len(work)
        return len(work) / wall, cpu

    for url in urls.values():
        one(url)  # warm up: every thread's session, the proxy's pool
    rates: dict[str, list[float]] = {w: [] for w in WAYS}
    cpus: dict[str, list[dict[str, float]]] = {w: [] for w in WAYS}
    for _ in range(cfg["rounds"]):
        for way in rng.permutation(WAYS):
            rate, cpu = one(urls[str(way)])
            rates[str(way)].append(rate)
            cpus[str(way)].append(cpu)
    pool.shutdown()
    ratios = [p / d for d, p in zip(rates["direct"], rates["proxy"], strict=True)]
    return {
        "clients": cfg["clients"], "requests_per_round": cfg["per_round"],
        "rounds": cfg["rounds"],
        "requests_per_second": {w: {"median": statistics.median(rates[w]), "rounds": rates[w]}
                                for w in WAYS},
        "ratio_proxy_vs_direct": float(statistics.median(ratios)), "ratios": ratios,
        "cpu_ms_per_request": {w: {n: 1000.0 * statistics.median(c[n] for c in cpus[w])
                                   for n in cpus[w][0]} for w in WAYS},
        "target": 0.9,
    }


def _median_ms(fn: Callable[[int], Any], repeats: int) -> float:
    """Median CPU milliseconds of ``fn(i)`` (this process, all threads): on a machine shared
    with other jobs, wall time would count the time this process waited for a core."""
    times = []
    for i in range(repeats):
        c0 = time.process_time()
        fn(i)
        times.append(time.process_time() - c0)
    return 1000.0 * statistics.median(times)


def rewrite_profile(tuner: DataFineTuner, bodies: list[bytes], repeats: int) -> dict[str, Any]:
    """Median CPU milliseconds of the proxy's rewrite of one 224x224 Face++ body (the photos
    in turn), whole and by step (the same calls, in this process: no HTTP, no event loop)."""
    rewriter = Rewriter(make_preset("facepp"), perturber(tuner.delta_for))
    headers = {"content-type": "application/x-www-form-urlencoded"}
    fields = [next(p for p in b.split(b"&") if p.startswith(b"image_base64="))
              .split(b"=", 1)[1] for b in bodies]
    texts = [unquote_form(f) for f in fields]
    files = [unb64(t) for t in texts]
    images = [decode_image(f) for f in files]
    outs = [rewriter.perturb(im[None])[0] for im in images]
    encoded = [encode_image(o, "png", png=png_mode("auto", o)) for o in outs]
    n = len(bodies)
    steps = {  # the calls of Rewriter._form and perturb_files, one by one
        "form field": lambda i: unquote_form(fields[i % n]),
        "base64 decode": lambda i: unb64(texts[i % n]),
        "PNG decode": lambda i: decode_image(files[i % n]),
        "add delta": lambda i: rewriter.perturb(images[i % n][None]),
        "PNG encode": lambda i: encode_image(outs[i % n], "png",
                                             png=png_mode("auto", outs[i % n])),
        "base64 encode + form field": lambda i: quote_b64(b64(encoded[i % n])).encode(),
    }
    return {"whole_ms": _median_ms(lambda i: rewriter.rewrite(bodies[i % n], headers), repeats),
            "steps_ms": {k: _median_ms(f, repeats) for k, f in steps.items()},
            "png_bytes_in": float(np.mean([len(f) for f in files])),
            "png_bytes_out": float(np.mean([len(e) for e in encoded]))}
