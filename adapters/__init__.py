"""Adapters: things that implement the Model protocol ``predict(images) -> scores``.

Adapters import ``blackbox_dft``; ``blackbox_dft`` never imports adapters
(the CLI is the one place that knows both).
"""

from .base import BaseModel, CallableModel

__all__ = ["BaseModel", "CallableModel"]
