"""Tools for testing code built on blackbox_dft, and for testing blackbox_dft itself.

``make_problem``: a synthetic black box (a fixed random softmax classifier on 16x16 images)
with shifted labelled splits, for tests and benchmarks that need no model files.
Conformance checks, each raising one ``AssertionError`` line naming the check that failed
(run them on your own adapter or component before a paid fit):
``check_model`` (every Model implementation; :mod:`blackbox_dft.testing.models`),
``check_estimator`` and ``check_optimizer`` (:mod:`blackbox_dft.testing.components`),
``check_tuner`` (:mod:`blackbox_dft.testing.tuners`).
Imports blackbox_dft.core and blackbox_dft.tasks, never adapters.
"""

from blackbox_dft.testing.components import check_estimator, check_optimizer
from blackbox_dft.testing.models import check_model
from blackbox_dft.testing.synthetic import Problem, SyntheticModel, make_problem
from blackbox_dft.testing.tuners import CountingModel, check_tuner

__all__ = ["Problem", "SyntheticModel", "make_problem", "check_model", "check_estimator",
           "check_optimizer", "check_tuner", "CountingModel"]
