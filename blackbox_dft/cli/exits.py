"""Exit codes of the command line, and the one-line form of an error (secrets scrubbed).

==== ======================================================================================
code meaning
==== ======================================================================================
0    done
1    an internal error (a bug; ``BLACKBOX_DFT_DEBUG=1`` shows the traceback)
2    bad arguments, data, config or run files (damaged or altered files included)
3    the model or API failed after its retries; the run is resumable
4    a missing optional dependency (the message names every missing package and the
     ``pip install`` line: :mod:`.deps`)
5    a run file could not be written (disk full, quota, read-only); the run is resumable
     once there is space
6    the run folder is in use by another process (the message names its pid)
7    ``check``: the delta no longer helps the model (the model changed since the fit)
130  interrupted (Ctrl-C or SIGTERM); the checkpoint is written, the run is resumable
==== ======================================================================================
"""

from __future__ import annotations

import errno

from blackbox_dft.adapters import spec_secrets

__all__ = ["EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_MODEL", "EXIT_DEPENDENCY",
           "EXIT_WRITE", "EXIT_BUSY", "EXIT_DELTA_HURTS", "EXIT_INTERRUPTED", "EXIT_CODES",
           "DISK_ERRNOS", "one_line"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_MODEL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_DEPENDENCY, EXIT_WRITE, EXIT_BUSY, EXIT_DELTA_HURTS = 4, 5, 6, 7
# A write that fails for want of room or permission: the run is fine, the disk is not.
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EIO}
EXIT_CODES = {EXIT_OK: "done", EXIT_ERROR: "internal error",
              EXIT_USAGE: "bad arguments, data, config or run files",
              EXIT_MODEL: "model or API failure (resumable)",
              EXIT_DEPENDENCY: "missing optional dependency",
              EXIT_WRITE: "a run file could not be written (resumable once there is space)",
              EXIT_BUSY: "run folder in use by another process",
              EXIT_DELTA_HURTS: "check: the delta no longer helps (the model changed)",
              EXIT_INTERRUPTED: "interrupted (resumable)"}


def one_line(exc: BaseException) -> str:
    """The exception as one line, without any secret the command has seen."""
    return spec_secrets.scrub(" ".join(str(exc).split()) or type(exc).__name__)
