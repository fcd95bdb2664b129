"""The deployment proxy end to end: held-out gain, added latency, throughput, a model swap.

Writes ``benchmarks/results/deploy.{json,md}`` whole. Usage::

    python benchmarks/deploy.py            # 6,000-query fit, 400 latency pairs, 9 rounds, ...
    python benchmarks/deploy.py --quick    # smoke test: 400-query fit, few requests (CI)

Everything runs as a user runs it, each in its own process on 127.0.0.1: the stand-in vendor
server (``blackbox-dft serve --model blazeface --protocol facepp``, which refuses requests
without the API key), the fit over HTTP (``blackbox-dft fit --preset facepp``, keys from
environment variables), ``blackbox-dft evaluate`` and ``blackbox-dft proxy``. The app is
plain ``requests`` code speaking Face++ Detect (the caller's keys and one base64 PNG per
request, as form fields) that only knows a base URL: the server's, or the proxy's.

1. Gain: the app sends the face task's held-out test images straight to the server and
   through the proxy; its accuracy both ways against ``blackbox-dft evaluate`` on the same
   images, and its per-image decisions against the library's (``transform``, then the
   server).
2. Latency at 224x224 (real photos from scikit-image, one per request): one client, each
   photo sent direct and through the proxy back to back in a random order; p50 / p99.
3. Throughput: 8 client threads, rounds direct and through the proxy alternated in a random
   order; requests per second, proxy / direct as the median of per-round ratios, and the
   CPU seconds per request of the server, the proxy and the client (all on this machine).
   Three times: all processes on all cores; the server pinned alone to one CPU and the app
   and the proxy to another (a vendor's API runs elsewhere; deploy_phases.vendor_elsewhere);
   the same with a proxy sending compressed PNG upstream (``--png fast``).
4. Model swaps (deploy_swap.py): the proxy restarted with scheduled checks; while the app
   keeps sending, the server's model is replaced by the back-camera BlazeFace without a
   restart, then back, then the server is redeployed with the back-camera model on the same
   port (``blackbox-dft serve``); each time, how long and how many check queries until the
   proxy's state follows, and the app's answers afterwards against the model's own.

The stand-in server is ``StandInServer`` in a child process (it can change its model
between two requests), then ``blackbox-dft serve`` for the redeploy.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

import cv2
import numpy as np
from common import TASKS, command_line, load_task, out_dir, parser, write_results
from deploy_phases import latency, rewrite_profile, throughput, vendor_elsewhere
from deploy_services import FACEPP_PATH, App, HotSwapServer, Service, cli, decisions, facepp_body
from deploy_swap import swaps

from blackbox_dft import DataFineTuner
from blackbox_dft.adapters.remote.http import HTTPModel
from blackbox_dft.adapters.standins.models import load_standin, standin_file

KEY_ENV, SECRET_ENV = "BBDFT_DEPLOY_KEY", "BBDFT_DEPLOY_SECRET"
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg")
SERVED = r"serving stand-in .* at (http://127\.0\.0\.1:\d+\S*)"
PROXYING = r" on (http://127\.0\.0\.1:\d+) -> "
FULL = {"budget": 6000, "pairs": 400, "rounds": 9, "per_round": 160, "clients": 8,
        "repeats": 100, "check_every": 1.0, "check_budget": 64, "settle": 3.0}
QUICK = {"budget": 400, "pairs": 10, "rounds": 2, "per_round": 16, "clients": 8,
         "repeats": 5, "check_every": 0.5, "check_budget": 64, "settle": 0.5}


def _read(path: str) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def photos_224() -> list[np.ndarray]:
    """Real photos (scikit-image's data folder), centre-cropped square, 224x224 RGB."""
    out = []
    for name in PHOTOS:
        bgr = cv2.imread(standin_file("skimage", os.path.join("data", name)), cv2.IMREAD_COLOR)
        h, w = bgr.shape[:2]
        s = min(h, w)
        crop = bgr[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        out.append(cv2.cvtColor(cv2.resize(crop, (224, 224), interpolation=cv2.INTER_AREA),
                                cv2.COLOR_BGR2RGB))
    return out


def serve(model: str, port: int, env: dict[str, str]) -> Service:
    return Service(["serve", "--model", model, "--protocol", "facepp", "--port", str(port),
                    "--api-key-env", KEY_ENV], SERVED, env)


def proxy(run: str, upstream: str, env: dict[str, str], every: float = 0.0,
          budget: int | None = None, extra: tuple[str, ...] = ()) -> Service:
    args = ["proxy", "--run", run, "--upstream", upstream, "--listen", "127.0.0.1:0",
            "--check-every", f"{every:g}", *extra]
    return Service(args + (["--check-budget", str(budget)] if budget else []), PROXYING, env)


def fit(url: str, data: str, run: str, budget: int, seed: int, env: dict[str, str]) -> str:
    return cli(["fit", "--model", url, "--preset", "facepp", "--api-key-env", KEY_ENV,
         "--api-secret-env", SECRET_ENV, "--data", data, "--task", "binary", "--out", run,
         "--budget", str(budget), "--seed", str(seed), "--no-progress"], env)


def gain(app: App, direct: str, via: str, test: tuple[np.ndarray, np.ndarray],
         bodies: list[bytes], evaluated: dict[str, Any], tuner: DataFineTuner,
         model: HTTPModel) -> dict[str, Any]:
    """The app's accuracy direct and through the proxy, against evaluate's, and its
    decisions through the proxy against the library's (the delta added by ``transform``)."""
    x, y = test
    answers = {name: [app.ask(base, b) for b in bodies]
               for name, base in (("direct", direct), ("proxy", via))}
    assert all(a[0] == 200 for rows in answers.values() for a in rows), "app request failed"
    p = {name: np.array([a[1] for a in rows]) for name, rows in answers.items()}
    library = model.predict(tuner.transform(x))[:, 0]
    clean = model.predict(x)[:, 0]
    acc = {name: float(np.mean(decisions(v) == y)) for name, v in p.items()}
    return {
        "images": len(y),
        "app": {"accuracy_direct": acc["direct"], "accuracy_proxy": acc["proxy"],
                "gain": acc["proxy"] - acc["direct"]},
        "evaluate": {"accuracy_before": evaluated["accuracy_before"],
                     "accuracy_after": evaluated["accuracy_after"],
                     "gain": evaluated["accuracy_after"] - evaluated["accuracy_before"],
                     "n_images": evaluated.get("n_images")},
        "decisions_differing_proxy_vs_library": int(np.sum(decisions(p["proxy"])
                                                           != decisions(library))),
        "decisions_differing_direct_vs_library": int(np.sum(decisions(p["direct"])
                                                            != decisions(clean))),
        "max_abs_score_diff_proxy_vs_library": float(np.max(np.abs(p["proxy"] - library))),
    }


def model_time(photos: list[np.ndarray], repeats: int) -> dict[str, float]:
    """Median seconds of one ``predict`` of one 224x224 photo, per stand-in (in this process:
    the model's own time, without HTTP, decoding or the server)."""
    out = {}
    for name in ("blazeface", "blazeface-back"):
        m = load_standin(name)
        m.predict(photos[0][None])
        times = []
        for i in range(repeats):
            t0 = time.perf_counter()
            m.predict(photos[i % len(photos)][None])
            times.append(time.perf_counter() - t0)
        out[name] = statistics.median(times)
    return out


def leaked(secret_values: list[str], folder: str, texts: list[str]) -> list[str]:
    """Files under ``folder`` and texts (by index) that hold any of ``secret_values``."""
    hits = []
    for root, _, files in os.walk(folder):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                data = fh.read()
            if any(v.encode() in data for v in secret_values):
                hits.append(os.path.relpath(os.path.join(root, f), folder))
    return hits + [f"output {i}" for i, t in enumerate(texts)
                   if any(v in t for v in secret_values)]


def run(cfg: dict[str, Any], seed: int, work: str, key: str, secret: str) -> dict[str, Any]:
    """Every phase, in order, each service in its own process (all stopped at the end)."""
    env = {**os.environ, KEY_ENV: key, SECRET_ENV: secret, "PYTHONUNBUFFERED": "1",
           "TQDM_DISABLE": "1"}
    task = load_task("face")
    data, run_dir = os.path.join(work, "face.npz"), os.path.join(work, "run")
    np.savez(data, x_train=task.train[0], y_train=task.train[1], x_val=task.val[0],
             y_val=task.val[1], x_test=task.test[0], y_test=task.test[1])
    app, rng, services, texts = App(), np.random.default_rng(seed), [], []
    clock: dict[str, float] = {}

    def keep(service: Service) -> Service:
        services.append(service)
        return service

    def lap(name: str) -> None:
        clock[name] = time.perf_counter() - sum(clock.values()) - start

    start = time.perf_counter()
    try:
        server = keep(HotSwapServer("blazeface", key))
        base = server.found.removesuffix(FACEPP_PATH)
        texts.append(fit(server.found, data, run_dir, cfg["budget"], seed, env))
        lap("fit")
        texts.append(cli(["evaluate", "--run", run_dir, "--data", data, "--split", "test",
                          "--no-cache", "--json", os.path.join(work, "evaluate.json"),
                          "--no-progress"], env))
        direct = HTTPModel(server.found, preset="facepp", api_key=key, api_secret=secret)
        tuner = DataFineTuner.load(os.path.join(run_dir, "delta.npz"), direct)
        first = keep(proxy(run_dir, base, env))
        test_bodies = [facepp_body(im, key, secret) for im in task.test[0]]
        report = _read(os.path.join(run_dir, "report.json"))
        out: dict[str, Any] = {"fit": {
            "queries": report["fit"]["queries"], "steps": report["fit"]["steps"],
            "paid": report["spend"]["paid"], "early_stopping": report["early_stopping"],
            "seconds": report["wall_time_s"]}}
        out["gain"] = gain(app, base, first.found, task.test, test_bodies,
                           _read(os.path.join(work, "evaluate.json")), tuner, direct)
        lap("gain")
        photos = photos_224()
        photo_bodies = [facepp_body(im, key, secret) for im in photos]
        out["latency"] = latency(app, base, first.found, photo_bodies, cfg["pairs"], rng,
                                 first.pid)
        lap("latency")
        out["throughput"] = throughput(app, base, first.found, photo_bodies, cfg, rng,
                                       {"server": server.pid, "proxy": first.pid})
        if len(os.sched_getaffinity(0)) >= 2:
            out["throughput_vendor_elsewhere"] = throughput(
                app, base, first.found, photo_bodies, cfg, rng,
                {"server": server.pid, "proxy": first.pid}, vendor_elsewhere())
            # the same with compressed PNG upstream: the server then decodes what it
            # decodes direct, so the ratio is the proxy's own cost, without that saving
            fast = proxy(run_dir, base, env, extra=("--png", "fast"))
            try:
                out["throughput_vendor_elsewhere_png_fast"] = throughput(
                    app, base, fast.found, photo_bodies, cfg, rng,
                    {"server": server.pid, "proxy": fast.pid}, vendor_elsewhere())
            finally:
                fast.stop()
        lap("throughput")
        out["rewrite_profile"] = rewrite_profile(tuner, photo_bodies, cfg["repeats"])
        out["model_seconds_224"] = model_time(photos, cfg["repeats"])
        lap("profiles")
        first.stop()
        port = int(base.rsplit(":", 1)[1])
        checked = keep(proxy(run_dir, base, env, cfg["check_every"], cfg["check_budget"]))
        out["swap"] = swaps(app, checked, server,
                            lambda: keep(serve("blazeface-back", port, env)), test_bodies,
                            task.test, tuner, cfg["settle"])
        out["swap"].update(check_every_s=cfg["check_every"], check_budget=cfg["check_budget"])
        lap("swap")
        direct.close()
    finally:
        for s in services:
            s.stop()
    out["phase_seconds"] = clock
    out["secrets_found_in"] = leaked([key, secret], work,
                                     texts + [s.text() for s in services])
    return out


def markdown(res: dict[str, Any]) -> str:
    """The four tables: gain, latency, throughput (with CPU per request), the swap."""
    g, lat, tp, sw = res["gain"], res["latency"], res["throughput"], res["swap"]
    prof, model = res["rewrite_profile"], res["model_seconds_224"]
    ev, a = g["evaluate"], g["app"]
    lines = [
        "# The deployment proxy end to end", "",
        f"Face task (LFW crops 25x25, {res['shift']}), stand-in BlazeFace short range served "
        "as Face++ Detect by the stand-in server (`StandInServer` in its own process, API key "
        "checked; `blackbox-dft serve` for the redeploy below), fitted over HTTP with "
        f"`blackbox-dft fit --preset facepp` (budget {res['budget']}, seed {res['seed']}: "
        f"{res['fit']['queries']} fit queries, {res['fit']['paid']} paid in all with the test "
        f"evaluation, {res['fit']['seconds']:.0f} s); the app is plain "
        "`requests` code sending one base64 PNG per request; server, proxy and app share "
        f"this machine's {res['cores']} cores.", "",
        "## Held-out gain: the app through the proxy against `blackbox-dft evaluate`", "",
        "| | accuracy without the delta | with the delta | gain |", "|---|---:|---:|---:|",
        f"| app: direct / through the proxy | {a['accuracy_direct']:.3f} | "
        f"{a['accuracy_proxy']:.3f} | {a['gain']:+.3f} |",
        f"| `blackbox-dft evaluate --split test --no-cache` | {ev['accuracy_before']:.3f} | "
        f"{ev['accuracy_after']:.3f} | {ev['gain']:+.3f} |", "",
        f"Decisions of the app through the proxy that differ from the library's "
        f"(`transform`, then the server): {g['decisions_differing_proxy_vs_library']} of "
        f"{g['images']} (largest score difference {g['max_abs_score_diff_proxy_vs_library']:.2g}"
        ").", "",
        f"## Added latency at 224x224 (one client, {lat['pairs']} pairs of requests, real "
        "photos, PNG)", "",
        "| | p50 ms | p99 ms | mean ms |", "|---|---:|---:|---:|"]
    for way in ("direct", "proxy"):
        q = lat[way]
        lines.append(f"| {way} | {q['p50_ms']:.1f} | {q['p99_ms']:.1f} | {q['mean_ms']:.1f} |")
    lines += [
        f"| added by the proxy | {lat['added_p50_ms']:+.1f} | {lat['added_p99_ms']:+.1f} | "
        f"median of per-pair differences {lat['added_median_of_pairs_ms']:+.1f} |", "",
        f"The stand-in model's own time per 224x224 photo (in process, no HTTP): BlazeFace "
        f"short range {1000 * model['blazeface']:.1f} ms, back camera "
        f"{1000 * model['blazeface-back']:.1f} ms. The proxy process's CPU per request: "
        f"{lat['proxy_cpu_ms_per_request']:.1f} ms, of which the rewrite of the body "
        f"{prof['whole_ms']:.2f} ms (CPU, timed in this process: "
        + ", ".join(f"{k} {v:.2f}" for k, v in prof["steps_ms"].items())
        + f"; PNG {prof['png_bytes_in']:,.0f} bytes in, {prof['png_bytes_out']:,.0f} out) "
        "and the rest the HTTP relay (uvicorn in, aiohttp out) and the hop to the rewrite "
        "thread.", "",
        f"## Throughput ({tp['clients']} client threads, {tp['rounds']} rounds of "
        f"{tp['requests_per_round']} requests each way, alternated)", "",
        "Two placements, one after the other in this run. *Shared*: server, proxy and app "
        "on all of this machine's cores, wherever the OS puts them. *Vendor elsewhere*: the "
        "server pinned alone to one CPU, as a vendor's API runs on machines of its own, and "
        "the app with the proxy beside it (a sidecar) on another; direct calls get the same "
        "placement, the proxy idle. Then the same with a second proxy that sends compressed "
        "PNG upstream (`--png fast`): the server decodes what it decodes direct, so that "
        "ratio is the proxy's own cost without the cheaper decoding of uncompressed PNG.", "",
        "| placement | | requests/s (median) | server CPU ms/request | proxy CPU ms/request "
        "| client CPU ms/request | proxy / direct |", "|---|---|---:|---:|---:|---:|---:|"]
    phases = [("shared", tp)] + [
        (name, res[key]) for name, key in (
            ("vendor elsewhere", "throughput_vendor_elsewhere"),
            ("vendor elsewhere, `--png fast`", "throughput_vendor_elsewhere_png_fast"))
        if key in res]
    for name, t in phases:
        for way in ("direct", "proxy"):
            c = t["cpu_ms_per_request"][way]
            ratio = f"**{t['ratio_proxy_vs_direct']:.2f}**" if way == "proxy" else ""
            lines.append(f"| {name} | {way} | {t['requests_per_second'][way]['median']:.0f} | "
                         f"{c['server']:.2f} | {c['proxy']:.2f} | {c['client']:.2f} | {ratio} |")
    cd, cp = tp["cpu_ms_per_request"]["direct"], tp["cpu_ms_per_request"]["proxy"]
    bound = (cd["server"] + cd["client"]) / (cp["server"] + cp["proxy"] + cp["client"])
    load = res["load_average_1min"]
    lines += [
        "", f"Proxy / direct: the median of per-round ratios; goal >= {tp['target']}. Shared, "
        "when the machine's CPU is the limit (1-minute load average "
        f"{load['start']:.1f} at the start, {load['end']:.1f} at the end), the ratio tends "
        f"to the CPU per request direct over through the proxy: {bound:.2f} here; the "
        "server's CPU per request drops through the proxy because an uncompressed PNG is "
        "cheaper to decode (`--png`). With the vendor elsewhere, the proxy costs this "
        f"machine its own {cp['proxy']:.1f} ms of CPU per request.", ""]
    lines += _swap_markdown(sw, res["fit_accuracy"])
    leaks = res["secrets_found_in"]
    lines += ["", "API key and secret found in run files, results or any process's output: "
              + (", ".join(leaks) if leaks else "none") + "."]
    return "\n".join(lines) + "\n"


_CHANGES = {"hot_swap": "short range -> back camera, in the running server",
            "swap_back": "back camera -> short range, in the running server",
            "redeploy": "server stopped, `blackbox-dft serve --model blazeface-back` started"}


def _swap_markdown(sw: dict[str, Any], short: dict[str, float]) -> list[str]:
    back = sw["back_model_test_accuracy"]
    lines = [
        f"## Model changes behind the server (checks every {sw['check_every_s']:g} s, "
        f"{sw['check_budget']} images each; the app sending 20 requests/s throughout)", "",
        "| change | proxy's state after | switch took | detected after | checks until then "
        "(helps / hurts / failed) | check queries | app requests until detection (answered) "
        "| after detection: images perturbed / requests passed through | app answers equal "
        "the model's own |", "|---|---|---:|---:|---|---:|---:|---|---|"]
    for name, what in _CHANGES.items():
        c = sw[name]
        k, a, r = c["checks_until_detection"], c["after_detection"], c["app_requests"]
        until = {key: r["during_switch"][key] + r["until_detection"][key]
                 for key in ("sent", "answered")}
        lines.append(
            f"| {what} | {c['state']} | {c['switch_s']:.1f} s | "
            f"{c['detected_after_s']:.2f} s | {k['helps']} / {k['hurts']} / {k['error']} | "
            f"{c['check_queries_until_detection']} | {until['sent']} ({until['answered']}) | "
            f"{a['images_perturbed']} / {a['requests_bypassed']} | {a['answers_compared']} "
            f"(largest difference {a['max_abs_diff_vs_expected']}) |")
    lines += ["", "Switch took: from the command to the moment the new model answers (in "
              "the running server the old model answers meanwhile: loading the new one; a "
              "redeploy has no server meanwhile). Detected after: from then to the end of the "
              "check that saw it (the proxy's own timestamp); a check takes a while (the "
              "back-camera model is slower); one running during a change in the server queries "
              "both models (the canary unperturbed from one, perturbed from the other), and one "
              "running when the server goes away retries with the HTTP client's backoff (0.5, "
              "1, 2 s, ...) and finishes against the new model. The checks that saw each "
              "change:", ""]
    lines += [f"- {name}: {sw[name]['detecting_check']}" for name in _CHANGES]
    lines += [
        "", "| held-out test accuracy | without the delta | with the delta |",
        "|---|---:|---:|",
        f"| short range (the model fitted on) | {short['without']:.3f} | {short['with']:.3f} |",
        f"| back camera | {back['without_delta']:.3f} | {back['with_delta']:.3f} |"]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__, "400-query fit, a few requests per phase (smoke test, ~30 s)")
    ap.add_argument("--seed", type=int, default=0, help="fit seed (default 0)")
    ap.add_argument("--budget", type=int, default=None,
                    help=f"fit budget (default {FULL['budget']}; {QUICK['budget']} with --quick)")
    args = ap.parse_args(argv)
    out = out_dir(ap, args, "deploy")
    cfg = dict(QUICK if args.quick else FULL)
    cfg["budget"] = args.budget or cfg["budget"]
    t0, load = time.time(), os.getloadavg()[0]
    key, secret = secrets.token_hex(16), secrets.token_hex(16)  # in the environment only
    work = tempfile.mkdtemp(prefix="deploy-")
    try:
        res = run(cfg, args.seed, work, key, secret)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    g = res["gain"]
    res = {"task": "face", "shift": TASKS["face"], "seed": args.seed, "budget": cfg["budget"],
           "config": cfg, "cores": os.cpu_count(),
           "load_average_1min": {"start": load, "end": os.getloadavg()[0]},
           "fit_accuracy": {"without": g["evaluate"]["accuracy_before"],
                            "with": g["evaluate"]["accuracy_after"]}, **res}
    if key in json.dumps(res) or secret in json.dumps(res):
        res["secrets_found_in"].append("results")
    write_results(out, "deploy", res, markdown(res), command=command_line(__file__, argv),
                  quick=args.quick, seconds=time.time() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
