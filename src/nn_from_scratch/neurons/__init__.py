"""Trainable layers."""

from .batchnorm import BatchNormalization
from .convolution import Convolution
from .linear import Linear
from .normalization import GroupNormalization, LayerNormalization

__all__ = ["BatchNormalization", "Convolution", "GroupNormalization", "LayerNormalization", "Linear"]
