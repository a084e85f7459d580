"""Element-wise activations, softmax and log-softmax."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import kernels
from ..interfaces import Node, as_float


class Activation(Node):
    """Base for activations: accepts the seed's ``n_input`` shape argument and ignores it.

    Subclasses implement ``forward(x)`` and ``backward(dL_dy, need_input_grad=True)``, keeping
    what backward reads in ``cache_attrs``; shapes: any ``(N, ...)``, unchanged.

    Args:
        n_input: ignored; accepted so that the seed's ``ReLU((50, 4, 26, 26))`` still works.
        name: the layer's name (default: the class name).

    Example:
        >>> isinstance(ReLU(), Activation)
        True
    """

    fixed_input_shape = False

    def __init__(self, n_input: Any = None, name: str | None = None) -> None:
        super().__init__(name)
        self.n_input = n_input  # kept only so the seed's call ReLU((50, 4, 26, 26)) works

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name}


class ReLU(Activation):
    """``y = max(x, 0)``; ``dL/dx = dL/dy * [x > 0]``.

    Shapes: any ``(N, ...)``, unchanged.

    Args:
        n_input: ignored; accepted so that the seed's ``ReLU((50, 4, 26, 26))`` still works.
        name: the layer's name (default: the class name).

    Example:
        >>> ReLU().forward(np.array([[-1.0, 0.0, 2.0]]))
        array([[0., 0., 2.]])
    """

    cache_attrs = ("_y",)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self.check_input(x)
        y = np.maximum(x, 0)
        self._y = y if self.keep_cache else None  # the output itself: no copy
        return y

    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray:
        y = self._require_cache("_y")
        # y > 0 exactly where x > 0, so the output is all the backward pass needs. A product
        # with the mask is ~8x faster than np.where, whose per-element branch mispredicts on
        # random signs; it differs only where dL/dy is inf or NaN at x <= 0 (NaN, not 0).
        # Inside a model's backward dL/dy is a scratch array: dL/dx overwrites it, chunk by chunk
        # (no new array, no whole-size mask; 128x32x32x32 float32: 3.0 ms instead of 4.6).
        # A dL/dy laid out like y but not as one block (a convolution's dL/dx, cropped from its
        # padded buffer) goes to a new array in y's layout, which the layers before read fastest.
        dL_dy = np.asarray(dL_dy)
        in_place = (self.output_grad_writable and dL_dy.flags.writeable and dL_dy.shape == y.shape
                    and dL_dy.dtype == y.dtype and dL_dy.strides == y.strides)
        return kernels.relu_backward(dL_dy, y, out=dL_dy if in_place else None)


class LeakyReLU(Activation):
    """``y = x if x > 0 else alpha * x``; ``dL/dx = dL/dy * (1 if x > 0 else alpha)``.

    Shapes: any ``(N, ...)``, unchanged.

    Args:
        alpha: the slope below zero (torch's ``negative_slope``, default 0.01).
        n_input: ignored (the seed's shape argument).
        name: the layer's name.

    Example:
        >>> LeakyReLU(alpha=0.1).forward(np.array([[-2.0, 3.0]]))
        array([[-0.2,  3. ]])
    """

    cache_attrs = ("_x",)

    def __init__(self, alpha: float = 0.01, n_input: Any = None, name: str | None = None) -> None:
        super().__init__(n_input, name)
        self.alpha = float(alpha)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = self.check_input(x)
        return np.where(self._x > 0, self._x, self.alpha * self._x)

    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray:
        return np.where(self._require_cache("_x") > 0, dL_dy, self.alpha * dL_dy)

    def get_config(self) -> dict[str, Any]:
        return {"alpha": self.alpha, **super().get_config()}


class Sigmoid(Activation):
    """``y = 1 / (1 + exp(-x))``; ``dL/dx = dL/dy * y * (1 - y)``.

    Shapes: any ``(N, ...)``, unchanged.

    Args:
        n_input: ignored (the seed's shape argument).
        name: the layer's name.

    Example:
        >>> Sigmoid().forward(np.array([[0.0]]))
        array([[0.5]])
    """

    cache_attrs = ("_y",)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self.check_input(x)
        # exp of a non-positive number only, so neither branch overflows.
        e = np.exp(-np.abs(x))
        self._y = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
        return self._y

    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray:
        y = self._require_cache("_y")
        return dL_dy * y * (1 - y)


class Tanh(Activation):
    """``y = tanh(x)``; ``dL/dx = dL/dy * (1 - y^2)``.

    Shapes: any ``(N, ...)``, unchanged.

    Args:
        n_input: ignored (the seed's shape argument).
        name: the layer's name.

    Example:
        >>> Tanh().forward(np.array([[0.0]]))
        array([[0.]])
    """

    cache_attrs = ("_y",)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._y = np.tanh(self.check_input(x))
        return self._y

    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray:
        y = self._require_cache("_y")
        return dL_dy * (1 - y * y)


class SoftMax(Activation):
    """Softmax over the last axis: ``y_k = exp(x_k - max x) / sum_j exp(x_j - max x)``.

    Backward is the Jacobian-vector product ``dL/dx = y * (dL/dy - sum_k dL/dy_k y_k)``.
    For training a classifier, use :class:`SoftMaxLoss` on the logits instead: it fuses
    softmax and cross-entropy, which is both stabler and cheaper.

    Shapes: ``(N, ..., K)``, unchanged; each row along the last axis sums to 1.

    Args:
        n_input: ignored (the seed's shape argument).
        name: the layer's name.

    Example:
        >>> SoftMax().forward(np.array([[0.0, 0.0]]))
        array([[0.5, 0.5]])
    """

    cache_attrs = ("_y",)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self.check_input(x)
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        self._y = e / e.sum(axis=-1, keepdims=True)
        return self._y

    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray:
        y = self._require_cache("_y")
        return y * (dL_dy - np.sum(dL_dy * y, axis=-1, keepdims=True))


# -- activations of modern CNNs: each follows torch's CPU formulas, edge cases included --------
def _as_input_dtype(a: np.ndarray, like: np.ndarray) -> np.ndarray:
    return a.astype(like.dtype, copy=False)


def _output_grad(layer: Node, dL_dy: Any, like: np.ndarray) -> np.ndarray:
    """``dL_dy`` as an array of the shape of the cached ``like``; ValueError naming the layer otherwise."""
    dL_dy = np.asarray(dL_dy)
    if dL_dy.shape != like.shape:
        raise ValueError(f"{layer.name}: expected dL_dy of shape {like.shape}, got {dL_dy.shape}")
    return dL_dy


class GELU(Activation):
    """Gaussian error linear unit, as ``torch.nn.GELU``.

    ``approximate="none"``: ``y = x * Phi(x)`` with ``Phi(x) = erfc(-x / sqrt(2)) / 2`` the normal
    CDF, ``dL/dx = dL/dy * (Phi(x) + x * phi(x))``, ``phi(x) = exp(-x^2 / 2) / sqrt(2 pi)``.
    Evaluated in the input's precision with :func:`kernels.erfc` (float32 in float32).

    ``approximate="tanh"``: ``y = x/2 * (1 + tanh(u))``, ``u = sqrt(2/pi) * (x + 0.044715 x^3)``,
    ``dL/dx = dL/dy * ((1 + tanh u)/2 + x/2 * (1 - tanh^2 u) * sqrt(2/pi) * (1 + 3 * 0.044715 x^2))``,
    in the input's dtype, torch's expression term for term.

    Shapes: any ``(N, ...)``, output of the same shape. Edge values are torch's: ``-inf -> NaN``
    (``-inf * 0``), ``+inf -> +inf`` with gradient NaN, NaN propagates. Two deliberate
    differences, both in the exact form: torch writes ``Phi`` as ``(1 + erf(x/sqrt 2)) / 2``,
    which cancels for ``x < -5`` (at ``x = -8`` torch is 2% off, below 1e-14 absolute), where
    ``erfc`` keeps full precision; and torch's float32 kernel gives NaN at ``+inf``, where this
    layer (like torch in float64) gives ``+inf``.

    Args:
        approximate: ``"none"`` (the exact erf form) or ``"tanh"``.
        name: layer name.

    Example::

        >>> GELU().forward(np.array([[-1.0, 0.0, 1.0]]))
        array([[-0.15865525,  0.        ,  0.84134475]])
    """

    cache_attrs = ("_x",)
    can_skip_input_grad = True

    _SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
    _KAPPA = 0.044715

    def __init__(self, approximate: str = "none", name: str | None = None) -> None:
        super().__init__(None, name)
        if approximate not in ("none", "tanh"):
            raise ValueError(f"{self.name}: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float(self.check_input(x))
        self._x = x
        with np.errstate(over="ignore", invalid="ignore"):
            if self.approximate == "tanh":
                x_cube = x * x * x  # (x * x) * x, torch's order (it decides where float32 overflows)
                inner = x.dtype.type(self._SQRT_2_OVER_PI) * (x + x.dtype.type(self._KAPPA) * x_cube)
                return 0.5 * x * (1 + np.tanh(inner))
            return 0.5 * x * kernels.erfc(-x * math.sqrt(0.5))

    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        x = self._require_cache("_x")
        if not need_input_grad:
            return None
        dL_dy = _output_grad(self, dL_dy, x)
        with np.errstate(over="ignore", invalid="ignore"):
            if self.approximate == "tanh":
                kappa, beta = x.dtype.type(self._KAPPA), x.dtype.type(self._SQRT_2_OVER_PI)
                x_sq = x * x
                t = np.tanh(beta * (x + kappa * (x_sq * x)))
                left = 0.5 * x
                right_derivative = left * (1 - t * t) * (beta * (1 + 3 * kappa * x_sq))
                return _as_input_dtype(dL_dy * (0.5 * (1 + t) + right_derivative), x)
            cdf = 0.5 * kernels.erfc(-x * math.sqrt(0.5))
            cdf += x * (np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi))  # Phi(x) + x phi(x)
            return _as_input_dtype(dL_dy * cdf, x)

    def get_config(self) -> dict[str, Any]:
        return {"approximate": self.approximate, **super().get_config()}


class SiLU(Activation):
    """Sigmoid linear unit (swish), as ``torch.nn.SiLU``: ``y = x * sigmoid(x) = x / (1 + exp(-x))``.

    ``dL/dx = dL/dy * s * (1 + x * (1 - s))`` with ``s = sigmoid(x)``, torch's expressions, so the
    edges are torch's: ``-inf -> NaN`` (``-inf / inf``), ``+inf -> +inf``, NaN propagates.
    Shapes: any ``(N, ...)``, output of the same shape and dtype.

    Args:
        name: layer name.

    Example::

        >>> SiLU().forward(np.array([[-1.0, 0.0, 1.0]]))
        array([[-0.26894142,  0.        ,  0.73105858]])
    """

    cache_attrs = ("_x",)
    can_skip_input_grad = True

    def __init__(self, name: str | None = None) -> None:
        super().__init__(None, name)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float(self.check_input(x))
        self._x = x
        with np.errstate(over="ignore", invalid="ignore"):
            return x / (1 + np.exp(-x))

    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        x = self._require_cache("_x")
        if not need_input_grad:
            return None
        with np.errstate(over="ignore", invalid="ignore"):
            s = 1 / (1 + np.exp(-x))
            return _as_input_dtype(_output_grad(self, dL_dy, x) * s * (1 + x * (1 - s)), x)


class ELU(Activation):
    """Exponential linear unit, as ``torch.nn.ELU``: ``y = x`` if ``x > 0`` else ``alpha * expm1(x)``.

    ``dL/dx = dL/dy`` if ``x > 0`` else ``dL/dy * alpha * exp(x)`` (at ``x = 0`` the second
    branch, ``alpha``, as torch). Edges as torch: ``-inf -> -alpha`` (gradient 0), ``+inf -> +inf``.
    A NaN input gives a NaN output and a NaN gradient: torch's kernels disagree there (``dL/dy``
    in float32 and in float64 tensors of under 16 elements, NaN in its vectorised float64 loop);
    this layer always propagates the NaN.
    Shapes: any ``(N, ...)``, output of the same shape and dtype.

    Args:
        alpha: the value approached for ``x -> -inf`` (finite; torch's default 1.0).
        name: layer name.

    Example::

        >>> ELU(alpha=1.0).forward(np.array([[-1.0, 0.0, 2.0]]))
        array([[-0.63212056,  0.        ,  2.        ]])
    """

    cache_attrs = ("_x",)
    can_skip_input_grad = True

    def __init__(self, alpha: float = 1.0, name: str | None = None) -> None:
        super().__init__(None, name)
        if not math.isfinite(float(alpha)):
            raise ValueError(f"{self.name}: alpha must be a finite number, got {alpha!r}")
        self.alpha = float(alpha)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float(self.check_input(x))
        self._x = x
        with np.errstate(over="ignore", invalid="ignore"):
            return np.where(x <= 0, x.dtype.type(self.alpha) * np.expm1(x), x)

    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        x = self._require_cache("_x")
        if not need_input_grad:
            return None
        dL_dy = _output_grad(self, dL_dy, x)
        with np.errstate(over="ignore", invalid="ignore"):
            return _as_input_dtype(np.where(x > 0, dL_dy, dL_dy * (x.dtype.type(self.alpha) * np.exp(x))), x)

    def get_config(self) -> dict[str, Any]:
        return {"alpha": self.alpha, **super().get_config()}


class Softplus(Activation):
    """Softplus, as ``torch.nn.Softplus``: ``y = log1p(exp(beta x)) / beta``, and ``y = x`` where
    ``beta x > threshold`` (torch's switch to the linear function, for stability).

    ``dL/dx = dL/dy * z / (z + 1)`` with ``z = exp(beta x)``, and ``dL/dy`` where
    ``beta x > threshold``. Edges as torch: ``-inf -> 0`` (gradient 0), ``+inf -> +inf``
    (gradient ``dL/dy``), NaN propagates to both.
    Shapes: any ``(N, ...)``, output of the same shape and dtype.

    Args:
        beta: the sharpness (finite, > 0; torch's default 1).
        threshold: above ``beta x > threshold`` the output is ``x`` (torch's default 20).
        name: layer name.

    Example::

        >>> Softplus().forward(np.array([[-1.0, 0.0, 30.0]]))
        array([[ 0.31326169,  0.69314718, 30.        ]])
    """

    cache_attrs = ("_x",)
    can_skip_input_grad = True

    def __init__(self, beta: float = 1.0, threshold: float = 20.0, name: str | None = None) -> None:
        super().__init__(None, name)
        if not (math.isfinite(float(beta)) and float(beta) > 0):
            raise ValueError(f"{self.name}: beta must be a finite number > 0, got {beta!r}")
        if math.isnan(float(threshold)):
            raise ValueError(f"{self.name}: threshold must be a number, got {threshold!r}")
        self.beta = float(beta)
        self.threshold = float(threshold)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float(self.check_input(x))
        self._x = x
        t = x.dtype.type
        bx = x * t(self.beta)
        with np.errstate(over="ignore", invalid="ignore"):
            return np.where(bx > t(self.threshold), x, np.log1p(np.exp(bx)) / t(self.beta))

    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        x = self._require_cache("_x")
        if not need_input_grad:
            return None
        t = x.dtype.type
        dL_dy = _output_grad(self, dL_dy, x)
        bx = x * t(self.beta)
        with np.errstate(over="ignore", invalid="ignore"):
            z = np.exp(bx)
            return _as_input_dtype(np.where(bx > t(self.threshold), dL_dy, dL_dy * z / (z + 1)), x)

    def get_config(self) -> dict[str, Any]:
        return {"beta": self.beta, "threshold": self.threshold, **super().get_config()}


class LogSoftMax(Activation):
    """Log of the softmax along ``axis``, as ``torch.nn.LogSoftmax(dim=axis)``::

        y = (x - m) - log(sum_k exp(x_k - m)),      m = max_k x_k
        dL/dx = dL/dy - exp(y) * sum_k dL/dy_k

    ``axis`` counts the batch axis as 0 (torch's ``dim``, Keras' ``axis``) and may not be 0.
    The default, the last axis, is the class axis of ``(N, classes)`` logits (torch's ``dim=-1``,
    ``dim=1`` there) and the same axis :class:`SoftMax` uses; for ``(N, C, H, W)`` maps, pass
    ``axis=1`` to normalise over the channels. Edges as torch: a ``-inf`` logit gets ``-inf`` (and
    its ``dL/dy`` passes through), a slice that is all ``-inf``, holds ``+inf`` or holds NaN is
    all NaN. Shapes: any ``(N, ...)`` with at least ``|axis|`` per-sample axes; output of the same
    shape and dtype. With :class:`nn_from_scratch.losses` prefer ``SoftMaxLoss`` on logits; this
    layer is for models that output log-probabilities (``nn.NLLLoss`` style).

    Args:
        axis: the axis normalised over (int, not 0; default -1).
        name: layer name.

    Example::

        >>> LogSoftMax().forward(np.array([[0.0, 0.0]]))
        array([[-0.69314718, -0.69314718]])
    """

    cache_attrs = ("_y",)
    can_skip_input_grad = True

    def __init__(self, axis: int = -1, name: str | None = None) -> None:
        super().__init__(None, name)
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or axis == 0:
            raise ValueError(f"{self.name}: axis must be a non-zero int (axis 0 is the batch), got {axis!r}")
        self.axis = int(axis)

    def _axis(self, ndim: int) -> int:
        if not -ndim <= self.axis < ndim or self.axis % ndim == 0:
            raise ValueError(f"{self.name}: axis {self.axis} is not a per-sample axis of a batch with {ndim} axes "
                             f"(expected input of shape (batch, ...) with at least {abs(self.axis)} per-sample axes)")
        return self.axis % ndim

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float(self.check_input(x))
        axis = self._axis(x.ndim)
        with np.errstate(invalid="ignore", over="ignore"):
            shifted = x - x.max(axis=axis, keepdims=True)
            self._y = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
        return self._y

    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        y = self._require_cache("_y")
        if not need_input_grad:
            return None
        dL_dy = _output_grad(self, dL_dy, y)
        with np.errstate(invalid="ignore", over="ignore"):
            return _as_input_dtype(dL_dy - np.exp(y) * dL_dy.sum(axis=self._axis(y.ndim), keepdims=True), y)

    def get_config(self) -> dict[str, Any]:
        return {"axis": self.axis, **super().get_config()}


class Identity(Activation):
    """``y = x`` (``torch.nn.Identity``, ``keras.layers.Identity``): a placeholder layer, e.g. where a
    model variant has no activation. ``dL/dx = dL/dy``. Shapes: any ``(N, ...)``, unchanged.

    Args:
        name: layer name.

    Example::

        >>> Identity().forward(np.array([[1.0, 2.0]]))
        array([[1., 2.]])
    """

    can_skip_input_grad = True

    def __init__(self, name: str | None = None) -> None:
        super().__init__(None, name)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.check_input(x)

    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        return np.asarray(dL_dy) if need_input_grad else None


#: Keras' activation names -> the layer that computes them (Keras' defaults where they differ:
#: its ``leaky_relu`` slope is 0.2, torch's 0.01).
_BY_NAME: dict[str, Any] = {
    "relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh, "softmax": SoftMax, "gelu": GELU, "silu": SiLU, "swish": SiLU,
    "elu": ELU, "softplus": Softplus, "log_softmax": LogSoftMax, "linear": Identity,
    "leaky_relu": lambda: LeakyReLU(0.2),
}


def get(name: str) -> Activation:
    """A fresh activation layer from a Keras name: ``"relu"``, ``"sigmoid"``, ``"tanh"``,
    ``"softmax"``, ``"gelu"`` (exact, as Keras' ``approximate=False``), ``"silu"`` / ``"swish"``,
    ``"elu"``, ``"softplus"``, ``"log_softmax"``, ``"leaky_relu"`` (slope 0.2, Keras') or ``"linear"``.

    Args:
        name: the activation's name (case-insensitive).

    Example:
        >>> type(get("relu")).__name__
        'ReLU'
    """
    if not isinstance(name, str) or name.lower() not in _BY_NAME:
        raise ValueError(f"activations.get: unknown activation {name!r}; known: {', '.join(sorted(_BY_NAME))}")
    return _BY_NAME[name.lower()]()
