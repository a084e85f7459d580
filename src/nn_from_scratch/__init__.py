"""nn_from_scratch: a deep-learning library in NumPy, every layer an explicit forward and backward."""

from .interfaces import Layer, Neuron, Node, Optimizer
from .model import Sequential, TrainingDivergedError

__version__ = "0.1.0"

__all__ = ["Layer", "Neuron", "Node", "Optimizer", "Sequential", "TrainingDivergedError", "__version__"]
