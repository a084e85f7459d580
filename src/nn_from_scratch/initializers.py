"""Weight initialisers, with the fan-in / fan-out conventions of Keras.

For a dense kernel ``fan_in = n_in`` and ``fan_out = n_out``; for a convolution kernel of shape
``(O, C, kh, kw)``, ``fan_in = C*kh*kw`` and ``fan_out = O*kh*kw``.

Every draw takes an explicit ``numpy.random.Generator``. Layers built outside a model draw
from :func:`default_rng`, which :func:`set_seed` reseeds; a model with ``seed=`` passes its own.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

Initializer = Callable[[tuple[int, ...], int, int, np.random.Generator, np.dtype], np.ndarray]

_global_rng = np.random.default_rng()


def default_rng() -> np.random.Generator:
    """The generator used when no model-level generator is given.

    Returns:
        The library-wide ``numpy.random.Generator`` (replaced by :func:`set_seed`).

    Example:
        >>> set_seed(0)
        >>> float(default_rng().uniform()) == float(np.random.default_rng(0).uniform())
        True
    """
    return _global_rng


def set_seed(seed: int | None) -> None:
    """Reseed the library-wide default generator (used by layers built outside a model).

    Args:
        seed: the seed of the new generator; ``None`` seeds it from the OS entropy.

    Example:
        >>> set_seed(42)
        >>> a = glorot_uniform((2, 2), 2, 2, default_rng())
        >>> set_seed(42)
        >>> bool(np.array_equal(a, glorot_uniform((2, 2), 2, 2, default_rng())))
        True
    """
    global _global_rng
    _global_rng = np.random.default_rng(seed)


def glorot_uniform(shape, fan_in, fan_out, rng, dtype=np.float32) -> np.ndarray:
    """``U(-a, a)`` with ``a = sqrt(6 / (fan_in + fan_out))`` (Keras' default).

    Args:
        shape: the shape of the array to draw, e.g. ``(n_in, n_out)`` or ``(O, C, kh, kw)``.
        fan_in: inputs per output unit (``n_in``, or ``C*kh*kw`` for a convolution).
        fan_out: outputs per input unit (``n_out``, or ``O*kh*kw`` for a convolution).
        rng: the ``numpy.random.Generator`` to draw from.
        dtype: the dtype of the result.

    Returns:
        An array of ``shape`` and ``dtype``.

    Example:
        >>> W = glorot_uniform((784, 128), 784, 128, np.random.default_rng(0))
        >>> W.shape, W.dtype, bool(np.abs(W).max() <= np.sqrt(6 / (784 + 128)))
        ((784, 128), dtype('float32'), True)
    """
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


def glorot_normal(shape, fan_in, fan_out, rng, dtype=np.float32) -> np.ndarray:
    """Truncated normal (at 2 std) with ``std = sqrt(2 / (fan_in + fan_out))``, as Keras.

    Args:
        shape: the shape of the array to draw, e.g. ``(n_in, n_out)`` or ``(O, C, kh, kw)``.
        fan_in: inputs per output unit (``n_in``, or ``C*kh*kw`` for a convolution).
        fan_out: outputs per input unit (``n_out``, or ``O*kh*kw`` for a convolution).
        rng: the ``numpy.random.Generator`` to draw from.
        dtype: the dtype of the result.

    Returns:
        An array of ``shape`` and ``dtype``.

    Example:
        >>> W = glorot_normal((256, 64), 256, 64, np.random.default_rng(0))
        >>> W.shape, W.dtype
        ((256, 64), dtype('float32'))
    """
    return _truncated_normal(shape, np.sqrt(2.0 / (fan_in + fan_out)), rng, dtype)


def he_uniform(shape, fan_in, fan_out, rng, dtype=np.float32) -> np.ndarray:
    """``U(-a, a)`` with ``a = sqrt(6 / fan_in)``.

    Args:
        shape: the shape of the array to draw, e.g. ``(n_in, n_out)`` or ``(O, C, kh, kw)``.
        fan_in: inputs per output unit (``n_in``, or ``C*kh*kw`` for a convolution).
        fan_out: unused (kept so every initializer has the same signature).
        rng: the ``numpy.random.Generator`` to draw from.
        dtype: the dtype of the result.

    Returns:
        An array of ``shape`` and ``dtype``.

    Example:
        >>> W = he_uniform((16, 3, 3, 3), 3 * 3 * 3, 16 * 3 * 3, np.random.default_rng(0))
        >>> W.shape, bool(np.abs(W).max() <= np.sqrt(6 / 27))
        ((16, 3, 3, 3), True)
    """
    limit = np.sqrt(6.0 / fan_in)
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


def he_normal(shape, fan_in, fan_out, rng, dtype=np.float32) -> np.ndarray:
    """Truncated normal (at 2 std) with ``std = sqrt(2 / fan_in)``, as Keras.

    Args:
        shape: the shape of the array to draw, e.g. ``(n_in, n_out)`` or ``(O, C, kh, kw)``.
        fan_in: inputs per output unit (``n_in``, or ``C*kh*kw`` for a convolution).
        fan_out: unused (kept so every initializer has the same signature).
        rng: the ``numpy.random.Generator`` to draw from.
        dtype: the dtype of the result.

    Returns:
        An array of ``shape`` and ``dtype``; every value lies within 2 std of 0.

    Example:
        >>> W = he_normal((64, 3, 3, 3), 27, 576, np.random.default_rng(0), dtype=np.float64)
        >>> W.shape, W.dtype
        ((64, 3, 3, 3), dtype('float64'))
    """
    return _truncated_normal(shape, np.sqrt(2.0 / fan_in), rng, dtype)


def zeros(shape, fan_in=0, fan_out=0, rng=None, dtype=np.float32) -> np.ndarray:
    """All zeros (the default for biases).

    Args:
        shape: the shape of the array.
        fan_in: unused (kept so every initializer has the same signature).
        fan_out: unused.
        rng: unused.
        dtype: the dtype of the result.

    Returns:
        An array of zeros of ``shape`` and ``dtype``.

    Example:
        >>> zeros((2, 3))
        array([[0., 0., 0.],
               [0., 0., 0.]], dtype=float32)
    """
    return np.zeros(shape, dtype=dtype)


def uniform_range(limit: float) -> Initializer:
    """The seed's ``W_init_range=r``: ``U(-r, r)``.

    Args:
        limit: the half-width ``r`` of the interval.

    Returns:
        An initializer ``init(shape, fan_in, fan_out, rng, dtype)`` drawing from ``U(-r, r)``.

    Example:
        >>> init = uniform_range(0.1)
        >>> W = init((3, 4), 3, 4, np.random.default_rng(0))
        >>> W.shape, bool(np.abs(W).max() <= 0.1)
        ((3, 4), True)
    """

    def init(shape, fan_in, fan_out, rng, dtype=np.float32) -> np.ndarray:
        return rng.uniform(-limit, limit, size=shape).astype(dtype)

    return init


def _truncated_normal(shape, std, rng, dtype) -> np.ndarray:
    # Redraw the values outside 2 std, as Keras' TruncatedNormal does; Keras rescales std by
    # 1/0.87962566 so the *truncated* distribution has the requested std.
    std = std / 0.87962566103423978
    out = rng.normal(0.0, std, size=shape)
    bad = np.abs(out) > 2 * std
    while bad.any():
        out[bad] = rng.normal(0.0, std, size=int(bad.sum()))
        bad = np.abs(out) > 2 * std
    return out.astype(dtype)


INITIALIZERS: dict[str, Initializer] = {
    "glorot_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
    "he_uniform": he_uniform,
    "he_normal": he_normal,
    "zeros": zeros,
}


def get(name_or_fn: str | Initializer) -> Initializer:
    """Look up an initializer by name; a callable is returned as is.

    Args:
        name_or_fn: ``"glorot_uniform"``, ``"glorot_normal"``, ``"he_uniform"``, ``"he_normal"``,
            ``"zeros"``, or an initializer function ``init(shape, fan_in, fan_out, rng, dtype)``.

    Returns:
        The initializer function.

    Raises:
        ValueError: for an unknown name (the message lists the known ones).

    Example:
        >>> get("he_uniform") is he_uniform
        True
    """
    if callable(name_or_fn):
        return name_or_fn
    try:
        return INITIALIZERS[name_or_fn]
    except KeyError:
        raise ValueError(f"unknown initializer {name_or_fn!r}; choose one of {sorted(INITIALIZERS)}") from None
