"""Parameter-free layers. ``SoftMaxLoss`` and ``MSELoss`` live in :mod:`nn_from_scratch.losses`
and are re-exported here because the seed imported them from ``nodes``."""

from ..losses import MSELoss, SoftMaxLoss
from .augmentation import RandomCrop, RandomFlip, RandomRotation, RandomTranslation, RandomZoom
from .activations import ELU, GELU, Identity, LeakyReLU, LogSoftMax, ReLU, Sigmoid, SiLU, SoftMax, Softplus, Tanh
from .dropout import Dropout
from .merge import Add, Concatenate, Multiply
from .pooling import AveragePooling, GlobalAveragePooling, MaxPooling
from .reshape import Reshape, Vectorization
from .upsampling import UpSampling2D

__all__ = ["Add", "AveragePooling", "Concatenate", "Dropout", "ELU", "GELU", "GlobalAveragePooling", "Identity", "LeakyReLU", "LogSoftMax", "MaxPooling", "MSELoss", "Multiply", "RandomCrop", "RandomFlip", "RandomRotation", "RandomTranslation", "RandomZoom", "ReLU", "Reshape", "Sigmoid", "SiLU", "SoftMax", "SoftMaxLoss", "Softplus", "Tanh", "UpSampling2D", "Vectorization"]
