import os
import sys

# tests/synthetic.py is a helper module shared by several test files.
sys.path.insert(0, os.path.dirname(__file__))

# Property tests try the same examples on every run (no example database, no random seed):
# a failure in CI reproduces on a developer's machine.
from hypothesis import settings  # noqa: E402

settings.register_profile("reproducible", database=None, derandomize=True)
settings.load_profile("reproducible")
