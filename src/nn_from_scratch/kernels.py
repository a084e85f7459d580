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

from typing import Any, Callable, NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

Padding4 = tuple[int, int, int, int]


class ConvGeometry(NamedTuple):
    """Everything about a 2-D convolution's shape that the kernels need.

    Args:
        kh: the kernel's height.
        kw: the kernel's width.
        stride: ``(sh, sw)``.
        dilation: ``(dh, dw)``.
        padding: ``(top, bottom, left, right)`` zeros added around the input.

    Example:
        >>> g = ConvGeometry(kh=3, kw=3, stride=(1, 1), dilation=(1, 1), padding=(1, 1, 1, 1))
        >>> g.output_hw(28, 28)
        (28, 28)
    """

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


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """Keras/TensorFlow "same" padding: output length ``ceil(size / stride)``.

    The extra pixel of an odd total goes to the end (bottom/right), as TensorFlow does.

    Args:
        size: the input length along the axis.
        kernel: the kernel length.
        stride: the stride.
        dilation: the dilation.

    Returns:
        ``(before, after)`` padding along the axis.

    Example:
        >>> same_padding(5, 2, 2, 1)
        (0, 1)
        >>> same_padding(28, 3, 1, 1)
        (1, 1)
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


def as_pair(value: Any, what: str, layer: str) -> tuple[int, int]:
    """A positive int or a pair of them (kernel size, stride, dilation) -> ``(h, w)``.

    Args:
        value: an int or a pair of ints, each >= 1.
        what: the argument's name, for the error message.
        layer: the layer's name, for the error message.

    Returns:
        ``(h, w)``.

    Example:
        >>> as_pair(3, "kernel_size", "Conv2D")
        (3, 3)
        >>> as_pair((2, 1), "stride", "Conv2D")
        (2, 1)
    """
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value) if isinstance(value, (tuple, list, np.ndarray)) else ()
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in pair):
        raise ValueError(f"{layer}: {what} must be a positive int or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def resolve_padding(
    padding: Any, hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int], layer: str
) -> Padding4:
    """``int | (ph, pw) | (top, bottom, left, right) | "valid" | "same"`` -> (top, bottom, left, right).

    Args:
        padding: the layer's ``padding`` argument.
        hw: the input's ``(H, W)`` (needed for ``"same"``).
        kernel: ``(kh, kw)``.
        stride: ``(sh, sw)``.
        dilation: ``(dh, dw)``.
        layer: the layer's name, for errors.

    Returns:
        ``(top, bottom, left, right)``.

    Example:
        >>> resolve_padding("same", (28, 28), (3, 3), (1, 1), (1, 1), "Conv2D")
        (1, 1, 1, 1)
        >>> resolve_padding((1, 2), (28, 28), (3, 3), (1, 1), (1, 1), "Conv2D")
        (1, 1, 2, 2)
    """
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            return same_padding(hw[0], kernel[0], stride[0], dilation[0]) + same_padding(hw[1], kernel[1], stride[1], dilation[1])
        raise ValueError(f"{layer}: padding must be an int, a tuple, 'valid' or 'same', got {padding!r}")
    if isinstance(padding, (int, np.integer)):
        padding = (padding,)
    if not isinstance(padding, (tuple, list, np.ndarray)) or not all(isinstance(p, (int, np.integer)) and not isinstance(p, bool) for p in padding):
        raise ValueError(f"{layer}: padding must be non-negative ints: int, (ph, pw) or (top, bottom, left, right); got {padding!r}")
    pads = tuple(int(p) for p in padding)
    if any(p < 0 for p in pads) or len(pads) not in (1, 2, 4):
        raise ValueError(f"{layer}: padding must be non-negative: int, (ph, pw) or (top, bottom, left, right); got {padding!r}")
    if len(pads) == 1:
        return pads * 4
    if len(pads) == 2:
        return (pads[0], pads[0], pads[1], pads[1])
    return pads  # type: ignore[return-value]


def image_shape(input_shape: tuple[int, ...], layer: str) -> tuple[int, int, int]:
    """A per-sample shape that must be ``(C, H, W)``; ValueError naming the layer otherwise.

    Args:
        input_shape: a per-sample shape (no batch axis).
        layer: the layer's name, for the error message.

    Returns:
        ``(C, H, W)`` as ints.

    Example:
        >>> image_shape((1, 28, 28), "Conv2D")
        (1, 28, 28)
    """
    if len(input_shape) != 3:
        raise ValueError(
            f"{layer}: expected input of shape (batch, channels, height, width), got (batch, {', '.join(map(str, input_shape))})"
        )
    return input_shape  # type: ignore[return-value]


def checked_output_hw(geom: ConvGeometry, input_shape: tuple[int, int, int], layer: str, window: str) -> tuple[int, int]:
    """``geom.output_hw`` of a ``(C, H, W)`` input, refusing an input smaller than the ``window``.

    Args:
        geom: the convolution's :class:`ConvGeometry`.
        input_shape: the per-sample ``(C, H, W)``.
        layer: the layer's name, for the error message.
        window: what the window is called in the message (``"kernel"``, ``"pool"``).

    Returns:
        ``(OH, OW)``.

    Example:
        >>> g = ConvGeometry(kh=3, kw=3, stride=(1, 1), dilation=(1, 1), padding=(1, 1, 1, 1))
        >>> checked_output_hw(g, (1, 28, 28), "Conv2D", "kernel")
        (28, 28)
    """
    c, h, w = input_shape
    oh, ow = geom.output_hw(h, w)
    if oh < 1 or ow < 1:
        raise ValueError(f"{layer}: input of shape (batch, {c}, {h}, {w}) is smaller than {window}")
    return oh, ow


def zeros_in_layout_of(like: np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Zeros of ``shape`` laid out in memory like ``like`` (same axis order by stride), e.g. batch-innermost.

    Args:
        like: the array whose memory order (axes sorted by stride) to copy.
        shape: the new array's shape (same ndim as ``like``).
        dtype: the new array's dtype.

    Example:
        >>> like = np.zeros((3, 4, 5, 2)).transpose(3, 0, 1, 2)  # (N, C, H, W) view, batch innermost
        >>> z = zeros_in_layout_of(like, (2, 3, 4, 5), np.float32)
        >>> z.shape, z.strides
        ((2, 3, 4, 5), (4, 160, 40, 8))
    """
    order = np.argsort([-abs(s) for s in like.strides], kind="stable")
    return np.zeros([shape[i] for i in order], dtype).transpose(np.argsort(order))


def pad2d(x: np.ndarray, padding: Padding4, value: float = 0.0, keep_layout: bool = False) -> np.ndarray:
    """Pad the last two axes of ``x`` by ``(top, bottom, left, right)`` with ``value``
    (zeros for convolution and average pooling, ``-inf`` for max pooling).

    The result is C-contiguous, or laid out in memory like ``x`` with ``keep_layout`` (e.g.
    batch-innermost, so that max pooling after a fast convolution keeps its layout).

    Args:
        x: an array of shape (..., H, W).
        padding: ``(top, bottom, left, right)``.
        value: the fill value.
        keep_layout: lay the result out in memory like ``x`` instead of C-contiguous.

    Returns:
        An array of shape (..., H + top + bottom, W + left + right).

    Example:
        >>> pad2d(np.ones((1, 1, 2, 2)), (1, 0, 0, 1))[0, 0]
        array([[0., 0., 0.],
               [1., 1., 0.],
               [1., 1., 0.]])
    """
    pt, pb, pl, pr = padding
    if not (pt or pb or pl or pr):
        return x
    n, c, h, w = x.shape
    shape = (n, c, h + pt + pb, w + pl + pr)
    if keep_layout:
        out = zeros_in_layout_of(x, shape, x.dtype)
        if value != 0:
            out.fill(value)
    else:
        out = np.full(shape, value, dtype=x.dtype)
    out[:, :, pt : pt + h, pl : pl + w] = x
    return out


def window_view(
    xp: np.ndarray, kh: int, kw: int, oh: int, ow: int, stride: tuple[int, int], dilation: tuple[int, int]
) -> np.ndarray:
    """A read-only view of every receptive field of ``xp`` (N, C, Hp, Wp).

    Returns shape ``(C, kh, kw, N, OH, OW)``: element ``[c, p, q, n, i, j]`` is
    ``xp[n, c, i*sh + p*dh, j*sw + q*dw]``. No data is copied.

    Args:
        xp: the padded input, (N, C, Hp, Wp).
        kh: the kernel's height.
        kw: the kernel's width.
        oh: the output height.
        ow: the output width.
        stride: ``(sh, sw)``.
        dilation: ``(dh, dw)``.

    Example:
        >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
        >>> v = window_view(x, 2, 2, 3, 3, (1, 1), (1, 1))
        >>> v.shape
        (1, 2, 2, 1, 3, 3)
        >>> float(v[0, 1, 1, 0, 0, 0])  # x[0, 0, 1, 1]
        5.0
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
    """Receptive fields of ``x`` (N, C, H, W) as columns: ``(C*kh*kw, N*OH*OW)``.

    Args:
        x: the input, (N, C, H, W); padded here by ``geom.padding``.
        geom: the convolution's :class:`ConvGeometry`.

    Returns:
        ``(C*kh*kw, N*OH*OW)``.

    Example:
        >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
        >>> g = ConvGeometry(kh=2, kw=2, stride=(1, 1), dilation=(1, 1), padding=(0, 0, 0, 0))
        >>> im2col(x, g).shape
        (4, 9)
    """
    n, c, h, w = x.shape
    oh, ow = geom.output_hw(h, w)
    view = window_view(pad2d(x, geom.padding), geom.kh, geom.kw, oh, ow, geom.stride, geom.dilation)
    return view.reshape(c * geom.kh * geom.kw, n * oh * ow)  # the one copy: gathers the windows


def col2im(cols: np.ndarray, x_shape: tuple[int, int, int, int], geom: ConvGeometry) -> np.ndarray:
    """Adjoint of :func:`im2col`: scatter-add columns back onto an image of ``x_shape``.

    Overlapping receptive fields add up. The loop runs over the ``kh * kw`` kernel taps only;
    each iteration is one strided add over the whole batch and all channels.

    Args:
        cols: columns ``(C*kh*kw, N*OH*OW)`` as :func:`im2col` makes them.
        x_shape: ``(N, C, H, W)`` of the image.
        geom: the convolution's :class:`ConvGeometry`.

    Returns:
        The image, of shape ``x_shape`` (below: how often each pixel is read).

    Example:
        >>> g = ConvGeometry(kh=2, kw=2, stride=(1, 1), dilation=(1, 1), padding=(0, 0, 0, 0))
        >>> col2im(np.ones((4, 9)), (1, 1, 4, 4), g)[0, 0]
        array([[1., 2., 2., 1.],
               [2., 4., 4., 2.],
               [2., 4., 4., 2.],
               [1., 2., 2., 1.]])
    """
    n, c, h, w = x_shape
    pt, pb, pl, pr = geom.padding
    oh, ow = geom.output_hw(h, w)
    xp = np.zeros((n, c, h + pt + pb, w + pl + pr), dtype=cols.dtype)
    taps = cols.reshape(c, geom.kh, geom.kw, n, oh, ow)
    for p in range(geom.kh):
        for q in range(geom.kw):
            rows, columns = _tap_slices(p, q, oh, ow, geom)
            xp[:, :, rows, columns] += taps[:, p, q].transpose(1, 0, 2, 3)
    return xp[:, :, pt : pt + h, pl : pl + w]


def conv2d_forward(
    x: np.ndarray, W: np.ndarray, b: np.ndarray | None, geom: ConvGeometry
) -> tuple[np.ndarray, np.ndarray]:
    """Cross-correlation ``y[n,o] = sum_c W[o,c] * x[n,c] + b[o]``.

    Returns ``(y, cols)``; ``cols`` is kept by the caller for the backward pass.

    Args:
        x: the input, (N, C, H, W).
        W: the kernel, (O, C, kh, kw).
        b: the bias, (O,), or None.
        geom: the convolution's :class:`ConvGeometry`.

    Returns:
        ``y`` (N, O, OH, OW) and ``cols`` (C*kh*kw, N*OH*OW).

    Example:
        >>> x, W = np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2))
        >>> g = ConvGeometry(kh=2, kw=2, stride=(1, 1), dilation=(1, 1), padding=(0, 0, 0, 0))
        >>> y, cols = conv2d_forward(x, W, np.array([0.5]), g)
        >>> y[0, 0]
        array([[4.5, 4.5],
               [4.5, 4.5]])
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

    Args:
        dy: ``dL/dy``, (N, O, OH, OW).
        cols: the ``cols`` that :func:`conv2d_forward` returned.
        x_shape: ``(N, C, H, W)`` of the input.
        W: the kernel, (O, C, kh, kw).
        geom: the convolution's :class:`ConvGeometry`.
        need_dx: compute ``dx`` (False returns None in its place).

    Returns:
        ``dx`` (N, C, H, W) or None, ``dW`` (O, C, kh, kw) and ``db`` (O,).

    Example:
        >>> x, W = np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2))
        >>> g = ConvGeometry(kh=2, kw=2, stride=(1, 1), dilation=(1, 1), padding=(0, 0, 0, 0))
        >>> y, cols = conv2d_forward(x, W, None, g)
        >>> dx, dW, db = conv2d_backward(np.ones_like(y), cols, x.shape, W, g)
        >>> dx[0, 0]
        array([[1., 2., 1.],
               [2., 4., 2.],
               [1., 2., 1.]])
        >>> dW[0, 0], db
        (array([[4., 4.],
               [4., 4.]]), array([4.]))
    """
    o = W.shape[0]
    dy_2d = dy.transpose(1, 0, 2, 3).reshape(o, -1)  # (O, N*OH*OW)
    dW = (dy_2d @ cols.T).reshape(W.shape)
    db = dy_2d.sum(axis=1)
    dx = col2im(W.reshape(o, -1).T @ dy_2d, x_shape, geom) if need_dx else None
    return dx, dW, db


# -- fast convolution -----------------------------------------------------------------------
# The reference above builds ``cols``, a (C*kh*kw, N*OH*OW) copy of the input: kh*kw times the
# input's size, gathered in runs of OW floats. For small layers that copy -- and col2im's
# kh*kw strided adds of short rows in the backward pass -- is where the time goes, not the
# multiply (profile of the seed CNN: ~80% of a training step in the 7x7 layer's im2col/col2im).
#
# The plan below keeps the batch as the *innermost* axis (channels, rows, columns, batch: CHWN)
# and unrolls only the kernel *width*; the kernel *rows* are reached through views:
#
#     xp  (C, Hp, Wp, N)          the zero-padded input, batch innermost
#     U   (C, kw, Hp, OW, N)      U[c, q, h, j, n] = xp[c, h, j*sw + q*dw, n]     (kw copies, not kh*kw)
#     U_p = U[:, :, p*dh : p*dh + OH]  viewed as (C*kw, OH*OW*N)
#
# ``U_p`` is a plain strided matrix (row stride Hp*OW*N), so BLAS takes it without a copy, and
# it holds exactly the rows ``(c, p, :)`` of the reference ``cols`` (pixels ordered (i, j, n)).
# With ``W_p = W[:, :, p, :]`` as (O, C*kw) and ``dy`` as (O, OH*OW*N):
#
#     y  = sum_p W_p @ U_p                     kh matrix products, no kh-fold copy
#     dW[:, :, p, :] = dy @ U_p.T
#     dx = the adjoint of the forward: see _dx_by_rows and _dx_by_stacked_dy
#
# With the batch innermost every copy and add moves runs of OW*N floats (whole output rows of
# the batch) instead of OW, which is what makes the unrolling, the padding and the adjoint cheap.
#
# It needs stride 1 along the height (consecutive output rows = consecutive input rows); any
# width stride, dilation and padding work. Other geometries use the reference. Results are
# returned as (N, C, H, W) *views* of CHWN-ordered arrays: the next convolution reads that
# order without a transposing copy, and element-wise layers keep it.


def fast_conv_supported(geom: ConvGeometry) -> bool:
    """Whether :class:`Conv2dPlan` handles this geometry (stride 1 along the height).

    Args:
        geom: the convolution's :class:`ConvGeometry`.

    Example:
        >>> g = ConvGeometry(kh=3, kw=3, stride=(1, 1), dilation=(1, 1), padding=(1, 1, 1, 1))
        >>> fast_conv_supported(g)
        True
        >>> fast_conv_supported(g._replace(stride=(2, 2)))
        False
    """
    return geom.stride[0] == 1


class Conv2dPlan:
    """The fast convolution for one input shape, with its work buffers (allocated once).

    ``forward(x, W, b)`` then ``backward(dy, W)`` compute what :func:`conv2d_forward` and
    :func:`conv2d_backward` compute (up to float rounding; tests/test_kernels.py checks it).

    Buffer lifetimes: ``U`` and the padded input are overwritten by every ``forward`` and read
    by the ``backward`` that follows it, like the reference's ``cols``. The arrays returned
    (``y``, ``dx``, ``dW``, ``db``) are freshly allocated, never reused.

    Args:
        x_shape: ``(N, C, H, W)`` of the inputs it will see.
        out_channels: O, the number of output channels.
        geom: the convolution's :class:`ConvGeometry` (see :func:`fast_conv_supported`).
        dtype: the dtype of inputs and weights.
        chunk_pixels: output pixels per work chunk (default: about 2 MiB of buffers; tests use small values).
        dx_block_rows: input rows per block of the ``dx`` kernel (default: chosen from the shapes).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x, W, b = rng.normal(size=(2, 3, 6, 6)), rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4)
        >>> g = ConvGeometry(kh=3, kw=3, stride=(1, 1), dilation=(1, 1), padding=(1, 1, 1, 1))
        >>> plan = Conv2dPlan(x.shape, 4, g, np.float64)
        >>> y = plan.forward(x, W, b)
        >>> bool(np.allclose(y, conv2d_forward(x, W, b, g)[0]))
        True
        >>> dx, dW, db = plan.backward(np.ones_like(y), W)
        >>> dx.shape, dW.shape, db.shape
        ((2, 3, 6, 6), (4, 3, 3, 3), (4,))
    """

    def __init__(
        self,
        x_shape: tuple[int, int, int, int],
        out_channels: int,
        geom: ConvGeometry,
        dtype: np.dtype,
        chunk_pixels: int | None = None,
        dx_block_rows: int | None = None,
    ) -> None:
        if not fast_conv_supported(geom):
            raise ValueError(f"Conv2dPlan: needs stride 1 along the height, got stride {geom.stride}")
        n, c, h, w = x_shape
        self.x_shape = tuple(x_shape)
        self.out_channels = o = int(out_channels)
        self.geom = geom
        self.dtype = dtype = np.dtype(dtype)
        self.oh, self.ow = geom.output_hw(h, w)
        pt, pb, pl, pr = geom.padding
        self.hp, self.wp = h + pt + pb, w + pl + pr
        kh, kw = geom.kh, geom.kw
        self.taps_k = c * kw  # rows of each U_p
        self.pixels = self.oh * self.ow * n  # columns of each U_p
        # Zero borders are written once; each forward only overwrites the interior.
        self._xpad = np.zeros((c, self.hp, self.wp, n), dtype)
        self._U = np.empty((c, kw, self.hp, self.ow, n), dtype)
        # The forward works through the pixels in chunks whose U_p, y and partial-sum slices
        # take at most 2 MiB, so the kh products and sums of a chunk stay in cache. Measured here
        # (OpenBLAS, AMD EPYC, one thread): the seed CNN's 7x7 layer 0.86 -> 0.45 ms, LeNet's
        # first layer 0.66 -> 0.40 ms; (2x28)@(28xP) alone costs 1.7 ns per pixel at P=16k and
        # 4.5 ns at P=20k.
        bytes_per_pixel = (self.taps_k + 2 * o) * dtype.itemsize
        self._chunk = min(self.pixels, chunk_pixels or max(1024, (2 << 20) // bytes_per_pixel))
        self._partial = np.empty((o, self._chunk), dtype) if kh > 1 else None
        self._dy = np.empty((o, self.oh, self.ow, n), dtype)
        # dx works through blocks of rows whose Z (and partial sums or stacked dy) take <= 2 MiB.
        row_bytes = self.ow * n * dtype.itemsize
        self._dx_block_rows = dx_block_rows or max(1, (2 << 20) // ((2 * self.taps_k + o * kh) * row_bytes))
        self._Z: np.ndarray | None = None  # dx work buffers, allocated by the first backward needing them
        self._Z_partial: np.ndarray | None = None
        self._dy_padded: np.ndarray | None = None
        self._D: np.ndarray | None = None
        # Kernel choice per shape (from single-thread timings of the same five layers):
        # dW: one matrix-vector product per (kernel row, output channel) streams U_p at memory
        # speed, while a matrix product with only a few output channels wastes most of BLAS's
        # register tile; with many output channels the matrix product wins.
        self.dW_kernel = "gemv" if o <= 8 else "gemm"
        # dx: the cheaper by a cost model of floats moved through the intermediates plus
        # multiply-adds, with one float moved costing as much as 14 flops (fitted on the four
        # convolutions of the benchmarks and a VGG-like 3x3 16->32 layer: it picks the faster
        # kernel for each of them, or one within 2% of it, on one and on two threads).
        stacked_pixels = self.hp * self.ow * n
        cost_rows = 14 * 3 * kh * self.taps_k * self.pixels + 2 * kh * self.taps_k * o * self.pixels
        cost_stacked = 14 * 2 * (o * kh + self.taps_k) * stacked_pixels + 2 * self.taps_k * o * kh * stacked_pixels
        self.dx_kernel = "rows" if cost_rows <= cost_stacked else "stacked_dy"

    # -- forward ---------------------------------------------------------------------------
    def _U_p(self, p: int) -> np.ndarray:
        dh = self.geom.dilation[0]
        return self._U[:, :, p * dh : p * dh + self.oh].reshape(self.taps_k, self.pixels)

    def forward(self, x: np.ndarray, W: np.ndarray, b: np.ndarray | None) -> np.ndarray:
        """``y`` (N, O, OH, OW) for ``x`` (N, C, H, W), in any memory order; fills ``U`` for backward."""
        n, c, h, w = self.x_shape
        o, kh = self.out_channels, self.geom.kh
        pt, _, pl, _ = self.geom.padding
        x_chwn = x.transpose(1, 2, 3, 0)
        if not any(self.geom.padding) and x_chwn.flags.c_contiguous:
            source = x_chwn  # already batch-innermost (the output of a previous convolution)
        else:
            self._xpad[:, pt : pt + h, pl : pl + w, :] = x_chwn
            source = self._xpad
        s_c, s_h, s_w, s_n = source.strides
        dw, sw = self.geom.dilation[1], self.geom.stride[1]
        np.copyto(self._U, as_strided(source, self._U.shape, (s_c, s_w * dw, s_h, s_w * sw, s_n)))

        W_rows = W.transpose(2, 0, 1, 3).reshape(kh, o, self.taps_k)  # W_p = W_rows[p]
        y = np.empty((o, self.pixels), self.dtype)
        U_rows = [self._U_p(p) for p in range(kh)]
        for start in range(0, self.pixels, self._chunk):
            chunk = slice(start, start + self._chunk)
            y_chunk = y[:, chunk]
            np.matmul(W_rows[0], U_rows[0][:, chunk], out=y_chunk)
            partial = self._partial[:, : y_chunk.shape[1]] if kh > 1 else None
            for p in range(1, kh):
                np.matmul(W_rows[p], U_rows[p][:, chunk], out=partial)
                y_chunk += partial
        if b is not None:
            y += b[:, None]
        return y.reshape(o, self.oh, self.ow, n).transpose(3, 0, 1, 2)

    # -- backward --------------------------------------------------------------------------
    def backward(
        self, dy: np.ndarray, W: np.ndarray, need_dx: bool = True, need_db: bool = True
    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
        """``(dx, dW, db)`` for ``dy`` (N, O, OH, OW) after :meth:`forward`; ``None`` for what is not needed."""
        o = self.out_channels
        dy_t = self._dy_chwn(dy)
        dy_2d = dy_t.reshape(o, self.pixels)
        db = dy_2d.sum(axis=1) if need_db else None
        dW = self._dW_by_gemv(dy_2d) if self.dW_kernel == "gemv" else self._dW_by_gemm(dy_2d)
        dx = None
        if need_dx:
            dx = self._dx_by_rows(dy_2d, W) if self.dx_kernel == "rows" else self._dx_by_stacked_dy(dy_t, W)
        return dx, dW, db

    def input_grad(self, dy: np.ndarray, W: np.ndarray) -> np.ndarray:
        """``dx`` alone for ``dy`` (N, O, OH, OW): the adjoint of :meth:`forward`, which it does not need first.

        A transposed convolution's forward pass (see ``neurons.TransposedConvolution``).
        """
        dy_t = self._dy_chwn(dy)
        if self.dx_kernel == "rows":
            return self._dx_by_rows(dy_t.reshape(self.out_channels, self.pixels), W)
        return self._dx_by_stacked_dy(dy_t, W)

    def _dy_chwn(self, dy: np.ndarray) -> np.ndarray:
        """``dy`` as a C-contiguous (O, OH, OW, N) array: the order of y, and of dy after ReLU."""
        dy_t = dy.transpose(1, 2, 3, 0)
        if not dy_t.flags.c_contiguous:
            np.copyto(self._dy, dy_t)
            dy_t = self._dy
        return dy_t

    def _dW_by_gemv(self, dy_2d: np.ndarray) -> np.ndarray:
        kh, o = self.geom.kh, self.out_channels
        dW_rows = np.empty((kh, o, self.taps_k), self.dtype)
        for p in range(kh):
            U_p = self._U_p(p)
            for k in range(o):
                np.matmul(U_p, dy_2d[k], out=dW_rows[p, k])
        return dW_rows.reshape(kh, o, -1, self.geom.kw).transpose(1, 2, 0, 3).copy()

    def _dW_by_gemm(self, dy_2d: np.ndarray) -> np.ndarray:
        kh, o = self.geom.kh, self.out_channels
        # dy_2d.T read in place (BLAS's transposed operand): the transposing copy this replaces
        # cost more than it saved: zoo.resnet's eight convolutions, one thread, old and new
        # alternating in one process, median CPU time 40.3 -> 37.7 ms in all (stem 9.6 -> 7.8 ms;
        # one layer, 64->64 at 7x7, 5.7 -> 6.0 ms).
        dy_pixels_major = dy_2d.T  # (pixels, O)
        dW_rows = np.empty((kh, self.taps_k, o), self.dtype)
        for p in range(kh):
            np.matmul(self._U_p(p), dy_pixels_major, out=dW_rows[p])
        return dW_rows.reshape(kh, -1, self.geom.kw, o).transpose(3, 1, 0, 2).copy()

    def _dx_in_row_blocks(self, fill_Z: Callable[[int, int, np.ndarray], None]) -> np.ndarray:
        """``dx`` from ``Z[c, q, h, j, n] = sum_{o, p} W[o, c, p, q] dy[o, h - p*dh, j, n]``, block by block.

        ``fill_Z(h0, h1, Z)`` writes the rows ``h0:h1`` of ``Z`` (as (C*kw, (h1-h0)*OW*N)); then
        the width part of the adjoint adds them up: ``dxp[c, h, j*sw + q*dw, n] += Z[c, q, h, j, n]``.
        Blocks of rows keep ``Z`` in cache (and give BLAS products of a size it threads well:
        one whole-image product ran 2.5x slower on two threads than on one).
        """
        n, c, h, w = self.x_shape
        kw, ow = self.geom.kw, self.ow
        sw, dw = self.geom.stride[1], self.geom.dilation[1]
        pt, _, pl, _ = self.geom.padding
        row = ow * n  # floats per row of Z, per (c, q)
        if self._Z is None:
            self._Z = np.empty((self.taps_k, self._dx_block_rows * row), self.dtype)
        dxp = np.zeros((c, self.hp, self.wp, n), self.dtype)
        for h0 in range(0, self.hp, self._dx_block_rows):
            h1 = min(h0 + self._dx_block_rows, self.hp)
            Z = self._Z[:, : (h1 - h0) * row]
            fill_Z(h0, h1, Z)
            Z = Z.reshape(c, kw, h1 - h0, ow, n)
            for q in range(kw):
                dxp[:, h0:h1, q * dw : q * dw + sw * (ow - 1) + 1 : sw, :] += Z[:, q]
        return dxp[:, pt : pt + h, pl : pl + w, :].transpose(3, 0, 1, 2)

    def _dx_by_rows(self, dy_2d: np.ndarray, W: np.ndarray) -> np.ndarray:
        """For each kernel row p, ``Z[:, :, rows i + p*dh] += W_p.T @ dy[:, rows i]``: the adjoint of the forward."""
        kh, o, oh = self.geom.kh, self.out_channels, self.oh
        dh, row = self.geom.dilation[0], self.ow * self.x_shape[0]
        W_rows_t = W.transpose(2, 1, 3, 0).reshape(kh, self.taps_k, o)  # W_p.T
        if self._Z_partial is None:
            self._Z_partial = np.empty((self.taps_k, self._dx_block_rows * row), self.dtype)

        def fill_Z(h0: int, h1: int, Z: np.ndarray) -> None:
            Z.fill(0)
            for p in range(kh):
                i0, i1 = max(0, h0 - p * dh), min(oh, h1 - p * dh)  # rows of dy that land in h0:h1
                if i0 >= i1:
                    continue
                partial = self._Z_partial[:, : (i1 - i0) * row]
                np.matmul(W_rows_t[p], dy_2d[:, i0 * row : i1 * row], out=partial)
                Z[:, (i0 + p * dh - h0) * row : (i1 + p * dh - h0) * row] += partial

        return self._dx_in_row_blocks(fill_Z)

    def _dx_by_stacked_dy(self, dy_t: np.ndarray, W: np.ndarray) -> np.ndarray:
        """One matrix product over (output channel, kernel row) per block of rows.

        ``D[o, p, h] = dy[o, h - p*dh]`` (zero outside) stacks the kernel rows of ``dy``, so that
        ``Z[c, q] = sum_{o, p} W[o, c, p, q] D[o, p]`` is a (C*kw, O*kh) @ (O*kh, rows*OW*N) product.
        Cheaper than :meth:`_dx_by_rows` when there are few output channels and many kernel rows.
        """
        n = self.x_shape[0]
        kh, o, oh = self.geom.kh, self.out_channels, self.oh
        dh = self.geom.dilation[0]
        margin = (kh - 1) * dh
        if self._dy_padded is None:
            self._dy_padded = np.zeros((o, oh + 2 * margin, self.ow, n), self.dtype)  # zero rows stay zero
            self._D = np.empty((o, kh, self.hp, self.ow, n), self.dtype)
        self._dy_padded[:, margin : margin + oh] = dy_t
        start = self._dy_padded[:, margin:]
        s_o, s_h, s_j, s_n = start.strides
        np.copyto(self._D, as_strided(start, self._D.shape, (s_o, -dh * s_h, s_h, s_j, s_n)))
        W_stacked = W.transpose(1, 3, 0, 2).reshape(self.taps_k, o * kh)

        def fill_Z(h0: int, h1: int, Z: np.ndarray) -> None:
            np.matmul(W_stacked, self._D[:, :, h0:h1].reshape(o * kh, -1), out=Z)

        return self._dx_in_row_blocks(fill_Z)


# -- grouped and depthwise convolution --------------------------------------------------------
# torch's ``groups``: the C input channels and O output channels are split into ``groups``
# consecutive blocks; output block g sees only input block g. ``W`` is (O, C/groups, kh, kw).
# Depthwise is groups = C: every output channel sees one input channel, output channel
# ``c*m + j`` (j < m = O/C) the input channel c.


def check_groups(in_channels: int | None, out_channels: int, groups: int, layer: str) -> None:
    """ValueError naming the layer unless ``groups`` divides both channel counts (``None``: not known yet).

    Args:
        in_channels: the input channel count, or None when not known yet.
        out_channels: the output channel count.
        groups: the number of groups.
        layer: the layer's name, for the error message.

    Example:
        >>> check_groups(4, 8, 2, "Conv2D")  # fine: returns None
        >>> check_groups(4, 6, 4, "Conv2D")
        Traceback (most recent call last):
        ...
        ValueError: Conv2D: out_channels (6) must be divisible by groups (4)
    """
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"{layer}: groups must be a positive int, got {groups!r}")
    if out_channels % groups:
        raise ValueError(f"{layer}: out_channels ({out_channels}) must be divisible by groups ({groups})")
    if in_channels is not None and in_channels % groups:
        raise ValueError(f"{layer}: in_channels ({in_channels}) must be divisible by groups ({groups})")


def grouped_conv2d_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray | None, geom: ConvGeometry, groups: int) -> np.ndarray:
    """Reference grouped convolution: :func:`conv2d_forward` on each block of channels.

    Args:
        x: the input, (N, C, H, W).
        W: the kernel, (O, C/groups, kh, kw).
        b: the bias, (O,), or None.
        geom: the convolution's :class:`ConvGeometry`.
        groups: the number of groups (dividing C and O).

    Returns:
        ``y``, (N, O, OH, OW).

    Example:
        >>> x = np.stack([np.ones((3, 3)), 2 * np.ones((3, 3))])[None]  # (1, 2, 3, 3)
        >>> g = ConvGeometry(kh=2, kw=2, stride=(1, 1), dilation=(1, 1), padding=(0, 0, 0, 0))
        >>> y = grouped_conv2d_forward(x, np.ones((2, 1, 2, 2)), None, g, groups=2)
        >>> y.shape, float(y[0, 0, 0, 0]), float(y[0, 1, 0, 0])
        ((1, 2, 2, 2), 4.0, 8.0)
    """
    cg, og = W.shape[1], W.shape[0] // groups
    ys = [conv2d_forward(x[:, g * cg : (g + 1) * cg], W[g * og : (g + 1) * og], None, geom)[0] for g in range(groups)]
    y = np.concatenate(ys, axis=1)
    return y if b is None else y + b[:, None, None]


def grouped_conv2d_backward(
    dy: np.ndarray, x: np.ndarray, W: np.ndarray, geom: ConvGeometry, groups: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference gradients of :func:`grouped_conv2d_forward`: :func:`conv2d_backward` on each block.

    Args:
        dy: ``dL/dy``, (N, O, OH, OW).
        x: the forward input, (N, C, H, W).
        W: the kernel, (O, C/groups, kh, kw).
        geom: the convolution's :class:`ConvGeometry`.
        groups: the number of groups.

    Returns:
        ``dx`` (N, C, H, W), ``dW`` (O, C/groups, kh, kw) and ``db`` (O,).

    Example:
        >>> x = np.stack([np.ones((3, 3)), 2 * np.ones((3, 3))])[None]
        >>> g = ConvGeometry(kh=2, kw=2, stride=(1, 1), dilation=(1, 1), padding=(0, 0, 0, 0))
        >>> dx, dW, db = grouped_conv2d_backward(np.ones((1, 2, 2, 2)), x, np.ones((2, 1, 2, 2)), g, 2)
        >>> dW[:, 0, 0, 0], db
        (array([4., 8.]), array([4., 4.]))
    """
    cg, og = W.shape[1], W.shape[0] // groups
    dxs, dWs = [], []
    for g in range(groups):
        xg = x[:, g * cg : (g + 1) * cg]
        dx, dW, _ = conv2d_backward(dy[:, g * og : (g + 1) * og], im2col(xg, geom), xg.shape, W[g * og : (g + 1) * og], geom)
        dxs.append(dx)
        dWs.append(dW)
    return np.concatenate(dxs, axis=1), np.concatenate(dWs, axis=0), dy.sum(axis=(0, 2, 3))


class GroupedConv2dPlan:
    """The fast grouped convolution (any stride, dilation and padding) for one input shape.

    Same interface as :class:`Conv2dPlan` (``forward``, ``backward``, ``input_grad``), same
    batch-innermost (C, H, W, N) working layout, results returned as (N, C, H, W) views of it.
    Two kernels:

    * depthwise (one input channel per group): a direct sum over the ``kh * kw`` kernel taps,
      ``y[c, j] = sum_{p,q} W[c*m + j, 0, p, q] * xp[c, rows_p, cols_q]``, one scalar-times-array
      product per tap and channel, reading the input in place (im2col would copy it ``kh * kw``
      times to feed a matrix product of inner dimension ``kh * kw``). With stride 1 the output
      is computed on the padded input's full width (``OH * Wp * N`` pixels, the ``Wp - OW``
      extra columns thrown away), where every tap is a *contiguous* slice of the flattened
      channel, ``x_flat[c, offset(p, q) : offset(p, q) + OH*Wp*N]``: NumPy runs a contiguous
      product about twice as fast as the same product over a strided view (measured: 8.5 vs
      16 us for 28 rows of 1792 float32). dW is then one dot product per tap and channel, and
      dx the adjoint, the same slices scatter-added. Other strides use strided views of
      blocks of channels.
    * otherwise: im2col per group, ``cols`` (G, C/G * kh * kw, OH*OW*N), and one batched matrix
      product ``(G, O/G, C/G*kh*kw) @ cols``; dW and dx the same way, dx through col2im.

    ``U``-style buffers (the padded input, ``cols``) are overwritten by every ``forward`` and
    read by the ``backward`` that follows; returned arrays are fresh.

    Args:
        x_shape: ``(N, C, H, W)`` of the inputs it will see.
        out_channels: O, the number of output channels.
        geom: the convolution's :class:`ConvGeometry`.
        groups: the number of groups (dividing C and O; ``groups == C`` is depthwise).
        dtype: the dtype of inputs and weights.
        block_bytes: the size of a block of channels for the strided depthwise kernel (default: chosen here).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x, W = rng.normal(size=(2, 4, 5, 5)), rng.normal(size=(8, 1, 3, 3))  # depthwise, multiplier 2
        >>> g = ConvGeometry(kh=3, kw=3, stride=(2, 2), dilation=(1, 1), padding=(1, 1, 1, 1))
        >>> plan = GroupedConv2dPlan(x.shape, 8, g, groups=4, dtype=np.float64)
        >>> bool(np.allclose(plan.forward(x, W, None), grouped_conv2d_forward(x, W, None, g, 4)))
        True
    """

    def __init__(self, x_shape: tuple[int, int, int, int], out_channels: int, geom: ConvGeometry, groups: int,
                 dtype: np.dtype, block_bytes: int | None = None) -> None:
        n, c, h, w = x_shape
        check_groups(c, out_channels, groups, "GroupedConv2dPlan")
        self.x_shape = tuple(x_shape)
        self.out_channels = o = int(out_channels)
        self.groups = g = int(groups)
        self.geom = geom
        self.dtype = dtype = np.dtype(dtype)
        self.oh, self.ow = oh, ow = geom.output_hw(h, w)
        pt, pb, pl, pr = geom.padding
        self.hp, self.wp = h + pt + pb, w + pl + pr
        self.depthwise = c == g
        self.multiplier = o // g  # output channels per group
        self._xpad = np.zeros((c, self.hp, self.wp, n), dtype)  # zero borders written once
        self._source: np.ndarray | None = None  # the padded input of the last forward
        self._dy = np.empty((o, oh, ow, n), dtype)
        self.flat = self.depthwise and geom.stride == (1, 1)
        if self.flat:
            kh, kw = geom.kh, geom.kw
            (dh, dw), wp = geom.dilation, self.wp
            self._frame = self.hp * wp * n  # one padded channel, flattened
            self._L = oh * wp * n  # output pixels on the full padded width
            # The last tap reads (kw - 1) * dw columns past the frame: a zero tail.
            self._xflat = np.zeros((c, self._frame + (kw - 1) * dw * n), dtype)
            self._offsets = [(p * dh * wp + q * dw) * n for p in range(kh) for q in range(kw)]
            # Blocks of channels whose slices take <= 256 KiB (one channel of a 28x28 batch of 64
            # already does): large images go channel by channel, small ones many channels per call.
            self._block = max(1, min(c, (block_bytes or 256 << 10) // (self._L * dtype.itemsize)))
            self._tmp = np.empty((self._block, self._L), dtype)
            self._dy_wide = np.zeros((o, oh, wp, n), dtype)  # columns OW.. stay zero
        elif self.depthwise:
            # Blocks of channels whose output (and product buffer) take <= 256 KiB: larger
            # blocks fall out of L2 on the benchmark's 28x28x64 images.
            per_channel = self.multiplier * oh * ow * n * dtype.itemsize
            self._block = max(1, min(c, (block_bytes or 256 << 10) // max(per_channel, 1)))
            self._tmp = np.empty((self._block, self.multiplier, oh, ow, n), dtype)
        else:
            self._cols = np.empty((g, (c // g) * geom.kh * geom.kw, oh * ow * n), dtype)

    # -- shared pieces -----------------------------------------------------------------------
    def _pad(self, x: np.ndarray) -> np.ndarray:
        n, c, h, w = self.x_shape
        pt, _, pl, _ = self.geom.padding
        x_chwn = x.transpose(1, 2, 3, 0)
        if self.flat:
            self._xflat[:, : self._frame].reshape(c, self.hp, self.wp, n)[:, pt : pt + h, pl : pl + w] = x_chwn
            return self._xflat
        if not self.depthwise and not any(self.geom.padding) and x_chwn.flags.c_contiguous:
            return x_chwn  # batch-innermost already, and only read during the forward (into cols)
        self._xpad[:, pt : pt + h, pl : pl + w, :] = x_chwn
        return self._xpad

    def _tap(self, a: np.ndarray, p: int, q: int) -> np.ndarray:
        """Tap ``(p, q)`` of every window of ``a`` (C, Hp, Wp, N), a view (C, OH, OW, N)."""
        rows, columns = _tap_slices(p, q, self.oh, self.ow, self.geom)
        return a[:, rows, columns]

    def _dy_chwn(self, dy: np.ndarray) -> np.ndarray:
        dy_t = dy.transpose(1, 2, 3, 0)
        if not dy_t.flags.c_contiguous:
            np.copyto(self._dy, dy_t)
            dy_t = self._dy
        return dy_t

    def _unpad(self, dxp: np.ndarray) -> np.ndarray:
        n, c, h, w = self.x_shape
        pt, _, pl, _ = self.geom.padding
        return dxp[:, pt : pt + h, pl : pl + w, :].transpose(3, 0, 1, 2)

    def _blocks(self) -> range:
        return range(0, self.x_shape[1], self._block)

    # -- passes ------------------------------------------------------------------------------
    def forward(self, x: np.ndarray, W: np.ndarray, b: np.ndarray | None) -> np.ndarray:
        """``y`` (N, O, OH, OW) for ``x`` (N, C, H, W) in any memory order."""
        n = self.x_shape[0]
        o, oh, ow = self.out_channels, self.oh, self.ow
        self._source = source = self._pad(x)
        if not self.depthwise:
            g, kh, kw = self.groups, self.geom.kh, self.geom.kw
            cols = self._cols.reshape(self.x_shape[1], kh, kw, oh, ow, n)
            for p in range(kh):
                for q in range(kw):
                    np.copyto(cols[:, p, q], self._tap(source, p, q))
            y = np.matmul(W.reshape(g, o // g, -1), self._cols).reshape(o, oh * ow * n)
            if b is not None:
                y += b[:, None]
            return y.reshape(o, oh, ow, n).transpose(3, 0, 1, 2)
        m = self.multiplier
        if self.flat:
            return self._flat_forward(source, W, b)
        y = np.empty((self.x_shape[1], m, oh, ow, n), self.dtype)
        Wt = W.reshape(-1, m, self.geom.kh * self.geom.kw)[..., None, None, None]  # (C, m, taps, 1, 1, 1)
        bias = None if b is None else b.reshape(-1, m, 1, 1, 1)
        for c0 in self._blocks():
            c1 = min(c0 + self._block, self.x_shape[1])
            y_block, tmp = y[c0:c1], self._tmp[: c1 - c0]
            for t in range(self.geom.kh * self.geom.kw):
                tap = self._tap(source[c0:c1], t // self.geom.kw, t % self.geom.kw)[:, None]
                if t == 0:
                    np.multiply(tap, Wt[c0:c1, :, t], out=y_block)
                else:
                    np.multiply(tap, Wt[c0:c1, :, t], out=tmp)
                    y_block += tmp
            if bias is not None:
                y_block += bias[c0:c1]
        return y.reshape(o, oh, ow, n).transpose(3, 0, 1, 2)

    def backward(
        self, dy: np.ndarray, W: np.ndarray, need_dx: bool = True, need_db: bool = True
    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
        """``(dx, dW, db)`` for ``dy`` (N, O, OH, OW) after :meth:`forward`; ``None`` for what is not needed."""
        o = self.out_channels
        dy_t = self._dy_chwn(dy)
        db = dy_t.reshape(o, -1).sum(axis=1) if need_db else None
        if self._source is None:
            raise RuntimeError("GroupedConv2dPlan: backward needs a forward first")
        if not self.depthwise:
            g = self.groups
            dy_g = dy_t.reshape(g, o // g, -1)
            dW = np.matmul(dy_g, self._cols.transpose(0, 2, 1)).reshape(W.shape)
        elif self.flat:
            dW = self._flat_dW(self._widen(dy_t), W)
        else:
            dW = self._depthwise_dW(dy_t, W)
        dx = self._input_grad(dy_t, W, widened=self.flat) if need_dx else None
        return dx, dW, db

    # -- depthwise, stride 1: contiguous slices of the flattened channels ----------------------
    def _flat_forward(self, source: np.ndarray, W: np.ndarray, b: np.ndarray | None) -> np.ndarray:
        n, c = self.x_shape[:2]
        m, o, L = self.multiplier, self.out_channels, self._L
        Wt = W.reshape(c, m, -1, 1)  # (C, m, taps, 1): one scalar per row of a block
        wide = np.empty((c, m, L), self.dtype)
        for c0 in self._blocks():
            c1 = min(c0 + self._block, c)
            x_b, tmp = source[c0:c1], self._tmp[: c1 - c0]
            for j in range(m):
                out = wide[c0:c1, j]
                for t, offset in enumerate(self._offsets):
                    if t == 0:
                        np.multiply(x_b[:, offset : offset + L], Wt[c0:c1, j, t], out=out)
                    else:
                        np.multiply(x_b[:, offset : offset + L], Wt[c0:c1, j, t], out=tmp)
                        out += tmp
        valid = wide.reshape(o, self.oh, self.wp, n)[:, :, : self.ow]
        y = np.empty((o, self.oh, self.ow, n), self.dtype)
        if b is None:
            np.copyto(y, valid)
        else:
            np.add(valid, b[:, None, None, None], out=y)
        return y.transpose(3, 0, 1, 2)

    def _widen(self, dy_t: np.ndarray) -> np.ndarray:
        """``dy`` on the full padded width (zeros in the extra columns), flattened: (C, m, OH*Wp*N)."""
        self._dy_wide[:, :, : self.ow] = dy_t
        return self._dy_wide.reshape(self.x_shape[1], self.multiplier, self._L)

    def _flat_dW(self, dy_wide: np.ndarray, W: np.ndarray) -> np.ndarray:
        c, m, L = self.x_shape[1], self.multiplier, self._L
        dW = np.empty((len(self._offsets), c, m, 1), self.dtype)
        for c0 in self._blocks():
            c1 = min(c0 + self._block, c)
            x_b, dy_b = self._source[c0:c1], dy_wide[c0:c1]
            for t, offset in enumerate(self._offsets):  # one (m, L) @ (L, 1) product per channel
                np.matmul(dy_b, x_b[:, offset : offset + L, None], out=dW[t, c0:c1])
        return np.ascontiguousarray(dW[..., 0].transpose(1, 2, 0)).reshape(W.shape)

    def _flat_input_grad(self, dy_wide: np.ndarray, W: np.ndarray) -> np.ndarray:
        n, c, h, w = self.x_shape
        m, L = self.multiplier, self._L
        pt, _, pl, _ = self.geom.padding
        Wt = W.reshape(c, m, -1, 1)
        dx_flat = np.zeros(self._xflat.shape, self.dtype)
        for c0 in self._blocks():
            c1 = min(c0 + self._block, c)
            dx_b, tmp = dx_flat[c0:c1], self._tmp[: c1 - c0]
            for j in range(m):
                for t, offset in enumerate(self._offsets):
                    np.multiply(dy_wide[c0:c1, j], Wt[c0:c1, j, t], out=tmp)
                    target = dx_b[:, offset : offset + L]
                    target += tmp
        dxp = dx_flat[:, : self._frame].reshape(c, self.hp, self.wp, n)
        return dxp[:, pt : pt + h, pl : pl + w].transpose(3, 0, 1, 2)

    def input_grad(self, dy: np.ndarray, W: np.ndarray) -> np.ndarray:
        """``dx`` alone for ``dy``: the adjoint of :meth:`forward`, which it does not need first."""
        return self._input_grad(self._dy_chwn(dy), W)

    def _depthwise_dW(self, dy_t: np.ndarray, W: np.ndarray) -> np.ndarray:
        """``dW[c*m + j, 0, p, q] = <dy[c*m + j], tap (p, q) of x[c]>``, one product and sum per tap and block."""
        c, m, kw, taps = self.x_shape[1], self.multiplier, self.geom.kw, self.geom.kh * self.geom.kw
        dy_c = dy_t.reshape(c, m, self.oh, self.ow, -1)
        dW = np.empty((c, m, taps), self.dtype)
        for c0 in self._blocks():
            c1 = min(c0 + self._block, c)
            tmp = self._tmp[: c1 - c0]
            for t in range(taps):
                np.multiply(self._tap(self._source[c0:c1], t // kw, t % kw)[:, None], dy_c[c0:c1], out=tmp)
                dW[c0:c1, :, t] = tmp.reshape(c1 - c0, m, -1).sum(axis=2)
        return dW.reshape(W.shape)

    def _input_grad(self, dy_t: np.ndarray, W: np.ndarray, widened: bool = False) -> np.ndarray:
        if self.flat:  # ``widened``: _widen(dy_t) is already in its buffer (backward filled it for dW)
            dy_wide = self._dy_wide.reshape(self.x_shape[1], self.multiplier, self._L) if widened else self._widen(dy_t)
            return self._flat_input_grad(dy_wide, W)
        n, c = self.x_shape[:2]
        kh, kw = self.geom.kh, self.geom.kw
        dxp = np.zeros((c, self.hp, self.wp, n), self.dtype)
        if not self.depthwise:
            g, o = self.groups, self.out_channels
            W_t = W.reshape(g, o // g, -1).transpose(0, 2, 1)  # (G, C/G*kh*kw, O/G)
            dcols = np.matmul(W_t, dy_t.reshape(g, o // g, -1)).reshape(c, kh, kw, self.oh, self.ow, n)
            for p in range(kh):
                for q in range(kw):
                    self._tap(dxp, p, q)[...] += dcols[:, p, q]
            return self._unpad(dxp)
        m = self.multiplier
        dy_c = dy_t.reshape(c, m, self.oh, self.ow, n)
        Wt = W.reshape(c, m, kh * kw)
        share = np.empty((self._block, 1, self.oh, self.ow, n), self.dtype)
        for c0 in self._blocks():
            c1 = min(c0 + self._block, c)
            for t in range(kh * kw):
                if m == 1:  # dx tap = w * dy
                    np.multiply(dy_c[c0:c1], Wt[c0:c1, :, t, None, None, None], out=share[: c1 - c0])
                else:  # dx tap = sum_j w_j * dy_j: a (1, m) @ (m, pixels) product per channel
                    np.matmul(Wt[c0:c1, None, :, t], dy_c[c0:c1].reshape(c1 - c0, m, -1),
                              out=share[: c1 - c0].reshape(c1 - c0, 1, -1))
                self._tap(dxp[c0:c1], t // kw, t % kw)[...] += share[: c1 - c0, 0]
        return self._unpad(dxp)


def conv_plan(x_shape: tuple[int, int, int, int], out_channels: int, geom: ConvGeometry, groups: int,
              dtype: np.dtype) -> Conv2dPlan | GroupedConv2dPlan:
    """The fast plan for a convolution: :class:`Conv2dPlan` where it applies (one group, stride 1
    along the height), :class:`GroupedConv2dPlan` otherwise (any groups, stride and dilation).

    Args:
        x_shape: ``(N, C, H, W)``.
        out_channels: O.
        geom: the convolution's :class:`ConvGeometry`.
        groups: the number of groups.
        dtype: the dtype of inputs and weights.

    Example:
        >>> g = ConvGeometry(kh=3, kw=3, stride=(1, 1), dilation=(1, 1), padding=(1, 1, 1, 1))
        >>> type(conv_plan((8, 3, 28, 28), 16, g, 1, np.float32)).__name__
        'Conv2dPlan'
        >>> type(conv_plan((8, 4, 28, 28), 4, g, 4, np.float32)).__name__
        'GroupedConv2dPlan'
    """
    if groups == 1 and fast_conv_supported(geom):
        return Conv2dPlan(x_shape, out_channels, geom, dtype)
    return GroupedConv2dPlan(x_shape, out_channels, geom, groups, dtype)


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


# -- pooling --------------------------------------------------------------------------------
# The pooling kernels loop over the kh * kw window taps only; each iteration is one strided
# operation over the whole batch and all channels. Tap ``t`` is window element ``(t // kw, t % kw)``.


def _tap_slices(p: int, q: int, oh: int, ow: int, geom: ConvGeometry) -> tuple[slice, slice]:
    """Where tap ``(p, q)`` of every window lies in the padded input: ``(rows, columns)``."""
    sh, sw = geom.stride
    dh, dw = geom.dilation
    return slice(p * dh, p * dh + sh * (oh - 1) + 1, sh), slice(q * dw, q * dw + sw * (ow - 1) + 1, sw)


def max_pool2d_forward(x: np.ndarray, geom: ConvGeometry) -> tuple[np.ndarray, np.ndarray]:
    """``y[n, c, i, j] = max`` of the window at ``(i, j)``, the input padded with ``-inf``.

    Returns ``(y, argmax)``; ``argmax`` (N, C, OH, OW) holds the tap index of the maximum.
    Ties go to the *first* maximal tap in row-major window order, as in PyTorch's CPU
    ``max_pool2d``. A NaN in a window makes its output NaN and its ``argmax`` the window's last
    NaN; a window whose elements are all ``-inf`` has its first element (not padding) as
    ``argmax``. Both as in torch: the gradient never lands on padding, where it would be lost.

    Args:
        x: the input, (N, C, H, W).
        geom: the pooling's :class:`ConvGeometry`.

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
    y = windows[..., 0, 0].copy(order="K")
    taps = geom.kh * geom.kw
    argmax = np.zeros_like(y, dtype=np.uint8 if taps <= 256 else np.int32)
    better = np.empty_like(y, dtype=bool)
    for t in range(1, taps):
        tap = windows[..., t // geom.kw, t % geom.kw]
        np.greater(tap, y, out=better)
        np.maximum(y, tap, out=y)
        # argmax = where(better, t, argmax), as bit operations: a masked copy is ~10x slower.
        all_ones = -better.astype(argmax.dtype)
        argmax ^= (argmax ^ argmax.dtype.type(t)) & all_ones
    if not np.isfinite(y).all():  # rare: fix those windows up here rather than test every tap above
        all_minus_inf = np.isneginf(y)
        if all_minus_inf.any() and any(geom.padding):  # -inf padding tied with -inf elements and won
            inside = pool_windows(pad2d(np.ones((1, 1) + x.shape[2:], dtype=bool), geom.padding, False), geom)
            for t in reversed(range(taps)):
                argmax[all_minus_inf & inside[..., t // geom.kw, t % geom.kw]] = t
        for t in range(taps):
            argmax[np.isnan(windows[..., t // geom.kw, t % geom.kw])] = t
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
    n, c, h, w = x_shape
    pt, pb, pl, pr = geom.padding
    oh, ow = dy.shape[2:]
    dxp = zeros_in_layout_of(argmax, (n, c, h + pt + pb, w + pl + pr), dy.dtype)  # x's memory order
    overlapping = geom.stride[0] < geom.kh or geom.stride[1] < geom.kw
    # dy * [argmax == t] is ~10x faster than np.where, but inf * 0 would be NaN: only when finite.
    finite = bool(np.isfinite(dy).all())
    share = np.empty_like(argmax, dtype=dy.dtype)
    if share.strides != dy.strides:  # one transposing copy beats kh*kw strided products
        np.copyto(share, dy)
        dy, share = share, np.empty_like(share)
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


def avg_pool2d_forward(x: np.ndarray, geom: ConvGeometry, divisor: np.ndarray) -> np.ndarray:
    """``y[n, c, i, j] = (sum of the zero-padded window at (i, j)) / divisor[i, j]``.

    Args:
        x: the input, (N, C, H, W).
        geom: the pooling's :class:`ConvGeometry`.
        divisor: :func:`avg_pool2d_divisor`'s ``(OH, OW)``.

    Returns:
        ``y``, (N, C, OH, OW).

    Example:
        >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
        >>> g = ConvGeometry(kh=2, kw=2, stride=(2, 2), dilation=(1, 1), padding=(0, 0, 0, 0))
        >>> d = avg_pool2d_divisor(4, 4, g, True, np.float64)
        >>> avg_pool2d_forward(x, g, d)[0, 0]
        array([[ 2.5,  4.5],
               [10.5, 12.5]])
    """
    y = _window_sums(pad2d(x, geom.padding), geom)
    y /= divisor
    return y


def avg_pool2d_backward(
    dy: np.ndarray, x_shape: tuple[int, int, int, int], geom: ConvGeometry, divisor: np.ndarray
) -> np.ndarray:
    """Adjoint of :func:`avg_pool2d_forward`: every window element gets ``dy / divisor``; overlaps add up.

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
        >>> avg_pool2d_backward(np.ones((1, 1, 2, 2)), (1, 1, 4, 4), g, d)[0, 0]
        array([[0.25, 0.25, 0.25, 0.25],
               [0.25, 0.25, 0.25, 0.25],
               [0.25, 0.25, 0.25, 0.25],
               [0.25, 0.25, 0.25, 0.25]])
    """
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


# -- special functions (GELU) ---------------------------------------------------------------
# erf and erfc without SciPy. |x| < 1: erf(x) = x * P(x^2); |x| >= 1:
# erfc(|x|) = exp(-x^2) * erfcx(|x|) with erfcx(x) = exp(x^2) erfc(x), a smooth, slowly varying
# function, on the octaves [1, 2), [2, 4), ..., [16, 32) (beyond 26.6 erfc underflows to 0).
# P and erfcx are Chebyshev series computed for this module with mpmath at 50 digits (nodes
# of the first kind, 80 points, truncated below 1e-19 of the function's size); tests hold
# erf/erfc to math.erf/math.erfc within a few ulps.
_ERF_SMALL = np.array([
    0.9754769393826541, -0.14226120510371365, 0.010035582187599796, -0.0005768764699767485,
    2.741993125219606e-05, -1.1043175507344507e-06, 3.8488755420345036e-08, -1.1808582533875466e-09,
    3.2334215826050907e-11, -7.991015947004549e-13, 1.7990725113961456e-14, -3.718635487818693e-16,
    7.103599003714253e-18, -1.2612455119155226e-19,
])
_ERFCX_1_2 = np.array([
    0.331427281639452, -0.0850021377067432, 0.009951127341466115, -0.0010810888102208325,
    0.0001102324363119495, -1.0636830518218601e-05, 9.775012680479055e-07, -8.597922867888315e-08,
    7.2677084117248425e-09, -5.923543840592542e-10, 4.6683928572294154e-11, -3.56612770156775e-12,
    2.6458779519104523e-13, -1.9101658673527567e-14, 1.343976588479829e-15, -9.228790549094326e-17,
    6.19267308464391e-18, -4.0652224326488762e-19,
])
_ERFCX_2_4 = np.array([
    0.1874295690262241, -0.05794652883669097, 0.008595247387396534, -0.0012284613640242594,
    0.00016974366686180488, -2.2738329337044562e-05, 2.959844378804878e-06, -3.7513575581379714e-07,
    4.6372828761738244e-08, -5.599455392564088e-09, 6.613160896679916e-10, -7.648271522199816e-11,
    8.670904325876594e-12, -9.645456274382108e-13, 1.0536827959360625e-13, -1.1312630906760667e-14,
    1.1945180669174577e-15, -1.241310752580407e-16, 1.270246323185436e-17, -1.280725873663855e-18,
    1.2729426443953689e-19,
])
_ERFCX_4_8 = np.array([
    0.09799557556862198, -0.03261716242283879, 0.005354444513048941, -0.0008675085617618387,
    0.0001387834577332989, -2.1933248302183236e-05, 3.425716824410705e-06, -5.289955530513349e-07,
    8.079076527537946e-08, -1.2207511691612988e-08, 1.8255151508559988e-09, -2.7024969193563974e-10,
    3.961752303537055e-11, -5.752619043200236e-12, 8.275752891382595e-13, -1.1798167744445412e-13,
    1.6671816868045593e-14, -2.335628745546585e-15, 3.244620004495789e-16, -4.470390173206754e-17,
    6.10980111227626e-18, -8.284830681274416e-19, 1.114773431757112e-19, -1.4886902126113345e-20,
])
_ERFCX_8_16 = np.array([
    0.0496402148021428, -0.016897808070160118, 0.0028652408255077657, -0.00048403293647937437,
    8.146859582420295e-05, -1.3662340878975885e-05, 2.2829539932731383e-06, -3.801224444355858e-07,
    6.30697220062995e-08, -1.0428112493713957e-08, 1.7182796156078595e-09, -2.8216353600775824e-10,
    4.617874055248115e-11, -7.532381371020102e-12, 1.2245769587090083e-12, -1.984347172176958e-13,
    3.2050951925946495e-14, -5.160235538551778e-15, 8.281647822511873e-16, -1.3249383610142047e-16,
    2.1130951179180252e-17, -3.3596913788621183e-18, 5.325359678865873e-19, -8.415496414540931e-20,
    1.3258779191883203e-20,
])
_ERFCX_16_32 = np.array([
    0.024905097353781745, -0.008528727616881514, 0.0014589152524793687, -0.00024931992222736865,
    4.256633635866193e-05, -7.2603774484576065e-06, 1.2371917610694735e-06, -2.1062066549245407e-07,
    3.5822205670485775e-08, -6.086845487205534e-09, 1.0332896203608712e-09, -1.7524389842807873e-10,
    2.969313145827533e-11, -5.026463705306691e-12, 8.500877273856693e-13, -1.4363516245993171e-13,
    2.424682046354207e-14, -4.089281370834573e-15, 6.890306193154624e-16, -1.1599266631620084e-16,
    1.950851306688945e-17, -3.2780877178913375e-18, 5.503270587994995e-19, -9.230520279493807e-20,
    1.5468123386395936e-20,
])
_ERFCX_OCTAVES = ((1.0, 2.0, _ERFCX_1_2), (2.0, 4.0, _ERFCX_2_4), (4.0, 8.0, _ERFCX_4_8), (8.0, 16.0, _ERFCX_8_16),
                  (16.0, 32.0, _ERFCX_16_32))


def _truncated(c: np.ndarray, rel: float, dtype: Any) -> np.ndarray:
    """The series without its trailing terms below ``rel * |c[0]|`` (they decay about tenfold each)."""
    keep = len(c)
    while keep > 1 and abs(c[keep - 1]) < rel * abs(c[0]):
        keep -= 1
    return c[:keep].astype(dtype)


# Per dtype: the series for |x| < 1, the octaves of erfcx (up to where erfc underflows: 26.6 in
# float64, 10.1 in float32), and the step of the split in _exp_minus_square. float32 evaluates
# in float32 with the series cut to 2^-28 of their size, about half the terms: ~4x less work.
def _monomial(c: np.ndarray, dtype: Any) -> np.ndarray:
    """The Chebyshev series of P on u in [0, 1] as coefficients of 1, u, u^2, ... for Horner's rule
    (two in-place passes a term; well conditioned here: sum |a_k| = 1.65 against P >= 0.84)."""
    return np.polynomial.Chebyshev(c, domain=[0.0, 1.0]).convert(kind=np.polynomial.Polynomial).coef.astype(dtype)


_ERF_TABLES = {
    np.dtype(np.float64): (_monomial(_ERF_SMALL, np.float64), _ERFCX_OCTAVES, 4096.0),
    np.dtype(np.float32): (_monomial(_truncated(_ERF_SMALL, 2.0**-28, np.float64), np.float32),
                           tuple((lo, hi, _truncated(c, 2.0**-28, np.float32)) for lo, hi, c in _ERFCX_OCTAVES[:4]), 64.0),
}


def _horner(u: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``sum_k a[k] u^k``, in place."""
    p = np.full_like(u, a[-1])
    for ak in a[-2::-1]:
        p *= u
        p += ak
    return p


def _chebyshev(t: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``sum_k c[k] T_k(t)`` for ``t`` in [-1, 1] (Clenshaw's recurrence, in place in three buffers)."""
    if len(c) == 1:
        return np.full_like(t, c[0])
    b0 = np.full_like(t, c[-1])  # b_n
    b1 = np.zeros_like(t)  # b_{n+1}
    b2 = np.empty_like(t)
    t2 = 2 * t
    for ck in c[-2:0:-1]:  # b_k = 2 t b_{k+1} - b_{k+2} + c_k, the three buffers rotating
        b0, b1, b2 = b2, b0, b1
        np.multiply(t2, b1, out=b0)
        b0 -= b2
        b0 += ck
    np.multiply(t, b0, out=t2)  # c_0 + t b_1 - b_2
    t2 -= b1
    t2 += c[0]
    return t2


def _exp_minus_square(a: np.ndarray, step: float) -> np.ndarray:
    """``exp(-a^2)`` without the rounding of ``a * a`` (relative error ~1e-14 at a = 10 otherwise):
    ``a = hi + lo`` with ``hi`` a multiple of ``1 / step``, so that ``hi^2`` is exact (2^-12 in
    float64, 2^-6 in float32, for the ``a`` below the cap). ``a`` is capped at 64, where the
    result has long underflowed to 0 (and inf would give inf - inf)."""
    a = np.minimum(a, 64)  # NaN stays NaN
    hi = np.floor(a * step) / step
    lo = a - hi
    return np.exp(-hi * hi) * np.exp(-lo * (a + hi))


def _erfcx_at_least_one(a: np.ndarray, octaves: tuple) -> np.ndarray:
    """``exp(a^2) erfc(a)`` for ``a >= 1``; values beyond the last octave are evaluated at its end
    (erfc has underflowed to 0 there, and exp(-a^2) with it)."""
    top = octaves[-1][1]
    a = np.minimum(a, top)
    out = np.empty_like(a)
    for lo, hi, c in octaves:
        inside = (a >= lo) & (a < hi) if hi < top else (a >= lo)
        if inside.any():
            out[inside] = _chebyshev((2 * a[inside] - (lo + hi)) / (hi - lo), c)
    return out


def _erf_parts(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x, small, erf on the small part, large, erfc(|x|) on the large part)``, in x's precision."""
    x = np.asarray(x)
    x = x if x.dtype == np.float32 else x.astype(np.float64, copy=False)
    series, octaves, step = _ERF_TABLES[x.dtype]
    a = np.abs(x)
    small = a < 1
    xs = x[small]
    large = ~small  # NaN lands here and stays NaN
    al = a[large]
    return x, small, xs * _horner(xs * xs, series), large, _exp_minus_square(al, step) * _erfcx_at_least_one(al, octaves)


def erf(x: np.ndarray) -> np.ndarray:
    """The error function, element-wise: float32 in float32, anything else in float64, within a
    few ulps (``erf(+-inf) = +-1``, NaN stays NaN).

    Args:
        x: an array (or scalar) of any shape.

    Returns:
        ``erf(x)``, same shape; float32 for float32 input, float64 otherwise.

    Example:
        >>> erf(np.array([0.0, 0.5, -1.0, np.inf]))
        array([ 0.        ,  0.52049988, -0.84270079,  1.        ])
        >>> erf(np.array([1.0], np.float32)).dtype
        dtype('float32')
    """
    x, small, erf_small, large, tail = _erf_parts(x)
    out = np.empty_like(x)
    out[small] = erf_small
    out[large] = np.copysign(1 - tail, x[large])
    return out


def erfc(x: np.ndarray) -> np.ndarray:
    """``1 - erf(x)`` without cancellation for large ``x``, dtypes as :func:`erf`
    (``erfc(-inf) = 2``, ``erfc(inf) = 0``).

    Args:
        x: an array (or scalar) of any shape.

    Returns:
        ``erfc(x)``, same shape and dtype rule as :func:`erf`.

    Example:
        >>> erfc(np.array([0.0, 1.0, 10.0, -np.inf]))
        array([1.00000000e+00, 1.57299207e-01, 2.08848758e-45, 2.00000000e+00])
    """
    x, small, erf_small, large, tail = _erf_parts(x)
    out = np.empty_like(x)
    out[small] = 1 - erf_small
    out[large] = np.where(x[large] > 0, tail, 2 - tail)
    return out


# -- upsampling (UpSampling2D) --------------------------------------------------------------
# Integer factors on NCHW. Nearest: each pixel repeated (torch's mode="nearest" and Keras'
# repeat agree for integer factors). Bilinear: torch's F.interpolate(mode="bilinear",
# align_corners=False), written as two 1-D interpolation matrices, y = A_h @ x @ A_w^T, whose
# transposes give the backward pass; upsample_bilinear2d_reference is the 4-tap formula, per
# output pixel, that the tests hold the matrices against.
def upsample_nearest2d(x: np.ndarray, factors: tuple[int, int]) -> np.ndarray:
    """``y[n, c, i, j] = x[n, c, i // fh, j // fw]``.

    Args:
        x: the input, (N, C, H, W).
        factors: ``(fh, fw)``, positive ints.

    Returns:
        ``y``, (N, C, H*fh, W*fw).

    Example:
        >>> upsample_nearest2d(np.array([[[[1.0, 2.0]]]]), (2, 2))[0, 0]
        array([[1., 1., 2., 2.],
               [1., 1., 2., 2.]])
    """
    fh, fw = factors
    return np.repeat(np.repeat(x, fh, axis=-2), fw, axis=-1)


def upsample_nearest2d_backward(dy: np.ndarray, factors: tuple[int, int]) -> np.ndarray:
    """Adjoint of :func:`upsample_nearest2d`: each input pixel gets the sum of its ``fh x fw`` block,
    as ``fw`` strided column slices added, then ``fh`` row slices (5x faster than a reshaped sum
    over the two small axes).

    Args:
        dy: ``dL/dy``, (N, C, H*fh, W*fw).
        factors: ``(fh, fw)``.

    Returns:
        ``dx``, (N, C, H, W).

    Example:
        >>> upsample_nearest2d_backward(np.arange(8.0).reshape(1, 1, 2, 4), (2, 2))[0, 0]
        array([[10., 18.]])
    """
    fh, fw = factors
    columns = dy[..., 0::fw].copy()
    for j in range(1, fw):
        columns += dy[..., j::fw]
    out = columns[..., 0::fh, :].copy()
    for i in range(1, fh):
        out += columns[..., i::fh, :]
    return out


def linear_source_taps(size: int, factor: int, dtype: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """torch's ``align_corners=False`` taps for one axis upsampled ``factor`` times:
    for each output index ``o``, ``(i0, i1, l0, l1)`` with ``y[o] = l0 * x[i0] + l1 * x[i1]``.

    ``src = max(scale * (o + 0.5) - 0.5, 0)`` with ``scale = 1 / factor`` (in the dtype's
    precision, as torch), ``i0 = min(floor(src), size - 1)``, ``i1 = i0 + 1`` except at the last
    pixel, ``l1 = src - i0``, ``l0 = 1 - l1``. A factor of 1 copies (``l0 = 1``).

    Args:
        size: the input length along the axis.
        factor: the integer upsampling factor.
        dtype: the dtype the weights are computed in.

    Returns:
        ``i0``, ``i1`` (int arrays) and ``l0``, ``l1`` (weights), each of shape ``(size * factor,)``.

    Example:
        >>> i0, i1, l0, l1 = linear_source_taps(2, 2, np.float64)
        >>> i0.tolist(), i1.tolist()
        ([0, 0, 0, 1], [1, 1, 1, 1])
        >>> l0.tolist(), l1.tolist()
        ([1.0, 0.75, 0.25, 0.75], [0.0, 0.25, 0.75, 0.25])
    """
    dtype = np.dtype(dtype)
    out = np.arange(size * factor)
    if factor == 1:
        return out, out, np.ones(size, dtype), np.zeros(size, dtype)
    scale = dtype.type(1.0 / factor)
    src = np.maximum(scale * (out.astype(dtype) + dtype.type(0.5)) - dtype.type(0.5), dtype.type(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), size - 1)
    i1 = i0 + (i0 < size - 1)
    l1 = np.clip(src - i0.astype(dtype), 0, 1).astype(dtype)
    return i0, i1, (dtype.type(1) - l1).astype(dtype), l1


def linear_interpolation_matrix(size: int, factor: int, dtype: Any) -> np.ndarray:
    """``A`` of shape ``(size * factor, size)`` with ``y = A @ x`` along one axis (see :func:`linear_source_taps`).

    Args:
        size: the input length along the axis.
        factor: the integer upsampling factor.
        dtype: the matrix's dtype.

    Example:
        >>> linear_interpolation_matrix(2, 2, np.float64)
        array([[1.  , 0.  ],
               [0.75, 0.25],
               [0.25, 0.75],
               [0.  , 1.  ]])
    """
    i0, i1, l0, l1 = linear_source_taps(size, factor, dtype)
    a = np.zeros((size * factor, size), dtype=np.dtype(dtype))
    rows = np.arange(size * factor)
    np.add.at(a, (rows, i0), l0)
    np.add.at(a, (rows, i1), l1)
    return a


def upsample_bilinear2d(x: np.ndarray, a_h: np.ndarray, a_w: np.ndarray) -> np.ndarray:
    """``y[n, c] = A_h @ x[n, c] @ A_w^T``: the width axis as one matrix product, then the height axis.

    Args:
        x: the input, (N, C, H, W).
        a_h: :func:`linear_interpolation_matrix` for the height, (H*fh, H).
        a_w: the same for the width, (W*fw, W).

    Returns:
        ``y``, (N, C, H*fh, W*fw).

    Example:
        >>> a_h, a_w = linear_interpolation_matrix(1, 2, np.float64), linear_interpolation_matrix(2, 2, np.float64)
        >>> upsample_bilinear2d(np.array([[[[0.0, 1.0]]]]), a_h, a_w)[0, 0]
        array([[0.  , 0.25, 0.75, 1.  ],
               [0.  , 0.25, 0.75, 1.  ]])
    """
    n, c, h, w = x.shape
    t = (x.reshape(n * c * h, w) @ a_w.T).reshape(n * c, h, a_w.shape[0])
    return np.matmul(a_h, t).reshape(n, c, a_h.shape[0], a_w.shape[0])


def upsample_bilinear2d_backward(dy: np.ndarray, a_h: np.ndarray, a_w: np.ndarray) -> np.ndarray:
    """Adjoint of :func:`upsample_bilinear2d`: ``dx[n, c] = A_h^T @ dy[n, c] @ A_w``.

    Args:
        dy: ``dL/dy``, (N, C, H*fh, W*fw).
        a_h: the height matrix, (H*fh, H).
        a_w: the width matrix, (W*fw, W).

    Returns:
        ``dx``, (N, C, H, W).

    Example:
        >>> a_h, a_w = linear_interpolation_matrix(1, 2, np.float64), linear_interpolation_matrix(2, 2, np.float64)
        >>> upsample_bilinear2d_backward(np.ones((1, 1, 2, 4)), a_h, a_w)[0, 0]
        array([[4., 4.]])
    """
    n, c, oh, ow = dy.shape
    t = (dy.reshape(n * c * oh, ow) @ a_w).reshape(n * c, oh, a_w.shape[1])
    return np.matmul(a_h.T, t).reshape(n, c, a_h.shape[1], a_w.shape[1])


def upsample_bilinear2d_reference(x: np.ndarray, factors: tuple[int, int]) -> np.ndarray:
    """The 4-tap formula, as torch's CPU kernel writes it:
    ``y = l0h (l0w x[h0, w0] + l1w x[h0, w1]) + l1h (l0w x[h1, w0] + l1w x[h1, w1])``.

    Args:
        x: the input, (N, C, H, W).
        factors: ``(fh, fw)``, positive ints.

    Returns:
        ``y``, (N, C, H*fh, W*fw); tests hold :func:`upsample_bilinear2d` against it.

    Example:
        >>> upsample_bilinear2d_reference(np.array([[[[0.0, 1.0]]]]), (2, 2))[0, 0]
        array([[0.  , 0.25, 0.75, 1.  ],
               [0.  , 0.25, 0.75, 1.  ]])
    """
    h, w = x.shape[-2:]
    h0, h1, l0h, l1h = linear_source_taps(h, factors[0], x.dtype)
    w0, w1, l0w, l1w = linear_source_taps(w, factors[1], x.dtype)
    rows0, rows1 = x[..., h0, :], x[..., h1, :]
    l0h, l1h = l0h[:, None], l1h[:, None]
    return l0h * (l0w * rows0[..., w0] + l1w * rows0[..., w1]) + l1h * (l0w * rows1[..., w0] + l1w * rows1[..., w1])


# -- batch norm in any memory layout ---------------------------------------------------------------
# A convolution's output is a batch-innermost view (see Conv2dPlan); NumPy's reductions over the
# axes (0, 2, 3) of such a view, and each element-wise pass over a fresh 13 MB array, run at
# memory speed on a busy machine. The fast path below sees the input's own memory as (A, C, B)
# -- B the contiguous run of one channel -- and works through a few channels at a time, so the
# statistics, x^ and y of those channels are computed while they sit in the cache: x is read
# from memory once, x^ and y written once. Outputs keep the input's memory layout.

#: Bytes of each (A, chunk, B) slice the batch-norm kernels work on at a time (half the 2 MiB L2 cache of a core here; measured 256 KiB-1 GiB, 1 MiB was best or within 5%).
BATCH_NORM_CHUNK_BYTES = 1 << 20


def channel_blocks(x: np.ndarray, axis: int = 1, min_run: int = 1) -> tuple[np.ndarray, tuple[int, ...]] | None:
    """``x`` as a view ``(A, C, B)`` of its own memory (``C = x.shape[axis]``, each ``B``-run
    contiguous), and the axis order ``perm`` by which ``x.transpose(perm)`` is C-contiguous.

    ``None`` when no such view exists (a non-contiguous slice, a broadcast) or when the runs are
    shorter than ``min_run``. E.g. a (N, C, H, W) batch-innermost view of a (C, H, W, N) buffer
    gives (1, C, H*W*N); a C-contiguous (N, C, H, W) array gives (N, C, H*W).

    Args:
        x: an array with at least 2 axes.
        axis: the channel axis.
        min_run: the shortest contiguous run ``B`` accepted.

    Returns:
        ``(v, perm)``, or None.

    Example:
        >>> v, perm = channel_blocks(np.zeros((2, 3, 4, 5)))
        >>> v.shape, perm
        ((2, 3, 20), (0, 1, 2, 3))
        >>> v, perm = channel_blocks(np.zeros((3, 4, 5, 2)).transpose(3, 0, 1, 2))  # batch innermost
        >>> v.shape, perm
        ((1, 3, 40), (1, 2, 3, 0))
        >>> channel_blocks(np.zeros((2, 3, 4, 5))[:, :, ::2]) is None
        True
    """
    if x.ndim < 2 or x.size == 0:
        return None
    perm = tuple(int(i) for i in np.argsort([-abs(s) for s in x.strides], kind="stable"))
    xt = x.transpose(perm)
    if not xt.flags.c_contiguous:
        return None
    k = perm.index(axis)
    a, b = int(np.prod(xt.shape[:k])), int(np.prod(xt.shape[k + 1 :]))
    if b < min_run:
        return None
    return xt.reshape(a, xt.shape[k], b), perm


def from_channel_blocks(v: np.ndarray, like: np.ndarray, perm: tuple[int, ...]) -> np.ndarray:
    """The inverse of :func:`channel_blocks`: ``v`` (A, C, B) as an array shaped and laid out like ``like``.

    Args:
        v: an (A, C, B) array, e.g. a result computed on :func:`channel_blocks`'s view.
        like: the array ``v`` came from (its shape and layout are used).
        perm: the ``perm`` :func:`channel_blocks` returned.

    Example:
        >>> x = np.arange(24.0).reshape(2, 3, 4)
        >>> v, perm = channel_blocks(x)
        >>> bool((from_channel_blocks(2 * v, x, perm) == 2 * x).all())
        True
    """
    return v.reshape([like.shape[i] for i in perm]).transpose(np.argsort(perm))


def _chunk_channels(v: np.ndarray) -> int:
    a, _, b = v.shape
    return max(1, BATCH_NORM_CHUNK_BYTES // max(1, a * b * v.itemsize))


def _channel_sums(v: np.ndarray) -> np.ndarray:
    """Per-channel sum of ``v`` (A, C, B): pairwise along the contiguous runs, then over A."""
    return v[0].sum(axis=1) if v.shape[0] == 1 else v.sum(axis=2).sum(axis=0)


def batch_norm_train_forward(
    v: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float, m: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Training-mode batch norm of ``v`` (A, C, B) (see :func:`channel_blocks`), channel chunk by chunk.

    Returns ``(y, x_hat, mean, sq_sum, inv_std)`` with ``y`` and ``x_hat`` shaped (A, C, B) like
    ``v``, ``sq_sum = sum((x - mean)^2)`` per channel (two passes over the cached chunk, as
    ``neurons.BatchNormalization``'s reference path), or ``None`` when a sum is not finite (values
    near the float limit: the caller falls back to its exact slow path).

    Args:
        v: the input as (A, C, B) blocks (see :func:`channel_blocks`).
        gamma: the scale, (C,).
        beta: the shift, (C,).
        eps: added to the variance.
        m: the number of samples per channel, ``A * B``.

    Example:
        >>> x = np.array([[[1.0, 3.0]], [[5.0, 7.0]]])  # (N=2, C=1, 2)
        >>> v, perm = channel_blocks(x)
        >>> y, x_hat, mean, sq_sum, inv_std = batch_norm_train_forward(v, np.ones(1), np.zeros(1), 0.0, 4)
        >>> mean, sq_sum
        (array([4.]), array([20.]))
        >>> from_channel_blocks(y, x, perm).ravel().round(4)
        array([-1.3416, -0.4472,  0.4472,  1.3416])
    """
    c = v.shape[1]
    y, x_hat = np.empty(v.shape, v.dtype), np.empty(v.shape, v.dtype)
    mean, sq_sum, inv_std = np.empty(c, v.dtype), np.empty(c, v.dtype), np.empty(c, v.dtype)
    step = _chunk_channels(v)
    for c0 in range(0, c, step):
        ch = slice(c0, c0 + step)
        xs, hs, ys = v[:, ch], x_hat[:, ch], y[:, ch]
        with np.errstate(over="ignore", invalid="ignore"):
            mu = _channel_sums(xs) / v.dtype.type(m)
            np.subtract(xs, mu[:, None], out=hs)
            sq = np.einsum("acb,acb->c", hs, hs)
        if not (np.isfinite(mu).all() and np.isfinite(sq).all()):
            return None
        mean[ch], sq_sum[ch] = mu, sq
        inv = inv_std[ch] = 1.0 / np.sqrt(sq / m + eps)
        hs *= inv[:, None]
        np.multiply(hs, gamma[ch, None], out=ys)
        ys += beta[ch, None]
    return y, x_hat, mean, sq_sum, inv_std


def batch_norm_train_backward(
    dy: np.ndarray, x_hat: np.ndarray, scale: np.ndarray, m: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dx, d_beta, d_gamma)`` of training-mode batch norm, ``dy`` and ``x_hat`` (A, C, B) alike.

    ``d_beta = sum(dy)``, ``d_gamma = sum(dy * x_hat)`` per channel and
    ``dx = scale * (dy - d_beta / m - x_hat * d_gamma / m)`` with ``scale = gamma / sqrt(var + eps)``,
    channel chunk by chunk (the reductions and dx of a chunk while it is cached).

    Args:
        dy: ``dL/dy`` as (A, C, B) blocks, laid out as ``x_hat``.
        x_hat: the normalised input from :func:`batch_norm_train_forward`, (A, C, B).
        scale: ``gamma * inv_std`` per channel, (C,).
        m: the number of samples per channel, ``A * B``.

    Returns:
        ``dx`` (A, C, B), ``d_beta`` (C,) and ``d_gamma`` (C,).

    Example:
        >>> x = np.array([[[1.0, 3.0]], [[5.0, 7.0]]])
        >>> v, perm = channel_blocks(x)
        >>> y, x_hat, mean, sq_sum, inv_std = batch_norm_train_forward(v, np.ones(1), np.zeros(1), 0.0, 4)
        >>> dx, d_beta, d_gamma = batch_norm_train_backward(np.ones_like(v), x_hat, inv_std, 4)
        >>> d_beta, bool(np.allclose(dx, 0))  # a constant dL/dy has no effect through the normalisation
        (array([4.]), True)
    """
    c = dy.shape[1]
    dx = np.empty(dy.shape, dy.dtype)
    d_beta, d_gamma = np.empty(c, dy.dtype), np.empty(c, dy.dtype)
    step = _chunk_channels(dy)
    for c0 in range(0, c, step):
        ch = slice(c0, c0 + step)
        ds, hs, out = dy[:, ch], x_hat[:, ch], dx[:, ch]
        db = d_beta[ch] = _channel_sums(ds)
        dg = d_gamma[ch] = np.einsum("acb,acb->c", ds, hs)
        np.multiply(hs, (dg / m)[:, None], out=out)
        out += (db / m)[:, None]
        np.subtract(ds, out, out=out)
        out *= scale[ch, None]
    return dx, d_beta, d_gamma
