"""The hot array kernels, in one place, shared by every layer that needs them.

Convolution is lowered to a matrix multiply through *im2col*: every receptive field of the
input becomes one column of a matrix, so that the whole convolution is ``W_2d @ cols``.

Layout used throughout (``N`` batch, ``C`` channels, ``K = kh * kw`` kernel taps,
``P = OH * OW`` output pixels per image)::

    x     (N, C, H, W)
    cols  (C * kh * kw,  N * OH * OW)        # kernel taps x pixels
    W_2d  (O, C * kh * kw)
    y     (N, O, OH, OW)

Taps x pixels (rather than pixels x taps) is the layout BLAS likes here: the long axis
is the contiguous one, and the copy that builds ``cols`` moves whole output rows at a time.

Padding is given as four numbers ``(top, bottom, left, right)`` so that Keras-style
``"same"`` padding, which is asymmetric for even kernels or strides > 1, fits too.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

Padding4 = tuple[int, int, int, int]


class ConvGeometry(NamedTuple):
    """Everything about a 2-D convolution's shape that the kernels need."""

    kh: int
    kw: int
    stride: tuple[int, int]
    dilation: tuple[int, int]
    padding: Padding4  # (top, bottom, left, right)

    def output_hw(self, h: int, w: int) -> tuple[int, int]:
        pt, pb, pl, pr = self.padding
        sh, sw = self.stride
        dh, dw = self.dilation
        oh = (h + pt + pb - dh * (self.kh - 1) - 1) // sh + 1
        ow = (w + pl + pr - dw * (self.kw - 1) - 1) // sw + 1
        return oh, ow


def conv_output_size(size: int, kernel: int, pad_total: int, stride: int, dilation: int) -> int:
    """Output length of a 1-D convolution: ``floor((size + pad - d*(k-1) - 1) / s) + 1``."""
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """Keras/TensorFlow "same" padding: output length ``ceil(size / stride)``.

    The extra pixel of an odd total goes to the end (bottom/right), as TensorFlow does.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


def pad2d(x: np.ndarray, padding: Padding4) -> np.ndarray:
    """Zero-pad the last two axes of ``x`` by ``(top, bottom, left, right)``."""
    pt, pb, pl, pr = padding
    if not (pt or pb or pl or pr):
        return x
    n, c, h, w = x.shape
    out = np.zeros((n, c, h + pt + pb, w + pl + pr), dtype=x.dtype)
    out[:, :, pt : pt + h, pl : pl + w] = x
    return out


def window_view(
    xp: np.ndarray, kh: int, kw: int, oh: int, ow: int, stride: tuple[int, int], dilation: tuple[int, int]
) -> np.ndarray:
    """A read-only view of every receptive field of ``xp`` (N, C, Hp, Wp).

    Returns shape ``(C, kh, kw, N, OH, OW)``: element ``[c, p, q, n, i, j]`` is
    ``xp[n, c, i*sh + p*dh, j*sw + q*dw]``. No data is copied.
    """
    sn, sc, sh_, sw_ = xp.strides
    sh, sw = stride
    dh, dw = dilation
    n, c = xp.shape[:2]
    return as_strided(
        xp,
        shape=(c, kh, kw, n, oh, ow),
        strides=(sc, sh_ * dh, sw_ * dw, sn, sh_ * sh, sw_ * sw),
        writeable=False,
    )


def im2col(x: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """Receptive fields of ``x`` (N, C, H, W) as columns: ``(C*kh*kw, N*OH*OW)``."""
    n, c, h, w = x.shape
    oh, ow = geom.output_hw(h, w)
    view = window_view(pad2d(x, geom.padding), geom.kh, geom.kw, oh, ow, geom.stride, geom.dilation)
    return view.reshape(c * geom.kh * geom.kw, n * oh * ow)  # the one copy: gathers the windows


def col2im(cols: np.ndarray, x_shape: tuple[int, int, int, int], geom: ConvGeometry) -> np.ndarray:
    """Adjoint of :func:`im2col`: scatter-add columns back onto an image of ``x_shape``.

    Overlapping receptive fields add up. The loop runs over the ``kh * kw`` kernel taps only;
    each iteration is one strided add over the whole batch and all channels.
    """
    n, c, h, w = x_shape
    pt, pb, pl, pr = geom.padding
    oh, ow = geom.output_hw(h, w)
    sh, sw = geom.stride
    dh, dw = geom.dilation
    xp = np.zeros((n, c, h + pt + pb, w + pl + pr), dtype=cols.dtype)
    taps = cols.reshape(c, geom.kh, geom.kw, n, oh, ow)
    for p in range(geom.kh):
        for q in range(geom.kw):
            rows = slice(p * dh, p * dh + sh * (oh - 1) + 1, sh)
            columns = slice(q * dw, q * dw + sw * (ow - 1) + 1, sw)
            xp[:, :, rows, columns] += taps[:, p, q].transpose(1, 0, 2, 3)
    return xp[:, :, pt : pt + h, pl : pl + w]


def conv2d_forward(
    x: np.ndarray, W: np.ndarray, b: np.ndarray | None, geom: ConvGeometry
) -> tuple[np.ndarray, np.ndarray]:
    """Cross-correlation ``y[n,o] = sum_c W[o,c] * x[n,c] + b[o]``.

    Returns ``(y, cols)``; ``cols`` is kept by the caller for the backward pass.
    """
    n = x.shape[0]
    o = W.shape[0]
    oh, ow = geom.output_hw(*x.shape[2:])
    cols = im2col(x, geom)
    y = W.reshape(o, -1) @ cols  # (O, N*OH*OW)
    if b is not None:
        y += b[:, None]
    return y.reshape(o, n, oh, ow).transpose(1, 0, 2, 3), cols


def conv2d_backward(
    dy: np.ndarray,
    cols: np.ndarray,
    x_shape: tuple[int, int, int, int],
    W: np.ndarray,
    geom: ConvGeometry,
    need_dx: bool = True,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Gradients of :func:`conv2d_forward` given ``dL/dy``: returns ``(dx, dW, db)``.

    ``dW = dy_2d @ cols.T``, ``db = sum(dy)`` and ``dx = col2im(W_2d.T @ dy_2d)``.
    """
    o = W.shape[0]
    dy_2d = dy.transpose(1, 0, 2, 3).reshape(o, -1)  # (O, N*OH*OW)
    dW = (dy_2d @ cols.T).reshape(W.shape)
    db = dy_2d.sum(axis=1)
    dx = col2im(W.reshape(o, -1).T @ dy_2d, x_shape, geom) if need_dx else None
    return dx, dW, db


def pool_windows(x: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """Pooling windows of ``x`` (N, C, H, W) as a view ``(N, C, OH, OW, kh, kw)``.

    ``x`` must already be padded (with ``-inf`` for max pooling, zeros for average), so
    ``geom.padding`` is not applied again here.
    """
    n, c, h, w = x.shape
    oh, ow = geom._replace(padding=(0, 0, 0, 0)).output_hw(h, w)
    sn, sc, sh_, sw_ = x.strides
    sh, sw = geom.stride
    dh, dw = geom.dilation
    return as_strided(
        x,
        shape=(n, c, oh, ow, geom.kh, geom.kw),
        strides=(sn, sc, sh_ * sh, sw_ * sw, sh_ * dh, sw_ * dw),
        writeable=False,
    )


# -- pooling --------------------------------------------------------------------------------
# The pooling kernels loop over the kh * kw window taps only; each iteration is one strided
# operation over the whole batch and all channels. Tap ``t`` is window element ``(t // kw, t % kw)``.


def pad2d_constant(x: np.ndarray, padding: Padding4, value: float) -> np.ndarray:
    """Pad the last two axes of ``x`` by ``(top, bottom, left, right)`` with ``value`` (e.g. ``-inf``)."""
    pt, pb, pl, pr = padding
    if not (pt or pb or pl or pr):
        return x
    n, c, h, w = x.shape
    out = np.full((n, c, h + pt + pb, w + pl + pr), value, dtype=x.dtype)
    out[:, :, pt : pt + h, pl : pl + w] = x
    return out


def _tap_slices(p: int, q: int, oh: int, ow: int, geom: ConvGeometry) -> tuple[slice, slice]:
    """Where tap ``(p, q)`` of every window lies in the padded input: ``(rows, columns)``."""
    sh, sw = geom.stride
    dh, dw = geom.dilation
    return slice(p * dh, p * dh + sh * (oh - 1) + 1, sh), slice(q * dw, q * dw + sw * (ow - 1) + 1, sw)


def max_pool2d_forward(x: np.ndarray, geom: ConvGeometry) -> tuple[np.ndarray, np.ndarray]:
    """``y[n, c, i, j] = max`` of the window at ``(i, j)``, the input padded with ``-inf``.

    Returns ``(y, argmax)``; ``argmax`` (N, C, OH, OW) holds the tap index of the maximum.
    Ties go to the *first* maximal tap in row-major window order, as in PyTorch's CPU
    ``max_pool2d``. A NaN in a window makes its output NaN (as in torch); its ``argmax`` then
    points at the largest non-NaN element before it.
    """
    xp = pad2d_constant(x, geom.padding, -np.inf)
    windows = pool_windows(xp, geom)
    y = windows[..., 0, 0].copy()
    taps = geom.kh * geom.kw
    argmax = np.zeros(y.shape, dtype=np.uint8 if taps <= 256 else np.int32)
    better = np.empty(y.shape, dtype=bool)
    for t in range(1, taps):
        tap = windows[..., t // geom.kw, t % geom.kw]
        np.greater(tap, y, out=better)
        np.maximum(y, tap, out=y)
        # argmax = where(better, t, argmax), as bit operations: a masked copy is ~10x slower.
        all_ones = -better.astype(argmax.dtype)
        argmax ^= (argmax ^ argmax.dtype.type(t)) & all_ones
    return y, argmax


def max_pool2d_backward(
    dy: np.ndarray, argmax: np.ndarray, x_shape: tuple[int, int, int, int], geom: ConvGeometry
) -> np.ndarray:
    """Adjoint of :func:`max_pool2d_forward`: each ``dy`` goes to its window's maximum; overlaps add up."""
    n, c, h, w = x_shape
    pt, pb, pl, pr = geom.padding
    oh, ow = dy.shape[2:]
    dxp = np.zeros((n, c, h + pt + pb, w + pl + pr), dtype=dy.dtype)
    overlapping = geom.stride[0] < geom.kh or geom.stride[1] < geom.kw
    # dy * [argmax == t] is ~10x faster than np.where, but inf * 0 would be NaN: only when finite.
    finite = bool(np.isfinite(dy).all())
    share = np.empty_like(dy)
    for t in range(geom.kh * geom.kw):
        rows, columns = _tap_slices(t // geom.kw, t % geom.kw, oh, ow, geom)
        if finite:
            np.multiply(dy, argmax == t, out=share)
        else:
            share = np.where(argmax == t, dy, dy.dtype.type(0))
        if overlapping:
            dxp[:, :, rows, columns] += share
        else:  # each input pixel is in one window at most
            dxp[:, :, rows, columns] = share
    return dxp[:, :, pt : pt + h, pl : pl + w]


def avg_pool2d_divisor(h: int, w: int, geom: ConvGeometry, count_include_pad: bool, dtype: np.dtype) -> np.ndarray:
    """Number of elements each window's sum is divided by, shape ``(OH, OW)`` (broadcasts over N, C).

    ``count_include_pad=True``: always ``kh * kw`` (torch's default). ``False``: only the
    elements of the window that lie inside the unpadded input (Keras' ``"same"`` pooling).
    """
    oh, ow = geom.output_hw(h, w)
    if count_include_pad:
        return np.full((oh, ow), geom.kh * geom.kw, dtype=dtype)
    return _window_sums(pad2d(np.ones((1, 1, h, w), dtype=dtype), geom.padding), geom)[0, 0]


def _window_sums(xp: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    windows = pool_windows(xp, geom)
    total = windows[..., 0, 0].copy()
    for t in range(1, geom.kh * geom.kw):
        total += windows[..., t // geom.kw, t % geom.kw]
    return total


def avg_pool2d_forward(x: np.ndarray, geom: ConvGeometry, divisor: np.ndarray) -> np.ndarray:
    """``y[n, c, i, j] = (sum of the zero-padded window at (i, j)) / divisor[i, j]``."""
    y = _window_sums(pad2d(x, geom.padding), geom)
    y /= divisor
    return y


def avg_pool2d_backward(
    dy: np.ndarray, x_shape: tuple[int, int, int, int], geom: ConvGeometry, divisor: np.ndarray
) -> np.ndarray:
    """Adjoint of :func:`avg_pool2d_forward`: every window element gets ``dy / divisor``; overlaps add up."""
    n, c, h, w = x_shape
    pt, pb, pl, pr = geom.padding
    oh, ow = dy.shape[2:]
    share = dy / divisor
    dxp = np.zeros((n, c, h + pt + pb, w + pl + pr), dtype=share.dtype)
    overlapping = geom.stride[0] < geom.kh or geom.stride[1] < geom.kw
    for t in range(geom.kh * geom.kw):
        rows, columns = _tap_slices(t // geom.kw, t % geom.kw, oh, ow, geom)
        if overlapping:
            dxp[:, :, rows, columns] += share
        else:  # each input pixel is in one window at most
            dxp[:, :, rows, columns] = share
    return dxp[:, :, pt : pt + h, pl : pl + w]
