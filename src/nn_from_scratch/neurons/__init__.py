"""Trainable layers."""

from .convolution import Convolution
from .linear import Linear

__all__ = ["Convolution", "Linear"]
