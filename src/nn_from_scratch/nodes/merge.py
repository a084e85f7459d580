"""Merge layers: several inputs, one output (residual sums, channel concatenation, gating).

They take a *list* of arrays in ``forward`` and return a *list* of gradients from ``backward``,
one per input. Per-sample shapes broadcast as in NumPy and torch (the batch axis must agree),
which is what a squeeze-and-excitation block needs: ``Multiply()([features, gates])`` with
``features`` ``(N, C, H, W)`` and ``gates`` ``(N, C, 1, 1)``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..interfaces import Node, Shape, as_float


def _reduce_to(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``grad`` over the axes along which an input of ``shape`` was broadcast."""
    if grad.shape == shape:
        return grad
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape) if s == 1 and grad.shape[lead + i] != 1)
    return grad.sum(axis=axes, keepdims=True).reshape(shape)


class _Merge(Node):
    """Shared input handling of the merge layers: a list of at least two batches."""

    n_inputs = None
    fixed_input_shape = True
    cache_attrs = ("_inputs",)

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self._inputs: list[np.ndarray] | None = None

    def build(self, input_shape: Any, rng: np.random.Generator | None = None) -> None:
        shapes = [tuple(int(s) for s in shape) for shape in input_shape]
        self.output_shape = tuple(int(s) for s in self.compute_output_shape(shapes))
        self.input_shape = shapes

    def _shapes_error(self, shapes: Sequence[Shape], rule: str) -> ValueError:
        shown = ", ".join("(batch, " + ", ".join(map(str, s)) + ")" for s in shapes)
        return ValueError(f"{self.name}: {rule}, got inputs of shapes {shown}")

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name}

    def check_inputs(self, xs: Any) -> list[np.ndarray]:
        if not isinstance(xs, (list, tuple)) or len(xs) < 2:
            raise TypeError(f"{self.name}: expected a list of at least two batches, got {type(xs).__name__}")
        xs = [as_float(np.asarray(x)) for x in xs]
        if len({x.shape[0] if x.ndim else -1 for x in xs}) != 1 or xs[0].ndim == 0:
            raise ValueError(f"{self.name}: every input needs the same batch size, got shapes {[x.shape for x in xs]}")
        shapes = [x.shape[1:] for x in xs]
        if not self.built:
            self.build(shapes)
        elif [tuple(s) for s in shapes] != [tuple(s) for s in self.input_shape]:
            raise self._shapes_error(shapes, f"expected inputs of shapes {self.input_shape}")
        return xs


class Add(_Merge):
    """Element-wise sum: ``y = x_1 + x_2 + ... + x_k`` (residual connections).

    Shapes: inputs ``(N, *s_i)`` whose per-sample shapes broadcast to ``s``; ``y`` is ``(N, *s)``.
    ``dL/dx_i`` is ``dL/dy`` summed over the axes that ``x_i`` was broadcast along.

    Args:
        name: the layer's name.

    Example:
        >>> Add().forward([np.ones((2, 3)), np.full((2, 3), 2.0)])[0]
        array([3., 3., 3.])
    """

    def compute_output_shape(self, input_shape: Sequence[Shape]) -> Shape:
        if len({len(s) for s in input_shape}) != 1:
            # (N, C, H, W) with (N, C) would align C with W: say so instead of guessing.
            raise self._shapes_error(input_shape, "the inputs need the same number of axes (use Reshape, e.g. to (C, 1, 1))")
        try:
            return np.broadcast_shapes(*input_shape)
        except ValueError:
            raise self._shapes_error(input_shape, "the inputs' shapes must match (or broadcast)") from None

    def forward(self, xs: Any) -> np.ndarray:
        xs = self.check_inputs(xs)
        self._inputs = [x.shape for x in xs]
        y = xs[0] + xs[1]
        for x in xs[2:]:
            y += x
        return y

    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> list[np.ndarray]:
        shapes = self._require_cache("_inputs")
        dL_dy = self.check_output_grad(dL_dy, shapes[0][0])
        return [_reduce_to(dL_dy, shape) for shape in shapes]


class Multiply(_Merge):
    """Element-wise product: ``y = x_1 * x_2 * ... * x_k`` (gates, squeeze-and-excitation).

    Shapes: as :class:`Add`. ``dL/dx_i = dL/dy * prod_{j != i} x_j``, summed over the axes that
    ``x_i`` was broadcast along.

    Args:
        name: the layer's name.

    Example:
        >>> Multiply().forward([np.full((1, 2, 3, 3), 2.0), np.full((1, 2, 1, 1), 3.0)]).shape
        (1, 2, 3, 3)
    """

    compute_output_shape = Add.compute_output_shape

    def forward(self, xs: Any) -> np.ndarray:
        xs = self.check_inputs(xs)
        self._inputs = xs
        y = xs[0] * xs[1]
        for x in xs[2:]:
            y = y * x
        return y

    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> list[np.ndarray]:
        xs = self._require_cache("_inputs")
        dL_dy = self.check_output_grad(dL_dy, xs[0].shape[0])
        grads = []
        for i, x in enumerate(xs):
            g = dL_dy
            for j, other in enumerate(xs):
                if j != i:
                    g = g * other
            grads.append(_reduce_to(g, x.shape))
        return grads


class Concatenate(_Merge):
    """Join inputs along a per-sample axis: ``y = [x_1, x_2, ...]`` along ``axis`` (U-Net skips).

    Shapes: inputs ``(N, *s_i)`` equal except along ``axis``; ``axis=1`` is the channel axis of
    NCHW batches (torch's ``torch.cat(dim=1)``). Negative axes count from the end. Backward
    slices ``dL/dy`` back into the inputs' parts.

    Args:
        axis: the axis of the batch ``(N, ...)`` to join along; not 0 (the batch axis).
        name: the layer's name.

    Example:
        >>> Concatenate(axis=1).forward([np.ones((2, 3, 4, 4)), np.ones((2, 5, 4, 4))]).shape
        (2, 8, 4, 4)
    """

    def __init__(self, axis: int = 1, name: str | None = None) -> None:
        super().__init__(name)
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise TypeError(f"{self.name}: axis must be an int, got {axis!r}")
        if axis == 0:
            raise ValueError(f"{self.name}: cannot concatenate along the batch axis 0")
        self.axis = int(axis)

    def _sample_axis(self, ndim: int) -> int:
        axis = self.axis - 1 if self.axis > 0 else ndim + self.axis
        if not 0 <= axis < ndim:
            raise ValueError(f"{self.name}: axis {self.axis} is out of range for inputs (batch, ...) with {ndim} sample axes")
        return axis

    def compute_output_shape(self, input_shape: Sequence[Shape]) -> Shape:
        ndims = {len(s) for s in input_shape}
        if len(ndims) != 1:
            raise self._shapes_error(input_shape, "the inputs need the same number of axes")
        axis = self._sample_axis(ndims.pop())
        rest = {tuple(s[:axis]) + tuple(s[axis + 1:]) for s in input_shape}
        if len(rest) != 1:
            raise self._shapes_error(input_shape, f"the inputs' shapes must match except along axis {self.axis}")
        out = list(input_shape[0])
        out[axis] = sum(s[axis] for s in input_shape)
        return tuple(out)

    def forward(self, xs: Any) -> np.ndarray:
        xs = self.check_inputs(xs)
        self._inputs = [x.shape for x in xs]
        return np.concatenate(xs, axis=1 + self._sample_axis(xs[0].ndim - 1))

    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> list[np.ndarray]:
        shapes = self._require_cache("_inputs")
        dL_dy = self.check_output_grad(dL_dy, shapes[0][0])
        axis = 1 + self._sample_axis(len(shapes[0]) - 1)
        bounds = np.cumsum([s[axis] for s in shapes])[:-1]
        return [np.array(part) for part in np.split(dL_dy, bounds, axis=axis)]

    def get_config(self) -> dict[str, Any]:
        return {"axis": self.axis, "name": self.name}
