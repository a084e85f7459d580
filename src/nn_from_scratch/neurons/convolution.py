"""2-D convolution (cross-correlation, as in every deep-learning framework)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import initializers, kernels
from ..interfaces import Neuron, Shape, is_int, per_sample_shape


class KernelLayer(Neuron):
    """What :class:`Convolution` and :class:`TransposedConvolution` share: a kernel ``W`` of
    :meth:`weight_shape` drawn by the layer's initializer from :meth:`fans`, and a per-output-channel
    bias ``B`` (zeros). Subclasses set ``out_channels``, ``in_channels``, ``kernel_size``,
    ``groups``, ``use_bias`` and ``_init``.

    Args:
        name: the layer's name.
        dtype: the floating type of ``W`` and ``B``.

    Example:
        >>> issubclass(Convolution, KernelLayer)
        True
    """

    def weight_shape(self) -> tuple[int, ...]:
        """The shape of ``W``."""
        raise NotImplementedError

    def fans(self) -> tuple[int, int]:
        """``(fan_in, fan_out)`` for the initializer, as torch counts them for this layer."""
        raise NotImplementedError

    def checked_image(self, input_shape: Shape) -> tuple[int, int, int]:
        """``(C, H, W)`` of a per-sample input shape, its channels checked against the layer and its groups."""
        c, h, w = kernels.image_shape(input_shape, self.name)
        if self.in_channels is not None and c != self.in_channels:
            raise ValueError(f"{self.name}: expected input of shape (batch, {self.in_channels}, H, W), got (batch, {c}, {h}, {w})")
        kernels.check_groups(c, self.out_channels, self.groups, self.name)
        return c, h, w

    def plan_fits(self, plan: Any, x_shape: tuple[int, ...]) -> bool:
        """Whether ``plan`` (a kernels plan, or None) was made for inputs of ``x_shape`` and this layer's dtype and geometry."""
        return plan is not None and plan.x_shape == tuple(x_shape) and plan.dtype == self.dtype and plan.geom == self.geometry

    def checked_bias(self, B: Any) -> np.ndarray:
        """``B`` as this layer's ``(out_channels,)`` bias, or a ``ValueError`` naming the layer."""
        if not self.use_bias:
            raise ValueError(f"{self.name}: B was given but use_bias=False")
        B = np.asarray(B, dtype=self.dtype)
        if B.shape != (self.out_channels,):
            raise ValueError(f"{self.name}: expected B of shape ({self.out_channels},) (one bias per output channel), got {B.shape}")
        return B

    def _create_parameters(self, rng: np.random.Generator | None) -> None:
        if self.W is None:
            self.W = np.empty(self.weight_shape(), dtype=self.dtype)
            self.reset_parameters(rng)
        if self.use_bias and self.B is None:
            self.B = np.zeros(self.out_channels, dtype=self.dtype)
        self.zero_grad()

    def reset_parameters(self, rng: np.random.Generator | None = None) -> None:
        rng = rng or initializers.default_rng()
        fan_in, fan_out = self.fans()
        self.W[...] = self._init(self.W.shape, fan_in, fan_out, rng, self.dtype)
        if self.B is not None:
            self.B[...] = 0.0


class Convolution(KernelLayer):
    """2-D convolution: ``y[n, o] = sum_c W[o, c] (*) x[n, c] + B[o]``.

    ``(*)`` is cross-correlation with the given stride, dilation and zero padding, as in
    ``torch.nn.functional.conv2d``. Shapes::

        x  (N, C, H, W)      W  (O, C/groups, kh, kw)      B  (O,)      y  (N, O, OH, OW)
        OH = floor((H + pad_top + pad_bottom - dilation * (kh - 1) - 1) / stride) + 1

    ``groups`` (torch's): the input and output channels are split into ``groups`` consecutive
    blocks, output block g seeing only input block g, so ``y[n, o] = sum_{c in group(o)}
    W[o, c - first(o)] (*) x[n, c] + B[o]``. Both channel counts must be divisible by it.
    ``groups = C`` is a *depthwise* convolution (each output channel sees one input channel;
    ``O = m * C``, output ``c*m + j`` reads input ``c``). Grouped layers run on
    ``kernels.GroupedConv2dPlan`` (direct kernel-tap sums when depthwise, batched im2col
    otherwise).

    The work is one im2col and one matrix multiply (see :mod:`nn_from_scratch.kernels`)::

        cols = im2col(x)                       (C*kh*kw, N*OH*OW)
        y    = W_2d @ cols + B                 W_2d: (O, C*kh*kw)
        dW   = dy_2d @ cols.T,  dB = sum(dy),  dx = col2im(W_2d.T @ dy_2d)

    ``input_dim`` is ``(N, C, H, W)`` (the seed's form; N is ignored), ``(C, H, W)``, the number
    of channels, or ``None`` to infer it from the first input. ``padding`` is an int, a pair,
    ``(top, bottom, left, right)``, ``"valid"`` or ``"same"`` (Keras' rule, any stride).
    When the layer has one input channel, a batch ``(N, H, W)`` is read as ``(N, 1, H, W)``.

    Args:
        input_dim: ``(N, C, H, W)``, ``(C, H, W)``, ``C`` or ``None`` (inferred).
        kernel_size: int or ``(kh, kw)``.
        output_layers: the number of output channels ``O``.
        padding: int, ``(ph, pw)``, ``(top, bottom, left, right)``, ``"valid"`` or ``"same"``.
        W, B: initial weights ``(O, C/groups, kh, kw)`` and bias ``(O,)``; drawn when omitted.
        use_bias: whether there is a bias ``B``.
        W_init_range: the seed's ``U(-r, r)`` initialisation instead of ``kernel_initializer``.
        stride, dilation: int or pair.
        groups: number of channel groups (1: a full convolution; ``C``: depthwise).
        kernel_initializer: name or function (fan-in ``C/groups*kh*kw``, fan-out ``O*kh*kw``, as torch).
        dtype: float32 (default) or float64.
        name: the layer's name.

    Example::

        conv = Convolution((32, 28, 28), 3, 32, padding=1, groups=32)   # depthwise 3x3
        y = conv.forward(np.zeros((8, 32, 28, 28), np.float32))         # (8, 32, 28, 28)
    """

    parameter_names = ("W", "B")
    cache_attrs = ("_plan", "_x_shape", "_added_channel_axis")

    def __init__(
        self,
        input_dim: Any = None,
        kernel_size: Any = None,
        output_layers: int = 1,
        padding: Any = 0,
        W: np.ndarray | None = None,
        B: np.ndarray | None = None,
        use_bias: bool = True,
        W_init_range: float | None = None,
        *,
        stride: Any = 1,
        dilation: Any = 1,
        groups: int = 1,
        kernel_initializer: str | initializers.Initializer = "glorot_uniform",
        dtype: Any = np.float32,
        name: str | None = None,
        depth_multiplier: int | None = None,
    ) -> None:
        super().__init__(name, dtype)
        if kernel_size is None:
            raise ValueError(f"{self.name}: kernel_size is required")
        self.kernel_size = kernels.as_pair(kernel_size, "kernel_size", self.name)
        # Keras' DepthwiseConv2D: groups = C and O = depth_multiplier * C, fixed when C is known.
        self.depth_multiplier = None if depth_multiplier is None else int(depth_multiplier)
        if self.depth_multiplier is not None:
            if not is_int(depth_multiplier) or depth_multiplier < 1:
                raise ValueError(f"{self.name}: depth_multiplier must be a positive int, got {depth_multiplier!r}")
            channels = per_sample_shape(input_dim, expected_ndim=3, what="input_dim", who=self.name)
            c = None if channels is None else channels[0]
            groups, output_layers = (c, c * self.depth_multiplier) if c else (1, self.depth_multiplier)
        if not is_int(output_layers) or output_layers < 1:
            raise (ValueError if is_int(output_layers) else TypeError)(
                f"{self.name}: output_layers must be a positive int, got {output_layers!r}"
            )
        self.out_channels = int(output_layers)
        self.stride = kernels.as_pair(stride, "stride", self.name)
        self.dilation = kernels.as_pair(dilation, "dilation", self.name)
        self.padding = padding
        kernels.check_groups(None, self.out_channels, groups, self.name)
        self.groups = int(groups)
        kernels.resolve_padding(padding, (1, 1), self.kernel_size, self.stride, self.dilation, self.name)  # validate early
        self.use_bias = bool(use_bias)
        self.W_init_range = W_init_range
        self.kernel_initializer = kernel_initializer
        self._init = initializers.uniform_range(W_init_range) if W_init_range else initializers.get(kernel_initializer)
        self.W: np.ndarray | None = None
        self.B: np.ndarray | None = None
        self._W_pd: np.ndarray | None = None
        self._B_pd: np.ndarray | None = None
        self.geometry: kernels.ConvGeometry | None = None
        self._plan: kernels.Conv2dPlan | kernels.GroupedConv2dPlan | None = None  # fast path: shapes and work buffers (see kernels)
        self._inference_plan: kernels.Conv2dPlan | None = None  # for models' inference passes: shapes only, no buffers
        self._x_shape: tuple[int, ...] | None = None

        shape = per_sample_shape(input_dim, expected_ndim=3, what="input_dim", who=self.name)
        self.in_channels: int | None = None if shape is None else shape[0]
        if self.in_channels is not None:
            kernels.check_groups(self.in_channels, self.out_channels, self.groups, self.name)
        if W is not None:
            W = np.asarray(W, dtype=self.dtype)
            g = self.groups
            expected = (self.out_channels, (self.in_channels // g) if self.in_channels else W.shape[1]) + self.kernel_size
            if W.shape != expected:
                layout = "(out, in, kh, kw)" if g == 1 else f"(out, in/groups, kh, kw) with groups={g}"
                raise ValueError(f"{self.name}: expected W of shape {expected} {layout}, got {W.shape}")
            self.W, self.in_channels, self.user_weights = W, W.shape[1] * g, True
        if B is not None:
            self.B = self.checked_bias(B)
        if self.in_channels is not None:
            self._create_parameters(None)
        if shape is not None and len(shape) == 3:
            self.build(shape)

    # -- parameters -----------------------------------------------------------------------
    def weight_shape(self) -> tuple[int, ...]:
        return (self.out_channels, self.in_channels // self.groups) + self.kernel_size

    def fans(self) -> tuple[int, int]:
        kh, kw = self.kernel_size
        return self.in_channels // self.groups * kh * kw, self.out_channels * kh * kw

    # -- shapes ---------------------------------------------------------------------------
    def compute_output_shape(self, input_shape: Shape) -> Shape:
        c, h, w = self.checked_image(input_shape)
        window = f"the kernel {self.kernel_size} (dilation {self.dilation}, padding {self.padding})"
        return (self.out_channels, *kernels.checked_output_hw(self._geometry((h, w)), (c, h, w), self.name, window))

    def _geometry(self, hw: tuple[int, int]) -> kernels.ConvGeometry:
        pads = kernels.resolve_padding(self.padding, hw, self.kernel_size, self.stride, self.dilation, self.name)
        return kernels.ConvGeometry(*self.kernel_size, self.stride, self.dilation, pads)

    def build(self, input_shape: Shape, rng: np.random.Generator | None = None) -> None:
        if len(input_shape) == 2 and self.in_channels in (None, 1):
            input_shape = (1, *input_shape)  # (H, W): one channel, as forward reads an (N, H, W) batch
        if self.depth_multiplier is not None and self.in_channels is None and len(input_shape) == 3:
            self.groups, self.out_channels = int(input_shape[0]), int(input_shape[0]) * self.depth_multiplier
        super().build(input_shape)
        self.in_channels = self.input_shape[0]
        self.geometry = self._geometry(self.input_shape[1:])
        self._create_parameters(rng)

    # -- passes ---------------------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        self._added_channel_axis = x.ndim == 3 and self.in_channels in (None, 1)
        if self._added_channel_axis:
            x = x[:, None]
        x = self.cast_input(self.check_input(x))
        self._x_shape = x.shape
        bias = self.B if self.use_bias else None
        if not self.keep_cache and self.groups == 1:
            # A model's inference pass: the input is unrolled a block of rows at a time and
            # nothing is kept, so one plan (its shapes, no buffers) serves every such pass.
            if not self.plan_fits(self._inference_plan, x.shape):
                self._inference_plan = kernels.Conv2dPlan(x.shape, self.out_channels, self.geometry, self.dtype)
            return self._inference_plan.forward(x, self.W, bias, keep_for_backward=False)
        if not self.plan_fits(self._plan, x.shape):
            self._plan = kernels.conv_plan(x.shape, self.out_channels, self.geometry, self.groups, self.dtype)
        return self._plan.forward(x, self.W, bias)

    can_skip_input_grad = True

    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """Add dL/dW (and dL/dB) to the gradients; return dL/dx, or ``None`` when ``need_input_grad`` is False.

        Skipping dL/dx is for the first layer of a model, whose input needs no gradient: torch
        skips it the same way for an input without ``requires_grad``.
        """
        dL_dy = self.check_output_grad(dL_dy, self._require_cache("_x_shape")[0], self.dtype)
        plan = self._require_cache("_plan")
        dx, dW, db = plan.backward(dL_dy, self.W, need_dx=need_input_grad, need_db=self.use_bias)
        self.accumulate_gradient("W", dW)
        if self.use_bias:
            self.accumulate_gradient("B", db)
        if dx is None:
            return None
        return dx[:, 0] if self._added_channel_axis else dx

    def get_config(self) -> dict[str, Any]:
        return {
            "input_dim": None if self.input_shape is None else list(self.input_shape),
            "kernel_size": list(self.kernel_size),
            "output_layers": self.out_channels,
            "padding": self.padding if isinstance(self.padding, (str, int)) else list(self.padding),
            "use_bias": self.use_bias,
            "W_init_range": self.W_init_range,
            "stride": list(self.stride),
            "dilation": list(self.dilation),
            "groups": self.groups,
            "kernel_initializer": self.kernel_initializer if isinstance(self.kernel_initializer, str) else "glorot_uniform",
            "dtype": self.dtype.name,
            "name": self.name,
            # only when set: the configs (and files) of other convolutions stay as they were
            **({} if self.depth_multiplier is None else {"depth_multiplier": self.depth_multiplier}),
        }
