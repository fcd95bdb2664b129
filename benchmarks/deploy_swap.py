"""The model-swap phase of benchmarks/deploy.py: a vendor changes the model behind the proxy
while an app keeps sending, and the proxy's scheduled check has to notice.

Three changes in a row, each timed from the moment the new model answers to the moment the
proxy's state says so (its /metrics polled every 20 ms; the time is the detecting check's own
``last_check_timestamp_seconds``):

1. ``hot_swap``: short-range -> back-camera BlazeFace inside the running server, between two
   requests (a vendor updating behind a load balancer): the proxy must go to bypass_auto;
2. ``swap_back``: back to the short-range model: the proxy must return to active (the delta
   helps again);
3. ``redeploy``: the server stopped and ``blackbox-dft serve --model blazeface-back`` started
   on the same port (a redeploy with downtime; a check that is running when the server goes
   away retries with the HTTP client's backoff): bypass_auto again.

After each, the app's answers are compared with what the model now gives for the image it
should receive (unperturbed in bypass, ``transform(x)`` when active), asked directly.

Not a benchmark (no ``__main__`` block): run_all.py does not run it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from deploy_services import App, Service, decisions, metrics, wait_for

from blackbox_dft import DataFineTuner

Row = tuple[float, float, int, "float | None", int]


class Traffic:
    """The app sending held-out images through the proxy at ``rate`` requests per second,
    one at a time, in a thread; each request logged as (sent, done, status, P(face), i)."""

    def __init__(self, app: App, base: str, bodies: list[bytes], rate: float) -> None:
        self.log: list[Row] = []
        self._stop = threading.Event()

        def loop() -> None:
            i, due = 0, time.monotonic()
            while not self._stop.is_set():
                sent = time.time()
                status, p, _ = app.ask(base, bodies[i % len(bodies)], timeout=30)
                self.log.append((sent, time.time(), status, p, i % len(bodies)))
                i, due = i + 1, due + 1.0 / rate
                self._stop.wait(max(0.0, due - time.monotonic()))

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def between(self, start: float, end: float) -> list[Row]:
        return [r for r in self.log if start <= r[0] < end]


def _count(rows: list[Row]) -> dict[str, Any]:
    """Requests sent, answered (200), and the other statuses (0: no answer) by count."""
    failed: dict[str, int] = {}
    for r in rows:
        if r[2] != 200:
            failed[str(r[2])] = failed.get(str(r[2]), 0) + 1
    return {"sent": len(rows), "answered": len(rows) - sum(failed.values()), "failed": failed}


def _grew(name: str, a: dict[str, float], b: dict[str, float]) -> int:
    return int(b.get(name, 0) - a.get(name, 0))


def change(proxy: Service, traffic: Traffic, switch: Callable[[], float], state: str,
           expected: Callable[[list[int]], np.ndarray], settle: float) -> dict[str, Any]:
    """``switch()`` changes the model and returns when the new one answers; wait for the
    proxy's ``state``, let the app send ``settle`` seconds more, then compare its answers
    since with ``expected(indices)`` (P(face) of those test images, asked directly)."""
    base = proxy.found
    m0, t0 = metrics(base), time.time()
    t_ready = switch()
    m1 = wait_for(base, lambda m: m.get(f'state{{state="{state}"}}') == 1, 60, state)
    t_seen = time.time()
    time.sleep(settle)
    m2, t_end = metrics(base), time.time()
    since = traffic.between(t_seen, t_end)  # one snapshot: the counts below agree
    after = [r for r in since if r[2] == 200]
    shown = sorted({r[4] for r in after})
    want = dict(zip(shown, expected(shown), strict=True)) if shown else {}
    diffs = [abs(float(r[3] or 0.0) - float(want[r[4]])) for r in after]
    verdict = "NO LONGER HELPS" if state.startswith("bypass") else "delta helps"
    line = next((t for when, t in proxy.lines if when >= t_ready and "check: " in t
                 and verdict in t), "")
    return {
        "state": state, "switch_s": t_ready - t0,
        "detected_after_s": m1["last_check_timestamp_seconds"] - t_ready,
        "checks_until_detection": {r: _grew(f'checks_total{{result="{r}"}}', m0, m1)
                                   for r in ("helps", "hurts", "error")},
        "check_queries_until_detection": _grew("check_queries_total", m0, m1),
        "detecting_check": line.split("check: ", 1)[-1],
        "app_requests": {"during_switch": _count(traffic.between(t0, t_ready)),
                         "until_detection": _count(traffic.between(t_ready, t_seen)),
                         "after_detection": _count(since)},
        "after_detection": {"images_perturbed": _grew("images_perturbed_total", m1, m2),
                            "requests_bypassed": _grew("requests_bypassed_total", m1, m2),
                            "answers_compared": len(diffs),
                            "max_abs_diff_vs_expected": max(diffs, default=None)},
    }


def swaps(app: App, proxy: Service, server: Any, redeploy: Callable[[], Service],
          bodies: list[bytes], test: tuple[np.ndarray, np.ndarray], tuner: DataFineTuner,
          settle: float) -> dict[str, Any]:
    """The three changes (module docstring) with the app sending throughout, and the
    back-camera model's held-out accuracy with and without the delta. ``server``: a
    :class:`~deploy_services.HotSwapServer`; ``redeploy()`` stops nothing, starts the other."""
    x, y = test
    direct = tuner.model  # HTTPModel on the server's URL: whatever model serves there now
    wait_for(proxy.found, lambda m: m.get('checks_total{result="helps"}', 0) >= 1, 60,
             "a first check that says the delta helps")
    traffic = Traffic(app, proxy.found, bodies, 20.0)
    out: dict[str, Any] = {}
    try:
        time.sleep(settle)
        def clean(idx: list[int]) -> np.ndarray:  # what pass-through forwards
            return direct.predict(x[idx])[:, 0]

        def perturbed(idx: list[int]) -> np.ndarray:  # what the active proxy forwards
            return direct.predict(tuner.transform(x[idx]))[:, 0]

        out["hot_swap"] = change(proxy, traffic, lambda: server.swap("blazeface-back"),
                                 "bypass_auto", clean, settle)
        every = list(range(len(x)))
        back_clean, back_delta = clean(every), perturbed(every)
        out["swap_back"] = change(proxy, traffic, lambda: server.swap("blazeface"), "active",
                                  perturbed, settle)

        def stop_and_start() -> float:
            server.stop()
            return redeploy().ready_at

        out["redeploy"] = change(proxy, traffic, stop_and_start, "bypass_auto", clean, settle)
    finally:
        traffic.stop()
    out["back_model_test_accuracy"] = {
        "without_delta": float(np.mean(decisions(back_clean) == y)),
        "with_delta": float(np.mean(decisions(back_delta) == y))}
    return out
