"""A run kind: everything the commands need to know about one kind of fit, in one object.

The commands (``fit``, ``resume``, ``evaluate``, ``apply``, ``info``) are written once over
:class:`RunKind`; each kind (classification, per-attribute, verification) says which tuner
it fits, how its job is built from the options, which file holds its result (``delta.npz``
or ``deltas.npz``), what its evaluation costs, what its report, figure and summary say, and
which commands it cannot serve (one line naming the run and where to look instead).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import numpy as np

from blackbox_dft.cli.config import ConfigError
from blackbox_dft.cli.jobs import Split
from blackbox_dft.cli.meter import Meter
from blackbox_dft.cli.options import FitOptions, RunOptions
from blackbox_dft.cli.runs import RunError, RunFolder
from blackbox_dft.core.model import Model
from blackbox_dft.core.state import FitState
from blackbox_dft.data.datasets import Dataset
from blackbox_dft.tasks.base import Tuner

__all__ = ["Job", "RunKind", "Transformer", "StepCallback"]

T = TypeVar("T", bound=Tuner)
StepCallback = Callable[[dict[str, Any], FitState], bool]


class Transformer(Protocol):
    """What ``apply`` needs of a fitted result: uint8 images in, perturbed uint8 images out."""

    def transform(self, images: np.ndarray) -> np.ndarray: ...


@dataclass
class Job:
    """Everything one fit needs: its kind, the model, the splits and the tuner's parameters.

    command: ``"fit"`` or ``"demo"`` (what config.json and report.json say); key: the
    model's secret-free cache key; train / val / test: ``(images, labels)`` (pairs for
    verification); classes: class, attribute or outcome names; params: the tuner's
    ``get_config()``; test_clean: the test images before the shift (demo runs).
    """

    kind: RunKind[Any]
    command: str
    model: Model
    key: str
    train: Split
    val: Split | None
    test: Split | None
    classes: list[str]
    params: dict[str, Any]
    title: str
    run: RunOptions = field(default_factory=RunOptions)
    cost_per_1000: float | None = None
    test_clean: np.ndarray | None = None

    @property
    def evaluates(self) -> bool:
        """Whether the fit ends with the test evaluation."""
        return bool(self.run.evaluate) and self.test is not None

    @property
    def n_test(self) -> int:
        """Test images (pairs for verification)."""
        return 0 if self.test is None else len(self.test[1])

    def eval_cost(self) -> int:
        """Images the evaluation after the fit asks for (the unshifted test images of a
        demo included)."""
        cost = self.kind.eval_cost(self.n_test, len(self.classes)) if self.evaluates else 0
        return cost + (0 if self.test_clean is None else len(self.test_clean))


class RunKind(ABC, Generic[T]):
    """One kind of run (see the module docstring); subclasses set the class attributes."""

    name: ClassVar[str]  # config.json / report.json "kind"
    tuner_class: type[T]
    result_name: ClassVar[str]  # the fitted result in the run folder
    has_figure: ClassVar[bool] = True  # writes report.png
    how: ClassVar[str] = ""  # how a run of this kind was fitted, for refusals
    flag: ClassVar[str] = ""  # the flag that asks for this kind
    unused: ClassVar[tuple[str, ...]] = ()  # options this kind ignores: setting one is an error

    # -- building ------------------------------------------------------------------------
    def check_options(self, opts: FitOptions) -> None:
        """ConfigError naming the first option this kind would ignore."""
        values = opts.flat()
        for name in self.unused:
            if values[name] not in (None, _DEFAULTS[name]):
                raise ConfigError(f"--{name.replace('_', '-')} does not apply to {self.flag}")

    @abstractmethod
    def build_job(self, opts: FitOptions) -> Job:
        """Load the data, build the model and the tuner's parameters (bad input fails here,
        before any run folder exists)."""

    def make_tuner(self, params: dict[str, Any]) -> T:
        """An unfitted tuner from saved parameters (its model is attached later)."""
        return self.tuner_class.from_config(None, params)

    def eval_cost(self, n_test: int, n_outputs: int) -> int:
        """Images one evaluation of ``n_test`` test images (or pairs) asks for: before and
        after the perturbation."""
        return 2 * n_test

    # -- fitting -------------------------------------------------------------------------
    @abstractmethod
    def fit(self, tuner: T, job: Job, checkpoint: str, on_step: StepCallback) -> None:
        """Fit (or continue from ``checkpoint``) ``tuner`` on the job's data."""

    @abstractmethod
    def test_results(self, tuner: T, job: Job, meter: Meter) -> dict[str, Any]:
        """The report's test fields after the fit: ``{"test": metrics or None, ...}``."""

    @abstractmethod
    def report_fields(self, tuner: T, job: Job) -> dict[str, Any]:
        """The report's ``fit`` and ``max_abs_delta`` fields (and the kind's own)."""

    def figure(self, tuner: T, job: Job, report: dict[str, Any]) -> np.ndarray | None:
        """``report.png`` as RGB uint8 (None: this kind draws none)."""
        return None

    # -- reading a run -------------------------------------------------------------------
    def result_path(self, run: RunFolder) -> str:
        """The fitted result's file in ``run``."""
        return run.file(self.result_name)

    def files(self, run: RunFolder) -> list[str]:
        """The files a finished fit wrote that the summary names."""
        return [self.result_path(run), run.report_json] + (
            [run.report_png] if self.has_figure else [])

    def check_fitted(self, run: RunFolder) -> None:
        """RunError when the run has no result yet (its fit did not finish)."""
        if not os.path.exists(self.result_path(run)):
            raise RunError(f"run {run.path} has no {self.result_name} yet (the fit did not "
                           f"finish); continue it with 'blackbox-dft resume {run.path}'")

    def refusal(self, what: str, run: RunFolder, hint: str | None = None) -> RunError:
        """The one-line error of a subcommand ``what`` that cannot handle this kind."""
        hint = hint or (f"its test metrics are in {run.report_json} "
                        f"(see 'blackbox-dft info {run.path}')")
        return RunError(f"{what} does not handle run {run.path} ({self.how}); {hint}")

    def check_evaluable(self, run: RunFolder) -> None:
        """Before ``evaluate`` loads anything: a run it can evaluate, with a result."""
        self.check_fitted(run)

    @abstractmethod
    def evaluate(self, run: RunFolder, ds: Dataset, meter: Meter, where: str
                 ) -> tuple[dict[str, Any], list[str]]:
        """``evaluate``: metrics of the run's result on ``ds`` (queries through ``meter``;
        ``where``: the data, split and size, for the lines) and the lines that show them."""

    @abstractmethod
    def transformer(self, run: RunFolder) -> Transformer:
        """``apply``: the fitted result that perturbs images (no model needed)."""

    @abstractmethod
    def summary(self, report: dict[str, Any]) -> list[str]:
        """The end-of-fit lines on stdout about results and queries."""

    def progress_lines(self, state: FitState) -> list[str]:
        """``info``: lines about a fit's progress from its checkpoint state."""
        return []

    @abstractmethod
    def result_lines(self, report: dict[str, Any]) -> list[str]:
        """``info``: lines about a finished fit's results."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


_DEFAULTS = FitOptions().flat()
