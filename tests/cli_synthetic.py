"""The synthetic black box as a ``python:cli_synthetic:predict`` model spec for CLI tests
(``predict_attributes``: the same box as a 3-attribute API), and data writers for the CLI.

With ``tests/`` on PYTHONPATH, ``blackbox-dft fit --model python:cli_synthetic:predict``
imports :func:`predict`. Environment variables make it observable and slow enough to
interrupt: ``BBDFT_TEST_COUNTER`` (a file: one line with the image count per call, written
before scoring, so a killed call still shows), ``BBDFT_TEST_DELAY`` (seconds per call),
``BBDFT_TEST_FAIL_AFTER`` (raise ConnectionError once more images than that were seen).
"""

from __future__ import annotations

import os
import time

import numpy as np

from blackbox_dft.testing import make_problem

PROBLEM = make_problem(seed=0)


def predict(images: np.ndarray) -> np.ndarray:
    """Scores ``(N, 4)`` of the synthetic softmax black box for uint8 ``(N, 16, 16, 3)``
    (``BBDFT_TEST_FAIL_AFTER``: fails as :func:`predict_attributes` does)."""
    _count_or_fail(images, "the synthetic API")
    delay = float(os.environ.get("BBDFT_TEST_DELAY", "0") or 0)
    if delay:
        time.sleep(delay)
    return PROBLEM.model.predict(images)


def count(path: str) -> int:
    """Images the model saw, from a counter file (0 if absent)."""
    if not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8") as fh:
        return sum(int(line) for line in fh if line.strip())


def write_npz(path: str) -> None:
    """The problem's train / val / test splits as ``x_train, y_train, ...`` arrays."""
    p = PROBLEM
    np.savez(path, x_train=p.train[0], y_train=p.train[1], x_val=p.val[0], y_val=p.val[1],
             x_test=p.test[0], y_test=p.test[1])


ATTRIBUTES = ("a0", "a1", "a2")


def _count_or_fail(images: np.ndarray, api: str) -> None:
    """Append the call's image count to ``BBDFT_TEST_COUNTER``, or raise ConnectionError
    (an API that goes down mid-fit) once more than ``BBDFT_TEST_FAIL_AFTER`` were seen."""
    counter = os.environ.get("BBDFT_TEST_COUNTER")
    if counter:
        limit = os.environ.get("BBDFT_TEST_FAIL_AFTER")
        if limit and count(counter) + images.shape[0] > int(limit):
            raise ConnectionError(f"{api} is down")
        with open(counter, "a", encoding="utf-8") as fh:
            fh.write(f"{images.shape[0]}\n")
            fh.flush()


def predict_attributes(images: np.ndarray) -> np.ndarray:
    """``P(class a)`` of the synthetic softmax for a = 0, 1, 2: an attribute API ``(N, 3)``.

    ``BBDFT_TEST_COUNTER``: file that counts the images seen; ``BBDFT_TEST_FAIL_AFTER``:
    raise once more than that many images were seen (an API that goes down mid-fit).
    """
    _count_or_fail(images, "the attribute API")
    s = PROBLEM.model.predict(images)
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True))[:, :len(ATTRIBUTES)]


class _PixelEmbedding:
    """``python:cli_synthetic:EMBEDDING``: a fixed random projection of the pixels, unit rows,
    ``output_kind = "embedding"``; counts and fails like :func:`predict_attributes`."""

    output_kind = "embedding"
    name = "pixel-embedding"

    def predict(self, images: np.ndarray) -> np.ndarray:
        _count_or_fail(images, "the embedding API")
        x = images.reshape(len(images), -1).astype(np.float64) - 128.0
        proj = np.random.default_rng(0).standard_normal((x.shape[1], 16))
        e = x @ proj
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


EMBEDDING = _PixelEmbedding()


def write_attribute_csv(folder: str, per_split: int = 60) -> str:
    """The problem's splits as PNGs plus ``attributes.csv`` (path, split, a0, a1, a2)."""
    from blackbox_dft.data.datasets import write_image

    os.makedirs(folder, exist_ok=True)
    rows = ["path,split," + ",".join(ATTRIBUTES)]
    for split, (x, y) in (("train", PROBLEM.train), ("val", PROBLEM.val),
                          ("test", PROBLEM.test)):
        for i in range(min(per_split, len(y))):
            name = f"{split}_{i:03d}.png"
            write_image(os.path.join(folder, name), x[i])
            rows.append(f"{name},{split}," + ",".join(str(int(y[i] == a))
                                                      for a in range(len(ATTRIBUTES))))
    path = os.path.join(folder, "attributes.csv")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(rows) + "\n")
    return path


def write_lfw_pairs(root: str, pairs_file: str, n_people: int = 40) -> None:
    """An LFW-style tree (``root/<name>/<name>_<n:04d>.png`` -> .jpg) and its ``pairs.txt``:
    two jittered, blurred views of each of ``n_people`` LFW-subset crops, one same pair per
    person and one different pair (to the next person)."""
    import cv2

    from blackbox_dft.adapters.standins.verification_task import verification_task

    task = verification_task(shift="blur:sigma=1", seed=0)
    views = np.concatenate([task.train[0], task.val[0], task.test[0]])[:2 * n_people]
    lines = [f"1\t{2 * n_people}"]
    for p in range(n_people):
        name = f"Person_{p:02d}"
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for v in (1, 2):
            bgr = cv2.cvtColor(views[2 * p + v - 1], cv2.COLOR_RGB2BGR)
            cv2.imwrite(os.path.join(root, name, f"{name}_{v:04d}.jpg"), bgr,
                        [cv2.IMWRITE_JPEG_QUALITY, 100])
        lines.append(f"{name}\t1\t2")
        lines.append(f"{name}\t1\tPerson_{(p + 1) % n_people:02d}\t2")
    with open(pairs_file, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


def error_line(capsys) -> str:
    """The one line a failed command printed on stderr (data summaries aside); no traceback."""
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("data:")]
    assert "Traceback" not in err
    assert len(lines) == 1, err
    return lines[0]
