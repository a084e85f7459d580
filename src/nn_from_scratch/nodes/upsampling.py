"""Upsampling of NCHW images by integer factors (nearest neighbour or bilinear)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import kernels
from ..interfaces import Node, Shape, as_float


class UpSampling2D(Node):
    """Enlarge each image by integer factors ``(fh, fw)``: ``(N, C, H, W) -> (N, C, fh*H, fw*W)``.

    ``interpolation="nearest"``: ``y[n, c, i, j] = x[n, c, i // fh, j // fw]`` (each pixel
    repeated), ``dL/dx`` sums ``dL/dy`` over each ``fh x fw`` block. ``"bilinear"``: torch's
    ``F.interpolate(x, scale_factor=(fh, fw), mode="bilinear", align_corners=False)``, which is
    also Keras' ``UpSampling2D(interpolation="bilinear")``. Along each axis, output ``o`` reads the
    source coordinate ``src = max((o + 0.5) / f - 0.5, 0)`` and mixes its two neighbours
    ``floor(src)`` and ``floor(src) + 1`` (clamped at the last pixel) with weights
    ``1 - frac, frac``. That is a fixed ``(f*H, H)`` matrix ``A_h`` (and ``A_w``): ``y = A_h x A_w^T``
    per image and ``dL/dx = A_h^T dL/dy A_w`` (:func:`kernels.upsample_bilinear2d`). The
    weights are computed in the input's precision, as torch does.

    Args:
        size: the factor for both axes (int) or ``(fh, fw)``, positive ints.
        interpolation: ``"nearest"`` or ``"bilinear"``.
        name: layer name.

    Example::

        >>> UpSampling2D(2).forward(np.array([[[[1.0, 2.0]]]]))
        array([[[[1., 1., 2., 2.],
                 [1., 1., 2., 2.]]]])
    """

    cache_attrs = ("_x_shape",)
    can_skip_input_grad = True

    def __init__(self, size: Any = 2, interpolation: str = "nearest", name: str | None = None) -> None:
        super().__init__(name)
        pair = (size, size) if isinstance(size, (int, np.integer)) else tuple(size) if isinstance(size, (tuple, list)) else None
        if pair is None or len(pair) != 2 or any(isinstance(f, bool) or not isinstance(f, (int, np.integer)) or f < 1
                                                 for f in pair):
            raise ValueError(f"{self.name}: size must be a positive int or a pair of positive ints, got {size!r}")
        if interpolation not in ("nearest", "bilinear"):
            raise ValueError(f"{self.name}: interpolation must be 'nearest' or 'bilinear', got {interpolation!r}")
        self.size = (int(pair[0]), int(pair[1]))
        self.interpolation = interpolation
        self._x_shape: tuple[int, ...] | None = None
        self._matrices: dict[np.dtype, tuple[np.ndarray, np.ndarray]] = {}

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        c, h, w = kernels.image_shape(input_shape, self.name)
        return (c, h * self.size[0], w * self.size[1])

    def _interpolation_matrices(self, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        if dtype not in self._matrices:  # built once per dtype, for the layer's input shape
            _, h, w = self.input_shape
            self._matrices[dtype] = (kernels.linear_interpolation_matrix(h, self.size[0], dtype),
                                     kernels.linear_interpolation_matrix(w, self.size[1], dtype))
        return self._matrices[dtype]

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float(self.check_input(x))
        self._x_shape = x.shape
        if self.interpolation == "nearest":
            return kernels.upsample_nearest2d(x, self.size)
        return kernels.upsample_bilinear2d(x, *self._interpolation_matrices(x.dtype))

    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        x_shape = self._require_cache("_x_shape")
        if not need_input_grad:
            return None
        dL_dy = self.check_output_grad(dL_dy, x_shape[0])
        if self.interpolation == "nearest":
            return kernels.upsample_nearest2d_backward(dL_dy, self.size)
        a_h, a_w = self._interpolation_matrices(as_float(dL_dy).dtype)
        return kernels.upsample_bilinear2d_backward(as_float(dL_dy), a_h, a_w)

    def get_config(self) -> dict[str, Any]:
        return {"size": list(self.size), "interpolation": self.interpolation, "name": self.name}
