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
from collections.abc import Callable
from typing import Any

import numpy as np

from blackbox_dft.core.checks import check_choice, check_number
from blackbox_dft.core.engine import best_latent, check_budget
from blackbox_dft.core.estimators import SPSA, Estimator
from blackbox_dft.core.images import apply_delta, check_images, psnr
from blackbox_dft.core.metrics import ssim
from blackbox_dft.core.model import QueryCounter, model_name
from blackbox_dft.core.optimizers import Optimizer, Schedule, make_optimizer
from blackbox_dft.core.perturbation import LowResolution, Perturbation
from blackbox_dft.core.state import FitState, paid_images
from blackbox_dft.core.stopping import EarlyStopping
from blackbox_dft.tasks.base import Tuner, check_common_args, fingerprint
from blackbox_dft.tasks.verification_metrics import (
    best_threshold,
    check_pairs,
    cosine_similarities,
    roc_auc,
    tar_at_far,
    verification_accuracy,
    verification_metrics,
)
from blackbox_dft.tasks.verification_problem import PairScorer, VerificationProblem

__all__ = ["VerificationTuner", "check_pairs", "cosine_similarities", "best_threshold",
           "verification_accuracy", "tar_at_far", "roc_auc", "verification_metrics"]


# -- tuner -----------------------------------------------------------------------------------
class VerificationTuner(Tuner):
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
                 validation_every: int = 10,
                 early_stopping: EarlyStopping | int | None = None,
                 seed: int | None = 0) -> None:
        self.model, self.epsilon, self.perturbation = model, epsilon, perturbation
        self.estimator, self.optimizer, self.learning_rate = estimator, optimizer, learning_rate
        self.batch_size, self.query_budget = batch_size, query_budget
        self.threshold, self.sharpness, self.far = threshold, sharpness, far
        self.loss = loss
        self.validation_every, self.seed = validation_every, seed
        self.early_stopping = early_stopping

    _result_kind = "verification_result"
    _checkpoint_kind = "verification_checkpoint"
    _saved_arrays = {"delta": "delta_", "latent": "latent_"}
    _saved_fields = {"image_shape": "image_shape_", "perturbation": "perturbation_",
                     "threshold": "threshold_", "baseline_threshold": "baseline_threshold_",
                     "queries": "queries_", "history": "history_", "best_step": "best_step_",
                     "n_steps": "n_steps_"}
    _data_name = "pairs or images"

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

    def _loss_name(self) -> str:
        if self.loss == "auto":
            return "dprime" if self.threshold is None else "margin"
        return str(self.loss)

    def _default_perturbation(self) -> Perturbation:
        return LowResolution((8, 8))

    def _scorer(self, counter: QueryCounter) -> PairScorer:
        return PairScorer(counter, self._pairwise(), self._loss_name(), float(self.sharpness))

    def _check_args(self) -> None:
        self._check_model()
        check_common_args(self)
        check_choice("loss", self.loss, ("auto", "dprime", "margin"))
        if self.threshold is not None:
            # A pair model answers on its own scale (e.g. a vendor's 0-100 confidence).
            check_number("threshold", self.threshold, *((None, None) if self._pairwise()
                                                       else (-1.0, 1.0)))
        check_number("sharpness", self.sharpness, 0.0, low_open=True)
        check_number("far", self.far, 0.0, 1.0)

    def fit(self, images: np.ndarray, pairs: Any,
            validation: tuple[np.ndarray, Any] | None = None, *,
            checkpoint: str | os.PathLike[str] | None = None, checkpoint_every: int = 10,
            resume: bool = False,
            callback: Callable[[dict[str, Any], FitState], Any] | None = None
            ) -> VerificationTuner:
        """Learn ``delta_`` from labelled pairs over ``images`` within ``query_budget`` images.

        images: uint8 ``(N, H, W, 3)``; pairs: ``(P, 3)`` rows (a, b, same); validation:
        optional ``(images, pairs)``: picks the best delta and (threshold=None) the threshold.
        checkpoint: a ``.npz`` path written atomically every ``checkpoint_every`` steps, on
        interrupt and on a model error; with ``resume=True`` an existing checkpoint is
        continued (same seed and data give the same result as an uninterrupted fit).
        callback: ``callback(record, state)`` after every step, as in
        :meth:`DataFineTuner.fit` (a true return value stops the fit).
        """
        self._check_args()
        if validation is not None and (not isinstance(validation, tuple)
                                       or len(validation) != 2):
            raise TypeError("validation must be a tuple (images, pairs)")
        self._check_checkpoint_every(checkpoint_every)
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
        pert = self.perturbation or self._default_perturbation()
        est = self.estimator or SPSA(directions=1, step=2.0)
        if est.per_image:
            raise ValueError(f"VerificationTuner takes shared-direction estimators, got "
                             f"{est!r}; one direction per image is for DataFineTuner")
        counter = QueryCounter(self.model, int(self.query_budget))
        problem = VerificationProblem(self._scorer(counter), pert, est, x, p, val, epsilon=eps,
                                      batch_size=int(self.batch_size),
                                      threshold=self.threshold, far=float(self.far))
        per_candidate = problem.step_cost // est.candidates_per_step
        check_budget(problem, int(self.query_budget),
                     f"{est.candidates_per_step} candidates x up to {per_candidate} images")
        lr = self.learning_rate if self.learning_rate is not None else eps / 8.0
        opt = make_optimizer(self.optimizer, Schedule(float(lr)))
        self.perturbation_, self.image_shape_ = pert, problem.hw
        self._validated = val is not None
        self._fit_loop(problem, est, opt, counter, {"fingerprint": fingerprint(x, p)},
                       checkpoint, checkpoint_every, resume, callback)
        return self

    def _set_fitted(self, state: FitState, counter: QueryCounter) -> None:
        # a failed fit keeps what it reached, as DataFineTuner: queries_ included
        fixed_t = float(self.threshold) if self.threshold is not None else 0.0
        best = [r for r in state.history if r["step"] == state.best_step]
        self.latent_ = best_latent(state).astype(np.float32)
        self.delta_ = self.perturbation_.to_delta(self.latent_, self.image_shape_,
                                                  float(self.epsilon))
        if self._validated:
            self.baseline_ = state.baseline
            self.baseline_threshold_ = float(state.baseline["threshold"]) \
                if state.baseline else 0.0
            self.threshold_ = float(best[0]["threshold"]) if best \
                else self.baseline_threshold_
        else:
            self.baseline_threshold_ = self.threshold_ = fixed_t
        self.queries_ = paid_images(state)  # every image sent, failed steps' included
        self.history_, self.best_step_, self.n_steps_ = state.history, state.best_step, state.step

    def _restore(self, meta: dict[str, Any]) -> None:
        super()._restore(meta)
        self.threshold_ = float(meta["threshold"])
        self.baseline_threshold_ = float(meta["baseline_threshold"])
        self.best_step_ = int(meta["best_step"])
        self.n_steps_ = int(meta.get("n_steps", self.best_step_))

    def transform(self, images: np.ndarray) -> np.ndarray:
        """Perturbed copies of uint8 ``(N, H, W, 3)`` images."""
        self._check_fitted()
        x = check_images(images)
        return apply_delta(x, self.perturbation_.to_delta(self.latent_, x.shape[1:3],
                                                          float(self.epsilon)))

    def evaluate(self, images: np.ndarray, pairs: Any) -> dict[str, Any]:
        """Verification metrics before / after on held-out pairs (costs 2 x distinct images).

        ``accuracy_before`` uses the threshold chosen on validation without the perturbation
        (``baseline_threshold_``), ``accuracy_after`` the one chosen with it (``threshold_``);
        ``tar_at_far`` and ``auc`` need no threshold. Also PSNR / SSIM and queries spent.
        """
        self._check_fitted()
        x = check_images(images)
        p = check_pairs(pairs, x.shape[0])
        counter = QueryCounter(self.model)
        scorer = self._scorer(counter)
        out: dict[str, Any] = {}
        delta = self.perturbation_.to_delta(self.latent_, x.shape[1:3], float(self.epsilon))
        for tag, d, t in (("before", np.zeros_like(delta), self.baseline_threshold_),
                          ("after", delta, self.threshold_)):
            s = scorer.sims(x, p, d[None])[0]
            m = verification_metrics(s, p[:, 2], t, float(self.far))
            out.update({f"{k}_{tag}": v for k, v in m.items()})
        xp = self.transform(x)
        out.update(psnr=psnr(x, xp), ssim=ssim(x, xp), queries=counter.queries,
                   n_pairs=int(p.shape[0]), threshold_before=self.baseline_threshold_,
                   threshold_after=self.threshold_, far=float(self.far))
        return out
