"""Many attributes from one API call: one perturbation per attribute (or one shared), fit together.

An attribute API returns every attribute per call: ``predict(images) -> (N, A)`` with
``P(attribute a)`` in column ``a`` (or 0/1 decisions with ``scores="labels"``).
``mode="shared"`` learns one delta for all attributes (the multilabel loss; every image
sent serves every attribute). ``mode="per_attribute"`` (as in the DFT paper) learns one
delta per attribute *in lockstep*: each step draws ONE minibatch, every attribute's
estimator proposes its candidates, and all of them go out in one ``predict`` call.
An image perturbed by attribute a's candidate is useful to attribute a only, so what
is shared, and counted in ``queries_saved_``, is: the clean baseline on validation, any
identical perturbed images (equal quantized deltas, e.g. attributes whose latent has
not moved), and in :meth:`evaluate` the clean "before" pass.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from blackbox_dft._version import __version__
from blackbox_dft.core.checks import check_choice, check_int, show
from blackbox_dft.core.estimators import SPSA, Estimator
from blackbox_dft.core.images import apply_deltas, check_images
from blackbox_dft.core.metrics import classification_metrics
from blackbox_dft.core.model import QueryCounter, model_name
from blackbox_dft.core.objectives import Objective
from blackbox_dft.core.optimizers import Optimizer, Schedule, make_optimizer
from blackbox_dft.core.perturbation import LowResolution, Perturbation, perturbation_from_config
from blackbox_dft.core.state import (
    FitState,
    commit_queries,
    keep_on_failure,
    load_resumable,
    read_result,
    resume_queries,
    write_npz_json,
)
from blackbox_dft.tasks.classification import (
    DataFineTuner,
    NotFittedError,
    _fingerprint,
    check_common_args,
    decode_params,
)

__all__ = ["MultiAttributeTuner", "MODES"]

MODES = ("per_attribute", "shared")


class _Sender:
    """Send (delta, images) jobs in one call, deduplicating equal quantized deltas."""

    def __init__(self, counter: QueryCounter) -> None:
        self.counter = counter
        self.requested = 0  # images the jobs asked for before deduplication

    def scores(self, x: np.ndarray, deltas: np.ndarray) -> np.ndarray:
        """Scores ``(M, n, A)`` of images ``x (n, H, W, 3)`` under deltas ``(M, H, W, 3)``."""
        q = np.rint(deltas).astype(np.int16)
        _, first, inv = np.unique(q.reshape(q.shape[0], -1), axis=0, return_index=True,
                                  return_inverse=True)
        raw = self.counter.predict(apply_deltas(x, deltas[first]))
        self.requested += deltas.shape[0] * x.shape[0]
        return raw.reshape(first.size, x.shape[0], -1)[inv.ravel()]


class MultiAttributeTuner:
    """Fit per-attribute (or shared) perturbations for a multi-attribute model by queries.

    model: ``predict(uint8 (N, H, W, 3)) -> (N, A)`` (one column per attribute).
    attributes: names of the A columns (default ``attr0..``); mode: ``"per_attribute"``
    or ``"shared"``; scores: ``"probabilities"``, ``"logits"`` or ``"labels"``.
    query_budget: images sent during ``fit`` for ALL attributes together (validation
    included). Other arguments as in :class:`~blackbox_dft.tasks.classification.DataFineTuner`.
    """

    def __init__(self, model: Any, attributes: list[str] | None = None, *,
                 mode: str = "per_attribute", epsilon: float = 8.0,
                 perturbation: Perturbation | None = None, estimator: Estimator | None = None,
                 optimizer: str | Optimizer = "adam", learning_rate: float | None = None,
                 batch_size: int = 32, query_budget: int = 10_000,
                 scores: str = "probabilities", validation_every: int = 10,
                 seed: int | None = 0) -> None:
        self.model, self.attributes, self.mode = model, attributes, mode
        self.epsilon, self.perturbation, self.estimator = epsilon, perturbation, estimator
        self.optimizer, self.learning_rate = optimizer, learning_rate
        self.batch_size, self.query_budget, self.scores = batch_size, query_budget, scores
        self.validation_every, self.seed = validation_every, seed

    def _setup(self, labels: Any, n: int) -> np.ndarray:
        check_choice("mode", self.mode, MODES)
        check_common_args(self)
        self.objective_ = Objective("binary", self.scores)  # one attribute = one binary task
        self.objective_.check_model(self.model)
        y = Objective("multilabel").check_labels(labels, n)
        names = self.attributes or [f"attr{a}" for a in range(y.shape[1])]
        if isinstance(names, str) or not all(isinstance(a, str) for a in names):
            raise ValueError(f"attributes must be a list of names (str), got {show(names)}")
        if len(names) != y.shape[1]:
            raise ValueError(f"{len(names)} attribute names for {y.shape[1]} label columns")
        self.attributes_ = list(names)
        return y

    def _column_loss(self, raw: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.objective_.loss(raw, y)

    def fit(self, images: np.ndarray, labels: Any,
            validation: tuple[np.ndarray, Any] | None = None, *,
            checkpoint: str | os.PathLike[str] | None = None, checkpoint_every: int = 10,
            resume: bool = False) -> MultiAttributeTuner:
        """Learn ``deltas_ (A, H, W, 3)`` from images ``(N, H, W, 3)`` and labels ``(N, A)``.

        checkpoint / checkpoint_every / resume: as in :meth:`DataFineTuner.fit` (both modes):
        a ``.npz`` written atomically every ``checkpoint_every`` steps and on a failure, and
        continued with ``resume=True`` to the result of an uninterrupted fit.
        """
        if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be an int >= 1, got {checkpoint_every!r}")
        x = check_images(images)
        y = self._setup(labels, x.shape[0])
        val = None
        if validation is not None:
            if not isinstance(validation, tuple) or len(validation) != 2:
                raise TypeError("validation must be a tuple (images, labels)")
            xv = check_images(validation[0], "validation images")
            val = (xv, Objective("multilabel").check_labels(validation[1], xv.shape[0],
                                                            "validation labels"))
        n_attr = y.shape[1]
        if self.mode == "shared":
            return self._fit_shared(x, y, val, n_attr, checkpoint, checkpoint_every, resume)
        eps = float(self.epsilon)
        pert = self.perturbation or LowResolution((8, 8))
        est = self.estimator or SPSA(directions=1, step=2.0)
        if est.per_image:
            raise ValueError(f"MultiAttributeTuner takes estimators with per_image=False, "
                             f"got {est!r}; one direction per image is for DataFineTuner")
        hw = (int(x.shape[1]), int(x.shape[2]))
        b = min(int(self.batch_size), x.shape[0])
        step_cost = n_attr * est.candidates_per_step * b
        val_cost = 0 if val is None else n_attr * val[0].shape[0]
        if self.query_budget < step_cost + val_cost:
            raise ValueError(f"query_budget={self.query_budget} is smaller than one lockstep "
                             f"step and a validation ({step_cost + val_cost} images)")
        lr = self.learning_rate if self.learning_rate is not None else eps / 8.0
        opt = make_optimizer(self.optimizer, Schedule(float(lr)))
        rng = np.random.default_rng(self.seed)
        sender = _Sender(QueryCounter(self.model, int(self.query_budget)))
        meta = {"kind": "per_attribute_checkpoint", "params": self.get_params(),
                "fingerprint": _fingerprint(x, y), "version": __version__}
        loaded = load_resumable(checkpoint, resume, meta, "images or labels")
        if loaded is not None:
            st = loaded
            rng.bit_generator.state = st.rng_state
            resume_queries(st, sender.counter)
        else:
            z0 = np.zeros((n_attr, *pert.latent_shape(hw)))
            # per-attribute optimizer states in one dict, keys prefixed "a<index>/"
            opt0 = {f"a{a}/{k}": v for a in range(n_attr) for k, v in opt.init(z0[a]).items()}
            st = FitState(z=z0, opt_state=opt0, rng_state=dict(rng.bit_generator.state),
                          best_z=z0.copy(), extra={"best_key": [[-np.inf]] * n_attr,
                                                   "best_step": [0] * n_attr, "separate": 0})

        def opt_of(state: dict[str, Any], a: int) -> dict[str, Any]:
            tag = f"a{a}/"
            return {k[len(tag):]: v for k, v in state.items() if k.startswith(tag)}

        def validate(zz: np.ndarray) -> list[dict[str, float]]:
            assert val is not None
            xv, yv = val
            s = sender.scores(xv, pert.to_deltas(zz, hw, eps))
            out = []
            for a in range(n_attr):
                pred = self.objective_.predict_labels(s[a][:, a])
                out.append({"val_accuracy": float(np.mean(pred == yv[:, a])),
                            "val_loss": float(self._column_loss(s[a][:, a], yv[:, a]).mean())})
            return out

        def save() -> None:
            if checkpoint is not None:
                st.save(checkpoint, meta)

        ex = st.extra
        try:
            with keep_on_failure(st, sender.counter, save):
                if val is not None and st.baseline is None:
                    base = validate(st.z)  # all-zero latents: one clean pass serves every attribute
                    ex["separate"] += val_cost
                    st.baseline = {"per_attribute": base}
                    ex["best_key"] = [[m["val_accuracy"], -m["val_loss"]] for m in base]
                    commit_queries(st, sender.counter)
                while not st.done and sender.counter.affords(step_cost + val_cost):
                    step = st.step
                    idx = rng.choice(x.shape[0], size=b, replace=False) if b < x.shape[0] \
                        else np.arange(x.shape[0])
                    c = est.step_at(step)
                    zs = st.z.copy()
                    dirs = [est._directions((), zs[a].shape, rng) for a in range(n_attr)]
                    cands = np.stack([est._candidates(zs[a], dirs[a], c) for a in range(n_attr)])
                    m = cands.shape[1]
                    s = sender.scores(x[idx], pert.to_deltas(cands.reshape(-1, *zs.shape[1:]), hw,
                                                             eps))
                    separate = ex["separate"] + step_cost
                    rec: dict[str, Any] = {"step": step + 1}
                    opt_state: dict[str, Any] = {}
                    for a in range(n_attr):
                        raw_a = s[a * m:(a + 1) * m, :, a].reshape(-1)
                        losses = self._column_loss(raw_a, np.tile(y[idx, a], m)).reshape(m, b)
                        g, loss = est._combine(losses.mean(1), dirs[a], c)
                        upd, new = opt.update(g.reshape(zs[a].shape), opt_of(st.opt_state, a))
                        opt_state.update({f"a{a}/{k}": v for k, v in new.items()})
                        zs[a] = pert.project(zs[a] - upd, eps)
                        rec[f"loss/{self.attributes_[a]}"] = loss
                    last = sender.counter.remaining < 2 * step_cost + val_cost
                    best_z = st.best_z.copy() if st.best_z is not None else zs.copy()
                    best_key, best_step = list(ex["best_key"]), list(ex["best_step"])
                    if val is not None and ((step + 1) % int(self.validation_every) == 0 or last):
                        ms = validate(zs)
                        separate += val_cost
                        for a, mm in enumerate(ms):
                            rec[f"val_accuracy/{self.attributes_[a]}"] = mm["val_accuracy"]
                            key = [mm["val_accuracy"], -mm["val_loss"]]
                            if key > best_key[a]:
                                best_z[a], best_key[a], best_step[a] = zs[a].copy(), key, step + 1
                    rec["queries"] = sender.counter.queries
                    # Commit the whole step at once.
                    st.z, st.opt_state, st.step, st.best_z = zs, opt_state, step + 1, best_z
                    ex.update(best_key=best_key, best_step=best_step, separate=separate)
                    commit_queries(st, sender.counter)
                    st.rng_state = dict(rng.bit_generator.state)
                    st.history.append(rec)
                    if st.step % checkpoint_every == 0:
                        save()
                if val is None:
                    st.best_z, ex["best_step"] = st.z.copy(), [st.step] * n_attr
                st.done = True
                save()
        finally:  # a failed fit keeps what it reached, as DataFineTuner: queries_ included
            st.best_z = st.z.copy() if st.best_z is None else st.best_z
            if st.baseline is not None:
                self.baseline_ = st.baseline["per_attribute"]
            self.perturbation_, self.image_shape_ = pert, hw
            self.latents_ = st.best_z.astype(np.float32)
            self.deltas_ = pert.to_deltas(self.latents_, hw, eps)
            self.queries_ = sender.counter.paid  # every image sent, failed steps' included
            self.queries_separate_ = int(ex["separate"]) + st.lost_queries
            self.queries_saved_ = self.queries_separate_ - self.queries_
            self.history_, self.n_steps_ = st.history, st.step
            self.best_step_ = list(ex["best_step"])
        return self

    def _fit_shared(self, x: np.ndarray, y: np.ndarray,
                    val: tuple[np.ndarray, np.ndarray] | None, n_attr: int,
                    checkpoint: str | os.PathLike[str] | None, checkpoint_every: int,
                    resume: bool) -> MultiAttributeTuner:
        """One delta for all attributes: the multilabel task of :class:`DataFineTuner`."""
        tuner = DataFineTuner(
            self.model, "multilabel", epsilon=self.epsilon, perturbation=self.perturbation,
            estimator=self.estimator, optimizer=self.optimizer,
            learning_rate=self.learning_rate, batch_size=self.batch_size,
            query_budget=int(self.query_budget), scores=self.scores,
            validation_every=self.validation_every, seed=self.seed, progress=False)
        try:
            tuner.fit(x, y, validation=val, checkpoint=checkpoint,
                      checkpoint_every=checkpoint_every, resume=resume)
        finally:  # a failed fit keeps what it reached (DataFineTuner sets it even then)
            if hasattr(tuner, "delta_"):
                self._take_shared(tuner, n_attr)
        return self

    def _take_shared(self, tuner: DataFineTuner, n_attr: int) -> None:
        self.tuner_ = tuner
        self.perturbation_, self.image_shape_ = tuner.perturbation_, tuner.image_shape_
        self.latents_ = np.repeat(tuner.latent_[None], n_attr, axis=0)
        self.deltas_ = np.repeat(tuner.delta_[None], n_attr, axis=0)
        self.queries_ = tuner.queries_
        # A separate run per attribute with the same budget each would have sent A times this.
        self.queries_separate_ = n_attr * tuner.queries_
        self.queries_saved_ = self.queries_separate_ - self.queries_
        self.history_, self.n_steps_ = tuner.history_, tuner.n_steps_
        self.best_step_ = [tuner.best_step_] * n_attr

    def transform(self, images: np.ndarray, attribute: int | str) -> np.ndarray:
        """Images ``(N, H, W, 3)`` perturbed by one attribute's delta (by index or name)."""
        if not hasattr(self, "deltas_"):
            raise NotFittedError("this MultiAttributeTuner is not fitted yet; call fit first")
        if isinstance(attribute, str):
            a = self.attributes_.index(check_choice("attribute", attribute, self.attributes_))
        else:
            a = check_int("attribute", attribute, 0)
            if a >= len(self.attributes_):
                raise ValueError(f"attribute must be an index 0..{len(self.attributes_) - 1} "
                                 f"or a name, got {a}")
        x = check_images(images)
        d = self.perturbation_.to_delta(self.latents_[a], x.shape[1:3], float(self.epsilon))
        return apply_deltas(x, d[None])

    def evaluate(self, images: np.ndarray, labels: Any) -> dict[str, Any]:
        """Per-attribute accuracy and balanced accuracy before / after on labelled images.

        Sends the clean images once (shared by every attribute) and, per distinct delta,
        the perturbed images: ``(1 + distinct deltas) x N`` queries instead of ``2 A N``.
        """
        if not hasattr(self, "deltas_"):
            raise NotFittedError("this MultiAttributeTuner is not fitted yet; call fit first")
        x = check_images(images)
        y = Objective("multilabel").check_labels(labels, x.shape[0])
        eps = float(self.epsilon)
        deltas = self.perturbation_.to_deltas(self.latents_, x.shape[1:3], eps)
        sender = _Sender(QueryCounter(self.model))
        s = sender.scores(x, np.concatenate([np.zeros_like(deltas[:1]), deltas]))
        per = {}
        for a, name in enumerate(self.attributes_):
            row = {}
            for tag, raw in (("before", s[0][:, a]), ("after", s[a + 1][:, a])):
                pred = self.objective_.predict_labels(raw)
                m = classification_metrics(y[:, a], pred, "binary", 2)
                row[f"accuracy_{tag}"] = m["accuracy"]
                row[f"balanced_accuracy_{tag}"] = m["balanced_accuracy"]
            per[name] = row
        n_attr = len(self.attributes_)
        return {"per_attribute": per, "mode": self.mode,
                "accuracy_before": float(np.mean([r["accuracy_before"] for r in per.values()])),
                "accuracy_after": float(np.mean([r["accuracy_after"] for r in per.values()])),
                "queries": sender.counter.queries, "queries_separate": 2 * n_attr * x.shape[0],
                "n_images": int(x.shape[0])}

    # -- parameters and files -------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """Constructor arguments except the model, JSON-able (components as configs, None
        where the default is used)."""
        return {
            "attributes": None if self.attributes is None else list(self.attributes),
            "mode": self.mode, "epsilon": float(self.epsilon),
            "perturbation": None if self.perturbation is None else self.perturbation.get_config(),
            "estimator": None if self.estimator is None else self.estimator.get_config(),
            "optimizer": self.optimizer if isinstance(self.optimizer, str)
            else self.optimizer.get_config(),
            "learning_rate": None if self.learning_rate is None else float(self.learning_rate),
            "batch_size": int(self.batch_size), "query_budget": int(self.query_budget),
            "scores": self.scores, "validation_every": int(self.validation_every),
            "seed": self.seed,
        }

    @classmethod
    def from_params(cls, model: Any, params: dict[str, Any]) -> MultiAttributeTuner:
        """Rebuild a tuner from :meth:`get_params` output."""
        p = decode_params(params)
        attributes = p.pop("attributes", None)
        return cls(model, attributes, **p)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fitted deltas ``(A, H, W, 3)`` and latents to ``path`` (``.npz`` arrays
        plus one JSON document: attributes, parameters, queries; no pickle)."""
        if not hasattr(self, "deltas_"):
            raise NotFittedError("this MultiAttributeTuner is not fitted yet; call fit first")
        write_npz_json(path, {"deltas": self.deltas_, "latents": self.latents_}, {
            "kind": "multiattr_result", "params": self.get_params(), "version": __version__,
            "attributes": self.attributes_, "perturbation": self.perturbation_.get_config(),
            "image_shape": list(self.image_shape_), "queries": int(self.queries_),
            "queries_separate": int(self.queries_separate_),
            "queries_saved": int(self.queries_saved_), "history": self.history_,
            "best_step": [int(b) for b in self.best_step_], "n_steps": int(self.n_steps_),
            "model": model_name(self.model)})

    @classmethod
    def load(cls, path: str | os.PathLike[str], model: Any) -> MultiAttributeTuner:
        """Load a result written by :meth:`save` and attach it to ``model``."""
        arrays, meta = read_result(path, "multiattr_result", "MultiAttributeTuner")
        tuner = cls.from_params(model, meta["params"])
        tuner.objective_ = Objective("binary", tuner.scores)
        tuner.attributes_ = [str(a) for a in meta["attributes"]]
        tuner.perturbation_ = perturbation_from_config(meta["perturbation"])
        tuner.image_shape_ = (int(meta["image_shape"][0]), int(meta["image_shape"][1]))
        tuner.latents_ = arrays["latents"].astype(np.float32)
        tuner.deltas_ = arrays["deltas"].astype(np.float32)
        tuner.queries_ = int(meta["queries"])
        tuner.queries_separate_ = int(meta["queries_separate"])
        tuner.queries_saved_ = int(meta["queries_saved"])
        tuner.history_ = meta["history"]
        tuner.best_step_ = [int(b) for b in meta["best_step"]]
        tuner.n_steps_ = int(meta["n_steps"])
        return tuner

    def __repr__(self) -> str:
        fitted = f", fitted: {self.queries_} queries" if hasattr(self, "deltas_") else ""
        return (f"MultiAttributeTuner({model_name(self.model)}, mode={self.mode!r}, "
                f"epsilon={self.epsilon}, query_budget={self.query_budget}{fitted})")
