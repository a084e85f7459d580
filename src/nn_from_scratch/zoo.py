"""Named models, ready to train, and the input preprocessing they expect.

``MODELS`` maps a name (as the command line's ``--model`` takes it) to a builder
``builder(dtype=np.float32, seed=None)`` that returns an untrained, built
:class:`~nn_from_scratch.model.Sequential` for ``(N, 1, 28, 28)`` inputs, without loss or optimizer
(the trainer adds those).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .model import Sequential
from .neurons import BatchNormalization, Convolution, Linear
from .nodes import MaxPooling, ReLU, Vectorization

# Mean and standard deviation of the 47 million pixels of the MNIST training set (uint8 scale).
MNIST_MEAN = 33.318
MNIST_STD = 78.567

PREPROCESSING = ("standardize", "scale")
DEFAULT_PREPROCESSING = "scale"


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


def lenet5(dtype: Any = np.float32, seed: int | None = None, batch_norm: bool = True) -> Sequential:
    """A LeNet-5 class CNN for 28x28 grey images, 10 classes (ReLU and max pooling, as is usual
    today, instead of LeCun's tanh and subsampling)::

        conv 5x5, 6 channels, padding 2 [-> batch norm] -> ReLU -> max pool 2   (N, 6, 14, 14)
        conv 5x5, 16 channels [-> batch norm] -> ReLU -> max pool 2             (N, 16, 5, 5)
        flatten -> linear 400 -> 120 -> ReLU -> linear 120 -> 84 -> ReLU        (N, 84)
        linear 84 -> 10                                                         (N, 10) logits

    With ``batch_norm`` (the default) each convolution is followed by batch normalisation
    (and has no bias, which the normalisation would cancel); it makes a few epochs of Adam
    reach 99% test accuracy reliably.
    """

    def conv_block(kernel: int, channels: int, padding: int) -> list:
        conv = Convolution(kernel_size=kernel, output_layers=channels, padding=padding, use_bias=not batch_norm, dtype=dtype)
        norm = [BatchNormalization(dtype=dtype)] if batch_norm else []
        return [conv, *norm, ReLU(), MaxPooling(2)]

    layers = [
        *conv_block(5, 6, 2),
        *conv_block(5, 16, 0),
        Vectorization(),
        Linear(400, 120, dtype=dtype),
        ReLU(),
        Linear(120, 84, dtype=dtype),
        ReLU(),
        Linear(84, 10, dtype=dtype),
    ]
    return Sequential(layers, input_shape=(1, 28, 28), seed=seed)


MODELS: dict[str, Callable[..., Sequential]] = {
    "seed": seed_cnn,
    "lenet": lenet5,
}


@dataclass(frozen=True)
class Recipe:
    """How the command line trains a model unless told otherwise.

    ``optimizer``: ``"sgd"`` (plain :class:`~nn_from_scratch.optimizers.GradientDescent`) or
    ``"adam"``; ``schedule``: ``"constant"`` or ``"cosine"`` (per batch, from ``lr`` to 0 over
    the whole run, :class:`~nn_from_scratch.callbacks.CosineDecay`).
    """

    epochs: int
    batch_size: int
    lr: float
    optimizer: str = "sgd"
    schedule: str = "constant"
    preprocessing: str = "scale"


RECIPES: dict[str, Recipe] = {
    # The notebook's settings, shuffled every epoch. x / 255 rather than standardised inputs:
    # with standardisation some seeds start with dead ReLUs and never recover under plain SGD.
    "seed": Recipe(epochs=1, batch_size=50, lr=0.1, optimizer="sgd", schedule="constant", preprocessing="scale"),
    "lenet": Recipe(epochs=3, batch_size=64, lr=4e-3, optimizer="adam", schedule="cosine", preprocessing="scale"),
}
