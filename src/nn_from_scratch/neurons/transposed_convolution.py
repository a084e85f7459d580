"""2-D transposed convolution (torch's ``nn.ConvTranspose2d``): the adjoint of :class:`Convolution`."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import initializers, kernels
from ..interfaces import Shape, per_sample_shape
from .convolution import KernelLayer


def _non_negative_ints(value: Any, what: str, layer: str, lengths: tuple[int, ...] = (2,)) -> tuple[int, ...]:
    """An int (repeated) or a tuple of ``lengths`` non-negative ints -> that tuple (an int gives a pair)."""
    values = (value, value) if isinstance(value, (int, np.integer)) else tuple(value) if isinstance(value, (tuple, list)) else ()
    if len(values) not in lengths or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0 for v in values):
        forms = "a non-negative int, a pair of them" + (" or (top, bottom, left, right)" if 4 in lengths else "")
        raise ValueError(f"{layer}: {what} must be {forms}, got {value!r}")
    return tuple(int(v) for v in values)


class TransposedConvolution(KernelLayer):
    """2-D transposed convolution, as ``torch.nn.ConvTranspose2d``: the adjoint (the input
    gradient) of a :class:`Convolution` with the same kernel, stride, padding, dilation and groups.

    Each input pixel scatters a copy of the kernel, scaled by its value, onto the output::

        y[n, o, i*s + p*d - pad, j*s + q*d - pad] += sum_{c in group(o)} x[n, c, i, j] * W[c, o - first(o), p, q]
        y[n, o] += B[o]

    Shapes (``groups`` as in :class:`Convolution`; ``W`` in torch's layout)::

        x  (N, C, H, W)      W  (C, O/groups, kh, kw)      B  (O,)      y  (N, O, OH, OW)
        OH = (H - 1) * stride - 2 * padding + dilation * (kh - 1) + output_padding + 1

    ``padding`` removes that many rows/columns from both sides of the full output;
    ``output_padding`` adds rows/columns at the bottom/right (it resolves which of the input
    sizes that a strided convolution maps to the same output size is meant; torch requires it
    to be smaller than the stride or the dilation, and so do we). Where it exceeds ``padding``,
    the extra rows receive only the bias, as in torch. ``padding`` may also be
    ``(top, bottom, left, right)`` (an extension: torch's is symmetric), as Keras'
    ``Conv2DTranspose(padding="same")`` crops; then ``OH = (H - 1) * stride - top - bottom +
    dilation * (kh - 1) + output_padding + 1``.

    The work is the convolution kernels run backwards (see :mod:`nn_from_scratch.kernels`): the
    forward is the convolution's ``dx`` (col2im of ``W^T x``), the backward's ``dL/dx`` is the
    convolution's forward applied to ``dL/dy``, and ``dL/dW`` the convolution's ``dW`` with the
    roles of input and output gradient swapped -- no kernel of its own.

    Deliberate differences from torch: ``padding`` is numeric only (torch has no ``"same"`` here
    either) but may be asymmetric, and there is no ``output_size`` argument to ``forward``; use
    ``output_padding``.

    Args:
        input_dim: ``(N, C, H, W)``, ``(C, H, W)``, ``C`` or ``None`` (inferred from the first input).
        kernel_size: int or ``(kh, kw)``.
        output_layers: the number of output channels ``O``.
        padding: non-negative int, ``(ph, pw)`` or ``(top, bottom, left, right)``.
        W, B: initial weights ``(C, O/groups, kh, kw)`` and bias ``(O,)``; drawn when omitted.
        use_bias: whether there is a bias ``B``.
        stride, dilation: positive int or pair.
        output_padding: non-negative int or pair, each smaller than the stride or the dilation.
        groups: number of channel groups (both channel counts divisible by it).
        kernel_initializer: name or function; fan-in ``O/groups*kh*kw``, fan-out ``C*kh*kw`` (torch's
            reading of the weight layout).
        dtype: float32 (default) or float64.
        name: the layer's name.

    Example::

        up = TransposedConvolution((16, 7, 7), 3, 8, padding=1, stride=2, output_padding=1)
        y = up.forward(np.zeros((4, 16, 7, 7), np.float32))   # (4, 8, 14, 14)
    """

    parameter_names = ("W", "B")
    cache_attrs = ("_x", "_plan")
    can_skip_input_grad = True

    def __init__(
        self,
        input_dim: Any = None,
        kernel_size: Any = None,
        output_layers: int = 1,
        padding: Any = 0,
        W: np.ndarray | None = None,
        B: np.ndarray | None = None,
        use_bias: bool = True,
        *,
        stride: Any = 1,
        output_padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        kernel_initializer: str | initializers.Initializer = "glorot_uniform",
        dtype: Any = np.float32,
        name: str | None = None,
    ) -> None:
        super().__init__(name, dtype)
        if kernel_size is None:
            raise ValueError(f"{self.name}: kernel_size is required")
        self.kernel_size = kernels.as_pair(kernel_size, "kernel_size", self.name)
        if isinstance(output_layers, bool) or not isinstance(output_layers, (int, np.integer)) or output_layers < 1:
            raise ValueError(f"{self.name}: output_layers must be a positive int, got {output_layers!r}")
        self.out_channels = int(output_layers)
        self.stride = kernels.as_pair(stride, "stride", self.name)
        self.dilation = kernels.as_pair(dilation, "dilation", self.name)
        if isinstance(padding, str):
            raise ValueError(f"{self.name}: padding must be a non-negative int or a pair of them (as torch's "
                             f"ConvTranspose2d), got {padding!r}")
        self.padding = _non_negative_ints(padding, "padding", self.name, (2, 4))
        self.output_padding = _non_negative_ints(output_padding, "output_padding", self.name)
        pads = self.padding if len(self.padding) == 4 else (self.padding[0],) * 2 + (self.padding[1],) * 2
        self._pads4: tuple[int, int, int, int] = pads  # (top, bottom, left, right)
        for axis, op, s, d in zip(("height", "width"), self.output_padding, self.stride, self.dilation):
            if op >= s and op >= d:
                raise ValueError(
                    f"{self.name}: output_padding must be smaller than either stride or dilation (as torch requires), "
                    f"got output_padding {self.output_padding}, stride {self.stride}, dilation {self.dilation} ({axis})"
                )
        kernels.check_groups(None, self.out_channels, groups, self.name)
        self.groups = int(groups)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self._init = initializers.get(kernel_initializer)
        self.W: np.ndarray | None = None
        self.B: np.ndarray | None = None
        self._W_pd: np.ndarray | None = None
        self._B_pd: np.ndarray | None = None
        # The convolution whose adjoint this is maps an image of ``core_hw`` onto our input. Its
        # bottom/right padding is ``padding - output_padding``; where that is negative, the
        # missing rows are ``extend``: output rows no kernel tap reaches (they get only the bias).
        top, bottom, left, right = pads
        oph, opw = self.output_padding
        self.geometry = kernels.ConvGeometry(*self.kernel_size, self.stride, self.dilation,
                                             (top, max(bottom - oph, 0), left, max(right - opw, 0)))
        self._extend = (max(oph - bottom, 0), max(opw - right, 0))
        self._core_hw: tuple[int, int] | None = None
        self._x: np.ndarray | None = None
        self._plan: Any = None

        shape = per_sample_shape(input_dim, expected_ndim=3, what="input_dim", who=self.name)
        self.in_channels: int | None = None if shape is None else shape[0]
        if self.in_channels is not None:
            kernels.check_groups(self.in_channels, self.out_channels, self.groups, self.name)
        if W is not None:
            W = np.asarray(W, dtype=self.dtype)
            expected = (self.in_channels or (W.shape[0] if W.ndim else 0), self.out_channels // self.groups) + self.kernel_size
            if W.shape != expected:
                raise ValueError(f"{self.name}: expected W of shape {expected} (in, out/groups, kh, kw) with groups={self.groups}, "
                                 f"got {W.shape}")
            kernels.check_groups(W.shape[0], self.out_channels, self.groups, self.name)
            self.W, self.in_channels, self.user_weights = W, W.shape[0], True
        if B is not None:
            self.B = self.checked_bias(B)
        if self.in_channels is not None:
            self._create_parameters(None)
        if shape is not None and len(shape) == 3:
            self.build(shape)

    # -- parameters -----------------------------------------------------------------------
    def weight_shape(self) -> tuple[int, ...]:
        return (self.in_channels, self.out_channels // self.groups) + self.kernel_size

    def fans(self) -> tuple[int, int]:
        # torch's ConvTranspose2d weight is (in, out/groups, kh, kw): its fan_in is out/groups * kh * kw.
        kh, kw = self.kernel_size
        return self.out_channels // self.groups * kh * kw, self.in_channels * kh * kw

    # -- shapes ---------------------------------------------------------------------------
    def compute_output_shape(self, input_shape: Shape) -> Shape:
        c, h, w = self.checked_image(input_shape)
        out = []
        pads = (self._pads4[:2], self._pads4[2:])
        for size, k, s, d, (p0, p1), op in zip((h, w), self.kernel_size, self.stride, self.dilation, pads, self.output_padding):
            out.append((size - 1) * s - p0 - p1 + d * (k - 1) + op + 1)
        if min(out) < 1:
            raise ValueError(f"{self.name}: input of shape (batch, {c}, {h}, {w}) gives an output of {out[0]}x{out[1]} pixels "
                             f"(padding {self.padding} removes more than the kernel {self.kernel_size} covers)")
        return (self.out_channels, out[0], out[1])

    def build(self, input_shape: Shape, rng: np.random.Generator | None = None) -> None:
        super().build(input_shape)
        self.in_channels = self.input_shape[0]
        _, oh, ow = self.output_shape
        self._core_hw = (oh - self._extend[0], ow - self._extend[1])
        self._create_parameters(rng)

    # -- passes ---------------------------------------------------------------------------
    def _plan_for(self, n: int) -> Any:
        conv_x_shape = (n, self.out_channels, *self._core_hw)
        if not self.plan_fits(self._plan, conv_x_shape):
            self._plan = kernels.conv_plan(conv_x_shape, self.in_channels, self.geometry, self.groups, self.dtype)
        return self._plan

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self.cast_input(self.check_input(x))
        n = x.shape[0]
        self._x = x
        (_, oh, ow), (ch, cw) = self.output_shape, self._core_hw
        if ch < 1 or cw < 1:  # no kernel tap reaches the output: only the bias
            y = np.zeros((n, self.out_channels, oh, ow), self.dtype)
        else:
            core = self._plan_for(n).input_grad(x, self.W)  # fresh, batch-innermost (see kernels)
            if self._extend == (0, 0):
                y = core
            else:
                y = kernels.zeros_in_layout_of(core, (n, self.out_channels, oh, ow), self.dtype)
                y[:, :, :ch, :cw] = core
        if self.use_bias:
            y += self.B[:, None, None]
        return y

    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """Add dL/dW (and dL/dB) to the gradients; return dL/dx, or ``None`` when ``need_input_grad`` is False."""
        x = self._require_cache("_x")
        n = x.shape[0]
        dL_dy = self.check_output_grad(dL_dy, n, self.dtype)
        ch, cw = self._core_hw
        if ch < 1 or cw < 1:
            dx, dW = np.zeros_like(x), np.zeros_like(self.W)
        else:
            plan = self._require_cache("_plan")
            dx = plan.forward(dL_dy[:, :, :ch, :cw], self.W, None)  # the convolution of dL/dy: dL/dx
            _, dW, _ = plan.backward(x, self.W, need_dx=False, need_db=False)  # x plays the output gradient
        self.accumulate_gradient("W", dW)
        if self.use_bias:
            self.accumulate_gradient("B", dL_dy.sum(axis=(0, 2, 3)))
        return dx if need_input_grad else None

    def get_config(self) -> dict[str, Any]:
        return {
            "input_dim": None if self.input_shape is None else list(self.input_shape),
            "kernel_size": list(self.kernel_size),
            "output_layers": self.out_channels,
            "padding": list(self.padding),
            "use_bias": self.use_bias,
            "stride": list(self.stride),
            "output_padding": list(self.output_padding),
            "dilation": list(self.dilation),
            "groups": self.groups,
            "kernel_initializer": self.kernel_initializer if isinstance(self.kernel_initializer, str) else "glorot_uniform",
            "dtype": self.dtype.name,
            "name": self.name,
        }
