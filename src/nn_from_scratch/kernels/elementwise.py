"""Element-wise kernels that work on an array's own memory, a cache-sized chunk at a time.
"""

from __future__ import annotations

import numpy as np

from .geometry import memory_order

#: Elements per chunk of :func:`relu_backward` (256 KiB of float32: the operands of a chunk stay in the L2 cache).
ELEMENTWISE_CHUNK = 1 << 16


def flat_view(a: np.ndarray) -> np.ndarray | None:
    """``a``'s memory as a 1-D view in memory order (any axis order, e.g. batch innermost), or
    ``None`` when ``a`` is not one contiguous block (a strided slice, a broadcast).

    Args:
        a: any array.

    Example:
        >>> x = np.arange(6.0).reshape(2, 3).T  # a Fortran-ordered view
        >>> flat_view(x)
        array([0., 1., 2., 3., 4., 5.])
        >>> flat_view(np.arange(6.0)[::2]) is None
        True
    """
    t = a.transpose(memory_order(a))
    return t.reshape(-1) if t.flags.c_contiguous else None


def relu_backward(dy: np.ndarray, y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``dx = dy * [y > 0]`` (ReLU's backward from its output ``y``), in ``y``'s dtype.

    When ``dy`` is laid out like ``y`` (the same axis order in memory; one block, or a view such
    as a convolution's ``dL/dx`` cropped from its padded buffer) it runs a cache-sized chunk at a
    time, into ``out`` (which may be ``dy`` itself: the in-place backward) or into a new array in
    ``y``'s layout: the mask of a chunk lives in a small buffer, never as a bool array of the whole
    size. Otherwise :func:`relu_backward_reference`. The product with the mask differs from
    ``np.where`` only where ``dy`` is inf or NaN at ``y <= 0`` (NaN, not 0), and is ~8x faster.

    Args:
        dy: ``dL/dy``.
        y: ReLU's output (``>= 0`` or NaN), the same shape.
        out: where to write ``dx`` (``dy`` for in place), or None for a new array.

    Returns:
        ``dx``, shaped like ``y``.

    Example:
        >>> y = np.array([[0.0, 2.0, 0.0, 3.0]])
        >>> dy = np.array([[1.0, 1.0, 1.0, 1.0]])
        >>> relu_backward(dy, y, out=dy)
        array([[0., 1., 0., 1.]])
        >>> dy  # overwritten
        array([[0., 1., 0., 1.]])
    """
    order = memory_order(y)
    alike = dy.shape == y.shape and dy.dtype == y.dtype and memory_order(dy) == order
    if out is None and alike:
        out = np.empty_like(y)  # y's layout, one block: what the layers before read fastest
    if out is None or not alike or out.shape != y.shape or out.dtype != y.dtype or memory_order(out) != order:
        dx = relu_backward_reference(dy, y)
        if out is None:
            return dx
        np.copyto(out, dx)
        return out
    if y.size == 0:
        return out
    flat = [flat_view(a) for a in (dy, y, out)] if dy.strides == y.strides == out.strides else [None]
    if all(a is not None for a in flat):
        d_t, y_t, o_t = flat  # one block each: chunks of the memory
    else:
        # Not one block each (a cropped dy): blocks along the outermost axis in memory
        # (128x32x32x32 float32: 5.6 ms through the reference, 4.2 ms here; 2.4 ms when contiguous).
        d_t, y_t, o_t = (a.transpose(order) for a in (dy, y, out))
    rows = max(1, ELEMENTWISE_CHUNK // max(1, y_t[0].size))
    mask = np.empty((min(rows, y_t.shape[0]),) + y_t.shape[1:], dtype=bool)
    for start in range(0, y_t.shape[0], rows):
        stop = min(start + rows, y_t.shape[0])
        m = mask[: stop - start]
        np.greater(y_t[start:stop], 0, out=m)
        np.multiply(d_t[start:stop], m, out=o_t[start:stop])
    return out


def relu_backward_reference(dy: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The reference of :func:`relu_backward`: ``dy * (y > 0)`` in ``y``'s dtype, a new array.

    Args:
        dy: ``dL/dy``.
        y: ReLU's output.

    Example:
        >>> relu_backward_reference(np.ones((1, 3)), np.array([[0.0, 1.0, 2.0]]))
        array([[0., 1., 1.]])
    """
    return (dy * (y > 0)).astype(y.dtype, copy=False)
