"""Trainable layers."""

from .batchnorm import BatchNormalization
from .convolution import Convolution
from .linear import Linear

__all__ = ["BatchNormalization", "Convolution", "Linear"]
