"""Options of ``blackbox-dft fit``: one table for flags, config files and the saved config.

Every option has one name (``epsilon``, ``batch_size``, ...) used as the flag
(``--batch-size``), as the key of a ``--config`` file (JSON or TOML) and in the run's
``config.json``. Precedence: defaults < config file < flags. A default of None
means "the library's default" (not passed to :class:`DataFineTuner`).
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from blackbox_dft.cli.config import ConfigError, Option, check_options, flag_type
from blackbox_dft.cli.config import csv_list as _csv
from blackbox_dft.cli.config import read_config_file as _read_config_file
from blackbox_dft.core.estimators import NES, SPSA, PerImage, RandomDirections
from blackbox_dft.core.objectives import SCORES
from blackbox_dft.core.perturbation import FullResolution, LowResolution

__all__ = ["Option", "FIT_OPTIONS", "add_fit_options", "read_config_file", "resolve_options",
           "tuner_kwargs", "multiattr_kwargs", "verification_kwargs", "check_mode_options",
           "ConfigError", "DEMO_OPTIONS", "check_saved_options"]


FIT_OPTIONS: tuple[Option, ...] = (
    # model
    Option("model", None, "model spec: standin:NAME, a model file, an http(s) URL or "
           "python:module:function"),
    Option("preset", None, "wire format of an HTTP model (json, oip, tfserving, torchserve, "
           "facepp, gcv, clarifai; facepp_compare: a face-compare API for --pairs)"),
    Option("api_key_env", None, "environment variable that holds the API key"),
    Option("api_secret_env", None, "environment variable that holds the API secret"),
    Option("model_options", {}, "adapter option KEY=VALUE (JSON value), repeatable",
           flag="list"),
    Option("cost_per_1000", None, "price of 1000 images sent: shows money spent and projected",
           float, check="nonnegative"),
    # data
    Option("data", None, "dataset: ImageFolder, .csv, list_attr_celeba.txt or .npz "
           "(or --pairs for face verification)"),
    Option("size", None, "image size N or HxW (resize or crop to it)", accepts=(int,)),
    Option("size_mode", "resize", "how --size is reached", choices=("resize", "crop")),
    Option("skip_bad", False, "skip unreadable images instead of stopping", flag="bool"),
    Option("max_image_pixels", None, "refuse images whose header claims more pixels, before "
           "decoding them (default 50000000)", int),
    Option("classes", None, "class names in the model's output order, comma-separated", _csv),
    Option("attributes", None, "attribute columns to use (CSV, CelebA), comma-separated", _csv),
    Option("image_root", None, "folder that CSV / CelebA image paths are relative to (with "
           "--pairs: the LFW folder, one sub-folder per person)"),
    Option("limit", None, "use a seeded random subset of this many images", int,
           check="count"),
    Option("shift", None, "apply a domain shift to the data first (e.g. blur:sigma=1)"),
    Option("val_fraction", 0.2, "validation fraction when the data has no split", float,
           check="fraction"),
    Option("test_fraction", 0.2, "test fraction when the data has no split", float,
           check="fraction"),
    Option("attribute_mode", "shared", "multilabel data (CSV attribute columns, CelebA list): "
           "'shared' fits one perturbation for all attributes (task multilabel); "
           "'per_attribute' fits one perturbation per attribute, the attributes' queries sent "
           "together in one call (report.json: per-attribute accuracy, queries saved)",
           choices=("shared", "per_attribute")),
    Option("pairs", None, "face verification instead of classification: an LFW pairs.txt "
           "('name n1 n2' same, 'name1 n1 name2 n2' different; images "
           "<image-root>/<name>/<name>_<n:04d>.jpg); needs --image-root and an embedding model "
           "(e.g. standin:hog-embedding); replaces --data"),
    Option("far", None, "face verification: false accept rate of the reported TAR (default "
           "0.1)", float, check="probability"),
    Option("threshold", None, "face verification: the vendor's fixed match threshold on the "
           "cosine similarity (default: re-chosen on the validation pairs)", float,
           check="cosine"),
    # objective and optimisation
    Option("task", None, "objective: multiclass, binary or multilabel (default: from the data)",
           choices=("multiclass", "binary", "multilabel")),
    Option("scores", None, "what the model returns", choices=SCORES),
    Option("label_map", None, "task class of each model output, comma-separated ('-': none)",
           accepts=(list,)),
    Option("class_weight", None, "'balanced' or a JSON object {class: weight}",
           accepts=(dict,)),
    Option("epsilon", None, "L-inf budget of the perturbation in grey levels (default 8)",
           float, check="positive"),
    Option("budget", None, "query budget of the fit: images (10000) or money ($12.50)",
           accepts=(int,), check="count"),
    Option("perturbation", None, "latent grid HxW (e.g. 8x8, optionally :cubic) or 'full'",
           accepts=(int,)),
    Option("estimator", None, "gradient estimator", choices=("spsa", "nes", "rd")),
    Option("directions", None, "random directions per step", int, check="count"),
    Option("per_image", None, "one random direction per image of the minibatch (the default "
           "of classification fits; --no-per-image: one direction shared by the minibatch)",
           flag="bool"),
    Option("fd_step", None, "finite-difference step in grey levels", float, check="positive"),
    Option("fd_step_decay", None, "decay exponent of the finite-difference step", float,
           check="nonnegative"),
    Option("optimizer", None, "optimizer",
           choices=("adam", "sgd", "momentum", "nesterov", "sign_sgd")),
    Option("learning_rate", None, "learning rate in grey levels per step", float,
           check="positive"),
    Option("lr_schedule", None, "learning-rate schedule",
           choices=("constant", "cosine", "inverse_sqrt", "exponential")),
    Option("batch_size", None, "images per minibatch", int, check="count"),
    Option("selection", None, "validation metric that picks the kept delta",
           choices=("accuracy", "balanced_accuracy", "loss")),
    Option("validation_every", None, "steps between validation checks", int, check="count"),
    Option("energy_penalty", None, "weight of an exact |z|^2 penalty: smaller perturbation "
           "(higher PSNR) at some cost in accuracy (default 0)", float, check="nonnegative"),
    Option("seed", 0, "seed of the split and of the fit", int, check="seed"),
    # run
    Option("checkpoint_every", 10, "steps between checkpoints (>= 1)", int, check="count"),
    Option("cache", True, "on-disk query cache", flag="bool"),
    Option("cache_path", None, "cache file (default: cache.sqlite in the run folder)"),
    Option("evaluate", True, "evaluate on the test split at the end (2 x test images)",
           flag="bool"),
    Option("out", None, "run folder to create"),
)
_BY_NAME = {o.name: o for o in FIT_OPTIONS}
# What ``demo`` saves in config.json: its own task names, the rest as fit options.
DEMO_OPTIONS: dict[str, Option] = {
    **{n: _BY_NAME[n] for n in ("shift", "epsilon", "budget", "cost_per_1000", "seed", "out",
                                "cache", "checkpoint_every")},
    "task": Option("task", "face", "built-in task", choices=("face", "smiling")),
}
_TUNER_KEYS = ("epsilon", "batch_size", "scores", "selection", "validation_every",
               "optimizer", "learning_rate", "lr_schedule", "energy_penalty")


def add_fit_options(parser: argparse.ArgumentParser) -> None:
    """Add every fit option as a flag whose absence leaves no attribute (so configs apply)."""
    for o in FIT_OPTIONS:
        flag = "--" + o.name.replace("_", "-")
        if o.name == "model_options":
            parser.add_argument("--model-option", dest=o.name, action="append",
                                default=argparse.SUPPRESS, metavar="KEY=VALUE", help=o.help)
        elif o.flag == "bool":
            parser.add_argument(flag, dest=o.name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=o.help)
        else:
            parser.add_argument(flag, dest=o.name, default=argparse.SUPPRESS, choices=o.choices,
                                type=flag_type(o) if o.type is not _csv else str, help=o.help)


def read_config_file(path: str) -> dict[str, Any]:
    """Options from a JSON or TOML file (``.toml``); keys may use ``-`` or ``_``; every
    value type-checked against :data:`FIT_OPTIONS` (ConfigError naming file, key, value)."""
    return _read_config_file(path, FIT_OPTIONS)


def check_saved_options(cfg: dict[str, Any], path: str) -> dict[str, Any]:
    """The options of a run's ``config.json`` (``cfg``), checked like a config file: a run
    whose options were altered (``"evaluate": "no"``) is refused, not taken by truthiness."""
    table = DEMO_OPTIONS if cfg.get("command") == "demo" else _BY_NAME
    return check_options(cfg.get("options", {}), table, path,
                         "; the file was altered or damaged")


def _parse_model_options(value: Any) -> dict[str, Any]:
    from adapters.specs import parse_option  # no adapters import: parse_option is plain

    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, (list, tuple)):
        return dict(parse_option(str(v)) for v in value)
    raise ConfigError(f"model_options must be an object or a list of KEY=VALUE, got {value!r}")


def resolve_options(config: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    """Defaults < config file < flags; normalises list-valued options."""
    opts = {o.name: o.default for o in FIT_OPTIONS}
    opts.update(config)
    opts.update(flags)
    merged = _parse_model_options(config.get("model_options", {}))
    if "model_options" in flags:
        merged.update(_parse_model_options(flags["model_options"]))
    opts["model_options"] = merged
    for name in ("classes", "attributes"):
        if isinstance(opts[name], str):
            opts[name] = _csv(opts[name])
    for name in ("model", "out"):
        if not opts[name]:
            raise ConfigError(f"--{name} is required (as a flag or a config key)")
    if opts["pairs"] and opts["data"]:
        raise ConfigError("give --data (classification) or --pairs (face verification), "
                          "not both")
    if not opts["pairs"] and not opts["data"]:
        raise ConfigError("--data is required (as a flag or a config key), or --pairs for "
                          "face verification")
    if opts["pairs"] and not opts["image_root"]:
        raise ConfigError(f"--pairs {opts['pairs']} needs --image-root DIR (the folder with one "
                          "sub-folder per person)")
    return opts


# Options each fitting mode ignores: setting one is an error rather than a silent no-op.
_UNUSED = {
    "per_attribute": ("task", "label_map", "class_weight", "selection", "lr_schedule", "far",
                      "threshold"),
    "verification": ("task", "scores", "label_map", "class_weight", "selection", "lr_schedule",
                     "classes", "attributes", "limit", "skip_bad"),
}
_MODE_FLAG = {"per_attribute": "--attribute-mode per_attribute", "verification": "--pairs"}


def check_mode_options(opts: dict[str, Any], mode: str) -> None:
    """ConfigError naming the first option that ``mode`` (``per_attribute``,
    ``verification`` or ``classification``) would ignore."""
    if mode == "classification":
        for name in ("far", "threshold"):
            if opts.get(name) is not None:
                raise ConfigError(f"--{name} is a face-verification option; it needs --pairs")
        return
    for name in _UNUSED[mode]:
        if opts.get(name) not in (None, _BY_NAME[name].default):
            raise ConfigError(f"--{name.replace('_', '-')} does not apply to {_MODE_FLAG[mode]}")
    if mode == "verification" and opts.get("attribute_mode") != "shared":
        raise ConfigError(f"--attribute-mode {opts['attribute_mode']} does not apply to --pairs "
                          "(face verification)")


def _component_kwargs(opts: dict[str, Any], budget: int | None,
                      keys: tuple[str, ...] = ("epsilon", "batch_size", "validation_every",
                                               "optimizer", "learning_rate"),
                      per_image_default: bool = False) -> dict[str, Any]:
    """Arguments every tuner takes: the options in ``keys`` that were given, the seed, the
    budget, the perturbation and the estimator (library defaults kept otherwise; an
    estimator option given without ``--per-image`` keeps the tuner's per-image default)."""
    kw: dict[str, Any] = {k: opts[k] for k in keys if opts.get(k) is not None}
    kw["seed"] = opts["seed"]
    if budget is not None:
        kw["query_budget"] = budget
    if opts.get("perturbation") is not None:
        kw["perturbation"] = _perturbation(opts["perturbation"])
    est = _estimator(opts, per_image_default)
    if est is not None:
        kw["estimator"] = est
    return kw


def multiattr_kwargs(opts: dict[str, Any], budget: int | None,
                     attributes: list[str]) -> dict[str, Any]:
    """Keyword arguments of :class:`MultiAttributeTuner` (mode per_attribute)."""
    kw = _component_kwargs(opts, budget)
    if opts.get("scores") is not None:
        kw["scores"] = opts["scores"]
    return {"attributes": list(attributes), "mode": "per_attribute", **kw}


def verification_kwargs(opts: dict[str, Any], budget: int | None) -> dict[str, Any]:
    """Keyword arguments of :class:`VerificationTuner` (threshold chosen on validation
    unless ``--threshold`` fixes it)."""
    kw = _component_kwargs(opts, budget)
    t = opts.get("threshold")
    if t is not None and not -1.0 <= t <= 1.0:
        raise ConfigError(f"--threshold is a cosine similarity in [-1, 1], got {t:g}")
    for name in ("far", "threshold"):
        if opts.get(name) is not None:
            kw[name] = opts[name]
    return kw


def _estimator(opts: dict[str, Any], per_image_default: bool = False) -> Any:
    est_args = {k: opts[o] for k, o in (("directions", "directions"), ("step", "fd_step"),
                                        ("step_decay", "fd_step_decay"))
                if opts.get(o) is not None}
    per_image = opts.get("per_image")
    if opts.get("estimator") is None and not est_args and per_image is None:
        return None
    cls = {"spsa": SPSA, "nes": NES, "rd": RandomDirections}[opts.get("estimator") or "spsa"]
    est = cls(**est_args)
    return PerImage(est) if (per_image_default if per_image is None else per_image) else est


def _perturbation(text: str) -> Any:
    if text == "full":
        return FullResolution()
    m = re.fullmatch(r"(\d+)(?:x(\d+))?(?::(linear|cubic|nearest))?", str(text))
    if not m:
        raise ConfigError(f"--perturbation must be HxW[:linear|cubic|nearest] or 'full', "
                          f"got {text!r}")
    h = int(m.group(1))
    return LowResolution((h, int(m.group(2) or h)), m.group(3) or "linear")


def tuner_kwargs(opts: dict[str, Any], budget: int | None, multilabel: bool) -> dict[str, Any]:
    """Keyword arguments of :class:`DataFineTuner` from resolved options (library defaults kept)."""
    kw = _component_kwargs(opts, budget, _TUNER_KEYS, per_image_default=True)
    kw["task"] = opts["task"] or ("multilabel" if multilabel else "multiclass")
    kw["progress"] = False
    if opts.get("label_map") is not None:
        lm = opts["label_map"]
        items = lm if isinstance(lm, list) else _csv(lm)
        try:
            kw["label_map"] = [None if str(v) in ("-", "None", "none", "") else int(v)
                               for v in items]
        except ValueError:
            raise ConfigError(f"--label-map must be class ids or '-', got {lm!r}") from None
    cw = opts.get("class_weight")
    if cw is not None:
        if isinstance(cw, str) and cw != "balanced":
            try:
                cw = json.loads(cw)
            except json.JSONDecodeError:
                raise ConfigError(
                    f"--class-weight must be 'balanced' or JSON, got {cw!r}") from None
        if isinstance(cw, dict):
            cw = {int(k): float(v) for k, v in cw.items()}
        kw["class_weight"] = cw
    return kw
