"""A stand-in model server: any ``predict(images) -> scores`` object behind a preset's wire format.

For tests and benchmarks only: it listens on 127.0.0.1, answers in the format of
one preset (:mod:`blackbox_dft.adapters.remote.presets`,
:mod:`blackbox_dft.adapters.remote.vendors`) and can inject
faults, drawn from a seeded generator: throttling (HTTP 429 + ``Retry-After``, or
the vendor's own throttle answer), HTTP 500, dropped connections, malformed
JSON, and added latency.

``images_served`` counts the images of requests answered with HTTP 200 *and*
scores. A faulted, refused or malformed answer counts nothing, so with a client
that reads every answer, ``images_served`` equals the client's query count
however many retries the faults caused.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from blackbox_dft.adapters.remote.presets import Preset
from blackbox_dft.adapters.remote.vendors import PRESETS, make_preset
from blackbox_dft.adapters.serving.routes import routes_for

__all__ = ["Faults", "StandInServer", "serve_main"]


@dataclass
class Faults:
    """What the server does wrong, and how often (probabilities per request).

    throttle: answer "too many requests" (``throttle_style="http429"``: 429 with
    ``Retry-After: retry_after`` seconds; ``"vendor"``: the preset's own throttle
    answer, e.g. Face++ 403 CONCURRENCY_LIMIT_EXCEEDED). error: HTTP 500. drop:
    close the connection without answering. malformed: 200 with a body that is not
    JSON. latency: seconds added to every request. seed: the faults' generator.
    """

    throttle: float = 0.0
    throttle_style: str = "http429"
    retry_after: int = 0
    error: float = 0.0
    drop: float = 0.0
    malformed: float = 0.0
    latency: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        total = self.throttle + self.error + self.drop + self.malformed
        if min(self.throttle, self.error, self.drop, self.malformed) < 0 or total > 1:
            raise ValueError(f"fault probabilities must be >= 0 and sum to <= 1, got {self}")
        if self.throttle_style not in ("http429", "vendor"):
            raise ValueError(
                f"throttle_style must be 'http429' or 'vendor', got {self.throttle_style!r}")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real API
    # Buffer the answer and flush it once (status, headers and body in one send) and
    # disable Nagle: otherwise a keep-alive answer waits on the client's delayed ACK
    # (~40 ms per request on Linux), which no real API server does.
    wbufsize = 1 << 16
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.owner.verbose:
            super().log_message(format, *args)

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None,
              raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        owner = self.server.owner
        path = urlsplit(self.path).path
        found = owner.routes.get(path)
        if found is not None:
            owner._bump("rejected", int(found[0] == 404))
            self._send(*found)
        elif path in ("/", "/health", "/v2/health/ready"):
            self._send(200, {"status": "ok", "protocol": owner.preset.name,
                             "images_served": owner.images_served})
        else:
            self._send(404, {"error": f"no route GET {self.path}"})

    def do_POST(self) -> None:
        owner = self.server.owner
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        fault = owner._draw()
        if owner.faults.latency:
            time.sleep(owner.faults.latency)
        if fault == "drop":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if fault == "throttle":
            if owner.faults.throttle_style == "vendor":
                status, answer = owner.preset.throttle_answer()
                self._send(status, answer)
            else:
                self._send(429, {"error": "too many requests (injected)"},
                           {"Retry-After": str(owner.faults.retry_after)})
            return
        if fault == "error":
            self._send(500, {"error": "internal error (injected)"})
            return
        status, why = owner.routes.infer_error(urlsplit(self.path).path, self.headers)
        if status:
            owner._bump("rejected")
            self._send(status, {"error": why})
            return
        if owner.api_key is not None and not owner.preset.server_auth_ok(
                dict(self.headers.items()), body, owner.api_key):
            owner._bump("rejected")
            self._send(*owner.preset.auth_answer())
            return
        try:
            images, request = owner.routes.read(body, self.headers)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            owner._bump("rejected")
            self._send(400, {"error": f"bad request: {exc}"})
            return
        if fault == "malformed":
            self._send(200, None, raw=b'{"scores": [[0.5, 0.5], ')
            return
        try:
            scores = owner._score(images)
            answer, headers = owner.routes.write(scores, request)
        except Exception as exc:  # the model's failure is the server's 500, as in production
            self._send(500, {"error": f"model failed: {type(exc).__name__}: {exc}"})
            return
        owner._bump("images_served", len(images))
        self._send(200, None, headers, raw=answer)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: StandInServer


class StandInServer:
    """Serve ``model`` on 127.0.0.1 in the wire format of ``protocol``.

    model: any object with ``predict(uint8 (N, H, W, 3) RGB) -> (N, K)``.
    protocol: a preset name (``oip``, ``json``, ``tfserving``, ``torchserve``,
    ``facepp``, ``gcv``, ``clarifai``) or a :class:`Preset`; further keywords
    are the preset's options (``labels`` ...). port: 0 picks a free port.
    api_key: if given, requests without it get the vendor's bad-key answer.
    Use as a context manager, or ``start()`` (returns the endpoint URL) / ``stop()``.
    """

    def __init__(self, model: Any, protocol: str | Preset = "oip", *, port: int = 0,
                 model_name: str = "standin", faults: Faults | None = None,
                 api_key: str | None = None, verbose: bool = False, **preset_options: Any) -> None:
        if not callable(getattr(model, "predict", None)):
            raise TypeError(
                f"model must have predict(images) -> scores, got {type(model).__name__}")
        self.model = model
        self.preset = make_preset(protocol, **preset_options)
        self.model_name, self.port = model_name, int(port)
        self.path = self.preset.path(model_name)
        #: the POST path, or with OIP health, metadata and versions too
        self.routes = routes_for(self.preset, model_name)
        self.faults = faults or Faults()
        self.api_key, self.verbose = api_key, verbose
        self.counts: dict[str, int] = {"requests": 0, "images_served": 0, "throttle": 0,
                                       "error": 0, "drop": 0, "malformed": 0, "rejected": 0}
        self._lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._rng = random.Random(self.faults.seed)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def images_served(self) -> int:
        """Images in requests answered with HTTP 200 and scores."""
        return self.counts["images_served"]

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the server is not started: call start() first")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def url(self) -> str:
        """The endpoint URL to give to :class:`blackbox_dft.adapters.remote.http.HTTPModel`."""
        return self.base_url + self.path

    def _bump(self, key: str, k: int = 1) -> None:
        with self._lock:
            self.counts[key] += k

    def _draw(self) -> str | None:
        f = self.faults
        with self._lock:
            self.counts["requests"] += 1
            u = self._rng.random()
            for kind, p in (("throttle", f.throttle), ("error", f.error), ("drop", f.drop),
                            ("malformed", f.malformed)):
                if u < p:
                    self.counts[kind] += 1
                    return kind
                u -= p
        return None

    def _score(self, images: np.ndarray) -> np.ndarray:
        with self._model_lock:  # stand-ins (e.g. TFLite interpreters) are not thread-safe
            scores = np.asarray(self.model.predict(images), dtype=np.float64)
        if scores.ndim == 1:
            scores = scores[:, None]
        if scores.ndim != 2 or scores.shape[0] != len(images):
            raise ValueError(
                f"model returned scores of shape {scores.shape} for {len(images)} images")
        return scores

    def start(self) -> str:
        """Start serving in a background thread; return the endpoint URL."""
        if self._httpd is not None:
            return self.url
        self._httpd = _HTTPServer(("127.0.0.1", self.port), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"StandInServer:{self.preset.name}", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving and free the port."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> StandInServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._httpd is not None else "stopped"
        return (f"StandInServer({type(self.model).__name__}, protocol={self.preset.name!r}, "
                f"{where}, images_served={self.images_served})")


def _load_model(name: str) -> Any:
    from blackbox_dft.adapters.standins.models import (
        load_standin,  # lazy: stand-ins pull in heavy optional packages
    )

    return load_standin(name)


def _preset_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> (key, JSON value, else the text): ``size=[64,64]``, ``datatype=FP32``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except ValueError:
        return key.strip(), value


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Arguments of ``blackbox-dft serve`` (added to ``parser`` if given)."""
    p = parser or argparse.ArgumentParser(
        prog="blackbox-dft serve", description="Serve a stand-in model on 127.0.0.1 in a preset's "
        "wire format, with optional fault injection (for tests and benchmarks).")
    p.add_argument("--model", required=True,
                   help="stand-in model name (see blackbox_dft.adapters.standins.models)")
    p.add_argument("--protocol", default="oip", choices=sorted(PRESETS), help="wire format")
    p.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (0: any free port)")
    p.add_argument("--model-name", default=None,
                   help="model name in the URL path (default: the --model name)")
    p.add_argument("--labels", default=None, help="comma-separated labels, in score order")
    p.add_argument("--preset-option", action="append", default=[], metavar="KEY=VALUE",
                   type=_preset_option,
                   help="a preset option (JSON value), e.g. for oip: datatype=FP32, "
                        "layout=NCHW, size=[224,224], mean=imagenet, model_version=2")
    p.add_argument("--latency-ms", type=float, default=0.0, help="added latency per request")
    p.add_argument("--throttle", type=float, default=0.0, help="probability of a throttle answer")
    p.add_argument("--throttle-style", default="http429", choices=["http429", "vendor"])
    p.add_argument("--retry-after", type=int, default=1, help="Retry-After seconds on a 429")
    p.add_argument("--error-rate", type=float, default=0.0, help="probability of an HTTP 500")
    p.add_argument("--drop-rate", type=float, default=0.0,
                   help="probability of a dropped connection")
    p.add_argument("--malformed-rate", type=float, default=0.0, help="probability of non-JSON 200")
    p.add_argument("--seed", type=int, default=0, help="seed of the fault generator")
    p.add_argument("--api-key-env", default=None,
                   help="environment variable holding the key that requests must carry")
    p.add_argument("--verbose", action="store_true", help="log every request")
    return p


def serve_main(argv: list[str] | None = None, *, block: bool = True,
               parser: argparse.ArgumentParser | None = None) -> int:
    """Entry point of ``blackbox-dft serve``: parse ``argv`` (with ``parser`` if given, e.g.
    one whose errors are one line), serve until Ctrl-C, return the exit code: 0, 2 for a
    bad argument (unknown stand-in, busy port, unset key variable), 4 for a missing optional
    dependency of the stand-in. Errors are one line on stderr, never a traceback."""
    args = build_parser(parser).parse_args(argv)
    faults = Faults(throttle=args.throttle, throttle_style=args.throttle_style,
                    retry_after=args.retry_after, error=args.error_rate, drop=args.drop_rate,
                    malformed=args.malformed_rate, latency=args.latency_ms / 1000.0, seed=args.seed)
    key = None
    if args.api_key_env:
        key = os.environ.get(args.api_key_env)
        if not key:
            print(f"blackbox-dft serve: environment variable {args.api_key_env} is not set",
                  file=sys.stderr)
            return 2
    options: dict[str, Any] = {}
    if args.labels:
        options["labels"] = [s.strip() for s in args.labels.split(",") if s.strip()]
    options.update(args.preset_option)
    try:
        server = StandInServer(_load_model(args.model), args.protocol, port=args.port,
                               model_name=args.model_name or args.model, faults=faults,
                               api_key=key, verbose=args.verbose, **options)
        url = server.start()
    except ModuleNotFoundError as exc:
        print(f"blackbox-dft serve: missing dependency: {exc}", file=sys.stderr)
        return 4
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            why = "in use" if exc.errno == errno.EADDRINUSE else "not allowed"
            print(f"blackbox-dft serve: port {args.port} on 127.0.0.1 is {why}; pick another "
                  "with --port (0: any free port)", file=sys.stderr)
        else:
            print(f"blackbox-dft serve: cannot serve on 127.0.0.1:{args.port}: "
                  f"{exc.strerror or exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError) as exc:  # unknown stand-in, bad labels
        print(f"blackbox-dft serve: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(f"serving stand-in {args.model!r} as {args.protocol} at {url} (Ctrl-C to stop)",
          flush=True)
    try:
        while block:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        print(f"stopped; requests {server.counts['requests']}, "
              f"images served {server.images_served}", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(serve_main())
