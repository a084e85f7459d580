"""``kernels.blas.gemm`` (BLAS called directly, with ``beta`` and strided views) against NumPy.

The oracle is ``a @ b + beta * c`` computed by NumPy in float64 from copies; the views are
the ones the convolution passes: row slices of larger buffers, transposed operands, single
rows and columns. The same cases run through the NumPy fallback (``_CBLAS`` emptied).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nn_from_scratch.kernels import blas


def operand(rng: np.random.Generator, rows: int, cols: int, dtype, kind: str) -> np.ndarray:
    """A (rows, cols) view: C-ordered, a slice of a wider buffer, or a transposed view."""
    if kind == "contiguous":
        return rng.standard_normal((rows, cols)).astype(dtype)
    if kind == "slice":
        return rng.standard_normal((rows + 2, cols + 3)).astype(dtype)[1 : rows + 1, 2 : cols + 2]
    return rng.standard_normal((cols + 1, rows + 4)).astype(dtype)[1:, 3 : rows + 3].T


#: Layouts of the two operands (see :func:`operand`), the betas and dtypes every gemm test draws.
VIEW_KINDS = st.tuples(*[st.sampled_from(["contiguous", "slice", "transposed"])] * 2)
BETAS = st.sampled_from([0.0, 1.0, 0.5])
DTYPES = st.sampled_from([np.float32, np.float64])


@pytest.fixture(params=["cblas", "fallback"])
def backend(request, monkeypatch):
    if request.param == "cblas":
        if not blas.has_cblas():
            pytest.skip("this NumPy's BLAS exports no cblas gemm; the fallback case covers gemm")
    else:
        monkeypatch.setattr(blas, "_CBLAS", {})
    monkeypatch.setattr(blas, "SMALL_PRODUCT", 0)
    return request.param


@given(
    m=st.integers(1, 9), k=st.integers(1, 9), n=st.integers(1, 9),
    kinds=VIEW_KINDS, beta=BETAS, dtype=DTYPES, seed=st.integers(0, 99),
)
@settings(max_examples=200, deadline=None)
def test_gemm_matches_numpy_on_strided_views(m, k, n, kinds, beta, dtype, seed):
    rng = np.random.default_rng(seed)
    a = operand(rng, m, k, dtype, kinds[0])
    b = operand(rng, k, n, dtype, kinds[1])
    buffer = rng.standard_normal((m + 2, n + 3)).astype(dtype)
    c = buffer[1 : m + 1, 1 : n + 1]  # a row-major view with a leading dimension > n
    before, want = buffer.copy(), a.astype(np.float64) @ b.astype(np.float64) + beta * c.astype(np.float64)
    small, blas.SMALL_PRODUCT = blas.SMALL_PRODUCT, 0  # these tiny products would otherwise take NumPy's path
    try:
        blas.gemm(a, b, c, beta)
    finally:
        blas.SMALL_PRODUCT = small
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(c, want, rtol=tol, atol=tol * max(1.0, np.abs(want).max()))
    outside = np.ones(buffer.shape, bool)
    outside[1 : m + 1, 1 : n + 1] = False
    np.testing.assert_array_equal(buffer[outside], before[outside])  # nothing written outside the view


def test_gemm_with_beta_zero_ignores_nan_in_the_output(backend):
    a, b = np.eye(3), np.arange(9.0).reshape(3, 3)
    c = np.full((3, 3), np.nan)
    blas.gemm(a, b, c, beta=0.0)
    np.testing.assert_array_equal(c, b)


def test_gemm_accumulates_and_handles_empty_inner_dimension(backend):
    c = np.ones((2, 2))
    blas.gemm(np.ones((2, 0)), np.ones((0, 2)), c, beta=1.0)
    np.testing.assert_array_equal(c, np.ones((2, 2)))
    blas.gemm(np.ones((2, 3)), np.ones((3, 2)), c, beta=1.0)
    np.testing.assert_array_equal(c, np.full((2, 2), 4.0))


def test_gemm_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="do not match"):
        blas.gemm(np.ones((2, 3)), np.ones((2, 2)), np.ones((2, 2)))


def test_gemm_falls_back_for_layouts_blas_cannot_read():
    """Neither axis of unit stride (a strided slice) and mixed dtypes still give the right answer."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((4, 6))[:, ::2]
    b = rng.standard_normal((3, 5)).astype(np.float32)
    c = np.zeros((4, 5))
    blas.gemm(a, b, c)
    np.testing.assert_allclose(c, a @ b.astype(np.float64), rtol=1e-6)


@given(
    m=st.integers(1, 12), k=st.integers(1, 300), n=st.integers(1, 300),
    kinds=VIEW_KINDS, beta=BETAS, dtype=DTYPES, seed=st.integers(0, 99),
)
@settings(max_examples=150, deadline=None)
def test_thin_products_split_into_pieces_give_the_whole_product(m, k, n, kinds, beta, dtype, seed):
    """With the split thresholds lowered, thin products run as BLAS calls on pieces of the inner
    dimension (tiny output) or of the columns (small ``a``), addressed by pointer arithmetic;
    every piece adds into or writes its part of ``c``, and the result is the whole product."""
    if not blas.has_cblas():
        pytest.skip("this NumPy's BLAS exports no cblas gemm: nothing is split")
    rng = np.random.default_rng(seed)
    a = operand(rng, m, k, dtype, kinds[0])
    b = operand(rng, k, n, dtype, kinds[1])
    buffer = rng.standard_normal((m + 2, n + 3)).astype(dtype)
    c = buffer[1 : m + 1, 1 : n + 1]
    want = a.astype(np.float64) @ b.astype(np.float64) + beta * c.astype(np.float64)
    if beta == 0.0:
        c[0, 0] = np.nan  # ignored, in every piece
    before = buffer.copy()
    calls = []
    real = blas._CBLAS[np.dtype(dtype)]

    def counting(*args):
        calls.append(args[3:6])  # (rows, cols, inner) of this piece
        real(*args)

    saved = blas.THIN, blas.PIECE_MACS, blas.INNER_PIECE_BYTES, blas.SMALL_PRODUCT, blas._CBLAS
    blas.THIN, blas.PIECE_MACS, blas.INNER_PIECE_BYTES, blas.SMALL_PRODUCT = 40, 64, 64 * (m + n) * c.itemsize, 0
    blas._CBLAS = {**saved[-1], np.dtype(dtype): counting}
    try:
        blas.gemm(a, b, c, beta)
    finally:
        blas.THIN, blas.PIECE_MACS, blas.INNER_PIECE_BYTES, blas.SMALL_PRODUCT, blas._CBLAS = saved
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(c, want, rtol=tol, atol=tol * max(1.0, np.abs(want).max()))
    outside = np.ones(buffer.shape, bool)
    outside[1 : m + 1, 1 : n + 1] = False
    np.testing.assert_array_equal(buffer[outside], before[outside])  # no piece writes outside c
    if m * n * k <= 64:
        expected = [(m, n, k)]
    elif m * n <= 40:  # pieces of 64 along the inner dimension
        expected = [(m, n, min(64, k - s)) for s in range(0, k, 64)]
    elif m * k <= 40:  # pieces of 64 columns
        expected = [(m, min(64, n - s), k) for s in range(0, n, 64)]
    else:
        expected = [(m, n, k)]
    assert calls == expected


def test_a_tiny_output_from_a_long_inner_dimension_is_summed_over_pieces():
    """The weight-gradient shape, (taps x pixels) @ (pixels x O), at its real size."""
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((5, 50176)).astype(np.float32), rng.standard_normal((50176, 6)).astype(np.float32)
    c = np.empty((5, 6), np.float32)
    blas.gemm(a, b, c)
    want = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_allclose(c, want, rtol=1e-4, atol=1e-3)
