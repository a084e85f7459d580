"""``C = A @ B + beta * C`` on strided views, through the BLAS that NumPy itself loaded.

``np.matmul`` has no ``beta``: summing k products into one array costs k - 1 extra passes over
it (write a partial product, then add it), and an ``out=`` that is a strided view of a larger
buffer is copied. BLAS's ``gemm`` accumulates in place and takes any leading dimension. The
convolution kernels use this to add each kernel row's product straight into the output (and
each input-gradient product straight into the padded gradient).

The BLAS is the OpenBLAS of NumPy's wheels (``scipy_openblas``), found with threadpoolctl and
called through ctypes, so it follows the same thread limits as ``np.matmul``. Where it cannot be
found (another NumPy build) or for dtypes other than float32/float64, :func:`gemm` falls back to
``np.matmul`` plus an add -- the same result up to rounding; :func:`gemm_reference` is that
fallback, and tests hold the two against each other.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

import numpy as np

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
#: Products with fewer multiply-adds than this take NumPy's matmul (cheaper to call).
SMALL_PRODUCT = 1 << 18
#: Thin products run in pieces (see :func:`gemm`): at most this many output elements (split
#: the inner dimension), or this many elements of ``a`` (split the columns).
THIN = 1024
#: Thin products with more multiply-adds than this are split; split columns take pieces of this size.
PIECE_MACS = 1_000_000
#: Bytes of ``a``'s and ``b``'s slices per piece of a split inner dimension.
INNER_PIECE_BYTES = 256 << 10


def _load_cblas() -> dict[np.dtype, Any]:
    """``{dtype: cblas_?gemm}`` from NumPy's OpenBLAS, or ``{}`` when it is not there."""
    if os.environ.get("NNFS_NO_CBLAS"):
        return {}
    try:
        from threadpoolctl import threadpool_info

        # threadpoolctl only lists libraries once loaded: make sure NumPy's BLAS is.
        np.dot(np.ones((2, 2)), np.ones((2, 2)))
        paths = [p["filepath"] for p in threadpool_info() if p.get("internal_api") == "openblas"]
        for path in paths:
            lib = ctypes.CDLL(path)
            found = {}
            for dtype, name, scalar in ((np.float32, "sgemm", ctypes.c_float), (np.float64, "dgemm", ctypes.c_double)):
                for symbol, integer in ((f"scipy_cblas_{name}64_", ctypes.c_int64), (f"cblas_{name}64_", ctypes.c_int64),
                                        (f"cblas_{name}", ctypes.c_int)):
                    fn = getattr(lib, symbol, None)
                    if fn is not None:
                        fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, integer, integer, integer, scalar,
                                       ctypes.c_void_p, integer, ctypes.c_void_p, integer, scalar, ctypes.c_void_p, integer]
                        fn.restype = None
                        found[np.dtype(dtype)] = fn
                        break
            if len(found) == 2:
                return found
    except (ImportError, OSError, AttributeError):  # no threadpoolctl, no OpenBLAS: use the fallback
        pass
    return {}


_CBLAS = _load_cblas()


def has_cblas() -> bool:
    """Whether :func:`gemm` calls BLAS directly (else it runs :func:`gemm_reference`).

    Example:
        >>> isinstance(has_cblas(), bool)
        True
    """
    return bool(_CBLAS)


def _operand(a: np.ndarray) -> tuple[int, int] | None:
    """``(transpose flag, leading dimension)`` of a 2-D view BLAS can read in place, else None."""
    item = a.itemsize
    s0, s1 = a.strides
    rows, cols = a.shape
    if s1 == item or cols == 1:
        if rows == 1:
            return _NO_TRANS, max(cols, 1)
        if s0 % item == 0 and s0 // item >= cols:
            return _NO_TRANS, s0 // item
    if s0 == item or rows == 1:
        if cols == 1:
            return _TRANS, max(rows, 1)
        if s1 % item == 0 and s1 // item >= rows:
            return _TRANS, s1 // item
    return None


def gemm_reference(a: np.ndarray, b: np.ndarray, c: np.ndarray, beta: float = 0.0) -> None:
    """``c[...] = a @ b + beta * c`` with NumPy alone (the fallback and the tests' oracle).

    Args:
        a: (M, K) array.
        b: (K, N) array.
        c: (M, N) array, written in place.
        beta: 0 (overwrite ``c``) or any scale of its old value (1 accumulates).

    Example:
        >>> c = np.ones((2, 2))
        >>> gemm_reference(np.eye(2), np.full((2, 2), 3.0), c, beta=1.0)
        >>> c
        array([[4., 1.],
               [1., 4.]])
    """
    if beta == 0.0:
        np.matmul(a, b, out=c)
    else:
        product = a @ b
        if beta != 1.0:
            c *= beta
        c += product


def gemm(a: np.ndarray, b: np.ndarray, c: np.ndarray, beta: float = 0.0) -> None:
    """``c[...] = a @ b + beta * c`` in place, for 2-D views with a unit stride along one axis.

    ``a`` and ``b`` may be transposed views (BLAS reads them as stored); ``c`` must be a
    row-major view (unit stride along its columns), e.g. a slice of rows of a larger buffer.
    Nothing is copied. Other dtypes or layouts take :func:`gemm_reference`.

    Thin products run as a sequence of smaller BLAS calls, which OpenBLAS does several times
    faster than the whole (its whole-product path packs both operands; its unpacked path for
    small products only takes products under about a million multiply-adds):

    * a tiny output from a long inner dimension -- a small layer's weight gradient,
      (taps x pixels) @ (pixels x O) -- in pieces of the inner dimension, each adding into
      ``c``;
    * a small ``a`` against many columns -- a small layer's input gradient or forward,
      (taps x O) @ (O x pixels) -- in pieces of columns.

    Measured on single layers, one thread, whole products -> pieces: the weight gradient of a
    3x3 3->32 layer at 32x32, batch 32, 4.0 -> 2.0 ms; the backward of LeNet's 5x5 6->16 layer,
    batch 64, 2.07 -> 1.66 ms; of the seed CNN's 7x7 4->2 layer, batch 50, 2.16 -> 1.62 ms.

    Args:
        a: (M, K) array.
        b: (K, N) array.
        c: (M, N) array, written in place.
        beta: 0 (overwrite ``c``; its old values are ignored, NaN included) or a scale of its old value.

    Example:
        >>> a = np.arange(6.0).reshape(2, 3)
        >>> c = np.ones((2, 2))
        >>> gemm(a, a.T, c, beta=1.0)   # c += a @ a.T, a.T read in place
        >>> c
        array([[ 6., 15.],
               [15., 51.]])
    """
    m, n = c.shape
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != m or b.shape != (a.shape[1], n):
        raise ValueError(f"gemm: shapes {a.shape} @ {b.shape} -> {c.shape} do not match")
    k = a.shape[1]
    # Small products go through NumPy: its call costs ~2 us where the ctypes call and OpenBLAS's
    # own setup cost 10-14 us (one thread, here: (6x5) @ (5x784), LeNet's first layer at batch 1).
    fn = _CBLAS.get(c.dtype) if a.dtype == b.dtype == c.dtype and m * n * k >= SMALL_PRODUCT else None
    op_a, op_b, ldc = (_operand(a), _operand(b), _output_ld(c)) if fn is not None else (None, None, None)
    if fn is None or op_a is None or op_b is None or ldc is None or m == 0 or n == 0 or k == 0:
        gemm_reference(a, b, c, beta)
        return
    # Pieces are addressed by pointer arithmetic on the whole operands (a slice's .ctypes costs
    # ~1 us, a third of the BLAS call), with the whole operands' layouts: a slice along K or N
    # keeps every stride, and each leading dimension stays >= the slice's extent.
    pa, pb, pc = a.ctypes.data, b.ctypes.data, c.ctypes.data

    def product(rows: int, cols: int, inner: int, a_ptr: int, b_ptr: int, c_ptr: int, scale: float) -> None:
        fn(_ROW_MAJOR, op_a[0], op_b[0], rows, cols, inner, 1.0, a_ptr, op_a[1], b_ptr, op_b[1], float(scale), c_ptr, ldc)

    if m * n * k > PIECE_MACS and m * n <= THIN:
        piece = max(64, INNER_PIECE_BYTES // ((m + n) * c.itemsize))
        for start in range(0, k, piece):
            product(m, n, min(piece, k - start), pa + start * a.strides[1], pb + start * b.strides[0], pc,
                    beta if start == 0 else 1.0)
    elif m * n * k > PIECE_MACS and m * k <= THIN:
        piece = max(64, PIECE_MACS // (m * k))
        for start in range(0, n, piece):
            product(m, min(piece, n - start), k, pa, pb + start * b.strides[1], pc + start * c.strides[1], beta)
    else:
        product(m, n, k, pa, pb, pc, beta)


def _output_ld(c: np.ndarray) -> int | None:
    """Leading dimension of a writable row-major 2-D view, else None."""
    item = c.itemsize
    rows, cols = c.shape
    if not c.flags.writeable or (c.strides[1] != item and cols > 1):
        return None
    if rows == 1:
        return max(cols, 1)
    s0 = c.strides[0]
    return s0 // item if s0 % item == 0 and s0 // item >= cols else None
