"""One request to an HTTP model endpoint: send it, read the answer within the limits, and
turn it into scores or a one-line, secret-free error (latched when no retry can fix it).

:class:`Endpoint` is the part of :class:`blackbox_dft.adapters.remote.http.HTTPModel` that
talks to the server;
HTTPModel splits a ``predict`` call into requests and runs them through ``Endpoint.send``.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

import numpy as np
import requests
from urllib3.exceptions import DecodeError

from blackbox_dft.adapters.errors import (
    AuthenticationError,
    EndpointUnreachable,
    HTTPModelError,
    HTTPStatusError,
    ResponseFormatError,
    ThrottledError,
)
from blackbox_dft.adapters.remote.presets import Preset
from blackbox_dft.adapters.remote.redact import (
    Redactor,
    install_log_filter,
    one_line,
    safe_url,
    url_secrets,
)
from blackbox_dft.adapters.remote.transport import (
    Aborted,
    BodyTooLarge,
    Call,
    DeadlineExceeded,
    Exchange,
    RateLimiter,
    describe_failure,
    make_session,
    read_body,
    retry_after_seconds,
)

__all__ = ["Endpoint", "PLAIN_HEADERS"]

#: headers whose values are not secret; every other header value the user gives is
PLAIN_HEADERS = {"content-type", "accept", "accept-encoding", "accept-language",
                 "user-agent", "cache-control", "connection"}


class _Throttled(Exception):
    """A vendor throttle answer (not a 429): the request loop waits and sends again."""


def _tries(ex: Exchange | int) -> str:
    n = ex if isinstance(ex, int) else ex.tries
    retries = n - 1
    if retries <= 0:
        return "after 1 attempt (no retry)"
    return f"after {retries} retr{'y' if retries == 1 else 'ies'} ({n} attempts)"


class Endpoint:
    """The server side of an HTTPModel: session, secrets, limits, counters and the latch.

    url: the endpoint; preset: its wire format; secrets: the keys the preset sends;
    headers: extra headers (values secret unless in :data:`PLAIN_HEADERS`); encode: one
    uint8 RGB image ``(H, W, 3)`` -> file bytes. timeout, max_retries, backoff, max_backoff
    (seconds), deadline (seconds per attempt), max_response_bytes, pool_size, rate_limit:
    as documented on :class:`blackbox_dft.adapters.remote.http.HTTPModel`.
    """

    def __init__(self, url: str, preset: Preset, *, secrets: Mapping[str, str],
                 headers: Mapping[str, str], encode: Callable[[np.ndarray], bytes],
                 timeout: float | tuple[float, float], max_retries: int, backoff: float,
                 max_backoff: float, deadline: float, max_response_bytes: int, pool_size: int,
                 rate_limit: float | None) -> None:
        self.preset, self.encode = preset, encode
        self._secrets = dict(secrets)
        self.timeout, self.max_retries, self.backoff = timeout, max_retries, backoff
        self.max_backoff, self.deadline = max_backoff, deadline
        self.max_response_bytes = max_response_bytes
        self._known = [*self._secrets.values(), *preset.auth_headers(self._secrets).values(),
                       *preset.secret_strings(),
                       *(v for k, v in headers.items() if k.lower() not in PLAIN_HEADERS)]
        self.url = url
        self.stats: dict[str, int] = {"requests": 0, "failed_attempts": 0, "throttled": 0,
                                      "images_answered": 0, "metadata_requests": 0}
        self._stats_lock = threading.Lock()
        self._limiter = RateLimiter(rate_limit)
        self.fatal: HTTPModelError | None = None
        self._jitter = random.Random()
        self._local = threading.local()
        self.session = make_session(url, dict(headers), self._local, retries=max_retries,
                                    backoff=backoff, max_backoff=max_backoff,
                                    pool_size=pool_size,
                                    on_failed_attempt=lambda: self._count("failed_attempts"))

    @property
    def url(self) -> str:
        return self._url

    @url.setter
    def url(self, value: str) -> None:
        """A new URL brings its own secrets (query values, userinfo): redact those too."""
        self._url = value
        self._redact = Redactor([*self._known, *url_secrets(value)])
        install_log_filter(self._redact)

    def latched(self) -> HTTPModelError | None:
        """The latched error, restated for a call that sends nothing (or None)."""
        if self.fatal is None:
            return None
        return type(self.fatal)(
            f"{self.fatal} [raised earlier; nothing was sent. Fix it, then call reset()]",
            url=self.fatal.url, status=self.fatal.status,
            vendor_message=self.fatal.vendor_message)

    # -- plumbing ----------------------------------------------------------------------
    def _count(self, key: str, k: int = 1) -> None:
        with self._stats_lock:
            self.stats[key] = self.stats.get(key, 0) + k

    def error(self, cls: type[HTTPModelError], what: str, *, status: int | None = None,
               vendor: str = "", check: str = "") -> HTTPModelError:
        """A one-line error naming the endpoint; secrets are redacted before anything is cut
        short (a cut could leave half a key unrecognised)."""
        where = safe_url(self.url)
        vendor = one_line(self._redact(vendor[:4096]), 300)
        doing = getattr(self._local, "doing", None)  # a GET of metadata on this thread
        msg = f"{self.preset.name} endpoint {where}: {doing + ': ' if doing else ''}{what}"
        if status is not None:
            msg += f" (HTTP {status})"
        if vendor:
            msg += f"; the server said: {vendor}"
        if check:
            msg += f". Check {check}"
        return cls(one_line(self._redact(msg), 2000), url=where, status=status,
                   vendor_message=vendor)

    def _latch(self, err: HTTPModelError) -> HTTPModelError:
        self.fatal = err
        return err

    # -- one request -------------------------------------------------------------------
    def send(self, images: np.ndarray, call: Call) -> np.ndarray:
        """Scores ``(n, K)`` of one request's images; raises an HTTPModelError or Aborted."""
        wire = self.preset.build_request(images, self.encode, self._secrets)
        kw: dict[str, Any] = {"headers": wire.headers}
        if wire.json is not None:
            kw["data"] = json.dumps(wire.json).encode()
            kw["headers"] = {"Content-Type": "application/json", **wire.headers}
        else:
            kw["data"] = dict(wire.data) if wire.data is not None else wire.content
        return self._attempts({"method": "POST", "url": self.url, **kw}, len(images), call)

    def get_json(self, url: str, call: Call) -> Any:
        """Parsed JSON of a GET of ``url`` (a server's metadata) with the preset's auth
        headers, through every check and error of a request; ``stats["metadata_requests"]``
        counts them. Its errors say which GET, and that ``metadata=False`` skips it."""
        self._local.doing = (f"GET {urlsplit(url).path} (metadata; for a server without it, "
                             "pass metadata=False)")
        try:
            return self._attempts({"method": "GET", "url": url,
                                   "headers": self.preset.auth_headers(self._secrets)}, None, call)
        finally:
            self._local.doing = None

    def _attempts(self, kw: dict[str, Any], n: int | None, call: Call) -> Any:
        """Scores ``(n, K)`` of one request (``kw``: requests' arguments), or with ``n`` None
        the parsed JSON answer; the vendor throttles that are not a 429 are retried here."""
        for attempt in range(self.max_retries + 1):
            ex = Exchange(call, self.deadline)
            call.track(ex, True)
            self._local.exchange = ex
            try:
                return self._exchange(ex, kw, n, attempt)
            except _Throttled:
                pass  # waited already; send again
            finally:
                self._local.exchange = None
                ex.end_attempt()
                call.track(ex, False)
        raise AssertionError("unreachable")  # pragma: no cover

    def _exchange(self, ex: Exchange, kw: dict[str, Any], n: int | None, attempt: int) -> Any:
        if ex.call.abort.is_set():
            raise Aborted(before_send=attempt == 0)
        try:
            self._limiter.wait(ex.call.abort)
        except Aborted:
            raise Aborted(before_send=attempt == 0) from None
        self._count("requests" if kw["method"] == "POST" else "metadata_requests")
        failure = ""
        try:
            resp = self.session.request(timeout=self.timeout, allow_redirects=False,
                                        stream=True, **kw)
        except (Aborted, DeadlineExceeded):
            resp = None
        except requests.exceptions.RequestException as exc:
            failure, resp = describe_failure(exc), None
        # raised here, outside the except blocks: no transport error (whose text holds the
        # URL) is left in the new error's __context__
        if resp is None:
            if ex.call.abort.is_set():  # stopped: before its bytes went out if none started
                raise Aborted(before_send=attempt == 0 and ex.attempts == 0)
            if ex.expired:
                raise self._deadline_error()
            raise self.error(
                EndpointUnreachable, f"no answer {_tries(ex)} ({failure})",
                check="that the URL and port are right, the server is up, and the timeout "
                      f"({self.timeout}) is long enough")
        try:
            return self._answer(resp, ex, n, attempt)
        finally:
            ex.end_attempt()  # first: a connection back in the pool must never be cut
            if ex.body_read:  # a complete answer: keep the connection alive for the next
                resp.raw.release_conn()
            else:
                resp.close()

    def _deadline_error(self) -> HTTPModelError:
        return self.error(
            EndpointUnreachable, f"the answer took longer than the deadline of {self.deadline:g} "
            "s; not retried (the server may have billed it)",
            check="the server's health, or raise deadline= if it is really that slow")

    def _answer(self, resp: requests.Response, ex: Exchange, n: int | None, attempt: int) -> Any:
        status = resp.status_code
        if 300 <= status < 400:  # never read, never followed
            loc = resp.headers.get("Location")
            target = safe_url(urljoin(resp.url, loc)) if loc else "nowhere (no Location header)"
            raise self._latch(self.error(
                HTTPStatusError, f"the endpoint redirected (HTTP {status}) to {target}; "
                "blackbox_dft follows no redirect, so keys stay with the endpoint you gave",
                check="the URL: use the final URL"))
        raw, too_large, undecodable, broken = b"", "", "", ""
        try:
            raw = read_body(resp, ex, self.max_response_bytes)
        except BodyTooLarge as exc:
            too_large = str(exc.args[0])
        except DecodeError:
            undecodable = one_line(resp.headers.get("Content-Encoding", "?"), 40)
        except DeadlineExceeded:
            broken = "deadline"
        except Exception as exc:  # noqa: BLE001 - a transport error mid-body (reset, bad chunk)
            broken = f"{type(exc).__name__}: {one_line(str(exc), 160)}"
        # errors are raised out here, not in the except blocks: nothing in __context__
        if too_large:
            raise self._latch(self.error(
                ResponseFormatError, f"the answer is larger than max_response_bytes="
                f"{self.max_response_bytes} ({too_large})", status=status,
                check="that the URL is the model's endpoint; raise max_response_bytes= if it "
                      "really answers this much"))
        if undecodable:
            raise self._latch(self.error(
                ResponseFormatError, f"the answer is not in the Content-Encoding it declares "
                f"({undecodable!r})", status=status, check="the server or any proxy in between"))
        if broken:
            if ex.call.abort.is_set():
                raise Aborted
            if broken == "deadline" or ex.expired:
                raise self._deadline_error()
            raise self.error(
                EndpointUnreachable, f"the connection broke while the answer came ({broken}; "
                f"{_tries(ex)}); not retried (the server may have billed it)", status=status,
                check="the server's health and any proxy in between")
        body, bad_json = self.preset.parse_body(raw, resp.headers)
        if body is not None and self.preset.is_throttle(status, body):
            self._count("throttled")
            if attempt < self.max_retries:
                self._throttle_wait(attempt, resp, ex.call)
                raise _Throttled
            raise self.error(ThrottledError, f"still throttled {_tries(attempt + 1)}"
                              f"{self._asked(resp)}", status=status, vendor=self._vendor(body, raw),
                              check="rate_limit and concurrency against your plan's limits")
        return self._finish(resp, raw, body, bad_json, n, ex)

    def _asked(self, resp: requests.Response) -> str:
        after = retry_after_seconds(resp.headers.get("Retry-After"))
        if after is None or after <= self.max_backoff:
            return ""
        return (f"; it asked to wait {after:.0f} s (Retry-After), but waits are capped at "
                f"max_backoff={self.max_backoff:g} s")

    def _throttle_wait(self, attempt: int, resp: requests.Response, call: Call) -> None:
        after = retry_after_seconds(resp.headers.get("Retry-After"))
        if after is None:
            after = self.backoff * 2.0**attempt * (0.5 + 0.5 * self._jitter.random())
        if call.abort.wait(min(after, self.max_backoff)):
            raise Aborted

    def _vendor(self, body: Any, raw: bytes) -> str:
        if body is None:
            return raw[:4096].decode("utf-8", "replace")
        try:
            return str(self.preset.vendor_message(body))
        except Exception:  # noqa: BLE001 - a hostile body must not break the error path
            return ""

    def _finish(self, resp: requests.Response, raw: bytes, body: Any, bad_json: str,
                n: int | None, ex: Exchange) -> Any:
        status = resp.status_code
        vendor = self._vendor(body, raw)
        if self.preset.is_auth_error(status, body):
            raise self._latch(self.error(
                AuthenticationError, "the key was refused", status=status, vendor=vendor,
                check=f"the API key/secret (argument or {sorted(self.preset.secret_env.values())}) "
                      "and that it may call this endpoint"))
        if status == 429 or status >= 500:
            what = "still throttled" if status == 429 else "error answer"
            raise self.error(ThrottledError if status == 429 else HTTPStatusError,
                              f"{what} {_tries(ex)}{self._asked(resp)}", status=status,
                              vendor=vendor, check="the server's health or lower the concurrency")
        if status >= 400 or status < 200:
            raise self._latch(self.error(
                HTTPStatusError, "the request was refused", status=status, vendor=vendor,
                check="the URL path, the preset and its options (the request format)"))
        if body is None:
            ctype = one_line(resp.headers.get("Content-Type", "?"), 60)
            start = one_line(self._redact(raw[:4096].decode("utf-8", "replace")), 80)
            raise self._latch(self.error(
                ResponseFormatError, f"the answer is {bad_json}; content-type "
                f"{ctype!r}, it starts {start!r}", status=status,
                check="that the URL is the model's endpoint, not a web page"))
        if n is None:
            return body
        try:
            scores = np.asarray(self.preset.parse_response(body, n), dtype=np.float64)
            problem = ("" if scores.ndim == 2 and scores.shape[0] == n
                       else f"parsed scores have shape {scores.shape}, expected ({n}, K)")
        except RecursionError:
            problem = "it is nested too deeply to read"
        except Exception as exc:  # noqa: BLE001 - any parser failure is an unusable answer
            problem = str(exc) if isinstance(exc, ResponseFormatError) else (
                f"{type(exc).__name__}: {exc}")
        if not problem and not np.isfinite(scores).all():
            bad = np.flatnonzero(~np.isfinite(scores).all(axis=1))
            problem = (f"non-finite scores (NaN or Infinity) for {bad.size} of {n} images "
                       f"(first: image {bad[0]})")
        if problem:
            raise self._latch(self.error(
                ResponseFormatError, f"unusable answer: {problem}", status=status,
                check="the preset options (scores_path, labels, output_name) against a real "
                      "answer"))
        self._count("images_answered", n)
        return scores
