"""The proxy's delta state: applied or passed through, by schedule or by the operator.

Four states (:data:`STATES`): ``active`` (the delta is applied), ``bypass_auto`` (the last
scheduled check said the delta no longer helps: requests pass through unperturbed),
``bypass_forced`` / ``active_forced`` (the operator's choice, ``POST /admin/bypass?state=on
|off`` or a flag at start; never overridden by the schedule). ``state=auto`` hands control
back to the schedule, which then follows its last verdict (``active`` before any check).

The check is injected (this layer may not import the guard of ``blackbox_dft.tasks``): a
callable ``check(budget) -> report`` with the report's ``delta_helps``, ``queries`` and
``summary()``, run every ``every`` seconds in a worker thread (it queries the model, which
blocks). Its result is applied on the event loop, so the state has one writer and needs no
lock. A check that raises (the model failed, a timeout) changes nothing and is counted as
an error. Every check is one INFO line; a switch to pass-through is a WARNING.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["DeltaState", "GuardResult", "STATES", "DEFAULT_CHECK_EVERY"]

log = logging.getLogger("blackbox_dft.proxy")

STATES = ("active", "bypass_auto", "bypass_forced", "active_forced")
#: one hour: vendors update models over days or weeks, so an hour of delay costs little
#: gain, and a check of the default canary (2 x 32 images) an hour is ~1,500 queries a day,
#: a rounding error next to the traffic a proxy exists for
DEFAULT_CHECK_EVERY = 3600.0


class GuardResult(Protocol):
    """What the injected check returns (the guard's ``GuardReport``)."""

    delta_helps: bool
    queries: int

    def summary(self) -> str: ...


Check = Callable[[int | None], GuardResult]


class DeltaState:
    """The state machine and its schedule.

    check: the injected check (None: no scheduled checks; ``off_reason`` says why, in
    /metrics and the log). every: seconds between checks (0: never). budget: images one check
    may send (None: the check's default). forced: ``"on"`` (bypass_forced), ``"off"``
    (active_forced) or None (the schedule decides) at start.
    """

    def __init__(self, check: Check | None = None, *, every: float = DEFAULT_CHECK_EVERY,
                 budget: int | None = None, forced: str | None = None,
                 off_reason: str = "") -> None:
        if not every >= 0:
            raise ValueError(f"check interval must be >= 0 seconds (0: never), got {every}")
        if budget is not None and int(budget) < 2:
            raise ValueError(f"check budget must be >= 2 images (the canary is sent twice), "
                             f"got {budget}")
        if forced not in (None, "on", "off"):
            raise ValueError(f"forced state must be 'on', 'off' or None, got {forced!r}")
        self.check, self.every, self.budget = check, float(every), budget
        self.forced, self.auto_bypass = forced, False
        self.off_reason = off_reason or ("no check configured" if check is None else
                                         "--check-every 0" if every == 0 else "")
        self.results = {"helps": 0, "hurts": 0, "error": 0}
        self.queries, self.last_check = 0, 0.0
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        """Scheduled checks run."""
        return self.check is not None and self.every > 0

    @property
    def state(self) -> str:
        """One of :data:`STATES`."""
        if self.forced is not None:
            return "bypass_forced" if self.forced == "on" else "active_forced"
        return "bypass_auto" if self.auto_bypass else "active"

    @property
    def bypass(self) -> bool:
        """Requests pass through unperturbed."""
        return self.state.startswith("bypass")

    def force(self, which: str) -> None:
        """The operator's switch: ``on`` (bypass), ``off`` (apply the delta) or ``auto``."""
        if which not in ("on", "off", "auto"):
            raise ValueError(f"state must be on, off or auto, got {which!r}")
        self.forced = None if which == "auto" else which
        log.warning("delta state %s (operator: %s)", self.state, which)

    # -- checks --------------------------------------------------------------------
    def record(self, result: GuardResult) -> None:
        """Apply one check's result (on the event loop)."""
        before = self.state
        helps = bool(result.delta_helps)
        self.results["helps" if helps else "hurts"] += 1
        self.queries += int(result.queries)
        self.last_check = time.time()
        self.auto_bypass = not helps
        log.info("check: %s", " ".join(result.summary().split()))
        if self.state != before and self.state == "bypass_auto":
            log.warning("delta state bypass_auto: the delta no longer helps the model; "
                        "requests pass through unperturbed until a check says it helps "
                        "again (POST /admin/bypass?state=off forces it back)")
        elif self.state != before:
            log.warning("delta state %s: the delta helps the model again", self.state)

    def record_error(self, exc: BaseException) -> None:
        """A check that failed: counted, logged, the state unchanged."""
        self.results["error"] += 1
        self.last_check = time.time()
        why = " ".join(str(exc).split())[:300]
        log.warning("check failed (state stays %s): %s: %s", self.state,
                    type(exc).__name__, why)

    async def run_once(self) -> None:
        """One check in a worker thread, its result applied here."""
        assert self.check is not None, "no check configured"
        try:
            result = await asyncio.to_thread(self.check, self.budget)
        except Exception as exc:  # any failure of the model or the check: state unchanged
            self.record_error(exc)
        else:
            self.record(result)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            await self.run_once()

    def start(self) -> None:
        """Start the schedule (in the running event loop), if enabled."""
        if self.enabled and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())
        elif not self.enabled:
            log.info("scheduled checks off: %s", self.off_reason)

    async def stop(self) -> None:
        """Stop the schedule (a check in its thread is left to finish on its own)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    # -- metrics -------------------------------------------------------------------
    def render(self, prefix: str) -> list[str]:
        """Prometheus text lines of the state and the checks."""
        p = prefix
        lines = [f"# HELP {p}state 1 for the current delta state.", f"# TYPE {p}state gauge"]
        lines += [f'{p}state{{state="{s}"}} {int(s == self.state)}' for s in STATES]
        lines += [f"# HELP {p}checks_enabled 1 when scheduled checks run"
                  + (f" (off: {self.off_reason})." if not self.enabled else "."),
                  f"# TYPE {p}checks_enabled gauge", f"{p}checks_enabled {int(self.enabled)}",
                  f"# TYPE {p}check_interval_seconds gauge",
                  f"{p}check_interval_seconds {self.every:g}",
                  f"# HELP {p}checks_total Scheduled checks, by result.",
                  f"# TYPE {p}checks_total counter"]
        lines += [f'{p}checks_total{{result="{r}"}} {n}' for r, n in self.results.items()]
        lines += [f"# HELP {p}check_queries_total Images the checks sent to the model.",
                  f"# TYPE {p}check_queries_total counter",
                  f"{p}check_queries_total {self.queries}",
                  f"# HELP {p}last_check_timestamp_seconds Unix time of the last check "
                  "(0: none yet).",
                  f"# TYPE {p}last_check_timestamp_seconds gauge",
                  f"{p}last_check_timestamp_seconds {self.last_check:.3f}"]
        return lines
