"""The HTTP plumbing under :class:`adapters.remote.http.HTTPModel`: every wait and body is bounded.

- No redirect is followed, by requests or by urllib3 (keys stay with the endpoint given).
- urllib3's ``Retry`` counts attempts, caps every wait (backoff and ``Retry-After``, seconds
  or HTTP date) at ``max_backoff``, and waits on the call's abort event, so an interrupted
  or failed call wakes its sleeping requests at once.
- A deadline per attempt, from sending the request to the last byte of the answer: a
  watchdog thread shuts the socket of an attempt that passes it, which ends a read blocked
  on a silent or trickling server (in the headers or the body).
- Bodies are read in pieces with a size cap, the declared ``Content-Length`` checked first.
- Worker threads are daemons: none can keep the process alive after the main thread ends.
"""

from __future__ import annotations

import math
import os
import queue
import re
import socket
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

__all__ = ["Aborted", "DeadlineExceeded", "BodyTooLarge", "Call", "Exchange", "DaemonPool",
           "RateLimiter", "make_session", "read_body", "retry_after_seconds",
           "describe_failure"]

RETRY_STATUS = (429, 500, 502, 503, 504)


class Aborted(Exception):
    """The call was interrupted, closed, or failed in another request: stop this one.

    ``before_send``: the request was stopped before its first attempt went out, so its
    images were never sent (and cannot have been paid)."""

    def __init__(self, before_send: bool = False) -> None:
        super().__init__()
        self.before_send = before_send


class DeadlineExceeded(Exception):
    """One attempt took longer than the deadline (the watchdog cut its socket)."""


class BodyTooLarge(Exception):
    """The answer is larger than the cap; ``args[0]`` says how it was known."""


class Call:
    """One ``predict`` call: its abort event and the requests it has in flight."""

    def __init__(self) -> None:
        self.abort = threading.Event()
        self._live: set[Exchange] = set()
        self._lock = threading.Lock()

    def track(self, ex: Exchange, live: bool) -> None:
        with self._lock:
            (self._live.add if live else self._live.discard)(ex)

    def cut_all(self) -> None:
        """Abort, and shut the sockets of every request still in flight."""
        self.abort.set()
        with self._lock:
            live = list(self._live)
        for ex in live:
            ex.cut()


def _shut(conn: Any) -> None:
    sock = getattr(conn, "sock", None)
    if isinstance(sock, socket.socket):
        try:  # the plain socket's shutdown (also under TLS): a blocked recv returns at once
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass


class Exchange:
    """One request of a call (with urllib3's retries of it), as the transport sees it.

    ``attempts``: requests actually started; ``increments``: urllib3 retry decisions (a
    connection that never opened counts there only); ``expired``: the watchdog cut it;
    ``body_read``: its answer was read to the end.
    """

    def __init__(self, call: Call, deadline: float) -> None:
        self.call, self.deadline_s = call, deadline
        self.deadline = math.inf
        self.expired = False
        self.body_read = False  # the answer was read to its end (its connection is reusable)
        self.attempts = self.increments = 0
        self._conns: list[Any] = []
        self._lock = threading.Lock()

    @property
    def tries(self) -> int:
        return max(self.attempts, self.increments, 1)

    def start_attempt(self, conn: Any) -> None:
        with self._lock:
            self.attempts += 1
            self.deadline = time.monotonic() + self.deadline_s
            self._conns = [conn]
        _WATCHDOG.watch(self)

    def end_attempt(self) -> None:
        with self._lock:  # from here the connection may serve another thread: never cut it
            self._conns, self.deadline = [], math.inf
        _WATCHDOG.forget(self)

    def expire(self, deadline: float) -> None:
        with self._lock:
            if deadline != self.deadline:  # that attempt is over, or another one started
                return
            self.expired = True
            conns = list(self._conns)
        for c in conns:
            _shut(c)

    def cut(self) -> None:
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            _shut(c)


class _Watchdog:
    """One daemon thread for the process: expires attempts that pass their deadline.

    It holds only the attempts in flight (a few per model), so it never grows."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._live: set[Exchange] = set()
        self._thread: threading.Thread | None = None

    def watch(self, ex: Exchange) -> None:
        with self._cond:
            self._live.add(ex)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="HTTPModel-deadline",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()

    def forget(self, ex: Exchange) -> None:
        with self._cond:
            self._live.discard(ex)

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [(ex, ex.deadline) for ex in self._live if ex.deadline <= now]
                if not due:
                    nxt = min((ex.deadline for ex in self._live), default=math.inf)
                    self._cond.wait(None if nxt == math.inf else nxt - now)
                    continue
                self._live.difference_update(ex for ex, _ in due)
            for ex, deadline in due:
                ex.expire(deadline)

    def _after_fork(self) -> None:
        self._cond, self._live, self._thread = threading.Condition(), set(), None


_WATCHDOG = _Watchdog()
if hasattr(os, "register_at_fork"):  # a forked child has no watchdog thread: start anew
    os.register_at_fork(after_in_child=_WATCHDOG._after_fork)


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
    connections above; ``local.exchange`` is the :class:`Exchange` of the calling thread."""

    def exchange() -> Exchange | None:
        return getattr(local, "exchange", None)

    class _BoundedRetry(Retry):
        def increment(self, *args: Any, **kwargs: Any) -> Retry:  # type: ignore[override]
            on_failed_attempt()
            ex = exchange()
            if ex is not None:
                ex.increments += 1
                if ex.expired:  # a cut by the deadline watchdog is not a fault to retry
                    raise DeadlineExceeded
                if ex.call.abort.is_set():
                    raise Aborted
            return super().increment(*args, **kwargs)

        def sleep(self, response: Any = None) -> None:
            delay = self.get_backoff_time()
            if response is not None and self.respect_retry_after_header:
                after = retry_after_seconds(response.headers.get("Retry-After"))
                delay = delay if after is None else after
            ex = exchange()
            if ex is None:
                time.sleep(min(max(delay, 0.0), max_backoff))
                return
            ex.end_attempt()
            if ex.expired:  # the watchdog cut the (drained) error answer
                raise DeadlineExceeded
            if ex.call.abort.wait(min(max(delay, 0.0), max_backoff)):
                raise Aborted

    def _begin(conn: Any) -> None:
        ex = exchange()
        if ex is not None:
            if ex.call.abort.is_set():
                raise Aborted
            ex.start_attempt(conn)

    class _Conn(HTTPConnection):
        def request(self, *args: Any, **kwargs: Any) -> None:
            _begin(self)
            super().request(*args, **kwargs)

    class _TLSConn(HTTPSConnection):
        def request(self, *args: Any, **kwargs: Any) -> None:
            _begin(self)
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

    opts: dict[str, Any] = dict(
        total=retries, connect=retries, read=retries, status=retries, other=0,
        redirect=False, raise_on_redirect=False,  # a 3xx comes back to us, unfollowed
        allowed_methods=frozenset({"POST", "GET"}), status_forcelist=RETRY_STATUS,
        backoff_factor=backoff, respect_retry_after_header=True, raise_on_status=False)
    try:
        retry = _BoundedRetry(**opts, backoff_max=max_backoff, backoff_jitter=backoff)
    except TypeError:  # urllib3 < 2 has neither backoff_max nor backoff_jitter
        retry = _BoundedRetry(**opts)
    session = _NoRedirectSession()
    # Resolve the environment (proxies, CA bundle) once, here: with trust_env on, requests
    # re-reads os.environ and ~/.netrc on every request (a CPU cost per request, and a
    # netrc password would be sent). Secrets come from our arguments only.
    session.proxies.update(requests.utils.get_environ_proxies(url))
    session.verify = (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
                      or True)
    session.trust_env = False
    adapter = _Adapter(pool_connections=1, pool_maxsize=pool_size, max_retries=retry,
                       pool_block=True)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update(headers)
    return session


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
