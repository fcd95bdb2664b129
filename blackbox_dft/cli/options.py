"""Options of ``blackbox-dft fit`` and ``demo`` as dataclasses: one table for the flags, the
config files and the saved config.

Every option is a field of a group (:class:`ModelOptions`, :class:`DataOptions`,
:class:`TunerOptions`, :class:`RunOptions`) of :class:`FitOptions`, declared with
:func:`option`: its one name (``batch_size``) is the flag (``--batch-size``), the key of a
``--config`` file (JSON or TOML) and the key in the run's ``config.json`` (a flat object, as
written since run format 1). Precedence: defaults < config file < flags. A default of None
means "the library's default" (not passed to the tuner). Options are parsed once, here: the
rest of the CLI reads typed fields.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from blackbox_dft.adapters.specs import parse_option
from blackbox_dft.cli.config import (
    ConfigError,
    Option,
    check_options,
    csv_list,
    from_flat,
    option,
    option_table,
    to_flat,
)
from blackbox_dft.cli.config import read_config_file as _read_config_file
from blackbox_dft.core.objectives import SCORES

__all__ = ["ModelOptions", "DataOptions", "TunerOptions", "RunOptions", "FitOptions",
           "DemoOptions", "FIT_OPTIONS", "DEMO_OPTIONS", "read_config_file", "resolve_options",
           "saved_fit_options", "saved_demo_options"]


@dataclass
class ModelOptions:
    """What to query and what it costs."""

    spec: str | None = option(None, "model spec: standin:NAME, a model file, an http(s) URL "
                              "or python:module:function", name="model",
                              shown="required")
    preset: str | None = option(None, "wire format of an HTTP model (json, oip, hf, tfserving, "
                                "torchserve, facepp, gcv, clarifai; facepp_compare: a "
                                "face-compare API for --pairs)", shown="json")
    api_key_env: str | None = option(None, "environment variable that holds the API key")
    api_secret_env: str | None = option(None, "environment variable that holds the API secret")
    model_options: dict[str, Any] = option({}, "adapter option KEY=VALUE (JSON value), "
                                           "repeatable", flag="list")
    cost_per_1000: float | None = option(None, "price of 1000 images sent: shows money spent "
                                         "and projected", float, check="nonnegative")

    @property
    def model(self) -> str:
        """The model spec (required: :func:`resolve_options` checks it is given)."""
        if not self.spec:
            raise ConfigError("--model is required (as a flag or a config key)")
        return self.spec


@dataclass
class DataOptions:
    """Where the images come from and how they are read, shifted and split."""

    source: str | None = option(None, "dataset: ImageFolder, .csv, list_attr_celeba.txt or "
                                ".npz (or --pairs for face verification)", name="data",
                                shown="required, or --pairs")
    size: int | str | None = option(None, "image size N or HxW (resize or crop to it)",
                                    accepts=(int,), shown="the images' own size")
    size_mode: str = option("resize", "how --size is reached", choices=("resize", "crop"))
    skip_bad: bool = option(False, "skip unreadable images instead of stopping", flag="bool")
    max_image_pixels: int | None = option(None, "refuse images whose header claims more "
                                          "pixels, before decoding them (default 50000000)",
                                          int)
    classes: list[str] | None = option(None, "class names in the model's output order, "
                                       "comma-separated", csv_list, shown="from the data")
    attributes: list[str] | None = option(None, "attribute columns to use (CSV, CelebA), "
                                          "comma-separated", csv_list,
                                          shown="every attribute column")
    image_root: str | None = option(None, "folder that CSV / CelebA image paths are relative "
                                    "to (with --pairs: the LFW folder, one sub-folder per "
                                    "person)", shown="the CSV or CelebA file's folder")
    limit: int | None = option(None, "use a seeded random subset of this many images", int,
                               check="count", shown="all images")
    shift: str | None = option(None, "apply a domain shift to the data first (e.g. "
                               "blur:sigma=1)")
    val_fraction: float = option(0.2, "validation fraction when the data has no split", float,
                                 check="fraction")
    test_fraction: float = option(0.2, "test fraction when the data has no split", float,
                                  check="fraction")
    attribute_mode: str = option(
        "shared", "multilabel data (CSV attribute columns, CelebA list): 'shared' fits one "
        "perturbation for all attributes (task multilabel); 'per_attribute' fits one "
        "perturbation per attribute, the attributes' queries sent together in one call "
        "(report.json: per-attribute accuracy, queries saved)",
        choices=("shared", "per_attribute"))
    pairs: str | None = option(
        None, "face verification instead of classification: an LFW pairs.txt ('name n1 n2' "
        "same, 'name1 n1 name2 n2' different; images <image-root>/<name>/<name>_<n:04d>.jpg); "
        "needs --image-root and an embedding model (e.g. standin:hog-embedding); replaces "
        "--data")


@dataclass
class TunerOptions:
    """The tuner's parameters (None: the library's default)."""

    far: float | None = option(None, "face verification: false accept rate of the reported "
                               "TAR (default 0.1)", float, check="probability")
    threshold: float | None = option(None, "face verification: the vendor's fixed match "
                                     "threshold on the cosine similarity (default: re-chosen "
                                     "on the validation pairs)", float, check="cosine")
    task: str | None = option(None, "objective: multiclass, binary or multilabel (default: "
                              "from the data)", choices=("multiclass", "binary", "multilabel"))
    scores: str | None = option(None, "what the model returns", choices=SCORES,
                                shown="probabilities")
    label_map: str | list[Any] | None = option(None, "task class of each model output, "
                                               "comma-separated ('-': none)", accepts=(list,),
                                               shown="output i is class i")
    class_weight: str | dict[str, Any] | None = option(
        None, "'balanced' or a JSON object {class: weight}", accepts=(dict,),
        shown="every class weighs 1")
    epsilon: float | None = option(None, "L-inf budget of the perturbation in grey levels "
                                   "(default 8)", float, check="positive")
    budget: int | str | None = option(None, "query budget of the fit: images (e.g. 10000) or "
                                      "money (e.g. $12.50)", accepts=(int,), check="count",
                                      shown="10000 images")
    perturbation: int | str | None = option(None, "latent grid HxW (e.g. 8x8, optionally "
                                            ":cubic) or 'full'", accepts=(int,),
                                            shown="16x16:nearest for classification, 8x8 for "
                                            "face verification and per-attribute fits")
    estimator: str | None = option(None, "gradient estimator", choices=("spsa", "nes", "rd"),
                                   shown="spsa")
    directions: int | None = option(None, "random directions per step", int, check="count",
                                    shown="1")
    per_image: bool | None = option(None, "one random direction per image of the minibatch "
                                    "(--no-per-image: one direction shared by the minibatch)",
                                    flag="bool", shown="--per-image for classification, "
                                    "--no-per-image for face verification and per-attribute "
                                    "fits")
    fd_step: float | None = option(None, "finite-difference step in grey levels", float,
                                   check="positive", shown="2")
    fd_step_decay: float | None = option(None, "decay exponent of the finite-difference step",
                                         float, check="nonnegative", shown="0")
    optimizer: str | None = option(None, "optimizer", choices=("adam", "sgd", "momentum",
                                                               "nesterov", "sign_sgd"),
                                   shown="adam")
    learning_rate: float | None = option(None, "learning rate in grey levels per step", float,
                                         check="positive", shown="epsilon/8 for "
                                         "classification (epsilon/16 with --scores labels) "
                                         "and the other fits")
    lr_schedule: str | None = option(None, "learning-rate schedule", choices=(
        "constant", "cosine", "inverse_sqrt", "exponential"), shown="inverse_sqrt (lr / "
        "sqrt(1 + step / 30)) for classification, constant with --scores labels and for the "
        "other fits")
    batch_size: int | None = option(None, "images per minibatch", int, check="count",
                                    shown="8 for classification (16 with --scores labels), "
                                    "32 for face verification and per-attribute fits")
    selection: str | None = option(None, "validation metric that picks the kept delta",
                                   choices=("accuracy", "balanced_accuracy", "loss"),
                                   shown="accuracy")
    validation_every: int | None = option(None, "steps between validation checks", int,
                                          check="count", shown="classification: once the "
                                          "steps sent 10x the validation images (10 with "
                                          "--scores labels); 10 for the other fits")
    sampling: str | None = option(None, "how a classification step draws its minibatch: "
                                  "importance (by each image's last error, reweighted) or "
                                  "uniform", choices=("importance", "uniform"),
                                  shown="importance (uniform with --scores labels)")
    energy_penalty: float | None = option(None, "weight of an exact |z|^2 penalty: smaller "
                                          "perturbation (higher PSNR) at some cost in accuracy "
                                          "(default 0)", float, check="nonnegative")
    early_stopping: bool = option(True, "stop the fit once --patience queries brought no "
                                  "validation gain (--no-early-stopping: spend the whole "
                                  "budget)", flag="bool")
    patience: int | None = option(None, "early stopping: queries (validation included) "
                                  "without a validation gain before the fit stops", int,
                                  check="count", shown="the larger of 1000 and 30% of the budget")


@dataclass
class RunOptions:
    """The run folder, its checkpoints, its query cache and the final evaluation."""

    checkpoint_every: int = option(10, "steps between checkpoints (>= 1)", int, check="count")
    cache: bool = option(True, "on-disk query cache", flag="bool")
    cache_path: str | None = option(None, "cache file (default: cache.sqlite in the run "
                                    "folder)")
    evaluate: bool = option(True, "evaluate on the test split at the end (2 x test images)",
                            flag="bool")
    out: str | None = option(None, "run folder to create", shown="required")


@dataclass
class FitOptions:
    """Every option of ``fit``, in groups; :meth:`flat` is the saved form."""

    model: ModelOptions = field(default_factory=ModelOptions)
    data: DataOptions = field(default_factory=DataOptions)
    tuner: TunerOptions = field(default_factory=TunerOptions)
    seed: int = option(0, "seed of the split and of the fit", int, check="seed")
    run: RunOptions = field(default_factory=RunOptions)

    def flat(self) -> dict[str, Any]:
        """``{option name: value}``: the ``options`` object of ``config.json``."""
        return to_flat(self)

    @classmethod
    def from_flat(cls, values: dict[str, Any]) -> FitOptions:
        """Options from ``{option name: value}`` (checked values; missing ones: defaults)."""
        return from_flat(cls, _normalise(values))


DEMO_TASKS = ("face", "smiling")


@dataclass
class DemoOptions:
    """The options of ``demo`` (a built-in task), as saved in a demo run's ``config.json``."""

    task: str = option("face", "built-in task", choices=DEMO_TASKS)
    shift: str | None = option(None, "domain shift spec (default: Gaussian blur on the crops, "
                               "sigma 1 px for face, 0.7 px for smiling: the benchmarks' "
                               "settings)")
    epsilon: float | None = option(None, "L-inf budget, grey levels", float,
                                   check="positive", shown="8")
    budget: int | str = option("10000", "query budget (images, or $ with a price)",
                               accepts=(int,), check="count")
    cost_per_1000: float | None = option(None, "price of 1000 images sent", float,
                                         check="nonnegative")
    seed: int = option(0, "seed of the task's split and of the fit", int, check="seed")
    out: str = option(os.path.join("runs", "demo"), "run folder (auto-suffixed -2, -3, ... "
                      "when it exists)")
    cache: bool = option(True, "on-disk query cache", flag="bool")
    checkpoint_every: int = option(10, "steps between checkpoints (>= 1)", int, check="count")

    def flat(self) -> dict[str, Any]:
        """``{option name: value}``: the ``options`` object of a demo's ``config.json``."""
        return to_flat(self)


FIT_OPTIONS: tuple[Option, ...] = option_table(FitOptions)
DEMO_OPTIONS: dict[str, Option] = {o.name: o for o in option_table(DemoOptions)}
_BY_NAME = {o.name: o for o in FIT_OPTIONS}


def _model_options(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, (list, tuple)):
        return dict(parse_option(str(v)) for v in value)
    raise ConfigError(f"model_options must be an object or a list of KEY=VALUE, got {value!r}")


def _normalise(values: dict[str, Any]) -> dict[str, Any]:
    """List-valued options as lists: ``classes``/``attributes`` from comma-separated text,
    ``model_options`` from ``KEY=VALUE`` strings."""
    out = dict(values)
    if "model_options" in out:
        out["model_options"] = _model_options(out["model_options"])
    for name in ("classes", "attributes"):
        if isinstance(out.get(name), str):
            out[name] = csv_list(out[name])
    return out


def read_config_file(path: str) -> dict[str, Any]:
    """Options from a JSON or TOML file (``.toml``); keys may use ``-`` or ``_``; every
    value type-checked against :data:`FIT_OPTIONS` (ConfigError naming file, key, value)."""
    return _read_config_file(path, FIT_OPTIONS)


def resolve_options(config: dict[str, Any], flags: dict[str, Any]) -> FitOptions:
    """Defaults < config file < flags (``model_options`` merged key by key), checked for the
    options every fit needs: ``--model``, ``--out`` and one of ``--data`` / ``--pairs``."""
    merged = {**config, **flags}
    if "model_options" in config and "model_options" in flags:
        merged["model_options"] = {**_model_options(config["model_options"]),
                                   **_model_options(flags["model_options"])}
    opts = FitOptions.from_flat(merged)
    if not opts.model.spec:
        raise ConfigError("--model is required (as a flag or a config key)")
    if not opts.run.out:
        raise ConfigError("--out is required (as a flag or a config key)")
    data, pairs = opts.data.source, opts.data.pairs
    if pairs and data:
        raise ConfigError("give --data (classification) or --pairs (face verification), "
                          "not both")
    if not pairs and not data:
        raise ConfigError("--data is required (as a flag or a config key), or --pairs for "
                          "face verification")
    if pairs and not opts.data.image_root:
        raise ConfigError(f"--pairs {pairs} needs --image-root DIR (the folder with one "
                          "sub-folder per person)")
    return opts


_ALTERED = "; the file was altered or damaged"


def saved_fit_options(values: dict[str, Any], path: str) -> FitOptions:
    """The options of a fit run's ``config.json`` (``path``, for messages), checked like a
    config file: a run whose options were altered (``"evaluate": "no"``) is refused, not
    taken by truthiness."""
    return FitOptions.from_flat(check_options(values, _BY_NAME, path, _ALTERED))


def saved_demo_options(values: dict[str, Any], path: str) -> DemoOptions:
    """The options of a demo run's ``config.json``, checked the same way."""
    return from_flat(DemoOptions, check_options(values, DEMO_OPTIONS, path, _ALTERED))
