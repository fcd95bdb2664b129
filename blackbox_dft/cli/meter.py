"""Query metering for the command line: a progress bar with queries, cache savings and money.

:class:`Meter` wraps a model (usually a :class:`~blackbox_dft.cli.cache.CachedModel`) and
counts every image asked for (``asked``); the images actually paid for are the ones the
cache sent on when there is a cache, else all of them. Paid images are counted before they
are sent and the ledger (``spend.json``) is written before and after every call, so a
failed call, an interrupt or a SIGKILL never leaves paid images out of it: a new process
of the same run adds what the cache sent after the ledger's last write.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from blackbox_dft.core.images import check_image_pairs, check_images
from blackbox_dft.core.model import model_name
from blackbox_dft.core.state_checks import atomic_write_text, damaged

__all__ = ["Meter", "parse_budget", "money", "read_ledger"]

_MONEY = re.compile(r"^\s*([$€£])?\s*(\d+(?:\.\d*)?|\.\d+)\s*([$€£]|[A-Za-z]{3})?\s*$")


def money(amount: float) -> str:
    """``1.5`` -> ``"$1.50"`` (four decimals below one cent)."""
    return f"${amount:.2f}" if amount == 0 or amount >= 0.01 else f"${amount:.4f}"


def parse_budget(text: Any, cost_per_1000: float | None) -> int:
    """A query budget from ``"10000"`` (queries) or ``"$12.50"`` / ``"12.5USD"`` (money).

    Money needs ``cost_per_1000`` (price of 1000 images) and becomes
    ``floor(amount / cost_per_1000 * 1000)`` queries.
    """
    if isinstance(text, bool):
        raise ValueError(f"--budget must be a number of queries or money, got {text!r}")
    if isinstance(text, (int, np.integer)):
        return int(text)
    m = _MONEY.match(str(text))
    if not m:
        raise ValueError(f"--budget must be a number of queries (10000) or money ($12.50 or "
                         f"12.50USD), got {text!r}")
    amount = float(m.group(2))
    if not (m.group(1) or m.group(3)):
        if amount != int(amount):
            raise ValueError(f"--budget in queries must be a whole number, got {text!r}; "
                             "write money with a currency sign, e.g. $12.50")
        return int(amount)
    if not cost_per_1000 or cost_per_1000 <= 0:
        raise ValueError(f"--budget {text!r} is money: give the price with --cost-per-1000")
    return int(np.floor(amount / cost_per_1000 * 1000.0 + 1e-9))


def read_ledger(path: str) -> dict[str, Any]:
    """Totals written by a :class:`Meter` (``{}`` if there are none yet); a damaged file is a
    :class:`~blackbox_dft.core.state_checks.StateFileError` (money must never silently reset)."""
    try:
        with open(path, "rb") as fh:
            data = json.loads(fh.read().decode("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError) as exc:
        raise damaged(path, f"not readable JSON: {type(exc).__name__}") from None
    bad = [k for k in ("asked", "paid", "saved", "cache_sent") if k in data and (
        not isinstance(data[k], int) or isinstance(data[k], bool) or data[k] < 0)] \
        if isinstance(data, dict) else ["the whole file"]
    if bad:
        raise damaged(path, f"{bad[0]} is not a count of images")
    return data


class Meter:
    """Count images asked of ``model``, update a tqdm ``bar`` and show the money spent.

    cache: the :class:`CachedModel` inside ``model`` (or None); cost_per_1000: price of
    1000 paid images (None: no money shown); planned: images the whole command may ask
    (for the projected total).
    """

    def __init__(self, model: Any, bar: Any = None, cache: Any = None,
                 cost_per_1000: float | None = None, planned: int = 0,
                 ledger: str | None = None) -> None:
        self.model = model
        self.bar = bar
        self.cache = cache
        self.cost_per_1000 = cost_per_1000
        self.planned = int(planned)
        self.asked = 0
        self.ledger = ledger
        before = read_ledger(ledger) if ledger else {}
        # Totals of earlier processes of the same run (a resume after an interrupt).
        self.asked_before = int(before.get("asked", 0))
        self.paid_before = int(before.get("paid", 0))
        self.saved_before = int(before.get("saved", 0))
        self._cache_start = int(cache.images_sent) if cache is not None else 0
        if cache is not None and "cache_sent" in before:
            # Sent by an earlier process after its last ledger write (it was killed).
            late = max(0, self._cache_start - int(before["cache_sent"]))
            self.paid_before += late
        self.name = model_name(model)

    def totals(self) -> dict[str, Any]:
        """Images asked / paid / answered by the cache over every process of the run, and cost."""
        out: dict[str, Any] = {"asked": self.asked_before + self.asked,
                               "paid": self.paid_before + self.paid,
                               "saved": self.saved_before + self.saved}
        if self.cache is not None:
            out["cache_sent"] = int(self.cache.images_sent)
        if self.cost_per_1000 is not None:
            out["cost_per_1000"] = self.cost_per_1000
            out["cost"] = self.cost(out["paid"])
        return out

    def _write_ledger(self) -> None:
        if not self.ledger:
            return
        # No fsync: it is written twice per call, and a killed process's page cache still
        # reaches the disk; what a power cut could lose, the cache file's own count restores.
        atomic_write_text(self.ledger, json.dumps(self.totals()), fsync=False)

    @property
    def paid(self) -> int:
        """Images sent to the model by this process (counted before they were sent)."""
        if self.cache is not None:
            return int(self.cache.images_sent) - self._cache_start
        return self.asked

    @property
    def images_sent(self) -> int:
        """Images paid over every process of the run (what :class:`QueryCounter` charges)."""
        return self.paid_before + self.paid

    @property
    def saved(self) -> int:
        """Images the cache answered in this process."""
        return self.cache.hits if self.cache is not None else 0

    def cost(self, images: int) -> float | None:
        """Money for ``images`` paid images (None without a price)."""
        if self.cost_per_1000 is None:
            return None
        return images * self.cost_per_1000 / 1000.0

    def projected(self) -> float | None:
        """Money spent so far plus the rest of the plan if every image is paid."""
        if self.cost_per_1000 is None:
            return None
        rest = max(0, self.planned - self.asked)
        return self.cost(self.paid_before + self.paid + rest)

    def postfix(self) -> dict[str, str]:
        """Short fields for the progress bar."""
        out = {"paid": str(self.paid)}
        if self.cache is not None:
            out["cached"] = str(self.saved)
        spent = self.cost(self.paid_before + self.paid)
        if spent is not None:
            out["spent"] = money(spent)
            out["projected"] = money(self.projected() or 0.0)
        return out

    @property
    def output_kind(self) -> str | None:
        """The wrapped model's ``output_kind`` (what its answers are)."""
        return getattr(self.model, "output_kind", None)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Forward uint8 ``(N, H, W, 3)`` to the wrapped model; the images count as asked
        (and, without a cache, as paid) before they are sent, once they are known to be
        images (bad input is refused here, in one line, and never counted)."""
        x = check_images(images)
        return np.asarray(self._forward(int(x.shape[0]), lambda: self.model.predict(x)))

    def compare(self, images_a: np.ndarray, images_b: np.ndarray) -> np.ndarray:
        """Forward a pair model's ``compare`` of ``(P, H, W, 3)`` stacks; every pair counts
        its 2 images (checked first, as in :meth:`predict`)."""
        a, b = check_image_pairs(images_a, images_b)
        return np.asarray(self._forward(2 * int(a.shape[0]), lambda: self.model.compare(a, b)))

    def _forward(self, n: int, call: Any) -> Any:
        self.asked += n
        self._write_ledger()  # write-ahead: a SIGKILL during the call still finds them
        try:
            return call()
        finally:
            self._write_ledger()
            if self.bar is not None:
                self.bar.set_postfix(self.postfix(), refresh=False)
                self.bar.update(n)  # refreshes, postfix included

    def __repr__(self) -> str:
        return f"Meter({self.name}, asked={self.asked}, paid={self.paid})"
