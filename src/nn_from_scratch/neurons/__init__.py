"""Trainable layers."""

from .batchnorm import BatchNormalization
from .convolution import Convolution
from .linear import Linear
from .normalization import GroupNormalization, LayerNormalization
from .transposed_convolution import TransposedConvolution

__all__ = ["BatchNormalization", "Convolution", "GroupNormalization", "LayerNormalization", "Linear", "TransposedConvolution"]
