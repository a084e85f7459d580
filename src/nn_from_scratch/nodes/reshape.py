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

    Args:
        input_dim: the per-sample input shape (or the seed's shape with the batch size), or
            ``None`` to take it from the first input.
        name: the layer's name.

    Example:
        >>> Vectorization().forward(np.zeros((5, 2, 3, 4))).shape
        (5, 24)
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


class Reshape(Node):
    """Give each sample a new shape: ``(N, *input_shape) -> (N, *target_shape)``, in C order.

    ``target_shape`` is per sample (no batch size), as ``keras.layers.Reshape``; one entry may be
    ``-1``, inferred from the number of values per sample (Keras and ``torch.reshape`` allow one
    too). The per-sample sizes must match: ``(batch, 2, 3)`` cannot become ``(batch, 4, 2)``
    (ValueError naming the layer and both sizes). Backward reshapes ``dL/dy`` back.

    On NCHW images the order is ours, channel-major: ``Reshape((C * H * W,))`` is
    :class:`Vectorization`, and ``Reshape((C, H, W))`` after a ``Linear`` is torch's
    ``nn.Unflatten(1, (C, H, W))`` (Keras, channels-last, reshapes ``(H, W, C)`` order instead;
    :mod:`nn_from_scratch.interop` handles that).

    Args:
        target_shape: the per-sample output shape, positive ints and at most one ``-1``.
        name: layer name.

    Example::

        >>> Reshape((2, -1)).forward(np.arange(12.0).reshape(2, 6)).shape
        (2, 2, 3)
    """

    cache_attrs = ("_x_shape",)
    can_skip_input_grad = True

    def __init__(self, target_shape: Any, name: str | None = None) -> None:
        super().__init__(name)
        if isinstance(target_shape, (int, np.integer)):
            target_shape = (target_shape,)
        try:
            target = tuple(int(s) for s in target_shape)
        except (TypeError, ValueError):
            raise TypeError(f"{self.name}: target_shape must be a tuple of ints, got {target_shape!r}") from None
        if not target or any(s < 1 and s != -1 for s in target) or target.count(-1) > 1 or \
                any(isinstance(s, bool) or float(s) != int(s) for s in target_shape):
            raise ValueError(f"{self.name}: target_shape must be one or more positive ints with at most one -1, "
                             f"got {tuple(target_shape)}")
        self.target_shape = target
        self._x_shape: tuple[int, ...] | None = None

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        size = int(np.prod(input_shape))
        known = int(np.prod([s for s in self.target_shape if s != -1]))
        what = f"(batch, {', '.join(map(str, input_shape))}) ({size} values per sample)"
        if -1 in self.target_shape:
            if known == 0 or size % known:
                raise ValueError(f"{self.name}: cannot reshape input of shape {what} into (batch, "
                                 f"{', '.join(map(str, self.target_shape))}): {size} is not a multiple of {known}")
            return tuple(size // known if s == -1 else s for s in self.target_shape)
        if known != size:
            raise ValueError(f"{self.name}: cannot reshape input of shape {what} into (batch, "
                             f"{', '.join(map(str, self.target_shape))}) ({known} values per sample)")
        return self.target_shape

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self.check_input(x)
        self._x_shape = x.shape
        return x.reshape((x.shape[0], *self.output_shape))

    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        x_shape = self._require_cache("_x_shape")
        if not need_input_grad:
            return None
        return self.check_output_grad(dL_dy, x_shape[0]).reshape(x_shape)

    def get_config(self) -> dict[str, Any]:
        return {"target_shape": list(self.target_shape), "name": self.name}
