"""Special functions without SciPy: erf and erfc (for exact GELU).
"""

from __future__ import annotations

from typing import Any

import numpy as np



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


