"""Graph models (``graph.Model``) through ``interop`` and ``verify`` (issue 8).

The references are torch (autograd on ``to_torch``'s twin, one module per layer) and Keras 3
(functional models, channels-last), never our own code:

* ``verify.compare`` against torch, node by node: output, ``dL/dx`` of every input and the
  gradients of each call's parameters, float64 <= 1e-10 and float32 <= 1e-5 (the defaults);
* ``verify.compare_training``: 20 float64 steps of SGD with momentum and of Adam, side by side
  with the torch twin (the shared layer is one torch module there, so its summed gradient is
  torch's);
* ``verify.gradcheck``: central differences in float64 through the model's own forward/backward;
* ``to_keras`` / ``from_keras``: the functional twin and the round trip predict what we predict,
  and a functional Keras model written by hand converts to a graph of ours that predicts what
  Keras predicts.

Two models: the "core" graph (residual ``Add``, ``Concatenate``, squeeze-and-excitation
``Multiply`` broadcasting (C, 1, 1) gates over (C, H, W), a convolution used at two places,
conv + batch norm) and the "every new layer" graph (also depthwise and grouped convolution,
transposed convolution, bilinear upsampling, layer and group norm, GELU, SiLU, ELU, Softplus,
LogSoftMax, Identity, Reshape). Some tests break a layer on purpose (monkeypatch) to show the
check fails at that node.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nn_from_scratch import interop, verify  # noqa: E402
from nn_from_scratch.graph import Input, Model  # noqa: E402
from nn_from_scratch.losses import MSELoss, SoftMaxLoss  # noqa: E402
from nn_from_scratch.neurons import (BatchNormalization, Convolution, GroupNormalization,  # noqa: E402
                                     LayerNormalization, Linear, TransposedConvolution)
from nn_from_scratch.nodes import (ELU, GELU, Add, AveragePooling, Concatenate, GlobalAveragePooling,  # noqa: E402
                                   Identity, LogSoftMax, MaxPooling, Multiply, ReLU, Reshape, Sigmoid, SiLU,
                                   Softplus, Tanh, UpSampling2D, Vectorization)
from nn_from_scratch.optimizers import Adam, GradientDescent  # noqa: E402
from nn_from_scratch.verify import GradcheckError  # noqa: E402

try:
    from nn_from_scratch.interop import keras as keras_interop
except ImportError:  # keras not installed
    keras_interop = None
keras = getattr(keras_interop, "keras", None)
needs_keras = pytest.mark.skipif(keras is None or keras.backend.backend() != "torch",
                                 reason="needs keras on its torch backend")

TOL = {np.float64: 1e-10, np.float32: 1e-5}


def randomise(model: Model, seed: int) -> Model:
    """Non-trivial biases, scales and running statistics, so every weight path is exercised."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, (Convolution, TransposedConvolution)) and layer.B is not None:
            layer.B[...] = rng.normal(scale=0.5, size=layer.B.shape)
        if isinstance(layer, Linear):
            layer.W[0] = rng.normal(scale=0.5, size=layer.W.shape[1])
        if isinstance(layer, (BatchNormalization, GroupNormalization, LayerNormalization)):
            layer.gamma[...] = rng.uniform(0.5, 1.5, size=layer.gamma.shape)
            layer.beta[...] = rng.normal(scale=0.5, size=layer.beta.shape)
        if isinstance(layer, BatchNormalization):
            layer.running_mean[...] = rng.normal(size=layer.running_mean.shape)
            layer.running_var[...] = rng.uniform(0.5, 2.0, size=layer.running_var.shape)
    return model


def core_graph(dtype=np.float64, size: int = 6) -> Model:
    """Residual Add, Concatenate, SE-style broadcasting Multiply, a shared convolution, conv + batch norm."""
    x = Input(shape=(3, size, size))
    h = Convolution(kernel_size=3, output_layers=4, padding=1, use_bias=False, dtype=dtype)(x)
    h = ReLU()(BatchNormalization(dtype=dtype)(h))
    shared = Convolution(kernel_size=3, output_layers=4, padding=1, dtype=dtype, name="shared_conv")
    a = shared(h)
    b = shared(Tanh()(a))  # the same weights a second time
    r = Add()([h, b])  # residual
    gates = Reshape((4, 1, 1))(Sigmoid()(Linear(output_dim=4, dtype=dtype)(GlobalAveragePooling()(r))))
    se = Multiply()([r, gates])  # (4, 1, 1) gates broadcast over (4, H, W)
    cat = Concatenate(axis=1)([se, a])  # 8 channels
    y = Linear(output_dim=5, dtype=dtype)(Vectorization()(MaxPooling(2)(cat)))
    return randomise(Model(x, y, loss=SoftMaxLoss(), optimizer=Adam(1e-2), seed=3), 4)


def every_new_layer_graph(dtype=np.float64) -> Model:
    """Residual Add, Concatenate, depthwise and grouped conv, transposed conv, upsampling, layer and
    group norm, the new activations, Reshape and a broadcasting Multiply in one graph."""
    x = Input(shape=(4, 6, 6))
    h = Convolution(kernel_size=3, output_layers=8, padding=1, dtype=dtype)(x)
    h = GELU()(GroupNormalization(2, dtype=dtype)(h))
    d = SiLU()(Convolution(kernel_size=3, output_layers=8, padding=1, groups=8, dtype=dtype)(h))  # depthwise
    g = Convolution(kernel_size=1, output_layers=8, groups=4, dtype=dtype)(d)  # grouped
    r = Add()([h, g])  # residual
    down = AveragePooling(2)(r)  # (8, 3, 3)
    t = ELU()(TransposedConvolution(kernel_size=3, output_layers=4, stride=2, padding=1, output_padding=1,
                                    dtype=dtype)(down))  # (4, 6, 6)
    u = GELU(approximate="tanh")(UpSampling2D(size=2, interpolation="bilinear")(down))  # (8, 6, 6)
    v = UpSampling2D(size=2)(MaxPooling(2)(h))  # nearest, (8, 6, 6)
    cat = Concatenate(axis=1)([t, u, r, v])  # (28, 6, 6)
    n = LayerNormalization(axis=1, dtype=dtype)(cat)  # over the channels at each pixel
    gates = Reshape((28, 1, 1))(Sigmoid()(Linear(output_dim=28, dtype=dtype)(GlobalAveragePooling()(n))))
    s = Multiply()([n, gates])
    z = Identity()(MaxPooling(2)(Softplus()(Convolution(kernel_size=1, output_layers=3, dtype=dtype)(s))))
    y = LogSoftMax()(Linear(output_dim=5, dtype=dtype)(Vectorization()(z)))
    return randomise(Model(x, y, loss=SoftMaxLoss(), optimizer=Adam(1e-2), seed=5), 6)


def data(model: Model, n: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *model.input_shape)), rng.integers(0, 5, size=n)


def assert_close(ours: np.ndarray, ref: np.ndarray, rtol: float, what: str) -> None:
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != {ref.shape}"
    err = float(np.max(np.abs(ours - ref))) / float(np.max(np.abs(ref)))
    assert err <= rtol, f"{what}: relative difference {err:.3e} > {rtol:g}"


# -- to_torch / from_torch ------------------------------------------------------------------
def test_to_torch_runs_the_graph_with_one_module_per_layer() -> None:
    """The shared convolution is one torch module (its weight is one tensor): torch's parameters
    are exactly our parameter arrays, and the twin computes our function."""
    model = core_graph()
    net = interop.to_torch(model).eval()
    ours = [p for _, p in model.parameters()]
    theirs = list(net.parameters())
    # conv weight; bn weight, bias; the shared conv's weight and bias, once; two Linear weight + bias
    # (our Linear holds its bias as row 0 of W, so we have 7 arrays to torch's 9; a duplicated
    # shared conv would make 11, and more values).
    assert len(theirs) == 9 and len(ours) == 7
    assert sum(p.numel() for p in theirs) == sum(p.size for p in ours)
    x, _ = data(model)
    assert_close(net(torch.from_numpy(x)).detach().numpy(), model.predict(x), 1e-12, "torch twin")
    back = interop.from_torch(net)
    assert isinstance(back, Model) and len(back.layers) == len(model.layers) and len(back.nodes) == len(model.nodes)
    assert_close(back.predict(x), model.predict(x), 1e-15, "from_torch(to_torch(m))")


def test_to_torch_shares_the_weights_of_a_layer_used_twice() -> None:
    """Changing the shared torch conv changes both of its calls: perturbing its weight moves the
    output as perturbing our shared layer does (an unshared copy would move it less)."""
    model = core_graph()
    x, _ = data(model)
    net = interop.to_torch(model).eval()
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.bias is not None)
    with torch.no_grad():
        conv.bias += 0.1
    shared = next(layer for layer in model.layers if layer.name == "shared_conv")
    shared.B += 0.1
    assert_close(net(torch.from_numpy(x)).detach().numpy(), model.predict(x), 1e-12, "shared bias moved on both sides")


# -- verify.compare ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("mode", ["local", "end_to_end"])
def test_core_graph_matches_torch_node_by_node(dtype, mode) -> None:
    model = core_graph()
    x, y = data(model)
    report = verify.compare(model, x, y, reference="torch", dtype=dtype, mode=mode)
    assert report.ok, str(report)
    assert report.tol == TOL[dtype] and report.max_rel_error <= TOL[dtype]
    assert len(report.rows) == len(model.nodes) + 1  # one row per node, then the loss
    names = [row.name for row in report.rows]
    assert "shared_conv" in names and "shared_conv (call 2)" in names
    merges = [row for row in report.rows if isinstance(row.layer, (Add, Multiply, Concatenate))]
    assert len(merges) == 3 and all(len(row.input_grads) == 2 for row in merges)
    shared_rows = [row for row in report.rows if row.layer.name == "shared_conv"]
    assert all(set(row.param_grads) == {"W", "B"} for row in shared_rows)


@needs_keras
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_core_graph_matches_keras_node_by_node(dtype) -> None:
    model = core_graph()
    x, y = data(model)
    report = verify.compare(model, x, y, reference="keras", dtype=dtype)
    assert report.ok, str(report)
    assert len(report.rows) == len(model.nodes) + 1


def test_compare_finds_a_wrong_merge_backward(monkeypatch) -> None:
    """A Multiply whose gradient forgets the broadcast sum of the gates: compare points at it."""
    from nn_from_scratch.nodes import merge

    monkeypatch.setattr(merge, "_reduce_to", lambda grad, shape: grad.reshape(-1)[:int(np.prod(shape))].reshape(shape))
    model = core_graph()
    x, y = data(model)
    report = verify.compare(model, x, y)
    assert not report.ok
    div = report.first_divergence
    assert isinstance(div.layer, Multiply) and div.forward_ok(report.tol) and not div.backward_ok(report.tol), str(report)


def test_compare_checks_each_call_of_a_shared_layer(monkeypatch) -> None:
    """A convolution whose weight gradient is wrong only at its second call (one more call than
    expected): compare flags the second call's row and not the first."""
    model = core_graph()
    shared = next(layer for layer in model.layers if layer.name == "shared_conv")
    original = type(shared).backward
    calls = []

    def backward(self, dL_dy, need_input_grad=True):
        out = original(self, dL_dy, need_input_grad)
        calls.append(1)
        if len(calls) == 1:  # backward runs in reverse: the first backward is the second call
            self._W_pd *= 1.001
        return out

    monkeypatch.setattr(shared, "backward", backward.__get__(shared))
    x, y = data(model)
    report = verify.compare(model, x, y)
    bad = [row.name for row in report.rows if not row.backward_ok(report.tol)]
    assert bad == ["shared_conv (call 2)"], str(report)


# -- verify.compare_training ------------------------------------------------------------------
@pytest.mark.parametrize("optimizer", [GradientDescent(0.05, momentum=0.9), Adam(1e-2)], ids=["sgd", "adam"])
def test_core_graph_trains_as_torch_does(optimizer) -> None:
    model = core_graph()
    x, y = data(model, n=8)
    before = [p.copy() for _, p in model.parameters()]
    result = verify.compare_training(model, x, y, steps=20, optimizer=optimizer, batch_size=4)
    assert len(result.losses) == 20 and result.losses[-1] < result.losses[0]
    assert result.max_loss_rel_error <= 1e-10, str(result)
    assert result.max_weight_rel_error <= 1e-10, result.weight_errors
    assert any("shared_conv" in k for k in result.weight_errors)
    assert all(np.array_equal(a, p) for a, (_, p) in zip(before, model.parameters())), "the model itself changed"


def test_compare_training_finds_a_shared_layer_updated_with_one_call_only(monkeypatch) -> None:
    """If our graph kept only the last call's gradient of the shared layer (no accumulation), the
    training diverges from torch, whose module sums both calls."""
    from nn_from_scratch.interfaces import Neuron

    monkeypatch.setattr(Neuron, "accumulate_gradient", lambda self, name, grad: setattr(self, f"_{name}_pd", grad))
    model = core_graph()
    x, y = data(model, n=8)
    result = verify.compare_training(model, x, y, steps=3, optimizer=GradientDescent(0.05), batch_size=4)
    assert result.max_weight_rel_error > 1e-3


# -- verify.gradcheck -------------------------------------------------------------------------
@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_core_graph_passes_gradcheck(training) -> None:
    model = core_graph(size=4)
    x, y = data(model, n=2)
    assert verify.gradcheck(model, x, y, training=training)


def test_gradcheck_of_a_graph_finds_a_wrong_merge_gradient(monkeypatch) -> None:
    """Concatenate sending each input the wrong slice of dL/dy fails the finite differences."""
    model = core_graph(size=4)
    x, y = data(model, n=2)
    original = Concatenate.backward
    monkeypatch.setattr(Concatenate, "backward", lambda self, g, need_input_grad=True: original(self, g)[::-1])
    with pytest.raises(GradcheckError):
        verify.gradcheck(model, x, y)


# -- to_keras / from_keras --------------------------------------------------------------------
def keras_predict(net, x_nchw: np.ndarray) -> np.ndarray:
    with keras_interop.float64_arithmetic():
        out = net(torch.from_numpy(np.ascontiguousarray(np.moveaxis(x_nchw, 1, -1))), training=False)
    return out.detach().cpu().numpy()


@needs_keras
def test_core_graph_keras_round_trip() -> None:
    model = core_graph()
    x, _ = data(model)
    net = interop.to_keras(model)
    assert not isinstance(net, keras.Sequential)
    # One Keras Conv2D for the shared layer, called twice.
    convs = [k for k in net.layers if isinstance(k, keras.layers.Conv2D)]
    assert len(convs) == 2 and sorted(len(k._inbound_nodes) for k in convs) == [1, 2]
    expected = model.predict(x)
    assert_close(keras_predict(net, x), expected, 1e-12, "Keras twin")
    back = interop.from_keras(net)
    assert isinstance(back, Model) and len(back.layers) == len(model.layers) and len(back.nodes) == len(model.nodes)
    assert_close(back.predict(x), expected, 1e-12, "from_keras(to_keras(m))")
    assert verify.compare(back, x, data(model)[1], loss=SoftMaxLoss()).ok


@needs_keras
def test_keras_layouts_through_merges() -> None:
    """Keras holds a flattened image in (H, W, C) order: two of them concatenated feed a Dense whose
    rows follow the joined order, and an output made of flattened images comes out in ours;
    Concatenate along the image height is Keras' axis 1."""
    x_in = Input(shape=(2, 4, 3))
    a = Convolution(kernel_size=3, output_layers=3, padding=1, dtype=np.float64)(x_in)
    tall = Concatenate(axis=2)([a, Tanh()(a)])  # (3, 8, 3): along the height
    joined = Concatenate(axis=1)([Vectorization()(tall), Vectorization()(x_in)])  # 72 + 24 features
    hidden = Linear(output_dim=4, dtype=np.float64)(joined)
    as_output = Concatenate(axis=-1)([hidden, Vectorization()(a)])  # a flattened image reaches the output
    x = np.random.default_rng(3).normal(size=(3, 2, 4, 3))
    for output in (hidden, as_output):
        model = randomise(Model(x_in, output, seed=1), 2)
        net = interop.to_keras(model)
        expected = model.predict(x)
        what = f"output {output.shape}"
        assert_close(keras_predict(net, x), expected, 1e-12, f"Keras twin, {what}")
        assert_close(interop.from_keras(net).predict(x), expected, 1e-12, f"from_keras(to_keras(m)), {what}")
        report = verify.compare(model, x, np.random.default_rng(4).normal(size=expected.shape), reference="keras",
                                loss=MSELoss())
        assert report.ok, str(report)


@needs_keras
def test_from_keras_functional_model_written_by_hand() -> None:
    """A Keras functional model: a Conv2D shared by two branches, Concatenate on the channels
    (axis -1 in NHWC), a residual Add, an SE Multiply with (1, 1, C) gates, a Flatten followed by
    a Dense (rows in Keras' (H, W, C) order)."""
    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input((6, 6, 3), dtype="float64")
    stem = L.Conv2D(4, 3, padding="same", dtype="float64")(inp)
    shared = L.Conv2D(4, 3, padding="same", activation="relu", dtype="float64")
    a, b = shared(stem), shared(L.Activation("tanh", dtype="float64")(stem))
    cat = L.Concatenate(axis=-1, dtype="float64")([a, b])
    res = L.Add(dtype="float64")([cat, L.Conv2D(8, 1, dtype="float64")(cat)])
    gates = L.Reshape((1, 1, 8), dtype="float64")(L.Dense(8, activation="sigmoid", dtype="float64")(
        L.GlobalAveragePooling2D(dtype="float64")(res)))
    se = L.Multiply(dtype="float64")([res, gates])
    out = L.Dense(5, dtype="float64")(L.Flatten(dtype="float64")(L.MaxPooling2D(2, dtype="float64")(se)))
    net = keras.Model(inp, out)
    ours = interop.from_keras(net)
    assert isinstance(ours, Model)
    calls = [sum(node.layer is layer for node in ours.nodes) for layer in ours.layers]
    assert sorted(c for c in calls if c > 1) == [2, 2]  # the shared Conv2D and its ReLU: one layer each, two calls
    x = np.random.default_rng(1).normal(size=(3, 3, 6, 6))
    assert_close(ours.predict(x), keras_predict(net, x), 1e-12, "from_keras of a hand-written functional model")


# -- every new layer --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("mode", ["local", "end_to_end"])
def test_every_new_layer_graph_matches_torch_layer_by_layer(dtype, mode) -> None:
    """Residual Add, Concatenate, depthwise and grouped conv, transposed conv, upsampling, layer and
    group norm (and GELU, SiLU, ELU, Softplus, LogSoftMax, Identity, Reshape) vs torch, node by node."""
    model = every_new_layer_graph()
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"Add", "Concatenate", "Multiply", "TransposedConvolution", "UpSampling2D", "LayerNormalization",
            "GroupNormalization", "GELU", "SiLU", "ELU", "Softplus", "LogSoftMax", "Identity", "Reshape"} <= kinds
    assert {layer.groups for layer in model.layers if isinstance(layer, Convolution)} == {1, 4, 8}
    x, y = data(model)
    report = verify.compare(model, x, y, reference="torch", dtype=dtype, mode=mode)
    assert report.ok, str(report)
    assert report.max_rel_error <= TOL[dtype] and len(report.rows) == len(model.nodes) + 1


@pytest.mark.parametrize("optimizer", [GradientDescent(0.05, momentum=0.9), Adam(1e-2)], ids=["sgd", "adam"])
def test_every_new_layer_graph_trains_as_torch_does(optimizer) -> None:
    model = every_new_layer_graph()
    x, y = data(model, n=8)
    result = verify.compare_training(model, x, y, steps=20, optimizer=optimizer, batch_size=4)
    assert result.losses[-1] < result.losses[0]
    assert result.max_loss_rel_error <= 1e-10, str(result)
    assert result.max_weight_rel_error <= 1e-10, {k: v for k, v in result.weight_errors.items() if v.max_rel > 1e-10}


@needs_keras
def test_every_new_layer_graph_keras_round_trip() -> None:
    model = every_new_layer_graph()
    x, _ = data(model)
    net = interop.to_keras(model)
    expected = model.predict(x)
    assert_close(keras_predict(net, x), expected, 1e-12, "Keras twin")
    assert_close(interop.from_keras(net).predict(x), expected, 1e-12, "from_keras(to_keras(m))")
    for dtype in (np.float64, np.float32):
        report = verify.compare(model, x, data(model)[1], reference="keras", dtype=dtype)
        assert report.ok, str(report)
