"""blackbox_dft: Data Fine-tuning of black-box image classifiers.

Learn one small additive perturbation, shared by every image, that lowers a
black-box model's loss on a user's labelled images, using only queries
``predict(images) -> scores`` (Chhabra et al., AAAI 2019).
"""

__version__ = "0.1.0"

from .estimators import NES, SPSA, Estimator, RandomDirections  # noqa: E402
from .images import apply_delta, check_images, psnr  # noqa: E402
from .model import (  # noqa: E402
    BudgetExhausted,
    FineTunedModel,
    Model,
    ModelError,
    QueryCounter,
    check_scores,
)
from .multiattr import MultiAttributeTuner  # noqa: E402
from .objectives import Objective  # noqa: E402
from .optimizers import SGD, Adam, Optimizer, Schedule, SignSGD  # noqa: E402
from .perturbation import FullResolution, LowResolution, Perturbation  # noqa: E402
from .tuner import DataFineTuner, NotFittedError  # noqa: E402
from .verification import VerificationTuner  # noqa: E402

__all__ = [
    "__version__",
    "DataFineTuner", "VerificationTuner", "MultiAttributeTuner", "NotFittedError",
    "FineTunedModel",
    "Model", "ModelError", "BudgetExhausted", "QueryCounter", "check_scores",
    "Estimator", "SPSA", "NES", "RandomDirections",
    "Optimizer", "SGD", "Adam", "SignSGD", "Schedule",
    "Perturbation", "FullResolution", "LowResolution",
    "Objective", "apply_delta", "check_images", "psnr",
]
