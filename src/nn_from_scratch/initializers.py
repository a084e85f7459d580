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
    """The generator used when no model-level generator is given."""
    return _global_rng


def set_seed(seed: int | None) -> None:
    """Reseed the library-wide default generator (used by layers built outside a model)."""
    global _global_rng
    _global_rng = np.random.default_rng(seed)


def glorot_uniform(shape, fan_in, fan_out, rng, dtype=np.float32) -> np.ndarray:
    """``U(-a, a)`` with ``a = sqrt(6 / (fan_in + fan_out))`` (Keras' default)."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


def glorot_normal(shape, fan_in, fan_out, rng, dtype=np.float32) -> np.ndarray:
    """Truncated normal (at 2 std) with ``std = sqrt(2 / (fan_in + fan_out))``, as Keras."""
    return _truncated_normal(shape, np.sqrt(2.0 / (fan_in + fan_out)), rng, dtype)


def he_uniform(shape, fan_in, fan_out, rng, dtype=np.float32) -> np.ndarray:
    """``U(-a, a)`` with ``a = sqrt(6 / fan_in)``."""
    limit = np.sqrt(6.0 / fan_in)
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


def he_normal(shape, fan_in, fan_out, rng, dtype=np.float32) -> np.ndarray:
    """Truncated normal (at 2 std) with ``std = sqrt(2 / fan_in)``, as Keras."""
    return _truncated_normal(shape, np.sqrt(2.0 / fan_in), rng, dtype)


def zeros(shape, fan_in=0, fan_out=0, rng=None, dtype=np.float32) -> np.ndarray:
    return np.zeros(shape, dtype=dtype)


def uniform_range(limit: float) -> Initializer:
    """The seed's ``W_init_range=r``: ``U(-r, r)``."""

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
    if callable(name_or_fn):
        return name_or_fn
    try:
        return INITIALIZERS[name_or_fn]
    except KeyError:
        raise ValueError(f"unknown initializer {name_or_fn!r}; choose one of {sorted(INITIALIZERS)}") from None
