"""Nearest and bilinear upsampling by integer factors, forward and backward.
"""

from __future__ import annotations

from typing import Any

import numpy as np



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


