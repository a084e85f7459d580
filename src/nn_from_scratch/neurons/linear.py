"""Fully connected layer."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import initializers
from ..interfaces import Neuron, Shape, per_sample_shape


class Linear(Neuron):
    """Affine map ``y = x @ W[1:] + W[0]``.

    Shapes: ``x`` (N, n_in) -> ``y`` (N, n_out). The weight matrix ``W`` has shape
    ``(n_in + 1, n_out)`` with the bias in row 0 (the seed's layout, which treats the bias as
    the weight of a constant input 1). Gradients::

        dL/dW[1:] = x.T @ dL/dy       dL/dW[0] = sum_n dL/dy[n]       dL/dx = dL/dy @ W[1:].T

    ``input_dim`` and ``output_dim`` may include the batch size, as the seed passed them
    (``Linear((50, 800), (50, 10))``); it is ignored. ``input_dim`` may be left out and
    inferred from the first input: ``Linear(output_dim=10)``.

    Args:
        input_dim: ``n_in`` (or the seed's ``(batch, n_in)``), or ``None`` to infer it.
        output_dim: ``n_out`` (or ``(batch, n_out)``); required.
        W: initial weights ``(n_in + 1, n_out)``, bias in row 0 (kept as given, not redrawn).
        W_init_range: draw ``W`` uniformly from ``[-r, r]`` instead of ``kernel_initializer``.
        kernel_initializer: name or callable for ``W[1:]`` (default Glorot-uniform; the bias starts at 0).
        dtype: float32 (default) or float64.
        name: the layer's name.

    Example:
        >>> layer = Linear(input_dim=3, output_dim=2, W=np.array([[1.0, -1.0], [1, 0], [0, 1], [1, 1]]))
        >>> layer.forward(np.array([[1.0, 2.0, 3.0]]))
        array([[5., 4.]], dtype=float32)
    """

    parameter_names = ("W",)
    cache_attrs = ("_x",)

    def __init__(
        self,
        input_dim: Any = None,
        output_dim: Any = None,
        W: np.ndarray | None = None,
        W_init_range: float | None = None,
        *,
        kernel_initializer: str | initializers.Initializer = "glorot_uniform",
        dtype: Any = np.float32,
        name: str | None = None,
    ) -> None:
        super().__init__(name, dtype)
        if output_dim is None:
            raise ValueError(f"{self.name}: output_dim is required, e.g. Linear(output_dim=10)")
        self.n_out = per_sample_shape(output_dim, what="output_dim", who=self.name)[-1]
        self.W_init_range = W_init_range
        self.kernel_initializer = kernel_initializer
        self._init = initializers.uniform_range(W_init_range) if W_init_range else initializers.get(kernel_initializer)
        self.W: np.ndarray | None = None
        self._W_pd: np.ndarray | None = None
        self._x: np.ndarray | None = None
        if W is not None:
            W = np.asarray(W, dtype=self.dtype)
            if W.ndim != 2 or W.shape[1] != self.n_out:
                raise ValueError(f"{self.name}: expected W of shape (n_in + 1, {self.n_out}), got {W.shape}")
            self.W, self.user_weights = W, True
            self.build((W.shape[0] - 1,))
        elif input_dim is not None:
            self.build((per_sample_shape(input_dim, what="input_dim", who=self.name)[-1],))

    @property
    def n_in(self) -> int | None:
        return None if self.input_shape is None else self.input_shape[0]

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 1:
            raise ValueError(
                f"{self.name}: expected input of shape (batch, features), got (batch, {', '.join(map(str, input_shape))}); "
                "flatten it first with Vectorization"
            )
        if self.W is not None and input_shape[0] != self.W.shape[0] - 1:
            raise ValueError(f"{self.name}: expected input of shape (batch, {self.W.shape[0] - 1}), got (batch, {input_shape[0]})")
        return (self.n_out,)

    def build(self, input_shape: Shape, rng: np.random.Generator | None = None) -> None:
        super().build(input_shape)
        if self.W is None:
            self.reset_parameters(rng)

    def reset_parameters(self, rng: np.random.Generator | None = None) -> None:
        rng = rng or initializers.default_rng()
        n_in = self.n_in
        W = np.empty((n_in + 1, self.n_out), dtype=self.dtype)
        W[1:] = self._init((n_in, self.n_out), n_in, self.n_out, rng, self.dtype)
        W[0] = 0.0
        if self.W is None:
            self.W = W
        else:
            self.W[...] = W  # in place, so optimizer state keyed by the array stays valid
        self.zero_grad()

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self.cast_input(self.check_input(x))
        self._x = x if self.keep_cache else None  # a model's inference pass keeps nothing
        y = x @ self.W[1:]
        y += self.W[0]  # in place: one array allocated per call, not two
        return y

    can_skip_input_grad = True

    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """Add dL/dW to ``_W_pd`` (as torch adds to ``.grad``); return dL/dx.

        ``need_input_grad=False`` skips dL/dx and returns ``None`` (first layer of a model).
        """
        x = self._require_cache("_x")
        dL_dy = self.check_output_grad(dL_dy, x.shape[0], self.dtype)
        grad = np.empty_like(self.W)
        np.matmul(x.T, dL_dy, out=grad[1:])
        np.sum(dL_dy, axis=0, out=grad[0])
        self.accumulate_gradient("W", grad)
        return dL_dy @ self.W[1:].T if need_input_grad else None

    def get_config(self) -> dict[str, Any]:
        return {
            "input_dim": self.n_in,
            "output_dim": self.n_out,
            "W_init_range": self.W_init_range,
            "kernel_initializer": self.kernel_initializer if isinstance(self.kernel_initializer, str) else "glorot_uniform",
            "dtype": self.dtype.name,
            "name": self.name,
        }
