"""HTTPModel: a remote model (vendor REST API or model server) as a ``Model``.

One ``requests.Session`` with a connection pool; each ``predict`` call is split
into requests of at most ``images_per_request`` images, sent by up to
``concurrency`` threads under a client-side ``rate_limit``, and the scores come
back in input order. Transient faults (connection errors, timeouts, 429, 5xx)
are retried by urllib3's ``Retry`` (POST included, ``Retry-After`` honoured,
exponential backoff with jitter); vendor throttles that are not a 429 (Face++
403 ``CONCURRENCY_LIMIT_EXCEEDED``, Clarifai's body status 11005) are retried here.

Query accounting: this adapter counts nothing towards the budget. The budget
is ``blackbox_dft.model.QueryCounter`` (images passed to ``predict``), so a
retried request never changes any count.

Errors that retrying cannot fix (bad key, a URL that answers with something
else, the wrong number of scores) are raised once and *latched*: later calls
raise the same error without sending anything, until :meth:`HTTPModel.reset`,
so that a caller's loop cannot keep paying for requests that will fail.
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
import warnings
from collections.abc import Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from blackbox_dft.images import check_image_pairs, side_by_side

from .base import BaseModel
from .errors import (
    AuthenticationError,
    EndpointUnreachable,
    HTTPModelError,
    HTTPStatusError,
    ResponseFormatError,
    ThrottledError,
)
from .presets import Preset
from .vendors import make_preset
from .wire import encode_image

__all__ = ["HTTPModel", "safe_url"]

_RETRY_STATUS = (429, 500, 502, 503, 504)
_SENSITIVE_HEADER = re.compile(r"auth|key|token|secret|cookie|signature|password", re.I)


def safe_url(url: str) -> str:
    """``url`` without a password and with every query value replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    query = "&".join(f"{q.split('=', 1)[0]}=***" for q in parts.query.split("&") if q)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


class _RateLimiter:
    """At most ``rate`` request starts per second, shared by all threads."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


OUTPUT_KINDS = ("scores", "labels", "ordinal", "embedding", "similarity")


class _Aborted(Exception):
    """Another request of the same call failed for good: do not send this one."""


class HTTPModel(BaseModel):
    """A model behind an HTTP endpoint, in one of the preset wire formats.

    url: the full endpoint URL (e.g. ``http://host:8080/v2/models/smile/infer``);
    preset: a name from ``adapters.vendors.PRESETS`` or a :class:`Preset`; the
    preset's options (``labels``, ``template``, ``scores_path``, ``outputs``, ...)
    are passed as further keywords. api_key / api_secret: secrets, else read from
    the preset's environment variables; sent only in headers or form fields.
    headers: extra headers (values whose names look secret are never shown).
    timeout: seconds, or (connect, read). max_retries: retries per request.
    backoff: seconds of the first backoff (doubles, jittered, capped at max_backoff).
    concurrency: requests in flight at once. images_per_request: batch size per
    request (capped by the vendor's limit). rate_limit: request starts per second.
    encoding: ``"png"`` (lossless, default) or ``"jpeg"`` (warns: it erodes a small
    perturbation).
    output_kind: what the endpoint returns: ``"scores"`` (default), ``"labels"`` (a
    decision per image, e.g. ``scores_path="results.*.label"`` with ``labels=[...]``: each
    label string, or a boolean for two classes, becomes a one-hot row; fit it with
    ``scores="labels"``), ``"ordinal"`` (coarse likelihood levels), ``"embedding"`` or
    ``"similarity"`` (a face-compare API: use :meth:`compare`; default for presets that
    declare it, e.g. ``facepp_compare``). The tuners refuse a loss that does not fit the
    declared kind.
    """

    def __init__(self, url: str, *, preset: str | Preset = "json",
                 headers: Mapping[str, str] | None = None,
                 api_key: str | None = None, api_secret: str | None = None,
                 timeout: float | tuple[float, float] = (5.0, 60.0), max_retries: int = 5,
                 backoff: float = 0.5, max_backoff: float = 30.0, concurrency: int = 4,
                 images_per_request: int | None = None, rate_limit: float | None = None,
                 encoding: str = "png", jpeg_quality: int = 95, name: str | None = None,
                 output_kind: str | None = None, **preset_options: Any) -> None:
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"url must be an http(s) URL, got {safe_url(str(url))!r}")
        self.url = url
        if output_kind is not None and output_kind not in OUTPUT_KINDS:
            raise ValueError(f"output_kind must be one of {OUTPUT_KINDS}, got {output_kind!r}")
        self.preset = make_preset(preset, **preset_options)
        self.output_kind = output_kind or self.preset.output_kind
        if encoding not in ("png", "jpeg"):
            raise ValueError(f"encoding must be 'png' or 'jpeg', got {encoding!r}")
        if encoding == "jpeg":
            warnings.warn("encoding='jpeg' is lossy: compression erodes a perturbation of a few "
                          "grey levels, so the model may not see the learned delta; prefer 'png'",
                          UserWarning, stacklevel=2)
        self.encoding, self.jpeg_quality = encoding, int(jpeg_quality)
        cap = self.preset.max_images_per_request
        ipr = images_per_request or self.preset.default_images_per_request
        if ipr < 1 or (cap is not None and ipr > cap):
            raise ValueError(f"images_per_request={ipr} out of range for preset "
                             f"{self.preset.name!r} (at most {cap} images per request)")
        if concurrency < 1 or max_retries < 0:
            raise ValueError(f"need concurrency >= 1 and max_retries >= 0, "
                             f"got {concurrency}, {max_retries}")
        self.images_per_request, self.concurrency = int(ipr), int(concurrency)
        self.timeout, self.max_retries = timeout, int(max_retries)
        self.backoff, self.max_backoff = float(backoff), float(max_backoff)
        self.rate_limit = rate_limit
        self.name = name or f"HTTPModel({self.preset.name}@{safe_url(url)})"

        self._secrets: dict[str, str] = {}
        given = {"api_key": api_key, "api_secret": api_secret}
        for key, env in self.preset.secret_env.items():
            value = given.get(key) or os.environ.get(env, "")
            if value:
                self._secrets[key] = value
        missing = [k for k in self.preset.required_secrets if k not in self._secrets]
        if missing:
            envs = [self.preset.secret_env[k] for k in missing]
            raise ValueError(f"preset {self.preset.name!r} needs {missing}: pass them as arguments "
                             f"or set the environment variables {envs}")
        self._headers = dict(headers or {})
        parts = urlsplit(url)
        in_url = {q.split("=", 1)[1] for q in parts.query.split("&")
                  if "=" in q and _SENSITIVE_HEADER.search(q.split("=", 1)[0])}
        self._redact_values = sorted(
            {v for v in self._secrets.values() if v} | {parts.password or ""} | in_url
            | {v for k, v in self._headers.items() if _SENSITIVE_HEADER.search(k) and v},
            key=len, reverse=True)
        self._redact_values = [v for v in self._redact_values if len(v) >= 3]

        self.stats: dict[str, int] = {"requests": 0, "failed_attempts": 0, "throttled": 0,
                                      "images_answered": 0}
        self._stats_lock = threading.Lock()
        self._limiter = _RateLimiter(rate_limit)
        self._fatal: HTTPModelError | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._jitter = random.Random()
        self.session = self._make_session()

    # -- plumbing ----------------------------------------------------------------------
    def _count(self, key: str, k: int = 1) -> None:
        with self._stats_lock:
            self.stats[key] = self.stats.get(key, 0) + k

    def _make_session(self) -> requests.Session:
        model = self

        class _CountingRetry(Retry):
            def increment(self, *args: Any, **kwargs: Any) -> Retry:  # type: ignore[override]
                model._count("failed_attempts")
                return super().increment(*args, **kwargs)

        opts: dict[str, Any] = dict(
            total=self.max_retries, connect=self.max_retries, read=self.max_retries,
            status=self.max_retries, other=0, allowed_methods=frozenset({"POST", "GET"}),
            status_forcelist=_RETRY_STATUS, backoff_factor=self.backoff,
            respect_retry_after_header=True, raise_on_status=False, raise_on_redirect=False)
        try:
            retry = _CountingRetry(**opts, backoff_max=self.max_backoff,
                                   backoff_jitter=self.backoff)
        except TypeError:  # urllib3 < 2 has neither backoff_max nor backoff_jitter
            retry = _CountingRetry(**opts)
        session = requests.Session()
        # Resolve the environment (proxies, CA bundle) once, here: with trust_env on,
        # requests re-reads os.environ and ~/.netrc on every request, a CPU cost per
        # request that shows at hundreds of requests per second. Secrets come from our
        # arguments, never from ~/.netrc.
        session.proxies.update(requests.utils.get_environ_proxies(self.url))
        session.verify = (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
                          or True)
        session.trust_env = False
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=self.concurrency,
                              max_retries=retry, pool_block=True)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers.update(self._headers)
        return session

    def _redact(self, text: str) -> str:
        for value in self._redact_values:
            text = text.replace(value, "***")
        return text.replace(self.url, safe_url(self.url))

    def _error(self, cls: type[HTTPModelError], what: str, *, status: int | None = None,
               vendor: str = "", check: str = "") -> HTTPModelError:
        where = safe_url(self.url)
        msg = f"{self.preset.name} endpoint {where}: {what}"
        if status is not None:
            msg += f" (HTTP {status})"
        if vendor:
            msg += f"; the server said: {vendor[:300]}"
        if check:
            msg += f". Check {check}"
        return cls(self._redact(msg), url=where, status=status, vendor_message=self._redact(vendor))

    def _encode(self, image: np.ndarray) -> bytes:
        return encode_image(image, self.encoding, self.jpeg_quality)

    # -- one request -------------------------------------------------------------------
    def _send(self, images: np.ndarray, abort: threading.Event) -> np.ndarray:
        wire = self.preset.build_request(images, self._encode, self._secrets)
        body_kw: dict[str, Any] = {"headers": wire.headers}
        if wire.json is not None:
            body_kw["data"] = json.dumps(wire.json).encode()
            body_kw["headers"] = {"Content-Type": "application/json", **wire.headers}
        elif wire.data is not None:
            body_kw["data"] = dict(wire.data)
        else:
            body_kw["data"] = wire.content
        n = len(images)
        for attempt in range(self.max_retries + 1):
            if abort.is_set():
                raise _Aborted
            self._limiter.wait()
            self._count("requests")
            try:
                resp = self.session.post(self.url, timeout=self.timeout, **body_kw)
            except requests.exceptions.RequestException as exc:
                raise self._error(
                    EndpointUnreachable,
                    f"no answer after {self.max_retries} retries ({type(exc).__name__}: {exc})",
                    check="that the URL and port are right, the server is up, and the timeout "
                          f"({self.timeout}) is long enough") from None
            status = resp.status_code
            try:
                body: Any = json.loads(resp.content)  # bytes: json detects UTF-8/16/32 itself
            except ValueError:
                body = None
            if body is not None and self.preset.is_throttle(status, body):
                self._count("throttled")
                if attempt < self.max_retries:
                    time.sleep(self._throttle_delay(attempt, resp))
                    continue
                raise self._error(ThrottledError,
                                  f"still throttled after {self.max_retries} retries",
                                  status=status, vendor=self.preset.vendor_message(body),
                                  check="rate_limit and concurrency against your plan's limits")
            return self._finish(resp, body, n)
        raise AssertionError("unreachable")  # pragma: no cover

    def _throttle_delay(self, attempt: int, resp: requests.Response) -> float:
        after = resp.headers.get("Retry-After", "")
        if after.strip().isdigit():
            return min(float(after), self.max_backoff)
        base = min(self.max_backoff, self.backoff * 2.0**attempt)
        return base * (0.5 + 0.5 * self._jitter.random())

    def _finish(self, resp: requests.Response, body: Any, n: int) -> np.ndarray:
        status = resp.status_code
        vendor = self.preset.vendor_message(body) if body is not None else resp.text[:200]
        if self.preset.is_auth_error(status, body):
            raise self._latch(self._error(
                AuthenticationError, "the key was refused", status=status, vendor=vendor,
                check=f"the API key/secret (argument or {sorted(self.preset.secret_env.values())}) "
                      "and that it may call this endpoint"))
        if status == 429 or status >= 500:
            raise self._error(ThrottledError if status == 429 else HTTPStatusError,
                              f"error answer after {self.max_retries} retries", status=status,
                              vendor=vendor, check="the server's health or lower the concurrency")
        if status >= 300:
            raise self._latch(self._error(
                HTTPStatusError, "the request was refused", status=status, vendor=vendor,
                check="the URL path, the preset and its options (the request format)"))
        if body is None:
            raise self._latch(self._error(
                ResponseFormatError, f"the answer is not JSON (content-type "
                f"{resp.headers.get('Content-Type', '?')!r}, starts {resp.text[:80]!r})",
                status=status, check="that the URL is the model's endpoint, not a web page"))
        try:
            scores = np.asarray(self.preset.parse_response(body, n), dtype=np.float64)
            if scores.ndim != 2 or scores.shape[0] != n:
                raise ResponseFormatError(
                    f"parsed scores have shape {scores.shape}, expected ({n}, K)")
        except ResponseFormatError as exc:
            raise self._latch(self._error(
                ResponseFormatError, f"unusable answer: {exc}", status=status,
                check="the preset options (scores_path, labels, output_name) against a real "
                      "answer")) from None
        self._count("images_answered", n)
        return scores

    def _latch(self, err: HTTPModelError) -> HTTPModelError:
        self._fatal = err
        return err

    # -- Model API ---------------------------------------------------------------------
    def _predict(self, images: np.ndarray) -> np.ndarray:
        if self._fatal is not None:
            raise type(self._fatal)(
                f"{self._fatal} [raised earlier; nothing was sent. Fix it, then call reset()]",
                url=self._fatal.url, status=self._fatal.status,
                vendor_message=self._fatal.vendor_message)
        k = self.images_per_request
        chunks = [images[i:i + k] for i in range(0, len(images), k)]
        abort = threading.Event()
        if len(chunks) == 1 or self.concurrency == 1:
            parts = [self._send(c, abort) for c in chunks]
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="HTTPModel")
            futures: list[Future[np.ndarray]] = [
                self._pool.submit(self._send, c, abort) for c in chunks]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in futures if f in done and f.exception() is not None]
            if failed:
                abort.set()
                for f in futures:
                    f.cancel()
                wait(futures)
                errors = [f.exception() for f in futures if not f.cancelled() and f.exception()]
                real = [e for e in errors if not isinstance(e, _Aborted)]
                raise (real or errors)[0]  # type: ignore[misc]
            parts = [f.result() for f in futures]
        widths = {p.shape[1] for p in parts}
        if len(widths) != 1:
            raise self._error(ResponseFormatError, f"requests answered different numbers of "
                              f"scores per image: {sorted(widths)}", check="the preset options")
        return np.concatenate(parts, axis=0)

    def compare(self, images_a: np.ndarray, images_b: np.ndarray) -> np.ndarray:
        """Similarities float64 ``(P,)`` of pairs ``(images_a[i], images_b[i])`` from a
        face-compare endpoint (``output_kind="similarity"``): each pair is sent as one
        side-by-side image that the preset splits into the vendor's two fields."""
        if self.output_kind != "similarity":
            raise TypeError(f"{self.name} answers {self.output_kind!r}, not pair similarities; "
                            "compare() needs a face-compare preset such as 'facepp_compare'")
        a, b = check_image_pairs(images_a, images_b)
        sims = self.predict(side_by_side(a, b))
        if sims.shape[1] != 1:
            raise self._error(ResponseFormatError, f"expected one similarity per pair, got "
                              f"{sims.shape[1]} values", check="the preset options")
        return sims[:, 0]

    def reset(self) -> None:
        """Forget a latched error so that the next ``predict`` sends requests again."""
        self._fatal = None

    def close(self) -> None:
        """Close the connection pool and the worker threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.session.close()

    def __enter__(self) -> HTTPModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        auth = f", secrets={sorted(self._secrets)} (hidden)" if self._secrets else ""
        hdrs = f", headers={sorted(self._headers)}" if self._headers else ""
        return (f"HTTPModel({safe_url(self.url)!r}, preset={self.preset!r}, "
                f"concurrency={self.concurrency}, images_per_request={self.images_per_request}, "
                f"rate_limit={self.rate_limit}, encoding={self.encoding!r}{auth}{hdrs})")
