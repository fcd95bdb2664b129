"""What the command line shows on stderr besides errors: its notes, and the library's log.

=========== ================================= =================== ==================
verbosity   the CLI's notes (``NOTES``)        library's loggers   progress bars
=========== ================================= =================== ==================
``-q``      warnings                          warnings            off
(none)      ``data: ...``, run folder, ...    warnings            on a terminal
``-v``      as above                          INFO                on a terminal
``-vv``     as above, DEBUG                   DEBUG, and urllib3  on a terminal
=========== ================================= =================== ==================

Errors are not logged: :mod:`.main` prints them (one line each, always shown). Every line is
scrubbed of the command's secrets, and library records of URL query values and userinfo too
(urllib3's DEBUG lines name the URLs it calls). Lines are written with ``tqdm.write`` so
that a progress bar is redrawn below them, not torn.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm

from blackbox_dft.adapters import spec_secrets
from blackbox_dft.adapters.remote.redact import redact_urls

__all__ = ["NOTES", "cli_logging", "QUIET", "DEFAULT"]

QUIET, DEFAULT = -1, 0
# The CLI's own messages to its user (not a module's diagnostics): what is read, what is
# skipped, where the run goes. INFO by default, hidden by -q (warnings stay).
NOTES = logging.getLogger("blackbox_dft.cli.notes")


class _Formatter(logging.Formatter):
    """Notes as they are (``warning: `` before a warning); library and urllib3 records as
    ``LEVEL logger: message``; each on one line, without secrets."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:  # a traceback is for BLACKBOX_DFT_DEBUG=1, not for a log line
            text += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
        text = " ".join(text.split())
        if record.name == NOTES.name:
            if record.levelno >= logging.WARNING:
                text = f"{record.levelname.lower()}: {text}"
            return spec_secrets.scrub(text)
        return redact_urls(spec_secrets.scrub(f"{record.levelname} {record.name}: {text}"))


class _Handler(logging.Handler):
    """Writes to the current ``sys.stderr`` (a test's capture, a redirected stream)
    through ``tqdm.write``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging's own rule: a broken handler never stops the program
            self.handleError(record)


def _levels(verbosity: int) -> dict[str, int]:
    """Logger name -> level for ``verbosity`` (-1 quiet, 0 default, 1 -v, 2 -vv)."""
    if verbosity >= 2:
        return {"blackbox_dft": logging.DEBUG, NOTES.name: logging.DEBUG,
                "urllib3": logging.DEBUG}
    library = logging.INFO if verbosity == 1 else logging.WARNING
    notes = logging.WARNING if verbosity <= QUIET else logging.INFO
    return {"blackbox_dft": library, NOTES.name: notes}


@contextmanager
def cli_logging(verbosity: int = DEFAULT) -> Iterator[None]:
    """For the length of one command: a stderr handler on the package's logger (and
    urllib3's with ``-vv``), levels per ``verbosity``; all restored afterwards (``main``
    may run many times in one process, e.g. in tests)."""
    handler = _Handler()
    handler.setFormatter(_Formatter())
    levels = _levels(verbosity)
    loggers = [logging.getLogger(name) for name in levels]
    saved = [(lg, lg.level) for lg in loggers]
    attached = [lg for lg in loggers if lg.name in ("blackbox_dft", "urllib3")]
    for lg in loggers:
        lg.setLevel(levels[lg.name])
    for lg in attached:
        lg.addHandler(handler)
    try:
        yield
    finally:
        for lg in attached:
            lg.removeHandler(handler)
        for lg, level in saved:
            lg.setLevel(level)
