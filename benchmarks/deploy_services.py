"""What benchmarks/deploy.py runs and talks to: ``blackbox-dft`` subcommands in their own
processes, a Face++ Detect "app" written with plain ``requests``, the proxy's /metrics read
back, and the CPU time of a process.

Not a benchmark (no ``__main__`` block): run_all.py does not run it.
"""

from __future__ import annotations

import base64
import multiprocessing as mp
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any
from urllib.parse import urlencode

import cv2
import numpy as np
import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FACEPP_PATH = "/facepp/v3/detect"


class Service:
    """``blackbox-dft ARGS`` in its own process; ready once a line of its output matches
    ``ready`` (whose first group, e.g. the URL it serves, is :attr:`found`). Its output
    (stdout and stderr) is kept with arrival times in :attr:`lines`."""

    def __init__(self, args: list[str], ready: str, env: dict[str, str],
                 timeout: float = 120.0) -> None:
        self.args = args
        self.proc = subprocess.Popen([sys.executable, "-m", "blackbox_dft", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env, cwd=ROOT, bufsize=1)
        self.lines: list[tuple[float, str]] = []
        found: queue.Queue[str | None] = queue.Queue()
        pattern = re.compile(ready)

        def drain() -> None:  # also keeps the pipe from filling up while it serves
            assert self.proc.stdout is not None
            seen = False
            for line in self.proc.stdout:
                self.lines.append((time.time(), line.rstrip("\n")))
                match = pattern.search(line)
                if match and not seen:
                    seen = True
                    found.put(match.group(1))
            found.put(None)

        self._thread = threading.Thread(target=drain, daemon=True)
        self._thread.start()
        try:
            got = found.get(timeout=timeout)
        except queue.Empty:
            got = None
        if got is None:
            self.stop()
            raise RuntimeError(f"blackbox-dft {' '.join(args[:1])} did not start: "
                               + " | ".join(t for _, t in self.lines[-5:]))
        self.found: str = got
        self.ready_at = time.time()

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def stop(self, timeout: float = 30.0) -> int:
        """Ctrl-C (graceful: the CLI's own shutdown), then a kill if it hangs; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._thread.join(timeout=10)
        return int(self.proc.returncode)

    def text(self) -> str:
        return "\n".join(t for _, t in self.lines)


def _hot_swappable(conn: Any, model: str, key: str) -> None:
    """The child process of :class:`HotSwapServer`: serve, swap models on command, stop."""
    from blackbox_dft.adapters.serving.server import StandInServer
    from blackbox_dft.adapters.standins.models import load_standin

    server = StandInServer(load_standin(model), "facepp", model_name=model, api_key=key)
    conn.send(server.start())
    while True:
        command, name = conn.recv()
        if command == "swap":
            new = load_standin(name)  # loaded and run once first: the swap is one assignment
            new.predict(np.zeros((1, 25, 25, 3), dtype=np.uint8))
            server.model = new  # the next request is answered by it (read per request)
            conn.send(time.time())
        else:
            server.stop()
            conn.send(server.images_served)
            return


class HotSwapServer:
    """The stand-in server (``StandInServer``, Face++ Detect, API key checked) in a child
    process whose model can be replaced between two requests without stopping it: a vendor
    that updates its model behind a load balancer, with no downtime."""

    def __init__(self, model: str, key: str) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_hot_swappable, args=(child, model, key), daemon=True)
        self.proc.start()
        if not self._conn.poll(120):
            self.stop()
            raise RuntimeError(f"the stand-in server ({model}) did not start within 120 s")
        self.found: str = self._conn.recv()

    @property
    def pid(self) -> int:
        return int(self.proc.pid or 0)

    def swap(self, model: str) -> float:
        """Serve ``model`` from the next request on; the time (``time.time()``) it does."""
        self._conn.send(("swap", model))
        return float(self._conn.recv())

    def stop(self, timeout: float = 30.0) -> int:
        """Stop serving and end the child process; its exit code."""
        if self.proc.is_alive():
            try:
                self._conn.send(("stop", ""))
                self._conn.poll(timeout)
            except (BrokenPipeError, OSError):
                pass
            self.proc.join(timeout)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(10)
        return int(self.proc.exitcode or 0)

    def text(self) -> str:
        return ""


def cli(args: list[str], env: dict[str, str], timeout: float = 1800.0) -> str:
    """Run ``blackbox-dft ARGS`` to its end; its output, or RuntimeError with its tail."""
    proc = subprocess.run([sys.executable, "-m", "blackbox_dft", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"blackbox-dft {args[0]} failed (exit {proc.returncode}): "
                           f"{(proc.stdout + proc.stderr)[-1500:]}")
    return proc.stdout + proc.stderr


# -- the app -------------------------------------------------------------------------------
def png(image: np.ndarray) -> bytes:
    """uint8 RGB ``(H, W, 3)`` as PNG bytes, as an app would write them (cv2 defaults)."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    return bytes(buf.tobytes())


def facepp_body(image: np.ndarray, key: str, secret: str) -> bytes:
    """A Face++ Detect request body: the caller's keys and one base64 PNG, as form fields."""
    return urlencode({"api_key": key, "api_secret": secret, "return_attributes": "smiling",
                      "image_base64": base64.b64encode(png(image)).decode()}).encode()


class App:
    """Plain ``requests`` code calling Face++ Detect, one image per request, one keep-alive
    session per thread; it knows nothing of deltas or proxies, only a base URL."""

    headers = {"Content-Type": "application/x-www-form-urlencoded"}

    def __init__(self) -> None:
        self._local = threading.local()

    def ask(self, base: str, body: bytes, timeout: float = 60.0
            ) -> tuple[int, float | None, float]:
        """(HTTP status, P(face) = the answer's ``smile.value / 100`` or None, seconds)."""
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        t0 = time.perf_counter()
        try:
            r = self._local.session.post(base + FACEPP_PATH, data=body, headers=self.headers,
                                         timeout=timeout)
        except requests.RequestException:
            return 0, None, time.perf_counter() - t0
        seconds = time.perf_counter() - t0
        if r.status_code != 200:
            return r.status_code, None, seconds
        return 200, float(r.json()["faces"][0]["attributes"]["smile"]["value"]) / 100.0, seconds


def decisions(p: Any) -> np.ndarray:
    """The app's decision: face when P(face) > 0.5 (the tuners' argmax of [1 - p, p])."""
    return (np.asarray(p, dtype=np.float64) > 0.5).astype(np.int64)


# -- the proxy's metrics, process CPU -------------------------------------------------------
def metrics(base: str) -> dict[str, float]:
    """The proxy's /metrics as {``name`` or ``name{labels}``: value}, prefix dropped."""
    out = {}
    for line in requests.get(base + "/metrics", timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name.removeprefix("blackbox_dft_proxy_")] = float(value)
    return out


def wait_for(base: str, done: Any, timeout: float, what: str,
             every: float = 0.02) -> dict[str, float]:
    """/metrics polled until ``done(metrics)``; TimeoutError naming ``what`` and the state."""
    end = time.monotonic() + timeout
    while True:
        m = metrics(base)
        if done(m):
            return m
        if time.monotonic() > end:
            state = [k for k, v in m.items() if k.startswith("state{") and v == 1]
            raise TimeoutError(f"the proxy did not reach {what} within {timeout:g} s; its "
                               f"state is {state}")
        time.sleep(every)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (all threads; Linux ``/proc``)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of process ``pid`` (and so the threads they start) to ``cpus`` (Linux:
    ``sched_setaffinity`` sets one thread's, and a process's other threads keep theirs)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except (ProcessLookupError, FileNotFoundError):  # a thread that just ended
            pass
