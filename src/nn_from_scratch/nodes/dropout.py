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

    The cache between forward and backward is the boolean ``[u >= rate]`` (one byte per element,
    as torch's mask); ``m`` is rebuilt from it, so the values are those of the float mask.
    Inside a model's backward ``dL/dx`` is written over ``dL/dy`` (``output_grad_writable``).

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
    cache_attrs = ("_mask", "_mask_dtype")

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
        keep = rng.random(x.shape, dtype=np.float32) >= self.rate
        self._mask, self._mask_dtype = (keep, x.dtype) if self.keep_cache else (None, None)
        return x * self._scaled(keep, x.dtype)

    def _scaled(self, keep: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """``m = [u >= rate] / (1 - rate)`` in ``dtype`` (a temporary; the cache is the boolean)."""
        mask = keep.astype(dtype)
        mask /= dtype.type(1.0 - self.rate)  # divide, not multiply by the reciprocal: torch's rounding
        return mask

    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray:
        dL_dy = np.asarray(dL_dy)
        if self._mask is None:
            return dL_dy
        if dL_dy.shape != self._mask.shape:
            raise ValueError(f"{self.name}: expected dL_dy of shape {self._mask.shape}, got {dL_dy.shape}")
        mask = self._scaled(self._mask, self._mask_dtype)  # in x's dtype, as the forward's
        if self.output_grad_writable and dL_dy.flags.writeable and dL_dy.dtype == np.result_type(dL_dy, mask):
            return np.multiply(dL_dy, mask, out=dL_dy)
        return dL_dy * mask

    def get_config(self) -> dict[str, Any]:
        return {"rate": self.rate, "name": self.name}
