"""blackbox_dft: Data Fine-tuning of black-box image classifiers.

Learn one small additive perturbation, shared by every image, that lowers a
black-box model's loss on a user's labelled images, using only queries
``predict(images) -> scores`` (Chhabra et al., AAAI 2019).
"""

import logging

from blackbox_dft._version import __version__
from blackbox_dft.core.estimators import NES, SPSA, Estimator, PerImage, Proposal, RandomDirections
from blackbox_dft.core.images import apply_delta, check_images, psnr
from blackbox_dft.core.model import (
    BudgetExhausted,
    Model,
    ModelError,
    QueryCounter,
    check_scores,
)
from blackbox_dft.core.objectives import Objective
from blackbox_dft.core.optimizers import SGD, Adam, Optimizer, Schedule, SignSGD
from blackbox_dft.core.perturbation import FullResolution, LowResolution, Perturbation
from blackbox_dft.tasks.attributes import MultiAttributeTuner
from blackbox_dft.tasks.base import NotFittedError, Tuner
from blackbox_dft.tasks.classification import DataFineTuner
from blackbox_dft.tasks.finetuned import FineTunedModel
from blackbox_dft.tasks.guard import GuardReport, check_delta
from blackbox_dft.tasks.verification import VerificationTuner

# A library's logging: records go to the application's handlers; none configured, nothing
# is printed (not even warnings through logging's last resort). The CLI sets its own.
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "__version__",
    "DataFineTuner", "VerificationTuner", "MultiAttributeTuner", "Tuner", "NotFittedError",
    "FineTunedModel", "check_delta", "GuardReport",
    "Model", "ModelError", "BudgetExhausted", "QueryCounter", "check_scores",
    "Estimator", "Proposal", "SPSA", "NES", "RandomDirections", "PerImage",
    "Optimizer", "SGD", "Adam", "SignSGD", "Schedule",
    "Perturbation", "FullResolution", "LowResolution",
    "Objective", "apply_delta", "check_images", "psnr",
]
