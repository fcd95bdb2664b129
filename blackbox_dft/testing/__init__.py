"""Tools for testing code built on blackbox_dft, and for testing blackbox_dft itself.

``make_problem``: a synthetic black box (a fixed random softmax classifier on 16x16 images)
with shifted labelled splits, for tests and benchmarks that need no model files.
``check_model``: the contract every Model implementation passes (see
:mod:`blackbox_dft.testing.models` for its individual checks).
Imports blackbox_dft.core and blackbox_dft.tasks, never adapters.
"""

from blackbox_dft.testing.models import check_model
from blackbox_dft.testing.synthetic import Problem, SyntheticModel, make_problem

__all__ = ["Problem", "SyntheticModel", "check_model", "make_problem"]
