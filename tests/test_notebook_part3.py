"""Part 3 of the seed notebook (``lab8_cnn_notebook.txt``), with PyTorch instead of TensorFlow.

The notebook fed one batch through its layers and through a hand-built TensorFlow twin with
the same weights, then compared them with checks that could not fail
(``np.max((a - b) < 2e-1)``). Here the notebook's own cells run verbatim, the twin is built by
hand with ``torch.nn.functional`` just as the notebook did with TensorFlow (our layouts are
already PyTorch's NCHW / OIHW, so no ``np.moveaxis`` is needed), and every comparison is an
honest ``np.abs(a - b).max() <= tol``: for the output, for dL/dx and for each dL/dW.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

# Largest error allowed, relative to the largest magnitude of the reference tensor.
TOLERANCE = {np.float32: 1e-5, np.float64: 1e-10}


def run_notebook_part3(dtype):
    """Part 1's data and model cells (training cut to two batches), then Part 3's cells."""
    from nn_from_scratch import initializers
    from nn_from_scratch.datasets import mnist  # was: from keras.datasets import mnist
    from nn_from_scratch.optimizers import GradientDescent
    from nn_from_scratch.examples.simple_nn import NeuralNetwork
    from nn_from_scratch.nodes import ReLU, SoftMaxLoss, Vectorization
    from nn_from_scratch.neurons import Linear, Convolution
    from nn_from_scratch.interfaces import Neuron

    initializers.set_seed(0)

    # ---- Part 1, In [2] and In [3] --------------------------------------------------------------
    (train_X, train_y), (test_X, test_y) = mnist.load_data()
    train_X = train_X[:1000]
    n_input, n_output, batch_size, n_channels = 28**2, 10, 50, 1
    train_X = train_X.reshape(train_X.shape[0] // batch_size, batch_size, n_channels, 28, 28)
    train_y_ohe = np.zeros((len(train_y), n_output))
    train_y_ohe[np.arange(len(train_y)), train_y] = 1
    train_y_ohe = train_y_ohe.reshape((train_y.shape[0] // batch_size, batch_size, n_output))
    train_X = train_X / 255

    # ---- Part 1, In [6] (plus dtype=, so that float64 can be checked too) ------------------------
    gds = GradientDescent(lr=0.5)
    layers = [
        Convolution(
            (batch_size, n_channels, 28, 28),
            kernel_size=3,
            output_layers=4,
            use_bias=False,
            dtype=dtype,
        ),
        ReLU((batch_size, 4, 26, 26)),
        Convolution(
            (batch_size, 4, 26, 26),
            kernel_size=7,
            output_layers=2,
            use_bias=False,
            dtype=dtype,
        ),
        ReLU((batch_size, 2, 20, 20)),
        Vectorization((batch_size, 2, 20, 20)),
        Linear((batch_size, 800), (batch_size, n_output), dtype=dtype)
    ]
    loss_fn = SoftMaxLoss((batch_size, n_output))
    network = NeuralNetwork(
        n_input=n_input,
        n_output=n_output,
        batch_size=batch_size,
        optimizer=gds,
        layers=layers,
        loss_fn=loss_fn
    )
    # Two batches of training, so the weights (and the bias row) are no longer the initial ones.
    network.fit(train_X[1:3], train_y_ohe[1:3], n_epochs=1, verbose=False)

    # ---- Part 3, In [9] to In [10] ------------------------------------------------------------------
    example_pic, example_label = train_X[0], train_y_ohe[0]

    state = example_pic.copy()
    for layer in layers:
        state = layer.forward(state)

    loss = loss_fn.forward(state, example_label)
    dL_dy = loss_fn.backward()
    partial_derivative = dL_dy
    dL_dx = []
    dL_dw = []

    for layer in layers[::-1]:
        partial_derivative = layer.backward(partial_derivative)
        dL_dx.append(partial_derivative)

        if isinstance(layer, Neuron):
            dL_dw.append(layer._W_pd)

    # ---- Part 3, In [12] to In [17], with PyTorch: the twin, on the same weights -------------------
    torch_dtype = {np.float32: torch.float32, np.float64: torch.float64}[dtype]
    example_pic_t = torch.tensor(example_pic, dtype=torch_dtype, requires_grad=True)
    weights_t = [
        torch.tensor(l.W, dtype=torch_dtype, requires_grad=True)
        for l in [layers[0], layers[2]]
    ]
    weights_t.extend([
        torch.tensor(layers[5].W[1:, :], dtype=torch_dtype, requires_grad=True),
        torch.tensor(layers[5].W[0, :], dtype=torch_dtype, requires_grad=True),
    ])
    h = F.relu(F.conv2d(example_pic_t, weights_t[0]))
    h = F.relu(F.conv2d(h, weights_t[1]))
    output_t = h.flatten(1) @ weights_t[2] + weights_t[3]
    output_t.backward(torch.tensor(dL_dy, dtype=torch_dtype))  # as tape.gradient(..., output_gradients=dL_dy)

    return dict(
        state=state,
        loss=loss,
        dL_dy=dL_dy,
        dL_dx=dL_dx[-1],
        dL_dw={
            "conv 3x3 W": (dL_dw[2], weights_t[0].grad),
            "conv 7x7 W": (dL_dw[1], weights_t[1].grad),
            "linear W[1:]": (dL_dw[0][1:], weights_t[2].grad),
            "linear bias W[0]": (dL_dw[0][0], weights_t[3].grad),
        },
        output_t=output_t.detach().numpy(),
        dL_dx_t=example_pic_t.grad.numpy(),
    )


def assert_close(ours: np.ndarray, reference: np.ndarray, tol: float, what: str) -> float:
    ours, reference = np.asarray(ours), np.asarray(reference)
    assert ours.shape == reference.shape, f"{what}: shape {ours.shape} vs torch {reference.shape}"
    scale = np.abs(reference).max()
    assert scale > 0, f"{what}: the torch reference is all zeros, nothing is compared"
    error = np.abs(ours.astype(np.float64) - reference).max()
    assert error <= tol * scale, f"{what}: max |ours - torch| = {error:.3e} > {tol:.0e} * {scale:.3e}"
    return error / scale


@pytest.fixture(scope="module", params=[np.float32, np.float64], ids=["float32", "float64"])
def part3(request):
    return request.param, run_notebook_part3(request.param)


def test_outputs_agree(part3):
    dtype, r = part3
    assert r["state"].dtype == dtype
    assert_close(r["state"], r["output_t"], TOLERANCE[dtype], "output")


def test_input_gradients_agree(part3):
    dtype, r = part3
    assert r["dL_dx"].shape == (50, 1, 28, 28)
    assert_close(r["dL_dx"], r["dL_dx_t"], TOLERANCE[dtype], "dL/dx")


@pytest.mark.parametrize("name", ["conv 3x3 W", "conv 7x7 W", "linear W[1:]", "linear bias W[0]"])
def test_weight_gradients_agree(part3, name):
    dtype, r = part3
    ours, reference = r["dL_dw"][name]
    assert ours.dtype == dtype
    assert_close(ours, reference.numpy(), TOLERANCE[dtype], f"dL/d({name})")


def test_the_check_can_fail(part3):
    """The notebook's checks could not fail; these can: a flipped dL/dx is caught."""
    dtype, r = part3
    with pytest.raises(AssertionError, match="dL/dx"):
        assert_close(r["dL_dx"][..., ::-1], r["dL_dx_t"], TOLERANCE[dtype], "dL/dx")
    # ...and so is an output that is off by one part in 10^4.
    with pytest.raises(AssertionError, match="output"):
        assert_close(r["state"] * (1 + 1e-4), r["output_t"], TOLERANCE[dtype], "output")
