"""Batch-norm kernels that work in the input's own memory layout, a few channels at a time.
"""

from __future__ import annotations

import numpy as np

from .geometry import memory_order



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
    perm = memory_order(x)
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
    dy: np.ndarray, x_hat: np.ndarray, scale: np.ndarray, m: int, out: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dx, d_beta, d_gamma)`` of training-mode batch norm, ``dy`` and ``x_hat`` (A, C, B) alike.

    ``d_beta = sum(dy)``, ``d_gamma = sum(dy * x_hat)`` per channel and
    ``dx = scale * (dy - d_beta / m - x_hat * d_gamma / m)`` with ``scale = gamma / sqrt(var + eps)``,
    channel chunk by chunk (the reductions and dx of a chunk while it is cached). With
    ``out=dy`` dx overwrites dy (each chunk's sums are taken before it is overwritten; a
    chunk-sized buffer holds the intermediate): no array of dy's size is allocated.

    Args:
        dy: ``dL/dy`` as (A, C, B) blocks, laid out as ``x_hat``.
        x_hat: the normalised input from :func:`batch_norm_train_forward`, (A, C, B).
        scale: ``gamma * inv_std`` per channel, (C,).
        m: the number of samples per channel, ``A * B``.
        out: where to write dx (``dy`` itself for in place), or None for a new array.

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
    dx = np.empty(dy.shape, dy.dtype) if out is None else out
    in_place = np.may_share_memory(dx, dy)
    d_beta, d_gamma = np.empty(c, dy.dtype), np.empty(c, dy.dtype)
    step = _chunk_channels(dy)
    work = np.empty((dy.shape[0], min(step, c), dy.shape[2]), dy.dtype) if in_place else None
    for c0 in range(0, c, step):
        ch = slice(c0, c0 + step)
        ds, hs, dxs = dy[:, ch], x_hat[:, ch], dx[:, ch]
        db = d_beta[ch] = _channel_sums(ds)
        dg = d_gamma[ch] = np.einsum("acb,acb->c", ds, hs)
        t = work[:, : hs.shape[1]] if in_place else dxs
        np.multiply(hs, (dg / m)[:, None], out=t)
        t += (db / m)[:, None]
        np.subtract(ds, t, out=dxs)
        dxs *= scale[ch, None]
    return dx, d_beta, d_gamma
