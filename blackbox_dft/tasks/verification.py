"""Face verification: one shared perturbation that makes an embedding model verify better.

The model returns an embedding per image, ``predict(uint8 (N, H, W, 3)) -> (N, D)``; a pair
``(a, b)`` is declared *same* when the cosine similarity ``s`` of their embeddings is at
least a threshold ``t``. The perturbation is applied to BOTH images of a pair. The loss
per pair is a softplus on the signed margin, ``softplus(k (t - s) y') / k`` with
``y' = +1`` for same pairs and ``-1`` for different ones (``k``: ``sharpness``)
(``loss="margin"``, the default with a fixed threshold such as a vendor's), or,
threshold-free (the default when the threshold is re-chosen on validation,
``loss="dprime"``), minus the separation
``d' = (mean s_same - mean s_diff) / sqrt((var s_same + var s_diff) / 2)`` of the
minibatch: a shared delta can raise or lower every similarity at once (add a common vector
to every embedding), which moves pairs across a fixed threshold (the margin loss rewards
it) but not the separation a re-chosen threshold sees (d' does not reward it).
Pairs are int arrays ``(P, 3)``: ``(index a, index b, same in {0, 1})`` into an image
array. A minibatch of pairs sends each distinct image once per candidate.

Metrics: verification accuracy at a threshold, the threshold that maximises accuracy
(chosen on validation, then applied to test), TAR at a fixed FAR, ROC AUC.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from blackbox_dft._version import __version__
from blackbox_dft.core.checks import check_choice, check_number, show
from blackbox_dft.core.estimators import SPSA, Estimator
from blackbox_dft.core.images import apply_delta, apply_deltas, check_images, psnr
from blackbox_dft.core.metrics import ssim
from blackbox_dft.core.model import QueryCounter, model_name
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
    NotFittedError,
    _fingerprint,
    check_common_args,
    decode_params,
)

__all__ = ["VerificationTuner", "check_pairs", "cosine_similarities", "best_threshold",
           "verification_accuracy", "tar_at_far", "roc_auc", "verification_metrics"]


# -- metrics ---------------------------------------------------------------------------------
def verification_accuracy(sims: np.ndarray, same: np.ndarray, threshold: float) -> float:
    """Fraction of pairs decided right: same iff ``sims >= threshold``. sims, same: ``(P,)``."""
    return float(np.mean((sims >= threshold) == (same == 1)))


def best_threshold(sims: np.ndarray, same: np.ndarray) -> float:
    """The threshold maximising accuracy on these pairs (midpoint between sorted sims)."""
    s = np.sort(np.unique(sims))
    cands = np.concatenate([[s[0] - 1e-6], (s[:-1] + s[1:]) / 2.0, [s[-1] + 1e-6]])
    acc = [verification_accuracy(sims, same, float(t)) for t in cands]
    return float(cands[int(np.argmax(acc))])


def tar_at_far(sims: np.ndarray, same: np.ndarray, far: float = 0.1) -> float:
    """True accept rate at the threshold where at most ``far`` of different pairs pass."""
    neg = np.sort(sims[same == 0])[::-1]
    pos = sims[same == 1]
    if neg.size == 0 or pos.size == 0:
        return float("nan")
    k = int(np.floor(far * neg.size))  # number of false accepts allowed
    t = neg[k] if k < neg.size else -np.inf
    return float(np.mean(pos > t))


def roc_auc(sims: np.ndarray, same: np.ndarray) -> float:
    """Probability that a same pair scores above a different pair (ties count half)."""
    pos, neg = sims[same == 1], sims[same == 0]
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    diff = pos[:, None] - neg[None, :]
    return float(np.mean((diff > 0) + 0.5 * (diff == 0)))


def verification_metrics(sims: np.ndarray, same: np.ndarray, threshold: float,
                         far: float = 0.1) -> dict[str, float]:
    """Accuracy at ``threshold``, TAR at ``far``, ROC AUC and mean same/different similarity."""
    return {"accuracy": verification_accuracy(sims, same, threshold),
            "tar_at_far": tar_at_far(sims, same, far), "auc": roc_auc(sims, same),
            "mean_sim_same": float(sims[same == 1].mean()) if (same == 1).any() else np.nan,
            "mean_sim_diff": float(sims[same == 0].mean()) if (same == 0).any() else np.nan}


# -- inputs ----------------------------------------------------------------------------------
def check_pairs(pairs: Any, n_images: int, name: str = "pairs") -> np.ndarray:
    """Validate pairs against ``n_images`` images; return int64 ``(P, 3)``."""
    try:
        arr = np.asarray(pairs)
    except (TypeError, ValueError):  # ragged nested lists
        raise ValueError(f"{name} must be an int array of shape (P, 3), got {show(pairs)}") \
            from None
    if arr.ndim != 2 or arr.shape[1] != 3 or arr.shape[0] == 0:
        raise ValueError(f"{name} must have shape (P, 3) rows (index a, index b, same), "
                         f"got shape {arr.shape}")
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer)
                                 or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must hold integers (indices and 0/1), got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and not (
            np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
        raise ValueError(f"{name} must hold whole numbers (indices and 0/1), got fractions, "
                         "NaN or inf")
    # Ranges are checked in the given dtype, before the int64 cast: a float 1e19 or a
    # uint64 would wrap around to a valid-looking index.
    bad = np.flatnonzero((arr[:, :2] < 0).any(axis=1) | (arr[:, :2] >= n_images).any(axis=1))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{name} row {i} names image {show(arr[i, :2].tolist())} but there are only "
            f"{n_images} images (indices 0..{n_images - 1}); {bad.size} rows name missing images")
    if not np.all((arr[:, 2] == 0) | (arr[:, 2] == 1)):
        raise ValueError(f"{name} column 2 (same) must be 0 or 1")
    return arr.astype(np.int64)


def cosine_similarities(emb: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Cosine similarity ``(P,)`` of embedding rows ``emb (N, D)`` for pairs ``(P, >=2)``."""
    e = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return np.einsum("pd,pd->p", e[pairs[:, 0]], e[pairs[:, 1]])


def _check_embedding(emb: np.ndarray, who: str) -> None:
    if emb.shape[1] < 2:
        raise ValueError(
            f"{who} returned {emb.shape[1]} score per image, not an embedding; for a "
            "classifier use DataFineTuner (task='binary'/'multiclass')")


# -- tuner -----------------------------------------------------------------------------------
class VerificationTuner:
    """Fit one perturbation ``delta`` (``|delta| <= epsilon``) applied to both images of a pair.

    model: ``predict(uint8 (N, H, W, 3)) -> (N, D)`` embeddings, or a pair model with
    ``output_kind = "similarity"`` and ``compare(a, b) -> (P,)`` similarities for uint8
    ``(P, H, W, 3)`` image pairs (a face-compare API; every pair sends 2 images, counted as
    2 queries, against one per distinct image for embeddings). threshold: ``None`` (the
    accuracy-maximising threshold on the validation pairs, re-chosen at every validation)
    or a fixed float (e.g. the vendor's: the API answers "match" above it). loss:
    ``"dprime"`` (separation of same / different similarities in pooled standard
    deviations: what a re-chosen threshold rewards), ``"margin"`` (softplus of the signed
    distance to the threshold: what a fixed threshold rewards) or ``"auto"`` (dprime with
    threshold=None, margin with a fixed one). sharpness: ``k`` of the softplus loss (per
    unit of cosine). far: the false accept rate of the TAR metric. batch_size: pairs per
    minibatch.
    Other arguments as in :class:`~blackbox_dft.tasks.classification.DataFineTuner`;
    query_budget counts every image sent during ``fit`` (validation included).
    """

    def __init__(self, model: Any, *, epsilon: float = 8.0,
                 perturbation: Perturbation | None = None, estimator: Estimator | None = None,
                 optimizer: str | Optimizer = "adam", learning_rate: float | None = None,
                 batch_size: int = 32, query_budget: int = 10_000,
                 threshold: float | None = None, loss: str = "auto",
                 sharpness: float = 20.0, far: float = 0.1,
                 validation_every: int = 10, seed: int | None = 0) -> None:
        self.model, self.epsilon, self.perturbation = model, epsilon, perturbation
        self.estimator, self.optimizer, self.learning_rate = estimator, optimizer, learning_rate
        self.batch_size, self.query_budget = batch_size, query_budget
        self.threshold, self.sharpness, self.far = threshold, sharpness, far
        self.loss = loss
        self.validation_every, self.seed = validation_every, seed

    def _check_model(self) -> None:
        kind = getattr(self.model, "output_kind", None)
        if kind in ("labels", "ordinal"):
            raise ValueError(
                f"{model_name(self.model)} returns class decisions (output_kind={kind!r}), not "
                "embeddings; tune it with DataFineTuner(task='binary'/'multiclass', "
                "scores='labels')")
        if self._pairwise():
            if not callable(getattr(self.model, "compare", None)):
                raise TypeError(f"{model_name(self.model)} declares output_kind='similarity' "
                                "but has no compare(images_a, images_b) method")
        elif not hasattr(self.model, "predict"):
            raise TypeError(f"model must have a predict method (embeddings) or a compare "
                            f"method (pair similarities), got {type(self.model).__name__}")

    def _pairwise(self) -> bool:
        """True for a pair model: ``compare(a, b) -> (P,)`` similarities, as face-compare
        APIs answer; False for an embedding model."""
        return getattr(self.model, "output_kind", None) == "similarity"

    def _cost(self, pairs: np.ndarray) -> int:
        """Images one evaluation of ``pairs`` sends: each distinct image once (embeddings)
        or both images of every pair (pair model)."""
        return 2 * len(pairs) if self._pairwise() else int(np.unique(pairs[:, :2]).size)

    def _sims(self, counter: QueryCounter, x: np.ndarray, pairs: np.ndarray,
              deltas: np.ndarray) -> np.ndarray:
        """Similarities ``(M, P)`` of pairs over images ``x`` under each delta ``(M, H, W, 3)``."""
        if self._pairwise():
            a, b = x[pairs[:, 0]], x[pairs[:, 1]]
            return np.stack([counter.compare(apply_deltas(a, d[None]), apply_deltas(b, d[None]))
                             for d in deltas])
        used, inv = np.unique(pairs[:, :2], return_inverse=True)
        local = inv.reshape(-1, 2)
        emb = counter.predict(apply_deltas(x[used], deltas))
        _check_embedding(emb, model_name(self.model))
        emb = emb.reshape(deltas.shape[0], used.size, -1)
        return np.stack([cosine_similarities(e, local) for e in emb])

    def _loss_name(self) -> str:
        if self.loss == "auto":
            return "dprime" if self.threshold is None else "margin"
        return str(self.loss)

    def _loss(self, sims: np.ndarray, same: np.ndarray, t: float) -> np.ndarray:
        """Loss per candidate: sims ``(..., P)``, same ``(P,)``, threshold t -> ``(...)``."""
        if self._loss_name() == "dprime":
            pos, neg = sims[..., same == 1], sims[..., same == 0]
            if pos.shape[-1] == 0 or neg.shape[-1] == 0:
                # d' needs both kinds of pair; a minibatch drawn with one kind only gives
                # no gradient (0 for every candidate) instead of NaN.
                return np.zeros(sims.shape[:-1])
            spread = np.sqrt((pos.var(axis=-1) + neg.var(axis=-1)) / 2.0 + 1e-6)
            return -(pos.mean(axis=-1) - neg.mean(axis=-1)) / spread
        sign = np.where(same == 1, 1.0, -1.0)
        return np.logaddexp(0.0, self.sharpness * (t - sims) * sign).mean(axis=-1) / self.sharpness

    def fit(self, images: np.ndarray, pairs: Any,
            validation: tuple[np.ndarray, Any] | None = None, *,
            checkpoint: str | os.PathLike[str] | None = None, checkpoint_every: int = 10,
            resume: bool = False) -> VerificationTuner:
        """Learn ``delta_`` from labelled pairs over ``images`` within ``query_budget`` images.

        images: uint8 ``(N, H, W, 3)``; pairs: ``(P, 3)`` rows (a, b, same); validation:
        optional ``(images, pairs)``: picks the best delta and (threshold=None) the threshold.
        checkpoint: a ``.npz`` path written atomically every ``checkpoint_every`` steps, on
        interrupt and on a model error; with ``resume=True`` an existing checkpoint is
        continued (same seed and data give the same result as an uninterrupted fit).
        """
        self._check_model()
        check_common_args(self)
        check_choice("loss", self.loss, ("auto", "dprime", "margin"))
        if self.threshold is not None:
            # A pair model answers on its own scale (e.g. a vendor's 0-100 confidence).
            check_number("threshold", self.threshold, *((None, None) if self._pairwise()
                                                       else (-1.0, 1.0)))
        check_number("sharpness", self.sharpness, 0.0, low_open=True)
        check_number("far", self.far, 0.0, 1.0)
        if validation is not None and (not isinstance(validation, tuple)
                                       or len(validation) != 2):
            raise TypeError("validation must be a tuple (images, pairs)")
        if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be an int >= 1, got {checkpoint_every!r}")
        x = check_images(images)
        p = check_pairs(pairs, x.shape[0])
        val = None
        if validation is not None:
            xv = check_images(validation[0], "validation images")
            val = (xv, check_pairs(validation[1], xv.shape[0], "validation pairs"))
        if self._loss_name() == "dprime":
            for what, pp in (("pairs", p), ("validation pairs", None if val is None else val[1])):
                if pp is not None and len(np.unique(pp[:, 2])) < 2:
                    raise ValueError(f"loss='dprime' separates same from different pairs, but "
                                     f"the {what} hold only same={int(pp[0, 2])}; give both")
            if int(self.batch_size) < 2:
                raise ValueError(f"loss='dprime' compares same with different pairs within a "
                                 f"minibatch: batch_size must be >= 2, got {self.batch_size}")
        if self.threshold is None and val is None:
            raise ValueError("threshold=None chooses the threshold on validation pairs: pass "
                             "validation=(images, pairs) or a fixed threshold")
        eps = float(self.epsilon)
        pert = self.perturbation or LowResolution((8, 8))
        est = self.estimator or SPSA(directions=1, step=2.0)
        if est.per_image:
            raise ValueError(f"VerificationTuner takes estimators with per_image=False, "
                             f"got {est!r}; one direction per image is for DataFineTuner")
        hw = (int(x.shape[1]), int(x.shape[2]))
        b = min(int(self.batch_size), p.shape[0])
        val_cost = 0 if val is None else self._cost(val[1])
        worst_step = est.candidates_per_step * (2 * b if self._pairwise()
                                                else min(2 * b, x.shape[0]))
        if self.query_budget < worst_step + 2 * val_cost:
            raise ValueError(f"query_budget={self.query_budget} is smaller than one step and "
                             f"two validations ({worst_step + 2 * val_cost} images)")
        lr = self.learning_rate if self.learning_rate is not None else eps / 8.0
        opt = make_optimizer(self.optimizer, Schedule(float(lr)))
        rng = np.random.default_rng(self.seed)
        counter = QueryCounter(self.model, int(self.query_budget))
        meta = {"kind": "verification_checkpoint", "params": self.get_params(),
                "fingerprint": _fingerprint(x, p), "version": __version__}
        loaded = load_resumable(checkpoint, resume, meta, "pairs or images")
        if loaded is not None:
            st = loaded
            rng.bit_generator.state = st.rng_state
            resume_queries(st, counter)
        else:
            z0 = np.zeros(pert.latent_shape(hw))
            st = FitState(z=z0, opt_state=opt.init(z0), rng_state=dict(rng.bit_generator.state),
                          best_z=z0.copy(), best_score=[-np.inf])
        fixed_t = float(self.threshold) if self.threshold is not None else 0.0

        def current_t() -> float:  # the threshold in force: from the last validation
            for r in reversed(st.history):
                if "val_accuracy" in r:
                    return float(r["threshold"])
            return float(st.baseline["threshold"]) if st.baseline else fixed_t

        def validate(zz: np.ndarray) -> tuple[list[float], dict[str, Any]]:
            assert val is not None
            s = self._sims(counter, val[0], val[1], pert.to_delta(zz, hw, eps)[None])[0]
            tt = best_threshold(s, val[1][:, 2]) if self.threshold is None else fixed_t
            m = verification_metrics(s, val[1][:, 2], tt, float(self.far))
            loss = float(self._loss(s, val[1][:, 2], tt))
            return [m["accuracy"], -loss], {"val_accuracy": m["accuracy"], "val_loss": loss,
                                            "threshold": tt}

        def save() -> None:
            if checkpoint is not None:
                st.save(checkpoint, meta)

        try:
            with keep_on_failure(st, counter, save):
                if val is not None and st.baseline is None:
                    st.best_score, rec = validate(st.z)
                    st.baseline = {"queries": counter.queries, **rec}
                    commit_queries(st, counter)
                while not st.done and counter.affords(worst_step + val_cost):
                    t = current_t()
                    pb = p[rng.choice(p.shape[0], size=b, replace=False)]

                    def f(zs: np.ndarray, pb: np.ndarray = pb, tt: float = t) -> np.ndarray:
                        s = self._sims(counter, x, pb, pert.to_deltas(zs, hw, eps))
                        return self._loss(s, pb[:, 2], tt)

                    g, loss, _ = est.estimate(f, st.z, rng, st.step)
                    upd, opt_state = opt.update(g, st.opt_state)
                    z = pert.project(st.z - upd, eps)
                    rec = {"step": st.step + 1, "queries": counter.queries, "loss": loss,
                           "threshold": t}
                    last = counter.remaining < 2 * worst_step + val_cost
                    if val is not None and ((st.step + 1) % int(self.validation_every) == 0
                                            or last):
                        key, m = validate(z)
                        rec.update(m, queries=counter.queries)
                        if key > (st.best_score or [-np.inf]):
                            st.best_z, st.best_score, st.best_step = z.copy(), key, st.step + 1
                    # Commit the whole step at once.
                    st.z, st.opt_state, st.step = z, opt_state, st.step + 1
                    commit_queries(st, counter)
                    st.rng_state = dict(rng.bit_generator.state)
                    st.history.append(rec)
                    if st.step % checkpoint_every == 0:
                        save()
                if val is None:
                    st.best_z, st.best_step = st.z.copy(), st.step
                st.done = True
                save()
        finally:  # a failed fit keeps what it reached, as DataFineTuner: queries_ included
            st.best_z = st.z.copy() if st.best_z is None else st.best_z
            best = [r for r in st.history if r["step"] == st.best_step]
            self.latent_ = st.best_z.astype(np.float32)
            self.perturbation_, self.image_shape_ = pert, hw
            self.delta_ = pert.to_delta(self.latent_, hw, eps)
            if val is not None:
                self.baseline_ = st.baseline
                self.baseline_threshold_ = float(st.baseline["threshold"]) if st.baseline else 0.0
                self.threshold_ = float(best[0]["threshold"]) if best else self.baseline_threshold_
            else:
                self.baseline_threshold_ = self.threshold_ = fixed_t
            self.queries_ = counter.paid  # every image sent, failed steps' included
            self.history_, self.best_step_ = st.history, st.best_step
        return self

    def transform(self, images: np.ndarray) -> np.ndarray:
        """Perturbed copies of uint8 ``(N, H, W, 3)`` images."""
        if not hasattr(self, "delta_"):
            raise NotFittedError("this VerificationTuner is not fitted yet; call fit first")
        x = check_images(images)
        return apply_delta(x, self.perturbation_.to_delta(self.latent_, x.shape[1:3],
                                                          float(self.epsilon)))

    def evaluate(self, images: np.ndarray, pairs: Any) -> dict[str, Any]:
        """Verification metrics before / after on held-out pairs (costs 2 x distinct images).

        ``accuracy_before`` uses the threshold chosen on validation without the perturbation
        (``baseline_threshold_``), ``accuracy_after`` the one chosen with it (``threshold_``);
        ``tar_at_far`` and ``auc`` need no threshold. Also PSNR / SSIM and queries spent.
        """
        if not hasattr(self, "delta_"):
            raise NotFittedError("this VerificationTuner is not fitted yet; call fit first")
        x = check_images(images)
        p = check_pairs(pairs, x.shape[0])
        counter = QueryCounter(self.model)
        out: dict[str, Any] = {}
        delta = self.perturbation_.to_delta(self.latent_, x.shape[1:3], float(self.epsilon))
        for tag, d, t in (("before", np.zeros_like(delta), self.baseline_threshold_),
                          ("after", delta, self.threshold_)):
            s = self._sims(counter, x, p, d[None])[0]
            m = verification_metrics(s, p[:, 2], t, float(self.far))
            out.update({f"{k}_{tag}": v for k, v in m.items()})
        xp = self.transform(x)
        out.update(psnr=psnr(x, xp), ssim=ssim(x, xp), queries=counter.queries,
                   n_pairs=int(p.shape[0]), threshold_before=self.baseline_threshold_,
                   threshold_after=self.threshold_, far=float(self.far))
        return out

    # -- parameters and files -------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """Constructor arguments except the model, JSON-able (components as configs, None
        where the default is used)."""
        return {
            "epsilon": float(self.epsilon),
            "perturbation": None if self.perturbation is None else self.perturbation.get_config(),
            "estimator": None if self.estimator is None else self.estimator.get_config(),
            "optimizer": self.optimizer if isinstance(self.optimizer, str)
            else self.optimizer.get_config(),
            "learning_rate": None if self.learning_rate is None else float(self.learning_rate),
            "batch_size": int(self.batch_size), "query_budget": int(self.query_budget),
            "threshold": None if self.threshold is None else float(self.threshold),
            "loss": self.loss, "sharpness": float(self.sharpness), "far": float(self.far),
            "validation_every": int(self.validation_every), "seed": self.seed,
        }

    @classmethod
    def from_params(cls, model: Any, params: dict[str, Any]) -> VerificationTuner:
        """Rebuild a tuner from :meth:`get_params` output."""
        p = decode_params(params)
        return cls(model, **p)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fitted delta, latent and thresholds to ``path`` (``.npz`` + JSON, no
        pickle)."""
        if not hasattr(self, "delta_"):
            raise NotFittedError("this VerificationTuner is not fitted yet; call fit first")
        write_npz_json(path, {"delta": self.delta_, "latent": self.latent_}, {
            "kind": "verification_result", "params": self.get_params(), "version": __version__,
            "perturbation": self.perturbation_.get_config(),
            "image_shape": list(self.image_shape_), "threshold": self.threshold_,
            "baseline_threshold": self.baseline_threshold_, "queries": int(self.queries_),
            "history": self.history_, "best_step": int(self.best_step_),
            "model": model_name(self.model)})

    @classmethod
    def load(cls, path: str | os.PathLike[str], model: Any) -> VerificationTuner:
        """Load a result written by :meth:`save` and attach it to ``model``."""
        arrays, meta = read_result(path, "verification_result", "VerificationTuner")
        tuner = cls.from_params(model, meta["params"])
        tuner.perturbation_ = perturbation_from_config(meta["perturbation"])
        tuner.image_shape_ = (int(meta["image_shape"][0]), int(meta["image_shape"][1]))
        tuner.latent_ = arrays["latent"].astype(np.float32)
        tuner.delta_ = arrays["delta"].astype(np.float32)
        tuner.threshold_ = float(meta["threshold"])
        tuner.baseline_threshold_ = float(meta["baseline_threshold"])
        tuner.queries_ = int(meta["queries"])
        tuner.history_ = meta["history"]
        tuner.best_step_ = int(meta["best_step"])
        return tuner

    def __repr__(self) -> str:
        fitted = f", fitted: {self.queries_} queries" if hasattr(self, "delta_") else ""
        return (f"VerificationTuner({model_name(self.model)}, epsilon={self.epsilon}, "
                f"query_budget={self.query_budget}{fitted})")
