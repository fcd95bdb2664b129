"""The run report figure, drawn with cv2 only: example grids, the amplified perturbation and
a plot of validation accuracy against queries.

Images are enlarged with nearest-neighbour interpolation so that 25x25 crops stay visible
pixel for pixel. Everything is RGB uint8 until :func:`save_png` converts at the boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from blackbox_dft.core.state_checks import atomic_write_bytes

__all__ = ["stopping_line", "render_report", "save_png", "amplify_delta", "plot_curve"]

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_WHITE = (255, 255, 255)
_BLACK = (20, 20, 20)
_GREY = (150, 150, 150)
_BLUE = (31, 119, 180)
_ORANGE = (230, 120, 20)
_GREEN = (40, 160, 40)


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.45,
          color: tuple[int, int, int] = _BLACK, thickness: int = 1) -> None:
    cv2.putText(img, text, (int(org[0]), int(org[1])), _FONT, scale, color, thickness,
                cv2.LINE_AA)


def _text_width(text: str, scale: float = 0.45, thickness: int = 1) -> int:
    return int(cv2.getTextSize(text, _FONT, scale, thickness)[0][0])


def _enlarge(image: np.ndarray, cell: int) -> np.ndarray:
    """Nearest-neighbour enlargement of ``(h, w, 3)`` so that its longer side is ``cell``."""
    h, w = image.shape[:2]
    k = max(1, cell // max(h, w))
    return cv2.resize(image, (w * k, h * k), interpolation=cv2.INTER_NEAREST)


def amplify_delta(delta: np.ndarray, epsilon: float) -> np.ndarray:
    """A perturbation ``(H, W, 3)`` in grey levels as a visible uint8 image: ``128 + 127 d/eps``."""
    eps = max(float(epsilon), 1e-6)
    return np.clip(np.rint(128.0 + 127.0 * np.asarray(delta) / eps), 0, 255).astype(np.uint8)


def _grid(rows: Sequence[tuple[str, np.ndarray]], cell: int, label_w: int,
          captions: Sequence[str] | None) -> np.ndarray:
    n = max(r[1].shape[0] for r in rows)
    tiles = [[_enlarge(im, cell) for im in r[1]] for r in rows]
    th, tw = tiles[0][0].shape[:2]
    gap, cap_h = 4, 16 if captions else 0
    height = len(rows) * (th + gap) + gap + cap_h
    canvas = np.full((height, label_w + n * (tw + gap) + gap, 3), 255, np.uint8)
    for i, ((label, _), row) in enumerate(zip(rows, tiles, strict=True)):
        y = gap + i * (th + gap)
        _text(canvas, label, (6, y + th // 2 + 5))
        for j, tile in enumerate(row):
            x = label_w + gap + j * (tw + gap)
            canvas[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
    if captions:
        for j, cap in enumerate(captions[:n]):
            x = label_w + gap + j * (tw + gap)
            _text(canvas, cap, (x + 2, height - 4), 0.38, _GREY)
    return canvas


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span = max(hi - lo, 1e-9)
    raw = span / n
    mag = 10 ** np.floor(np.log10(raw))
    step = float(min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=mag * 10))
    start = np.ceil(lo / step) * step
    ticks = np.arange(start, hi + step * 0.5, step)
    return [float(v) for v in ticks if lo - 1e-9 <= v <= hi + 1e-9]


def plot_curve(history: Sequence[dict[str, Any]], baseline: dict[str, Any] | None,
               size: tuple[int, int] = (300, 520), key: str = "val_accuracy",
               best_step: int | None = None) -> np.ndarray:
    """Validation accuracy (``key``) against queries as an RGB uint8 ``(h, w, 3)`` plot.

    The baseline (delta = 0) is a dashed line; the kept (best) step is a green dot.
    """
    h, w = size
    img = np.full((h, w, 3), 255, np.uint8)
    left, right, top, bottom = 56, 14, 26, 44
    pts = [(float(r["queries"]), float(r[key])) for r in history if r.get(key) is not None]
    if baseline is not None and baseline.get(key) is not None:
        pts.insert(0, (float(baseline.get("queries", 0)), float(baseline[key])))
    _text(img, f"validation {key.replace('val_', '').replace('_', ' ')} vs queries",
          (left, 17), 0.5)
    if not pts:
        _text(img, "no validation measurements", (left + 20, h // 2), 0.5, _GREY)
        return img
    qs = [p[0] for p in pts]
    accs = [p[1] for p in pts]
    x_lo, x_hi = 0.0, max(max(qs), 1.0) * 1.03
    y_lo = max(0.0, np.floor(min(accs) * 20 - 1) / 20)
    y_hi = min(1.0, np.ceil(max(accs) * 20 + 1) / 20)
    if y_hi - y_lo < 0.1:
        y_lo, y_hi = max(0.0, y_lo - 0.05), min(1.0, y_hi + 0.05)

    def px(q: float, a: float) -> tuple[int, int]:
        x = left + (q - x_lo) / (x_hi - x_lo) * (w - left - right)
        y = h - bottom - (a - y_lo) / max(y_hi - y_lo, 1e-9) * (h - top - bottom)
        return int(round(x)), int(round(y))

    cv2.rectangle(img, (left, top), (w - right, h - bottom), _BLACK, 1)
    for v in _nice_ticks(y_lo, y_hi):
        x0, y = px(x_lo, v)
        cv2.line(img, (left - 4, y), (left, y), _BLACK, 1)
        cv2.line(img, (left + 1, y), (w - right - 1, y), (235, 235, 235), 1)
        _text(img, f"{v:.2f}", (6, y + 4), 0.4)
    for v in _nice_ticks(x_lo, x_hi):
        x, y0 = px(v, y_lo)
        cv2.line(img, (x, h - bottom), (x, h - bottom + 4), _BLACK, 1)
        label = f"{v / 1000:g}k" if v >= 1000 else f"{v:g}"
        _text(img, label, (x - _text_width(label, 0.4) // 2, h - bottom + 17), 0.4)
    _text(img, "queries (images sent)", (w // 2 - 70, h - 8), 0.45)
    if baseline is not None and baseline.get(key) is not None:
        yb = px(0, float(baseline[key]))[1]
        for x in range(left + 1, w - right - 1, 10):
            cv2.line(img, (x, yb), (min(x + 5, w - right - 1), yb), _ORANGE, 1)
        _text(img, "delta = 0", (w - right - 80, yb - 5), 0.4, _ORANGE)
    poly = np.array([px(q, a) for q, a in pts], np.int32)
    cv2.polylines(img, [poly], False, _BLUE, 2, cv2.LINE_AA)
    for p in poly:
        cv2.circle(img, (int(p[0]), int(p[1])), 2, _BLUE, -1)
    if best_step:
        best = [r for r in history if r.get("step") == best_step and r.get(key) is not None]
        if best:
            cx, cy = px(float(best[0]["queries"]), float(best[0][key]))
            cv2.circle(img, (cx, cy), 6, _GREEN, 2, cv2.LINE_AA)
            tx = cx + 8 if cx + 40 < w else cx - 40
            _text(img, "kept", (tx, cy - 8), 0.4, _GREEN)
    return img


def _text_panel(lines: Sequence[str], width: int, height: int) -> np.ndarray:
    img = np.full((height, width, 3), 255, np.uint8)
    for i, line in enumerate(lines):
        _text(img, line, (10, 24 + 20 * i), 0.47)
    return img


def _hstack(panels: Sequence[np.ndarray], gap: int = 10) -> np.ndarray:
    h = max(p.shape[0] for p in panels)
    padded = []
    for i, p in enumerate(panels):
        pad = np.full((h, p.shape[1] + (gap if i else 0), 3), 255, np.uint8)
        pad[:p.shape[0], (gap if i else 0):] = p
        padded.append(pad)
    return np.concatenate(padded, axis=1)


def _vstack(panels: Sequence[np.ndarray], gap: int = 8) -> np.ndarray:
    w = max(p.shape[1] for p in panels)
    out = []
    for p in panels:
        pad = np.full((p.shape[0] + gap, w, 3), 255, np.uint8)
        pad[:p.shape[0], :p.shape[1]] = p
        out.append(pad)
    return np.concatenate(out, axis=0)


def render_report(rows: Sequence[tuple[str, np.ndarray]], delta: np.ndarray, epsilon: float,
                  history: Sequence[dict[str, Any]], baseline: dict[str, Any] | None,
                  title: str, lines: Sequence[str], captions: Sequence[str] | None = None,
                  best_step: int | None = None, cell: int = 100) -> np.ndarray:
    """The report figure as RGB uint8 ``(H, W, 3)``.

    rows: ``(label, uint8 (n, h, w, 3))`` example rows (e.g. clean / shifted / shifted+delta);
    delta: float ``(h, w, 3)`` grey levels, shown amplified to ``[-epsilon, epsilon]`` ->
    ``[1, 255]``; history/baseline: fit history for the curve; lines: summary text.
    """
    label_w = max(_text_width(label) for label, _ in rows) + 16
    grid = _grid(rows, cell, label_w, captions)
    amp = _enlarge(amplify_delta(delta, epsilon), 2 * cell)
    dpanel = np.full((amp.shape[0] + 46, max(amp.shape[1], 220), 3), 255, np.uint8)
    dpanel[4:4 + amp.shape[0], :amp.shape[1]] = amp
    peak = float(np.abs(delta).max()) if np.size(delta) else 0.0
    _text(dpanel, f"delta x{127.0 / max(epsilon, 1e-6):.0f} (+-{epsilon:g} -> +-127)",
          (0, amp.shape[0] + 20), 0.42)
    _text(dpanel, f"max |delta| = {peak:.2f} grey levels", (0, amp.shape[0] + 38), 0.42)
    top = _hstack([grid, dpanel], 16)
    curve = plot_curve(history, baseline, (300, 520), best_step=best_step)
    text = _text_panel(lines, max(420, top.shape[1] - curve.shape[1] - 16), 300)
    bottom = _hstack([curve, text], 16)
    head = np.full((34, max(top.shape[1], bottom.shape[1]), 3), 255, np.uint8)
    _text(head, title, (8, 24), 0.6, _BLACK, 1)
    fig = _vstack([head, top, bottom])
    return np.pad(fig, ((8, 8), (8, 8), (0, 0)), constant_values=255)


def save_png(path: str, image: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG atomically."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - cv2 always encodes uint8 RGB
        raise ValueError(f"cannot encode {path} as PNG")
    atomic_write_bytes(path, buf.tobytes())  # FileWriteError naming path on a full disk


def stopping_line(report: dict[str, Any]) -> str | None:
    """The summary / ``info`` line about early stopping (None when it was off)."""
    es = report.get("early_stopping")
    if not isinstance(es, dict) or es.get("patience") is None:
        return None
    if es.get("stopped"):
        return (f"early stopping: no validation gain in {es['patience']} queries; "
                f"{es.get('queries_saved', 0)} queries of the budget saved")
    return f"early stopping: did not stop (patience {es['patience']} queries); 0 queries saved"
