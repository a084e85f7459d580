"""2-D pooling: max, average and global average, on NCHW batches.

The window arithmetic lives in :mod:`nn_from_scratch.kernels` (``max_pool2d_*``,
``avg_pool2d_*``); these classes only resolve the geometry and check shapes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import kernels
from ..interfaces import Node, Shape


def _floating_input(layer: Node, x: np.ndarray) -> np.ndarray:
    """An average of integers is not an integer: refuse them, as torch's ``avg_pool2d`` and
    ``mean`` do (torch truncates an int64 average; we refuse that one too, deliberately)."""
    if x.dtype.kind != "f":
        raise TypeError(
            f"{layer.name}: expected a floating-point array, got dtype {x.dtype}; convert it first, "
            "e.g. x.astype(np.float32) (torch refuses integer input to average pooling too)"
        )
    return x


class _Pooling2D(Node):
    """Shared geometry of :class:`MaxPooling` and :class:`AveragePooling`.

    Shapes: ``x`` (N, C, H, W) -> ``y`` (N, C, OH, OW) with
    ``OH = floor((H + pad_top + pad_bottom - kh) / stride_h) + 1`` (torch's ``ceil_mode=False``).

    ``padding`` is an int, a pair ``(ph, pw)``, ``(top, bottom, left, right)``, ``"valid"``
    (no padding) or ``"same"`` (Keras/TensorFlow: ``OH = ceil(H / stride)``, the odd pixel of
    the padding at the bottom/right). Numeric padding must be at most half the pool size on
    each side, as torch requires, so every window holds at least one input element.
    """

    def __init__(self, pool_size: Any, stride: Any = None, padding: Any = 0, name: str | None = None) -> None:
        super().__init__(name)
        self.pool_size = kernels.as_pair(pool_size, "pool_size", self.name)
        self.stride = self.pool_size if stride is None else kernels.as_pair(stride, "stride", self.name)
        self.padding = padding
        self._check_padding(kernels.resolve_padding(padding, (1, 1), self.pool_size, self.stride, (1, 1), self.name))
        self.geometry: kernels.ConvGeometry | None = None
        self._x_shape: tuple[int, ...] | None = None

    def _check_padding(self, pads: kernels.Padding4) -> None:
        if isinstance(self.padding, str):
            return
        kh, kw = self.pool_size
        if max(pads[:2]) * 2 > kh or max(pads[2:]) * 2 > kw:
            raise ValueError(
                f"{self.name}: padding must be at most half the pool size {self.pool_size} on each side, got {self.padding!r}"
            )

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        c, h, w = kernels.image_shape(input_shape, self.name)
        window = f"the pool {self.pool_size} (padding {self.padding!r})"
        return (c, *kernels.checked_output_hw(self._geometry((h, w)), (c, h, w), self.name, window))

    def _geometry(self, hw: tuple[int, int]) -> kernels.ConvGeometry:
        pads = kernels.resolve_padding(self.padding, hw, self.pool_size, self.stride, (1, 1), self.name)
        return kernels.ConvGeometry(*self.pool_size, self.stride, (1, 1), pads)

    def build(self, input_shape: Shape, rng: np.random.Generator | None = None) -> None:
        super().build(input_shape)
        self.geometry = self._geometry(self.input_shape[1:])

    def get_config(self) -> dict[str, Any]:
        return {
            "pool_size": list(self.pool_size),
            "stride": list(self.stride),
            "padding": self.padding if isinstance(self.padding, (str, int)) else list(self.padding),
            "name": self.name,
        }


class MaxPooling(_Pooling2D):
    """Max pooling: ``y[n, c, i, j] = max_{p, q} xp[n, c, i*sh + p, j*sw + q]``.

    ``xp`` is ``x`` padded with ``-inf`` (so padding never wins), as ``torch.nn.functional.max_pool2d``.
    ``stride`` defaults to ``pool_size``. See :class:`_Pooling2D` for shapes and padding.

    Backward sends each ``dL/dy[n, c, i, j]`` to the position of its window's maximum (the
    sub-gradient); with overlapping windows the contributions add up. Ties go to the first
    maximal element in row-major window order, which is PyTorch's CPU choice too.

    Integer input gives output of the same dtype, as ``max_pool2d`` on an integer tensor does
    (exactly; 64-bit integers need a 64-bit-mantissa long double, as on x86, else must lie within
    ``+-2**53``); bool input is refused, as in torch.

    Shapes: ``(N, C, H, W) -> (N, C, OH, OW)``, ``OH = (H + pt + pb - kh) // sh + 1`` (likewise ``OW``).

    Args:
        pool_size: window ``k`` or ``(kh, kw)``.
        stride: ``s`` or ``(sh, sw)``; default ``pool_size``.
        padding: ``p``, ``(ph, pw)`` or ``(top, bottom, left, right)``, at most half the window.
        name: the layer's name.

    Example:
        >>> MaxPooling(2).forward(np.arange(16.0).reshape(1, 1, 4, 4))
        array([[[[ 5.,  7.],
                 [13., 15.]]]])
    """

    cache_attrs = ("_x_shape", "_argmax")

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self.check_input(x)
        if x.dtype.kind == "b":
            raise TypeError(f"{self.name}: expected a numeric (integer or floating) array, got dtype bool (torch refuses it too)")
        self._x_shape = x.shape
        if x.dtype.kind == "f":  # an inference pass (keep_cache False) needs no argmax
            y, self._argmax = kernels.max_pool2d_forward(x, self.geometry, need_argmax=self.keep_cache)
            return y
        # Integers keep their dtype, as in torch. The window search runs on a float type that
        # holds every value exactly (so the same maxima and argmax): float64 for up to 32 bits,
        # long double (64-bit mantissa on x86) for 64-bit integers.
        exact = np.float64 if x.dtype.itemsize <= 4 else np.longdouble
        if x.dtype.itemsize > 4 and np.finfo(exact).nmant < 63 and x.size:
            largest = max(abs(int(x.min())), abs(int(x.max())))
            if largest > 2**53:
                raise ValueError(f"{self.name}: {x.dtype} input beyond +-2**53 is not supported on this platform; got {largest}")
        y, self._argmax = kernels.max_pool2d_forward(x.astype(exact), self.geometry, need_argmax=self.keep_cache)
        return y.astype(x.dtype)

    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray:
        x_shape, argmax = self._require_cache("_x_shape"), self._require_cache("_argmax")
        return kernels.max_pool2d_backward(self.check_output_grad(dL_dy, x_shape[0]), argmax, x_shape, self.geometry)


class AveragePooling(_Pooling2D):
    """Average pooling: ``y[n, c, i, j] = (1 / d[i, j]) sum_{p, q} xp[n, c, i*sh + p, j*sw + q]``.

    ``xp`` is ``x`` zero-padded. With ``count_include_pad=True`` (the default, as
    ``torch.nn.functional.avg_pool2d``) the divisor ``d`` is always ``kh * kw``, padding
    included. With ``False`` it counts only the window's elements inside ``x`` (Keras'
    ``AveragePooling2D(padding="same")`` does this). ``stride`` defaults to ``pool_size``.

    Backward: every element of window ``(i, j)`` receives ``dL/dy[n, c, i, j] / d[i, j]``;
    overlapping windows add up. Integer input is refused (``TypeError``), as in torch.
    ``y`` and ``dL/dx`` are laid out in memory as the input (batch-innermost after a fast
    convolution), so that the layers around it never mix layouts.

    Shapes: ``(N, C, H, W) -> (N, C, OH, OW)``, as :class:`MaxPooling`.

    Args:
        pool_size: window ``k`` or ``(kh, kw)``.
        stride: ``s`` or ``(sh, sw)``; default ``pool_size``.
        padding: ``p``, ``(ph, pw)`` or ``(top, bottom, left, right)``.
        count_include_pad: divide by the whole window (True, torch's default) or by its part inside ``x``.
        name: the layer's name.

    Example:
        >>> AveragePooling(2).forward(np.arange(16.0).reshape(1, 1, 4, 4))
        array([[[[ 2.5,  4.5],
                 [10.5, 12.5]]]])
    """

    cache_attrs = ("_x_shape", "_dtype", "_x_order")

    def __init__(
        self,
        pool_size: Any,
        stride: Any = None,
        padding: Any = 0,
        count_include_pad: bool = True,
        name: str | None = None,
    ) -> None:
        super().__init__(pool_size, stride, padding, name)
        self.count_include_pad = bool(count_include_pad)
        self._divisors: dict[np.dtype, np.ndarray] = {}

    def build(self, input_shape: Shape, rng: np.random.Generator | None = None) -> None:
        super().build(input_shape, rng)
        self._divisors = {}

    def _divisor(self, dtype: np.dtype) -> np.ndarray:
        if dtype not in self._divisors:
            h, w = self.input_shape[1:]
            self._divisors[dtype] = kernels.avg_pool2d_divisor(h, w, self.geometry, self.count_include_pad, dtype)
        return self._divisors[dtype]

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = _floating_input(self, self.check_input(x))
        self._x_shape = x.shape
        self._dtype = x.dtype
        self._x_order = kernels.memory_order(x)
        return kernels.avg_pool2d_forward(x, self.geometry, self._divisor(x.dtype))

    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray:
        dL_dy = self.check_output_grad(dL_dy, self._require_cache("_x_shape")[0]).astype(self._dtype, copy=False)
        return kernels.avg_pool2d_backward(dL_dy, self._x_shape, self.geometry, self._divisor(self._dtype), self._x_order)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "count_include_pad": self.count_include_pad}


class GlobalAveragePooling(Node):
    """Mean over all spatial positions: ``(N, C, H, W) -> (N, C)``, ``y[n, c] = mean_{h, w} x[n, c, h, w]``.

    Any number of spatial axes works (``(N, C, L)`` too). Backward spreads ``dL/dy[n, c]``
    evenly: ``dL/dx[n, c, h, w] = dL/dy[n, c] / (H * W)``. Integer input is refused
    (``TypeError``), as torch's ``mean`` refuses it.

    Args:
        name: the layer's name.

    Example:
        >>> GlobalAveragePooling().forward(np.arange(8.0).reshape(1, 2, 2, 2))
        array([[1.5, 5.5]])
    """

    cache_attrs = ("_x_shape", "_x_order")

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self._x_shape: tuple[int, ...] | None = None
        self._x_order: tuple[int, ...] | None = None  # x's axes, outermost in memory first

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) < 2:
            raise ValueError(
                f"{self.name}: expected input of shape (batch, channels, height, width), "
                f"got (batch, {', '.join(map(str, input_shape))})"
            )
        return (input_shape[0],)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = _floating_input(self, self.check_input(x))
        self._x_shape = x.shape
        self._x_order = kernels.memory_order(x)
        return x.mean(axis=tuple(range(2, x.ndim)))

    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray:
        dL_dy = self.check_output_grad(dL_dy, self._require_cache("_x_shape")[0])
        order = self._require_cache("_x_order")
        spatial = int(np.prod(self._x_shape[2:]))
        share = dL_dy / spatial
        # dL/dx in x's memory layout (batch-innermost after a fast convolution), so that the
        # layers before it do not mix layouts in their backward.
        dx = np.empty([self._x_shape[i] for i in order], share.dtype).transpose(np.argsort(order))
        dx[...] = share.reshape(share.shape + (1,) * (len(self._x_shape) - 2))
        return dx

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name}
