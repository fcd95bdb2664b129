"""What every run kind's job builder shares: data loaded and split from the options, the
model built from its spec, the query budget (money converted), the one-line data summary.
Composition only: the data readers, the model specs and the tuners do the work."""

from __future__ import annotations

import os

import numpy as np

from blackbox_dft.adapters.specs import SpecError, build_model, model_key
from blackbox_dft.cli.config import ConfigError
from blackbox_dft.cli.logs import NOTES
from blackbox_dft.cli.meter import parse_budget
from blackbox_dft.cli.options import DataOptions, FitOptions, ModelOptions
from blackbox_dft.core.model import Model
from blackbox_dft.data.datasets import Dataset, parse_size, split_dataset
from blackbox_dft.data.loaders import load_dataset
from blackbox_dft.data.shifts import parse_shift

__all__ = ["Split", "xy", "load_data", "load_splits", "open_model", "budget_images",
           "fit_budget", "print_split", "is_embedding", "check_classifier", "base_name"]

Split = tuple[np.ndarray, np.ndarray]  # images uint8 (N, H, W, 3), labels (or pairs (P, 3))
_VERIFY_HINT = ("fit it in face-verification mode: --pairs pairs.txt --image-root DIR "
                "instead of --data")


def xy(ds: Dataset | None) -> Split | None:
    """``(images, labels)`` of a part (None stays None)."""
    return None if ds is None else (ds.images, ds.labels)


def base_name(path: str) -> str:
    """The last part of a data path, for titles."""
    return os.path.basename(os.path.normpath(path))


def load_data(d: DataOptions, seed: int, source: str | None = None) -> Dataset:
    """Load and shift the data named by the options (or ``source``); skipped images are
    named on stderr."""
    path = source or d.source
    if not path:
        raise ConfigError("--data is required (as a flag or a config key)")
    ds = load_dataset(path, size=parse_size(d.size), size_mode=d.size_mode,
                      skip_bad=d.skip_bad, classes=d.classes, attributes=d.attributes,
                      image_root=d.image_root, limit=d.limit, seed=seed,
                      max_pixels=d.max_image_pixels)
    for name in ds.skipped:
        NOTES.warning("skipped unreadable image: %s", name)
    if d.shift:
        ds.images = parse_shift(d.shift)(ds.images, np.random.default_rng([seed, 1]))
    return ds


def load_splits(opts: FitOptions) -> tuple[Dataset, Dataset | None, Dataset | None]:
    """Train / validation / test parts of the options' data (its own split, or seeded)."""
    return split_dataset(load_data(opts.data, opts.seed), opts.data.val_fraction,
                         opts.data.test_fraction, opts.seed)


def open_model(m: ModelOptions) -> tuple[Model, str]:
    """The model of the options and its secret-free cache key."""
    model = build_model(m.model, preset=m.preset, options=m.model_options,
                        api_key_env=m.api_key_env, api_secret_env=m.api_secret_env)
    return model, model_key(m.model, m.preset, m.model_options)


def budget_images(budget: int | str, cost_per_1000: float | None) -> int:
    """``--budget`` in images (money converted at ``--cost-per-1000``), at least 1."""
    images = parse_budget(budget, cost_per_1000)
    if images < 1:
        raise ConfigError(f"--budget must pay for at least one image, got {budget!r}")
    return images


def fit_budget(opts: FitOptions, eval_cost: int, what: str) -> int | None:
    """The fit's query budget from ``--budget`` (None: the tuner's default): a money budget
    also pays for the final evaluation (``eval_cost`` images, described by ``what``)."""
    budget = opts.tuner.budget
    if budget is None:
        return None
    images = budget_images(budget, opts.model.cost_per_1000)
    if not str(budget).strip().isdigit() and opts.run.evaluate and eval_cost:
        images -= eval_cost
        if images < 1:
            raise ValueError(f"--budget {budget} does not even pay for evaluating {what}")
    return images


def print_split(summary: str, parts: dict[str, int], unit: str = "") -> None:
    """The ``data:`` line on stderr: what the data is and how it was split."""
    split = ", ".join(f"{name} {n}" for name, n in parts.items())
    NOTES.info("data: %s; split %s%s", summary, split, unit)


def is_embedding(model: object) -> bool:
    """An embedding model or a pair model (a face-compare API): what ``--pairs`` fits."""
    return getattr(model, "output_kind", None) in ("embedding", "similarity")


def check_classifier(model: object, spec: str) -> None:
    """SpecError when an embedding or pair model is asked for a classification fit."""
    if is_embedding(model):
        what = ("embeddings (output_kind 'embedding')"
                if getattr(model, "output_kind", None) == "embedding"
                else "pair similarities (output_kind 'similarity')")
        raise SpecError(f"--model {spec} returns {what}, not class scores; {_VERIFY_HINT}")
