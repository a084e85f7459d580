"""Part 3 of the seed notebook in one call: is our CNN the same function as a Keras one?

The notebook built a TensorFlow twin by hand (``np.moveaxis`` on every weight), fed both one
batch and compared them with checks that could not fail. Here ``verify.compare`` builds the Keras
twin itself (channels-last, kernels transposed, the dense rows permuted for Keras' flatten
order), runs one forward and backward pass on both, and reports every layer's output, dL/dx and
weight gradients.

    pip install "nn_from_scratch[keras]"      # Keras 3; it runs on the torch backend
    python examples/compare_with_reference.py
"""

from __future__ import annotations

import numpy as np

from nn_from_scratch.datasets import mnist
from nn_from_scratch.examples.simple_nn import NeuralNetwork
from nn_from_scratch.neurons import Convolution, Linear
from nn_from_scratch.nodes import ReLU, SoftMaxLoss, Vectorization
from nn_from_scratch.optimizers import GradientDescent
from nn_from_scratch.verify import compare


def main() -> None:
    # Part 1 of the notebook: data and model, as written there.
    (train_X, train_y), _ = mnist.load_data()
    train_X = train_X[:1000]
    n_input, n_output, batch_size, n_channels = 28**2, 10, 50, 1
    train_X = train_X.reshape(train_X.shape[0] // batch_size, batch_size, n_channels, 28, 28) / 255
    train_y_ohe = np.zeros((len(train_X) * batch_size, n_output))
    train_y_ohe[np.arange(len(train_y_ohe)), train_y[: len(train_y_ohe)]] = 1
    train_y_ohe = train_y_ohe.reshape(len(train_X), batch_size, n_output)

    layers = [
        Convolution((batch_size, n_channels, 28, 28), kernel_size=3, output_layers=4, use_bias=False),
        ReLU((batch_size, 4, 26, 26)),
        Convolution((batch_size, 4, 26, 26), kernel_size=7, output_layers=2, use_bias=False),
        ReLU((batch_size, 2, 20, 20)),
        Vectorization((batch_size, 2, 20, 20)),
        Linear((batch_size, 800), (batch_size, n_output)),
    ]
    network = NeuralNetwork(n_input=n_input, n_output=n_output, batch_size=batch_size,
                            optimizer=GradientDescent(lr=0.5), layers=layers, loss_fn=SoftMaxLoss((batch_size, n_output)))

    # Part 3 of the notebook: one call per precision.
    try:
        import nn_from_scratch.interop.keras  # noqa: F401
        reference = "keras"
    except ImportError:
        print("keras is not installed (pip install 'nn_from_scratch[keras]'); comparing with torch instead\n")
        reference = "torch"
    for dtype in (np.float32, np.float64):
        report = compare(network, train_X[0], train_y_ohe[0], reference=reference, dtype=dtype)
        print(report, end="\n\n")


if __name__ == "__main__":
    main()
