"""Progress bars as tqdm's users expect them: on stderr, and only when someone watches.

A bar asked for (``progress=True``) is shown when stderr is a terminal (tqdm's
``disable=None``) or in a Jupyter notebook (tqdm.auto's widget, which ignores the terminal
test); never when stderr is a file or a pipe (a log or CI output stays free of carriage-return
noise), and never when ``TQDM_DISABLE`` is set to any non-empty value: tqdm's own rule (it reads
the variable once, at import, and an explicit ``disable=`` argument overrides it, so ours is
read here, at each bar).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress_bar", "bar_disabled"]


def bar_disabled(progress: bool) -> bool | None:
    """tqdm's ``disable`` for a bar the caller wants (``progress``): True (off) or None
    (on when the bar's stream is a terminal)."""
    if not progress or os.environ.get("TQDM_DISABLE"):
        return True
    return None


def progress_bar(progress: bool, **kwargs: Any) -> tqdm[Any]:
    """A tqdm bar on stderr (``kwargs``: tqdm's, e.g. ``total``, ``unit``, ``desc``), shown
    per :func:`bar_disabled`; a hidden bar takes the same calls and does nothing."""
    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(disable=bar_disabled(progress), **kwargs)
