"""Convolution and pooling geometry: sizes, padding (incl. Keras' "same"), padded copies and window views.
"""

from __future__ import annotations

from typing import Any, NamedTuple

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


def memory_order(a: np.ndarray) -> tuple[int, ...]:
    """The axes of ``a`` from outermost to innermost in memory (sorted by stride, stable).

    Args:
        a: any array.

    Example:
        >>> memory_order(np.zeros((2, 3, 4, 5)))
        (0, 1, 2, 3)
        >>> memory_order(np.zeros((3, 4, 5, 2)).transpose(3, 0, 1, 2))  # batch innermost
        (1, 2, 3, 0)
    """
    # A stable sort in plain Python: np.argsort costs ~4x more on four strides, and this runs in
    # every ReLU and pooling backward.
    return tuple(sorted(range(a.ndim), key=lambda axis: -abs(a.strides[axis])))


def empty_in_order(order: tuple[int, ...], shape: tuple[int, ...], dtype: np.dtype, zeros: bool = False) -> np.ndarray:
    """An array of ``shape`` whose axes lie in memory in ``order`` (outermost first), as :func:`memory_order` gives.

    Args:
        order: the axes, outermost first.
        shape: the array's shape.
        dtype: its dtype.
        zeros: zero-filled (else uninitialised).

    Example:
        >>> a = empty_in_order((1, 2, 3, 0), (2, 3, 4, 5), np.float32)
        >>> a.shape, memory_order(a)
        ((2, 3, 4, 5), (1, 2, 3, 0))
    """
    make = np.zeros if zeros else np.empty
    return make([shape[i] for i in order], dtype).transpose(np.argsort(order))


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
    return empty_in_order(memory_order(like), shape, dtype, zeros=True)


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




def _tap_slices(p: int, q: int, oh: int, ow: int, geom: ConvGeometry) -> tuple[slice, slice]:
    """Where tap ``(p, q)`` of every window lies in the padded input: ``(rows, columns)``."""
    sh, sw = geom.stride
    dh, dw = geom.dilation
    return slice(p * dh, p * dh + sh * (oh - 1) + 1, sh), slice(q * dw, q * dw + sw * (ow - 1) + 1, sw)

