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
