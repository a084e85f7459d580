"""Bad input gets a clear error: ``ValueError`` naming the layer, the expected and the received
shape. A loss that becomes NaN stops training with a message."""

from __future__ import annotations

import re

import numpy as np
import pytest

from nn_from_scratch.examples.simple_nn import NeuralNetwork
from nn_from_scratch.losses import MSELoss, SoftMaxLoss
from nn_from_scratch.model import Sequential, TrainingDivergedError
from nn_from_scratch.neurons import Convolution, Linear
from nn_from_scratch.nodes import ReLU, Vectorization
from nn_from_scratch.optimizers import GradientDescent


def shape_text(shape) -> str:
    return re.escape(str(tuple(shape)))


@pytest.mark.parametrize("got", [(2, 4), (2, 6), (2, 5, 1)])
def test_linear_wrong_input(got):
    layer = Linear(5, 3, name="dense_out")
    with pytest.raises(ValueError, match=rf"dense_out: expected input of shape \(batch, 5\), got {shape_text(got)}"):
        layer.forward(np.ones(got))


@pytest.mark.parametrize(
    "got",
    [(2, 3, 28, 28), (2, 1, 20, 28), (2, 1, 28, 27), (1, 28, 28, 1)],
)
def test_convolution_wrong_input(got):
    layer = Convolution((50, 1, 28, 28), 3, 4)
    with pytest.raises(ValueError, match=rf"Convolution: expected input of shape \(batch, 1, 28, 28\), got {shape_text(got)}"):
        layer.forward(np.ones(got))


def test_convolution_input_smaller_than_kernel():
    with pytest.raises(ValueError, match=r"conv1: input of shape \(batch, 1, 4, 4\) is smaller than the kernel"):
        Convolution(kernel_size=5, name="conv1").forward(np.ones((2, 1, 4, 4)))


def test_vectorization_wrong_input():
    layer = Vectorization((50, 2, 20, 20))
    with pytest.raises(ValueError, match=r"Vectorization: expected input of shape \(batch, 2, 20, 20\), got \(batch, 2, 21, 20\)"):
        layer.forward(np.ones((3, 2, 21, 20)))


def test_model_names_the_layer_that_does_not_fit():
    # The seed's CNN with the linear layer sized for 26x26 inputs, fed 28x28 images.
    model = Sequential([
        Convolution(kernel_size=3, output_layers=4, use_bias=False),
        ReLU(),
        Convolution(kernel_size=7, output_layers=2, use_bias=False),
        ReLU(),
        Vectorization(),
        Linear(2 * 18 * 18, 10, name="classifier"),
    ])
    with pytest.raises(ValueError, match=r"classifier: expected input of shape \(batch, 648\), got \(batch, 800\)"):
        model.build((1, 28, 28))


def test_wrong_weight_shapes_are_refused():
    with pytest.raises(ValueError, match=r"Convolution: expected W of shape \(4, 1, 3, 3\).*got \(4, 3, 3, 1\)"):
        Convolution((1, 28, 28), 3, 4, W=np.zeros((4, 3, 3, 1)))
    with pytest.raises(ValueError, match=r"Convolution: expected B of shape \(4,\).*got \(4, 26, 26\)"):
        Convolution((1, 28, 28), 3, 4, B=np.zeros((4, 26, 26)))
    with pytest.raises(ValueError, match=r"Linear: expected W of shape \(n_in \+ 1, 10\), got \(800, 9\)"):
        Linear(800, 10, W=np.zeros((800, 9)))


def test_wrong_labels_are_refused():
    loss = SoftMaxLoss()
    with pytest.raises(ValueError, match=r"SoftMaxLoss: expected labels of shape \(4,\) or one-hot \(4, 10\), got \(4, 9\)"):
        loss.forward(np.zeros((4, 10)), np.zeros((4, 9)))
    with pytest.raises(ValueError, match=r"SoftMaxLoss: class labels must lie in \[0, 9\]"):
        loss.forward(np.zeros((2, 10)), np.array([3, 10]))


def _diverging_data(rng):
    x = rng.normal(size=(4, 8, 6))
    x[2, 3, 1] = np.nan  # one corrupt sample in the third batch
    y = np.eye(3)[rng.integers(0, 3, size=(4, 8))]
    return x, y


def test_nan_loss_stops_sequential_training_with_a_message():
    rng = np.random.default_rng(0)
    x, y = _diverging_data(rng)
    model = Sequential([Linear(6, 3)], loss=SoftMaxLoss(), optimizer=GradientDescent(0.1))
    model.train_step(x[0], y[0])
    model.train_step(x[1], y[1])
    weights = model.layers[0].W.copy()
    with pytest.raises(TrainingDivergedError, match=r"loss became nan at optimizer step 3.*training stopped"):
        model.train_step(x[2], y[2])
    # The NaN never reached the weights.
    np.testing.assert_array_equal(model.layers[0].W, weights)


def test_nan_loss_stops_the_seed_fit():
    rng = np.random.default_rng(1)
    x, y = _diverging_data(rng)
    net = NeuralNetwork(6, 3, 8, GradientDescent(0.1), [Linear((8, 6), (8, 3))], SoftMaxLoss((8, 3)))
    with pytest.raises(TrainingDivergedError, match="loss became nan"):
        net.fit(x, y, n_epochs=1, verbose=False)


def test_exploding_learning_rate_is_reported():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(16, 6)), rng.normal(size=(16, 3))
    model = Sequential([Linear(6, 3, dtype=np.float64)], loss=MSELoss(), optimizer=GradientDescent(1e3))
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(
        TrainingDivergedError, match=r"loss became (nan|inf) at optimizer step \d+.*smaller learning rate"
    ):
        for _ in range(1000):
            model.train_step(x, y)


def test_fit_refuses_image_batches_without_labels():
    net = NeuralNetwork(4, 2, 3, GradientDescent(0.1), [Linear((3, 4), (3, 2))], SoftMaxLoss((3, 2)))
    with pytest.raises(ValueError, match=r"NeuralNetwork.fit: X has 5 batches but y only has 4"):
        net.fit(np.zeros((5, 3, 4)), np.zeros((4, 3, 2)), verbose=False)
