"""A call and its requests, as the transport sees them: abort, attempts, and their deadline.

- :class:`Call`: one ``predict`` call; its abort event wakes every sleeping retry at once,
  and ``cut_all`` shuts the sockets of the requests in flight.
- :class:`Exchange`: one request of a call (with urllib3's retries of it): attempts started,
  retry decisions, and the deadline of the attempt in flight.
- A deadline per attempt, from sending the request to the last byte of the answer: one
  daemon watchdog thread per process shuts the socket of an attempt that passes it, which
  ends a read blocked on a silent or trickling server (in the headers or the body).

The session that drives these is built in :mod:`blackbox_dft.adapters.remote.transport`.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from typing import Any

__all__ = ["Aborted", "DeadlineExceeded", "Call", "Exchange"]


class Aborted(Exception):
    """The call was interrupted, closed, or failed in another request: stop this one.

    ``before_send``: the request was stopped before its first attempt went out, so its
    images were never sent (and cannot have been paid)."""

    def __init__(self, before_send: bool = False) -> None:
        super().__init__()
        self.before_send = before_send


class DeadlineExceeded(Exception):
    """One attempt took longer than the deadline (the watchdog cut its socket)."""


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
