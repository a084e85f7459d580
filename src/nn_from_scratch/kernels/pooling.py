"""Max and average pooling kernels (any stride, padding and dilation), forward and backward.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .geometry import ConvGeometry, _tap_slices, empty_in_order, memory_order, pad2d, zeros_in_layout_of


# -- pooling --------------------------------------------------------------------------------
# The pooling kernels loop over the kh * kw window taps only; each iteration is one strided
# operation over the whole batch and all channels. Tap ``t`` is window element ``(t // kw, t % kw)``.


def pool_windows(x: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """Pooling windows of ``x`` (N, C, H, W) as a view ``(N, C, OH, OW, kh, kw)``.

    ``x`` must already be padded (with ``-inf`` for max pooling, zeros for average), so
    ``geom.padding`` is not applied again here.

    Args:
        x: the already padded input, (N, C, H, W).
        geom: the pooling's :class:`ConvGeometry`.

    Example:
        >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
        >>> g = ConvGeometry(kh=2, kw=2, stride=(2, 2), dilation=(1, 1), padding=(0, 0, 0, 0))
        >>> w = pool_windows(x, g)
        >>> w.shape
        (1, 1, 2, 2, 2, 2)
        >>> w[0, 0, 1, 0]
        array([[ 8.,  9.],
               [12., 13.]])
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




def max_pool2d_forward(x: np.ndarray, geom: ConvGeometry, need_argmax: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """``y[n, c, i, j] = max`` of the window at ``(i, j)``, the input padded with ``-inf``.

    Returns ``(y, argmax)``; ``argmax`` (N, C, OH, OW) holds the tap index of the maximum
    (``uint8`` up to 256 taps: one byte per output, where torch keeps an int64 index), or is
    ``None`` with ``need_argmax=False`` (an inference pass: the maxima alone, about half the work).
    Ties go to the *first* maximal tap in row-major window order, as in PyTorch's CPU
    ``max_pool2d``. A NaN in a window makes its output NaN and its ``argmax`` the window's last
    NaN; a window whose elements are all ``-inf`` has its first element (not padding) as
    ``argmax``. Both as in torch: the gradient never lands on padding, where it would be lost.

    Args:
        x: the input, (N, C, H, W).
        geom: the pooling's :class:`ConvGeometry`.
        need_argmax: compute ``argmax`` (for a backward).

    Example:
        >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
        >>> g = ConvGeometry(kh=2, kw=2, stride=(2, 2), dilation=(1, 1), padding=(0, 0, 0, 0))
        >>> y, argmax = max_pool2d_forward(x, g)
        >>> y[0, 0]
        array([[ 5.,  7.],
               [13., 15.]])
        >>> argmax[0, 0]
        array([[3, 3],
               [3, 3]], dtype=uint8)
    """
    xp = pad2d(x, geom.padding, -np.inf, keep_layout=True)
    windows = pool_windows(xp, geom)
    # Outputs in the memory order of x (order "K"): a convolution's output is batch-innermost
    # (see Conv2dPlan), and mixing orders makes every element-wise pass a strided gather.
    taps = geom.kh * geom.kw
    if need_argmax and geom.kh == geom.kw == 2:
        y, argmax = max_and_argmax_2x2(windows)
    else:
        y = windows[..., 0, 0].copy(order="K")
        if not need_argmax:
            for t in range(1, taps):
                np.maximum(y, windows[..., t // geom.kw, t % geom.kw], out=y)  # NaN propagates, as torch's
            return y, None
        argmax = max_and_argmax_by_taps(windows, y)
    if not np.isfinite(y).all():  # rare: fix those windows up here rather than test every tap above
        all_minus_inf = np.isneginf(y)
        if all_minus_inf.any() and any(geom.padding):  # -inf padding tied with -inf elements and won
            inside = pool_windows(pad2d(np.ones((1, 1) + x.shape[2:], dtype=bool), geom.padding, False), geom)
            for t in reversed(range(taps)):
                argmax[all_minus_inf & inside[..., t // geom.kw, t % geom.kw]] = t
        for t in range(taps):
            argmax[np.isnan(windows[..., t // geom.kw, t % geom.kw])] = t
    return y, argmax


def max_and_argmax_by_taps(windows: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Running maximum over the window taps, into ``y`` (which holds tap 0 on entry); returns the
    first maximal tap of each window, in row-major window order (NaN windows are fixed up by the caller).

    Args:
        windows: the pooling windows, (N, C, OH, OW, kh, kw) (:func:`pool_windows`).
        y: tap 0 of every window, (N, C, OH, OW), overwritten by the maxima.

    Example:
        >>> w = pool_windows(np.array([[[[1.0, 3.0, 3.0]]]]), ConvGeometry(1, 3, (1, 1), (1, 1), (0, 0, 0, 0)))
        >>> y = w[..., 0, 0].copy()
        >>> max_and_argmax_by_taps(w, y), y
        (array([[[[1]]]], dtype=uint8), array([[[[3.]]]]))
    """
    kh, kw = windows.shape[-2:]
    argmax = np.zeros_like(y, dtype=np.uint8 if kh * kw <= 256 else np.int32)
    better = np.empty_like(y, dtype=bool)
    for t in range(1, kh * kw):
        tap = windows[..., t // kw, t % kw]
        np.greater(tap, y, out=better)
        np.maximum(y, tap, out=y)
        # argmax = where(better, t, argmax), as bit operations: a masked copy is ~10x slower.
        all_ones = -better.astype(argmax.dtype)
        argmax ^= (argmax ^ argmax.dtype.type(t)) & all_ones
    return argmax


def max_and_argmax_2x2(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`max_and_argmax_by_taps` for 2x2 windows, as a tournament: each row's pair, then the
    two rows: 8 passes over the output instead of 18 (128x32x32x32 batch-innermost, one thread:
    5.3 -> 4.4 ms; LeNet's 64x6x28x28, no change). Strict comparisons keep the first maximal tap.

    Args:
        windows: the pooling windows, (N, C, OH, OW, 2, 2).

    Returns:
        ``(y, argmax)``, both laid out in memory like the windows' first tap.

    Example:
        >>> w = pool_windows(np.array([[[[1.0, 3.0], [3.0, 2.0]]]]), ConvGeometry(2, 2, (2, 2), (1, 1), (0, 0, 0, 0)))
        >>> max_and_argmax_2x2(w)
        (array([[[[3.]]]]), array([[[[1]]]], dtype=uint8))
    """
    t0, t1, t2, t3 = windows[..., 0, 0], windows[..., 0, 1], windows[..., 1, 0], windows[..., 1, 1]
    top, bottom = np.maximum(t0, t1), np.maximum(t2, t3)
    argmax = np.greater(t1, t0).view(np.uint8)  # 0 or 1 within the top row
    bottom_tap = np.greater(t3, t2).view(np.uint8)
    bottom_tap |= 2  # 2 or 3
    bottom_wins = np.greater(bottom, top)
    y = np.maximum(top, bottom, out=top)
    # argmax = where(bottom_wins, bottom_tap, argmax), as bit operations
    argmax ^= (argmax ^ bottom_tap) & (-bottom_wins.view(np.int8)).view(np.uint8)
    return y, argmax


def max_pool2d_backward(
    dy: np.ndarray, argmax: np.ndarray, x_shape: tuple[int, int, int, int], geom: ConvGeometry
) -> np.ndarray:
    """Adjoint of :func:`max_pool2d_forward`: each ``dy`` goes to its window's maximum; overlaps add up.

    Args:
        dy: ``dL/dy``, (N, C, OH, OW).
        argmax: the tap indices from :func:`max_pool2d_forward`, (N, C, OH, OW).
        x_shape: ``(N, C, H, W)`` of the input.
        geom: the pooling's :class:`ConvGeometry`.

    Returns:
        ``dx`` of ``x_shape``.

    Example:
        >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
        >>> g = ConvGeometry(kh=2, kw=2, stride=(2, 2), dilation=(1, 1), padding=(0, 0, 0, 0))
        >>> y, argmax = max_pool2d_forward(x, g)
        >>> max_pool2d_backward(np.ones_like(y), argmax, x.shape, g)[0, 0]
        array([[0., 0., 0., 0.],
               [0., 1., 0., 1.],
               [0., 0., 0., 0.],
               [0., 1., 0., 1.]])
    """
    if geom.stride == (geom.kh, geom.kw) and geom.dilation == (1, 1) and not any(geom.padding):
        return _max_pool2d_backward_tiled(dy, argmax, x_shape, geom)
    return max_pool2d_backward_by_taps(dy, argmax, x_shape, geom)


def _max_pool2d_backward_tiled(
    dy: np.ndarray, argmax: np.ndarray, x_shape: tuple[int, int, int, int], geom: ConvGeometry
) -> np.ndarray:
    """:func:`max_pool2d_backward` for windows that tile the input (stride = window, no padding
    or dilation): every input element is in one window at most, so ``dx`` seen as
    ``(.., OH, kh, .., OW, kw, ..)`` is ``dy`` broadcast over the window times ``[argmax == tap]``:
    one pass writes all of ``dx`` (1.3-1.7x faster than :func:`max_pool2d_backward_by_taps`, which
    tests hold it against: LeNet's first pool, 0.56 -> 0.42 ms; a 128x32x32x32 one, 6.6 -> 3.9 ms).
    """
    n, c, h, w = x_shape
    oh, ow = dy.shape[2:]
    kh, kw = geom.kh, geom.kw
    order = memory_order(argmax)
    if memory_order(dy) != order:  # one transposing copy, as in the per-tap kernel
        dy_in_order = empty_in_order(order, dy.shape, dy.dtype)
        np.copyto(dy_in_order, dy)
        dy = dy_in_order
    dx = empty_in_order(order, (n, c, h, w), dy.dtype)
    # Every array in memory order (C-contiguous axes), with the window's axes right after OH and
    # OW, so that the broadcast pass runs with a unit stride innermost.
    dx_t, dy_t, argmax_t = (a.transpose(order) for a in (dx, dy, argmax))
    # Per axis, in memory order: its extent in dx, in dy and argmax, and in the two tap grids.
    window_axes = {2: ((oh, kh), (oh, 1), (1, kh), (1, 1)), 3: ((ow, kw), (ow, 1), (1, 1), (1, kw))}
    dx_shape, in_shape, row_tap, col_tap = [], [], [], []
    for axis in order:
        size = dx.shape[axis]
        extents = window_axes.get(axis, ((size,), (size,), (1,), (1,)))
        for shape, extent in zip((dx_shape, in_shape, row_tap, col_tap), extents):
            shape.extend(extent)
    if oh * kh < h or ow * kw < w:  # rows or columns that no window reaches (floor mode) get no gradient
        dx_t.fill(0)
    reached = {2: slice(0, oh * kh), 3: slice(0, ow * kw)}
    dx_windows = dx_t[tuple(reached.get(axis, slice(None)) for axis in order)].reshape(dx_shape)
    taps = np.arange(kh, dtype=argmax.dtype).reshape(row_tap) * kw + np.arange(kw, dtype=argmax.dtype).reshape(col_tap)
    chosen = argmax_t.reshape(in_shape) == taps
    dy_windows = dy_t.reshape(in_shape)
    if np.isfinite(dy).all():
        np.multiply(dy_windows, chosen, out=dx_windows)
    else:  # inf * 0 would be NaN where the window's maximum is elsewhere
        dx_windows[...] = np.where(chosen, dy_windows, dy.dtype.type(0))
    return dx


def max_pool2d_backward_by_taps(
    dy: np.ndarray, argmax: np.ndarray, x_shape: tuple[int, int, int, int], geom: ConvGeometry
) -> np.ndarray:
    """:func:`max_pool2d_backward` for any geometry, one strided pass per window tap (the
    reference that tests hold the tiled kernel against).

    Args:
        dy: ``dL/dy``, (N, C, OH, OW).
        argmax: the tap indices from :func:`max_pool2d_forward`, (N, C, OH, OW).
        x_shape: ``(N, C, H, W)`` of the input.
        geom: the pooling's :class:`ConvGeometry`.

    Example:
        >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
        >>> g = ConvGeometry(kh=3, kw=3, stride=(1, 1), dilation=(1, 1), padding=(0, 0, 0, 0))
        >>> y, argmax = max_pool2d_forward(x, g)
        >>> max_pool2d_backward_by_taps(np.ones_like(y), argmax, x.shape, g)[0, 0]
        array([[0., 0., 0., 0.],
               [0., 0., 0., 0.],
               [0., 0., 1., 1.],
               [0., 0., 1., 1.]])
    """
    n, c, h, w = x_shape
    oh, ow = dy.shape[2:]
    # dx in x's memory order, written tap by tap where each tap lies inside x (the maximum is
    # never in the padding), so no padded buffer.
    dx = zeros_in_layout_of(argmax, (n, c, h, w), dy.dtype)
    span_h, span_w = (geom.kh - 1) * geom.dilation[0] + 1, (geom.kw - 1) * geom.dilation[1] + 1
    overlapping = geom.stride[0] < span_h or geom.stride[1] < span_w
    # dy * [argmax == t] is ~10x faster than np.where, but inf * 0 would be NaN: only when finite.
    # The product goes to a contiguous buffer first: a mixed-type product written straight into
    # the strided view of dx is ~1.5x slower.
    finite = bool(np.isfinite(dy).all())
    share = np.empty_like(argmax, dtype=dy.dtype)
    if memory_order(dy) != memory_order(argmax):  # one transposing copy beats kh*kw strided products
        np.copyto(share, dy)  # (a view in the same order, e.g. a convolution's cropped dL/dx, is read in place)
        dy, share = share, np.empty_like(share)
    for t in range(geom.kh * geom.kw):
        ranges = _tap_ranges(t // geom.kw, t % geom.kw, h, w, oh, ow, geom)
        if ranges is None:
            continue
        out_rows, out_cols, in_rows, in_cols = ranges
        if finite:
            np.multiply(dy, argmax == t, out=share)
        else:
            share = np.where(argmax == t, dy, dy.dtype.type(0))
        target = dx[:, :, in_rows, in_cols]
        if overlapping:
            target += share[:, :, out_rows, out_cols]
        else:  # each input element is in one window at most
            target[...] = share[:, :, out_rows, out_cols]
    return dx


def avg_pool2d_divisor(h: int, w: int, geom: ConvGeometry, count_include_pad: bool, dtype: np.dtype) -> np.ndarray:
    """Number of elements each window's sum is divided by, shape ``(OH, OW)`` (broadcasts over N, C).

    ``count_include_pad=True``: always ``kh * kw`` (torch's default). ``False``: only the
    elements of the window that lie inside the unpadded input (Keras' ``"same"`` pooling).

    Args:
        h: the input height.
        w: the input width.
        geom: the pooling's :class:`ConvGeometry`.
        count_include_pad: count padded elements (torch's default) or not.
        dtype: the result's dtype.

    Example:
        >>> g = ConvGeometry(kh=3, kw=3, stride=(1, 1), dilation=(1, 1), padding=(1, 1, 1, 1))
        >>> avg_pool2d_divisor(3, 3, g, count_include_pad=False, dtype=np.float64)
        array([[4., 6., 4.],
               [6., 9., 6.],
               [4., 6., 4.]])
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


# The average-pooling kernels below are the fast ones: no padded copy of the input, no
# temporaries of its size, and results in the input's memory layout (batch-innermost after a
# fast convolution, see Conv2dPlan), so that the layers around them never mix layouts. Each
# window tap is one strided operation over the part of the output whose windows it reaches:
# y[:, :, rows_out, cols_out] += x[:, :, rows_in, cols_in] (a 2x2 stride-2 pool is the sum of
# four strided views of x). The references beside them (``*_reference``) pad, gather and
# scatter as the definition reads; tests/test_pooling.py holds one against the other.


def _tap_ranges(p: int, q: int, h: int, w: int, oh: int, ow: int, geom: ConvGeometry) -> tuple[slice, slice, slice, slice] | None:
    """Where window tap ``(p, q)`` falls inside the unpadded input: ``(out_rows, out_cols, in_rows, in_cols)``.

    Output ``(i, j)`` reads input ``(i*sh + p*dh - pad_top, j*sw + q*dw - pad_left)``; the
    slices cover the outputs for which that element exists. ``None`` when there are none.
    """
    pt, _, pl, _ = geom.padding

    def axis(tap: int, stride: int, dilation: int, pad: int, size: int, out: int) -> tuple[slice, slice] | None:
        offset = tap * dilation - pad  # input index of output 0's element
        lo = max(0, -(offset // stride) if offset < 0 else 0)  # first output whose element is >= 0
        hi = min(out - 1, (size - 1 - offset) // stride)  # last output whose element is < size
        if lo > hi:
            return None
        first = lo * stride + offset
        return slice(lo, hi + 1), slice(first, first + stride * (hi - lo) + 1, stride)

    rows = axis(p, geom.stride[0], geom.dilation[0], pt, h, oh)
    cols = axis(q, geom.stride[1], geom.dilation[1], pl, w, ow)
    if rows is None or cols is None:
        return None
    return rows[0], cols[0], rows[1], cols[1]


def _divisor_value(divisor: np.ndarray) -> np.ndarray | np.generic:
    """``divisor`` as one scalar when all its entries are equal (the usual case): a cheaper division, the same result."""
    first = divisor.flat[0]
    return first if (divisor == first).all() else divisor


def avg_pool2d_forward(x: np.ndarray, geom: ConvGeometry, divisor: np.ndarray) -> np.ndarray:
    """``y[n, c, i, j] = (sum of the zero-padded window at (i, j)) / divisor[i, j]``, in ``x``'s memory layout.

    The taps are summed in row-major window order, as :func:`avg_pool2d_forward_reference`
    does (the padding's zeros left out: adding 0 changes nothing), then divided.

    Args:
        x: the input, (N, C, H, W), in any memory layout (e.g. a batch-innermost view).
        geom: the pooling's :class:`ConvGeometry`.
        divisor: :func:`avg_pool2d_divisor`'s ``(OH, OW)``.

    Returns:
        ``y``, (N, C, OH, OW), laid out in memory as ``x``.

    Example:
        >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
        >>> g = ConvGeometry(kh=2, kw=2, stride=(2, 2), dilation=(1, 1), padding=(0, 0, 0, 0))
        >>> d = avg_pool2d_divisor(4, 4, g, True, np.float64)
        >>> avg_pool2d_forward(x, g, d)[0, 0]
        array([[ 2.5,  4.5],
               [10.5, 12.5]])
    """
    n, c, h, w = x.shape
    oh, ow = geom.output_hw(h, w)
    taps = [r for t in range(geom.kh * geom.kw) if (r := _tap_ranges(t // geom.kw, t % geom.kw, h, w, oh, ow, geom))]
    full = slice(0, oh), slice(0, ow)
    covers = [r[:2] == full for r in taps]
    y = empty_in_order(memory_order(x), (n, c, oh, ow), x.dtype, zeros=not (taps and covers[0]))
    if taps and covers[0]:
        first = x[:, :, taps[0][2], taps[0][3]]
        if len(taps) > 1 and covers[1]:
            np.add(first, x[:, :, taps[1][2], taps[1][3]], out=y)
            taps = taps[2:]
        else:
            np.copyto(y, first)
            taps = taps[1:]
    for out_rows, out_cols, in_rows, in_cols in taps:
        target = y[:, :, out_rows, out_cols]
        np.add(target, x[:, :, in_rows, in_cols], out=target)
    y /= _divisor_value(divisor)
    return y


def avg_pool2d_forward_reference(x: np.ndarray, geom: ConvGeometry, divisor: np.ndarray) -> np.ndarray:
    """The reference of :func:`avg_pool2d_forward`: zero-pad, sum each window's view, divide (C-order result).

    Args:
        x: the input, (N, C, H, W).
        geom: the pooling's :class:`ConvGeometry`.
        divisor: :func:`avg_pool2d_divisor`'s ``(OH, OW)``.

    Returns:
        ``y``, (N, C, OH, OW).

    Example:
        >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
        >>> g = ConvGeometry(kh=2, kw=2, stride=(2, 2), dilation=(1, 1), padding=(0, 0, 0, 0))
        >>> avg_pool2d_forward_reference(x, g, avg_pool2d_divisor(4, 4, g, True, np.float64))[0, 0]
        array([[ 2.5,  4.5],
               [10.5, 12.5]])
    """
    y = _window_sums(pad2d(x, geom.padding), geom)
    y /= divisor
    return y


def avg_pool2d_backward(
    dy: np.ndarray,
    x_shape: tuple[int, int, int, int],
    geom: ConvGeometry,
    divisor: np.ndarray,
    x_order: tuple[int, ...] | None = None,
) -> np.ndarray:
    """Adjoint of :func:`avg_pool2d_forward`: every window element gets ``dy / divisor``; overlaps add up.

    Args:
        dy: ``dL/dy``, (N, C, OH, OW), in any memory layout.
        x_shape: ``(N, C, H, W)`` of the input.
        geom: the pooling's :class:`ConvGeometry`.
        divisor: the ``divisor`` the forward pass used, (OH, OW).
        x_order: the input's :func:`memory_order`: ``dx`` is laid out so (default: C order).

    Returns:
        ``dx`` of ``x_shape``, laid out in memory in ``x_order``.

    Example:
        >>> g = ConvGeometry(kh=2, kw=2, stride=(2, 2), dilation=(1, 1), padding=(0, 0, 0, 0))
        >>> d = avg_pool2d_divisor(4, 4, g, True, np.float64)
        >>> avg_pool2d_backward(np.ones((1, 1, 2, 2)), (1, 1, 4, 4), g, d)[0, 0]
        array([[0.25, 0.25, 0.25, 0.25],
               [0.25, 0.25, 0.25, 0.25],
               [0.25, 0.25, 0.25, 0.25],
               [0.25, 0.25, 0.25, 0.25]])
    """
    n, c, h, w = x_shape
    oh, ow = dy.shape[2:]
    order = tuple(range(4)) if x_order is None else tuple(x_order)
    share = empty_in_order(order, dy.shape, dy.dtype)  # dy / divisor, moved to x's layout in the same pass
    np.divide(dy, _divisor_value(divisor), out=share)
    taps = [r for t in range(geom.kh * geom.kw) if (r := _tap_ranges(t // geom.kw, t % geom.kw, h, w, oh, ow, geom))]
    span_h, span_w = (geom.kh - 1) * geom.dilation[0] + 1, (geom.kw - 1) * geom.dilation[1] + 1
    overlapping = geom.stride[0] < span_h or geom.stride[1] < span_w
    # Windows that tile x exactly write every element once: no zero fill needed.
    tiles = geom.stride == (span_h, span_w) == (geom.kh, geom.kw) and not any(geom.padding) and (oh * geom.kh, ow * geom.kw) == (h, w)
    dx = empty_in_order(order, tuple(x_shape), dy.dtype, zeros=not tiles)
    for out_rows, out_cols, in_rows, in_cols in taps:
        target = dx[:, :, in_rows, in_cols]
        if overlapping:
            np.add(target, share[:, :, out_rows, out_cols], out=target)
        else:  # each input element is in one window at most
            np.copyto(target, share[:, :, out_rows, out_cols])
    return dx


def avg_pool2d_backward_reference(
    dy: np.ndarray, x_shape: tuple[int, int, int, int], geom: ConvGeometry, divisor: np.ndarray
) -> np.ndarray:
    """The reference of :func:`avg_pool2d_backward`: scatter ``dy / divisor`` onto a zero-padded image, crop.

    Args:
        dy: ``dL/dy``, (N, C, OH, OW).
        x_shape: ``(N, C, H, W)`` of the input.
        geom: the pooling's :class:`ConvGeometry`.
        divisor: the ``divisor`` the forward pass used, (OH, OW).

    Returns:
        ``dx`` of ``x_shape``.

    Example:
        >>> g = ConvGeometry(kh=2, kw=2, stride=(2, 2), dilation=(1, 1), padding=(0, 0, 0, 0))
        >>> d = avg_pool2d_divisor(4, 4, g, True, np.float64)
        >>> avg_pool2d_backward_reference(np.ones((1, 1, 2, 2)), (1, 1, 4, 4), g, d)[0, 0, 0]
        array([0.25, 0.25, 0.25, 0.25])
    """
    n, c, h, w = x_shape
    pt, pb, pl, pr = geom.padding
    oh, ow = dy.shape[2:]
    share = dy / divisor
    dxp = np.zeros((n, c, h + pt + pb, w + pl + pr), dtype=share.dtype)
    for t in range(geom.kh * geom.kw):
        rows, columns = _tap_slices(t // geom.kw, t % geom.kw, oh, ow, geom)
        dxp[:, :, rows, columns] += share
    return dxp[:, :, pt : pt + h, pl : pl + w]
