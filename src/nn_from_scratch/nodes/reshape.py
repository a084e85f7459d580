"""Layers that only rearrange their input."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..interfaces import Node, Shape, per_sample_shape


class Vectorization(Node):
    """Flatten each sample: ``(N, d1, d2, ...) -> (N, d1*d2*...)``, in C order.

    C order on NCHW means channel-major: ``(c, h, w)`` becomes index ``c*H*W + h*W + w``
    (PyTorch's ``Flatten``; Keras flattens NHWC, which :mod:`nn_from_scratch.interop` handles).
    ``input_dim`` may include the batch size, as in the seed: ``Vectorization((50, 2, 20, 20))``.
    """

    cache_attrs = ("_x_shape",)

    def __init__(self, input_dim: Any = None, name: str | None = None) -> None:
        super().__init__(name)
        shape = per_sample_shape(input_dim)
        self._declared = shape  # the seed's shape, with or without batch size; checked at build
        self._x_shape: tuple[int, ...] | None = None

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        declared = self._declared
        if declared is not None and tuple(input_shape) not in (declared, declared[1:]):
            raise ValueError(f"{self.name}: expected input of shape (batch, {', '.join(map(str, declared[-len(input_shape):]))}), got (batch, {', '.join(map(str, input_shape))})")
        return (int(np.prod(input_shape)),)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self.check_input(x)
        self._x_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray:
        x_shape = self._require_cache("_x_shape")
        return self.check_output_grad(dL_dy, x_shape[0]).reshape(x_shape)

    def get_config(self) -> dict[str, Any]:
        return {"input_dim": None if self.input_shape is None else list(self.input_shape), "name": self.name}
