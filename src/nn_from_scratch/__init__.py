"""nn_from_scratch: a deep-learning library in NumPy, every layer an explicit forward and backward.

    from nn_from_scratch import Sequential, load_model
    from nn_from_scratch.neurons import Convolution, Linear
    from nn_from_scratch.nodes import MaxPooling, ReLU, Vectorization
    from nn_from_scratch.losses import SoftMaxLoss
    from nn_from_scratch.optimizers import Adam

    model = Sequential([...], loss=SoftMaxLoss(), optimizer=Adam(1e-3), input_shape=(1, 28, 28), seed=0)
    model.summary()
    history = model.fit(x, y, epochs=3, batch_size=64, validation_split=0.1)
    model.save("model.safetensors")
    same = load_model("model.safetensors")
"""

from . import callbacks, initializers, layers, losses, metrics, neurons, nodes, optimizers, training, utils
from .callbacks import Callback, History
from .errors import GraphError, ModelFileError, TrainingDivergedError
from .graph import Input, Model
from .initializers import set_seed
from .interfaces import Layer, Neuron, Node, Optimizer
from .model import Sequential
from .serialization import load_model
from .threads import get_num_threads, set_num_threads

__version__ = "0.1.0"

__all__ = [
    "Callback",
    "GraphError",
    "History",
    "Input",
    "Layer",
    "Model",
    "ModelFileError",
    "Neuron",
    "Node",
    "Optimizer",
    "Sequential",
    "TrainingDivergedError",
    "__version__",
    "callbacks",
    "get_num_threads",
    "initializers",
    "layers",
    "load_model",
    "losses",
    "metrics",
    "neurons",
    "nodes",
    "optimizers",
    "set_num_threads",
    "set_seed",
    "training",
    "utils",
]
