"""Methods compared by ``query_efficiency.py``: ours, peers, controls and the limit.

Every method works on the same problem: a latent ``z`` of the library's perturbation
family, ``|delta| <= epsilon``, the library's loss (:class:`blackbox_dft.Objective`), and
one query per image sent to the model (training and validation images alike, counted
by :class:`blackbox_dft.core.model.QueryCounter`). Each run returns snapshots
``[(queries, best latent so far)]`` and its perturbation family, the best latent being
chosen on the validation split exactly as ``DataFineTuner`` does (accuracy, ties broken
by lower loss); the caller scores the snapshots on the held-out test split
(:func:`test_metrics`), which costs no budget.

Ours is ``DataFineTuner`` itself (:func:`run_ours`). The peers (nevergrad, pycma, random
search) and the limit (coordinate-wise central differences) are not in the library, so
they score latents here (:class:`Problem`) from the library's public pieces: the
perturbation family, ``apply_deltas``, the ``Objective`` and a ``QueryCounter``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from common import task_kind

from blackbox_dft import DataFineTuner, FullResolution, LowResolution
from blackbox_dft.core.estimators import SPSA, PerImage, estimator_from_config
from blackbox_dft.core.images import apply_delta, apply_deltas
from blackbox_dft.core.metrics import classification_metrics
from blackbox_dft.core.model import QueryCounter
from blackbox_dft.core.objectives import Objective
from blackbox_dft.core.optimizers import SGD, Adam, Schedule, SignSGD
from blackbox_dft.core.perturbation import Perturbation

Snapshots = list[tuple[int, np.ndarray]]
# What a runner returns: its snapshots and the perturbation family its latents belong to.
Run = tuple[Snapshots, Perturbation]
EPSILON = 8.0


def make_perturbation(latent: str) -> Perturbation:
    """``"full"``, ``"HxW"`` (bilinear, e.g. ``"8x8"``), ``"HxW-nearest"`` or
    ``"subspace-K"`` (:class:`RandomSubspace` of dimension K in a 16x16 nearest latent) or
    ``"lowrank-R"`` (:class:`LowRank`, rank R) -> a family."""
    if latent == "full":
        return FullResolution()
    if latent.startswith("subspace-"):
        return RandomSubspace(int(latent.removeprefix("subspace-")))
    if latent.startswith("lowrank-"):
        return LowRank(int(latent.removeprefix("lowrank-")))
    size, _, interpolation = latent.partition("-")
    h, w = (int(s) for s in size.split("x"))
    return LowResolution((h, w), interpolation or "linear")


class _OnGrid(Perturbation):
    """A latent mapped (``_grids``: ``(M, *latent)`` -> ``(M, side, side, 3)``) into the
    default 16x16x3 nearest latent, then perturbing as that latent (``self.grid``)."""

    grid: LowResolution

    def _grids(self, zs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def to_delta(self, z: np.ndarray, image_shape: tuple[int, int], epsilon: float) -> np.ndarray:
        return self.grid.to_delta(self._grids(z)[0], image_shape, epsilon)

    def perturb_paired(self, images: np.ndarray, zs: np.ndarray, epsilon: float,
                       out: np.ndarray | None = None) -> np.ndarray:
        return self.grid.perturb_paired(images, self._grids(zs), epsilon, out)


class RandomSubspace(_OnGrid):
    """A ``k``-dimensional latent mapped by a fixed random matrix into the default 16x16x3
    nearest latent (``grid = P z``), then as that latent: the intrinsic-dimension
    reparametrisation of ZIP and of Li et al. (2018), a variant tried here, not a library
    family. ``P`` is Gaussian with entries of variance 1 / k (seed 0, the same in every fit
    and at test time), so a Rademacher ``z`` gives grid values of RMS 1, as the default's
    probes; the latent is stored as ``(k // 3, 1, 3)``."""

    def __init__(self, k: int, side: int = 16) -> None:
        if k % 3:
            raise ValueError(f"k must be a multiple of 3, got {k}")
        self.k, self.grid = int(k), LowResolution((side, side), "nearest")
        rng = np.random.default_rng(0)
        self.matrix = (rng.standard_normal((side * side * 3, self.k)) / np.sqrt(self.k)
                       ).astype(np.float32)
        self.side = side

    def latent_shape(self, image_shape: tuple[int, int]) -> tuple[int, int, int]:
        return (self.k // 3, 1, 3)

    def _grids(self, zs: np.ndarray) -> np.ndarray:
        flat = np.asarray(zs, np.float32).reshape(-1, self.k)
        return (flat @ self.matrix.T).reshape(-1, self.side, self.side, 3)

    def get_config(self) -> dict[str, Any]:
        return {"type": "RandomSubspace", "k": self.k, "side": self.side}

    def __repr__(self) -> str:
        return f"RandomSubspace({self.k}, side={self.side})"


class LowRank(_OnGrid):
    """The default 16x16x3 nearest latent as a product of two learned factors per channel,
    ``grid_c = (A0_c + A_c) B_c^T`` with ``A, B`` 16 x ``rank``: the low-rank
    reparametrisation of ZIP (LoRA-style: ``A0`` is a fixed Gaussian of variance 1 / rank,
    seed 0, so that at ``z = 0`` the grid is 0 yet its gradient in ``B`` is not). A variant
    tried here, not a library family; the latent is stored as ``(32, rank, 3)``: A's rows,
    then B's."""

    def __init__(self, rank: int, side: int = 16) -> None:
        self.rank, self.side = int(rank), int(side)
        self.grid = LowResolution((side, side), "nearest")
        rng = np.random.default_rng(0)
        self.a0 = (rng.standard_normal((side, self.rank, 3)) / np.sqrt(self.rank)
                   ).astype(np.float32)

    def latent_shape(self, image_shape: tuple[int, int]) -> tuple[int, int, int]:
        return (2 * self.side, self.rank, 3)

    def _grids(self, zs: np.ndarray) -> np.ndarray:
        z = np.asarray(zs, np.float32).reshape(-1, 2 * self.side, self.rank, 3)
        a, b = self.a0 + z[:, :self.side], z[:, self.side:]
        return np.einsum("mirc,mjrc->mijc", a, b)

    def get_config(self) -> dict[str, Any]:
        return {"type": "LowRank", "rank": self.rank, "side": self.side}

    def __repr__(self) -> str:
        return f"LowRank({self.rank}, side={self.side})"


def test_metrics(task: Any, pert: Perturbation, z: np.ndarray) -> tuple[float, float]:
    """Held-out (accuracy, balanced accuracy) of latent ``z`` of ``pert``; not counted as
    queries (the test split is the benchmark's, not the method's)."""
    x, y = task.test
    delta = pert.to_delta(np.asarray(z, np.float32), (int(x.shape[1]), int(x.shape[2])), EPSILON)
    obj = Objective(task_kind(task), getattr(task, "scores", "probabilities"))
    pred = obj.predict_labels(task.model.predict(apply_delta(x, delta)))
    m = classification_metrics(y, pred, task_kind(task), int(y.max()) + 1)
    return float(m["accuracy"]), float(m["balanced_accuracy"])


def build_estimator(spec: list[Any]) -> Any:
    """``[kind, {directions, step, per_image...}]`` (the tables' form) -> an estimator, through
    the library's public config reader; ``["CoarseToFine", {"stages": [[until_step, side],
    ...], "per_image": true}]`` builds :class:`CoarseToFine` (a variant tried here, not a
    library estimator)."""
    kind, kwargs = spec
    if kind == "ClippedSPSA":
        kw = dict(kwargs)
        per_image = kw.pop("per_image", True)
        clipped = ClippedSPSA(**kw)
        return PerImage(clipped) if per_image else clipped
    if kind == "CoarseToFine":
        kw = dict(kwargs)
        per_image = kw.pop("per_image", True)
        est = CoarseToFine([tuple(s) for s in kw.pop("stages")], **kw)
        return _StepToBase(est) if per_image else est
    return estimator_from_config({"type": kind, **kwargs})


class CoarseToFine(SPSA):
    """SPSA whose Rademacher directions are constant on coarse blocks of the latent early on
    (a spatial prior, as Bandits-TD's tiling and coarse-to-fine latents): ``stages`` lists
    ``(until_step, side)``: before step ``until_step`` the directions are drawn on a
    ``side x side`` grid and repeated over the latent's blocks (side must divide the latent
    side); from the last stage's step on, on the whole latent. The estimate is then the
    gradient of the coarse parametrisation, spread over each block."""

    def __init__(self, stages: list[tuple[int, int]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stages, self._t = [(int(u), int(s)) for u, s in stages], 0

    def _ask(self, z: np.ndarray, rng: np.random.Generator, t: int,
             lead: tuple[int, ...]) -> Any:
        self._t = t
        return super()._ask(z, rng, t, lead)

    def _directions(self, lead: tuple[int, ...], shape: tuple[int, ...],
                    rng: np.random.Generator) -> np.ndarray:
        side = next((s for until, s in self.stages if self._t < until), None)
        if side is None or side >= shape[0]:
            return super()._directions(lead, shape, rng)
        h, w, c = shape
        if h % side or w % side:
            raise ValueError(f"side {side} does not divide the latent {h}x{w}")
        coarse = rng.integers(0, 2, size=(self.directions, *lead, side, side, c),
                              dtype=np.int8) * 2.0 - 1.0
        axis = len(lead) + 1
        return np.repeat(np.repeat(coarse, h // side, axis=axis), w // side, axis=axis + 1)


class ClippedSPSA(SPSA):
    """SPSA whose finite differences are clipped before they weight their directions (as
    ZIP's clipping of the zeroth-order estimate): each ``|f(z + c u) - f(z - c u)| / 2c``
    above ``clip`` times the step's median is cut to it (``clip`` 0: only its sign is kept,
    each direction weighted alike). A few images near the decision boundary then no longer
    set the step's whole direction."""

    def __init__(self, clip: float = 3.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.clip = float(clip)

    def _combine(self, losses: np.ndarray, u: np.ndarray, c: float) -> tuple[np.ndarray, float]:
        q = u.shape[0]
        diff = (losses[:q] - losses[q:]) / (2.0 * c)
        scale = float(np.median(np.abs(diff)))
        if self.clip == 0.0:
            diff = np.sign(diff) * scale
        elif scale > 0:
            diff = np.clip(diff, -self.clip * scale, self.clip * scale)
        g = np.tensordot(diff, u, axes=diff.ndim) / diff.size
        return g, float(losses.mean())


class _StepToBase(PerImage):
    """PerImage around :class:`CoarseToFine`, which needs the step when drawing."""

    def _ask(self, z: np.ndarray, rng: np.random.Generator, t: int,
             lead: tuple[int, ...]) -> Any:
        assert isinstance(self.base, CoarseToFine)
        self.base._t = t
        return super()._ask(z, rng, t, lead)


@dataclass
class Problem:
    """A task's splits, model and perturbation family behind one query counter."""

    task: Any
    latent: str
    budget: int | None
    seed: int
    pert: Perturbation = field(init=False)
    counter: QueryCounter = field(init=False)
    objective: Objective = field(init=False)

    def __post_init__(self) -> None:
        self.pert = make_perturbation(self.latent)
        self.counter = QueryCounter(self.task.model, self.budget)
        self.kind = task_kind(self.task)
        self.objective = Objective(self.kind, getattr(self.task, "scores", "probabilities"))
        self.n_classes = int(self.task.train[1].max()) + 1
        h, w = self.task.train[0].shape[1:3]
        self.shape = (int(h), int(w))
        self.dim_shape = self.pert.latent_shape(self.shape)

    def losses(self, zs: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
        """Mean training loss of each latent in ``zs (M, *latent)`` on rows ``idx``.

        Sent in chunks of at most ~2,000 images: a model adapter may hold every image
        of one call at its input resolution (BlazeFace: 128x128x3 float32 each).
        """
        n = self.task.train[0].shape[0] if idx is None else len(idx)
        per_call = max(1, 2000 // n)
        if zs.shape[0] > per_call:
            return np.concatenate([self.losses(zs[i:i + per_call], idx)
                                   for i in range(0, zs.shape[0], per_call)])
        x, y = self.task.train
        if idx is not None:
            x, y = x[idx], y[idx]
        deltas = self.pert.to_deltas(zs, self.shape, EPSILON)
        raw = self.counter.predict(apply_deltas(x, deltas))
        per = self.objective.loss(raw, np.concatenate([y] * zs.shape[0]))
        return per.reshape(zs.shape[0], x.shape[0]).mean(axis=1)

    def validation_score(self, z: np.ndarray) -> list[float]:
        """``[validation accuracy, -validation loss]`` of ``z`` (costs the validation set)."""
        x, y = self.task.val
        raw = self.counter.predict(apply_delta(x, self.pert.to_delta(z, self.shape, EPSILON)))
        acc = classification_metrics(y, self.objective.predict_labels(raw), self.kind,
                                     self.n_classes)
        return [acc["accuracy"], -float(self.objective.loss(raw, y).mean())]


class Selector:
    """Keeps the best latent by validation and its snapshots at each validation."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        z0 = np.zeros(problem.dim_shape)
        self.best_z, self.best = z0, problem.validation_score(z0)
        self.snapshots: Snapshots = [(problem.counter.queries, z0)]

    def offer(self, z: np.ndarray) -> None:
        score = self.problem.validation_score(np.asarray(z).reshape(self.problem.dim_shape))
        if score > self.best:
            self.best, self.best_z = score, np.asarray(z).reshape(self.problem.dim_shape).copy()
        self.snapshots.append((self.problem.counter.queries, self.best_z))


# -- ours --------------------------------------------------------------------------------------
def build_optimizer(name: str, lr: float | Schedule) -> Any:
    """One of adam, sgd, momentum, nesterov, sign_sgd as an optimizer object."""
    return {"adam": lambda: Adam(lr), "sgd": lambda: SGD(lr),
            "momentum": lambda: SGD(lr, momentum=0.9),
            "nesterov": lambda: SGD(lr, momentum=0.9, nesterov=True),
            "sign_sgd": lambda: SignSGD(lr, momentum=0.5)}[name]()


def tuner_kwargs(spec: dict[str, Any]) -> dict[str, Any]:
    """DataFineTuner keyword arguments from a spec (see :func:`run_ours`)."""
    spec = dict(spec)
    kwargs: dict[str, Any] = {}
    if "latent" in spec:
        kwargs["perturbation"] = make_perturbation(spec.pop("latent"))
    if "estimator" in spec:
        kwargs["estimator"] = build_estimator(spec.pop("estimator"))
    if "optimizer" in spec:
        lr = spec.pop("learning_rate", EPSILON / 8)
        if "lr_schedule" in spec:
            lr = Schedule(lr, kind=spec.pop("lr_schedule"), total=spec.pop("total_steps"))
        kwargs["optimizer"] = build_optimizer(spec.pop("optimizer"), lr)
    if isinstance(spec.get("learning_rate"), dict):  # a Schedule's config, e.g. its scale
        kwargs["learning_rate"] = Schedule(**spec.pop("learning_rate"))
    kwargs.update(spec)
    return kwargs


class _Averaged:
    """A fit's problem seen through iterate averaging (Polyak-Ruppert, as an EMA).

    The engine holds, validates and keeps as best the average ``zbar``; the steps and the
    gradient estimates use the raw iterate ``z``, kept here. ``zbar += (z - zbar) / (1 +
    share * t)`` after step ``t``: about the last ``share`` of the iterates so far. No
    checkpoint support (the raw iterate is not saved): a benchmark variant only.
    """

    def __init__(self, inner: Any, share: float) -> None:
        self.inner, self.share = inner, float(share)
        self.raw: np.ndarray | None = None
        self.t = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def gradient(self, z: np.ndarray, *args: Any) -> Any:
        return self.inner.gradient(z if self.raw is None else self.raw, *args)

    def project(self, w: np.ndarray) -> np.ndarray:
        # the engine asks for project(zbar - step): recover the step, apply it to the raw one
        zbar = w if self.raw is None else self._zbar
        step = zbar - w if self.raw is not None else -w
        raw = np.zeros_like(w) if self.raw is None else self.raw
        self.raw = self.inner.project(raw - step)
        self.t += 1
        prev = np.zeros_like(self.raw) if self.t == 1 else self._zbar
        self._zbar = prev + (self.raw - prev) / (1.0 + self.share * self.t)
        return self._zbar


class AveragedTuner(DataFineTuner):
    """DataFineTuner whose validation (and result) is the averaged iterate (:class:`_Averaged`)."""

    average_share = 0.25

    def _fit_loop(self, problem: Any, *args: Any, **kwargs: Any) -> Any:
        return super()._fit_loop(_Averaged(problem, self.average_share), *args, **kwargs)


class _LossVariant(Objective):
    """The library's objective with another per-image training loss (benchmark variants):
    ``"prob"`` 1 - p_y (the expected 0-1 loss), ``"brier"`` (1 - p_y) ** 2, ``"capped-C"``
    the cross-entropy capped at C nats. Single-label tasks with scores only."""

    variant = "prob"

    def loss(self, raw: np.ndarray, labels: np.ndarray,
             weights: np.ndarray | None = None) -> np.ndarray:
        p = self.probabilities(raw)
        py = p[np.arange(p.shape[0]), labels]
        if self.variant == "prob":
            out = 1.0 - py
        elif self.variant == "brier":
            out = (1.0 - py) ** 2
        else:
            cap = float(self.variant.removeprefix("capped-"))
            out = np.minimum(-np.log(np.clip(py, 1e-12, 1.0)), cap)
        return out * weights[labels] if weights is not None else out


def loss_tuner(base: type, variant: str) -> type:
    """A subclass of tuner class ``base`` whose objective's loss is ``variant``."""
    obj = type("Loss", (_LossVariant,), {"variant": variant})

    def _components(self: Any) -> Any:
        objective, pert, est = base._components(self)
        objective.__class__ = obj
        return objective, pert, est

    return type(f"{base.__name__}Loss", (base,), {"_components": _components})


def tuner_class(spec: dict[str, Any]) -> tuple[type, dict[str, Any]]:
    """The tuner class a spec asks for (DataFineTuner, or a variant of it for the spec keys
    ``average``: :class:`AveragedTuner`'s share, and ``loss``: :func:`loss_tuner`'s
    variant) and the rest of the spec (for :func:`tuner_kwargs`)."""
    spec = dict(spec)
    share, loss = spec.pop("average", None), spec.pop("loss", None)
    cls: type = DataFineTuner
    if share is not None:
        cls = type("AveragedTuner", (AveragedTuner,), {"average_share": float(share)})
    if loss is not None:
        cls = loss_tuner(cls, str(loss))
    return cls, spec


def run_ours(task: Any, seed: int, budget: int, spec: dict[str, Any]) -> Run:
    """DataFineTuner with ``spec`` overrides (empty spec: the library defaults).

    spec: DataFineTuner keyword arguments, except ``latent`` (a :func:`make_perturbation`
    name), ``estimator`` (``[kind, kwargs]``), ``optimizer`` (a :func:`build_optimizer`
    name, with ``learning_rate`` and optionally ``lr_schedule`` and ``total_steps``) and a
    ``learning_rate`` given as a dict (a :class:`Schedule`'s config: ``init``, ``kind``,
    ``scale``...), ``average`` and ``loss`` (:func:`tuner_class`).
    """
    cls, rest = tuner_class(spec)
    kwargs = tuner_kwargs(rest)
    snaps: Snapshots = []

    def record(rec: dict[str, Any], state: Any) -> bool:
        if "val_accuracy" in rec or not snaps:
            snaps.append((int(state.queries), np.array(state.best_z, copy=True)))
        return False

    kwargs.setdefault("scores", getattr(task, "scores", "probabilities"))
    tuner = cls(task.model, task_kind(task), epsilon=EPSILON, query_budget=budget,
                seed=seed, progress=False, **kwargs)
    tuner.fit(task.train[0], task.train[1], validation=task.val, callback=record)
    snaps.append((int(tuner.queries_), np.array(tuner.latent_, dtype=np.float64)))
    return snaps, tuner.perturbation_


# -- peers -------------------------------------------------------------------------------------
def run_peer(task: Any, seed: int, budget: int, spec: dict[str, Any]) -> Run:
    """A peer optimizer, ask/tell on the same loss; validation selection every ``period``.

    spec: ``peer`` (nevergrad name, ``"cma"`` or ``"random"``), ``latent``, ``batch``
    (training images per evaluation; all 100 by default, a deterministic loss) and
    ``sigma`` (initial mutation scale in grey levels).
    """
    prob = Problem(task, spec.get("latent", "8x8"), budget, seed)
    rng = np.random.default_rng(seed)
    n = task.train[0].shape[0]
    batch = min(int(spec.get("batch", n)), n)
    period = int(spec.get("period", 640))
    val_cost = task.val[0].shape[0]
    d = int(np.prod(prob.dim_shape))
    sigma = float(spec.get("sigma", EPSILON / 4))
    sel = Selector(prob)
    n_evals = (budget - 2 * val_cost) // batch
    ask, tell, recommend = _peer_interface(spec["peer"], d, sigma, n_evals, seed, rng)
    since = 0
    while prob.counter.remaining >= batch + val_cost:
        x = np.clip(ask(), -EPSILON, EPSILON)
        idx = rng.choice(n, size=batch, replace=False) if batch < n else None
        loss = float(prob.losses(x.reshape(1, *prob.dim_shape), idx)[0])
        tell(loss)
        since += batch
        if since >= period or prob.counter.remaining < 2 * batch + val_cost:
            sel.offer(np.clip(recommend(), -EPSILON, EPSILON))
            since = 0
    return sel.snapshots, prob.pert


def _peer_interface(name: str, d: int, sigma: float, n_evals: int, seed: int,
                    rng: np.random.Generator) -> tuple[Any, Any, Any]:
    """``(ask() -> x, tell(loss), recommend() -> x)`` closures around one peer."""
    if name == "random":
        best: dict[str, Any] = {"x": np.zeros(d), "loss": np.inf, "cur": None}

        def ask_r() -> np.ndarray:
            best["cur"] = rng.uniform(-EPSILON, EPSILON, size=d)
            return best["cur"]

        def tell_r(loss: float) -> None:
            if loss < best["loss"]:
                best["x"], best["loss"] = best["cur"], loss

        return ask_r, tell_r, lambda: best["x"]
    if name == "cma":
        import cma
        es = cma.CMAEvolutionStrategy(np.zeros(d), sigma, {
            "bounds": [-EPSILON, EPSILON], "CMA_diagonal": True, "seed": seed + 1,
            "verbose": -9, "maxfevals": max(n_evals, 1)})
        pending: list[np.ndarray] = []
        told: list[tuple[np.ndarray, float]] = []

        def ask_c() -> np.ndarray:
            if not pending:
                pending.extend(es.ask())
            return np.asarray(pending[0])

        def tell_c(loss: float) -> None:
            told.append((pending.pop(0), loss))
            if not pending:
                es.tell([t[0] for t in told], [t[1] for t in told])
                told.clear()

        return ask_c, tell_c, lambda: np.asarray(es.result.xfavorite)
    import nevergrad as ng
    param = ng.p.Array(init=np.zeros(d)).set_bounds(-EPSILON, EPSILON).set_mutation(sigma=sigma)
    param.random_state = np.random.RandomState(seed)
    opt = ng.optimizers.registry[name](parametrization=param, budget=max(n_evals, 1))
    cur: dict[str, Any] = {}

    def ask_n() -> np.ndarray:
        cur["c"] = opt.ask()
        return np.asarray(cur["c"].value)

    def tell_n(loss: float) -> None:
        opt.tell(cur["c"], loss)

    return ask_n, tell_n, lambda: np.asarray(opt.provide_recommendation().value)


# -- the limit ---------------------------------------------------------------------------------
def run_limit(task: Any, seed: int, budget: int, spec: dict[str, Any]) -> Run:
    """Near-exact gradient: coordinate-wise central differences on the whole training set.

    Each step costs ``2 d n_train`` queries (no budget cap: ``budget`` is ignored);
    Adam steps of ``lr`` grey levels, ``steps`` of them, validation after each.
    """
    prob = Problem(task, spec.get("latent", "8x8"), None, seed)
    c, lr, steps = float(spec.get("fd_step", 2.0)), float(spec.get("lr", 2.0)), spec["steps"]
    d = int(np.prod(prob.dim_shape))
    eye = np.eye(d).reshape(d, *prob.dim_shape)
    opt = Adam(lr)
    z = np.zeros(prob.dim_shape)
    state = opt.init(z)
    sel = Selector(prob)
    for _ in range(int(steps)):
        losses = prob.losses(np.concatenate([z + c * eye, z - c * eye]))
        g = ((losses[:d] - losses[d:]) / (2 * c)).reshape(prob.dim_shape)
        step, state = opt.update(g, state)
        z = prob.pert.project(z - step, EPSILON)
        sel.offer(z)
    return sel.snapshots, prob.pert


# -- controls (no optimization) ----------------------------------------------------------------
def random_latents(task: Any, latent: str, draws: int, seed: int) -> list[np.ndarray]:
    """``draws`` random latents with entries ``+-epsilon`` (the corners of the budget box)."""
    h, w = task.train[0].shape[1:3]
    shape = make_perturbation(latent).latent_shape((int(h), int(w)))
    rng = np.random.default_rng([seed, 7])
    return [EPSILON * (2.0 * rng.integers(0, 2, size=shape) - 1.0) for _ in range(draws)]


def best_constant_offset(task: Any) -> tuple[np.ndarray, int]:
    """The grey offset in ``-eps..eps`` (whole levels) with the lowest training loss.

    Returns the 1x1x3 latent and the queries spent choosing it (all training images
    for every offset).
    """
    prob = Problem(task, "1x1", None, 0)
    offsets = np.arange(-EPSILON, EPSILON + 1)
    zs = np.stack([np.full(prob.dim_shape, o) for o in offsets])
    losses = prob.losses(zs)
    return zs[int(np.argmin(losses))], prob.counter.queries


RUNNERS = {"ours": run_ours, "peer": run_peer, "limit": run_limit}
