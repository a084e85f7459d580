"""Grouped, depthwise and transposed convolutions beyond the layer table (``layer_cases.py``,
which already holds all three against finite differences and torch autograd):

* the fast kernels (``kernels.GroupedConv2dPlan``, ``Conv2dPlan.input_grad``) against the
  reference kernels at 1e-12 (float64), every code path forced; the reference against torch;
* the adjoint identity ``<conv(x), y> = <x, convT(y)>`` for our two layers sharing a kernel;
* output shapes against torch's modules for random arguments (hypothesis);
* argument checks, the layer protocol (contexts, skipped input gradient), interop with torch
  and Keras, and save/load bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nn_from_scratch import kernels
from nn_from_scratch.model import Sequential
from nn_from_scratch.neurons import Convolution, Linear, TransposedConvolution
from nn_from_scratch.nodes import ReLU, Tanh, Vectorization


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = float(np.abs(np.asarray(a, np.float64) - b).max(initial=0.0))
    return diff / float(np.abs(b).max(initial=0.0)) if diff else 0.0


def random_grouped_case(rng: np.random.Generator, dtype, depthwise: bool, unit_stride: bool):
    """A random geometry with at least one output pixel, its input, weights, bias and dL/dy."""
    while True:
        kh, kw = (int(v) for v in rng.integers(1, 5, size=2))
        stride = (1, 1) if unit_stride else tuple(int(v) for v in rng.integers(1, 4, size=2))
        dilation = tuple(int(v) for v in rng.integers(1, 4, size=2))
        padding = tuple(int(v) for v in rng.integers(0, 4, size=4))
        groups = int(rng.integers(1, 5))
        cg = 1 if depthwise else int(rng.integers(1, 4))
        og = int(rng.integers(1, 4))
        n = int(rng.integers(1, 4))
        h, w = (int(v) for v in rng.integers(1, 11, size=2))
        geom = kernels.ConvGeometry(kh, kw, stride, dilation, padding)
        oh, ow = geom.output_hw(h, w)
        if oh >= 1 and ow >= 1:
            break
    x = rng.standard_normal((n, groups * cg, h, w)).astype(dtype)
    W = rng.standard_normal((groups * og, cg, kh, kw)).astype(dtype)
    b = rng.standard_normal(groups * og).astype(dtype)
    dy = rng.standard_normal((n, groups * og, oh, ow)).astype(dtype)
    return geom, groups, x, W, b, dy


def grouped_reference(x, W, b, dy, geom, groups):
    x, W, b, dy = (a.astype(np.float64) for a in (x, W, b, dy))
    y = kernels.grouped_conv2d_forward(x, W, b, geom, groups)
    dx, dW, db = kernels.grouped_conv2d_backward(dy, x, W, geom, groups)
    return y, dx, dW, db


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("depthwise, unit_stride", [(True, True), (True, False), (False, True), (False, False)])
def test_grouped_plan_matches_reference(dtype, tol, depthwise, unit_stride):
    """Each kernel of the plan (depthwise at stride 1 on flat slices, depthwise strided, batched
    im2col), forward, backward and input_grad, block sizes down to one channel."""
    rng = np.random.default_rng([7, depthwise, unit_stride, np.dtype(dtype).itemsize])
    seen = set()
    for _ in range(25):
        geom, groups, x, W, b, dy = random_grouped_case(rng, dtype, depthwise, unit_stride)
        y_ref, dx_ref, dW_ref, db_ref = grouped_reference(x, W, b, dy, geom, groups)
        plan = kernels.GroupedConv2dPlan(x.shape, W.shape[0], geom, groups, dtype, block_bytes=int(rng.integers(1, 4000)))
        seen.add("flat" if plan.flat else "depthwise" if plan.depthwise else "im2col")
        for _ in range(2):  # twice: the buffers are reused
            y = plan.forward(x, W, b)
            assert y.dtype == dtype and rel_err(y, y_ref) <= tol, geom
            dx, dW, db = plan.backward(dy, W)
            for name, got, want in (("dx", dx, dx_ref), ("dW", dW, dW_ref), ("db", db, db_ref)):
                assert got.dtype == dtype and rel_err(got, want) <= tol, (name, geom, groups)
            assert rel_err(plan.input_grad(dy, W), dx_ref) <= tol
            none, dW2, db2 = plan.backward(dy, W, need_dx=False, need_db=False)
            assert none is None and db2 is None and rel_err(dW2, dW_ref) <= tol
    expected = {"flat"} if depthwise and unit_stride else {"depthwise"} if depthwise else {"im2col"}
    assert expected <= seen, seen


def test_grouped_plan_accepts_any_memory_layout():
    rng = np.random.default_rng(3)
    for depthwise in (True, False):
        geom, groups, x, W, b, dy = random_grouped_case(rng, np.float64, depthwise, True)
        y_ref, dx_ref, dW_ref, db_ref = grouped_reference(x, W, b, dy, geom, groups)
        plan = kernels.GroupedConv2dPlan(x.shape, W.shape[0], geom, groups, np.float64)
        x_chwn = np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
        assert rel_err(plan.forward(x_chwn, W, b), y_ref) <= 1e-12
        dx, dW, db = plan.backward(np.asfortranarray(dy), W)
        assert max(rel_err(dx, dx_ref), rel_err(dW, dW_ref), rel_err(db, db_ref)) <= 1e-12


def test_grouped_reference_matches_torch():
    """The reference itself, against torch's conv2d with groups (an outside answer)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(4)
    for _ in range(10):
        geom, groups, x, W, b, dy = random_grouped_case(rng, np.float64, bool(rng.random() < 0.5), False)
        top, bottom, left, right = geom.padding
        xt = torch.tensor(x, requires_grad=True)
        Wt = torch.tensor(W, requires_grad=True)
        yt = F.conv2d(F.pad(xt, (left, right, top, bottom)), Wt, torch.tensor(b), stride=geom.stride,
                      dilation=geom.dilation, groups=groups)
        (yt * torch.tensor(dy)).sum().backward()
        y, dx, dW, db = grouped_reference(x, W, b, dy, geom, groups)
        assert rel_err(y, yt.detach().numpy()) <= 1e-12
        assert rel_err(dx, xt.grad.numpy()) <= 1e-12 and rel_err(dW, Wt.grad.numpy()) <= 1e-12
        assert rel_err(db, dy.sum(axis=(0, 2, 3))) <= 1e-12


@pytest.mark.parametrize("dx_kernel", ["rows", "stacked_dy"])
def test_conv2d_plan_input_grad_is_the_reference_dx(dx_kernel):
    """``Conv2dPlan.input_grad`` (the transposed convolution's forward) needs no forward first."""
    rng = np.random.default_rng(5)
    for _ in range(10):
        geom, _, x, W, b, dy = random_grouped_case(rng, np.float64, False, True)
        W = rng.standard_normal((W.shape[0], x.shape[1], geom.kh, geom.kw))  # one group
        _, dx_ref, _, _ = grouped_reference(x, W, b, dy, geom, 1)
        plan = kernels.Conv2dPlan(x.shape, W.shape[0], geom, np.float64)
        plan.dx_kernel = dx_kernel
        assert rel_err(plan.input_grad(dy, W), dx_ref) <= 1e-12


def test_conv_plan_picks_the_kernel():
    geom = kernels.ConvGeometry(3, 3, (1, 1), (1, 1), (1, 1, 1, 1))
    assert isinstance(kernels.conv_plan((2, 4, 8, 8), 4, geom, 1, np.float32), kernels.Conv2dPlan)
    assert isinstance(kernels.conv_plan((2, 4, 8, 8), 4, geom, 4, np.float32), kernels.GroupedConv2dPlan)
    strided = geom._replace(stride=(2, 2))  # height strides run on row phases: still the one-group plan
    assert isinstance(kernels.conv_plan((2, 4, 8, 8), 4, strided, 1, np.float32), kernels.Conv2dPlan)


# -- the adjoint identity ---------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(20))
def test_transposed_convolution_is_the_adjoint_of_convolution(seed):
    """``<conv(x), y> = <x, convT(y)>`` with the same kernel, stride, padding, dilation and groups,
    output_padding restoring the input size that a strided convolution rounds away."""
    rng = np.random.default_rng(seed)
    while True:
        k = tuple(int(v) for v in rng.integers(1, 5, size=2))
        s = tuple(int(v) for v in rng.integers(1, 4, size=2))
        d = tuple(int(v) for v in rng.integers(1, 3, size=2))
        p = tuple(int(v) for v in rng.integers(0, 3, size=2))
        h, w = (int(v) for v in rng.integers(1, 10, size=2))
        out = [(n + 2 * pi - di * (ki - 1) - 1) // si + 1 for n, pi, di, ki, si in zip((h, w), p, d, k, s)]
        if min(out) >= 1:
            break
    op = tuple(n - ((o - 1) * si - 2 * pi + di * (ki - 1) + 1) for n, o, si, pi, di, ki in zip((h, w), out, s, p, d, k))
    groups = int(rng.integers(1, 4))
    c, o = groups * int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
    conv = Convolution((c, h, w), k, o, padding=p, stride=s, dilation=d, groups=groups, use_bias=False, dtype=np.float64)
    conv_t = TransposedConvolution((o, *out), k, c, padding=p, stride=s, dilation=d, groups=groups, output_padding=op,
                                   W=conv.W, use_bias=False, dtype=np.float64)
    assert conv_t.output_shape == (c, h, w)
    x = rng.standard_normal((2, c, h, w))
    y = rng.standard_normal((2, o, *out))
    lhs, rhs = np.vdot(conv.forward(x), y), np.vdot(x, conv_t.forward(y))
    assert abs(lhs - rhs) <= 1e-12 * max(abs(lhs), np.abs(x).sum())
    # and the convolution's dL/dx for dL/dy = y is the transposed convolution of y
    np.testing.assert_allclose(conv.backward(y), conv_t.forward(y), rtol=0, atol=1e-12 * np.abs(y).max())


# -- shapes against torch, hypothesis ---------------------------------------------------------
pair = st.tuples(st.integers(1, 3), st.integers(1, 3))


@settings(max_examples=60, deadline=None)
@given(k=pair, s=pair, d=pair, p=st.tuples(st.integers(0, 3), st.integers(0, 3)), hw=st.tuples(st.integers(1, 8), st.integers(1, 8)),
       cpg=st.integers(1, 3), opg=st.integers(1, 3), groups=st.integers(1, 3), op_frac=st.floats(0, 0.999))
def test_output_shapes_match_torch(k, s, d, p, hw, cpg, opg, groups, op_frac):
    torch = pytest.importorskip("torch")
    c, o = cpg * groups, opg * groups
    op = tuple(int(op_frac * max(si, di)) for si, di in zip(s, d))
    x = torch.zeros((1, c, *hw), dtype=torch.float64)
    t_module = torch.nn.ConvTranspose2d(c, o, k, stride=s, padding=p, output_padding=op, dilation=d, groups=groups,
                                        dtype=torch.float64)
    t_out = (o, *[(n - 1) * si - 2 * pi + di * (ki - 1) + opi + 1 for n, si, pi, di, ki, opi in zip(hw, s, p, d, k, op)])
    if min(t_out[1:]) < 1:
        with pytest.raises(ValueError, match="TransposedConvolution.*output of"):
            TransposedConvolution((c, *hw), k, o, padding=p, stride=s, output_padding=op, dilation=d, groups=groups)
    else:
        layer = TransposedConvolution((c, *hw), k, o, padding=p, stride=s, output_padding=op, dilation=d, groups=groups)
        assert layer.output_shape == t_out == tuple(t_module(x).shape[1:])
        assert layer.W.shape == tuple(t_module.weight.shape)
        assert layer.forward(np.zeros((2, c, *hw), np.float32)).shape == (2, *t_out)
    conv_module = torch.nn.Conv2d(c, o, k, stride=s, padding=p, dilation=d, groups=groups, dtype=torch.float64)
    c_out = [(n + 2 * pi - di * (ki - 1) - 1) // si + 1 for n, pi, di, ki, si in zip(hw, p, d, k, s)]
    if min(c_out) >= 1:
        conv = Convolution((c, *hw), k, o, padding=p, stride=s, dilation=d, groups=groups)
        assert conv.output_shape == (o, *c_out) == tuple(conv_module(x).shape[1:])
        assert conv.W.shape == tuple(conv_module.weight.shape)


# -- arguments and protocol -------------------------------------------------------------------
def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match=r"Convolution: in_channels \(6\) must be divisible by groups \(4\)"):
        Convolution((6, 8, 8), 3, 8, groups=4)
    with pytest.raises(ValueError, match=r"Convolution: out_channels \(6\) must be divisible by groups \(4\)"):
        Convolution((8, 8, 8), 3, 6, groups=4)
    with pytest.raises(ValueError, match=r"Convolution: groups must be a positive int, got 0"):
        Convolution(None, 3, 6, groups=0)
    with pytest.raises(ValueError, match=r"in_channels \(6\) must be divisible by groups \(4\)"):
        Convolution(None, 3, 8, groups=4).forward(np.zeros((1, 6, 5, 5)))
    with pytest.raises(ValueError, match=r"expected W of shape \(8, 2, 3, 3\) \(out, in/groups, kh, kw\) with groups=4"):
        Convolution((8, 8, 8), 3, 8, groups=4, W=np.zeros((8, 8, 3, 3)))
    with pytest.raises(ValueError, match=r"TransposedConvolution: output_padding must be smaller than either stride or dilation"):
        TransposedConvolution(None, 3, 4, stride=2, output_padding=2)
    with pytest.raises(ValueError, match=r"TransposedConvolution: output_padding must be smaller"):
        TransposedConvolution(None, 3, 4, output_padding=(0, 1))  # stride 1, dilation 1
    TransposedConvolution(None, 3, 4, dilation=2, output_padding=1)  # smaller than the dilation: allowed, as torch
    with pytest.raises(ValueError, match=r"TransposedConvolution: padding must be a non-negative int .* got 'same'"):
        TransposedConvolution(None, 3, 4, padding="same")
    with pytest.raises(ValueError, match=r"TransposedConvolution: in_channels \(3\) must be divisible by groups \(2\)"):
        TransposedConvolution((3, 5, 5), 3, 4, groups=2)
    with pytest.raises(ValueError, match=r"expected W of shape \(4, 3, 3, 3\) \(in, out/groups, kh, kw\)"):
        TransposedConvolution((4, 5, 5), 3, 6, groups=2, W=np.zeros((4, 6, 3, 3)))
    with pytest.raises(ValueError, match=r"TransposedConvolution: input of shape \(batch, 1, 1, 1\) gives an output of -1x-1"):
        TransposedConvolution((1, 1, 1), 1, 1, padding=1)
    with pytest.raises(ValueError, match=r"TransposedConvolution: expected input of shape \(batch, 4, 5, 5\)"):
        TransposedConvolution((4, 5, 5), 3, 2).forward(np.zeros((1, 3, 5, 5)))


@pytest.mark.parametrize("make", [
    lambda: Convolution((4, 7, 6), 3, 8, padding=1, groups=4, dtype=np.float64),  # depthwise, flat kernel
    lambda: Convolution((6, 7, 6), (3, 2), 4, stride=2, groups=2, dtype=np.float64),  # batched im2col
    lambda: TransposedConvolution((4, 5, 4), 3, 6, stride=2, padding=1, output_padding=1, groups=2, dtype=np.float64),
    lambda: TransposedConvolution((3, 5, 4), 2, 2, stride=(1, 1), dilation=2, output_padding=1, dtype=np.float64),
], ids=["depthwise", "grouped", "transposed", "transposed-extended"])
def test_layer_protocol_contexts_and_skipped_input_gradient(make):
    """A layer called twice (shared in a graph) backpropagates each call with its own context and
    sums the gradients; need_input_grad=False returns None and the same parameter gradients."""
    rng = np.random.default_rng(6)
    layer = make()
    x1, x2 = rng.standard_normal((3, *layer.input_shape)), rng.standard_normal((2, *layer.input_shape))
    dy1, dy2 = rng.standard_normal((3, *layer.output_shape)), rng.standard_normal((2, *layer.output_shape))
    single = []
    for x, dy in ((x1, dy1), (x2, dy2)):
        layer.zero_grad()
        layer.forward(x)
        dx = layer.backward(dy).copy()
        single.append((dx, {k: v.copy() for k, v in layer.gradients().items()}))
    layer.zero_grad()
    layer.forward(x1)
    ctx1 = layer.save_context()
    layer.forward(x2)
    ctx2 = layer.save_context()
    layer.restore_context(ctx1)
    dx1 = layer.backward(dy1)
    layer.restore_context(ctx2)
    assert layer.backward(dy2, need_input_grad=False) is None
    np.testing.assert_allclose(dx1, single[0][0], rtol=1e-13, atol=1e-13)
    for name, g in layer.gradients().items():
        np.testing.assert_allclose(g, single[0][1][name] + single[1][1][name], rtol=1e-12, atol=1e-12)
    layer.release_cache()
    with pytest.raises(RuntimeError, match="needs a forward"):
        layer.backward(dy1)


def test_get_config_rebuilds_the_layer():
    for layer in (Convolution((4, 6, 6), 3, 8, groups=4, dtype=np.float64),
                  TransposedConvolution((4, 6, 6), (3, 2), 6, padding=(1, 0), stride=(2, 1), output_padding=(1, 0),
                                        dilation=(1, 2), groups=2, use_bias=False, dtype=np.float64)):
        config = layer.get_config()
        clone = type(layer)(**config)
        assert clone.get_config() == config
        clone.W[...] = layer.W
        if layer.B is not None:
            clone.B[...] = layer.B
        x = np.random.default_rng(0).standard_normal((2, *layer.input_shape))
        np.testing.assert_array_equal(clone.forward(x), layer.forward(x))


# -- interop ----------------------------------------------------------------------------------
def conv_family_model(dtype=np.float64, keras_compatible: bool = False) -> Sequential:
    layers = [
        Convolution((4, 9, 8), 3, 6, padding=1, groups=2, dtype=dtype),
        Tanh(),
        Convolution(None, 3, 12, padding="same", groups=6, dtype=dtype),  # depthwise, 2 per channel
        ReLU(),
        TransposedConvolution(None, 3, 4, stride=2, padding=1, output_padding=1, dtype=dtype),
        Tanh(),
        TransposedConvolution(None, (2, 3), 2, padding=(0, 1), dtype=dtype),
        TransposedConvolution(None, 4, 2, stride=2, padding=(1, 2, 0, 1), output_padding=(1, 0), dtype=dtype),  # asymmetric
        Vectorization(),
        Linear(None, 3, dtype=dtype),
    ]
    if not keras_compatible:  # Keras' Conv2DTranspose has no groups
        layers[4] = TransposedConvolution(None, 3, 4, stride=2, padding=1, output_padding=1, groups=2, dtype=dtype)
    model = Sequential(layers, input_shape=(4, 9, 8), seed=3)
    rng = np.random.default_rng(9)
    for layer in model.layers:
        if getattr(layer, "B", None) is not None:
            layer.B[...] = rng.normal(size=layer.B.shape)
    return model


def assert_same(a, b, what: str) -> None:
    assert rel_err(np.asarray(a), np.asarray(b, np.float64)) <= 1e-12, what


def test_torch_round_trip():
    torch = pytest.importorskip("torch")
    from nn_from_scratch import interop

    model = conv_family_model()
    x = np.random.default_rng(10).standard_normal((3, 4, 9, 8))
    twin = interop.to_torch(model).eval()
    kinds = [type(m).__name__ for m in twin]
    assert kinds[:9] == ["Conv2d", "Tanh", "Conv2d", "ReLU", "ConvTranspose2d", "Tanh", "ConvTranspose2d", "ConvTranspose2d",
                         "ZeroPad2d"]
    assert tuple(twin[8].padding) == (0, -1, 0, -1)  # (left, right, top, bottom): crops what is not symmetric
    assert twin[0].groups == 2 and twin[2].groups == 6 and twin[4].groups == 2
    assert (twin[4].stride, twin[4].padding, twin[4].output_padding) == ((2, 2), (1, 1), (1, 1))
    expected = model.predict(x)
    assert_same(twin(torch.from_numpy(x)).detach().numpy(), expected, "torch twin")
    back = interop.from_torch(twin)
    assert_same(back.predict(x), expected, "from_torch(to_torch(m))")
    assert [type(layer) for layer in back.layers] == [type(layer) for layer in model.layers]
    assert [getattr(layer, "groups", None) for layer in back.layers] == [getattr(layer, "groups", None) for layer in model.layers]
    assert back.layers[7].padding == (1, 2, 0, 1) and back.layers[7].output_padding == (1, 0)


def test_from_torch_native_module():
    torch = pytest.importorskip("torch")
    from nn_from_scratch import interop

    nn = torch.nn
    torch.manual_seed(1)
    module = nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1, groups=2, dtype=torch.float64),
        nn.Conv2d(8, 16, 3, stride=2, groups=8, bias=False, dtype=torch.float64),
        nn.ConvTranspose2d(16, 6, 3, stride=2, padding=1, output_padding=1, groups=2, dtype=torch.float64),
        nn.ConvTranspose2d(6, 3, (2, 3), dilation=(2, 1), padding=(0, 1), output_padding=(1, 0), bias=False,
                           dtype=torch.float64),
        nn.ConvTranspose2d(3, 2, 3, stride=2, dtype=torch.float64),
        nn.ZeroPad2d((0, -1, -2, 0)),  # crops: folded into padding (top, bottom, left, right) = (2, 0, 0, 1)
    ).eval()
    x = torch.from_numpy(np.random.default_rng(11).standard_normal((2, 4, 11, 10)))
    ours = interop.from_torch(module, input_shape=(4, 11, 10))
    assert [type(layer).__name__ for layer in ours.layers] == ["Convolution"] * 2 + ["TransposedConvolution"] * 3
    assert ours.layers[4].padding == (2, 0, 0, 1)
    expected = module(x).detach().numpy()
    assert_same(ours.predict(x.numpy()), expected, "from_torch(native)")
    assert_same(interop.to_torch(ours).eval()(x).detach().numpy(), expected, "to_torch(from_torch(native))")


def _keras():
    pytest.importorskip("torch")
    try:
        from nn_from_scratch.interop import keras as keras_interop
    except ImportError:
        pytest.skip("keras is not installed")
    if keras_interop.keras.backend.backend() != "torch":
        pytest.skip("needs keras on its torch backend")
    return keras_interop


def keras_predict(keras_interop, kmodel, x_nchw):
    import torch

    with keras_interop.float64_arithmetic():
        y = kmodel(torch.from_numpy(np.ascontiguousarray(np.moveaxis(x_nchw, 1, -1))), training=False)
    y = y.detach().numpy()
    return np.moveaxis(y, -1, 1) if y.ndim == 4 else y


def test_keras_round_trip():
    keras_interop = _keras()
    from nn_from_scratch import interop

    keras = keras_interop.keras
    model = conv_family_model(keras_compatible=True)
    x = np.random.default_rng(12).standard_normal((3, 4, 9, 8))
    expected = model.predict(x)
    twin = interop.to_keras(model)
    kinds = [type(k).__name__ for k in twin.layers]
    assert kinds[:4] == ["ZeroPadding2D", "Conv2D", "Activation", "DepthwiseConv2D"] and twin.layers[1].groups == 2
    assert "Conv2DTranspose" in kinds and "Cropping2D" in kinds
    assert_same(keras_predict(keras_interop, twin, x), expected, "Keras twin")
    back = interop.from_keras(twin)
    assert [type(layer) for layer in back.layers] == [type(layer) for layer in model.layers]
    assert_same(back.predict(x), expected, "from_keras(to_keras(m))")
    assert back.layers[2].groups == 6 and back.layers[4].output_padding == (1, 1) and back.layers[4].padding == (1, 1)
    with pytest.raises(interop.UnsupportedLayerError, match=r"TransposedConvolution.*no groups"):
        interop.to_keras(conv_family_model())
    assert keras is not None


def test_from_keras_native_model():
    """Keras' own spellings: Conv2D(groups=), DepthwiseConv2D, Conv2DTranspose with 'same' and
    'valid' padding, output_padding, a Cropping2D after it."""
    keras_interop = _keras()
    from nn_from_scratch import interop

    keras = keras_interop.keras
    keras.utils.set_random_seed(2)
    kmodel = keras.Sequential([
        keras.Input((9, 10, 4), dtype="float64"),
        keras.layers.Conv2D(6, 3, padding="same", groups=2, dtype="float64"),
        keras.layers.DepthwiseConv2D(3, strides=2, depth_multiplier=2, padding="same", activation="tanh", dtype="float64"),
        keras.layers.Conv2DTranspose(5, 3, strides=2, padding="same", dtype="float64"),
        keras.layers.Conv2DTranspose(4, 3, strides=2, padding="valid", output_padding=1, use_bias=False, dtype="float64"),
        keras.layers.Conv2DTranspose(3, 4, strides=1, padding="same", dtype="float64"),  # even kernel: asymmetric
        keras.layers.Conv2DTranspose(2, 3, padding="valid", dtype="float64"),
        keras.layers.Cropping2D(((1, 1), (2, 1)), dtype="float64"),
    ])
    rng = np.random.default_rng(13)
    for klayer in kmodel.layers:
        if getattr(klayer, "use_bias", False):
            klayer.bias.assign(rng.normal(size=klayer.bias.shape))
    x = rng.standard_normal((2, 4, 9, 10))
    expected = keras_predict(keras_interop, kmodel, x)
    ours = interop.from_keras(kmodel)
    kinds = [type(layer).__name__ for layer in ours.layers]
    assert kinds == ["Convolution", "Convolution", "Tanh"] + ["TransposedConvolution"] * 4
    assert ours.layers[1].groups == 6 and ours.layers[1].out_channels == 12
    # Keras' "same" with stride 2 keeps the first row and crops the last: (top, bottom, left, right)
    assert ours.layers[3].padding == (0, 1, 0, 1) and ours.layers[3].output_shape[1:] == (10, 10)
    assert ours.layers[4].output_padding == (1, 1) and ours.layers[4].padding == (0, 0)
    assert ours.layers[5].padding == (1, 2, 1, 2)  # even kernel, stride 1
    assert ours.layers[6].padding == (1, 1, 2, 1)  # the Cropping2D folded in
    assert_same(ours.predict(x), expected, "from_keras(native)")
    assert_same(keras_predict(keras_interop, interop.to_keras(ours), x), expected, "to_keras(from_keras(native))")


# -- save / load ------------------------------------------------------------------------------
def test_save_load_round_trip_bit_for_bit(tmp_path):
    pytest.importorskip("safetensors")
    from nn_from_scratch import load_model
    from nn_from_scratch.losses import MSELoss
    from nn_from_scratch.optimizers import Adam

    model = conv_family_model(dtype=np.float32)
    model.compile(optimizer=Adam(1e-3), loss=MSELoss())
    rng = np.random.default_rng(14)
    x, y = rng.standard_normal((8, 4, 9, 8)).astype(np.float32), rng.standard_normal((8, 3)).astype(np.float32)
    model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    model.save(tmp_path / "m.safetensors")
    loaded = load_model(tmp_path / "m.safetensors")
    assert [layer.get_config() for layer in loaded.layers] == [layer.get_config() for layer in model.layers]
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    model.fit(x, y, epochs=1, batch_size=4, shuffle=False, verbose=0)
    loaded.fit(x, y, epochs=1, batch_size=4, shuffle=False, verbose=0)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_the_sweeps_cover_the_conv_family_geometry():
    """The draws of ``test_reference_sweep.py`` reach every path: depthwise multipliers > 1 at
    stride 1 (flat kernel) and strided, several group counts, and transposed convolutions with
    groups, asymmetric padding, output_padding beyond padding (bias-only rows), stride, dilation."""
    pytest.importorskip("torch")
    import test_reference_sweep as sweep
    from layer_cases import LAYER_CASES

    seen: dict[str, set] = {}
    for case in LAYER_CASES:
        if case.name not in ("GroupedConvolution", "DepthwiseConvolution", "TransposedConvolution"):
            continue
        for seed in range(sweep.SEEDS_PER_CASE[case.name]):
            layer, _ = case.make(sweep._rng(case.name, seed)[0], np.float64)
            add = lambda key, value: seen.setdefault(f"{case.name}.{key}", set()).add(value)  # noqa: E731
            add("groups", layer.groups)
            add("stride1", layer.stride == (1, 1))
            if case.name == "DepthwiseConvolution":
                add("multiplier", layer.out_channels // layer.groups)
            if case.name == "TransposedConvolution":
                add("asymmetric", len(layer.padding) == 4)
                add("extended", layer._extend != (0, 0))
                add("dilated", layer.dilation != (1, 1))
    assert {2, 3, 4} <= seen["GroupedConvolution.groups"]
    assert {1, 2, 3} <= seen["DepthwiseConvolution.multiplier"] and seen["DepthwiseConvolution.stride1"] == {True, False}
    for key in ("groups", "stride1", "asymmetric", "extended", "dilated"):
        assert len(seen[f"TransposedConvolution.{key}"]) >= 2, key
