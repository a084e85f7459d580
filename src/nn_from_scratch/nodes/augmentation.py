"""Augmentation layers (Keras' ``RandomFlip``, ``RandomTranslation``, ``RandomCrop``,
``RandomRotation``, ``RandomZoom``) for image batches ``(N, C, H, W)``.

They transform the batch in training mode only, each image with its own random draw from
``layer.rng`` -- the model's generator once the layer is in a model, so a seeded model trains
reproducibly -- and are the identity in inference mode (``predict``, ``evaluate``), except
``RandomCrop``, which then takes the central window (its output is smaller).

Backward passes the gradient through the same transform (its adjoint): a flip or a crop moves
values, so its backward moves the gradient back; translation, rotation and zoom sample the
image bilinearly, ``y = sum_k w_k x[p_k]`` over the four pixels around each sampling point,
so ``dL/dx[p] = sum w_k dL/dy`` over the outputs that sampled ``p``. Placed first in a model
(the usual place) they compute nothing in backward: the model's input needs no gradient
(``can_skip_input_grad``). Pixels sampled from outside the image are ``fill_value``
(Keras' ``fill_mode="constant"``) or the nearest edge pixel (``"nearest"``); Keras' default
``"reflect"`` is not implemented, and the default here is ``"constant"``.

Interop (Keras, torch, ONNX export) refuses these layers (``UnsupportedLayerError`` naming the
layer): they are training-time input transforms, which exported inference graphs do not hold.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import initializers
from ..interfaces import Node, Shape, as_float, is_int

__all__ = ["RandomCrop", "RandomFlip", "RandomRotation", "RandomTranslation", "RandomZoom"]


def _factor_range(value: Any, what: str, who: str, low: float = -math.inf) -> tuple[float, float]:
    """Keras' factor: ``f`` means ``(-f, f)``; a pair ``(lower, upper)`` is taken as is."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (-abs(value), abs(value)) if isinstance(
        value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) else None
    if pair is None or len(pair) != 2 or not all(isinstance(v, (int, float, np.integer, np.floating)) for v in pair):
        raise ValueError(f"{who}: {what} must be a number or a pair (lower, upper), got {value!r}")
    lower, upper = float(pair[0]), float(pair[1])
    if not (math.isfinite(lower) and math.isfinite(upper)) or lower > upper or lower < low:
        raise ValueError(f"{who}: {what} must give lower <= upper (and lower >= {low:g}), got {value!r}")
    return lower, upper


class _Augmentation(Node):
    """What the augmentation layers share: image input, the generator, identity in inference."""

    can_skip_input_grad = True

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self.rng: np.random.Generator | None = None

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 3:
            raise ValueError(f"{self.name}: expected images (batch, C, H, W), got (batch, {', '.join(map(str, input_shape))})")
        return input_shape

    def _generator(self) -> np.random.Generator:
        if self.rng is None:
            self.rng = initializers.default_rng()
        return self.rng


class RandomFlip(_Augmentation):
    """Mirror each image with probability 1/2 along the chosen axes (Keras' ``RandomFlip``).

    ``mode="horizontal"`` flips left-right (``y[..., j] = x[..., W - 1 - j]``), ``"vertical"``
    top-bottom, ``"horizontal_and_vertical"`` (Keras' default) draws both independently.
    One uniform draw per image and axis. Backward flips the gradient the same way.

    Args:
        mode: ``"horizontal"``, ``"vertical"`` or ``"horizontal_and_vertical"``.
        name: the layer's name.

    Example:
        >>> flip = RandomFlip("horizontal"); flip.training = False
        >>> flip.forward(np.zeros((2, 1, 4, 4))).shape       # identity in inference
        (2, 1, 4, 4)
    """

    cache_attrs = ("_flips",)

    def __init__(self, mode: str = "horizontal_and_vertical", name: str | None = None) -> None:
        super().__init__(name)
        if mode not in ("horizontal", "vertical", "horizontal_and_vertical"):
            raise ValueError(f"{self.name}: mode must be 'horizontal', 'vertical' or 'horizontal_and_vertical', got {mode!r}")
        self.mode = mode
        self._flips: tuple[np.ndarray, np.ndarray] | None = None

    def _apply(self, a: np.ndarray, flips: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        out = a.copy()
        fh, fv = flips
        out[fh] = out[fh][..., ::-1]
        out[fv] = out[fv][..., ::-1, :]
        return out

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float(self.check_input(x))
        if not self.training:
            return x
        rng = self._generator()
        n = len(x)
        none = np.zeros(n, dtype=bool)
        fh = rng.random(n) < 0.5 if self.mode != "vertical" else none
        fv = rng.random(n) < 0.5 if self.mode != "horizontal" else none
        self._flips = (fh, fv)
        return self._apply(x, self._flips)

    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        flips = self._require_cache("_flips")
        return self._apply(np.asarray(dL_dy), flips) if need_input_grad else None  # a flip is its own inverse

    def get_config(self) -> dict[str, Any]:
        return {"mode": self.mode, "name": self.name}


class RandomCrop(_Augmentation):
    """A random ``height x width`` window of each image in training, the central one in
    inference (Keras' ``RandomCrop``; Keras resizes in inference when the aspect ratios differ,
    which this layer does not). Output ``(N, C, height, width)``. Backward puts the gradient
    back in the window, zeros elsewhere.

    Args:
        height, width: the window, at most the image's size.
        name: the layer's name.

    Example:
        >>> RandomCrop(24, 24).compute_output_shape((1, 28, 28))
        (1, 24, 24)
    """

    cache_attrs = ("_offsets", "_x_shape")

    def __init__(self, height: int, width: int, name: str | None = None) -> None:
        super().__init__(name)
        if not (is_int(height) and is_int(width) and height >= 1 and width >= 1):
            raise ValueError(f"{self.name}: height and width must be positive ints, got {height!r} and {width!r}")
        self.height, self.width = int(height), int(width)
        self._offsets: np.ndarray | None = None
        self._x_shape: tuple[int, ...] | None = None

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        c, h, w = super().compute_output_shape(input_shape)
        if self.height > h or self.width > w:
            raise ValueError(f"{self.name}: the window {self.height}x{self.width} is larger than the images ({h}x{w})")
        return (c, self.height, self.width)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float(self.check_input(x))
        n, _, h, w = x.shape
        if self.training:
            rng = self._generator()
            offsets = np.stack([rng.integers(0, h - self.height + 1, n), rng.integers(0, w - self.width + 1, n)], axis=1)
        else:
            offsets = np.tile([(h - self.height) // 2, (w - self.width) // 2], (n, 1))
        self._offsets, self._x_shape = offsets, x.shape
        rows = offsets[:, 0, None] + np.arange(self.height)  # (N, height)
        cols = offsets[:, 1, None] + np.arange(self.width)
        return x[np.arange(n)[:, None, None, None], np.arange(x.shape[1])[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :]]

    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        offsets, shape = self._require_cache("_offsets"), self._require_cache("_x_shape")
        if not need_input_grad:
            return None
        dL_dy = np.asarray(dL_dy)
        dx = np.zeros(shape, dtype=dL_dy.dtype)
        for i, (top, left) in enumerate(offsets):
            dx[i, :, top:top + self.height, left:left + self.width] = dL_dy[i]
        return dx

    def get_config(self) -> dict[str, Any]:
        return {"height": self.height, "width": self.width, "name": self.name}


class _AffineAugmentation(_Augmentation):
    """Bilinear resampling of each image through its own affine map of pixel coordinates.

    For output pixel ``(i, j)`` the source point is ``(sy, sx) = A_n (i - cy, j - cx) + (cy, cx) + t_n``
    (``cy = (H - 1) / 2``); ``y = sum_k w_k x[p_k]`` over the four pixels around it, bilinear
    weights ``w_k``, each pixel outside the image contributing ``fill_value`` (``"constant"``)
    or being moved to the nearest edge (``"nearest"``).
    """

    cache_attrs = ("_corners", "_x_shape")

    def __init__(self, fill_mode: str = "constant", fill_value: float = 0.0, name: str | None = None) -> None:
        super().__init__(name)
        if fill_mode not in ("constant", "nearest"):
            raise ValueError(f"{self.name}: fill_mode must be 'constant' or 'nearest' (Keras' 'reflect' and 'wrap' "
                             f"are not implemented), got {fill_mode!r}")
        self.fill_mode, self.fill_value = fill_mode, float(fill_value)
        self._corners: list[tuple[np.ndarray, np.ndarray]] | None = None
        self._x_shape: tuple[int, ...] | None = None

    def _maps(self, n: int, h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``A (N, 2, 2)`` and ``t (N, 2)`` for a batch (subclasses draw them)."""
        raise NotImplementedError

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_float(self.check_input(x))
        if not self.training:
            return x
        n, c, h, w = x.shape
        A, t = self._maps(n, h, w, self._generator())
        cy, cx = (h - 1) / 2, (w - 1) / 2
        ii, jj = np.meshgrid(np.arange(h) - cy, np.arange(w) - cx, indexing="ij")
        grid = np.stack([ii.ravel(), jj.ravel()])  # (2, H*W)
        src = A @ grid + (t + [cy, cx])[:, :, None]  # (N, 2, H*W)
        sy, sx = src[:, 0], src[:, 1]
        y0, x0 = np.floor(sy), np.floor(sx)
        fy, fx = sy - y0, sx - x0
        flat = x.reshape(n, c, h * w)
        out = np.zeros((n, c, h * w), dtype=x.dtype)
        corners = []
        for dy, dx, weight in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
            yy, xx = (y0 + dy).astype(np.intp), (x0 + dx).astype(np.intp)
            if self.fill_mode == "nearest":
                inside = np.ones_like(yy, dtype=bool)
                yy, xx = np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)
            else:
                inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            index = np.where(inside, yy * w + xx, 0)
            wk = (weight * inside).astype(x.dtype)
            out += np.take_along_axis(flat, np.broadcast_to(index[:, None, :], (n, c, h * w)), axis=2) * wk[:, None, :]
            if self.fill_value and self.fill_mode == "constant":
                out += (weight * ~inside).astype(x.dtype)[:, None, :] * x.dtype.type(self.fill_value)
            corners.append((index, wk))
        self._corners, self._x_shape = corners, x.shape
        return out.reshape(x.shape)

    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        corners, shape = self._require_cache("_corners"), self._require_cache("_x_shape")
        if not need_input_grad:
            return None
        n, c, h, w = shape
        g = np.asarray(dL_dy).reshape(n, c, h * w)
        dx = np.zeros((n, h * w, c), dtype=g.dtype)
        rows = np.broadcast_to(np.arange(n)[:, None], (n, h * w))
        for index, wk in corners:
            np.add.at(dx, (rows, index), (g * wk[:, None, :]).transpose(0, 2, 1))
        return dx.transpose(0, 2, 1).reshape(shape)

    def get_config(self) -> dict[str, Any]:
        return {"fill_mode": self.fill_mode, "fill_value": self.fill_value, "name": self.name}


class RandomTranslation(_AffineAugmentation):
    """Shift each image by a random fraction of its size (Keras' ``RandomTranslation``).

    The shift is ``dy = u * H`` with ``u`` uniform in ``height_factor``'s range (``f`` means
    ``(-f, f)``), ``dx`` likewise; ``y[i, j] = x(i - dy, j - dx)``, sampled bilinearly.

    Args:
        height_factor, width_factor: a fraction ``f`` or a range ``(lower, upper)``.
        fill_mode: ``"constant"`` (default, ``fill_value``) or ``"nearest"``.
        fill_value: the value of pixels from outside the image.
        name: the layer's name.

    Example:
        >>> RandomTranslation(0.1, 0.1).get_config()["height_factor"]
        [-0.1, 0.1]
    """

    def __init__(self, height_factor: Any, width_factor: Any, fill_mode: str = "constant", fill_value: float = 0.0,
                 name: str | None = None) -> None:
        super().__init__(fill_mode, fill_value, name)
        self.height_factor = _factor_range(height_factor, "height_factor", self.name, low=-1.0)
        self.width_factor = _factor_range(width_factor, "width_factor", self.name, low=-1.0)

    def _maps(self, n: int, h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        dy = rng.uniform(*self.height_factor, n) * h
        dx = rng.uniform(*self.width_factor, n) * w
        return np.broadcast_to(np.eye(2), (n, 2, 2)), -np.stack([dy, dx], axis=1)

    def get_config(self) -> dict[str, Any]:
        return {"height_factor": list(self.height_factor), "width_factor": list(self.width_factor), **super().get_config()}


class RandomRotation(_AffineAugmentation):
    """Rotate each image about its centre by a random angle (Keras' ``RandomRotation``).

    The angle is ``u * 2 pi`` with ``u`` uniform in ``factor``'s range (``f``: ``(-f, f)``);
    positive is counter-clockwise. Sampled bilinearly.

    Args:
        factor: a fraction of a full turn, or a range ``(lower, upper)``.
        fill_mode: ``"constant"`` (default, ``fill_value``) or ``"nearest"``.
        fill_value: the value of pixels from outside the image.
        name: the layer's name.

    Example:
        >>> RandomRotation(0.05).factor
        (-0.05, 0.05)
    """

    def __init__(self, factor: Any, fill_mode: str = "constant", fill_value: float = 0.0, name: str | None = None) -> None:
        super().__init__(fill_mode, fill_value, name)
        self.factor = _factor_range(factor, "factor", self.name)

    def _maps(self, n: int, h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        theta = rng.uniform(*self.factor, n) * 2 * np.pi
        cos, sin = np.cos(theta), np.sin(theta)
        # source = R(-theta) (output - centre): rows are y (down), columns x (right)
        A = np.stack([np.stack([cos, sin], axis=1), np.stack([-sin, cos], axis=1)], axis=1)
        return A, np.zeros((n, 2))

    def get_config(self) -> dict[str, Any]:
        return {"factor": list(self.factor), **super().get_config()}


class RandomZoom(_AffineAugmentation):
    """Zoom each image about its centre by a random factor (Keras' ``RandomZoom``).

    With ``z`` uniform in ``height_factor``'s range (``f``: ``(-f, f)``; each bound ``> -1``),
    the source of output pixel ``i`` is ``cy + (i - cy) (1 + z)``: ``z > 0`` zooms out, ``z < 0``
    zooms in, as in Keras. ``width_factor=None`` uses the same ``z`` for both axes.

    Args:
        height_factor: ``f`` or ``(lower, upper)``.
        width_factor: the same for the width, or None (keep the aspect ratio).
        fill_mode: ``"constant"`` (default, ``fill_value``) or ``"nearest"``.
        fill_value: the value of pixels from outside the image.
        name: the layer's name.

    Example:
        >>> RandomZoom(0.1).width_factor is None
        True
    """

    def __init__(self, height_factor: Any, width_factor: Any = None, fill_mode: str = "constant",
                 fill_value: float = 0.0, name: str | None = None) -> None:
        super().__init__(fill_mode, fill_value, name)
        self.height_factor = _factor_range(height_factor, "height_factor", self.name)
        self.width_factor = None if width_factor is None else _factor_range(width_factor, "width_factor", self.name)
        for lower, _ in filter(None, (self.height_factor, self.width_factor)):
            if lower <= -1:
                raise ValueError(f"{self.name}: zoom factors must be > -1, got {lower}")

    def _maps(self, n: int, h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        zy = rng.uniform(*self.height_factor, n)
        zx = zy if self.width_factor is None else rng.uniform(*self.width_factor, n)
        A = np.zeros((n, 2, 2))
        A[:, 0, 0], A[:, 1, 1] = 1 + zy, 1 + zx
        return A, np.zeros((n, 2))

    def get_config(self) -> dict[str, Any]:
        return {"height_factor": list(self.height_factor),
                "width_factor": None if self.width_factor is None else list(self.width_factor), **super().get_config()}
