"""blackbox_dft: Data Fine-tuning of black-box image classifiers.

Learn one small additive perturbation, shared by every image, that lowers a
black-box model's loss on a user's labelled images, using only queries
``predict(images) -> scores``.
"""

__version__ = "0.1.0"
