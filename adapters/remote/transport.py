"""The HTTP plumbing under :class:`blackbox_dft.adapters.remote.http.HTTPModel`: every wait and
body is bounded.

- No redirect is followed, by requests or by urllib3 (keys stay with the endpoint given).
- urllib3's ``Retry`` counts attempts, caps every wait (backoff and ``Retry-After``, seconds
  or HTTP date) at ``max_backoff``, and waits on the call's abort event, so an interrupted
  or failed call wakes its sleeping requests at once.
- A deadline per attempt, from sending the request to the last byte of the answer: each
  attempt starts on the calling thread's :class:`Exchange`, whose watchdog
  (:mod:`blackbox_dft.adapters.remote.deadline`) shuts the socket of an attempt that passes it.
- Bodies are read in pieces with a size cap, the declared ``Content-Length`` checked first.
- Worker threads are daemons: none can keep the process alive after the main thread ends.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

# Aborted, DeadlineExceeded, Call and Exchange are re-exported: the endpoint takes the
# whole transport from here.
from blackbox_dft.adapters.remote.deadline import Aborted, Call, DeadlineExceeded, Exchange

__all__ = ["Aborted", "DeadlineExceeded", "BodyTooLarge", "Call", "Exchange", "DaemonPool",
           "RateLimiter", "make_session", "read_body", "retry_after_seconds",
           "describe_failure"]

RETRY_STATUS = (429, 500, 502, 503, 504)
# Retries and waits, at INFO; never a URL (its query may hold a key): a status or error type.
log = logging.getLogger(__name__)


class BodyTooLarge(Exception):
    """The answer is larger than the cap; ``args[0]`` says how it was known."""


class DaemonPool:
    """``n`` daemon worker threads; ``submit`` returns a ``concurrent.futures.Future``.

    Unlike ``ThreadPoolExecutor``, whose threads are joined at interpreter exit, these never
    keep the process alive (a Ctrl-C ends the program even if a request is still running).
    """

    def __init__(self, n: int, name: str) -> None:
        self._q: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]
                                   | None] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(n)]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        self._q.put((fut, fn, args))
        return fut

    def _work(self) -> None:
        while (item := self._q.get()) is not None:
            fut, fn, args = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:  # handed to the caller, who re-raises it
                fut.set_exception(exc)
            del fut, item  # drop references to the result while idle

    def shutdown(self) -> None:
        for _ in self._threads:
            self._q.put(None)


class RateLimiter:
    """At most ``rate`` request starts per second, shared by all threads."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self, abort: threading.Event) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now and abort.wait(start - now):
            raise Aborted


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds asked by a ``Retry-After`` header (delay seconds or an HTTP date), or None."""
    if not value or not value.strip():
        return None
    v = value.strip()
    if v.isdigit():
        return float(v)
    try:
        when = parsedate_to_datetime(v)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def make_session(url: str, headers: dict[str, str], local: threading.local, *, retries: int,
                 backoff: float, max_backoff: float, pool_size: int,
                 on_failed_attempt: Callable[[], None]) -> requests.Session:
    """A ``requests.Session`` for one endpoint, with the bounded retry and the deadline
    connections below; ``local.exchange`` is the :class:`Exchange` of the calling thread."""
    retry = _bounded_retry(local, retries=retries, backoff=backoff, max_backoff=max_backoff,
                           on_failed_attempt=on_failed_attempt)
    session = _NoRedirectSession()
    # Resolve the environment (proxies, CA bundle) once, here: with trust_env on, requests
    # re-reads os.environ and ~/.netrc on every request (a CPU cost per request, and a
    # netrc password would be sent). Secrets come from our arguments only.
    session.proxies.update(requests.utils.get_environ_proxies(url))
    session.verify = (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
                      or True)
    session.trust_env = False
    adapter = _deadline_adapter(local, retry, pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update(headers)
    return session


def _exchange(local: threading.local) -> Exchange | None:
    """The :class:`Exchange` of the calling thread (None outside a call, e.g. a bare GET)."""
    return getattr(local, "exchange", None)


def _bounded_retry(local: threading.local, *, retries: int, backoff: float, max_backoff: float,
                   on_failed_attempt: Callable[[], None]) -> Retry:
    """urllib3's ``Retry`` for POST and GET: ``retries`` of each kind, no redirect followed,
    every wait (backoff or ``Retry-After``, seconds) cut to ``max_backoff``.

    Its decisions consult the calling thread's :class:`Exchange` (``local.exchange``): each
    counts in ``increments``; an attempt the watchdog cut raises :class:`DeadlineExceeded`
    (never retried), an aborted call :class:`Aborted`, and a sleep ends at once on abort.
    ``on_failed_attempt()`` runs once per failed attempt."""
    opts: dict[str, Any] = dict(
        total=retries, connect=retries, read=retries, status=retries, other=0,
        redirect=False, raise_on_redirect=False,  # a 3xx comes back to us, unfollowed
        allowed_methods=frozenset({"POST", "GET"}), status_forcelist=RETRY_STATUS,
        backoff_factor=backoff, respect_retry_after_header=True, raise_on_status=False)
    cls = _retry_class(local, max_backoff, on_failed_attempt)
    try:
        return cls(**opts, backoff_max=max_backoff, backoff_jitter=backoff)
    except TypeError:  # urllib3 < 2 has neither backoff_max nor backoff_jitter
        return cls(**opts)


def _retry_class(local: threading.local, max_backoff: float,
                 on_failed_attempt: Callable[[], None]) -> type[Retry]:
    """A ``Retry`` subclass bound to ``local`` (a class, not attributes: urllib3 copies a
    ``Retry`` with ``type(self)(**known params)`` on every increment)."""

    class _BoundedRetry(Retry):
        def increment(self, *args: Any, **kwargs: Any) -> Retry:  # type: ignore[override]
            on_failed_attempt()
            response, error = kwargs.get("response"), kwargs.get("error")
            log.info("HTTP attempt %d failed (%s)", len(self.history) + 1,
                     f"HTTP {response.status}" if response is not None
                     else type(error).__name__ if error is not None else "no answer")
            ex = _exchange(local)
            if ex is not None:
                ex.increments += 1
                if ex.expired:  # a cut by the deadline watchdog is not a fault to retry
                    raise DeadlineExceeded
                if ex.call.abort.is_set():
                    raise Aborted
            return super().increment(*args, **kwargs)

        def sleep(self, response: Any = None) -> None:
            delay, why = self.get_backoff_time(), "backoff"
            if response is not None and self.respect_retry_after_header:
                after = retry_after_seconds(response.headers.get("Retry-After"))
                delay, why = (delay, why) if after is None else (after, "Retry-After")
            log.info("waiting %.2f s before the next attempt (%s)",
                     min(max(delay, 0.0), max_backoff), why)
            ex = _exchange(local)
            if ex is None:
                time.sleep(min(max(delay, 0.0), max_backoff))
                return
            ex.end_attempt()
            if ex.expired:  # the watchdog cut the (drained) error answer
                raise DeadlineExceeded
            if ex.call.abort.wait(min(max(delay, 0.0), max_backoff)):
                raise Aborted

    return _BoundedRetry


def _deadline_adapter(local: threading.local, retry: Retry, pool_size: int) -> HTTPAdapter:
    """A requests ``HTTPAdapter`` whose connection pools (direct or through a proxy) start
    each attempt on the calling thread's :class:`Exchange`: :class:`Aborted` if its call is
    aborted, else the attempt's deadline starts (watched by the watchdog) as the request goes
    out. At most ``pool_size`` connections; a thread waits for a free one."""

    def begin(conn: Any) -> None:
        ex = _exchange(local)
        if ex is not None:
            if ex.call.abort.is_set():
                raise Aborted
            ex.start_attempt(conn)

    class _Conn(HTTPConnection):
        def request(self, *args: Any, **kwargs: Any) -> None:
            begin(self)
            super().request(*args, **kwargs)

    class _TLSConn(HTTPSConnection):
        def request(self, *args: Any, **kwargs: Any) -> None:
            begin(self)
            super().request(*args, **kwargs)

    pools = {"http": type("_Pool", (HTTPConnectionPool,), {"ConnectionCls": _Conn}),
             "https": type("_TLSPool", (HTTPSConnectionPool,), {"ConnectionCls": _TLSConn})}

    class _Adapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = pools

        def proxy_manager_for(self, *args: Any, **kwargs: Any) -> Any:
            manager = super().proxy_manager_for(*args, **kwargs)
            manager.pool_classes_by_scheme = pools
            return manager

    return _Adapter(pool_connections=1, pool_maxsize=pool_size, max_retries=retry,
                    pool_block=True)


class _NoRedirectSession(requests.Session):
    """A session that sees no redirect target in any answer: it never follows one, and
    (unlike ``allow_redirects=False`` alone, which still reads a 3xx body whole to prepare
    ``Response.next``) never reads a redirect's body either."""

    def get_redirect_target(self, resp: requests.Response) -> None:
        return None


def read_body(resp: requests.Response, ex: Exchange, cap: int) -> bytes:
    """The (decoded) body of a streamed answer, at most ``cap`` bytes; raises
    :class:`BodyTooLarge` past it and :class:`DeadlineExceeded` if the watchdog cut it.
    Transport errors (a reset mid-body) propagate as urllib3/OSError exceptions."""
    declared = resp.headers.get("Content-Length", "").strip()
    if declared.isdigit() and int(declared) > cap:
        raise BodyTooLarge(f"it declares Content-Length {int(declared)}")
    buf = bytearray()
    raw = resp.raw
    while not ex.expired:
        # read1: what one recv brings, so a trickle returns as it comes and the checks run
        chunk = raw.read1(65536, decode_content=True)
        if not chunk:
            break
        buf += chunk
        if len(buf) > cap:
            raise BodyTooLarge(f"more than {cap} bytes came (decoded)")
    if ex.expired:  # a cut socket may look like the end of a body without a length
        raise DeadlineExceeded
    ex.body_read = True
    return bytes(buf)


# urllib3 starts its messages with the connection: "<... object at 0x..>: " or
# "HTTPConnection(host='h', port=1): " (the endpoint is named in our message already)
_OBJECT_REPR = re.compile(r"<[^<>]*object at 0x[0-9a-fA-F]+>:?\s*|\w+\(host=[^()]*\):\s*")


def describe_failure(exc: BaseException) -> str:
    """``Type: text`` of the root cause of a requests/urllib3 transport error (not redacted)."""
    reason: BaseException = exc
    inner = exc.args[0] if exc.args else None
    if isinstance(inner, MaxRetryError) and inner.reason is not None:
        reason = inner.reason
    elif isinstance(inner, BaseException):
        reason = inner
    text = _OBJECT_REPR.sub("", str(reason))
    return f"{type(reason).__name__}: {text}" if text else type(reason).__name__
