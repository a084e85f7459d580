"""The fast convolution (``kernels.Conv2dPlan``) against the reference im2col/col2im kernels.

Random shapes, padding (symmetric and not), strides (height strides run on row phases),
dilation and memory layouts; every dW and dx kernel the plan can choose is forced in turn, and the
inference forward (unrolled a block of rows at a time) is checked beside the training one. float64: relative error <= 1e-12;
float32: <= 1e-5 against the float64 reference.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from nn_from_scratch import kernels
from nn_from_scratch.neurons import Convolution
from nn_from_scratch.nodes import ReLU

DX_KERNELS = ("rows", "stacked_dy")
FORWARD_KERNELS = ("accumulate", "partial_sums")


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def random_case(rng: np.random.Generator, dtype, max_stride: int = 4):
    """A random geometry (any stride, dilation and padding), its inputs and weights."""
    while True:
        kh, kw = (int(v) for v in rng.integers(1, 6, size=2))
        dh, dw = (int(v) for v in rng.integers(1, 4, size=2))
        sh, sw = (int(v) for v in rng.integers(1, max_stride, size=2))
        padding = tuple(int(v) for v in rng.integers(0, 4, size=4))
        n, c, o = (int(v) for v in rng.integers(1, 5, size=3))
        h, w = (int(v) for v in rng.integers(1, 13, size=2))
        geom = kernels.ConvGeometry(kh, kw, (sh, sw), (dh, dw), padding)
        oh, ow = geom.output_hw(h, w)
        if oh >= 1 and ow >= 1:
            break
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    W = rng.standard_normal((o, c, kh, kw)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    dy = rng.standard_normal((n, o, oh, ow)).astype(dtype)
    return geom, x, W, b, dy


def reference(x, W, b, dy, geom):
    """The reference kernels, in float64."""
    x, W, b, dy = (a.astype(np.float64) for a in (x, W, b, dy))
    y, cols = kernels.conv2d_forward(x, W, b, geom)
    dx, dW, db = kernels.conv2d_backward(dy, cols, x.shape, W, geom)
    return y, dx, dW, db


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("thin_products_in_pieces", [False, True])
def test_fast_conv_matches_reference(dtype, tol, seed, thin_products_in_pieces, monkeypatch):
    if thin_products_in_pieces:  # the test's small products split the way real layers' do
        from nn_from_scratch.kernels import blas

        monkeypatch.setattr(blas, "PIECE_MACS", 32)
        monkeypatch.setattr(blas, "INNER_PIECE_BYTES", 16 * dtype().itemsize)
    rng = np.random.default_rng(seed)
    for _ in range(12):
        geom, x, W, b, dy = random_case(rng, dtype)
        y_ref, dx_ref, dW_ref, db_ref = reference(x, W, b, dy, geom)
        chunk = int(rng.integers(1, 40))  # several pixel chunks, the last one partial
        block_rows = int(rng.integers(1, 5))  # several blocks of rows in dx, the last one partial
        plan = kernels.Conv2dPlan(x.shape, W.shape[0], geom, dtype, chunk_pixels=chunk, dx_block_rows=block_rows)
        for forward_kernel in FORWARD_KERNELS:
            plan.forward_kernel = forward_kernel
            y = plan.forward(x, W, b, keep_for_backward=False)  # inference: blocks of rows, nothing kept
            assert y.dtype == dtype and rel_err(y, y_ref) <= tol, (geom, forward_kernel)
            y = plan.forward(x, W, b)
            assert y.dtype == dtype and rel_err(y, y_ref) <= tol, (geom, forward_kernel)
        for dx_kernel in DX_KERNELS:
            for from_stacked in (True, False):
                plan.dx_kernel, plan.dW_from_stacked_dy = dx_kernel, from_stacked
                dx, dW, db = plan.backward(dy, W)
                for got, want in ((dx, dx_ref), (dW, dW_ref), (db, db_ref)):
                    assert got.dtype == dtype, dx_kernel
                    assert rel_err(got, want) <= tol, (geom, dx_kernel, from_stacked)
        # A layer too large to keep U whole: the input kept by reference, unrolled again in blocks.
        blocked = kernels.Conv2dPlan(x.shape, W.shape[0], geom, dtype, chunk_pixels=chunk,
                                     dx_block_rows=block_rows, whole_U_bytes=0)
        assert blocked.blocked
        for dx_kernel in DX_KERNELS:
            blocked.dx_kernel = dx_kernel
            assert rel_err(blocked.forward(x, W, b), y_ref) <= tol, geom
            for got, want in zip(blocked.backward(dy, W), (dx_ref, dW_ref, db_ref)):
                assert got.dtype == dtype and rel_err(got, want) <= tol, (geom, "blocked", dx_kernel)
            assert blocked._x is None and blocked._U is None  # nothing of the input's size kept


def test_fast_conv_accepts_any_memory_layout():
    """Inputs and dL/dy as views in another memory order (as the layers pass them) give the same result."""
    rng = np.random.default_rng(10)
    for _ in range(10):
        geom, x, W, b, dy = random_case(rng, np.float64)
        y_ref, dx_ref, dW_ref, db_ref = reference(x, W, b, dy, geom)
        x_view = np.ascontiguousarray(x.transpose(1, 2, 0, 3)).transpose(2, 0, 1, 3)  # (C, H, N, W) in memory
        dy_view = np.asfortranarray(dy)
        plan = kernels.Conv2dPlan(x.shape, W.shape[0], geom, np.float64)
        assert rel_err(plan.forward(x_view, W, b), y_ref) <= 1e-12
        dx, dW, db = plan.backward(dy_view, W)
        assert max(rel_err(dx, dx_ref), rel_err(dW, dW_ref), rel_err(db, db_ref)) <= 1e-12


def test_fast_conv_results_are_not_overwritten_by_later_calls():
    """Work buffers are reused between calls, the returned arrays never are."""
    rng = np.random.default_rng(11)
    geom = kernels.ConvGeometry(3, 2, (1, 2), (2, 1), (1, 2, 0, 1))
    x_shape, W = (3, 2, 9, 8), rng.standard_normal((4, 2, 3, 2))
    b = rng.standard_normal(4)
    for dx_kernel in DX_KERNELS:
        plan = kernels.Conv2dPlan(x_shape, 4, geom, np.float64)
        plan.dx_kernel = dx_kernel
        y1 = plan.forward(rng.standard_normal(x_shape), W, b)
        results = (y1, *plan.backward(rng.standard_normal(y1.shape), W))
        saved = [a.copy() for a in results]
        plan.forward(rng.standard_normal(x_shape), W, b)
        plan.backward(rng.standard_normal(y1.shape), W)
        for before, now in zip(saved, results):
            np.testing.assert_array_equal(before, now)


def test_inference_forward_keeps_nothing_for_a_backward():
    geom = kernels.ConvGeometry(3, 3, (2, 1), (1, 1), (1, 1, 1, 1))
    plan = kernels.Conv2dPlan((2, 3, 8, 8), 4, geom, np.float64)
    rng = np.random.default_rng(3)
    plan.forward(rng.standard_normal((2, 3, 8, 8)), rng.standard_normal((4, 3, 3, 3)), None, keep_for_backward=False)
    assert plan._xpad is None and plan._U is None and plan._dy is None and plan._Z is None and plan._D is None
    with pytest.raises(RuntimeError, match="keep_for_backward"):
        plan.backward(np.zeros((2, 4, 4, 8)), np.zeros((4, 3, 3, 3)))


@given(
    n=st.integers(1, 3), c=st.integers(1, 3), o=st.integers(1, 3),
    h=st.integers(1, 9), w=st.integers(1, 9), kh=st.integers(1, 4), kw=st.integers(1, 4),
    sh=st.integers(1, 5), sw=st.integers(1, 5), dh=st.integers(1, 3), dw=st.integers(1, 3),
    pads=st.tuples(*[st.integers(0, 3)] * 4), chunk=st.integers(1, 50), block_rows=st.integers(1, 6),
)
@settings(max_examples=150, deadline=None)
def test_fast_conv_property_any_geometry(n, c, o, h, w, kh, kw, sh, sw, dh, dw, pads, chunk, block_rows):
    """Edges: one output row or column, strides larger than the kernel or the image, heavy padding."""
    geom = kernels.ConvGeometry(kh, kw, (sh, sw), (dh, dw), pads)
    oh, ow = geom.output_hw(h, w)
    assume(oh >= 1 and ow >= 1)
    rng = np.random.default_rng(n + 10 * c + 100 * h)
    x, W, b = rng.standard_normal((n, c, h, w)), rng.standard_normal((o, c, kh, kw)), rng.standard_normal(o)
    dy = rng.standard_normal((n, o, oh, ow))
    y_ref, dx_ref, dW_ref, db_ref = reference(x, W, b, dy, geom)
    plan = kernels.Conv2dPlan(x.shape, o, geom, np.float64, chunk_pixels=chunk, dx_block_rows=block_rows)
    assert rel_err(plan.forward(x, W, b, keep_for_backward=False), y_ref) <= 1e-12
    assert rel_err(plan.forward(x, W, b), y_ref) <= 1e-12
    for dx_kernel in DX_KERNELS:
        plan.dx_kernel = dx_kernel
        dx, dW, db = plan.backward(dy, W)
        assert max(rel_err(dx, dx_ref), rel_err(dW, dW_ref), rel_err(db, db_ref)) <= 1e-12, dx_kernel
    blocked = kernels.Conv2dPlan(x.shape, o, geom, np.float64, chunk_pixels=chunk, dx_block_rows=block_rows, whole_U_bytes=0)
    assert rel_err(blocked.forward(x, W, b), y_ref) <= 1e-12
    dx, dW, db = blocked.backward(dy, W)
    assert max(rel_err(dx, dx_ref), rel_err(dW, dW_ref), rel_err(db, db_ref)) <= 1e-12, "blocked"


@pytest.mark.parametrize("seed", range(3))
def test_convolution_layer_fast_and_reference_paths(seed):
    """The layer gives the reference's results for any stride, in training and in inference passes."""
    rng = np.random.default_rng(100 + seed)
    for _ in range(8):
        geom, x, W, b, dy = random_case(rng, np.float64)
        layer = Convolution(
            x.shape[1:], (geom.kh, geom.kw), W.shape[0], padding=geom.padding, W=W, B=b,
            stride=geom.stride, dilation=geom.dilation, dtype=np.float64,
        )
        y_ref, dx_ref, dW_ref, db_ref = reference(x, W, b, dy, geom)
        layer.keep_cache = False  # as a model's inference pass sets it
        assert rel_err(layer.forward(x), y_ref) <= 1e-12
        layer.keep_cache = True
        for _ in range(2):  # twice: the second call reuses the plan's buffers
            assert rel_err(layer.forward(x), y_ref) <= 1e-12
            layer.zero_grad()  # gradients accumulate across backward calls
            dx = layer.backward(dy)
            assert max(rel_err(dx, dx_ref), rel_err(layer._W_pd, dW_ref), rel_err(layer._B_pd, db_ref)) <= 1e-12


def test_convolution_layer_new_batch_size_rebuilds_plan():
    rng = np.random.default_rng(7)
    layer = Convolution((3, 9, 9), 3, 4, padding=1, dtype=np.float64)
    for n in (5, 2, 5):
        x = rng.standard_normal((n, 3, 9, 9))
        y_ref, _ = kernels.conv2d_forward(x, layer.W, layer.B, layer.geometry)
        assert rel_err(layer.forward(x), y_ref) <= 1e-12


def test_relu_backward_equals_masked_gradient():
    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((4, 3, 5, 6)).astype(dtype)
        g = rng.standard_normal(x.shape).astype(dtype)
        relu = ReLU()
        relu.forward(x)
        dx = relu.backward(g)
        assert dx.dtype == dtype
        np.testing.assert_array_equal(dx, np.where(x > 0, g, 0))


def test_skipping_the_input_gradient_keeps_the_parameter_gradients():
    """``need_input_grad=False`` (the first layer in training) returns None and the same dW, dB."""
    from nn_from_scratch.losses import SoftMaxLoss
    from nn_from_scratch.model import Sequential
    from nn_from_scratch.neurons import Linear
    from nn_from_scratch.nodes import Vectorization

    rng = np.random.default_rng(5)
    for first in (
        Convolution((2, 7, 7), 3, 3, padding=1, dtype=np.float64),  # fast path
        Convolution((2, 7, 7), 3, 3, stride=2, dtype=np.float64),  # reference path
    ):
        model = Sequential([first, ReLU(), Vectorization(), Linear(output_dim=4, dtype=np.float64)], loss=SoftMaxLoss(), seed=1)
        x, labels = rng.standard_normal((5, 2, 7, 7)), rng.integers(0, 4, 5)
        model.loss.forward(model.forward(x, training=True), labels)
        dx = model.backward(model.loss.backward())
        grads = {k: v.copy() for k, v in first.gradients().items()}
        assert dx.shape == x.shape
        for layer in model.layers:
            layer.zero_grad()
        model.forward(x, training=True)  # a model's backward frees the caches it used, as torch does
        assert model.backward(model.loss.backward(), need_input_grad=False) is None
        for k, v in first.gradients().items():
            np.testing.assert_array_equal(v, grads[k])
    linear = Linear(6, 3, dtype=np.float64)
    linear.forward(rng.standard_normal((4, 6)))
    dy = rng.standard_normal((4, 3))
    linear.backward(dy)
    dW = linear._W_pd.copy()
    linear.zero_grad()
    assert linear.backward(dy, need_input_grad=False) is None
    np.testing.assert_array_equal(linear._W_pd, dW)


def test_max_pooling_keeps_the_memory_order_of_its_input():
    """A batch-innermost input (a convolution's output) gives the same values, in the same order."""
    rng = np.random.default_rng(8)
    geom = kernels.ConvGeometry(2, 2, (2, 2), (1, 1), (0, 0, 0, 0))
    x = np.maximum(rng.standard_normal((5, 3, 8, 6)), 0)  # ReLU output: many ties at 0
    x_chwn = np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    y, argmax = kernels.max_pool2d_forward(x, geom)
    y2, argmax2 = kernels.max_pool2d_forward(x_chwn, geom)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(argmax, argmax2)
    assert y2.transpose(1, 2, 3, 0).flags.c_contiguous
    dy = rng.standard_normal(y.shape)
    dx = kernels.max_pool2d_backward(dy, argmax, x.shape, geom)
    dx2 = kernels.max_pool2d_backward(dy, argmax2, x.shape, geom)
    np.testing.assert_array_equal(dx, dx2)
    assert dx2.transpose(1, 2, 3, 0).flags.c_contiguous


def test_zeros_in_layout_of():
    like = np.empty((2, 3, 4, 5)).transpose(3, 0, 1, 2)  # shape (5, 2, 3, 4), axis 0 innermost
    z = kernels.zeros_in_layout_of(like, (7, 2, 3, 4), np.float32)
    assert z.shape == (7, 2, 3, 4) and z.dtype == np.float32 and not z.any()
    assert z.transpose(1, 2, 3, 0).flags.c_contiguous


def test_float32_training_step_stays_float32():
    """No silent upcast: every activation, dL/dx and gradient of a float32 conv net is float32."""
    from nn_from_scratch.losses import SoftMaxLoss
    from nn_from_scratch.model import Sequential
    from nn_from_scratch.neurons import Linear
    from nn_from_scratch.nodes import MaxPooling, Vectorization
    from nn_from_scratch.optimizers import GradientDescent

    layers = [
        Convolution((1, 12, 12), 3, 4, padding=1), ReLU(), MaxPooling(2),
        Convolution((4, 6, 6), 3, 2), ReLU(), Vectorization(), Linear(32, 10),
    ]
    model = Sequential(layers, loss=SoftMaxLoss(), optimizer=GradientDescent(0.1), seed=0)
    rng = np.random.default_rng(0)
    x = rng.random((6, 1, 12, 12), dtype=np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 6)]
    h = x
    for layer in layers:
        h = layer.forward(h)
        assert h.dtype == np.float32, layer.name
    assert model.loss.forward(h, y).dtype == np.float32
    g = model.loss.backward()
    for layer in reversed(layers):
        g = layer.backward(g)
        assert g.dtype == np.float32, layer.name
    for layer in layers:
        for name, grad in layer.gradients().items():
            assert grad.dtype == np.float32, (layer.name, name)
    model.train_step(x, y)
    assert all(p.dtype == np.float32 for _, p in model.parameters())
