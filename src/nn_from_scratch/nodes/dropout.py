"""Inverted dropout."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import initializers
from ..interfaces import Node, as_float


class Dropout(Node):
    """Inverted dropout: in training mode each element is zeroed with probability ``rate`` and
    the survivors are scaled by ``1 / (1 - rate)``, so the expected output equals the input;
    in inference mode (``self.training`` False) the layer is the identity.

    Training::

        m[...] = [u >= rate] / (1 - rate),   u ~ U[0, 1) per element (float32 draws)
        y = x * m                            dL/dx = dL/dy * m   (the same mask)

    Shapes: any ``(N, ...)``, unchanged. The uniform draws come from ``self.rng`` -- any object
    with numpy's ``random(size, dtype=...)`` method, which :class:`~nn_from_scratch.Sequential`
    sets to the model's generator -- or, when unset, :func:`nn_from_scratch.initializers.default_rng`.

    Args:
        rate: the probability of zeroing an element, in ``[0, 1)``.
        name: the layer's name.

    Example:
        >>> layer = Dropout(0.5)
        >>> layer.training = False                   # inference: the identity
        >>> layer.forward(np.ones((1, 4)))
        array([[1., 1., 1., 1.]])
    """

    fixed_input_shape = False
    cache_attrs = ("_mask",)

    def __init__(self, rate: float, name: str | None = None) -> None:
        super().__init__(name)
        rate = float(rate)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"{self.name}: rate must be in [0, 1), got {rate}")
        self.rate = rate
        self.rng: Any = None
        self._mask: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float(self.check_input(x))  # the mask carries the 1/(1 - rate) scale
        if not self.training or self.rate == 0.0:
            self._mask = None
            return x
        rng = self.rng if self.rng is not None else initializers.default_rng()
        mask = (rng.random(x.shape, dtype=np.float32) >= self.rate).astype(x.dtype)
        mask /= x.dtype.type(1.0 - self.rate)  # divide, not multiply by the reciprocal: torch's rounding
        self._mask = mask
        return x * mask

    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray:
        dL_dy = np.asarray(dL_dy)
        if self._mask is None:
            return dL_dy
        if dL_dy.shape != self._mask.shape:
            raise ValueError(f"{self.name}: expected dL_dy of shape {self._mask.shape}, got {dL_dy.shape}")
        return dL_dy * self._mask

    def get_config(self) -> dict[str, Any]:
        return {"rate": self.rate, "name": self.name}
