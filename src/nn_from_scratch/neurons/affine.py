"""What the normalisation layers share: a per-channel scale ``gamma`` and shift ``beta`` that the
user may pass at construction (the same checks for batch norm and group norm)."""

from __future__ import annotations

from typing import Any

import numpy as np


def take_affine(layer: Any, gamma: Any, beta: Any, channels: int | None) -> int | None:
    """Check user-given ``gamma``/``beta`` (1-D, ``channels`` long when known), set them on ``layer``.

    Args:
        layer: the layer (its ``name`` and ``dtype`` are read; ``gamma``, ``beta`` and
            ``user_weights`` are set).
        gamma: the scale, ``(C,)``, or None.
        beta: the shift, ``(C,)``, or None.
        channels: ``C`` when already known, else None.

    Returns:
        The number of channels, known from ``channels`` or from the arrays (None if neither says).

    Example:
        >>> from types import SimpleNamespace
        >>> layer = SimpleNamespace(name="bn", dtype=np.float64)
        >>> take_affine(layer, np.ones(3), None, None), layer.gamma.shape, layer.user_weights
        (3, (3,), True)
    """
    for what, value in (("gamma", gamma), ("beta", beta)):
        if value is None:
            continue
        value = np.array(value, dtype=layer.dtype)
        if value.ndim != 1 or (channels is not None and value.shape[0] != channels):
            expected = f"({channels},)" if channels is not None else "(channels,)"
            raise ValueError(f"{layer.name}: expected {what} of shape {expected}, got {value.shape}")
        channels = value.shape[0]
        setattr(layer, what, value)
        layer.user_weights = True
    return channels
