"""Per-sample normalisation: layer normalisation and group normalisation, with PyTorch's semantics.

Unlike batch normalisation, the statistics are those of each sample alone, so training and
inference compute the same function and there are no running statistics. Both layers use the
two-pass variance ``mean((x - mean(x))^2)`` (never ``mean(x^2) - mean(x)^2``, which cancels),
and the backward pass::

    x^ = (x - mu) * r,   r = 1 / sqrt(var + eps),   g = dL/dy * gamma   (broadcast)
    dL/dx = r * (g - mean(g) - x^ * mean(g * x^))          (means over each normalised group)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..interfaces import Neuron, Shape
from .affine import take_affine


def _check_eps(eps: Any, name: str) -> float:
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: eps must be a number, got {eps!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: eps must be finite and > 0, got {eps!r}")
    return value


def _normalise(x: np.ndarray, axes: tuple[int, ...], eps: float) -> tuple[np.ndarray, np.ndarray]:
    """``(x^, r)`` over ``axes`` (kept as size-1 axes in ``r``)."""
    mean = x.mean(axis=axes, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(axis=axes, keepdims=True)
    inv_std = 1.0 / np.sqrt(var + x.dtype.type(eps))
    centred *= inv_std
    return centred, inv_std


def _normalise_backward(g: np.ndarray, x_hat: np.ndarray, inv_std: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    dx = g - g.mean(axis=axes, keepdims=True)
    dx -= x_hat * (g * x_hat).mean(axis=axes, keepdims=True)
    dx *= inv_std
    return dx


class LayerNormalization(Neuron):
    """Normalise each sample over some of its axes, then scale and shift element-wise.

    As ``torch.nn.LayerNorm(normalized_shape, eps=1e-5)``: for every sample (and every position
    along the axes not normalised), ``mu`` and the biased ``var`` run over the normalised axes,
    ``y = (x - mu) / sqrt(var + eps) * gamma + beta``, with ``gamma`` (init 1) and ``beta``
    (init 0) of the shape of the normalised axes. Training and inference are the same.

    Which axes: ``normalized_shape`` names the trailing per-sample axes by their sizes, as torch
    (``LayerNormalization((C, H, W))`` normalises each whole image; ``LayerNormalization(d)`` the
    last axis). ``axis`` names them as Keras does, counting the batch as axis 0, and need not be
    trailing: ``axis=1`` on ``(N, C, H, W)`` normalises over the channels at each pixel (the
    channels-first "LayerNorm2d" of ConvNeXt). With neither, the last axis (Keras' default).
    ``gamma`` and ``beta`` are laid out along the normalised axes in increasing order.

    ``eps`` defaults to torch's 1e-5, not Keras' 1e-3: the layer follows torch throughout, and
    :mod:`nn_from_scratch.interop` passes ``eps`` explicitly when it converts either way.

    Shapes: ``(N, *input_shape)`` in and out. ``dL/dgamma = sum(dy * x^)``, ``dL/dbeta = sum(dy)``
    over the batch and the axes not normalised; ``dL/dx`` as in the module docstring.

    Args:
        normalized_shape: torch-style trailing per-sample shape (int or tuple), or None.
        eps: added to the variance; finite and > 0.
        axis: Keras-style axis or axes (ints, batch = 0, negative from the end), or None.
        gamma, beta: initial scale and shift (shape of the normalised axes), or None for 1 and 0.
        dtype: parameter and compute dtype (float32 by default).
        name: layer name.

    Example::

        >>> ln = LayerNormalization(4, dtype=np.float64)
        >>> ln.forward(np.array([[1.0, 2.0, 3.0, 4.0]])).round(4)
        array([[-1.3416, -0.4472,  0.4472,  1.3416]])
    """

    parameter_names = ("gamma", "beta")
    cache_attrs = ("_cache",)

    def __init__(
        self,
        normalized_shape: Any = None,
        eps: float = 1e-5,
        *,
        axis: Any = None,
        gamma: np.ndarray | None = None,
        beta: np.ndarray | None = None,
        dtype: Any = np.float32,
        name: str | None = None,
    ) -> None:
        super().__init__(name, dtype)
        self.eps = _check_eps(eps, self.name)
        if normalized_shape is not None and axis is not None:
            raise ValueError(f"{self.name}: give normalized_shape (torch) or axis (Keras), not both")
        self.normalized_shape: tuple[int, ...] | None = None
        self.axis: tuple[int, ...] | None = None
        if normalized_shape is not None:
            shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else tuple(normalized_shape)
            if not shape or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in shape):
                raise ValueError(f"{self.name}: normalized_shape must be one or more positive ints, got {normalized_shape!r}")
            self.normalized_shape = tuple(int(s) for s in shape)
        else:
            axes = (-1,) if axis is None else (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
            if not axes or any(isinstance(a, bool) or not isinstance(a, (int, np.integer)) or a == 0 for a in axes):
                raise ValueError(f"{self.name}: axis must be a non-zero int or a tuple of them (axis 0 is the batch), got {axis!r}")
            self.axis = tuple(int(a) for a in axes)
        self.axes: tuple[int, ...] | None = None  # resolved at build: sorted, positive, batch = 0
        self.gamma: np.ndarray | None = None
        self.beta: np.ndarray | None = None
        self._gamma_pd: np.ndarray | None = None
        self._beta_pd: np.ndarray | None = None
        self._cache: tuple | None = None
        for what, value in (("gamma", gamma), ("beta", beta)):
            if value is not None:
                value = np.array(value, dtype=self.dtype)
                if self.normalized_shape is not None and value.shape != self.normalized_shape:
                    raise ValueError(f"{self.name}: expected {what} of shape {self.normalized_shape}, got {value.shape}")
                setattr(self, what, value)
                self.user_weights = True
        if self.normalized_shape is not None:
            self._create_parameters(self.normalized_shape)

    def _create_parameters(self, shape: tuple[int, ...]) -> None:
        for what, fill in (("gamma", 1.0), ("beta", 0.0)):
            value = getattr(self, what)
            if value is None:
                setattr(self, what, np.full(shape, fill, dtype=self.dtype))
            elif value.shape != shape:
                raise ValueError(f"{self.name}: expected {what} of shape {shape} (the normalised axes), got {value.shape}")

    def reset_parameters(self, rng: np.random.Generator | None = None) -> None:
        """``gamma = 1``, ``beta = 0``, in place (no random draw)."""
        if self.gamma is not None:
            self.gamma[...] = 1.0
            self.beta[...] = 0.0

    # -- shapes ---------------------------------------------------------------------------
    def _resolve_axes(self, input_shape: Shape) -> tuple[int, ...]:
        rank = len(input_shape)
        got = f"got input of shape (batch, {', '.join(map(str, input_shape))})"
        if self.normalized_shape is not None:
            k = len(self.normalized_shape)
            if k > rank or tuple(input_shape[rank - k:]) != self.normalized_shape:
                raise ValueError(f"{self.name}: expected input of shape (batch, ..., "
                                 f"{', '.join(map(str, self.normalized_shape))}) (normalized_shape), {got}")
            return tuple(range(rank - k + 1, rank + 1))
        axes = []
        for a in self.axis:
            if not -rank <= a <= rank or a % (rank + 1) == 0:
                raise ValueError(f"{self.name}: axis {a} is not a per-sample axis of a (batch, {rank} axes) input; {got}")
            axes.append(a % (rank + 1))
        if len(set(axes)) != len(axes):
            raise ValueError(f"{self.name}: axis {self.axis} names an axis twice for a (batch, {rank} axes) input")
        return tuple(sorted(axes))

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        self._resolve_axes(input_shape)
        return input_shape

    def build(self, input_shape: Shape, rng: np.random.Generator | None = None) -> None:
        super().build(input_shape)
        self.axes = self._resolve_axes(self.input_shape)
        self._create_parameters(tuple(self.input_shape[a - 1] for a in self.axes))
        self.zero_grad()

    def _broadcast(self, p: np.ndarray, ndim: int) -> np.ndarray:
        shape = [1] * ndim
        for a in self.axes:
            shape[a] = self.input_shape[a - 1]
        return p.reshape(shape)

    # -- passes ---------------------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self.cast_input(self.check_input(x))
        x_hat, inv_std = _normalise(x, self.axes, self.eps)
        self._cache = (x_hat, inv_std)
        return x_hat * self._broadcast(self.gamma, x.ndim) + self._broadcast(self.beta, x.ndim)

    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray:
        x_hat, inv_std = self._require_cache("_cache")
        dL_dy = self.check_output_grad(dL_dy, x_hat.shape[0], self.dtype)
        others = tuple(a for a in range(x_hat.ndim) if a not in self.axes)
        self.accumulate_gradient("gamma", (dL_dy * x_hat).sum(axis=others).reshape(self.gamma.shape))
        self.accumulate_gradient("beta", dL_dy.sum(axis=others).reshape(self.beta.shape))
        return _normalise_backward(dL_dy * self._broadcast(self.gamma, x_hat.ndim), x_hat, inv_std, self.axes)

    def get_config(self) -> dict[str, Any]:
        return {
            "normalized_shape": None if self.normalized_shape is None else list(self.normalized_shape),
            "eps": self.eps,
            "axis": None if self.axis is None else list(self.axis),
            "dtype": self.dtype.name,
            "name": self.name,
        }


class GroupNormalization(Neuron):
    """Normalise each sample over groups of channels, then scale and shift per channel.

    As ``torch.nn.GroupNorm(groups, C, eps=1e-5)`` on ``(N, C, *spatial)`` (``(N, C)`` included):
    the ``C`` channels are split into ``groups`` consecutive groups of ``C / groups``; ``mu`` and
    the biased ``var`` of each sample's group run over its channels and all spatial positions;
    ``y = (x - mu) / sqrt(var + eps) * gamma[c] + beta[c]`` with per-channel ``gamma`` (init 1)
    and ``beta`` (init 0) of shape ``(C,)``. ``groups = 1`` normalises whole samples (a layer
    norm with per-channel affine), ``groups = C`` each channel (instance normalisation).
    Training and inference are the same. ``eps`` defaults to torch's 1e-5 (Keras: 1e-3).

    Shapes: ``(N, C, ...)`` in and out, ``C`` divisible by ``groups``. ``dL/dgamma`` and
    ``dL/dbeta`` sum over the batch and spatial axes; ``dL/dx`` as in the module docstring.

    Args:
        groups: number of channel groups (a divisor of the channel count).
        eps: added to the variance; finite and > 0.
        input_dim: the channel count, or the per-sample shape, or None to infer it.
        gamma, beta: initial per-channel scale and shift, or None for 1 and 0.
        dtype: parameter and compute dtype (float32 by default).
        name: layer name.

    Example::

        >>> gn = GroupNormalization(2, dtype=np.float64)
        >>> gn.forward(np.array([[1.0, 3.0, 10.0, 30.0]])).round(4)
        array([[-1., 1., -1., 1.]])
    """

    parameter_names = ("gamma", "beta")
    cache_attrs = ("_cache",)

    def __init__(
        self,
        groups: int,
        eps: float = 1e-5,
        input_dim: Any = None,
        gamma: np.ndarray | None = None,
        beta: np.ndarray | None = None,
        *,
        dtype: Any = np.float32,
        name: str | None = None,
    ) -> None:
        super().__init__(name, dtype)
        if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
            raise ValueError(f"{self.name}: groups must be a positive int, got {groups!r}")
        self.groups = int(groups)
        self.eps = _check_eps(eps, self.name)
        self.num_channels: int | None = None
        self.gamma: np.ndarray | None = None
        self.beta: np.ndarray | None = None
        self._gamma_pd: np.ndarray | None = None
        self._beta_pd: np.ndarray | None = None
        self._cache: tuple | None = None
        shape = None
        if isinstance(input_dim, (int, np.integer)):
            self.num_channels = int(input_dim)
        elif input_dim is not None:
            shape = tuple(int(s) for s in input_dim)
            self.num_channels = shape[0] if shape else None
        self.num_channels = take_affine(self, gamma, beta, self.num_channels)
        if self.num_channels is not None:
            self._check_channels(self.num_channels)
            self._create_parameters()
        if shape is not None:
            self.build(shape)

    def _check_channels(self, c: int) -> None:
        if c % self.groups:
            raise ValueError(f"{self.name}: {c} channels cannot be split into {self.groups} groups (not a divisor)")

    def _create_parameters(self) -> None:
        if self.gamma is None:
            self.gamma = np.ones(self.num_channels, dtype=self.dtype)
        if self.beta is None:
            self.beta = np.zeros(self.num_channels, dtype=self.dtype)
        self.zero_grad()

    def reset_parameters(self, rng: np.random.Generator | None = None) -> None:
        """``gamma = 1``, ``beta = 0``, in place (no random draw)."""
        self.gamma[...] = 1.0
        self.beta[...] = 0.0

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) < 1:
            raise ValueError(f"{self.name}: expected input of shape (batch, channels, ...), got (batch,)")
        if self.num_channels is not None and input_shape[0] != self.num_channels:
            raise ValueError(f"{self.name}: expected input of shape (batch, {self.num_channels}, ...), "
                             f"got (batch, {', '.join(map(str, input_shape))})")
        self._check_channels(input_shape[0])
        return input_shape

    def build(self, input_shape: Shape, rng: np.random.Generator | None = None) -> None:
        super().build(input_shape)
        self.num_channels = self.input_shape[0]
        self._create_parameters()

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self.cast_input(self.check_input(x))
        n = x.shape[0]
        x_hat, inv_std = _normalise(x.reshape(n, self.groups, -1), (2,), self.eps)
        self._cache = (x_hat, inv_std, x.shape)
        channel = (1, -1) + (1,) * (x.ndim - 2)
        return x_hat.reshape(x.shape) * self.gamma.reshape(channel) + self.beta.reshape(channel)

    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray:
        x_hat, inv_std, x_shape = self._require_cache("_cache")
        dL_dy = self.check_output_grad(dL_dy, x_shape[0], self.dtype)
        axes = (0,) + tuple(range(2, len(x_shape)))
        channel = (1, -1) + (1,) * (len(x_shape) - 2)
        self.accumulate_gradient("gamma", (dL_dy * x_hat.reshape(x_shape)).sum(axis=axes))
        self.accumulate_gradient("beta", dL_dy.sum(axis=axes))
        g = (dL_dy * self.gamma.reshape(channel)).reshape(x_hat.shape)
        return _normalise_backward(g, x_hat, inv_std, (2,)).reshape(x_shape)

    def get_config(self) -> dict[str, Any]:
        return {
            "groups": self.groups,
            "eps": self.eps,
            "input_dim": list(self.input_shape) if self.input_shape is not None else self.num_channels,
            "dtype": self.dtype.name,
            "name": self.name,
        }
