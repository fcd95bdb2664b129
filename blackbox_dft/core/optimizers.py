"""First-order optimizers on estimated gradients, optax style, with explicit state.

Each optimizer is ``init(params) -> state`` / ``update(grad, state) -> (step, state)``
where ``state`` is a dict of numpy arrays and ints (saveable to ``.npz`` as is) and
the returned step is *subtracted* from the parameters. Learning rates are in the
latent's units (grey levels per step) and may follow a schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from blackbox_dft.core.checks import check_choice, check_int, check_number, show

__all__ = ["Schedule", "Optimizer", "SGD", "Adam", "SignSGD", "make_optimizer",
           "optimizer_from_config", "check_optimizer_name", "OPTIMIZER_NAMES"]

State = dict[str, Any]


class Schedule:
    """A learning-rate schedule: ``value(t)`` for step ``t`` (0-based).

    kind: ``"constant"``; ``"cosine"`` (from ``init`` to ``init * final_fraction``
    over ``total`` steps); ``"inverse_sqrt"`` (``init / sqrt(1 + t / scale)``);
    ``"exponential"`` (``init * rate ** t``).
    """

    KINDS = ("constant", "cosine", "inverse_sqrt", "exponential")

    def __init__(self, init: float, kind: str = "constant", total: int = 0,
                 final_fraction: float = 0.1, scale: float = 10.0, rate: float = 0.99) -> None:
        self.kind = check_choice("schedule kind", kind, self.KINDS)
        self.init = check_number("learning rate", init, 0.0, low_open=True,
                                 unit=" (grey levels per step)")
        self.total = check_int("schedule total", total, 0)
        self.final_fraction = check_number("final_fraction", final_fraction, 0.0, 1.0)
        # scale divides t and rate is raised to the power t: 0 or a rate > 1 would give a
        # ZeroDivisionError or a learning rate growing without bound.
        self.scale = check_number("scale", scale, 0.0, low_open=True)
        self.rate = check_number("rate", rate, 0.0, 1.0, low_open=True)

    def __call__(self, t: int) -> float:
        if self.kind == "constant":
            return self.init
        if self.kind == "cosine":
            frac = min(t / max(self.total, 1), 1.0)
            lo = self.init * self.final_fraction
            return lo + 0.5 * (self.init - lo) * (1.0 + np.cos(np.pi * frac))
        if self.kind == "inverse_sqrt":
            return self.init / np.sqrt(1.0 + t / self.scale)
        return self.init * self.rate**t

    def get_config(self) -> dict[str, Any]:
        return {"init": self.init, "kind": self.kind, "total": self.total,
                "final_fraction": self.final_fraction, "scale": self.scale, "rate": self.rate}

    def __repr__(self) -> str:
        return f"Schedule({self.init:g}, kind={self.kind!r})"


def _as_schedule(lr: float | Schedule) -> Schedule:
    return lr if isinstance(lr, Schedule) else Schedule(lr)


class Optimizer:
    """Base class: ``init`` / ``update`` with a dict state; subclasses implement ``_update``."""

    def __init__(self, learning_rate: float | Schedule = 1.0) -> None:
        self.learning_rate = _as_schedule(learning_rate)

    def init(self, params: np.ndarray) -> State:
        """Fresh state for parameters of ``params.shape``: zeros and a step count."""
        return {"count": 0, **{k: np.zeros_like(params, dtype=np.float64) for k in self._slots}}

    _slots: tuple[str, ...] = ()

    def update(self, grad: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """Return ``(step to subtract, new state)``; the input state is not modified."""
        grad = np.asarray(grad, dtype=np.float64)
        if not np.all(np.isfinite(grad)):
            raise ValueError("the gradient estimate contains NaN or inf")
        t = int(state["count"])
        lr = self.learning_rate(t)
        step, new = self._update(grad, state, lr, t)
        new["count"] = t + 1
        return step, new

    def _update(self, grad: np.ndarray, state: State, lr: float,
                t: int) -> tuple[np.ndarray, State]:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "learning_rate": self.learning_rate.get_config()}

    def __repr__(self) -> str:
        extra = {k: v for k, v in self.get_config().items() if k not in ("type", "learning_rate")}
        args = "".join(f", {k}={v!r}" for k, v in extra.items())
        return f"{type(self).__name__}(learning_rate={self.learning_rate!r}{args})"


class SGD(Optimizer):
    """SGD with optional (Nesterov) momentum: ``v = mu v + g``; step ``lr * v``
    (Nesterov: ``lr * (g + mu v)``). Momentum SPSA is BlackVIP's gradient-corrected SPSA."""

    _slots = ("velocity",)

    def __init__(self, learning_rate: float | Schedule = 1.0, momentum: float = 0.0,
                 nesterov: bool = False) -> None:
        super().__init__(learning_rate)
        self.momentum = check_number("momentum", momentum, 0.0, 1.0, high_open=True)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise ValueError(f"nesterov must be True or False, got {show(nesterov)}")
        self.nesterov = bool(nesterov)

    def _update(self, grad: np.ndarray, state: State, lr: float,
                t: int) -> tuple[np.ndarray, State]:
        v = self.momentum * state["velocity"] + grad
        d = grad + self.momentum * v if self.nesterov else v
        return lr * d, {"velocity": v}

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam (ZO-AdaMM when fed zeroth-order gradients): bias-corrected moments."""

    _slots = ("mu", "nu")

    def __init__(self, learning_rate: float | Schedule = 1.0, b1: float = 0.9,
                 b2: float = 0.999, eps: float = 1e-8) -> None:
        super().__init__(learning_rate)
        self.b1 = check_number("b1", b1, 0.0, 1.0, high_open=True)
        self.b2 = check_number("b2", b2, 0.0, 1.0, high_open=True)
        self.eps = check_number("eps", eps, 0.0, low_open=True)

    def _update(self, grad: np.ndarray, state: State, lr: float,
                t: int) -> tuple[np.ndarray, State]:
        mu = self.b1 * state["mu"] + (1.0 - self.b1) * grad
        nu = self.b2 * state["nu"] + (1.0 - self.b2) * grad * grad
        mu_hat = mu / (1.0 - self.b1 ** (t + 1))
        nu_hat = nu / (1.0 - self.b2 ** (t + 1))
        return lr * mu_hat / (np.sqrt(nu_hat) + self.eps), {"mu": mu, "nu": nu}

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "b1": self.b1, "b2": self.b2, "eps": self.eps}


class SignSGD(Optimizer):
    """Sign-SGD (ZO-signSGD): step ``lr * sign(m)`` with optional momentum ``m``."""

    _slots = ("velocity",)

    def __init__(self, learning_rate: float | Schedule = 1.0, momentum: float = 0.0) -> None:
        super().__init__(learning_rate)
        self.momentum = check_number("momentum", momentum, 0.0, 1.0, high_open=True)

    def _update(self, grad: np.ndarray, state: State, lr: float,
                t: int) -> tuple[np.ndarray, State]:
        v = self.momentum * state["velocity"] + (1.0 - self.momentum) * grad
        return lr * np.sign(v), {"velocity": v}

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "momentum": self.momentum}


_NAMED: dict[str, Callable[[float | Schedule], Optimizer]] = {
    "sgd": lambda lr: SGD(lr),
    "momentum": lambda lr: SGD(lr, momentum=0.9),
    "nesterov": lambda lr: SGD(lr, momentum=0.9, nesterov=True),
    "adam": lambda lr: Adam(lr),
    "sign_sgd": lambda lr: SignSGD(lr),
}
_CLASSES: dict[str, type[Optimizer]] = {"SGD": SGD, "Adam": Adam, "SignSGD": SignSGD}
OPTIMIZER_NAMES = tuple(sorted(_NAMED))


def check_optimizer_name(spec: Any) -> str:
    """``spec`` if it names an optimizer; else a one-line error (closest name, if any)."""
    if not isinstance(spec, str):
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZER_NAMES)} or an "
                        f"Optimizer, got {show(spec)} ({type(spec).__name__})")
    return check_choice("optimizer", spec, OPTIMIZER_NAMES)


def make_optimizer(spec: str | Optimizer, learning_rate: float | Schedule) -> Optimizer:
    """An optimizer from a name (``sgd``, ``momentum``, ``nesterov``, ``adam``, ``sign_sgd``)."""
    if isinstance(spec, Optimizer):
        return spec
    return _NAMED[check_optimizer_name(spec)](learning_rate)


def optimizer_from_config(config: dict[str, Any]) -> Optimizer:
    """Rebuild an optimizer from :meth:`Optimizer.get_config` output."""
    if not isinstance(config, dict) or not isinstance(config.get("learning_rate"), dict):
        raise ValueError(f"an optimizer config must be a dict with a learning_rate dict, "
                        f"got {show(config)}")
    config = dict(config)
    kind = check_choice("optimizer type", config.pop("type", None), sorted(_CLASSES))
    try:
        lr = Schedule(**config.pop("learning_rate"))
        return _CLASSES[kind](lr, **config)
    except TypeError as exc:  # an unknown key: the constructor names it
        raise ValueError(f"bad {kind} optimizer config: {exc}") from None
