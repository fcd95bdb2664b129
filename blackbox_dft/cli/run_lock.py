"""One process at a time on a run folder: an operating-system lock on ``RUN/.lock``.

Why: two ``blackbox-dft resume RUN`` at once both ran the whole fit and paid for it twice.
The lock is ``fcntl.flock`` (POSIX) or ``msvcrt.locking`` (Windows) on an open file: the
operating system drops it when the holder's process ends, however it ends (SIGKILL
included), so a killed fit never leaves its run stuck. The holder writes its pid, command
and start time into the file, so a refused process can say who holds the run. Where
neither is available the lock is the file's exclusive creation (``O_EXCL``), which a
killed process does leave behind: the refusal then says to delete it.

Taking the lock is non-blocking: a busy run is refused at once with :class:`RunBusy`.
"""

from __future__ import annotations

import errno
import os
import time
from typing import Any

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
try:  # Windows
    import msvcrt  # type: ignore[import-not-found,unused-ignore]
except ImportError:
    msvcrt = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "RunBusy", "RunLock"]

LOCK_NAME = ".lock"
_INFO_AT = 1 if fcntl is None and msvcrt is not None else 0  # msvcrt locks byte 0: write after it


class RunBusy(RuntimeError):
    """The run folder is locked by another process (the message names its pid)."""


def _busy_errors(exc: OSError) -> bool:
    return exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES, errno.EDEADLK)


class RunLock:
    """The lock of the run folder ``folder`` (see the module docstring).

    ``acquire(command)`` takes it or raises :class:`RunBusy`; ``release()`` gives it back
    (also at process exit, by the operating system). Not re-entrant across objects: two
    ``RunLock`` objects on one folder exclude each other even in one process.
    """

    def __init__(self, folder: str) -> None:
        self.folder = os.fspath(folder)
        self.path = os.path.join(self.folder, LOCK_NAME)
        self._fd: int | None = None
        self._exclusive_file = False

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None or self._exclusive_file

    def acquire(self, command: str) -> None:
        """Take the lock for ``command`` (a subcommand name, written into the lock file)."""
        if self.held:
            return
        info = f"{os.getpid()}\n{command}\n{time.strftime('%Y-%m-%d %H:%M:%S')}\n"
        if fcntl is None and msvcrt is None:  # pragma: no cover - exotic platforms
            self._acquire_exclusive(info)
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:  # pragma: no cover - Windows
                os.lseek(fd, 0, os.SEEK_SET)
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError as exc:
            holder = _holder(fd)
            os.close(fd)
            if _busy_errors(exc):
                raise self._busy(holder) from None
            raise OSError(exc.errno, f"cannot lock run folder {self.folder}: "
                          f"{exc.strerror}") from None
        os.ftruncate(fd, _INFO_AT)
        os.lseek(fd, _INFO_AT, os.SEEK_SET)
        os.write(fd, info.encode("utf-8"))
        self._fd = fd

    def _acquire_exclusive(self, info: str) -> None:  # pragma: no cover - exotic platforms
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            with open(self.path, encoding="utf-8", errors="replace") as fh:
                holder = _parse(fh.read())
            raise self._busy(holder, stale_note=True) from None
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(info)
        self._exclusive_file = True

    def _busy(self, holder: dict[str, Any], stale_note: bool = False) -> RunBusy:
        who = f"process {holder['pid']}" if holder.get("pid") else "another process"
        how = ", ".join(v for v in (f"blackbox-dft {holder['command']}" if holder.get("command")
                                    else "", f"started {holder['started']}"
                                    if holder.get("started") else "") if v)
        note = (f"; this platform has no OS file lock: if no process uses it, delete "
                f"{self.path}" if stale_note else "")
        return RunBusy(f"run {self.folder} is in use by {who}"
                       + (f" ({how})" if how else "")
                       + f"; wait for it to finish or stop it{note}")

    def release(self) -> None:
        """Give the lock back (the lock file stays: deleting it would race a new holder)."""
        if self._exclusive_file:  # pragma: no cover - exotic platforms
            self._exclusive_file = False
            try:
                os.unlink(self.path)
            except OSError:
                pass
            return
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, _INFO_AT)  # no stale pid for the next reader
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
            else:  # pragma: no cover - Windows
                os.lseek(fd, 0, os.SEEK_SET)
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        except OSError:
            pass  # closing the file below drops the lock anyway
        finally:
            os.close(fd)

    def __repr__(self) -> str:
        return f"RunLock({self.folder!r}, held={self.held})"


def _holder(fd: int) -> dict[str, Any]:
    """What the holder wrote into the lock file (empty if it has not written yet)."""
    try:
        os.lseek(fd, _INFO_AT, os.SEEK_SET)
        return _parse(os.read(fd, 512).decode("utf-8", "replace"))
    except OSError:
        return {}


def _parse(text: str) -> dict[str, Any]:
    lines = text.splitlines()
    out: dict[str, Any] = {}
    if lines and lines[0].strip().isdigit():
        out["pid"] = int(lines[0])
    if len(lines) > 1 and lines[1].strip().isidentifier():
        out["command"] = lines[1].strip()
    if len(lines) > 2:
        out["started"] = lines[2].strip()[:19]
    return out
