"""A transparent HTTP proxy that adds a fitted delta to the images of every request.

An ASGI application (served by uvicorn: ``blackbox-dft proxy``; the ``proxy`` extra). Each
request that is not one of the proxy's own routes goes to ``upstream`` + its path and query,
with the caller's headers (its own credentials: the proxy holds no key), its body's images
perturbed by :class:`~blackbox_dft.adapters.serving.proxy_rewrite.Rewriter` (a body without
images where the preset puts them goes as it came, counted as ``unperturbed``). The
upstream's answer comes back as it was sent: status, body bytes (still compressed if it
was), headers but the hop-by-hop ones. Written directly against ASGI, without a framework:
a proxy needs the raw body and headers, the size limit enforced while reading, and nothing
a router adds.

Own routes: ``GET /healthz``, ``GET /metrics`` (Prometheus text format), ``GET|POST
/admin/bypass?state=on|off|auto`` (on: pass-through, every request forwarded unperturbed;
off: the delta applied; either forced, whatever the scheduled checks say; auto: the
checks decide; :class:`~blackbox_dft.adapters.serving.proxy_state.DeltaState`).
Limits: ``max_body_bytes`` (413), ``concurrency`` requests at once (others wait within the
deadline, then 503), ``deadline`` seconds per request (504), a keep-alive pool of
``connections`` to the upstream (aiohttp: 0.3-0.5 ms of CPU per 200 KB request against
2.2 ms for httpx, measured on this project's machine). Upstream unreachable or failing
mid-answer: 502. Every error answer is ``{"error": one line}`` and names no secret (the
upstream's query and userinfo are redacted; headers and bodies are never logged). The
proxy keeps no cookies: what the upstream sets goes back to that caller only.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import functools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import numpy as np
from yarl import URL

from blackbox_dft.adapters.remote.redact import safe_url
from blackbox_dft.adapters.serving.admin import asgi_admin_refusal
from blackbox_dft.adapters.serving.proxy_rewrite import NoImages, Perturb, Rewriter
from blackbox_dft.adapters.serving.proxy_state import DeltaState
from blackbox_dft.core.images import (
    add_saturating,
    check_delta,
    check_images,
    resize_delta,
    split_rounded,
)

__all__ = ["ProxyConfig", "ProxyApp", "perturber", "HOP_BY_HOP"]

log = logging.getLogger("blackbox_dft.proxy")

#: headers that belong to one connection, not to the request (RFC 9110 7.6.1), plus those
#: the proxy recomputes (host, content-length)
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authenticate",
                        "proxy-authorization", "te", "trailer", "transfer-encoding",
                        "upgrade", "host", "content-length"})
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def perturber(delta_for: Callable[[int, int], np.ndarray], sizes: int = 32) -> Perturb:
    """``perturb(images)``: ``clip(images + round(delta_for(H, W)))``, the arithmetic of the
    tuners' ``transform`` (:func:`~blackbox_dft.core.images.apply_delta`, step by step).
    For the last ``sizes`` image sizes the rounded delta is kept, split into the uint8 grey
    levels to add and to subtract, so that an image costs two saturating OpenCV operations
    (``apply_delta`` checks, resizes, rounds and splits the float delta on every call: half
    a millisecond at 224x224, on every request)."""

    @functools.lru_cache(maxsize=sizes)
    def split(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        return split_rounded(resize_delta(check_delta(delta_for(h, w)), h, w))

    def perturb(images: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(check_images(images))
        up, down = split(int(x.shape[1]), int(x.shape[2]))
        out = np.empty_like(x)
        for n in range(x.shape[0]):
            add_saturating(x[n], up, down, out[n])
        return out

    return perturb


@dataclass
class ProxyConfig:
    """upstream: base URL the request paths are appended to. max_body_bytes: largest
    request body taken. concurrency: requests forwarded at once. deadline: seconds per
    request (queueing, perturbing and the upstream's answer). connections: keep-alive pool
    to the upstream. bypass: start in forced pass-through (``bypass_forced``).
    rewrite_threads: threads that rewrite bodies, off the event loop. One is the cheapest
    (measured with 8 clients at 224x224: 8.4 ms of CPU per request against 10.2 with
    asyncio's default pool, whose threads hand Python's GIL back and forth); more let
    OpenCV's decoding and encoding of several requests overlap on more cores. Beyond one
    core of Python, run several proxies behind the same port. admin_token: what a ``POST
    /admin/bypass`` must carry as Bearer token (None: local callers only; never in repr)."""

    upstream: str
    max_body_bytes: int = 32 << 20
    concurrency: int = 64
    deadline: float = 30.0
    connections: int = 100
    bypass: bool = False
    rewrite_threads: int = 1
    admin_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        try:
            url = urlsplit(self.upstream)
            host = url.hostname
        except ValueError:  # a bad port or IPv6 literal
            host = None
        if url.scheme not in ("http", "https") or not host:
            raise ValueError(f"upstream must be an http(s) URL, got {safe_url(self.upstream)!r}")
        for name in ("max_body_bytes", "concurrency", "connections", "rewrite_threads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.deadline > 0:
            raise ValueError(f"deadline must be > 0 seconds, got {self.deadline}")


class _Metrics:
    """Counters and a latency histogram, written in the Prometheus text format."""

    def __init__(self) -> None:
        self.by_code: dict[int, int] = {}
        self.counts = {"images_perturbed": 0, "requests_bypassed": 0,
                       "requests_unperturbed": 0, "upstream_errors": 0,
                       "rejected_body_too_large": 0, "rejected_busy": 0, "deadline_exceeded": 0}
        self.buckets = [0] * len(_BUCKETS)
        self.latency_sum, self.latency_count, self.in_flight = 0.0, 0, 0

    def observe(self, code: int, seconds: float) -> None:
        self.by_code[code] = self.by_code.get(code, 0) + 1
        self.latency_sum += seconds
        self.latency_count += 1
        for i, b in enumerate(_BUCKETS):
            if seconds <= b:
                self.buckets[i] += 1

    def render(self, state: DeltaState) -> str:
        bypass = state.bypass
        p = "blackbox_dft_proxy_"
        lines = [f"# HELP {p}requests_total Requests forwarded or refused, by status code.",
                 f"# TYPE {p}requests_total counter"]
        lines += [f'{p}requests_total{{code="{c}"}} {n}' for c, n in sorted(self.by_code.items())]
        for name, n in self.counts.items():
            lines += [f"# TYPE {p}{name}_total counter", f"{p}{name}_total {n}"]
        lines += [f"# HELP {p}request_seconds Time from request to answer, upstream included.",
                  f"# TYPE {p}request_seconds histogram"]
        lines += [f'{p}request_seconds_bucket{{le="{b}"}} {n}'
                  for b, n in zip(_BUCKETS, self.buckets, strict=True)]
        lines += [f'{p}request_seconds_bucket{{le="+Inf"}} {self.latency_count}',
                  f"{p}request_seconds_sum {self.latency_sum:.6f}",
                  f"{p}request_seconds_count {self.latency_count}",
                  f"# HELP {p}bypass 1 when requests pass through unperturbed.",
                  f"# TYPE {p}bypass gauge", f"{p}bypass {int(bypass)}",
                  f"# TYPE {p}in_flight gauge", f"{p}in_flight {self.in_flight}"]
        lines += state.render(p)
        return "\n".join(lines) + "\n"


class _Refused(Exception):
    """An answer of the proxy's own (status, one-line reason)."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status, self.why = status, why


class ProxyApp:
    """The ASGI application. rewriter: perturbs request bodies (None: always pass-through).
    state: applied or passed through, and the scheduled checks (default: no checks; started
    in ``bypass_forced`` when ``config.bypass``)."""

    def __init__(self, rewriter: Rewriter | None, config: ProxyConfig,
                 state: DeltaState | None = None) -> None:
        self.rewriter, self.config = rewriter, config
        self.state = state if state is not None else DeltaState()
        if config.bypass:
            self.state.forced = "on"
        self.metrics = _Metrics()
        base = URL(config.upstream.rstrip("/"), encoded=True)
        # credentials in the upstream URL go as Basic auth when the caller sends none of its
        # own (a caller's Authorization header goes as it came)
        self._auth = None if base.user is None else "Basic " + base64.b64encode(
            f"{base.user}:{base.password or ''}".encode()).decode("ascii")
        self._base = str(base.with_user(None))
        self._client: aiohttp.ClientSession | None = None
        self._slots: asyncio.Semaphore | None = None
        self._rewriting: concurrent.futures.ThreadPoolExecutor | None = None

    # -- lifespan ------------------------------------------------------------------
    async def startup(self) -> None:
        cfg = self.config
        client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=cfg.connections),
            timeout=aiohttp.ClientTimeout(total=cfg.deadline), trust_env=False,
            auto_decompress=False,  # the answer's bytes as sent, still compressed if they were
            cookie_jar=aiohttp.DummyCookieJar(),  # one caller's cookies are not another's
            # no default headers: the caller's only (Host and Content-Length are the request's)
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"))
        self._client, self._slots = client, asyncio.Semaphore(cfg.concurrency)
        self._rewriting = concurrent.futures.ThreadPoolExecutor(
            cfg.rewrite_threads, thread_name_prefix="bbdft-rewrite")
        self.state.start()

    @property
    def bypass(self) -> bool:
        """Requests pass through unperturbed (forced, or the last check said so)."""
        return self.state.bypass

    @bypass.setter
    def bypass(self, on: bool) -> None:  # the operator's switch, as a Python call
        self.state.force("on" if on else "off")

    async def shutdown(self) -> None:
        await self.state.stop()
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._rewriting is not None:
            self._rewriting.shutdown(wait=False, cancel_futures=True)
            self._rewriting = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- requests ------------------------------------------------------------------
    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path, method = scope["path"], scope["method"]
        if path == "/healthz" and method in ("GET", "HEAD"):
            await _answer(send, 200, json.dumps({"status": "ok", "bypass": self.bypass,
                                                 "state": self.state.state}).encode())
        elif path == "/metrics" and method == "GET":
            await _answer(send, 200, self.metrics.render(self.state).encode(),
                          "text/plain; version=0.0.4; charset=utf-8")
        elif path == "/admin/bypass":
            await self._admin(scope, send)
        else:
            await self._forward(scope, receive, send)

    async def _admin(self, scope: dict[str, Any], send: Any) -> None:
        query = dict(p.partition("=")[::2]
                     for p in scope.get("query_string", b"").decode("latin-1").split("&") if p)
        state = query.get("state")
        if scope["method"] == "POST":
            refused = asgi_admin_refusal(scope, self.config.admin_token)
            if refused is not None:
                await _answer(send, refused[0], _error(refused[1]))
                return
            if state not in ("on", "off", "auto"):
                await _answer(send, 400, _error(
                    f"POST /admin/bypass takes state=on (pass-through), off (apply the delta) "
                    f"or auto (the scheduled checks decide), got {str(state)[:40]!r}"))
                return
            self.state.force(state)
        await _answer(send, 200, json.dumps({"bypass": self.bypass,
                                             "state": self.state.state}).encode())

    async def _forward(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        start = time.perf_counter()
        self.metrics.in_flight += 1
        status, body = 500, b""
        headers: list[tuple[bytes, bytes]] = []
        try:
            async with asyncio.timeout(self.config.deadline):
                status, headers, body = await self._proxied(scope, receive)
        except _Refused as exc:
            status, body = exc.status, _error(exc.why)
        except TimeoutError:
            self.metrics.counts["deadline_exceeded"] += 1
            status, body = 504, _error(f"proxy: no answer within the deadline of "
                                       f"{self.config.deadline:g} s")
        finally:
            self.metrics.in_flight -= 1
        if not headers:
            headers = [(b"content-type", b"application/json")]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self.metrics.observe(status, time.perf_counter() - start)

    async def _proxied(self, scope: dict[str, Any],
                       receive: Any) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        body = await self._read_body(scope, receive)
        assert self._slots is not None and self._client is not None, "not started"
        async with self._slots:
            headers = _forwarded_headers(scope["headers"])
            if body and scope["method"] in ("POST", "PUT"):
                body = await self._perturbed(body, headers)
            url = self._base + scope.get("raw_path", scope["path"].encode()).decode("latin-1")
            if scope.get("query_string"):
                url += "?" + scope["query_string"].decode("latin-1")
            try:
                if self._auth and not any(k.lower() == "authorization" for k, _ in headers):
                    headers.append(("Authorization", self._auth))
                # encoded: the caller's path and query go as they came, not re-quoted
                async with self._client.request(
                        scope["method"], URL(url, encoded=True), headers=headers,
                        data=body or None, allow_redirects=False) as response:
                    raw = await response.read()
                    status, answer = response.status, response.raw_headers
            except (TimeoutError, asyncio.TimeoutError):  # aiohttp's timeouts are both
                raise TimeoutError from None
            except aiohttp.ClientError as exc:
                self.metrics.counts["upstream_errors"] += 1
                log.warning("upstream %s failed: %s", safe_url(self.config.upstream),
                            type(exc).__name__)
                raise _Refused(502, f"proxy: upstream {safe_url(self.config.upstream)} "
                               f"failed: {type(exc).__name__}") from None
        out = [(k, v) for k, v in answer if k.decode("latin-1").lower() not in HOP_BY_HOP]
        return status, out, raw

    async def _read_body(self, scope: dict[str, Any], receive: Any) -> bytes:
        limit = self.config.max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            self.metrics.counts["rejected_body_too_large"] += 1
            raise _Refused(413, f"proxy: request body of {int(declared)} bytes is over the "
                           f"limit of {limit} bytes (--max-body-bytes)")
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Refused(499, "proxy: the client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                self.metrics.counts["rejected_body_too_large"] += 1
                raise _Refused(413, f"proxy: request body over the limit of {limit} bytes "
                               "(--max-body-bytes)")
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)

    async def _perturbed(self, body: bytes, headers: list[tuple[str, str]]) -> bytes:
        """The body with its images perturbed (``headers`` updated in place), or as it came
        in bypass or when it holds no images where the preset puts them."""
        if self.rewriter is None or self.bypass:
            self.metrics.counts["requests_bypassed"] += 1
            return body
        lower = {k.lower(): v for k, v in headers}
        try:
            done = await asyncio.get_running_loop().run_in_executor(
                self._rewriting, self.rewriter.rewrite, body, lower)
        except NoImages as exc:
            self.metrics.counts["requests_unperturbed"] += 1
            log.info("forwarded unperturbed: %s", str(exc)[:200])
            return body
        for name, value in done.headers.items():
            headers[:] = [(k, v) for k, v in headers if k.lower() != name.lower()]
            headers.append((name, value))
        self.metrics.counts["images_perturbed"] += done.images
        return done.body


def _forwarded_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """The caller's headers, in order and repeated as they came, minus hop-by-hop ones (and
    those its Connection header names)."""
    pairs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]
    named = {t.strip().lower() for k, v in pairs if k.lower() == "connection"
             for t in v.split(",")}
    # ASGI gives names in lower case; sent in their usual case ("Authorization"), for
    # servers that compare names case-sensitively (the stand-in's auth check does)
    return [("-".join(w.capitalize() for w in k.split("-")), v) for k, v in pairs
            if k.lower() not in HOP_BY_HOP | named]


def _error(why: str) -> bytes:
    return json.dumps({"error": " ".join(why.split())}).encode()


async def _answer(send: Any, status: int, body: bytes,
                  content_type: str = "application/json") -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type.encode()),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
