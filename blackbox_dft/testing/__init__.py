"""Tools for testing code built on blackbox_dft, and for testing blackbox_dft itself.

``make_problem``: a synthetic black box (a fixed random softmax classifier on 16x16 images)
with shifted labelled splits, for tests and benchmarks that need no model files.
Imports blackbox_dft.core and blackbox_dft.tasks, never adapters.
"""

from blackbox_dft.testing.synthetic import Problem, SyntheticModel, make_problem

__all__ = ["Problem", "SyntheticModel", "make_problem"]
