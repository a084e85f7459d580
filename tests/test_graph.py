"""Graph models (``nn_from_scratch.graph.Model``) and the layer protocol they rely on.

References are independent of the library: PyTorch autograd on the same weights (a graph
written by hand in torch below), central finite differences, and hand-computed values.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from nn_from_scratch import GraphError, Input, Model, Sequential, load_model, neurons, nodes
from nn_from_scratch.callbacks import EarlyStopping
from nn_from_scratch.interfaces import Layer
from nn_from_scratch.losses import MSELoss, SoftMaxLoss
from nn_from_scratch.neurons import BatchNormalization, Convolution, Linear
from nn_from_scratch.nodes import Add, Concatenate, Dropout, GlobalAveragePooling, MaxPooling, Multiply, ReLU, Tanh, Vectorization
from nn_from_scratch.optimizers import Adam, GradientDescent
from nn_from_scratch.symbolic import SymbolicTensor


def rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def residual_model(seed: int = 0, dtype=np.float64) -> Model:
    """conv -> bn -> relu -> [conv shared twice with a residual add] -> concat -> gap -> linear."""
    x = Input(shape=(2, 6, 6))
    # No bias before batch norm: its gradient is zero up to rounding, which no relative check can compare.
    h = ReLU()(BatchNormalization(dtype=dtype)(Convolution(kernel_size=3, output_layers=4, padding=1, use_bias=False,
                                                           dtype=dtype)(x)))
    shared = Convolution(kernel_size=3, output_layers=4, padding=1, dtype=dtype, name="shared")
    a = Add()([h, Tanh()(shared(h))])
    b = Add()([a, Tanh()(shared(a))])  # the same weights at a second place
    c = Concatenate(axis=1)([a, b])
    y = Linear(output_dim=3, dtype=dtype)(GlobalAveragePooling()(c))
    return Model(x, y, loss=SoftMaxLoss(), optimizer=GradientDescent(0.1), seed=seed)


# -- the layer protocol ----------------------------------------------------------------------
def exported_layer_classes() -> list[type]:
    return [c for m in (nodes, neurons) for name in m.__all__
            if isinstance(c := getattr(m, name), type) and issubclass(c, Layer)]


@pytest.mark.parametrize("cls", exported_layer_classes(), ids=lambda c: c.__name__)
def test_every_layer_backward_takes_need_input_grad(cls):
    params = inspect.signature(cls.backward).parameters
    assert list(params)[:3] == ["self", "dL_dy", "need_input_grad"]
    assert params["need_input_grad"].default is True


def test_parameter_gradients_accumulate_until_zeroed_as_in_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    layer = Linear(5, 3, dtype=np.float64)
    x1, x2 = rng.normal(size=(4, 5)), rng.normal(size=(2, 5))
    g1, g2 = rng.normal(size=(4, 3)), rng.normal(size=(2, 3))
    layer.forward(x1)
    layer.backward(g1)
    layer.forward(x2)
    layer.backward(g2)
    twin = torch.nn.Linear(5, 3).double()
    with torch.no_grad():
        twin.weight.copy_(torch.from_numpy(layer.W[1:].T.copy()))
        twin.bias.copy_(torch.from_numpy(layer.W[0].copy()))
    twin(torch.from_numpy(x1)).backward(torch.from_numpy(g1))
    twin(torch.from_numpy(x2)).backward(torch.from_numpy(g2))  # torch adds to .grad
    assert rel_err(layer._W_pd[1:], twin.weight.grad.numpy().T) <= 1e-12
    assert rel_err(layer._W_pd[0], twin.bias.grad.numpy()) <= 1e-12
    layer.zero_grad()
    assert layer.gradients() == {"W": None}


def test_inference_keeps_nothing_for_a_backward():
    """After predict no layer holds a forward cache or any array with the batch's leading size."""
    model = residual_model()
    batch = 37  # a size no parameter or buffer has
    model.predict(np.random.default_rng(1).normal(size=(batch, 2, 6, 6)))
    for layer in model.layers:
        for attr in layer.cache_attrs:
            assert getattr(layer, attr, None) is None, (layer.name, attr)
        for key, value in vars(layer).items():
            assert not (isinstance(value, np.ndarray) and value.ndim and value.shape[0] == batch), (layer.name, key)
    with pytest.raises(RuntimeError, match="forward in training mode"):
        model.layers[0].backward(np.zeros((batch, 4, 6, 6)))


# -- graph values and gradients against torch --------------------------------------------------
def torch_residual(model: Model, torch):
    """The same graph written by hand in torch, with our weights."""
    conv0, bn, shared, lin = (l for l in model.layers if isinstance(l, (Convolution, BatchNormalization, Linear)))
    t = lambda a: torch.tensor(a, requires_grad=True)  # noqa: E731
    p = {"w0": t(conv0.W), "gamma": t(bn.gamma), "beta": t(bn.beta),
         "ws": t(shared.W), "bs": t(shared.B), "lin": t(lin.W)}
    F = torch.nn.functional

    def run(x):
        h = F.conv2d(x, p["w0"], padding=1)
        h = F.batch_norm(h, None, None, p["gamma"], p["beta"], training=True, eps=bn.eps)
        h = torch.relu(h)
        a = h + torch.tanh(F.conv2d(h, p["ws"], p["bs"], padding=1))
        b = a + torch.tanh(F.conv2d(a, p["ws"], p["bs"], padding=1))
        c = torch.cat([a, b], dim=1).mean(dim=(2, 3))
        return c @ p["lin"][1:] + p["lin"][0]

    return run, p


@pytest.mark.parametrize("seed", range(3))
def test_graph_forward_and_backward_match_torch_autograd(seed):
    torch = pytest.importorskip("torch")
    model = residual_model(seed)
    rng = np.random.default_rng(seed)
    x, labels = rng.normal(size=(5, 2, 6, 6)), rng.integers(0, 3, 5)
    model.zero_grad()
    out = model.forward(x, training=True)
    model.loss.forward(out, labels)
    dx = model.backward(model.loss.backward())
    run, p = torch_residual(model, torch)
    xt = torch.tensor(x, requires_grad=True)
    ref = run(xt)
    torch.nn.functional.cross_entropy(ref, torch.from_numpy(labels)).backward()
    assert rel_err(out, ref.detach().numpy()) <= 1e-10
    assert rel_err(dx, xt.grad.numpy()) <= 1e-10
    conv0, bn, shared, lin = (l for l in model.layers if isinstance(l, (Convolution, BatchNormalization, Linear)))
    assert conv0._B_pd is None
    pairs = [(conv0._W_pd, "w0"), (bn._gamma_pd, "gamma"), (bn._beta_pd, "beta"),
             (shared._W_pd, "ws"), (shared._B_pd, "bs"), (lin._W_pd, "lin")]
    for ours, name in pairs:
        assert rel_err(ours, p[name].grad.numpy()) <= 1e-10, name


def test_a_layer_used_twice_gets_the_summed_gradient_by_finite_differences():
    """y = tanh(L(tanh(L(x)))) with one Linear L: dL/dW from backward equals central differences."""
    rng = np.random.default_rng(3)
    x_in = Input(shape=(4,))
    shared = Linear(output_dim=4, dtype=np.float64)
    y = Tanh()(shared(Tanh()(shared(x_in))))
    model = Model(x_in, y, loss=MSELoss(), seed=0)
    x, target = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))

    def loss() -> float:
        return float(model.loss.forward(model.forward(x, training=True), target))

    model.zero_grad()
    loss()
    model.backward(model.loss.backward())
    analytic = shared._W_pd.copy()
    numeric = np.zeros_like(shared.W)
    eps = 1e-6
    for index in np.ndindex(shared.W.shape):
        saved = shared.W[index]
        shared.W[index] = saved + eps
        plus = loss()
        shared.W[index] = saved - eps
        minus = loss()
        shared.W[index] = saved
        numeric[index] = (plus - minus) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-7, atol=1e-10)
    # The first call's gradient alone is not it: the sum is what makes the check pass.
    single = Model(x_in, shared(x_in), loss=MSELoss())
    assert not np.allclose(analytic, 0)
    assert single.layers == [shared]


# -- merge layers against torch ---------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_merge_layers_match_torch_with_broadcasting(seed):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    n, c, h, w = 3, int(rng.integers(1, 5)), int(rng.integers(1, 5)), int(rng.integers(1, 5))
    a, b, gate = rng.normal(size=(n, c, h, w)), rng.normal(size=(n, c, h, w)), rng.normal(size=(n, c, 1, 1))
    cases = [
        (Add(), [a, b], lambda t: t[0] + t[1]),
        (Add(), [a, gate, b], lambda t: t[0] + t[1] + t[2]),
        (Multiply(), [a, gate], lambda t: t[0] * t[1]),
        (Multiply(), [gate, a, b], lambda t: t[0] * t[1] * t[2]),
        (Concatenate(axis=1), [a, rng.normal(size=(n, 2, h, w))], lambda t: torch.cat(t, dim=1)),
        (Concatenate(axis=-1), [a, rng.normal(size=(n, c, h, 3))], lambda t: torch.cat(t, dim=-1)),
    ]
    for layer, inputs, reference in cases:
        y = layer.forward(inputs)
        dy = rng.normal(size=y.shape)
        grads = layer.backward(dy)
        ts = [torch.tensor(v, requires_grad=True) for v in inputs]
        ref = reference(ts)
        ref.backward(torch.from_numpy(dy))
        assert rel_err(y, ref.detach().numpy()) <= 1e-12, layer.name
        for g, t in zip(grads, ts):
            assert g.shape == t.shape
            assert rel_err(g, t.grad.numpy()) <= 1e-12, layer.name


def test_merge_layers_refuse_mismatched_shapes_naming_the_layer():
    x = Input(shape=(3, 4, 4))
    a = Convolution(kernel_size=3, output_layers=2, padding=1, name="left")(x)
    b = Convolution(kernel_size=3, output_layers=5, padding=1, name="right")(x)
    with pytest.raises(ValueError, match=r"residual.*\(batch, 2, 4, 4\), \(batch, 5, 4, 4\)"):
        Add(name="residual")([a, b])
    c = MaxPooling(2)(x)
    with pytest.raises(ValueError, match=r"join.*except along axis 1"):
        Concatenate(name="join")([a, c])
    with pytest.raises(ValueError, match="batch axis"):
        Concatenate(axis=0)
    with pytest.raises(TypeError, match="list of at least two"):
        Add().forward(np.ones((2, 3)))
    with pytest.raises(ValueError, match="same number of axes"):
        Multiply(name="gate")([a, Input(shape=(2,))])


# -- building graphs: errors ------------------------------------------------------------------
def test_graph_errors_name_what_is_wrong():
    x, other = Input(shape=(4,), name="pixels"), Input(shape=(4,), name="stray")
    h = Linear(output_dim=4, name="dense")(x)
    with pytest.raises(GraphError, match="stray.*not among the model's inputs"):
        Model(x, Add(name="sum")([h, other]))
    with pytest.raises(TypeError, match="symbolic tensors"):
        Model(np.ones((1, 4)), h)
    with pytest.raises(TypeError, match="sum2.*mix of symbolic tensors and data"):
        Add(name="sum2")([h, np.ones((1, 4))])
    with pytest.raises(TypeError, match="not data"):
        np.asarray(h)
    with pytest.raises(ValueError, match="dense.*already built for input shape"):
        Linear(output_dim=4, name="dense")(x) and h.node.layer(Input(shape=(5,)))


def test_a_cycle_in_a_stored_graph_is_refused():
    model = residual_model()
    structure = model.get_config()
    structure["nodes"][1]["inputs"] = [["node", 5]]  # node 1 fed by a later node: a cycle
    with pytest.raises(GraphError, match="not an earlier node"):
        Model.from_config(model.layers, structure)


def test_summary_shows_each_layers_inputs():
    lines: list[str] = []
    residual_model().summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "Connected to" in text
    add_rows = [line for line in lines if "(Add)" in line]
    assert len(add_rows) == 2
    assert "re_lu, tanh" in add_rows[0] and "add, tanh_1" in add_rows[1]
    assert "concatenate (Concatenate)" in text and "add, add_1" in text
    total = sum(layer.count_params() for layer in residual_model().layers)
    assert f"Trainable params: {total:,}" in text


# -- training, saving ------------------------------------------------------------------------
def test_graph_model_trains_with_callbacks_and_round_trips_bit_for_bit(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 2, 6, 6)), rng.integers(0, 3, 60)
    x[np.arange(60), 0, 0, 0] += 2.0 * y  # learnable
    model = residual_model(seed=1, dtype=np.float32)
    model.optimizer = Adam(1e-2)
    history = model.fit(x, y, epochs=4, batch_size=16, validation_split=0.25, verbose=0,
                        callbacks=[EarlyStopping(monitor="val_loss", patience=10)])
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert set(history.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    path = tmp_path / "graph.safetensors"
    model.save(path)
    loaded = load_model(path)
    assert isinstance(loaded, Model) and len(loaded.nodes) == len(model.nodes)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(model.predict(x), loaded.predict(x))
    # Shared weights stay shared after loading: one layer object at two nodes.
    shared = [node.layer for node in loaded.nodes if node.layer.name == "shared"]
    assert len(shared) == 2 and shared[0] is shared[1]
    # Training continues identically (optimizer state saved).
    model.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    loaded.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_the_same_seed_gives_the_same_graph_model_and_another_seed_does_not():
    x = np.random.default_rng(0).normal(size=(4, 2, 6, 6))
    a, b, c = residual_model(seed=5), residual_model(seed=5), residual_model(seed=6)
    np.testing.assert_array_equal(a.predict(x), b.predict(x))
    assert not np.allclose(a.predict(x), c.predict(x))


def test_layers_of_a_trained_model_keep_their_weights_in_a_new_model():
    model = residual_model(seed=2)
    before = [w.copy() for w in model.get_weights()]
    first = model.layers[:3]
    Sequential(first, input_shape=(2, 6, 6), seed=9)
    rebuilt = Model(model.inputs[0], model.outputs[0], seed=11)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert rebuilt.layers == model.layers


def test_dropout_in_a_graph_is_seeded_and_off_at_inference():
    x_in = Input(shape=(50,))
    y = Dropout(0.5)(x_in)
    model = Model(x_in, Vectorization()(y), seed=0)
    x = np.ones((4, 50))
    np.testing.assert_array_equal(model.predict(x), x)
    train = model.forward(x, training=True)
    assert set(np.unique(train)) == {0.0, 2.0}


def test_symbolic_input_validates_its_shape():
    with pytest.raises(ValueError, match="positive ints"):
        Input(shape=(0, 3))
    with pytest.raises(TypeError, match="positive ints"):
        Input(shape="abc")
    assert isinstance(Input(shape=3), SymbolicTensor)
