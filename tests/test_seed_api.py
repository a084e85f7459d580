"""The seed's API, as the notebook uses it: module paths, constructor signatures, shapes, layouts,
dtypes and initialisation."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from nn_from_scratch import initializers
from nn_from_scratch.examples.simple_nn import NeuralNetwork
from nn_from_scratch.interfaces import Neuron, Node, Optimizer
from nn_from_scratch.neurons import Convolution, Linear
from nn_from_scratch.nodes import MSELoss, ReLU, SoftMax, SoftMaxLoss, Vectorization
from nn_from_scratch.optimizers import GradientDescent


def positional_names(fn) -> list[str]:
    return [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"
    ]


@pytest.mark.parametrize(
    "fn, expected",
    [
        (Convolution.__init__, ["input_dim", "kernel_size", "output_layers", "padding", "W", "B", "use_bias", "W_init_range"]),
        (Linear.__init__, ["input_dim", "output_dim", "W", "W_init_range"]),
        (ReLU.__init__, ["n_input"]),
        (Vectorization.__init__, ["input_dim"]),
        (SoftMaxLoss.__init__, ["n_input"]),
        (GradientDescent.__init__, ["lr"]),
        (NeuralNetwork.__init__, ["n_input", "n_output", "batch_size", "optimizer", "layers", "loss_fn"]),
        (NeuralNetwork.fit, ["X", "y", "n_epochs"]),
        (NeuralNetwork.predict, ["x"]),
    ],
    ids=lambda v: getattr(v, "__qualname__", None),
)
def test_constructor_positional_order(fn, expected):
    assert positional_names(fn)[: len(expected)] == expected


def test_convolution_defaults_and_new_keywords():
    params = inspect.signature(Convolution.__init__).parameters
    assert params["output_layers"].default == 1
    assert params["padding"].default == 0
    assert params["W"].default is None and params["B"].default is None
    assert params["use_bias"].default is True
    assert params["W_init_range"].default is None
    assert params["stride"].default == 1 and params["dilation"].default == 1


def test_class_hierarchy():
    assert issubclass(Convolution, Neuron) and issubclass(Linear, Neuron)
    for node in (ReLU, SoftMax, Vectorization):
        assert issubclass(node, Node)
    assert issubclass(GradientDescent, Optimizer)
    assert callable(MSELoss().forward)


def test_positional_call_means_what_the_seed_meant():
    W = np.arange(2 * 1 * 3 * 3, dtype=np.float32).reshape(2, 1, 3, 3)
    B = np.array([1.0, -1.0], dtype=np.float32)
    conv = Convolution((50, 1, 8, 8), 3, 2, 1, W, B, True, None)
    assert conv.padding == 1 and conv.out_channels == 2 and conv.use_bias
    np.testing.assert_array_equal(conv.W, W)
    np.testing.assert_array_equal(conv.B, B)
    assert conv.forward(np.zeros((3, 1, 8, 8))).shape == (3, 2, 8, 8)

    W_lin = np.ones((5, 2), dtype=np.float32)
    lin = Linear((50, 4), (50, 2), W_lin, None)
    np.testing.assert_array_equal(lin.W, W_lin)
    assert GradientDescent(0.25).lr == 0.25


def torch_seed_net(conv, lin, x, dy=None):
    """The seed's conv -> ReLU -> flatten -> linear in torch, on our weights: (y, dL/dx)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x_t = torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True)
    W = torch.tensor(conv.W.astype(np.float64))
    B = None if conv.B is None else torch.tensor(conv.B.astype(np.float64))
    h = F.relu(F.conv2d(x_t, W, B)).flatten(1)
    y = h @ torch.tensor(lin.W[1:].astype(np.float64)) + torch.tensor(lin.W[0].astype(np.float64))
    y.backward(torch.ones_like(y) if dy is None else torch.tensor(dy))
    return y.detach().numpy(), x_t.grad.numpy()


@pytest.mark.parametrize("batch", [1, 7, 50])
def test_batch_size_in_shape_is_ignored(batch):
    rng = np.random.default_rng(batch)
    layers = [
        Convolution((50, 1, 12, 12), kernel_size=3, output_layers=4, use_bias=False),
        ReLU((50, 4, 10, 10)),
        Vectorization((50, 4, 10, 10)),
        Linear((50, 400), (50, 10)),
    ]
    x0 = rng.normal(size=(batch, 1, 12, 12))
    x = x0
    for layer in layers:
        x = layer.forward(x)
    assert x.shape == (batch, 10)
    grad = np.ones_like(x)
    for layer in reversed(layers):
        grad = layer.backward(grad)
    assert grad.shape == (batch, 1, 12, 12)
    y_ref, dx_ref = torch_seed_net(layers[0], layers[3], x0)  # float32 layers: float32 tolerances
    np.testing.assert_allclose(x, y_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad, dx_ref, rtol=1e-5, atol=1e-5)


def test_batch_size_may_change_between_calls():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    conv = Convolution((50, 2, 6, 6), 3, 3, dtype=np.float64)
    conv.B[...] = rng.normal(size=3)
    for batch in (50, 3, 1, 64):
        x, dy = rng.normal(size=(batch, 2, 6, 6)), rng.normal(size=(batch, 3, 4, 4))
        y = conv.forward(x)
        dx = conv.backward(dy)
        x_t = torch.tensor(x, requires_grad=True)
        y_t = torch.nn.functional.conv2d(x_t, torch.tensor(conv.W), torch.tensor(conv.B))
        y_t.backward(torch.tensor(dy))
        np.testing.assert_allclose(y, y_t.detach().numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dx, x_t.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_shapes_are_inferred_from_the_first_input():
    conv = Convolution(kernel_size=3, output_layers=4)
    lin = Linear(output_dim=10)
    assert getattr(conv, "W", None) is None and getattr(lin, "W", None) is None  # not built: reading .W raises NotBuiltError
    x = np.random.default_rng(12).normal(size=(2, 3, 9, 9))
    h = conv.forward(x)
    y = lin.forward(Vectorization().forward(h))
    assert conv.W.shape == (4, 3, 3, 3) and conv.B.shape == (4,)
    assert lin.W.shape == (4 * 7 * 7 + 1, 10)
    assert y.shape == (2, 10)
    # The lazily created weights are used as they are: the values agree with torch on them.
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    h_ref = F.conv2d(torch.tensor(x), torch.tensor(conv.W, dtype=torch.float64), torch.tensor(conv.B, dtype=torch.float64))
    y_ref = h_ref.flatten(1) @ torch.tensor(lin.W[1:], dtype=torch.float64) + torch.tensor(lin.W[0], dtype=torch.float64)
    np.testing.assert_allclose(y, y_ref.numpy(), rtol=1e-5, atol=1e-5)


def test_gradients_are_readable_as_W_pd_and_B_pd():
    rng = np.random.default_rng(0)
    conv = Convolution((2, 5, 5), 3, 3)
    lin = Linear(6, 4)
    conv.backward(np.ones_like(conv.forward(rng.normal(size=(2, 2, 5, 5)))))
    lin.backward(np.ones_like(lin.forward(rng.normal(size=(3, 6)))))
    assert conv._W_pd.shape == conv.W.shape and conv._B_pd.shape == conv.B.shape
    assert lin._W_pd.shape == lin.W.shape
    # dL/dB of a conv with dL/dy = 1 is the number of output positions over the batch.
    np.testing.assert_array_equal(conv._B_pd, np.full(3, 2 * 3 * 3))
    for name, grad in conv.gradients().items():
        assert grad is getattr(conv, f"_{name}_pd")


def test_convolution_layout_is_out_in_kh_kw_with_per_channel_bias():
    W = np.zeros((2, 3, 2, 2))
    W[1, 2, 0, 1] = 1.0  # output channel 1 copies input channel 2, shifted by one column
    B = np.array([0.5, -2.0])
    conv = Convolution((3, 4, 5), (2, 2), 2, W=W, B=B, dtype=np.float64)
    x = np.random.default_rng(1).normal(size=(1, 3, 4, 5))
    y = conv.forward(x)
    np.testing.assert_array_equal(y[0, 0], np.full((3, 4), 0.5))
    np.testing.assert_array_equal(y[0, 1], x[0, 2, :3, 1:] - 2.0)


def test_linear_layout_has_the_bias_in_row_0():
    W = np.zeros((4, 2))
    W[0] = [3.0, -1.0]
    W[1:, 0] = [1.0, 10.0, 100.0]
    lin = Linear(3, 2, W, dtype=np.float64)
    y = lin.forward(np.array([[1.0, 2.0, 3.0]]))
    np.testing.assert_array_equal(y, [[3.0 + 321.0, -1.0]])


def test_float32_by_default_and_float64_on_request():
    x = np.random.default_rng(2).normal(size=(2, 1, 6, 6))  # float64 input
    conv32, conv64 = Convolution((1, 6, 6), 3, 2), Convolution((1, 6, 6), 3, 2, dtype=np.float64)
    lin32, lin64 = Linear(8, 3), Linear(8, 3, dtype=np.float64)
    for layer, inp in ((conv32, x), (conv64, x), (lin32, x[:, 0, 0, :2].repeat(4, 1)), (lin64, x[:, 0, 0, :2].repeat(4, 1))):
        expected = np.float32 if layer in (conv32, lin32) else np.float64
        out = layer.forward(inp)
        dx = layer.backward(np.ones_like(out))
        assert out.dtype == expected and dx.dtype == expected
        for name, p in layer.parameters().items():
            assert p.dtype == expected and layer.gradients()[name].dtype == expected


@pytest.mark.parametrize(
    "make, fan_in, fan_out",
    [
        (lambda: Linear(800, 10), 800, 10),
        (lambda: Convolution((4, 26, 26), 7, 2), 4 * 49, 2 * 49),
        (lambda: Convolution((1, 28, 28), 3, 64), 9, 64 * 9),
    ],
)
def test_default_init_is_glorot_uniform_with_zero_bias(make, fan_in, fan_out):
    initializers.set_seed(0)
    layer = make()
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    if isinstance(layer, Linear):
        kernel, bias = layer.W[1:], layer.W[0]
    else:
        kernel, bias = layer.W, layer.B
    np.testing.assert_array_equal(bias, 0.0)
    assert np.abs(kernel).max() <= limit
    # A uniform draw of this many values reaches close to both ends and has variance limit^2 / 3.
    assert kernel.max() > 0.95 * limit and kernel.min() < -0.95 * limit
    assert np.var(kernel) == pytest.approx(limit**2 / 3, rel=0.1)


@pytest.mark.parametrize("r", [0.01, 0.5])
def test_W_init_range_draws_uniform_minus_r_to_r(r):
    initializers.set_seed(1)
    conv = Convolution((3, 8, 8), 5, 8, W_init_range=r)
    lin = Linear(100, 20, W_init_range=r)
    for kernel in (conv.W, lin.W[1:]):
        assert np.abs(kernel).max() <= r
        assert kernel.max() > 0.95 * r and kernel.min() < -0.95 * r


def test_neural_network_fit_takes_prebatched_data_and_predict_takes_BHW():
    rng = np.random.default_rng(3)
    n_batches, batch, classes = 4, 5, 3
    X = rng.normal(size=(n_batches, batch, 1, 8, 8))
    labels = rng.integers(0, classes, size=(n_batches, batch))
    y = np.eye(classes)[labels]
    layers = [
        Convolution((batch, 1, 8, 8), kernel_size=3, output_layers=2, use_bias=False),
        ReLU((batch, 2, 6, 6)),
        Vectorization((batch, 2, 6, 6)),
        Linear((batch, 72), (batch, classes)),
    ]
    net = NeuralNetwork(64, classes, batch, GradientDescent(0.1), layers, SoftMaxLoss((batch, classes)))
    W_conv, W_lin = layers[0].W.copy(), layers[3].W.copy()
    loss = net.fit(X, y, n_epochs=2)
    # Reference: torch trained on the same batches in the same order, SGD(0.1), mean cross-entropy;
    # fit returns the mean batch loss of the last epoch.
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    params = [torch.tensor(W_conv, dtype=torch.float64, requires_grad=True),
              torch.tensor(W_lin[1:], dtype=torch.float64, requires_grad=True),
              torch.tensor(W_lin[0], dtype=torch.float64, requires_grad=True)]
    sgd = torch.optim.SGD(params, lr=0.1)
    for _ in range(2):
        losses = []
        for xb, lb in zip(X, labels):
            sgd.zero_grad()
            logits = F.relu(F.conv2d(torch.tensor(xb), params[0])).flatten(1) @ params[1] + params[2]
            batch_loss = F.cross_entropy(logits, torch.tensor(lb))
            batch_loss.backward()
            sgd.step()
            losses.append(batch_loss.item())
    assert loss == pytest.approx(np.mean(losses), rel=1e-4)
    np.testing.assert_allclose(layers[0].W, params[0].detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layers[3].W[1:], params[1].detach().numpy(), rtol=1e-4, atol=1e-5)
    predictions = net.predict(X[0][:, 0])  # (B, H, W), as the notebook passes the test images
    assert predictions.shape == (batch, classes)
    np.testing.assert_allclose(predictions, net.predict(X[0]), rtol=0, atol=0)
