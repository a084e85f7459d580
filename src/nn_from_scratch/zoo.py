"""Named models, ready to train, and the input preprocessing they expect.

``MODELS`` maps a name (as the command line's ``--model`` takes it) to a builder
``builder(dtype=np.float32, seed=None)`` that returns an untrained, built
:class:`~nn_from_scratch.model.Sequential` for ``(N, 1, 28, 28)`` inputs, without loss or optimizer
(the trainer adds those).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .model import Sequential
from .neurons import Convolution, Linear
from .nodes import ReLU, Vectorization

# Mean and standard deviation of the 47 million pixels of the MNIST training set (uint8 scale).
MNIST_MEAN = 33.318
MNIST_STD = 78.567

PREPROCESSING = ("standardize", "scale")
DEFAULT_PREPROCESSING = "standardize"


def preprocess_images(images: np.ndarray, method: str = DEFAULT_PREPROCESSING, dtype: Any = np.float32) -> np.ndarray:
    """uint8 images ``(N, H, W)`` -> network input ``(N, 1, H, W)`` of ``dtype``.

    ``"standardize"``: ``(x - 33.318) / 78.567``, zero mean and unit variance over the training
    set. ``"scale"``: ``x / 255``, into ``[0, 1]``, as the seed notebook did.
    """
    x = np.asarray(images).astype(dtype)[:, None]
    if method == "standardize":
        return (x - MNIST_MEAN) / MNIST_STD  # Python floats keep x's dtype (NEP 50)
    if method == "scale":
        return x / 255
    raise ValueError(f"preprocess_images: method must be one of {PREPROCESSING}, got {method!r}")


def seed_cnn(dtype: Any = np.float32, seed: int | None = None) -> Sequential:
    """The seed notebook's CNN for 28x28 grey images, 10 classes (8,438 parameters)::

        conv 3x3, 4 channels, no bias -> ReLU       (N, 4, 26, 26)
        conv 7x7, 2 channels, no bias -> ReLU       (N, 2, 20, 20)
        flatten                                     (N, 800)
        linear 800 -> 10                            (N, 10) logits
    """
    layers = [
        Convolution(kernel_size=3, output_layers=4, use_bias=False, dtype=dtype),
        ReLU(),
        Convolution(kernel_size=7, output_layers=2, use_bias=False, dtype=dtype),
        ReLU(),
        Vectorization(),
        Linear(800, 10, dtype=dtype),
    ]
    return Sequential(layers, input_shape=(1, 28, 28), seed=seed)


MODELS: dict[str, Callable[..., Sequential]] = {
    "seed": seed_cnn,
}
