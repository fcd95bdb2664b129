"""The registry of run kinds: classification, per-attribute and verification (see
:mod:`.base`). A run's ``config.json`` names its kind; a fit's options choose it."""

from __future__ import annotations

from typing import Any

from blackbox_dft.cli.kinds.attributes import PER_ATTRIBUTE
from blackbox_dft.cli.kinds.base import Job, RunKind, StepCallback, Transformer
from blackbox_dft.cli.kinds.classification import CLASSIFICATION
from blackbox_dft.cli.kinds.verification import VERIFICATION
from blackbox_dft.cli.options import FitOptions
from blackbox_dft.cli.runs import RunError

__all__ = ["KINDS", "CLASSIFICATION", "PER_ATTRIBUTE", "VERIFICATION", "kind_for",
           "kind_named", "Job", "RunKind", "StepCallback", "Transformer"]

KINDS: dict[str, RunKind[Any]] = {k.name: k for k in (CLASSIFICATION, PER_ATTRIBUTE,
                                                      VERIFICATION)}


def kind_for(opts: FitOptions) -> RunKind[Any]:
    """The kind a fit's options ask for: ``--pairs`` verification, ``--attribute-mode
    per_attribute`` per attribute, else classification."""
    if opts.data.pairs:
        return VERIFICATION
    if opts.data.attribute_mode == PER_ATTRIBUTE.name:
        return PER_ATTRIBUTE
    return CLASSIFICATION


def kind_named(name: object, path: str) -> RunKind[Any]:
    """The kind a run's ``config.json`` (``path``) names (absent: classification, as in
    demo runs); RunError for a kind this version does not know."""
    if name is None:
        return CLASSIFICATION
    kind = KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise RunError(f"{path}: kind is {name!r}, must be one of {', '.join(KINDS)}; the file "
                       "was altered or damaged")
    return kind
