"""Property-based tests (hypothesis): laws the kernels, layers, losses and file formats must obey
for *every* input, with hypothesis searching the edges (1x1 outputs, a kernel as large as the
padded image, padding wider than the kernel, ties, NaN and -inf, zero-sized axes, cut files).

Every test is deterministic (``derandomize=True``) so CI sees the same examples each run.
Arrays are drawn from a hypothesis-drawn seed: hypothesis explores the shapes and geometry,
where the bugs of these kernels live, and NumPy fills the arrays cheaply.

Tolerances (float64): 1e-12 relative to the scale of the terms summed, which bounds the
rounding of sums of a few hundred products (``K * eps`` with ``K <= 6 * 7 * 7``) with margin.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nn_from_scratch import kernels
from nn_from_scratch.datasets import DatasetFileError, read_idx
from nn_from_scratch.losses import BinaryCrossEntropy, SoftMaxLoss
from nn_from_scratch.neurons import Convolution
from nn_from_scratch.nodes import AveragePooling, MaxPooling

TOL = 1e-12


def deterministic(max_examples: int, **kwargs):
    """``derandomize`` for a reproducible CI; no deadline (a busy 2-core machine is noisy)."""
    return settings(max_examples=max_examples, deadline=None, derandomize=True, **kwargs)


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    assert got.shape == want.shape, (got.shape, want.shape)
    if got.size == 0:
        return 0.0
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-300))


def dot(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(a * b))


def dot_scale(a: np.ndarray, b: np.ndarray) -> float:
    """``sum |a| |b|``: the size of the terms of ``<a, b>``, which its rounding error is relative to."""
    return max(float(np.sum(np.abs(a) * np.abs(b))), 1e-300)


# -- strategies -------------------------------------------------------------------------------
def near_minimum_size(draw, effective_kernel: int, pad_total: int) -> int:
    """An image side from the smallest that gives one output pixel up to 3 more."""
    return max(1, effective_kernel - pad_total) + draw(st.integers(0, 3))


@st.composite
def paddings(draw) -> kernels.Padding4:
    """(top, bottom, left, right), 0-3 each: none (the fast plan's no-copy path), symmetric,
    all four independent, or on one side only (bugs that swap sides show up there)."""
    kind = draw(st.sampled_from(["none", "symmetric", "independent", "one side"]))
    if kind == "none":
        return (0, 0, 0, 0)
    if kind == "symmetric":
        ph, pw = draw(st.integers(0, 3)), draw(st.integers(0, 3))
        return (ph, ph, pw, pw)
    if kind == "independent":
        return tuple(draw(st.integers(0, 3)) for _ in range(4))
    pads = [0, 0, 0, 0]
    pads[draw(st.integers(0, 3))] = draw(st.integers(1, 3))
    return tuple(pads)


@st.composite
def conv_cases(draw, height_stride=st.integers(1, 3)):
    """A convolution geometry at the edge of validity, its input shape and an array seed.

    Kernel 1-7 (often non-square), dilation 1-3, stride 1-3, padding 0-3 (see
    :func:`paddings`), and an image at most 3 pixels above the smallest valid one: the
    one-pixel outputs, kernels that span the whole (padded) image and windows that lie
    entirely in the padding are all reachable.
    """
    kh, kw = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(height_stride), draw(st.integers(1, 3))
    padding = draw(paddings())
    h = near_minimum_size(draw, dh * (kh - 1) + 1, padding[0] + padding[1])
    w = near_minimum_size(draw, dw * (kw - 1) + 1, padding[2] + padding[3])
    n, c, o = draw(st.integers(1, 4)), draw(st.integers(1, 6)), draw(st.integers(1, 4))
    geom = kernels.ConvGeometry(kh, kw, (sh, sw), (dh, dw), padding)
    assert min(geom.output_hw(h, w)) >= 1
    return geom, (n, c, h, w), o, draw(st.integers(0, 2**32 - 1))


def conv_arrays(geom: kernels.ConvGeometry, x_shape, o: int, seed: int):
    rng = np.random.default_rng(seed)
    n, c = x_shape[:2]
    oh, ow = geom.output_hw(*x_shape[2:])
    x = rng.standard_normal(x_shape)
    W = rng.standard_normal((o, c, geom.kh, geom.kw))
    b = rng.standard_normal(o)
    dy = rng.standard_normal((n, o, oh, ow))
    return x, W, b, dy


# -- convolution kernels -------------------------------------------------------------------------
@deterministic(300)
@given(
    case=conv_cases(height_stride=st.just(1)),
    chunk_pixels=st.one_of(st.none(), st.integers(1, 64)),
    dx_block_rows=st.one_of(st.none(), st.integers(1, 5)),
    batch_innermost=st.booleans(),
)
def test_fast_conv_plan_equals_the_im2col_reference(case, chunk_pixels, dx_block_rows, batch_innermost):
    """Conv2dPlan (what Convolution runs for height stride 1) == conv2d_forward/backward, for
    every dW and dx kernel, with any pixel chunking and dx row blocking (the last one partial),
    and for x and dy in NCHW memory or batch-innermost (what a previous convolution or ReLU
    hands over; the plan then reads x in place when there is no padding)."""
    geom, x_shape, o, seed = case
    x, W, b, dy = conv_arrays(geom, x_shape, o, seed)
    y_ref, cols = kernels.conv2d_forward(x, W, b, geom)
    dx_ref, dW_ref, db_ref = kernels.conv2d_backward(dy, cols, x.shape, W, geom)
    if batch_innermost:
        x, dy = (np.ascontiguousarray(a.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2) for a in (x, dy))

    plan = kernels.Conv2dPlan(x.shape, o, geom, np.float64, chunk_pixels=chunk_pixels, dx_block_rows=dx_block_rows)
    assert rel_err(plan.forward(x, W, b), y_ref) <= TOL
    for from_stacked in (True, False):
        for dx_kernel in ("rows", "stacked_dy"):
            plan.dW_from_stacked_dy, plan.dx_kernel = from_stacked, dx_kernel
            dx, dW, db = plan.backward(dy, W)
            assert rel_err(dx, dx_ref) <= TOL, (from_stacked, dx_kernel)
            assert rel_err(dW, dW_ref) <= TOL, (from_stacked, dx_kernel)
            assert rel_err(db, db_ref) <= TOL


@deterministic(200)
@given(case=conv_cases())
def test_col2im_is_the_adjoint_of_im2col(case):
    """Dot-product test: ``<im2col(x), C> == <x, col2im(C)>`` for random x and C."""
    geom, x_shape, _, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    cols = kernels.im2col(x, geom)
    oh, ow = geom.output_hw(*x_shape[2:])
    assert cols.shape == (x_shape[1] * geom.kh * geom.kw, x_shape[0] * oh * ow)
    C = rng.standard_normal(cols.shape)
    back = kernels.col2im(C, x_shape, geom)
    assert back.shape == x_shape
    assert abs(dot(cols, C) - dot(x, back)) <= TOL * dot_scale(cols, C)


@deterministic(150)
@given(case=conv_cases())
def test_convolution_backward_is_the_adjoint_of_its_forward(case):
    """Without bias y is bilinear in (x, W): ``<y, dy> == <x, dx> == <W, dW>``, on both the fast
    path (height stride 1) and the reference path -- independent of any reference implementation."""
    geom, x_shape, o, seed = case
    x, W, _, dy = conv_arrays(geom, x_shape, o, seed)
    layer = Convolution(x_shape[1:], (geom.kh, geom.kw), o, padding=geom.padding, W=W, use_bias=False,
                        stride=geom.stride, dilation=geom.dilation, dtype=np.float64)
    y = layer.forward(x)
    dx = layer.backward(dy)
    y_dy, scale = dot(y, dy), dot_scale(y, dy)
    # sum |y||dy| can be far below sum of |terms| when y cancels; bound by the terms of y instead.
    scale = max(scale, dot_scale(kernels.conv2d_forward(np.abs(x), np.abs(W), None, geom)[0], dy))
    assert abs(dot(x, dx) - y_dy) <= TOL * scale
    assert abs(dot(W, layer._W_pd) - y_dy) <= TOL * scale


@deterministic(150)
@given(case=conv_cases(), a=st.floats(-3, 3), b=st.floats(-3, 3))
def test_convolution_is_linear_in_the_input_and_in_the_weights(case, a, b):
    geom, x_shape, o, seed = case
    rng = np.random.default_rng(seed)
    x1, x2 = rng.standard_normal(x_shape), rng.standard_normal(x_shape)
    W1, W2 = (rng.standard_normal((o, x_shape[1], geom.kh, geom.kw)) for _ in range(2))

    def conv(x, W):
        layer = Convolution(x_shape[1:], (geom.kh, geom.kw), o, padding=geom.padding, W=W, use_bias=False,
                            stride=geom.stride, dilation=geom.dilation, dtype=np.float64)
        return layer.forward(x)

    def terms(x, W):  # the size of the summed products, per output element
        return kernels.conv2d_forward(np.abs(x), np.abs(W), None, geom)[0]

    scale = (abs(a) * terms(x1, W1) + abs(b) * terms(x2, W1)).max() + 1e-300
    assert np.abs(conv(a * x1 + b * x2, W1) - (a * conv(x1, W1) + b * conv(x2, W1))).max() <= TOL * scale
    scale = (abs(a) * terms(x1, W1) + abs(b) * terms(x1, W2)).max() + 1e-300
    assert np.abs(conv(x1, a * W1 + b * W2) - (a * conv(x1, W1) + b * conv(x1, W2))).max() <= TOL * scale


def torch_output_side(size: int, pad_total: int, kernel: int, stride: int, dilation: int) -> int:
    """The output length in torch.nn.Conv2d's documentation."""
    return math.floor((size + pad_total - dilation * (kernel - 1) - 1) / stride + 1)


@deterministic(200)
@given(
    h=st.integers(1, 12), w=st.integers(1, 12), k=st.tuples(st.integers(1, 7), st.integers(1, 7)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)), dilation=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    padding=st.one_of(st.integers(0, 3), st.tuples(*[st.integers(0, 3)] * 4), st.just("valid")),
)
def test_convolution_output_shape(h, w, k, stride, dilation, padding):
    """The layer's shape == ConvGeometry.output_hw == torch's formula == the forward's output;
    an input too small for the kernel is refused with a ValueError that names the layer."""
    pads = (0, 0, 0, 0) if padding == "valid" else (padding,) * 4 if isinstance(padding, int) else padding
    expected = (torch_output_side(h, pads[0] + pads[1], k[0], stride[0], dilation[0]),
                torch_output_side(w, pads[2] + pads[3], k[1], stride[1], dilation[1]))
    make = lambda: Convolution((2, h, w), k, 3, padding=padding, stride=stride, dilation=dilation,  # noqa: E731
                               dtype=np.float64, name="conv_under_test")
    if min(expected) < 1:
        with pytest.raises(ValueError, match="conv_under_test"):
            make()
        return
    layer = make()
    assert layer.geometry.padding == pads
    assert layer.output_shape == (3,) + expected == (3,) + layer.geometry.output_hw(h, w)
    assert layer.forward(np.ones((2, 2, h, w))).shape == (2, 3) + expected


@deterministic(150)
@given(
    h=st.integers(1, 12), w=st.integers(1, 12), k=st.tuples(st.integers(1, 7), st.integers(1, 7)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)), dilation=st.tuples(st.integers(1, 3), st.integers(1, 3)),
)
def test_same_padding_gives_ceil_of_size_over_stride(h, w, k, stride, dilation):
    """Keras' "same": output ``ceil(H / stride)`` for any kernel, stride and dilation, from the
    least padding that gives it, the odd pixel at the bottom/right (as TensorFlow)."""
    layer = Convolution((1, h, w), k, 2, padding="same", stride=stride, dilation=dilation, dtype=np.float64)
    expected = (-(-h // stride[0]), -(-w // stride[1]))
    assert layer.output_shape == (2,) + expected
    assert layer.forward(np.ones((1, 1, h, w))).shape == (1, 2) + expected
    pt, pb, pl, pr = layer.geometry.padding
    for size, kernel, s, d, before, after, out in ((h, k[0], stride[0], dilation[0], pt, pb, expected[0]),
                                                   (w, k[1], stride[1], dilation[1], pl, pr, expected[1])):
        assert before <= after <= before + 1
        assert before + after == max((out - 1) * s + d * (kernel - 1) + 1 - size, 0)  # no more than needed
        assert torch_output_side(size, before + after, kernel, s, d) == out
    pooling = MaxPooling(k, stride=stride, padding="same")
    assert pooling.forward(np.ones((1, 1, h, w))).shape == (1, 1) + expected


# -- pooling ------------------------------------------------------------------------------------
@st.composite
def pool_cases(draw):
    """Pool 1-4 (non-square too), stride 1-4, numeric padding up to half the pool on each side
    (torch's limit) or "same", an image just above the smallest valid one, and either
    continuous values, small integers (many ties), or small integers and -inf."""
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    if draw(st.booleans()):
        padding = "same"
        h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    else:
        padding = (draw(st.integers(0, kh // 2)), draw(st.integers(0, kh // 2)),
                   draw(st.integers(0, kw // 2)), draw(st.integers(0, kw // 2)))
        h = near_minimum_size(draw, kh, padding[0] + padding[1])
        w = near_minimum_size(draw, kw, padding[2] + padding[3])
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    values = draw(st.sampled_from(["normal", "ties", "ties with -inf"]))
    if values == "normal":
        x = rng.standard_normal((n, c, h, w))
    else:
        x = rng.integers(-2, 3, size=(n, c, h, w)).astype(np.float64)
        if values == "ties with -inf":  # ties with the -inf padding of max pooling too
            x[x < 0] = -np.inf
    return (kh, kw), stride, padding, x, rng


def brute_force_windows(x: np.ndarray, geom: kernels.ConvGeometry, fill: float):
    """Every window of ``x`` padded with ``fill``, by plain slicing: ``{(i, j): (N, C, kh, kw)}``."""
    xp = kernels.pad2d(x, geom.padding, fill)
    oh, ow = geom.output_hw(*x.shape[2:])
    (sh, sw), kh, kw = geom.stride, geom.kh, geom.kw
    return {(i, j): xp[:, :, i * sh : i * sh + kh, j * sw : j * sw + kw] for i in range(oh) for j in range(ow)}


@deterministic(200)
@given(case=pool_cases())
def test_max_pooling_is_the_window_maximum_and_routes_all_the_gradient(case):
    pool, stride, padding, x, rng = case
    layer = MaxPooling(pool, stride=stride, padding=padding)
    y = layer.forward(x)
    geom = layer.geometry
    assert y.shape[2:] == geom.output_hw(*x.shape[2:])
    if padding == "same":
        assert y.shape[2:] == (-(-x.shape[2] // stride[0]), -(-x.shape[3] // stride[1]))
    if np.isfinite(x).all():
        assert np.isfinite(y).all()  # every window holds at least one element of x, so padding never wins
    windows = brute_force_windows(x, geom, -np.inf)
    for (i, j), window in windows.items():  # y >= every element of its window, and is one of them
        np.testing.assert_array_equal(y[:, :, i, j], window.max(axis=(2, 3)))

    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    assert dx.shape == x.shape
    # All of sum(dy), no more, no less: none lost to padding, even where padding ties with -inf
    # (such windows used to send their gradient to the padding; torch does not).
    assert abs(dx.sum() - dy.sum()) <= TOL * np.abs(dy).sum()
    # The gradient lands only on elements that are the maximum of some window containing them.
    is_a_max = kernels.pad2d(np.zeros(x.shape, dtype=bool), geom.padding, False)
    (sh, sw), (pt, _, pl, _) = geom.stride, geom.padding
    for (i, j), window in windows.items():
        is_a_max[:, :, i * sh : i * sh + geom.kh, j * sw : j * sw + geom.kw] |= window == y[:, :, i, j, None, None]
    assert not dx[~is_a_max[:, :, pt : pt + x.shape[2], pl : pl + x.shape[3]]].any()
    if np.isfinite(x).all():  # locally y = x[argmax] is linear: <y, dy> == <x, dx>
        assert abs(dot(y, dy) - dot(x, dx)) <= TOL * dot_scale(y, dy)


@deterministic(100)
@given(case=pool_cases(), data=st.data())
def test_max_pooling_propagates_nan_to_exactly_the_windows_holding_it(case, data):
    """As torch's max_pool2d: a NaN makes every window containing it NaN; the others are
    unchanged; the gradient of those windows goes to the NaN (found by hypothesis: with
    "same" padding it went to the padding, and was lost)."""
    pool, stride, padding, x, rng = case
    n, c, h, w = x.shape
    where = tuple(data.draw(st.integers(0, size - 1), label=axis) for axis, size in zip("nchw", x.shape))
    layer = MaxPooling(pool, stride=stride, padding=padding)
    y_clean = layer.forward(x)
    x_nan = x.copy()
    x_nan[where] = np.nan
    y = layer.forward(x_nan)
    holds_nan = {ij for ij, window in brute_force_windows(x_nan, layer.geometry, -np.inf).items()
                 if np.isnan(window[where[0], where[1]]).any()}
    for i in range(y.shape[2]):
        for j in range(y.shape[3]):
            expected = np.where(
                (np.arange(n)[:, None] == where[0]) & (np.arange(c)[None, :] == where[1]) & ((i, j) in holds_nan),
                np.nan, y_clean[:, :, i, j])
            np.testing.assert_array_equal(y[:, :, i, j], expected)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    assert np.isfinite(dx).all() and abs(dx.sum() - dy.sum()) <= TOL * np.abs(dy).sum()
    # torch sends a NaN window's gradient to its NaN (never to padding, which would lose it).
    to_nan = sum((dy[where[0], where[1], i, j] for i, j in holds_nan), 0.0)
    assert abs(dx[where] - to_nan) <= TOL * np.abs(dy).sum()


@deterministic(200)
@given(case=pool_cases(), count_include_pad=st.booleans(), value=st.floats(-1e6, 1e6))
def test_average_pooling_of_a_constant_is_the_constant_and_backward_is_the_adjoint(case, count_include_pad, value):
    pool, stride, padding, x, rng = case
    x[np.isinf(x)] = -3.0  # -inf is for max pooling; an average of it is -inf or NaN
    layer = AveragePooling(pool, stride=stride, padding=padding, count_include_pad=count_include_pad)
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    assert dx.shape == x.shape
    assert abs(dot(y, dy) - dot(x, dx)) <= TOL * dot_scale(x, dx)

    constant = np.full_like(x, value)
    y_constant = layer.forward(constant)
    if not any(layer.geometry.padding) or not count_include_pad:
        # Every divisor counts exactly the elements of x summed: the average of equal values.
        assert np.abs(y_constant - value).max() <= TOL * abs(value)
    else:  # zero padding counted in the divisor can only pull the average towards 0
        assert (np.abs(y_constant) <= abs(value) * (1 + TOL)).all()


# -- losses -------------------------------------------------------------------------------------
@st.composite
def logits_and_labels(draw, scale=st.floats(0.0, 50.0)):
    n, k = draw(st.integers(1, 6)), draw(st.integers(2, 8))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    z = rng.standard_normal((n, k)) * draw(scale)
    return z, rng.integers(0, k, n), rng


@deterministic(200)
@given(case=logits_and_labels(), shift=st.floats(-100.0, 100.0), smoothing=st.sampled_from([0.0, 0.1]))
def test_softmax_loss_properties(case, shift, smoothing):
    z, labels, rng = case
    n, k = z.shape
    loss = SoftMaxLoss(label_smoothing=smoothing)
    value = float(loss.forward(z, labels))
    grad = loss.backward()
    assert value >= 0.0
    assert np.abs(grad.sum(axis=1)).max() <= 4 * k * np.finfo(np.float64).eps / n  # softmax and target both sum to 1
    one_hot = np.eye(k)[labels]
    assert float(loss.forward(z, one_hot)) == value  # integer labels are exactly one-hot labels
    np.testing.assert_array_equal(loss.backward(), grad)

    # Softmax ignores a per-row constant. Adding it rounds the logits by eps * |z + c|.
    row_shift = shift * rng.random((n, 1))
    rounding = 8 * k * np.finfo(np.float64).eps * (np.abs(z).max() + abs(shift))
    assert abs(float(loss.forward(z + row_shift, labels)) - value) <= rounding + TOL * value
    assert np.abs(loss.backward() - grad).max() <= rounding


@deterministic(100)
@given(case=logits_and_labels(scale=st.floats(1e3, 1e4)), soft=st.booleans())
def test_softmax_loss_stays_finite_for_huge_logits(case, soft):
    """Logits of 1e4 overflow exp(); the loss must still be the exact value ``logsumexp(z) - z_t``."""
    z, labels, rng = case
    target = rng.dirichlet(np.ones(z.shape[1]), size=z.shape[0]) if soft else labels
    loss = SoftMaxLoss()
    value = float(loss.forward(z, target))
    grad = loss.backward()
    assert math.isfinite(value) and value >= 0 and np.isfinite(grad).all()
    t = target if soft else np.eye(z.shape[1])[labels]
    m = z.max(axis=1, keepdims=True)
    expected = float(np.mean(np.sum(t * (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)) - z), axis=1)))
    assert abs(value - expected) <= TOL * max(abs(expected), np.abs(z).max())
    assert np.abs(grad).max() <= 1.0 / z.shape[0] + 1e-15


@deterministic(150)
@given(
    z=hnp.arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(1, 4)),
                 elements=st.floats(-1e300, 1e300, allow_nan=False, allow_infinity=False)),
    hard=st.booleans(), seed=st.integers(0, 2**32 - 1),
)
def test_binary_cross_entropy_is_exact_for_huge_logits(z, hard, seed):
    """``softplus(z) - t z`` computed without overflow or cancellation, for logits up to 1e300;
    the gradient ``(sigmoid(z) - t) / size`` stays finite and matches an independent sigmoid."""
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 2, z.shape).astype(np.float64) if hard else rng.random(z.shape)
    loss = BinaryCrossEntropy()
    value = float(loss.forward(z, t))
    grad = loss.backward()
    # softplus(z) - t z as a sum of two non-negative terms, which cannot cancel (the plain
    # logaddexp(0, z) - t z loses ~1e-12 to cancellation at z = 9, t = 1: hypothesis found it).
    per_element = np.where(z >= 0, (1 - t) * z + np.logaddexp(0.0, -z), -t * z + np.logaddexp(0.0, z))
    assert math.isfinite(value) and value >= 0.0
    assert abs(value - per_element.mean()) <= TOL * max(np.abs(per_element).mean(), 1e-300)
    sigmoid = 0.5 * (1 + np.tanh(z / 2))  # an independent formula for sigmoid
    assert np.isfinite(grad).all()
    assert np.abs(grad * z.size - (sigmoid - t)).max() <= 4 * np.finfo(np.float64).eps


@deterministic(100)
@given(
    magnitudes=hnp.arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(1, 4)), elements=st.floats(1.0, 700.0)),
    seed=st.integers(0, 2**32 - 1),
)
def test_binary_cross_entropy_keeps_precision_for_confident_correct_predictions(magnitudes, seed):
    """When every prediction is confidently right the loss is tiny (down to e^-700) but not 0:
    ``log(1 + e^-|z|)`` must keep full relative precision there, as torch's does."""
    rng = np.random.default_rng(seed)
    sign = rng.choice([-1.0, 1.0], size=magnitudes.shape)
    z, t = sign * magnitudes, (sign > 0).astype(np.float64)
    expected = np.mean(np.logaddexp(0.0, -magnitudes))
    assert abs(float(BinaryCrossEntropy().forward(z, t)) - expected) <= TOL * expected


# -- IDX files ----------------------------------------------------------------------------------
IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B,
             np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def idx_file_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding, written out independently of the reader: magic, big-endian dims, data."""
    header = struct.pack(">HBB", 0, IDX_CODES[array.dtype], array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


idx_arrays = st.sampled_from(sorted(IDX_CODES, key=str)).flatmap(
    lambda dtype: hnp.arrays(dtype, hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5))
)


def read_bytes_as_idx(data: bytes, gzipped: bool) -> np.ndarray:
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "a.idx.gz" if gzipped else "a.idx")
        with open(path, "wb") as file:
            file.write(data)
        return read_idx(path)


@deterministic(150)
@given(array=idx_arrays, gzipped=st.booleans())
def test_read_idx_round_trips_every_dtype_and_shape(array, gzipped):
    data = idx_file_bytes(array)
    got = read_bytes_as_idx(gzip.compress(data) if gzipped else data, gzipped)
    assert got.shape == array.shape
    assert got.dtype == array.dtype.newbyteorder("=")
    assert got.dtype.isnative and got.flags.writeable
    assert got.tobytes() == array.astype(got.dtype).tobytes()  # bit for bit, NaN payloads included


@deterministic(200)
@given(array=idx_arrays, gzipped=st.booleans(), data=st.data())
def test_any_truncated_idx_file_raises_dataset_file_error(array, gzipped, data):
    """Cut anywhere -- in the magic number, the dims, the payload, the gzip header, the deflate
    stream or the gzip trailer -- a file fails with DatasetFileError, never another exception."""
    content = idx_file_bytes(array)
    if gzipped:
        content = gzip.compress(content)
    cut = data.draw(st.integers(0, len(content) - 1), label="cut")
    with pytest.raises(DatasetFileError):
        read_bytes_as_idx(content[:cut], gzipped)


@deterministic(100)
@given(array=idx_arrays, gzipped=st.booleans(), extra=st.binary(min_size=1, max_size=20))
def test_bytes_after_the_payload_raise_dataset_file_error(array, gzipped, extra):
    content = idx_file_bytes(array) + extra
    with pytest.raises(DatasetFileError, match="after the payload"):
        read_bytes_as_idx(gzip.compress(content) if gzipped else content, gzipped)


@deterministic(200)
@given(array=idx_arrays, data=st.data())
def test_a_damaged_idx_header_is_reported_or_describes_the_bytes(array, data):
    """Any byte of the header replaced by any value: either a DatasetFileError, or (when the
    new header happens to fit the payload) an array that holds exactly the payload's bytes."""
    content = bytearray(idx_file_bytes(array))
    header_length = 4 + 4 * array.ndim
    position = data.draw(st.integers(0, header_length - 1), label="position")
    content[position] = data.draw(st.integers(0, 255).filter(lambda v: v != content[position]), label="value")
    try:
        got = read_bytes_as_idx(bytes(content), gzipped=False)
    except DatasetFileError:
        return
    # The array is what the (new) header says, read from the payload's bytes -- decoded here
    # from the raw bytes, not by the reader: type code, dims, then big-endian values.
    ndim = content[3]
    assert got.ndim == ndim
    assert got.shape == struct.unpack(f">{ndim}I", bytes(content[4 : 4 + 4 * ndim]))
    assert got.dtype.newbyteorder("=") == {code: dtype for dtype, code in IDX_CODES.items()}[content[2]].newbyteorder("=")
    assert got.astype(got.dtype.newbyteorder(">")).tobytes() == bytes(content[4 + 4 * ndim :])


# -- serialization ------------------------------------------------------------------------------
def linear_layers(draw, dtype) -> tuple[list, tuple[int, ...]]:
    """Linear layers of hypothesis-drawn widths 1-9 with activations between them."""
    from nn_from_scratch import nodes
    from nn_from_scratch.neurons import Linear

    widths = draw(st.lists(st.integers(1, 9), min_size=2, max_size=4), label="widths")
    layers = []
    for n_in, n_out in zip(widths, widths[1:]):
        activation = draw(st.sampled_from(["ReLU", "Tanh", "Sigmoid", "LeakyReLU"]), label="activation")
        layers += [Linear(n_in, n_out, dtype=dtype), getattr(nodes, activation)()]
    return layers[:-1], (widths[0],)


def conv_layers(draw, dtype) -> tuple[list, tuple[int, ...]]:
    """Convolution (any padding kind, "same" included) -> [batch norm] -> pooling -> Linear."""
    from nn_from_scratch.neurons import BatchNormalization, Linear
    from nn_from_scratch.nodes import ReLU, Vectorization

    c, h, w = draw(st.integers(1, 3)), draw(st.integers(5, 8)), draw(st.integers(5, 8))
    padding = draw(st.one_of(paddings(), st.integers(0, 2), st.sampled_from(["same", "valid"])), label="padding")
    conv = Convolution((c, h, w), (draw(st.integers(1, 3)), draw(st.integers(1, 3))), draw(st.integers(1, 4)),
                       padding=padding, stride=draw(st.integers(1, 2)), dilation=draw(st.integers(1, 2)),
                       use_bias=draw(st.booleans()), dtype=dtype)
    layers = [conv, ReLU()]
    if draw(st.booleans()):
        layers.append(BatchNormalization(dtype=dtype))
    pool = draw(st.sampled_from(["max", "average", "none"]))
    if pool != "none" and min(conv.output_shape[1:]) >= 2:
        layers.append(MaxPooling(2) if pool == "max" else
                      AveragePooling(2, padding=draw(st.sampled_from([0, 1, "same"])), count_include_pad=draw(st.booleans())))
    return layers + [Vectorization(), Linear(output_dim=draw(st.integers(1, 5)), dtype=dtype)], (c, h, w)


@deterministic(40)
@given(data=st.data(), kind=st.sampled_from([linear_layers, conv_layers]),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**31 - 1))
def test_saved_and_loaded_model_predicts_identically(data, kind, dtype, seed):
    """Save, load: same layers, same configs, same weights and buffers, bit-identical predictions.
    (A temporary directory, not pytest's tmp_path: a function-scoped fixture is not reset
    between hypothesis examples.)"""
    pytest.importorskip("safetensors")
    from nn_from_scratch import Sequential, load_model

    layers, input_shape = kind(data.draw, dtype)
    model = Sequential(layers, loss=SoftMaxLoss(), input_shape=input_shape, seed=seed)
    rng = np.random.default_rng(seed)
    for _, p in model.parameters():  # not the initializer's values: any weights must survive
        p[...] = rng.standard_normal(p.shape)
    for _, b in model.buffers():  # batch norm's running statistics (variances positive)
        b[...] = rng.uniform(0.5, 2.0, b.shape)
    x = rng.standard_normal((3,) + input_shape)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.safetensors")
        model.save(path)
        loaded = load_model(path)
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in model.layers]
    assert [layer.get_config() for layer in loaded.layers] == [layer.get_config() for layer in model.layers]
    for (name, a), (_, b) in zip([*loaded.parameters(), *loaded.buffers()], [*model.parameters(), *model.buffers()]):
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
