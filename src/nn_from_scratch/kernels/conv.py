"""Convolution kernels: the im2col reference, the fast batch-innermost plan, grouped/depthwise convolution.

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

import math
from typing import Callable

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .blas import gemm
from .geometry import ConvGeometry, _tap_slices, pad2d, window_view


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
# Strides along the height split the rows into *phases*: with stride ``sh`` output row ``i`` of
# kernel row ``p`` reads input row ``i*sh + p*dh = (i + m_p)*sh + r_p`` (``r_p = p*dh % sh``,
# ``m_p = p*dh // sh``), so U stores the rows phase by phase, ``U[c, q, r, m] = xp[c, m*sh + r]``,
# and ``U_p = U[:, :, r_p, m_p : m_p + OH]`` is again a plain strided matrix. Stride 1 is the
# special case of one phase. Every stride, dilation and padding therefore takes this path; the
# reference stays as the tests' oracle.
#
# The products accumulate in place (:func:`.blas.gemm` with ``beta = 1``): no partial-product
# buffers and no extra passes adding them up. Results are returned as (N, C, H, W) *views* of
# CHWN-ordered arrays: the next convolution reads that order without a transposing copy, and
# element-wise layers keep it.


#: Largest unrolled input (bytes) a training Conv2dPlan keeps whole; larger layers run blocked.
WHOLE_U_BYTES = 16 << 20
#: Fewest output pixels per forward chunk (or block of rows) of a Conv2dPlan (see its __init__).
MIN_CHUNK_PIXELS = 16384


def rows_apart(shape: tuple[int, ...], row_axes: int, dtype: np.dtype, fill: float | None = None) -> np.ndarray:
    """A C-ordered array of ``shape`` whose matrix rows (the first ``row_axes`` axes) do not
    start a multiple of 1 KiB apart.

    A matrix product reads a few dozen rows of its operands side by side; rows a power of two
    apart in memory fall into the same cache sets and evict each other. One cache line of
    padding after each row avoids that (measured, one thread: (32x96) @ (96x131072) with 4,096-
    column slices, 15.3 ms with rows 512 KiB apart, 10.6 ms with 64 bytes more).

    Args:
        shape: the array's shape.
        row_axes: how many leading axes index the rows (the rest is one contiguous row).
        dtype: the dtype.
        fill: a value to fill the array with (None: uninitialised).

    Example:
        >>> a = rows_apart((3, 256), 1, np.float32)
        >>> a.shape, a.strides
        ((3, 256), (1088, 4))
    """
    dtype = np.dtype(dtype)
    rows, row = math.prod(shape[:row_axes]), math.prod(shape[row_axes:])
    pad = 64 // dtype.itemsize if rows > 1 and (row * dtype.itemsize) % 1024 == 0 else 0
    flat = np.empty((rows, row + pad), dtype) if fill is None else np.full((rows, row + pad), fill, dtype)
    return flat[:, :row].reshape(shape)


class Conv2dPlan:
    """The fast convolution for one input shape, with its work buffers.

    ``forward(x, W, b)`` then ``backward(dy, W)`` compute what :func:`conv2d_forward` and
    :func:`conv2d_backward` compute (up to float rounding; tests/test_kernels.py checks it).

    Buffer lifetimes: for a layer whose unrolled input ``U`` takes at most ``whole_U_bytes``,
    ``U`` and the padded input are overwritten by every training ``forward`` and read by the
    ``backward`` that follows it, like the reference's ``cols``, and kept between steps. A larger
    layer (:attr:`blocked`) keeps only a reference to its input, from the training forward to
    its backward, and unrolls it a block of rows at a time in both. An inference forward
    (``keep_for_backward=False``) unrolls a block of rows at a time and keeps nothing. Buffers
    only the backward needs are allocated by the first backward. The arrays returned (``y``,
    ``dx``, ``dW``, ``db``) are freshly allocated.

    Args:
        x_shape: ``(N, C, H, W)`` of the inputs it will see.
        out_channels: O, the number of output channels.
        geom: the convolution's :class:`ConvGeometry`.
        dtype: the dtype of inputs and weights.
        chunk_pixels: output pixels per work chunk (default: about 2 MiB of buffers; tests use small values).
        dx_block_rows: input rows per block of the ``dx`` kernel (default: chosen from the shapes).
        whole_U_bytes: the largest ``U`` kept whole in training (default :data:`WHOLE_U_BYTES`).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x, W, b = rng.normal(size=(2, 3, 6, 6)), rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4)
        >>> g = ConvGeometry(kh=3, kw=3, stride=(2, 1), dilation=(1, 1), padding=(1, 1, 1, 1))
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
        whole_U_bytes: int | None = None,
    ) -> None:
        n, c, h, w = x_shape
        self.x_shape = tuple(x_shape)
        self.out_channels = o = int(out_channels)
        self.geom = geom
        self.dtype = dtype = np.dtype(dtype)
        self.oh, self.ow = geom.output_hw(h, w)
        pt, pb, pl, pr = geom.padding
        kh, kw = geom.kh, geom.kw
        sh, dh = geom.stride[0], geom.dilation[0]
        self.hp, self.wp = h + pt + pb, w + pl + pr
        # Row phases (see the comment above): rows_per_phase rows in each of the sh phases.
        self.rows_per_phase = -(-self.hp // sh)
        self.phase_rows = sh * self.rows_per_phase  # rows of U, in phase order
        #: Where kernel row p's rows start in the phase-ordered rows: r_p * rows_per_phase + m_p.
        self.row_offsets = [(p * dh % sh) * self.rows_per_phase + p * dh // sh for p in range(kh)]
        self.taps_k = c * kw  # rows of each U_p
        self.pixels = self.oh * self.ow * n  # columns of each U_p
        row = self.ow * n
        # The forward works through the pixels in chunks, each kernel row's product accumulating
        # into the chunk of y inside BLAS. Small layers gain from chunks whose slices stay in the
        # 2 MiB cache (LeNet's 5x5 1->6 layer at batch 64: 0.52 ms in chunks, 0.84 ms in one
        # product); large ones lose from chunks under ~16k pixels (a 3x3 32->32 layer at 32x32,
        # batch 128: 4,096-pixel chunks 13.7 ms, one product 8.4 ms). With one or two output
        # channels BLAS accumulating in place is slow (its register tile is mostly empty), and
        # a partial product added to y is faster (the seed CNN's 7x7 4->2 layer: 0.65 vs 0.71 ms).
        # One thread, here.
        bytes_per_pixel = (self.taps_k + 2 * o) * dtype.itemsize
        self._chunk = min(self.pixels, chunk_pixels or max(MIN_CHUNK_PIXELS, (2 << 20) // bytes_per_pixel))
        self.forward_kernel = "partial_sums" if o <= 2 else "accumulate"
        # dx works through blocks of rows whose Z (and stacked dy) take <= 2 MiB.
        self._dx_block_rows = dx_block_rows or max(1, (2 << 20) // ((self.taps_k + o * kh) * row * dtype.itemsize))
        self._xpad: np.ndarray | None = None
        self._U: np.ndarray | None = None
        self._dy: np.ndarray | None = None
        self._Z: np.ndarray | None = None
        self._D: np.ndarray | None = None
        self._filled = False  # whether U holds the last training forward's input
        # Kernel choice per shape (from single-thread timings of the benchmarks' layers).
        # dx: the cheaper by a cost model of floats moved through the intermediates plus
        # multiply-adds, with one float moved costing as much as 14 flops (fitted on the four
        # convolutions of the benchmarks and a VGG-like 3x3 16->32 layer).
        stacked_pixels = self.phase_rows * row
        cost_rows = 14 * 2 * kh * self.taps_k * self.pixels + 2 * kh * self.taps_k * o * self.pixels
        cost_stacked = 14 * 2 * (o * kh + self.taps_k) * stacked_pixels + 2 * self.taps_k * o * kh * stacked_pixels
        self.dx_kernel = "rows" if cost_rows <= cost_stacked else "stacked_dy"
        # Training keeps the whole unrolled input U (kw times the input) from the forward to the
        # backward, and between steps, when it is small; a larger layer keeps only a reference to
        # its input and unrolls it again, a block of rows at a time, for dW in the backward (one
        # more copy pass; at batch 128 the CIFAR nets' training peak fell from 1.5-2x torch's).
        # dW from the stacked dL/dy (when the dx kernel builds it) runs over all phase rows, not
        # only the OH rows a kernel row reads: worth it when that adds little, or with few output
        # channels, where one product kh times wider beats kh thin ones (LeNet's 5x5 6->16 layer,
        # 14 rows for 10: 0.89 ms stacked, 0.71 ms per kernel row; the seed CNN's 7x7 4->2 layer,
        # 26 rows for 20: 0.53 ms stacking included, 0.69 ms per kernel row).
        self.dW_from_stacked_dy = o <= 8 or self.phase_rows <= 1.2 * self.oh
        U_bytes = c * kw * self.phase_rows * row * dtype.itemsize
        self.blocked = U_bytes > (WHOLE_U_BYTES if whole_U_bytes is None else whole_U_bytes)
        if self.blocked:
            self.dx_kernel = "rows"  # the stacked kernel would keep kh copies of dL/dy
        self._x: np.ndarray | None = None  # blocked mode: the last training forward's input

    # -- forward ---------------------------------------------------------------------------
    def _padded_source(self, x: np.ndarray, keep: bool = True) -> np.ndarray:
        """``x`` as (C, rows, Wp, N), zero-padded, with at least ``phase_rows`` rows when strided.

        The padded copy is kept for the next call (its zero borders written once) when ``keep``;
        an inference pass pads into a temporary that is gone when the forward returns.
        """
        n, c, h, w = self.x_shape
        pt, _, pl, _ = self.geom.padding
        x_chwn = x.transpose(1, 2, 3, 0)
        if not any(self.geom.padding) and self.phase_rows == h and x_chwn.flags.c_contiguous:
            return x_chwn  # already batch-innermost (the output of a previous convolution)
        xpad = self._xpad if keep else None
        if xpad is None:
            xpad = np.zeros((c, self.phase_rows, self.wp, n), self.dtype)
            if keep:
                self._xpad = xpad
        xpad[:, pt : pt + h, pl : pl + w, :] = x_chwn
        return xpad

    def _unroll(self, source: np.ndarray, U: np.ndarray, m0: int = 0) -> None:
        """``U[c, q, r, m - m0] = source[c, m*sh + r, j*sw + q*dw, n]`` for the phase rows ``m`` U holds."""
        sh, sw = self.geom.stride
        dw = self.geom.dilation[1]
        s_c, s_h, s_w, s_n = source.strides
        offset = source[:, m0 * sh :]
        np.copyto(U, as_strided(offset, U.shape, (s_c, s_w * dw, s_h, s_h * sh, s_w * sw, s_n)))

    def _U_p(self, p: int) -> np.ndarray:
        r, m = divmod(self.row_offsets[p], self.rows_per_phase)
        return self._U[:, :, r, m : m + self.oh].reshape(self.taps_k, self.pixels)

    def forward(self, x: np.ndarray, W: np.ndarray, b: np.ndarray | None, keep_for_backward: bool = True) -> np.ndarray:
        """``y`` (N, O, OH, OW) for ``x`` (N, C, H, W), in any memory order.

        With ``keep_for_backward`` (training) a small layer keeps its whole unrolled input ``U``
        for :meth:`backward`, a large one (:attr:`blocked`) a reference to ``x``; without, the
        input is unrolled a few output rows at a time and nothing is kept.
        """
        n, c, h, w = self.x_shape
        o, kh, kw = self.out_channels, self.geom.kh, self.geom.kw
        W_rows = W.transpose(2, 0, 1, 3).reshape(kh, o, self.taps_k)  # W_p = W_rows[p]
        y = np.empty((o, self.pixels), self.dtype)
        self._filled = keep_for_backward
        self._x = x if keep_for_backward and self.blocked else None
        if keep_for_backward and not self.blocked:
            source = self._padded_source(x)
            if self._U is None:
                self._U = rows_apart((c, kw, self.geom.stride[0], self.rows_per_phase, self.ow, n), 2, self.dtype)
            self._unroll(source, self._U)
            U_rows = [self._U_p(p) for p in range(kh)]
            for start in range(0, self.pixels, self._chunk):
                chunk = slice(start, start + self._chunk)
                self._accumulate(y[:, chunk], W_rows, [U_p[:, chunk] for U_p in U_rows], b, self.forward_kernel)
        else:
            row = self.ow * n
            for i0, i1, U_rows in self._unrolled_row_blocks(self._padded_source(x, keep=False)):
                self._accumulate(y[:, i0 * row : i1 * row], W_rows, U_rows, b, self.forward_kernel)
        return y.reshape(o, self.oh, self.ow, n).transpose(3, 0, 1, 2)

    @staticmethod
    def _accumulate(y: np.ndarray, W_rows: np.ndarray, U_rows: list[np.ndarray], b: np.ndarray | None, kernel: str) -> None:
        """``y = b + sum_p W_rows[p] @ U_rows[p]``: summed in place by BLAS, or through a partial product."""
        if kernel == "partial_sums":
            np.matmul(W_rows[0], U_rows[0], out=y)
            partial = np.empty_like(y)
            for W_p, U_p in zip(W_rows[1:], U_rows[1:]):
                np.matmul(W_p, U_p, out=partial)
                y += partial
            if b is not None:
                y += b[:, None]
            return
        if b is not None:
            y[...] = b[:, None]
        for p, U_p in enumerate(U_rows):
            gemm(W_rows[p], U_p, y, beta=0.0 if p == 0 and b is None else 1.0)

    def _unrolled_row_blocks(self, source: np.ndarray):
        """For each block of output rows ``i0:i1``: ``(i0, i1, [U_p for each kernel row p])``,
        unrolling only the phase rows the block reads, into one block-sized buffer reused by every
        block (so each yielded list is valid until the next one)."""
        n, c = self.x_shape[:2]
        kh, kw, sh = self.geom.kh, self.geom.kw, self.geom.stride[0]
        row = self.ow * n
        span = max(off % self.rows_per_phase for off in self.row_offsets)  # extra phase rows a block reads
        block = max(1, min(self.oh, self._chunk // row))
        U = rows_apart((c, kw, sh, block + span, self.ow, n), 2, self.dtype)
        for i0 in range(0, self.oh, block):
            i1 = min(i0 + block, self.oh)
            rows = i1 - i0 + span
            U_block = U[:, :, :, :rows]
            available = min(rows, self.rows_per_phase - i0)
            if available < rows:
                U_block[:, :, :, available:] = 0
            self._unroll(source, U_block[:, :, :, :available], m0=i0)
            U_rows = []
            for p in range(kh):
                r, m = divmod(self.row_offsets[p], self.rows_per_phase)
                U_rows.append(U_block[:, :, r, m : m + i1 - i0].reshape(self.taps_k, (i1 - i0) * row))
            yield i0, i1, U_rows

    # -- backward --------------------------------------------------------------------------
    def backward(
        self, dy: np.ndarray, W: np.ndarray, need_dx: bool = True, need_db: bool = True
    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
        """``(dx, dW, db)`` for ``dy`` (N, O, OH, OW) after a training :meth:`forward`; ``None`` for what is not needed."""
        if not self._filled:
            raise RuntimeError("Conv2dPlan.backward: needs a forward with keep_for_backward=True first")
        o = self.out_channels
        dy_t = self._dy_chwn(dy)
        dy_2d = dy_t.reshape(o, self.pixels)
        db = dy_2d.sum(axis=1) if need_db else None
        stacked = need_dx and self.dx_kernel == "stacked_dy"
        if stacked:
            self._stack_dy(dy_t)
        if self.blocked:
            dW = self._dW_in_row_blocks(dy_2d)
            self._x, self._filled = None, False  # the input is not kept past its backward
        elif stacked and self.dW_from_stacked_dy:
            dW = self._dW_by_stacked_dy()
        else:
            dW = self._dW_by_rows(dy_2d)
        dx = None
        if need_dx:
            dx = self._dx_by_stacked_dy(W) if stacked else self._dx_by_rows(dy_2d, W)
        return dx, dW, db

    def input_grad(self, dy: np.ndarray, W: np.ndarray) -> np.ndarray:
        """``dx`` alone for ``dy`` (N, O, OH, OW): the adjoint of :meth:`forward`, which it does not need first.

        A transposed convolution's forward pass (see ``neurons.TransposedConvolution``).
        """
        dy_t = self._dy_chwn(dy)
        if self.dx_kernel == "rows":
            return self._dx_by_rows(dy_t.reshape(self.out_channels, self.pixels), W)
        self._stack_dy(dy_t)
        return self._dx_by_stacked_dy(W)

    def _dy_chwn(self, dy: np.ndarray) -> np.ndarray:
        """``dy`` as a C-contiguous (O, OH, OW, N) array: the order of y, and of dy after ReLU."""
        dy_t = dy.transpose(1, 2, 3, 0)
        if not dy_t.flags.c_contiguous:
            if self._dy is None:
                self._dy = np.empty(dy_t.shape, self.dtype)
            np.copyto(self._dy, dy_t)
            dy_t = self._dy
        return dy_t

    def _dW_in_row_blocks(self, dy_2d: np.ndarray) -> np.ndarray:
        """``dW`` from the kept input, unrolled again a block of output rows at a time (blocked mode)."""
        kh, o = self.geom.kh, self.out_channels
        row = self.ow * self.x_shape[0]
        dW_rows = np.empty((kh, self.taps_k, o), self.dtype)
        for i0, i1, U_rows in self._unrolled_row_blocks(self._padded_source(self._x, keep=False)):
            dy_block = dy_2d[:, i0 * row : i1 * row].T
            for p, U_p in enumerate(U_rows):
                gemm(U_p, dy_block, dW_rows[p], beta=0.0 if i0 == 0 else 1.0)
        return self._dW_from_rows(dW_rows)

    def _dW_from_rows(self, dW_rows: np.ndarray) -> np.ndarray:
        """``dW`` (O, C, kh, kw) from ``dW_rows[p][(c, q), o]``, the per-kernel-row products."""
        return dW_rows.reshape(self.geom.kh, -1, self.geom.kw, self.out_channels).transpose(3, 1, 0, 2).copy()

    def _dW_by_rows(self, dy_2d: np.ndarray) -> np.ndarray:
        kh, o = self.geom.kh, self.out_channels
        # dy_2d.T read in place (BLAS's transposed operand): the transposing copy this replaces
        # cost more than it saved: zoo.resnet's eight convolutions, one thread, old and new
        # alternating in one process, median CPU time 40.3 -> 37.7 ms in all.
        dy_pixels_major = dy_2d.T  # (pixels, O)
        dW_rows = np.empty((kh, self.taps_k, o), self.dtype)
        for p in range(kh):
            gemm(self._U_p(p), dy_pixels_major, dW_rows[p])
        return self._dW_from_rows(dW_rows)

    def _dx_in_row_blocks(self, fill_Z: Callable[[int, int, np.ndarray], None]) -> np.ndarray:
        """``dx`` from ``Z[c, q, hh, j, n] = sum_{o, p} W[o, c, p, q] dy[o, hh - row_offsets[p], j, n]``, block by block.

        ``hh`` runs over the phase-ordered rows. ``fill_Z(h0, h1, Z)`` writes the rows ``h0:h1`` of
        ``Z`` (as (C*kw, (h1-h0)*OW*N)); then the width part of the adjoint adds them up:
        ``dxp[c, hh, j*sw + q*dw, n] += Z[c, q, hh, j, n]``, and the phases are put back in order.
        Blocks of rows keep ``Z`` in cache (and give BLAS products of a size it threads well:
        one whole-image product ran 2.5x slower on two threads than on one).
        """
        n, c, h, w = self.x_shape
        kw, ow = self.geom.kw, self.ow
        sh, sw = self.geom.stride
        dw = self.geom.dilation[1]
        pt, _, pl, _ = self.geom.padding
        row = ow * n  # floats per row of Z, per (c, q)
        if self._Z is None:
            self._Z = rows_apart((self.taps_k, self._dx_block_rows * row), 1, self.dtype)
        dxp = np.zeros((c, self.phase_rows, self.wp, n), self.dtype)
        for h0 in range(0, self.phase_rows, self._dx_block_rows):
            h1 = min(h0 + self._dx_block_rows, self.phase_rows)
            Z = self._Z[:, : (h1 - h0) * row]
            fill_Z(h0, h1, Z)
            Z = Z.reshape(c, kw, h1 - h0, ow, n)
            for q in range(kw):
                dxp[:, h0:h1, q * dw : q * dw + sw * (ow - 1) + 1 : sw, :] += Z[:, q]
        if sh > 1:  # phase-ordered rows back to image order
            dxp = dxp.reshape(c, sh, self.rows_per_phase, self.wp, n).transpose(0, 2, 1, 3, 4)
            dxp = dxp.reshape(c, self.phase_rows, self.wp, n)
        return dxp[:, pt : pt + h, pl : pl + w, :].transpose(3, 0, 1, 2)

    def _dx_by_rows(self, dy_2d: np.ndarray, W: np.ndarray) -> np.ndarray:
        """For each kernel row p, ``Z[:, rows i + row_offsets[p]] += W_p.T @ dy[:, rows i]``: the adjoint of the forward."""
        kh, o, oh = self.geom.kh, self.out_channels, self.oh
        row = self.ow * self.x_shape[0]
        W_rows_t = W.transpose(2, 1, 3, 0).reshape(kh, self.taps_k, o)  # W_p.T

        def fill_Z(h0: int, h1: int, Z: np.ndarray) -> None:
            Z.fill(0)
            for p in range(kh):
                off = self.row_offsets[p]
                i0, i1 = max(0, h0 - off), min(oh, h1 - off)  # rows of dy that land in h0:h1
                if i0 < i1:
                    gemm(W_rows_t[p], dy_2d[:, i0 * row : i1 * row], Z[:, (i0 + off - h0) * row : (i1 + off - h0) * row], beta=1.0)

        return self._dx_in_row_blocks(fill_Z)

    def _stack_dy(self, dy_t: np.ndarray) -> None:
        """``D[o, p, hh] = dy[o, hh - row_offsets[p]]`` (zero outside): the kernel rows of ``dy``, stacked."""
        kh, o, oh = self.geom.kh, self.out_channels, self.oh
        if self._D is None:  # the rows outside each kernel row's window stay zero
            self._D = rows_apart((o, kh, self.phase_rows, self.ow, self.x_shape[0]), 2, self.dtype, fill=0)
        for p, off in enumerate(self.row_offsets):
            self._D[:, p, off : off + oh] = dy_t

    def _dW_by_stacked_dy(self) -> np.ndarray:
        """All kernel rows in one product: ``dW[o, c, p, q] = sum_hh U[c, q, hh] D[o, p, hh]``.

        ``U`` over all its (phase-ordered) rows as (C*kw, rows*OW*N), times ``D.T``: a product
        kh times wider than each kernel row's, which BLAS runs faster (one thread, 3x3 layers:
        16->16 channels at 32x32 2.7 -> 2.1 ms, 32->32 7.1 -> 6.7 ms, batch 32).
        """
        kh, kw, o = self.geom.kh, self.geom.kw, self.out_channels
        U_all = self._U.reshape(self.taps_k, -1)
        D = self._D.reshape(o * kh, -1)
        stacked = np.empty((self.taps_k, o * kh), self.dtype)
        gemm(U_all, D.T, stacked)
        return stacked.reshape(-1, kw, o, kh).transpose(2, 0, 3, 1).copy()

    def _dx_by_stacked_dy(self, W: np.ndarray) -> np.ndarray:
        """One matrix product over (output channel, kernel row) per block of rows, on ``D`` (:meth:`_stack_dy`).

        ``Z[c, q] = sum_{o, p} W[o, c, p, q] D[o, p]`` is a (C*kw, O*kh) @ (O*kh, rows*OW*N)
        product. Cheaper than :meth:`_dx_by_rows` when there are few output channels and many
        kernel rows.
        """
        kh, o = self.geom.kh, self.out_channels
        W_stacked = W.transpose(1, 3, 0, 2).reshape(self.taps_k, o * kh)

        def fill_Z(h0: int, h1: int, Z: np.ndarray) -> None:
            gemm(W_stacked, self._D[:, :, h0:h1].reshape(o * kh, -1), Z)

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
    """The fast plan for a convolution: :class:`Conv2dPlan` for one group, :class:`GroupedConv2dPlan`
    for more (both take any stride, dilation and padding).

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
    if groups == 1:
        return Conv2dPlan(x_shape, out_channels, geom, dtype)
    return GroupedConv2dPlan(x_shape, out_channels, geom, groups, dtype)
