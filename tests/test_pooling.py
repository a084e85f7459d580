"""Pooling specifics the layer table does not reach: ties, -inf padding, NaN, "same" padding,
non-contiguous inputs, configs and error messages. (Gradients and the torch comparison on
random geometries come from ``layer_cases.py``.)"""

from __future__ import annotations

import numpy as np
import pytest

from nn_from_scratch.nodes import AveragePooling, GlobalAveragePooling, MaxPooling

try:
    import torch
except ImportError:  # only the tests marked needs_torch use it; the others run without
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="needs torch (the reference implementation)")
F = torch.nn.functional if torch is not None else None


@needs_torch
@pytest.mark.parametrize("pool, stride, padding", [(2, None, 0), (3, 1, 1), ((2, 3), (1, 2), (1, 1)), (3, 2, 0)])
def test_max_pooling_ties_go_to_the_first_element_as_in_torch(pool, stride, padding) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, size=(3, 2, 7, 8)).astype(np.float64)  # many ties
    layer = MaxPooling(pool, stride, padding)
    y = layer.forward(x)
    dy = rng.normal(size=y.shape)
    dx = layer.backward(dy)
    x_t = torch.tensor(x, requires_grad=True)
    y_t = F.max_pool2d(x_t, layer.pool_size, layer.stride, padding=layer.geometry.padding[::2])
    y_t.backward(torch.tensor(dy))
    np.testing.assert_array_equal(y, y_t.detach().numpy())
    np.testing.assert_allclose(dx, x_t.grad.numpy(), rtol=1e-12, atol=0)
    # Each window's whole gradient lands on one element.
    assert np.count_nonzero(dx) <= y.size


def test_max_pooling_tie_breaking_is_row_major_first() -> None:
    x = np.array([[[[1.0, 5.0], [5.0, 5.0]]]])
    layer = MaxPooling(2)
    assert layer.forward(x)[0, 0, 0, 0] == 5.0
    np.testing.assert_array_equal(layer.backward(np.ones((1, 1, 1, 1)))[0, 0], [[0.0, 1.0], [0.0, 0.0]])


@needs_torch
def test_max_pooling_pads_with_minus_infinity() -> None:
    x = -np.random.default_rng(1).uniform(1, 2, size=(2, 3, 5, 5))  # all negative: a zero pad would win
    layer = MaxPooling(3, 2, padding=1)
    y = layer.forward(x)
    assert np.all(y < 0)
    np.testing.assert_array_equal(y, F.max_pool2d(torch.tensor(x), 3, 2, padding=1).numpy())


def test_max_pooling_propagates_nan() -> None:
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    x[0, 0, 1, 2] = np.nan
    y = MaxPooling(2).forward(x)
    assert np.isnan(y[0, 0, 0, 1])
    assert np.isfinite(y).sum() == 3


def naive_pool(x, pool, stride, pads, kind, count_include_pad=True):
    """Pooling by explicit loops over a hand-padded input (the reference; no library code)."""
    (kh, kw), (sh, sw), (top, bottom, left, right) = pool, stride, pads
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=fill)
    inside = np.pad(np.ones(x.shape[2:]), ((top, bottom), (left, right)))
    oh, ow = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    y = np.empty(x.shape[:2] + (oh, ow))
    for i in range(oh):
        for j in range(ow):
            window = xp[:, :, i * sh : i * sh + kh, j * sw : j * sw + kw]
            if kind == "max":
                y[:, :, i, j] = window.max(axis=(2, 3))
            else:
                count = kh * kw if count_include_pad else inside[i * sh : i * sh + kh, j * sw : j * sw + kw].sum()
                y[:, :, i, j] = window.sum(axis=(2, 3)) / count
    return y


def test_same_padding_gives_ceil_of_size_over_stride_with_the_odd_pixel_at_the_end() -> None:
    """Known pads, worked out by hand with TensorFlow's rule (output ceil(size / stride), total
    padding (out - 1) * stride + pool - size, the odd pixel at the bottom/right):
    H 7, pool 3, stride 2 -> out 4, total 2 -> (1, 1);  W 10, pool 3, stride 2 -> out 5, total 1 -> (0, 1);
    H 7, pool 2, stride 3 -> out 3, total 1 -> (0, 1);  W 10, pool 2, stride 3 -> out 4, total 1 -> (0, 1)."""
    x = np.random.default_rng(2).normal(size=(2, 3, 7, 10))
    y = MaxPooling(3, 2, "same").forward(x)
    assert y.shape == (2, 3, 4, 5)
    np.testing.assert_array_equal(y, naive_pool(x, (3, 3), (2, 2), (1, 1, 0, 1), "max"))
    for include in (True, False):
        y = AveragePooling(2, 3, "same", count_include_pad=include).forward(x)
        assert y.shape == (2, 3, 3, 4)
        np.testing.assert_allclose(y, naive_pool(x, (2, 2), (3, 3), (0, 1, 0, 1), "avg", include), rtol=1e-13, atol=1e-15)


def test_average_pooling_count_include_pad_false_averages_only_real_elements() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 2, 5, 5))
    layer = AveragePooling(3, 2, "same", count_include_pad=False)
    y = layer.forward(x)
    top, bottom, left, right = layer.geometry.padding
    for i in range(y.shape[2]):
        for j in range(y.shape[3]):
            rows = slice(max(i * 2 - top, 0), min(i * 2 - top + 3, 5))
            cols = slice(max(j * 2 - left, 0), min(j * 2 - left + 3, 5))
            np.testing.assert_allclose(y[:, :, i, j], x[:, :, rows, cols].mean(axis=(2, 3)), rtol=1e-13)


@needs_torch
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_average_pooling_matches_torch_with_symmetric_padding(count_include_pad) -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 4, 9, 8))
    layer = AveragePooling(3, 2, padding=1, count_include_pad=count_include_pad)
    y = layer.forward(x)
    dy = rng.normal(size=y.shape)
    x_t = torch.tensor(x, requires_grad=True)
    y_t = F.avg_pool2d(x_t, 3, 2, padding=1, count_include_pad=count_include_pad)
    y_t.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, y_t.detach().numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(layer.backward(dy), x_t.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("make", [lambda: MaxPooling(2), lambda: AveragePooling(3, 1, 1), lambda: GlobalAveragePooling()])
def test_non_contiguous_input_gives_the_same_result(make) -> None:
    rng = np.random.default_rng(5)
    base = rng.normal(size=(4, 6, 3, 6)).astype(np.float32)  # (C, H, N, W), as the fast convolution returns
    view = base.transpose(2, 0, 1, 3)
    a, b = make(), make()
    ya, yb = a.forward(view), b.forward(np.ascontiguousarray(view))
    # Equal up to float32 rounding: a mean may sum in a different order on another layout.
    np.testing.assert_allclose(ya, yb, rtol=1e-6, atol=1e-7)
    dy = rng.normal(size=ya.shape).astype(np.float32)
    np.testing.assert_allclose(a.backward(dy), b.backward(dy), rtol=1e-6, atol=1e-7)


def test_dtype_is_kept() -> None:
    x = np.random.default_rng(6).normal(size=(2, 3, 4, 4)).astype(np.float32)
    for layer in (MaxPooling(2), AveragePooling(2), GlobalAveragePooling()):
        y = layer.forward(x)
        assert y.dtype == np.float32
        assert layer.backward(np.ones_like(y)).dtype == np.float32


def test_global_average_pooling_shapes() -> None:
    x = np.random.default_rng(7).normal(size=(3, 5, 4, 2))
    layer = GlobalAveragePooling()
    y = layer.forward(x)
    assert y.shape == (3, 5)
    np.testing.assert_allclose(y, x.mean(axis=(2, 3)), rtol=1e-14)
    np.testing.assert_allclose(layer.backward(np.ones((3, 5))), np.full(x.shape, 1 / 8))


def test_configs_rebuild_the_layers() -> None:
    for layer in (MaxPooling(3, 2, "same"), AveragePooling((2, 3), 1, (1, 0), count_include_pad=False), GlobalAveragePooling()):
        config = layer.get_config()
        assert type(layer)(**config).get_config() == config
    assert MaxPooling(2).stride == (2, 2)  # stride defaults to the pool size


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"MaxPooling: expected input of shape \(batch, channels, height, width\), got \(batch, 4, 4\)"):
        MaxPooling(2).forward(np.ones((2, 4, 4)))
    with pytest.raises(ValueError, match="at most half the pool size"):
        MaxPooling(2, padding=2)
    with pytest.raises(ValueError, match=r"smaller than the pool"):
        AveragePooling(5).forward(np.ones((1, 1, 3, 3)))
    with pytest.raises(ValueError, match="pool_size"):
        MaxPooling(0)
    layer = MaxPooling(2)
    layer.forward(np.ones((2, 1, 4, 4)))
    with pytest.raises(ValueError, match=r"MaxPooling: expected dL_dy of shape \(2, 1, 2, 2\), got \(2, 1, 3, 3\)"):
        layer.backward(np.ones((2, 1, 3, 3)))
    with pytest.raises(ValueError, match=r"expected input of shape \(batch, 1, 4, 4\)"):
        layer.forward(np.ones((2, 1, 5, 5)))
    with pytest.raises(ValueError, match="GlobalAveragePooling"):
        GlobalAveragePooling().forward(np.ones((2, 3)))


# -- the fast average-pooling kernels against their references, in any memory layout ---------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from nn_from_scratch import kernels  # noqa: E402


def batch_innermost(x: np.ndarray) -> np.ndarray:
    """The same values as an (N, C, H, W) view of a (C, H, W, N) buffer (a fast convolution's output)."""
    return np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


LAYOUTS = {
    "nchw": lambda x: np.ascontiguousarray(x),
    "batch_innermost": batch_innermost,
    "strided": lambda x: np.pad(x, ((0, 0), (0, 1), (0, 0), (2, 0)))[:, :-1, :, 2:],  # a non-contiguous slice
}


@given(
    n=st.integers(1, 4), c=st.integers(1, 4), h=st.integers(1, 11), w=st.integers(1, 11),
    kh=st.integers(1, 4), kw=st.integers(1, 4), sh=st.integers(1, 4), sw=st.integers(1, 4),
    dh=st.integers(1, 2), dw=st.integers(1, 2), pads=st.tuples(*[st.integers(0, 2)] * 4),
    count_include_pad=st.booleans(), layout=st.sampled_from(sorted(LAYOUTS)), seed=st.integers(0, 2**16),
)
@settings(max_examples=300, deadline=None)
def test_fast_average_pooling_matches_reference(n, c, h, w, kh, kw, sh, sw, dh, dw, pads, count_include_pad, layout, seed):
    """float64, 1e-12: forward and backward, any stride, dilation, padding (at most half the window,
    as torch requires), count_include_pad and memory layout; results keep the input's layout."""
    pads = (min(pads[0], kh // 2), min(pads[1], kh // 2), min(pads[2], kw // 2), min(pads[3], kw // 2))
    geom = kernels.ConvGeometry(kh, kw, (sh, sw), (dh, dw), pads)
    oh, ow = geom.output_hw(h, w)
    if oh < 1 or ow < 1 or not kernels.avg_pool2d_divisor(h, w, geom, False, np.float64).all():
        return  # no output, or a window (dilated) that lies in the padding only: torch has neither
    rng = np.random.default_rng(seed)
    x = LAYOUTS[layout](rng.standard_normal((n, c, h, w)))
    divisor = kernels.avg_pool2d_divisor(h, w, geom, count_include_pad, np.float64)
    y = kernels.avg_pool2d_forward(x, geom, divisor)
    y_ref = kernels.avg_pool2d_forward_reference(np.ascontiguousarray(x), geom, divisor)
    assert rel_err(y, y_ref) <= 1e-12
    dy = LAYOUTS[layout](rng.standard_normal(y.shape))
    dx = kernels.avg_pool2d_backward(dy, x.shape, geom, divisor, kernels.memory_order(x))
    dx_ref = kernels.avg_pool2d_backward_reference(np.ascontiguousarray(dy), x.shape, geom, divisor)
    assert rel_err(dx, dx_ref) <= 1e-12
    if layout != "strided":  # the result is laid out as the input, e.g. batch innermost
        assert kernels.memory_order(y) == kernels.memory_order(x) or 1 in y.shape
        assert kernels.memory_order(dx) == kernels.memory_order(x) or 1 in dx.shape
        order = kernels.memory_order(x)
        assert y.transpose(order).flags.c_contiguous and dx.transpose(order).flags.c_contiguous


def test_average_pooling_keeps_a_batch_innermost_layout_in_both_passes():
    """The layer's output and dL/dx are batch-innermost for batch-innermost input (no C-order copy,
    no NCHW gradient), with the values of the C-order input, whatever layout dL/dy comes in."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 4, 8, 10))
    layer = AveragePooling(2)
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    layer = AveragePooling(2)
    y2 = layer.forward(batch_innermost(x))
    assert y2.transpose(1, 2, 3, 0).flags.c_contiguous
    np.testing.assert_array_equal(y2, y)
    for dy_layout in (dy, batch_innermost(dy)):
        dx2 = layer.backward(dy_layout)
        assert dx2.transpose(1, 2, 3, 0).flags.c_contiguous
        np.testing.assert_array_equal(dx2, dx)


@needs_torch
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-6)])
@pytest.mark.parametrize("pool, stride, padding, count_include_pad", [
    (2, None, 0, True), (3, 2, 1, True), (3, 2, 1, False), ((3, 2), (1, 2), (1, 0), False), (3, 1, 1, True)])
def test_average_pooling_on_batch_innermost_input_matches_torch(dtype, tol, pool, stride, padding, count_include_pad):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((5, 3, 9, 8)).astype(dtype)
    layer = AveragePooling(pool, stride, padding, count_include_pad=count_include_pad)
    y = layer.forward(batch_innermost(x))
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = layer.backward(batch_innermost(dy))
    x_t = torch.tensor(x, requires_grad=True)
    y_t = F.avg_pool2d(x_t, layer.pool_size, layer.stride, padding=layer.geometry.padding[::2],
                       count_include_pad=count_include_pad)
    y_t.backward(torch.tensor(dy))
    assert y.dtype == dx.dtype == dtype
    assert rel_err(y, y_t.detach().numpy()) <= tol
    assert rel_err(dx, x_t.grad.numpy()) <= tol


# -- max pooling's index cache: one byte per output while the window has at most 256 taps -------
@needs_torch
@pytest.mark.parametrize("pool, index_dtype", [(16, np.uint8), (17, np.int32)])
def test_max_pooling_index_cache_is_one_byte_up_to_256_taps(pool, index_dtype):
    """The argmax cache holds uint8 tap indices (8x less than torch's int64 indices) up to 16x16 = 256
    taps, int32 beyond; the gradient lands on the last tap (index 255, 288) as in torch."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, pool, pool))
    x[:, :, -1, -1] = 10.0  # the window's last tap is the maximum
    layer = MaxPooling(pool)
    y = layer.forward(batch_innermost(x))
    assert layer._argmax.dtype == index_dtype and layer._argmax.shape == y.shape
    np.testing.assert_array_equal(layer._argmax, pool * pool - 1)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    x_t = torch.tensor(x, requires_grad=True)
    F.max_pool2d(x_t, pool).backward(torch.tensor(dy))
    np.testing.assert_array_equal(dx, x_t.grad.numpy())


@needs_torch
@given(
    n=st.integers(1, 3), c=st.integers(1, 3), h=st.integers(1, 10), w=st.integers(1, 10),
    kh=st.integers(1, 4), kw=st.integers(1, 4), sh=st.integers(1, 4), sw=st.integers(1, 4),
    dh=st.integers(1, 2), dw=st.integers(1, 2), ph=st.integers(0, 2), pw=st.integers(0, 2),
    layout=st.sampled_from(sorted(LAYOUTS)), seed=st.integers(0, 2**16),
)
@settings(max_examples=150, deadline=None)
def test_max_pooling_kernels_match_torch_in_any_layout(n, c, h, w, kh, kw, sh, sw, dh, dw, ph, pw, layout, seed):
    """float64: max_pool2d forward and backward (any stride, dilation, padding up to half the window;
    overlapping windows add up) against torch, the input in any memory layout; dx keeps x's layout."""
    ph, pw = min(ph, kh // 2), min(pw, kw // 2)
    geom = kernels.ConvGeometry(kh, kw, (sh, sw), (dh, dw), (ph, ph, pw, pw))
    oh, ow = geom.output_hw(h, w)
    if oh < 1 or ow < 1 or not kernels.avg_pool2d_divisor(h, w, geom, False, np.float64).all():
        return  # no output, or a dilated window in the padding only (torch aborts on it)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    y, argmax = kernels.max_pool2d_forward(LAYOUTS[layout](x), geom)
    dy = rng.standard_normal(y.shape)
    dx = kernels.max_pool2d_backward(LAYOUTS[layout](dy), argmax, x.shape, geom)
    x_t = torch.tensor(x, requires_grad=True)
    y_t = F.max_pool2d(x_t, (kh, kw), (sh, sw), (ph, pw), (dh, dw))
    y_t.backward(torch.tensor(dy))
    np.testing.assert_array_equal(y, y_t.detach().numpy())
    np.testing.assert_allclose(dx, x_t.grad.numpy(), rtol=1e-12, atol=0)
    if layout == "batch_innermost" and min(y.shape) > 1:  # (a size-1 axis makes the order ambiguous)
        assert dx.transpose(1, 2, 3, 0).flags.c_contiguous


def test_max_pooling_inference_pass_computes_no_argmax_and_the_same_maxima():
    """keep_cache False (a model's inference pass): no index cache, the same y (NaN and -inf padding too)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 2, 9, 8))
    x[0, 0, 2, 3] = np.nan
    x[1, 1] = -np.inf
    for geom in (kernels.ConvGeometry(2, 2, (2, 2), (1, 1), (0, 0, 0, 0)), kernels.ConvGeometry(3, 3, (2, 1), (1, 1), (1, 1, 1, 1))):
        for layout in LAYOUTS.values():
            y, argmax = kernels.max_pool2d_forward(layout(x), geom)
            y_fast, none = kernels.max_pool2d_forward(layout(x), geom, need_argmax=False)
            assert none is None and argmax is not None
            np.testing.assert_array_equal(y_fast, y)
    layer = MaxPooling(2)
    layer.keep_cache = False
    layer.forward(x)
    assert layer._argmax is None
    with pytest.raises(RuntimeError, match="forward in training mode"):
        layer.backward(np.ones((3, 2, 4, 4)))


TILING_LAYOUTS = {**LAYOUTS, "nhwc": lambda x: np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)}


@needs_torch
@given(
    n=st.integers(1, 3), c=st.integers(1, 3), h=st.integers(1, 11), w=st.integers(1, 11),
    kh=st.integers(1, 4), kw=st.integers(1, 4), layout=st.sampled_from(sorted(TILING_LAYOUTS)),
    dy_layout=st.sampled_from(sorted(TILING_LAYOUTS)), special=st.sampled_from(["none", "inf", "nan"]),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=150, deadline=None)
def test_max_pooling_backward_of_tiling_windows_matches_torch(n, c, h, w, kh, kw, layout, dy_layout, special, seed):
    """Windows that tile the input (stride = window: the default) take a one-pass backward; float64,
    exactly torch's gradient: ties (integer inputs, as after ReLU) to the first element, the
    rows and columns floor mode leaves out get none, inf/NaN in dy land only on the maxima."""
    geom = kernels.ConvGeometry(kh, kw, (kh, kw), (1, 1), (0, 0, 0, 0))
    oh, ow = geom.output_hw(h, w)
    if oh < 1 or ow < 1:
        return
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, size=(n, c, h, w)).astype(np.float64)
    y, argmax = kernels.max_pool2d_forward(TILING_LAYOUTS[layout](x), geom)
    dy = rng.standard_normal(y.shape)
    if special != "none":
        dy[tuple(rng.integers(0, s) for s in dy.shape)] = np.inf if special == "inf" else np.nan
    dx = kernels.max_pool2d_backward(TILING_LAYOUTS[dy_layout](dy), argmax, x.shape, geom)
    x_t = torch.tensor(x, requires_grad=True)
    F.max_pool2d(x_t, (kh, kw)).backward(torch.tensor(dy))
    np.testing.assert_array_equal(dx, x_t.grad.numpy())
    assert kernels.pooling.memory_order(dx) == kernels.pooling.memory_order(argmax) or min(dx.shape) == 1


@given(
    n=st.integers(1, 3), c=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9),
    kh=st.integers(1, 3), kw=st.integers(1, 3), layout=st.sampled_from(sorted(TILING_LAYOUTS)), seed=st.integers(0, 2**16),
)
@settings(max_examples=100, deadline=None)
def test_tiled_max_pooling_backward_equals_the_per_tap_kernel(n, c, h, w, kh, kw, layout, seed):
    """The one-pass kernel against its reference, the per-tap kernel every geometry can take (float32)."""
    geom = kernels.ConvGeometry(kh, kw, (kh, kw), (1, 1), (0, 0, 0, 0))
    oh, ow = geom.output_hw(h, w)
    if oh < 1 or ow < 1:
        return
    rng = np.random.default_rng(seed)
    x = TILING_LAYOUTS[layout](rng.standard_normal((n, c, h, w)).astype(np.float32))
    y, argmax = kernels.max_pool2d_forward(x, geom)
    dy = TILING_LAYOUTS[layout](rng.standard_normal(y.shape).astype(np.float32))
    fast = kernels.max_pool2d_backward(dy, argmax, x.shape, geom)
    reference = kernels.pooling.max_pool2d_backward_by_taps(dy, argmax, x.shape, geom)
    assert fast.dtype == reference.dtype == np.float32
    np.testing.assert_array_equal(fast, reference)


@needs_torch
@given(
    n=st.integers(1, 3), c=st.integers(1, 3), h=st.integers(2, 9), w=st.integers(2, 9),
    sh=st.integers(1, 3), sw=st.integers(1, 3), dh=st.integers(1, 2), dw=st.integers(1, 2),
    ph=st.integers(0, 1), pw=st.integers(0, 1), layout=st.sampled_from(sorted(TILING_LAYOUTS)),
    special=st.sampled_from(["none", "nan", "-inf", "all -inf"]), seed=st.integers(0, 2**16),
)
@settings(max_examples=150, deadline=None)
def test_2x2_max_pooling_tournament_matches_torch(n, c, h, w, sh, sw, dh, dw, ph, pw, layout, special, seed):
    """2x2 windows (any stride, dilation, padding) take the pairwise tournament; float64 against
    torch: y, and the gradient (where argmax sends dy) with ties from integer inputs, NaN, -inf,
    and windows all -inf next to -inf padding."""
    geom = kernels.ConvGeometry(2, 2, (sh, sw), (dh, dw), (ph, ph, pw, pw))
    oh, ow = geom.output_hw(h, w)
    if oh < 1 or ow < 1 or not kernels.avg_pool2d_divisor(h, w, geom, False, np.float64).all():
        return
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, size=(n, c, h, w)).astype(np.float64)
    if special == "nan":
        x[rng.random(x.shape) < 0.1] = np.nan
    elif special == "-inf":
        x[rng.random(x.shape) < 0.3] = -np.inf
    elif special == "all -inf":
        x[:] = -np.inf
    y, argmax = kernels.max_pool2d_forward(TILING_LAYOUTS[layout](x), geom)
    dy = rng.standard_normal(y.shape)
    dx = kernels.max_pool2d_backward(dy, argmax, x.shape, geom)
    x_t = torch.tensor(x, requires_grad=True)
    y_t = F.max_pool2d(x_t, 2, (sh, sw), (ph, pw), (dh, dw))
    y_t.backward(torch.tensor(dy))
    np.testing.assert_array_equal(y, y_t.detach().numpy())
    np.testing.assert_allclose(dx, x_t.grad.numpy(), rtol=1e-12, atol=0)  # overlaps add in another order


@given(
    shape=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 6), st.integers(1, 6)),
    values=st.sampled_from(["ties", "normal", "-inf"]), seed=st.integers(0, 2**16),
)
@settings(max_examples=100, deadline=None)
def test_2x2_tournament_equals_the_per_tap_running_maximum(shape, values, seed):
    """The tournament against its reference on the same (N, C, OH, OW, 2, 2) windows (no NaN:
    the caller fixes NaN windows up for both): the same maxima and first maximal taps, in the
    same memory layout."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, size=shape + (2, 2)).astype(np.float32) if values == "ties" else \
        rng.standard_normal(shape + (2, 2)).astype(np.float32)
    if values == "-inf":
        x[rng.random(x.shape) < 0.5] = -np.inf
    windows = np.ascontiguousarray(x.transpose(1, 2, 3, 4, 5, 0)).transpose(5, 0, 1, 2, 3, 4)  # batch innermost
    y_ref = windows[..., 0, 0].copy(order="K")
    argmax_ref = kernels.pooling.max_and_argmax_by_taps(windows, y_ref)
    y, argmax = kernels.pooling.max_and_argmax_2x2(windows)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(argmax, argmax_ref)
    def layout(a):  # strides of the axes that have more than one element
        return [st_ for st_, size in zip(a.strides, a.shape) if size > 1]

    assert layout(y) == layout(y_ref) and argmax.dtype == argmax_ref.dtype == np.uint8
