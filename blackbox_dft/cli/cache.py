"""An on-disk query cache (sqlite3): a Model wrapper that never pays twice for the same image.

Each image's scores are stored under ``sha256(key, shape, uint8 bytes)``, where ``key``
is a secret-free description of the model (its spec and options). Repeated queries
(a resumed fit replaying steps since its last checkpoint, the clean-baseline
evaluation of a second run) are answered from the file. ``misses`` are the images
actually sent to the model; ``hits`` the images the cache answered.

Money: the file also keeps ``images_sent``, the images this cache has ever passed on to the
model, committed *before* each send (an image whose answer never comes back still counts as
paid), and the answers of a call that failed halfway (a split HTTP call whose other requests
came back: :func:`blackbox_dft.core.model.answered_of`) are stored before the error propagates,
so nothing that was paid for is paid again.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from blackbox_dft.core.images import check_image_pairs, check_images, side_by_side
from blackbox_dft.core.model import answered_of, check_scores, model_name, unsent_of
from blackbox_dft.core.state_checks import FileWriteError

__all__ = ["CachedModel", "image_keys", "open_cache"]

log = logging.getLogger(__name__)
_SCHEMA = ("CREATE TABLE IF NOT EXISTS scores (key BLOB PRIMARY KEY, k INTEGER, s BLOB)",
           "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER)")


def image_keys(images: np.ndarray, key: str) -> list[bytes]:
    """One 32-byte sha256 per image of uint8 ``(N, H, W, 3)``, salted with the model ``key``."""
    salt = hashlib.sha256(key.encode("utf-8"))
    salt.update(repr(tuple(int(s) for s in images.shape[1:])).encode())
    out = []
    for im in images:
        h = salt.copy()
        h.update(np.ascontiguousarray(im).tobytes())
        out.append(h.digest())
    return out


def _create(path: str) -> None:
    """Create the file (if new) with the permissions a plain ``open()`` gives (0666 less the
    umask) like the other files of a run folder: sqlite creates it 0644 less the umask, and
    gives its -wal and -shm files the file's mode. A failure is left for sqlite to report."""
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666))
    except OSError:
        pass


class CachedModel:
    """Wrap ``model``: answer repeated images from an sqlite file at ``path``.

    model: any Model; path: the cache file (created); key: a secret-free model spec,
    part of every entry's hash so that two models never share answers.
    ``hits``/``misses`` count images answered from the cache / sent to the model.
    Safe to call from several threads (one lock around the file).
    """

    def __init__(self, model: Any, path: str | os.PathLike[str], key: str) -> None:
        if not callable(getattr(model, "predict", None)) and \
                not callable(getattr(model, "compare", None)):
            raise TypeError(f"model must have a predict method (scores) or a compare method "
                            f"(a pair model), got {type(model).__name__}")
        self.model = model
        self.path = os.fspath(path)
        self.key = key
        self.name = model_name(model)
        self.hits = 0
        self._lock = threading.Lock()
        try:
            _create(self.path)
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                self._db.execute(statement)
            self._db.commit()
            self._sent = self._sent_at_open = self._read_sent()
            log.info("query cache %s opened (%d images sent through it before)", self.path,
                     self._sent)
        except sqlite3.DatabaseError as exc:
            if "full" in str(exc):  # SQLITE_FULL: the disk, not the file
                raise FileWriteError(self.path, OSError(errno.ENOSPC, str(exc))) from None
            raise ValueError(f"query cache {self.path} is not usable ({exc}): delete the file "
                             "(its answers will be paid again) or run the command with "
                             "--no-cache") from None

    def _read_sent(self) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name = 'sent'").fetchone()
        return int(row[0]) if row else 0

    @property
    def images_sent(self) -> int:
        """Images ever passed on to the model through this file (every process), each
        counted before it was sent."""
        with self._lock:
            return self._sent

    def _store(self, new: dict[bytes, np.ndarray]) -> None:
        """Insert answers (caller holds the lock)."""
        with self._disk():
            self._db.executemany(
                "INSERT OR REPLACE INTO scores (key, k, s) VALUES (?, ?, ?)",
                [(kk, int(s.shape[0]), s.astype(np.float64).tobytes()) for kk, s in new.items()])
            self._db.commit()

    @contextmanager
    def _disk(self) -> Iterator[None]:
        """A full disk while writing the file is a FileWriteError naming it (the run is
        resumable once there is space), not an sqlite internal."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "full" in str(exc):
                raise FileWriteError(self.path, OSError(errno.ENOSPC, str(exc))) from None
            raise

    @property
    def output_kind(self) -> str | None:
        """The wrapped model's ``output_kind`` (what its answers are)."""
        return getattr(self.model, "output_kind", None)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Scores float64 ``(N, K)`` for uint8 RGB ``(N, H, W, 3)``; only unseen images are sent."""
        x = check_images(images)
        if not callable(getattr(self.model, "predict", None)):
            raise TypeError(f"{self.name} is a pair model: it has compare(images_a, "
                            "images_b), not predict")
        return self._answer(x, lambda rows: self.model.predict(x[rows]), 1)

    def compare(self, images_a: np.ndarray, images_b: np.ndarray) -> np.ndarray:
        """Similarities ``(P,)`` of a pair model; a pair is one cache entry (keyed by its
        side-by-side image), and hits / misses count its 2 images."""
        a, b = check_image_pairs(images_a, images_b)
        return self._answer(side_by_side(a, b),
                            lambda rows: self.model.compare(a[rows], b[rows]), 2)[:, 0]

    def _answer(self, x: np.ndarray, send: Callable[[list[int]], Any],
                per_entry: int) -> np.ndarray:
        """Scores of the entries ``x`` (keyed by their bytes): cached ones from the file, the
        rest from ``send(rows)`` (the row numbers of the unseen entries), then stored."""
        keys = image_keys(x, self.key)
        found: dict[bytes, np.ndarray] = {}
        with self._lock:
            for i in range(0, len(keys), 500):  # sqlite's limit on bound parameters
                chunk = list(dict.fromkeys(keys[i:i + 500]))
                marks = ",".join("?" * len(chunk))
                for kk, k, s in self._db.execute(
                        f"SELECT key, k, s FROM scores WHERE key IN ({marks})", chunk):
                    found[bytes(kk)] = np.frombuffer(s, dtype=np.float64).reshape(k)
        todo: dict[bytes, int] = {}
        for i, kk in enumerate(keys):
            if kk not in found and kk not in todo:
                todo[kk] = i
        if todo:
            found.update(self._send(todo, send, per_entry))
        with self._lock:
            self.hits += per_entry * (len(keys) - len(todo))
        log.debug("query cache: %d of %d images answered from the file, %d sent",
                  per_entry * (len(keys) - len(todo)), per_entry * len(keys),
                  per_entry * len(todo))
        widths = {v.shape[0] for v in found.values()}
        if len(widths) > 1:
            raise ValueError(f"query cache {self.path} holds scores of different widths "
                             f"{sorted(widths)} for model key {self.key!r}; delete it")
        return np.stack([found[kk] for kk in keys])

    def _send(self, todo: dict[bytes, int], send: Callable[[list[int]], Any],
              per_entry: int) -> dict[bytes, np.ndarray]:
        """Send the unseen entries ``todo`` (key -> row), counting them as paid first; keep
        every answer that came back, even from a call that then failed."""
        rows = list(todo.values())
        self._add_sent(per_entry * len(rows))
        try:
            scores = check_scores(send(rows), len(rows), self.model)
        except BaseException as exc:
            got = answered_of(exc)
            if got is not None:
                self._keep_partial(list(todo), *got)
            self._unsend(unsent_of(exc), len(rows), per_entry)
            raise
        new = {kk: scores[j] for j, kk in enumerate(todo)}
        with self._lock:
            self._store(new)
        return new

    @property
    def misses(self) -> int:
        """Images this object sent to the model (counted before they were sent)."""
        with self._lock:
            return self._sent - self._sent_at_open

    def _add_sent(self, k: int) -> None:
        """Add ``k`` (negative: take back) to the count of sent images and commit it."""
        with self._lock:
            self._sent += k
            with self._disk():
                self._db.execute(
                    "INSERT OR REPLACE INTO counters (name, value) VALUES ('sent', ?)",
                    (self._sent,))
                self._db.commit()

    def _unsend(self, never: np.ndarray, n: int, per_entry: int) -> None:
        """Take back from the count of sent images those a failed call says it never sent
        (requests stopped before they went out)."""
        k = int(np.unique(never[(never >= 0) & (never < n)]).size)
        if k:
            self._add_sent(-per_entry * k)

    def _keep_partial(self, keys: list[bytes], rows: np.ndarray, scores: np.ndarray) -> None:
        """Store the answers a failed call got back (rows index ``keys``); bad rows are
        ignored: the error that is propagating says what went wrong."""
        ok = (rows >= 0) & (rows < len(keys))
        if scores.ndim != 2 or not ok.all() or not np.all(np.isfinite(scores)):
            return
        with self._lock:
            self._store({keys[int(r)]: scores[j] for j, r in enumerate(rows)})

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM scores").fetchone()[0])

    def close(self) -> None:
        """Close the file (later calls fail)."""
        with self._lock:
            self._db.close()
            log.info("query cache %s closed: %d images answered from it, %d sent", self.path,
                     self.hits, self._sent - self._sent_at_open)

    def __repr__(self) -> str:
        return (f"CachedModel({self.name}, path={self.path!r}, hits={self.hits}, "
                f"misses={self.misses})")


def open_cache(model: Any, path: str, key: str) -> CachedModel:
    """The query cache at ``path``; a full disk is a :class:`FileWriteError` naming the file
    (exit 5, resumable), not a damaged cache (SQLITE_FULL's text is sqlite's, and stable)."""
    try:
        return CachedModel(model, path, key)
    except ValueError as exc:
        if "database or disk is full" in str(exc):
            raise FileWriteError(path, OSError(errno.ENOSPC, "database or disk is full")) \
                from None
        raise
