"""Batch normalisation (Ioffe & Szegedy), with PyTorch's semantics."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import kernels
from ..interfaces import Neuron, Shape, check_hyperparameter
from .affine import take_affine


class BatchNormalization(Neuron):
    """Normalise each channel over the batch, then scale and shift it.

    Axis 1 is the channel axis: per feature for dense input ``(N, F)``, per channel for
    ``(N, C, H, W)`` (and ``(N, C, L)``), as ``torch.nn.BatchNorm1d`` / ``BatchNorm2d``.
    Statistics run over every other axis; ``m`` is the number of values per channel
    (``N`` or ``N*H*W``). Parameters ``gamma`` (scale, init 1) and ``beta`` (shift, init 0),
    shape ``(C,)``. Training mode (``self.training``)::

        mu  = mean(x),   var = mean((x - mu)^2)                (biased, per channel)
        x^  = (x - mu) / sqrt(var + eps),    y = gamma * x^ + beta
        running_mean <- (1 - f) * running_mean + f * mu
        running_var  <- (1 - f) * running_var  + f * var * m / (m - 1)     (unbiased, as torch)

    with ``f = momentum``, or ``f = 1 / num_batches_tracked`` (a plain cumulative average) when
    ``momentum`` is None -- torch's convention, in which ``momentum`` weighs the *new* batch.
    Inference mode uses ``running_mean`` / ``running_var`` in place of ``mu`` / ``var``, computed as
    torch's CPU kernel does, ``y = x * a + b`` with ``a = gamma / sqrt(running_var + eps)`` and
    ``b = beta - running_mean * a`` (one output array, no ``x^``).

    Backward, training (``sum`` over the batch and spatial axes, per channel)::

        dL/dbeta  = sum(dy),    dL/dgamma = sum(dy * x^)
        dL/dx     = gamma / (m * sqrt(var + eps)) * (m * dy - dL/dbeta - x^ * dL/dgamma)

    and in inference mode ``dL/dx = dy * gamma / sqrt(running_var + eps)``.

    ``running_mean`` (init 0), ``running_var`` (init 1) and ``num_batches_tracked`` (0-d int64)
    are :meth:`buffers`, updated in place. ``input_dim`` is the number of channels or the
    per-sample shape (no batch size), or ``None`` to infer it from the first input.
    Training needs more than one value per channel (as in torch).

    Memory layout: input of any layout is accepted and ``y`` (and ``dL/dx``) come back in the
    input's layout. When the input's memory is ``(A, C, B)`` with contiguous runs ``B`` of at
    least 16 values per channel -- a fast convolution's batch-innermost output ``(C, H, W, N)``
    gives ``(1, C, H*W*N)``, a C-contiguous array ``(N, C, H*W)`` -- training mode runs the
    chunked kernels :func:`~nn_from_scratch.kernels.batch_norm_train_forward` /
    ``batch_norm_train_backward`` (the same formulas, a few channels at a time while they are
    in the cache); other layouts take the reference path above.

    Inputs near the float limit (a constant ``1e37`` channel in float32, whose sum overflows)
    are normalised exactly, in float64 after subtracting each channel's first value: a constant
    channel gives ``x^ = 0`` and a finite running variance. torch's float32 result there depends
    on the shape (0 with an infinite running variance, or ``-inf``); this is a deliberate
    difference.

    Synchronised batch norm (data-parallel training, :mod:`nn_from_scratch.distributed`): while
    ``sync`` is set, the training-mode statistics are those of the *global* batch spread over
    all ranks. ``sync.allreduce(a)`` sums a per-channel array over the ranks and
    ``sync.batch_size`` is the global batch size, so ``m`` counts the values of the global
    batch. The forward reduces ``sum(x)`` (giving ``mu``) and then ``sum((x - mu)^2)`` (two
    passes, as one process computes them, rather than the cancellation-prone ``sum(x^2)``);
    the backward reduces the two per-channel sums ``sum(dy)`` and ``sum(dy * x^)`` that
    ``dL/dx`` needs, while ``dL/dgamma`` and ``dL/dbeta`` keep this rank's part (the gradient
    allreduce adds the ranks). The overflow fallback above is not used there.

    Args:
        momentum: torch's ``f``, the weight of the new batch in the running statistics; ``None``
            for a cumulative average.
        eps: added to the variance before the square root.
        input_dim: the number of channels ``C`` or the per-sample shape, e.g. ``(C, H, W)``;
            ``None`` infers it from the first input.
        gamma: the initial scale, shape ``(C,)`` (default ones).
        beta: the initial shift, shape ``(C,)`` (default zeros).
        dtype: the parameters' dtype.
        name: the layer's name (default: the class name).

    Example:
        >>> bn = BatchNormalization(input_dim=3, dtype=np.float64)
        >>> y = bn.forward(np.arange(12.0).reshape(4, 3))     # (N, C) = (4, 3); column j is 3n + j
        >>> y[:, 0].round(4)
        array([-1.3416, -0.4472,  0.4472,  1.3416])
        >>> bn.running_mean, bn.running_var                   # 0.9 * init + 0.1 * batch (unbiased var 15)
        (array([0.45, 0.55, 0.65]), array([2.4, 2.4, 2.4]))
    """

    parameter_names = ("gamma", "beta")
    cache_attrs = ("_cache",)
    #: Set by :class:`nn_from_scratch.distributed.DataParallel` during a data-parallel ``fit``:
    #: an object with ``allreduce(array) -> array`` (sum over ranks) and ``batch_size`` (global).
    sync: Any = None

    def __init__(
        self,
        momentum: float | None = 0.1,
        eps: float = 1e-5,
        input_dim: Any = None,
        gamma: np.ndarray | None = None,
        beta: np.ndarray | None = None,
        *,
        dtype: Any = np.float32,
        name: str | None = None,
    ) -> None:
        super().__init__(name, dtype)
        self.momentum = None if momentum is None else check_hyperparameter(momentum, "momentum", self.name, low=0.0, high=1.0)
        self.eps = check_hyperparameter(eps, "eps", self.name, low=0.0, low_open=True)
        self.num_features: int | None = None
        self.gamma: np.ndarray | None = None
        self.beta: np.ndarray | None = None
        self._gamma_pd: np.ndarray | None = None
        self._beta_pd: np.ndarray | None = None
        self.running_mean: np.ndarray | None = None
        self.running_var: np.ndarray | None = None
        self.num_batches_tracked = np.zeros((), dtype=np.int64)
        self._cache: tuple | None = None

        shape = None
        if isinstance(input_dim, (int, np.integer)):
            self.num_features = int(input_dim)
        elif input_dim is not None:
            shape = tuple(int(s) for s in input_dim)
            self.num_features = shape[0]
        self.num_features = take_affine(self, gamma, beta, self.num_features)
        if self.num_features is not None:
            self._create_parameters()
        if shape is not None:
            self.build(shape)

    # -- parameters -----------------------------------------------------------------------
    def _create_parameters(self) -> None:
        c = self.num_features
        if self.gamma is None:
            self.gamma = np.ones(c, dtype=self.dtype)
        if self.beta is None:
            self.beta = np.zeros(c, dtype=self.dtype)
        if self.running_mean is None:
            self.running_mean = np.zeros(c, dtype=self.dtype)
            self.running_var = np.ones(c, dtype=self.dtype)
        self.zero_grad()

    def reset_parameters(self, rng: np.random.Generator | None = None) -> None:
        """``gamma = 1``, ``beta = 0`` and fresh running statistics, in place (no random draw)."""
        self.gamma[...] = 1.0
        self.beta[...] = 0.0
        self.reset_running_stats()

    def reset_running_stats(self) -> None:
        self.running_mean[...] = 0.0
        self.running_var[...] = 1.0
        self.num_batches_tracked[...] = 0

    def buffers(self) -> dict[str, np.ndarray]:
        if self.running_mean is None:
            return {}
        return {
            "running_mean": self.running_mean,
            "running_var": self.running_var,
            "num_batches_tracked": self.num_batches_tracked,
        }

    # -- shapes ---------------------------------------------------------------------------
    def compute_output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) < 1:
            raise ValueError(f"{self.name}: expected input of shape (batch, features) or (batch, channels, H, W), got (batch,)")
        if self.num_features is not None and input_shape[0] != self.num_features:
            raise ValueError(
                f"{self.name}: expected input of shape (batch, {self.num_features}, ...), "
                f"got (batch, {', '.join(map(str, input_shape))})"
            )
        return input_shape

    def build(self, input_shape: Shape, rng: np.random.Generator | None = None) -> None:
        super().build(input_shape)
        self.num_features = self.input_shape[0]
        self._create_parameters()

    # -- passes ---------------------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self.cast_input(self.check_input(x))
        axes = (0,) + tuple(range(2, x.ndim))
        channel = (1, -1) + (1,) * (x.ndim - 2)  # broadcasts a (C,) vector over x
        if self.training and self.sync is not None:  # the global batch's statistics (its size is checked there)
            return self._forward_synced(x, axes, channel)
        if self.training:
            m = x.size // self.num_features
            if m < 2:
                raise ValueError(
                    f"{self.name}: training needs more than one value per channel, got input of shape {x.shape}"
                )
            fast = self._forward_fast(x, m)
            if fast is not None:
                return fast
            with np.errstate(over="ignore", invalid="ignore"):
                mean = x.mean(axis=axes)
                centred = x - mean.reshape(channel)
                sq_sum = (centred * centred).sum(axis=axes)
            if np.isfinite(mean).all() and np.isfinite(sq_sum).all():
                var = sq_sum / m
                self._update_running_stats(mean, sq_sum / (m - 1))
                inv_std = 1.0 / np.sqrt(var + self.eps)
                x_hat = centred * inv_std.reshape(channel)
            else:
                x_hat, inv_std = self._normalise_huge(x, axes, channel, m)
        else:
            return self._forward_inference(x, channel)
        self._cache = (x_hat, inv_std, self.training, None)
        return x_hat * self.gamma.reshape(channel) + self.beta.reshape(channel)

    def _forward_inference(self, x: np.ndarray, channel: tuple[int, ...]) -> np.ndarray:
        """``y = x * a + b`` with ``a = gamma / sqrt(running_var + eps)`` and ``b = beta - running_mean * a``
        per channel, as torch's CPU kernel computes it: one output array, in ``x``'s memory layout,
        and no ``x^``. The cache (for a backward in inference mode, e.g. ``verify.gradcheck``) is ``x``
        itself, and only when the model keeps caches."""
        inv_std = 1.0 / np.sqrt(self.running_var + self.eps)
        scale = self.gamma * inv_std
        shift = self.beta - self.running_mean * scale
        y = np.multiply(x, scale.reshape(channel))
        y += shift.reshape(channel)
        self._cache = (x, inv_std, False, self.running_mean.copy()) if self.keep_cache else None
        return y

    def _forward_fast(self, x: np.ndarray, m: int) -> np.ndarray | None:
        """Training forward on the input's own memory, in its layout (``kernels.batch_norm_train_forward``).

        For (N, C, ...) input whose memory is (A, C, B) with runs of at least 16 values per
        channel -- a convolution's batch-innermost output or a C-contiguous array; ``None``
        (the reference path runs) otherwise, or when a sum overflows.
        """
        blocks = kernels.channel_blocks(x, 1, min_run=16) if x.ndim > 2 else None
        if blocks is None:
            return None
        v, perm = blocks
        out = kernels.batch_norm_train_forward(v, self.gamma, self.beta, self.eps, m)
        if out is None:
            return None
        y, x_hat, mean, sq_sum, inv_std = out
        self._update_running_stats(mean, sq_sum / (m - 1))
        self._cache = (kernels.from_channel_blocks(x_hat, x, perm), inv_std, True, None)
        return kernels.from_channel_blocks(y, x, perm)

    def _forward_synced(self, x: np.ndarray, axes: tuple[int, ...], channel: tuple[int, ...]) -> np.ndarray:
        """Training forward with the statistics of the global batch (see the class docstring)."""
        sync = self.sync
        m = int(sync.batch_size) * (x.size // (x.shape[0] * self.num_features))
        if m < 2:
            raise ValueError(f"{self.name}: training needs more than one value per channel, got a global batch of "
                             f"{sync.batch_size} samples of shape {x.shape[1:]}")
        mean = sync.allreduce(x.sum(axis=axes)) / m
        centred = x - mean.reshape(channel)
        sq_sum = sync.allreduce((centred * centred).sum(axis=axes))
        self._update_running_stats(mean, sq_sum / (m - 1))
        inv_std = 1.0 / np.sqrt(sq_sum / m + self.eps)
        x_hat = centred * inv_std.reshape(channel)
        self._cache = (x_hat, inv_std, True, (sync, m))
        return x_hat * self.gamma.reshape(channel) + self.beta.reshape(channel)

    def _normalise_huge(self, x: np.ndarray, axes: tuple[int, ...], channel: tuple[int, ...], m: int) -> tuple[np.ndarray, np.ndarray]:
        """The training-mode statistics when the plain sums overflow (values near the float limit).

        Rare, so it may be slow: float64 (twice float32's exponent range) after subtracting each
        channel's first value, so a constant channel has mean exactly that value and variance 0,
        and normalises to exactly 0. Inputs holding inf or NaN still give NaN, as in torch.
        """
        wide = np.result_type(x.dtype, np.float64)
        pivot = x[(0, slice(None)) + (0,) * (x.ndim - 2)].astype(wide)
        with np.errstate(over="ignore", invalid="ignore"):
            shifted = x.astype(wide) - pivot.reshape(channel)
            mean_shift = shifted.mean(axis=axes)
            centred = shifted - mean_shift.reshape(channel)
            sq_sum = (centred * centred).sum(axis=axes)
            inv_std = 1.0 / np.sqrt(sq_sum / m + self.eps)
            self._update_running_stats((pivot + mean_shift).astype(self.dtype), (sq_sum / (m - 1)).astype(self.dtype))
            x_hat = (centred * inv_std.reshape(channel)).astype(self.dtype)
        return x_hat, inv_std.astype(self.dtype)

    def _update_running_stats(self, mean: np.ndarray, unbiased_var: np.ndarray) -> None:
        self.num_batches_tracked += 1
        f = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        # Written as torch writes it: f * new + (1 - f) * old.
        self.running_mean[...] = f * mean + (1.0 - f) * self.running_mean
        self.running_var[...] = f * unbiased_var + (1.0 - f) * self.running_var

    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray:
        x_hat, inv_std, training, synced = self._require_cache("_cache")
        dL_dy = self.check_output_grad(dL_dy, x_hat.shape[0], self.dtype)
        axes = (0,) + tuple(range(2, x_hat.ndim))
        channel = (1, -1) + (1,) * (x_hat.ndim - 2)
        if not training:  # the inference cache holds x and the running mean it was normalised with
            x_hat = (x_hat - synced.reshape(channel)) * inv_std.reshape(channel)
            synced = None
        scale = self.gamma * inv_std
        if training and synced is None:
            fast = self._backward_fast(dL_dy, x_hat, scale)
            if fast is not None:
                return fast
        d_beta = dL_dy.sum(axis=axes)
        d_gamma = (dL_dy * x_hat).sum(axis=axes)
        self.accumulate_gradient("beta", d_beta.copy())
        self.accumulate_gradient("gamma", d_gamma.copy())
        if not training:
            return dL_dy * scale.reshape(channel)
        m = dL_dy.size // self.num_features
        if synced is not None:  # the global batch's sums (this rank's part stays in the gradients)
            sync, m = synced
            both = sync.allreduce(np.concatenate([d_beta, d_gamma]))
            d_beta, d_gamma = both[: self.num_features], both[self.num_features :]
        dx = m * dL_dy
        dx -= d_beta.reshape(channel)
        dx -= x_hat * d_gamma.reshape(channel)
        dx *= (scale / m).reshape(channel)
        return dx

    def _backward_fast(self, dL_dy: np.ndarray, x_hat: np.ndarray, scale: np.ndarray) -> np.ndarray | None:
        """Training backward in ``x_hat``'s memory layout (``kernels.batch_norm_train_backward``);
        ``None`` when ``x_hat``'s memory has no (A, C, B) view with runs of 16 or more (the
        reference path runs). ``dL_dy`` in another layout is first
        copied into ``x_hat``'s (one pass, cheaper than mixing layouts in every product)."""
        blocks = kernels.channel_blocks(x_hat, 1, min_run=16) if x_hat.ndim > 2 else None
        if blocks is None:
            return None
        h, perm = blocks
        scratch = self.output_grad_writable and dL_dy.flags.writeable  # inside a model: dx may overwrite dL/dy
        if dL_dy.strides != x_hat.strides:
            same_layout = np.empty_like(x_hat)  # order "K": x_hat's memory layout
            np.copyto(same_layout, dL_dy)
            dL_dy, scratch = same_layout, True
        d = kernels.channel_blocks(dL_dy, 1)
        if d is None or d[1] != perm or d[0].shape != h.shape:
            return None
        dx, d_beta, d_gamma = kernels.batch_norm_train_backward(
            d[0], h, scale, x_hat.size // self.num_features, out=d[0] if scratch else None)
        self.accumulate_gradient("beta", d_beta)
        self.accumulate_gradient("gamma", d_gamma)
        return kernels.from_channel_blocks(dx, x_hat, perm)

    def get_config(self) -> dict[str, Any]:
        return {
            "momentum": self.momentum,
            "eps": self.eps,
            "input_dim": list(self.input_shape) if self.input_shape is not None else self.num_features,
            "dtype": self.dtype.name,
            "name": self.name,
        }
