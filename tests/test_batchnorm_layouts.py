"""Batch norm, max pooling and global average pooling on inputs in every memory layout.

A fast convolution returns a batch-innermost view (N, C, H, W) of a (C, H, W, N) buffer; the
layers after it must give torch's values on such views and hand back arrays in the same layout
(a layout change costs the neighbours a transposing copy). The reference is torch autograd on
the same values (float64 at 1e-10, float32 at 1e-5), and the layout is read from the strides.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from nn_from_scratch import kernels  # noqa: E402
from nn_from_scratch.neurons import BatchNormalization  # noqa: E402
from nn_from_scratch.nodes import GlobalAveragePooling, MaxPooling  # noqa: E402


def memory_order(a: np.ndarray) -> tuple[int, ...]:
    """Axes of ``a`` from the outermost in memory to the innermost (size-1 axes ignored)."""
    return tuple(i for i in np.argsort([-abs(s) for s in a.strides], kind="stable") if a.shape[i] > 1)


def in_layout(x: np.ndarray, order: tuple[int, ...]) -> np.ndarray:
    """The values of ``x`` in a buffer whose axes, outermost first, are ``order``."""
    return np.ascontiguousarray(x.transpose(order)).transpose(np.argsort(order))


LAYOUTS = {
    "NCHW": (0, 1, 2, 3),
    "batch-innermost (CHWN)": (1, 2, 3, 0),  # a fast convolution's output
    "channels-last (NHWC)": (0, 2, 3, 1),  # reference path (runs of one value per channel)
    "HWNC": (2, 3, 0, 1),
}


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def torch_batch_norm(x, gamma, beta, dy, eps):
    """y, dx, dgamma, dbeta and the batch's mean / unbiased variance, from torch autograd."""
    xt = torch.tensor(np.ascontiguousarray(x), requires_grad=True)
    g = torch.tensor(gamma, requires_grad=True)
    b = torch.tensor(beta, requires_grad=True)
    rm, rv = torch.zeros(len(gamma), dtype=xt.dtype), torch.ones(len(gamma), dtype=xt.dtype)
    y = F.batch_norm(xt, rm, rv, g, b, training=True, momentum=1.0, eps=eps)
    y.backward(torch.tensor(np.ascontiguousarray(dy)))
    return y.detach().numpy(), xt.grad.numpy(), g.grad.numpy(), b.grad.numpy(), rm.numpy(), rv.numpy()


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-10), (np.float32, 1e-5)])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("shape", [(6, 3, 5, 4), (16, 5, 7, 7), (2, 4, 9, 3)])
def test_batch_norm_training_matches_torch_in_every_layout(layout, shape, dtype, tol):
    rng = np.random.default_rng(hash((layout, shape)) % 2**32)
    c = shape[1]
    x = (rng.normal(size=shape) * rng.uniform(0.5, 3, (1, c, 1, 1)) + rng.normal(size=(1, c, 1, 1))).astype(dtype)
    dy = rng.normal(size=shape).astype(dtype)
    gamma, beta = rng.normal(size=c).astype(dtype), rng.normal(size=c).astype(dtype)
    order = LAYOUTS[layout]
    x_in, dy_in = in_layout(x, order), in_layout(dy, order)
    layer = BatchNormalization(momentum=1.0, input_dim=c, gamma=gamma, beta=beta, eps=1e-3, dtype=dtype)
    y = layer.forward(x_in)
    dx = layer.backward(dy_in)
    y_t, dx_t, dg_t, db_t, mean_t, var_t = torch_batch_norm(x, gamma, beta, dy, 1e-3)
    assert y.dtype == dx.dtype == dtype
    assert rel_err(y, y_t) <= tol
    assert rel_err(dx, dx_t) <= tol
    assert rel_err(layer._gamma_pd, dg_t) <= tol
    assert rel_err(layer._beta_pd, db_t) <= tol
    assert rel_err(layer.running_mean, mean_t) <= tol  # momentum 1: the batch's statistics
    assert rel_err(layer.running_var, var_t) <= tol
    # Outputs keep the input's layout (no transposing copy for the neighbours).
    assert memory_order(y) == memory_order(x_in)
    assert memory_order(dx) == memory_order(x_in)


def test_the_fast_path_is_taken_for_batch_innermost_and_contiguous_input_only():
    x = np.zeros((8, 3, 4, 4))
    assert kernels.channel_blocks(in_layout(x, (1, 2, 3, 0)), 1)[0].shape == (1, 3, 128)
    assert kernels.channel_blocks(x, 1)[0].shape == (8, 3, 16)
    assert kernels.channel_blocks(in_layout(x, (0, 2, 3, 1)), 1)[0].shape == (128, 3, 1)  # runs of 1: reference path
    assert kernels.channel_blocks(x[:, :, ::2], 1) is None  # not one block of memory
    assert kernels.channel_blocks(np.broadcast_to(x[:1], x.shape), 1) is None


def test_batch_norm_fast_path_equals_reference_path():
    """The chunked kernel (batch-innermost input) against the reference path (channels-last input,
    whose runs are too short for the kernel) on the same values, float64, several chunk sizes."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(32, 6, 8, 8)) * 3 + 1
    dy = rng.normal(size=x.shape)
    results = []
    before = kernels.normalization.BATCH_NORM_CHUNK_BYTES
    try:
        for chunk, order in ((1 << 20, (1, 2, 3, 0)), (8 << 10, (1, 2, 3, 0)), (1, (0, 1, 2, 3)), (1 << 20, (0, 2, 3, 1))):
            kernels.normalization.BATCH_NORM_CHUNK_BYTES = chunk
            layer = BatchNormalization(input_dim=6, dtype=np.float64)
            y = layer.forward(in_layout(x, order))
            dx = layer.backward(in_layout(dy, order))
            results.append((y, dx, layer._gamma_pd, layer._beta_pd, layer.running_mean.copy(), layer.running_var.copy()))
    finally:
        kernels.normalization.BATCH_NORM_CHUNK_BYTES = before
    for got in results[:-1]:
        for a, b in zip(got, results[-1]):
            assert rel_err(a, b) <= 1e-13


def test_batch_norm_backward_with_dy_in_another_layout():
    """dL/dy laid out differently from x (e.g. C-contiguous after a reshape) gives the same gradients."""
    rng = np.random.default_rng(4)
    x, dy = rng.normal(size=(8, 4, 5, 5)), rng.normal(size=(8, 4, 5, 5))
    layer = BatchNormalization(input_dim=4, dtype=np.float64)
    layer.forward(in_layout(x, (1, 2, 3, 0)))
    dx = layer.backward(dy)  # C-contiguous dy
    _, dx_t, dg_t, db_t, _, _ = torch_batch_norm(x, np.ones(4), np.zeros(4), dy, 1e-5)
    assert rel_err(dx, dx_t) <= 1e-10 and rel_err(layer._gamma_pd, dg_t) <= 1e-10 and rel_err(layer._beta_pd, db_t) <= 1e-10
    assert memory_order(dx) == (1, 2, 3, 0)


def test_batch_norm_large_float32_batch_innermost_is_accurate():
    """A zoo.resnet-sized channel (128 x 28 x 28 values) in float32: within 1e-5 of float64 torch."""
    rng = np.random.default_rng(5)
    x = (rng.normal(size=(128, 2, 28, 28)) * 2 + 5).astype(np.float32)
    dy = rng.normal(size=x.shape).astype(np.float32)
    layer = BatchNormalization(input_dim=2, dtype=np.float32)
    y = layer.forward(in_layout(x, (1, 2, 3, 0)))
    dx = layer.backward(in_layout(dy, (1, 2, 3, 0)))
    y_t, dx_t, dg_t, db_t, _, _ = torch_batch_norm(x.astype(np.float64), np.ones(2), np.zeros(2), dy.astype(np.float64), 1e-5)
    assert rel_err(y, y_t) <= 1e-5 and rel_err(dx, dx_t) <= 1e-5
    assert rel_err(layer._gamma_pd, dg_t) <= 1e-5 and rel_err(layer._beta_pd, db_t) <= 1e-5


def test_batch_norm_of_a_constant_1e37_batch_innermost_input_is_zero():
    # As tests/test_reliability_numerics.py, in the layout of a convolution's output: the fast
    # path's sums overflow and the exact fallback gives x^ = 0, y = beta = 0.
    layer = BatchNormalization(dtype=np.float32)
    x = in_layout(np.full((8, 2, 4, 4), 1e37, np.float32), (1, 2, 3, 0))
    with np.errstate(all="raise"):
        y = layer.forward(x)
    np.testing.assert_array_equal(y, 0)
    np.testing.assert_array_equal(layer.running_var, np.float32(0.9))
    assert np.all(np.isfinite(layer.backward(np.ones(x.shape, np.float32))))


@pytest.mark.parametrize("padding", [0, 1])
def test_max_pooling_keeps_the_batch_innermost_layout(padding):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(4, 3, 7, 7))
    pool = MaxPooling(pool_size=2, padding=padding)
    y = pool.forward(in_layout(x, (1, 2, 3, 0)))
    dy = rng.normal(size=y.shape)
    dx = pool.backward(in_layout(dy, (1, 2, 3, 0)))
    xt = torch.tensor(x, requires_grad=True)
    yt = F.max_pool2d(xt, 2, padding=padding)
    yt.backward(torch.tensor(dy))
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(dx, xt.grad.numpy())
    assert memory_order(y) == memory_order(dx) == (1, 2, 3, 0)


def test_global_average_pooling_gradient_keeps_the_input_layout():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(4, 3, 5, 5))
    gap = GlobalAveragePooling()
    gap.forward(in_layout(x, (1, 2, 3, 0)))
    dy = rng.normal(size=(4, 3))
    dx = gap.backward(dy)
    np.testing.assert_allclose(dx, np.broadcast_to(dy[:, :, None, None] / 25, x.shape), rtol=1e-15)
    assert memory_order(dx) == (1, 2, 3, 0)
    gap.forward(x)
    assert memory_order(gap.backward(dy)) == (0, 1, 2, 3)
