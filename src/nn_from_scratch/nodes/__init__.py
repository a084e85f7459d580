"""Parameter-free layers. ``SoftMaxLoss`` and ``MSELoss`` live in :mod:`nn_from_scratch.losses`
and are re-exported here because the seed imported them from ``nodes``."""

from ..losses import MSELoss, SoftMaxLoss
from .activations import LeakyReLU, ReLU, Sigmoid, SoftMax, Tanh
from .dropout import Dropout
from .pooling import AveragePooling, GlobalAveragePooling, MaxPooling
from .reshape import Vectorization

__all__ = ["AveragePooling", "Dropout", "GlobalAveragePooling", "LeakyReLU", "MaxPooling", "MSELoss", "ReLU", "Sigmoid", "SoftMax", "SoftMaxLoss", "Tanh", "Vectorization"]
