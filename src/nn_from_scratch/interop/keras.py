"""Our models <-> Keras 3 ``Sequential``, one converter per layer type.

Keras is channels-last: an image batch is ``(N, H, W, C)`` where ours is ``(N, C, H, W)``, and a
conv kernel is ``(kh, kw, C, O)`` where ours is ``(O, C, kh, kw)``. The subtle part is what
happens after a ``Flatten``: Keras flattens ``(H, W, C)``, we flatten ``(C, H, W)``, so the same
feature sits at a different index. Every converter therefore receives the :class:`Layout` of its
input (how the Keras tensor maps onto ours) and returns the layout of its output:

* ``PLAIN`` -- same array on both sides;
* ``IMAGE`` -- Keras holds ``moveaxis(ours, 1, -1)``;
* ``flat(perm)`` -- Keras holds ``ours[:, perm]`` (after a ``Flatten`` of an image): the
  ``Dense`` that consumes it gets its rows permuted, ``W_keras = W[1:][perm]``. When nothing
  consumes it -- the flattened image is the model's output -- the twin flattens as we do
  instead (``Permute((3, 1, 2))`` then ``Flatten``), so that the outputs match.

Element-wise layers keep the layout. Keras is imported here, with ``KERAS_BACKEND=torch`` set
first unless the caller chose a backend (or TensorFlow is installed and no backend was chosen).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

if "KERAS_BACKEND" not in os.environ and importlib.util.find_spec("tensorflow") is None:
    os.environ["KERAS_BACKEND"] = "torch"

import keras  # noqa: E402

from ..interfaces import Layer, Neuron  # noqa: E402
from .. import kernels  # noqa: E402
from ..losses import BinaryCrossEntropy, Loss, MSELoss, SoftMaxLoss, one_hot_targets  # noqa: E402
from ..model import Sequential  # noqa: E402
from ..neurons import BatchNormalization, Convolution, Linear  # noqa: E402
from ..neurons import TransposedConvolution  # noqa: E402
from ..kernels import resolve_padding  # noqa: E402
from ..nodes import (AveragePooling, Dropout, GlobalAveragePooling, LeakyReLU, MaxPooling, ReLU, Sigmoid,  # noqa: E402
                     SoftMax, Tanh, Vectorization)
from ._common import Registry, UnsupportedLayerError, is_graph_model, layer_label, model_layers  # noqa: E402


@contextlib.contextmanager
def float64_arithmetic() -> Iterator[None]:
    """Let Keras compute float64 layers in float64 while the block runs.

    Keras 3 (up to at least 3.15.1) mimics JAX without x64: its type promotion maps float64 to
    float32, so ``ops.matmul`` -- hence ``Dense`` -- rounds float64 inputs to float32 and a
    float64 twin agrees with us only to ~1e-7 (keras-team/keras#23704). Inside this block the
    float64 -> float32 entry of that promotion table is removed; it is restored afterwards.
    Versions without the table or without the entry are left alone.

    Example:
        >>> with float64_arithmetic():
        ...     keras.ops.matmul(np.ones((1, 2)), np.ones((2, 1))).dtype      # torch backend
        torch.float64
    """
    try:
        from keras.src.backend.common import dtypes
    except ImportError:  # pragma: no cover - a Keras layout we do not know
        yield
        return
    table = getattr(dtypes, "BIT64_TO_BIT32_DTYPE", None)
    if not isinstance(table, dict) or "float64" not in table:
        yield
        return
    removed = table.pop("float64")
    try:
        yield
    finally:
        table["float64"] = removed


@dataclass(frozen=True)
class Layout:
    """How a Keras tensor lays out the same numbers as ours (see the module docstring).

    Args:
        kind: ``"plain"`` (same on both sides), ``"image"`` (ours NCHW, Keras NHWC) or ``"flat"``
            (a flattened image whose features Keras orders as HWC).
        perm: for ``"flat"``, ``keras_features[:, j] = our_features[:, perm[j]]``.

    Example:
        >>> IMAGE.twin_shape((3, 8, 8))
        (8, 8, 3)
        >>> IMAGE.to_twin(np.zeros((1, 3, 8, 8))).shape
        (1, 8, 8, 3)
    """

    kind: str  # "plain" | "image" | "flat"
    perm: np.ndarray | None = field(default=None, compare=False)

    def to_twin(self, a: np.ndarray) -> np.ndarray:
        if self.kind == "image":
            return np.ascontiguousarray(np.moveaxis(a, 1, -1))
        if self.kind == "flat":
            return np.ascontiguousarray(a[:, self.perm])
        return a

    def to_ours(self, a: np.ndarray) -> np.ndarray:
        if self.kind == "image":
            return np.ascontiguousarray(np.moveaxis(a, -1, 1))
        if self.kind == "flat":
            out = np.empty_like(a)
            out[:, self.perm] = a
            return out
        return a

    def twin_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-sample shape on the Keras side for our per-sample ``shape``."""
        return (*shape[1:], shape[0]) if self.kind == "image" else tuple(shape)


PLAIN = Layout("plain")
IMAGE = Layout("image")


def flat(perm: np.ndarray) -> Layout:
    return Layout("flat", perm)


def chw_to_hwc_perm(c: int, h: int, w: int) -> np.ndarray:
    """``perm`` with ``flatten_hwc(x)[j] = flatten_chw(x)[perm[j]]``."""
    return np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).ravel()


def input_layout(shape: tuple[int, ...]) -> Layout:
    """A per-sample ``(C, H, W)`` input is an image; anything else is the same on both sides."""
    return IMAGE if len(shape) == 3 else PLAIN


# ``read(get)``: the twin's parameters in OUR layouts; ``get`` maps a Keras variable to an array.
Reader = Callable[[Callable[[Any], np.ndarray]], dict[str, np.ndarray]]


def _no_parameters(get: Callable[[Any], np.ndarray]) -> dict[str, np.ndarray]:
    return {}


@dataclass
class KerasTwin:
    """The Keras layers that compute one of our layers, and the layout of their output.

    Args:
        layers: the Keras layers, applied in order.
        out_layout: the :class:`Layout` of their output.
        read: ``read(get)`` -> the twin's parameters in OUR layouts.
        load: sets our weights on the layers once they are built.
        read_buffers: the same as ``read`` for buffers (batch-norm running statistics).

    Example:
        >>> twins, layout, shape = keras_twins(Sequential([Linear(output_dim=3)], input_shape=(4,), seed=0))
        >>> [type(layer).__name__ for layer in twins[0].layers], twins[0].out_layout.kind
        (['Dense'], 'plain')
    """

    layers: list[Any]
    out_layout: Layout
    read: Reader = _no_parameters
    load: Callable[[], None] = lambda: None  # sets the weights once the layers are built
    read_buffers: Reader = _no_parameters


@dataclass
class KerasContext:
    """What a converter to Keras needs besides the layer."""

    layout: Layout  # of the layer's input
    shape: tuple[int, ...]  # our per-sample input shape
    dtype: str
    where: str
    # Flatten images in our (C, H, W) order (Permute, then Flatten) instead of Keras' (H, W, C):
    # used when a flattened image reaches the model's output, which must then match ours.
    flatten_channels_first: bool = False
    # Merge layers of a graph (Add, Concatenate...): the layout and shape of every input.
    layouts: list[Layout] | None = None
    shapes: list[tuple[int, ...]] | None = None


TO_KERAS = Registry("to_keras")
FROM_KERAS = Registry("from_keras")
KERAS_LOSSES = Registry("keras loss")


# -- our layers -> Keras ----------------------------------------------------------------------
def _model_dtype(layers: list[Layer]) -> str:
    for layer in layers:
        if isinstance(layer, Neuron):
            return np.dtype(layer.dtype).name
    return "float32"


def _shapes(layers: list[Layer], input_shape: tuple[int, ...] | None) -> list[tuple[int, ...]]:
    """Our per-sample input shape of every layer (building unbuilt layers from ``input_shape``)."""
    shape = tuple(input_shape) if input_shape is not None else layers[0].input_shape if layers else None
    if shape is None:
        raise ValueError("to_keras: the model is not built; pass input_shape=(C, H, W) or run the model on a batch first")
    shapes = []
    for i, layer in enumerate(layers):
        if not layer.built:
            layer.build(shape)
        elif layer.input_shape != tuple(shape):
            raise ValueError(f"{layer_label(i, layer)}: expected input of shape (batch, {', '.join(map(str, layer.input_shape))}), "
                             f"got (batch, {', '.join(map(str, shape))})")
        shapes.append(tuple(shape))
        shape = layer.output_shape
    return shapes


def keras_twins(
    model: Any, input_shape: tuple[int, ...] | None = None, dtype: Any = None
) -> tuple[list[KerasTwin], Layout, tuple[int, ...]]:
    """One :class:`KerasTwin` per layer, the input layout and our per-sample input shape.

    Args:
        model: our ``Sequential`` or list of layers, built unless ``input_shape`` is given.
        input_shape: per-sample input shape, ours (``(C, H, W)`` for images).
        dtype: dtype of the Keras layers; default the model's.

    Returns:
        ``(twins, input_layout, input_shape)``.

    Example:
        >>> model = Sequential([Linear(output_dim=3), ReLU()], input_shape=(4,), seed=0)
        >>> twins, layout, shape = keras_twins(model)
        >>> len(twins), layout.kind, shape
        (2, 'plain', (4,))
    """
    layers = model_layers(model)
    shapes = _shapes(layers, input_shape)
    dtype = _model_dtype(layers) if dtype is None else np.dtype(dtype).name
    start = input_layout(shapes[0]) if shapes else PLAIN

    def convert_all(flatten_channels_first: bool) -> list[KerasTwin]:
        layout, twins = start, []
        for i, (layer, shape) in enumerate(zip(layers, shapes)):
            convert = TO_KERAS.lookup(layer, where=f"layer {i} ")
            twin = convert(layer, KerasContext(layout, shape, dtype, layer_label(i, layer), flatten_channels_first))
            twins.append(twin)
            layout = twin.out_layout
        return twins

    twins = convert_all(False)
    if twins and twins[-1].out_layout.kind == "flat":  # the output would come out in Keras' order
        twins = convert_all(True)
    return twins, start, (shapes[0] if shapes else ())


def to_keras(model: Any, input_shape: tuple[int, ...] | None = None, dtype: Any = None) -> "keras.Sequential":
    """An equivalent Keras ``Sequential`` (channels-last) holding copies of the model's weights.

    It takes ``(N, H, W, C)`` images where ours takes ``(N, C, H, W)``; weights and the rows of
    the first ``Dense`` after a ``Flatten`` are rearranged so that it computes the same function.
    The model must be built (or ``input_shape`` given, per sample, ours: ``(C, H, W)``).
    ``dtype`` (of every Keras layer) defaults to the dtype of the model's first weights, or
    float32 for a model without weights.

    A graph :class:`~nn_from_scratch.graph.Model` becomes a functional ``keras.Model``: each node
    a call of its layer's Keras twin (a layer used at several nodes is one Keras layer called at
    each, so the weights stay shared), ``Add`` / ``Multiply`` / ``Concatenate`` as Keras' own
    (``Concatenate(axis=1)`` over our channels is ``axis=-1`` in NHWC). Every tensor carries its
    :class:`Layout`; the inputs of ``Add`` and ``Multiply`` must share theirs.

    Args:
        model: our ``Sequential`` or graph ``Model``.
        input_shape: per-sample input shape, ours (``(C, H, W)``); needed when the model is not built.
        dtype: dtype of every Keras layer; default the model's first weights' dtype (float32 without).

    Returns:
        A Keras ``Sequential`` (functional ``keras.Model`` for a graph).

    Example:
        >>> model = Sequential([Linear(output_dim=3), ReLU()], input_shape=(4,), seed=0)
        >>> to_keras(model).input_shape
        (None, 4)
    """
    if is_graph_model(model):
        return _graph_to_keras(model, input_shape, dtype)
    twins, layout, shape = keras_twins(model, input_shape, dtype)
    dtype = _model_dtype(model_layers(model)) if dtype is None else np.dtype(dtype).name
    net = keras.Sequential([keras.Input(shape=layout.twin_shape(shape), dtype=dtype)]
                           + [k for twin in twins for k in twin.layers])
    for twin in twins:
        twin.load()
    return net


def _conv_pads(layer: Convolution, where: str) -> Any:
    if layer.geometry is not None:
        return layer.geometry.padding
    return resolve_padding(layer.padding, (1, 1), layer.kernel_size, layer.stride, layer.dilation, where)


def _require_image(ctx: KerasContext, layer: Layer) -> None:
    if ctx.layout.kind != "image":
        raise ValueError(f"{ctx.where}: expected an image input (batch, C, H, W) on the Keras side, got per-sample shape {ctx.shape}")


@TO_KERAS.register(Convolution)
def _conv_to_keras(layer: Convolution, ctx: KerasContext) -> KerasTwin:
    _require_image(ctx, layer)
    if layer.stride != (1, 1) and layer.dilation != (1, 1):
        raise UnsupportedLayerError(
            f"to_keras: {ctx.where} {layer!r}: Keras' Conv2D does not support stride > 1 together with dilation > 1"
        )
    layers: list[Any] = []
    if isinstance(layer.padding, str) and layer.padding == "same":
        padding = "same"  # Keras' own rule, which ours follows (extra pixel at the bottom/right)
    else:
        top, bottom, left, right = _conv_pads(layer, ctx.where)
        if top or bottom or left or right:
            layers.append(keras.layers.ZeroPadding2D(((top, bottom), (left, right)), dtype=ctx.dtype))
        padding = "valid"
    in_channels = layer.W.shape[1] * layer.groups
    if layer.groups > 1 and layer.groups == in_channels:  # depthwise: Keras' kernel is (kh, kw, C, multiplier)
        return _depthwise_to_keras(layer, ctx, layers, padding)
    conv = keras.layers.Conv2D(
        layer.out_channels, layer.kernel_size, strides=layer.stride, padding=padding,
        dilation_rate=layer.dilation, groups=layer.groups, use_bias=layer.use_bias, dtype=ctx.dtype,
    )
    layers.append(conv)

    def load() -> None:
        weights = [layer.W.transpose(2, 3, 1, 0)] + ([layer.B] if layer.use_bias else [])
        conv.set_weights([np.asarray(w, dtype=ctx.dtype) for w in weights])

    def read(get):
        out = {"W": np.ascontiguousarray(get(conv.kernel).transpose(3, 2, 0, 1))}
        if layer.use_bias:
            out["B"] = get(conv.bias)
        return out

    return KerasTwin(layers, IMAGE, read, load)


def _depthwise_to_keras(layer: Convolution, ctx: KerasContext, layers: list[Any], padding: str) -> KerasTwin:
    """``DepthwiseConv2D``: its output channel ``c*m + j`` is ours (input channel c, j-th of m)."""
    c, (kh, kw) = layer.groups, layer.kernel_size
    m = layer.out_channels // c
    conv = keras.layers.DepthwiseConv2D(
        layer.kernel_size, strides=layer.stride, padding=padding, depth_multiplier=m,
        dilation_rate=layer.dilation, use_bias=layer.use_bias, dtype=ctx.dtype,
    )
    layers.append(conv)

    def load() -> None:
        weights = [layer.W.reshape(c, m, kh, kw).transpose(2, 3, 0, 1)] + ([layer.B] if layer.use_bias else [])
        conv.set_weights([np.asarray(w, dtype=ctx.dtype) for w in weights])

    def read(get):
        out = {"W": np.ascontiguousarray(get(conv.kernel).transpose(2, 3, 0, 1)).reshape(c * m, 1, kh, kw)}
        if layer.use_bias:
            out["B"] = get(conv.bias)
        return out

    return KerasTwin(layers, IMAGE, read, load)


@TO_KERAS.register(TransposedConvolution)
def _transposed_conv_to_keras(layer: TransposedConvolution, ctx: KerasContext) -> KerasTwin:
    """``Conv2DTranspose(padding="valid")``, then ``Cropping2D``: our ``padding`` crops the full
    output, and ``output_padding`` up to the bottom/right padding un-crops; beyond it, Keras' own
    ``output_padding`` adds the rows."""
    _require_image(ctx, layer)
    where = f"to_keras: {ctx.where} {layer!r}"
    if layer.groups != 1:
        raise UnsupportedLayerError(f"{where}: Keras' Conv2DTranspose has no groups")
    if layer.stride != (1, 1) and layer.dilation != (1, 1):
        raise UnsupportedLayerError(f"{where}: Keras' Conv2DTranspose does not support stride > 1 together with dilation > 1")
    top, bottom, left, right = layer.padding if len(layer.padding) == 4 else (layer.padding[0],) * 2 + (layer.padding[1],) * 2
    oph, opw = layer.output_padding
    extra = (max(oph - bottom, 0), max(opw - right, 0))
    if any(e >= s for e, s in zip(extra, layer.stride)):
        raise UnsupportedLayerError(f"{where}: output_padding beyond padding by {extra} needs Keras' output_padding, "
                                    f"which must be below the stride {layer.stride}")
    conv = keras.layers.Conv2DTranspose(
        layer.out_channels, layer.kernel_size, strides=layer.stride, padding="valid", output_padding=extra,
        dilation_rate=layer.dilation, use_bias=layer.use_bias, dtype=ctx.dtype,
    )
    layers: list[Any] = [conv]
    crops = ((top, max(bottom - oph, 0)), (left, max(right - opw, 0)))
    if any(any(pair) for pair in crops):
        layers.append(keras.layers.Cropping2D(crops, dtype=ctx.dtype))

    def load() -> None:
        weights = [layer.W.transpose(2, 3, 1, 0)] + ([layer.B] if layer.use_bias else [])  # (kh, kw, out, in)
        conv.set_weights([np.asarray(w, dtype=ctx.dtype) for w in weights])

    def read(get):
        out = {"W": np.ascontiguousarray(get(conv.kernel).transpose(3, 2, 0, 1))}
        if layer.use_bias:
            out["B"] = get(conv.bias)
        return out

    return KerasTwin(layers, IMAGE, read, load)


@TO_KERAS.register(Linear)
def _linear_to_keras(layer: Linear, ctx: KerasContext) -> KerasTwin:
    if ctx.layout.kind == "image":
        raise ValueError(f"{ctx.where}: expected input of shape (batch, features), got (batch, {', '.join(map(str, ctx.shape))})")
    perm = ctx.layout.perm if ctx.layout.kind == "flat" else None
    dense = keras.layers.Dense(layer.n_out, dtype=ctx.dtype)

    def load() -> None:
        kernel = layer.W[1:] if perm is None else layer.W[1:][perm]
        dense.set_weights([np.asarray(kernel, dtype=ctx.dtype), np.asarray(layer.W[0], dtype=ctx.dtype)])

    def read(get):
        kernel = get(dense.kernel)
        if perm is not None:
            kernel = flat(perm).to_ours(kernel.T).T  # rows back to our (C, H, W) order
        return {"W": np.concatenate([get(dense.bias)[None], kernel])}

    return KerasTwin([dense], PLAIN, read, load)


@TO_KERAS.register(Vectorization)
def _flatten_to_keras(layer: Vectorization, ctx: KerasContext) -> KerasTwin:
    if ctx.layout.kind == "image" and ctx.flatten_channels_first:
        return KerasTwin([keras.layers.Permute((3, 1, 2), dtype=ctx.dtype), keras.layers.Flatten(dtype=ctx.dtype)], PLAIN)
    if ctx.layout.kind == "image":
        out = flat(chw_to_hwc_perm(*ctx.shape))
    else:
        out = ctx.layout if len(ctx.shape) == 1 else PLAIN
    return KerasTwin([keras.layers.Flatten(dtype=ctx.dtype)], out)


def _elementwise(factory: Callable[[Any, KerasContext], Any]) -> Callable[[Any, KerasContext], KerasTwin]:
    return lambda layer, ctx: KerasTwin([factory(layer, ctx)], ctx.layout)


TO_KERAS.register(ReLU)(_elementwise(lambda layer, ctx: keras.layers.ReLU(dtype=ctx.dtype)))
TO_KERAS.register(LeakyReLU)(_elementwise(lambda layer, ctx: keras.layers.LeakyReLU(negative_slope=layer.alpha, dtype=ctx.dtype)))
TO_KERAS.register(Sigmoid)(_elementwise(lambda layer, ctx: keras.layers.Activation("sigmoid", dtype=ctx.dtype)))
TO_KERAS.register(Tanh)(_elementwise(lambda layer, ctx: keras.layers.Activation("tanh", dtype=ctx.dtype)))


@TO_KERAS.register(SoftMax)
def _softmax_to_keras(layer: SoftMax, ctx: KerasContext) -> KerasTwin:
    # Ours normalises the last axis, W for an image; in (N, H, W, C) that is axis 2. A
    # permutation of the features (layout "flat") does not change a softmax over all of them.
    axis = 2 if ctx.layout.kind == "image" else -1
    return KerasTwin([keras.layers.Softmax(axis=axis, dtype=ctx.dtype)], ctx.layout)


def _keras_same_pads(layer: Any, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The padding Keras' ``padding="same"`` gives this pooling layer on a (C, H, W) input."""
    (kh, kw), (sh, sw) = layer.pool_size, layer.stride
    return kernels.same_padding(shape[1], kh, sh, 1) + kernels.same_padding(shape[2], kw, sw, 1)


@TO_KERAS.register(MaxPooling)
def _max_pool_to_keras(layer: MaxPooling, ctx: KerasContext) -> KerasTwin:
    _require_image(ctx, layer)
    pads = layer.geometry.padding
    if pads == (0, 0, 0, 0):
        padding = "valid"
    elif pads == _keras_same_pads(layer, ctx.shape):
        padding = "same"  # Keras pads a max pool so that padding never wins, as we do
    else:
        raise UnsupportedLayerError(f"to_keras: {ctx.where} {layer!r}: Keras' MaxPooling2D pads only as 'valid' or 'same', "
                                    f"not {pads} (top, bottom, left, right)")
    return KerasTwin([keras.layers.MaxPooling2D(layer.pool_size, layer.stride, padding=padding, dtype=ctx.dtype)], IMAGE)


@TO_KERAS.register(AveragePooling)
def _avg_pool_to_keras(layer: AveragePooling, ctx: KerasContext) -> KerasTwin:
    _require_image(ctx, layer)
    pads = layer.geometry.padding
    pool = lambda padding: keras.layers.AveragePooling2D(layer.pool_size, layer.stride, padding=padding, dtype=ctx.dtype)  # noqa: E731
    if pads == (0, 0, 0, 0):
        return KerasTwin([pool("valid")], IMAGE)
    if layer.count_include_pad:  # zeros that count: pad explicitly, then average every window
        top, bottom, left, right = pads
        return KerasTwin([keras.layers.ZeroPadding2D(((top, bottom), (left, right)), dtype=ctx.dtype), pool("valid")], IMAGE)
    if pads == _keras_same_pads(layer, ctx.shape):
        _check_torch_backend_same_average(layer, ctx.shape, pads, f"to_keras: {ctx.where} {layer!r}")
        return KerasTwin([pool("same")], IMAGE)  # Keras' "same" divides by the elements inside the input
    raise UnsupportedLayerError(f"to_keras: {ctx.where} {layer!r}: Keras' AveragePooling2D excludes padding only as 'same', "
                                f"not {pads} (top, bottom, left, right)")


def _replicated_edges_change_the_average(size: int, pool: int, stride: int, pads: tuple[int, int]) -> bool:
    """Whether some window that overlaps the padding also holds more than one input element:
    only then does averaging replicated edge copies differ from averaging the elements inside."""
    before, _ = pads
    out = -(-size // stride)
    for i in range(out):
        start = i * stride - before
        if start < 0 or start + pool > size:
            if min(start + pool, size) - max(start, 0) > 1:
                return True
    return False


def _check_torch_backend_same_average(layer: Any, shape: tuple[int, ...], pads: tuple[int, int, int, int], where: str) -> None:
    """Keras' torch backend pads an asymmetric "same" pooling by *replicating* the edge, and an
    average then counts those copies, unlike TensorFlow and unlike us: refuse the cases where
    that changes the result."""
    top, bottom, left, right = pads
    if keras.backend.backend() != "torch" or (top == bottom and left == right):
        return
    (kh, kw), (sh, sw) = layer.pool_size, layer.stride
    if _replicated_edges_change_the_average(shape[-2], kh, sh, (top, bottom)) or \
            _replicated_edges_change_the_average(shape[-1], kw, sw, (left, right)):
        raise UnsupportedLayerError(
            f"{where}: on Keras' torch backend, AveragePooling2D(padding='same') with asymmetric padding {pads} "
            "averages replicated edge values, not only the elements inside the input"
        )


@TO_KERAS.register(GlobalAveragePooling)
def _global_avg_to_keras(layer: GlobalAveragePooling, ctx: KerasContext) -> KerasTwin:
    if ctx.layout.kind == "image":
        return KerasTwin([keras.layers.GlobalAveragePooling2D(dtype=ctx.dtype)], PLAIN)
    if len(ctx.shape) == 2:  # (C, L), the same on both sides: average the last axis
        return KerasTwin([keras.layers.GlobalAveragePooling1D(data_format="channels_first", dtype=ctx.dtype)], PLAIN)
    raise UnsupportedLayerError(f"to_keras: {ctx.where}: GlobalAveragePooling on per-sample shape {ctx.shape} is not supported")


TO_KERAS.register(Dropout)(_elementwise(lambda layer, ctx: keras.layers.Dropout(layer.rate, dtype=ctx.dtype)))


@TO_KERAS.register(BatchNormalization)
def _batchnorm_to_keras(layer: BatchNormalization, ctx: KerasContext) -> KerasTwin:
    if layer.momentum is None:
        raise UnsupportedLayerError(f"to_keras: {ctx.where}: momentum=None (a cumulative average) has no Keras equivalent")
    axis = -1 if ctx.layout.kind in ("image", "flat") or len(ctx.shape) == 1 else 1
    # Keras' momentum weighs the old running value, torch's (and ours) the new batch. Keras
    # updates the running variance with the biased batch variance, torch with the unbiased one:
    # outputs and gradients agree, running statistics after training drift apart slightly.
    bn = keras.layers.BatchNormalization(axis=axis, momentum=1.0 - layer.momentum, epsilon=layer.eps, dtype=ctx.dtype)
    vector = ctx.layout if ctx.layout.kind == "flat" else PLAIN  # per-feature vectors follow the feature order

    def to_twin(v: np.ndarray) -> np.ndarray:
        return vector.to_twin(np.asarray(v, dtype=ctx.dtype)[None])[0]

    def to_ours(v: np.ndarray) -> np.ndarray:
        return vector.to_ours(np.asarray(v)[None])[0]

    def load() -> None:
        bn.set_weights([to_twin(layer.gamma), to_twin(layer.beta), to_twin(layer.running_mean), to_twin(layer.running_var)])

    def read(get):
        return {"gamma": to_ours(get(bn.gamma)), "beta": to_ours(get(bn.beta))}

    def read_buffers(get):
        return {"running_mean": to_ours(get(bn.moving_mean)), "running_var": to_ours(get(bn.moving_variance))}

    return KerasTwin([bn], ctx.layout, read, load, read_buffers)


# -- Keras -> our layers ----------------------------------------------------------------------
@dataclass
class FromKerasContext:
    layout: Layout  # of the Keras layer's input
    keras_shape: tuple[int, ...]  # Keras per-sample input shape
    where: str
    # Merge layers of a functional model: the layout and Keras shape of every input.
    layouts: list[Layout] | None = None
    keras_shapes: list[tuple[int, ...]] | None = None


def from_keras(keras_model: Any, loss: Loss | None = None, optimizer: Any = None) -> Sequential:
    """Our ``Sequential`` equivalent to a built Keras ``Sequential`` (channels-last).

    Our model takes ``(N, C, H, W)`` where the Keras one takes ``(N, H, W, C)``. Activations given
    as ``activation=`` of a ``Conv2D`` / ``Dense`` become separate layers.

    A functional ``keras.Model`` (one input, one output) becomes a graph
    :class:`~nn_from_scratch.graph.Model`: its layer calls are walked back from the output, a
    Keras layer called at several places becomes one layer of ours called at each (shared
    weights), ``Add`` / ``Multiply`` / ``Concatenate`` become ours.

    Args:
        keras_model: a built Keras ``Sequential`` or functional ``keras.Model``.
        loss: our loss to attach, or None.
        optimizer: our optimizer to attach, or None.

    Returns:
        Our ``Sequential`` (or graph ``Model``).

    Example:
        >>> kmodel = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu")])
        >>> [type(layer).__name__ for layer in from_keras(kmodel).layers]
        ['Linear', 'ReLU']
    """
    if not isinstance(keras_model, keras.Sequential) and isinstance(keras_model, keras.Model):
        return _graph_from_keras(keras_model, loss, optimizer)
    klayers = [k for k in keras_model.layers if not isinstance(k, keras.layers.InputLayer)]
    inputs = getattr(keras_model, "inputs", None)
    if not inputs:
        raise ValueError("from_keras: the Keras model is not built; give it a keras.Input(shape) first")
    keras_shape = tuple(int(s) for s in inputs[0].shape[1:])
    layout = IMAGE if len(keras_shape) == 3 else PLAIN
    our_shape = (keras_shape[-1], *keras_shape[:-1]) if layout.kind == "image" else keras_shape
    layers: list[Layer] = []
    i = 0
    while i < len(klayers):
        klayer = klayers[i]
        convert = FROM_KERAS.lookup(klayer, where=f"layer {i} ")
        shape = tuple(int(s) for s in klayer.input.shape[1:])
        new_layers, used, layout = convert(klayers, i, FromKerasContext(layout, shape, f"from_keras: layer {i} ({klayer.name})"))
        layers.extend(new_layers)
        i += used
    return Sequential(layers, loss=loss, optimizer=optimizer, input_shape=our_shape)


def variable_array(variable: Any) -> np.ndarray:
    """A Keras variable's value as a new NumPy array (directly from the torch tensor on that backend)."""
    value = getattr(variable, "value", variable)
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy().copy()
    return np.array(keras.ops.convert_to_numpy(value))


def _weights(klayer: Any) -> list[np.ndarray]:
    return [variable_array(w) for w in klayer.weights]


_ACTIVATIONS: dict[str, Callable[[], Layer]] = {
    "relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh, "softmax": SoftMax, "leaky_relu": lambda: LeakyReLU(alpha=0.2),
}


def _activation(klayer: Any, layout: Layout, where: str) -> list[Layer]:
    """The layer for a Keras ``activation=`` argument ('linear' -> none)."""
    name = getattr(getattr(klayer, "activation", None), "__name__", "linear")
    if name == "linear":
        return []
    if name not in _ACTIVATIONS and name != "log_softmax":
        raise UnsupportedLayerError(f"{where}: activation {name!r} is not supported; supported: {sorted(_ACTIVATIONS)}")
    if name == "softmax" and layout.kind == "image":
        raise UnsupportedLayerError(f"{where}: a softmax over the channels of an image has no equivalent layer")
    if name == "log_softmax":  # Keras' last axis: the channels of an image (our axis 1)
        return [LogSoftMax(axis=1 if layout.kind == "image" else -1)]
    return [_ACTIVATIONS[name]()]


def _check_channels_last(klayer: Any, where: str) -> None:
    if getattr(klayer, "data_format", "channels_last") != "channels_last":
        raise UnsupportedLayerError(f"{where}: data_format={klayer.data_format!r} is not supported (only channels_last)")


@FROM_KERAS.register(keras.layers.Conv2D)
def _conv_from_keras(klayers: list[Any], i: int, ctx: FromKerasContext, extra: tuple[int, int, int, int] | None = None):
    conv = klayers[i]
    _check_channels_last(conv, ctx.where)
    weights = _weights(conv)
    W = np.ascontiguousarray(weights[0].transpose(3, 2, 0, 1))
    B = weights[1] if conv.use_bias else None
    padding: Any = conv.padding
    if extra is not None:
        if padding != "valid":
            raise UnsupportedLayerError(f"{ctx.where}: ZeroPadding2D before a Conv2D with padding={padding!r} is not supported")
        padding = extra
    layer = Convolution(None, tuple(conv.kernel_size), conv.filters, padding=padding, W=W, B=B, use_bias=conv.use_bias,
                        stride=tuple(conv.strides), dilation=tuple(conv.dilation_rate), groups=conv.groups, dtype=W.dtype)
    return [layer, *_activation(conv, IMAGE, ctx.where)], 1, IMAGE


@FROM_KERAS.register(keras.layers.DepthwiseConv2D)
def _depthwise_from_keras(klayers: list[Any], i: int, ctx: FromKerasContext, extra: tuple[int, int, int, int] | None = None):
    conv = klayers[i]
    _check_channels_last(conv, ctx.where)
    weights = _weights(conv)
    kh, kw, c, m = weights[0].shape
    W = np.ascontiguousarray(weights[0].transpose(2, 3, 0, 1)).reshape(c * m, 1, kh, kw)
    B = weights[1] if conv.use_bias else None
    padding: Any = conv.padding
    if extra is not None:
        if padding != "valid":
            raise UnsupportedLayerError(f"{ctx.where}: ZeroPadding2D before a DepthwiseConv2D with padding={padding!r} is not supported")
        padding = extra
    layer = Convolution(None, (kh, kw), c * m, padding=padding, W=W, B=B, use_bias=conv.use_bias, stride=tuple(conv.strides),
                        dilation=tuple(conv.dilation_rate), groups=c, dtype=W.dtype)
    return [layer, *_activation(conv, IMAGE, ctx.where)], 1, IMAGE


def _keras_transpose_crops(kernel: int, stride: int, dilation: int, padding: str, output_padding: int | None) -> tuple[int, int]:
    """What Keras' ``Conv2DTranspose`` removes from (negative: adds to) each end of the full
    transposed convolution, ``(i - 1) * stride + dilation * (kernel - 1) + 1`` long, along one axis
    (its JAX-style rule, which every backend follows)."""
    k = dilation * (kernel - 1) + 1
    if padding == "valid":
        before, after = k - 1, k - 1 + (max(k, stride) - k if output_padding is None else output_padding)
    else:
        total = stride + k - 2 if output_padding is None else k + k % 2 - 2 + output_padding
        before = min(total // 2 + total % 2, k - 1)
        after = total - before
    return k - 1 - before, k - 1 - after


@FROM_KERAS.register(keras.layers.Conv2DTranspose)
def _transposed_conv_from_keras(klayers: list[Any], i: int, ctx: FromKerasContext):
    """``Conv2DTranspose``, and the ``Cropping2D`` right after it if there is one."""
    conv = klayers[i]
    _check_channels_last(conv, ctx.where)
    output_padding = conv.output_padding
    if output_padding is not None and not isinstance(output_padding, (tuple, list)):
        output_padding = (output_padding, output_padding)
    crops = [_keras_transpose_crops(k, s, d, conv.padding, None if output_padding is None else op)
             for k, s, d, op in zip(conv.kernel_size, conv.strides, conv.dilation_rate, output_padding or (None, None))]
    follows = klayers[i + 1] if i + 1 < len(klayers) else None
    used = 1
    if isinstance(follows, keras.layers.Cropping2D) and getattr(follows, "data_format", "channels_last") == "channels_last":
        crops = [(a + int(c0), b + int(c1)) for (a, b), (c0, c1) in zip(crops, follows.cropping)]
        used = 2
    if min(before for before, _ in crops) < 0:
        raise UnsupportedLayerError(f"{ctx.where}: Conv2DTranspose(padding={conv.padding!r}, output_padding={conv.output_padding}) "
                                    f"adds rows before the output ({crops}, (before, after) per axis)")
    # torch's spelling where it can: symmetric padding, output_padding giving back the end
    # (below max(stride, dilation)); else rows cropped at the end are padding, rows added there
    # output_padding.
    pads, out_padding = [], []
    for (before, after), s, d in zip(crops, conv.strides, conv.dilation_rate):
        symmetric = 0 <= before - after < max(s, d)
        pads.append((before, before) if symmetric else (before, max(after, 0)))
        out_padding.append(before - after if symmetric else max(-after, 0))
    (top, bottom), (left, right) = pads
    padding: Any = (top, left) if (top, left) == (bottom, right) else (top, bottom, left, right)
    out_padding = tuple(out_padding)
    weights = _weights(conv)
    W = np.ascontiguousarray(weights[0].transpose(3, 2, 0, 1))  # (kh, kw, out, in) -> (in, out, kh, kw)
    B = weights[1] if conv.use_bias else None
    try:
        layer = TransposedConvolution(None, tuple(conv.kernel_size), conv.filters, padding=padding, W=W, B=B,
                                      use_bias=conv.use_bias, stride=tuple(conv.strides), output_padding=out_padding,
                                      dilation=tuple(conv.dilation_rate), dtype=W.dtype)
    except ValueError as err:  # e.g. output_padding not below the stride or the dilation
        raise UnsupportedLayerError(f"{ctx.where}: {err}") from err
    return [layer, *_activation(conv, IMAGE, ctx.where)], used, IMAGE


@FROM_KERAS.register(keras.layers.ZeroPadding2D)
def _zeropad_from_keras(klayers: list[Any], i: int, ctx: FromKerasContext):
    pad = klayers[i]
    _check_channels_last(pad, ctx.where)
    (top, bottom), (left, right) = pad.padding
    following = {keras.layers.Conv2D: _conv_from_keras, keras.layers.DepthwiseConv2D: _depthwise_from_keras,
                 keras.layers.AveragePooling2D: _avg_pool_from_keras}
    target = klayers[i + 1] if i + 1 < len(klayers) else None
    convert = next((fn for cls, fn in following.items() if isinstance(target, cls)), None)
    if convert is None:
        raise UnsupportedLayerError(f"{ctx.where}: ZeroPadding2D is supported only right before a Conv2D, a DepthwiseConv2D or an AveragePooling2D")
    layers, used, layout = convert(klayers, i + 1, ctx, extra=(int(top), int(bottom), int(left), int(right)))
    return layers, used + 1, layout


@FROM_KERAS.register(keras.layers.Dense)
def _dense_from_keras(klayers: list[Any], i: int, ctx: FromKerasContext):
    dense = klayers[i]
    if len(ctx.keras_shape) != 1:
        raise UnsupportedLayerError(f"{ctx.where}: Dense on a (batch, {', '.join(map(str, ctx.keras_shape))}) input is not supported; "
                                    "flatten it first")
    weights = _weights(dense)
    kernel = weights[0]
    if ctx.layout.kind == "flat":
        kernel = ctx.layout.to_ours(kernel.T).T
    bias = weights[1] if dense.use_bias else np.zeros(kernel.shape[1], dtype=kernel.dtype)
    W = np.concatenate([bias[None], kernel])
    return [Linear(None, dense.units, W=W, dtype=W.dtype), *_activation(dense, PLAIN, ctx.where)], 1, PLAIN


@FROM_KERAS.register(keras.layers.Flatten)
def _flatten_from_keras(klayers: list[Any], i: int, ctx: FromKerasContext):
    _check_channels_last(klayers[i], ctx.where)
    if ctx.layout.kind == "image":
        h, w, c = ctx.keras_shape
        return [Vectorization()], 1, flat(chw_to_hwc_perm(c, h, w))
    return [Vectorization()], 1, ctx.layout if len(ctx.keras_shape) == 1 else PLAIN


@FROM_KERAS.register(keras.layers.Permute)
def _permute_from_keras(klayers: list[Any], i: int, ctx: FromKerasContext):
    follows = klayers[i + 1] if i + 1 < len(klayers) else None
    if ctx.layout.kind == "image" and tuple(klayers[i].dims) == (3, 1, 2) and isinstance(follows, keras.layers.Reshape):
        layers, used, layout = _reshape_from_keras(klayers, i + 1, ctx, True)  # the image in our order, reshaped
        return layers, used + 1, layout
    if ctx.layout.kind != "image" or tuple(klayers[i].dims) != (3, 1, 2) or not isinstance(follows, keras.layers.Flatten):
        raise UnsupportedLayerError(f"{ctx.where}: Permute is supported only as Permute((3, 1, 2)) of an image right before "
                                    "a Flatten or a Reshape")
    return [Vectorization()], 2, PLAIN  # channels first, then flattened: our own order


@FROM_KERAS.register(keras.layers.ReLU)
def _relu_from_keras(klayers: list[Any], i: int, ctx: FromKerasContext):
    relu = klayers[i]
    if relu.max_value is not None or float(relu.threshold) != 0.0:
        raise UnsupportedLayerError(f"{ctx.where}: ReLU with max_value or threshold is not supported")
    slope = float(relu.negative_slope)
    return [LeakyReLU(alpha=slope) if slope else ReLU()], 1, ctx.layout


@FROM_KERAS.register(keras.layers.LeakyReLU)
def _leaky_from_keras(klayers: list[Any], i: int, ctx: FromKerasContext):
    return [LeakyReLU(alpha=float(klayers[i].negative_slope))], 1, ctx.layout


@FROM_KERAS.register(keras.layers.Activation)
def _activation_from_keras(klayers: list[Any], i: int, ctx: FromKerasContext):
    return _activation(klayers[i], ctx.layout, ctx.where), 1, ctx.layout


@FROM_KERAS.register(keras.layers.Softmax)
def _softmax_from_keras(klayers: list[Any], i: int, ctx: FromKerasContext):
    axis = klayers[i].axis
    ndim = len(ctx.keras_shape) + 1
    wanted = 2 if ctx.layout.kind == "image" else ndim - 1
    if not isinstance(axis, int) or axis % ndim != wanted:
        raise UnsupportedLayerError(f"{ctx.where}: Softmax(axis={axis}) has no equivalent here (ours normalises "
                                    f"{'the width axis of an image' if ctx.layout.kind == 'image' else 'the last axis'})")
    return [SoftMax()], 1, ctx.layout


def _pool_args(pool: Any, ctx: FromKerasContext) -> tuple[tuple[int, int], tuple[int, int], str]:
    _check_channels_last(pool, ctx.where)
    strides = pool.strides if pool.strides is not None else pool.pool_size
    return tuple(pool.pool_size), tuple(strides), pool.padding


@FROM_KERAS.register(keras.layers.MaxPooling2D)
def _max_pool_from_keras(klayers: list[Any], i: int, ctx: FromKerasContext):
    pool, stride, padding = _pool_args(klayers[i], ctx)
    return [MaxPooling(pool, stride, padding)], 1, IMAGE


@FROM_KERAS.register(keras.layers.AveragePooling2D)
def _avg_pool_from_keras(klayers: list[Any], i: int, ctx: FromKerasContext, extra: tuple[int, int, int, int] | None = None):
    pool, stride, padding = _pool_args(klayers[i], ctx)
    if extra is not None:
        if padding != "valid":
            raise UnsupportedLayerError(f"{ctx.where}: ZeroPadding2D before an AveragePooling2D with padding={padding!r} is not supported")
        return [AveragePooling(pool, stride, extra, count_include_pad=True)], 1, IMAGE
    layer = AveragePooling(pool, stride, padding, count_include_pad=False)
    if padding == "same":  # Keras' "same" averages only the elements inside the input (on TensorFlow)
        h, w, _ = ctx.keras_shape
        pads = kernels.same_padding(h, pool[0], stride[0], 1) + kernels.same_padding(w, pool[1], stride[1], 1)
        _check_torch_backend_same_average(layer, (h, w), pads, ctx.where)
    return [layer], 1, IMAGE


@FROM_KERAS.register(keras.layers.GlobalAveragePooling2D)
def _global_avg_from_keras(klayers: list[Any], i: int, ctx: FromKerasContext):
    pool = klayers[i]
    _check_channels_last(pool, ctx.where)
    if pool.keepdims:
        raise UnsupportedLayerError(f"{ctx.where}: GlobalAveragePooling2D(keepdims=True) is not supported")
    return [GlobalAveragePooling()], 1, PLAIN


@FROM_KERAS.register(keras.layers.GlobalAveragePooling1D)
def _global_avg_1d_from_keras(klayers: list[Any], i: int, ctx: FromKerasContext):
    pool = klayers[i]
    if pool.data_format != "channels_first" or pool.keepdims or ctx.layout.kind != "plain":
        raise UnsupportedLayerError(f"{ctx.where}: GlobalAveragePooling1D is supported only with data_format='channels_first' "
                                    "and keepdims=False (a (batch, C, L) input averaged over L)")
    return [GlobalAveragePooling()], 1, PLAIN


FROM_KERAS.register(keras.layers.Dropout)(lambda klayers, i, ctx: ([Dropout(float(klayers[i].rate))], 1, ctx.layout))


@FROM_KERAS.register(keras.layers.BatchNormalization)
def _batchnorm_from_keras(klayers: list[Any], i: int, ctx: FromKerasContext):
    bn = klayers[i]
    ndim = len(ctx.keras_shape) + 1
    channel_axis = ndim - 1 if ctx.layout.kind in ("image", "flat") or ndim == 2 else 1
    axis = bn.axis if isinstance(bn.axis, int) else (bn.axis[0] if len(bn.axis) == 1 else None)
    if axis is None or axis % ndim != channel_axis:
        raise UnsupportedLayerError(f"{ctx.where}: BatchNormalization(axis={bn.axis}) is supported only over the channel axis")
    if not (bn.center and bn.scale):
        raise UnsupportedLayerError(f"{ctx.where}: BatchNormalization needs center=True and scale=True")
    vector = ctx.layout if ctx.layout.kind == "flat" else PLAIN
    gamma, beta, mean, var = (vector.to_ours(w[None])[0] for w in _weights(bn))
    layer = BatchNormalization(momentum=1.0 - float(bn.momentum), eps=float(bn.epsilon), input_dim=gamma.shape[0],
                               gamma=gamma, beta=beta, dtype=gamma.dtype)
    layer.running_mean[...] = mean
    layer.running_var[...] = var
    return [layer], 1, ctx.layout


# -- graph models -----------------------------------------------------------------------------
from ..nodes import Add, Concatenate, Multiply  # noqa: E402


def same_layout(a: Layout, b: Layout) -> bool:
    """Whether two Keras tensors lay out our numbers the same way (``flat`` layouts: the same order)."""
    return a.kind == b.kind and (a.kind != "flat" or np.array_equal(a.perm, b.perm))


def _merge_layouts(layouts: list[Layout], where: str, what: str) -> Layout:
    """The common layout of a merge layer's inputs, or an error: Add and Multiply combine
    entries position by position, so the inputs must hold our numbers in the same places."""
    first = layouts[0]
    if not all(same_layout(first, other) for other in layouts[1:]):
        raise UnsupportedLayerError(f"{where}: {what} of inputs laid out differently on the Keras side "
                                    f"({', '.join(lay.kind for lay in layouts)}) is not supported")
    return first


def _concat_layout(layouts: list[Layout], sizes: list[int]) -> Layout:
    """Joining vectors: ``flat(p_a)`` then ``flat(p_b)`` hold ``ours[:, concat(p_a, p_b + len(a))]``."""
    if all(lay.kind == "plain" for lay in layouts):
        return PLAIN
    perms, offset = [], 0
    for lay, size in zip(layouts, sizes):
        perms.append((lay.perm if lay.kind == "flat" else np.arange(size)) + offset)
        offset += size
    return flat(np.concatenate(perms))


def _merge_to_keras(keras_cls: Any) -> Callable[[Any, KerasContext], KerasTwin]:
    def convert(layer: Any, ctx: KerasContext) -> KerasTwin:
        layouts = ctx.layouts or [ctx.layout]
        return KerasTwin([keras_cls(dtype=ctx.dtype)], _merge_layouts(layouts, f"to_keras: {ctx.where}", type(layer).__name__))

    return convert


TO_KERAS.register(Add)(_merge_to_keras(keras.layers.Add))
TO_KERAS.register(Multiply)(_merge_to_keras(keras.layers.Multiply))

# Our per-sample axis of a (C, H, W) image -> the Keras axis of an (N, H, W, C) batch, and back.
_CHW_AXIS_TO_KERAS = {0: 3, 1: 1, 2: 2}
_KERAS_AXIS_TO_CHW = {v: k for k, v in _CHW_AXIS_TO_KERAS.items()}


@TO_KERAS.register(Concatenate)
def _concat_to_keras(layer: Concatenate, ctx: KerasContext) -> KerasTwin:
    layouts = ctx.layouts or [ctx.layout]
    shapes = ctx.shapes or [ctx.shape]
    axis = layer._sample_axis(len(shapes[0]))  # per sample: 0 is the channel axis of an image
    kinds = {lay.kind for lay in layouts}
    if kinds == {"image"}:
        return KerasTwin([keras.layers.Concatenate(axis=_CHW_AXIS_TO_KERAS[axis], dtype=ctx.dtype)], IMAGE)
    if len(shapes[0]) == 1 and kinds <= {"plain", "flat"}:
        out = _concat_layout(layouts, [s[0] for s in shapes])
        return KerasTwin([keras.layers.Concatenate(axis=1, dtype=ctx.dtype)], out)
    if kinds == {"plain"}:
        return KerasTwin([keras.layers.Concatenate(axis=axis + 1, dtype=ctx.dtype)], PLAIN)
    raise UnsupportedLayerError(f"to_keras: {ctx.where}: Concatenate of inputs laid out as "
                                f"{', '.join(lay.kind for lay in layouts)} on the Keras side is not supported")


def _merge_from_keras(ours: Callable[[], Layer]) -> Callable[..., Any]:
    def convert(klayers: list[Any], i: int, ctx: FromKerasContext):
        layouts = ctx.layouts or [ctx.layout]
        return [ours()], 1, _merge_layouts(layouts, ctx.where, type(klayers[i]).__name__)

    return convert


FROM_KERAS.register(keras.layers.Add)(_merge_from_keras(Add))
FROM_KERAS.register(keras.layers.Multiply)(_merge_from_keras(Multiply))


@FROM_KERAS.register(keras.layers.Concatenate)
def _concat_from_keras(klayers: list[Any], i: int, ctx: FromKerasContext):
    layouts = ctx.layouts or [ctx.layout]
    shapes = ctx.keras_shapes or [ctx.keras_shape]
    ndim = len(shapes[0]) + 1
    axis = int(klayers[i].axis) % ndim
    kinds = {lay.kind for lay in layouts}
    if kinds == {"image"} and axis in _KERAS_AXIS_TO_CHW:
        return [Concatenate(axis=1 + _KERAS_AXIS_TO_CHW[axis])], 1, IMAGE
    if ndim == 2 and kinds <= {"plain", "flat"}:
        return [Concatenate(axis=1)], 1, _concat_layout(layouts, [s[0] for s in shapes])
    if kinds == {"plain"} and axis > 0:
        return [Concatenate(axis=axis)], 1, PLAIN
    raise UnsupportedLayerError(f"{ctx.where}: Concatenate(axis={klayers[i].axis}) of inputs laid out as "
                                f"{', '.join(lay.kind for lay in layouts)} is not supported")


@dataclass
class KerasGraphNode:
    """The Keras side of one node of a graph model.

    Args:
        twin: the :class:`KerasTwin` of the node's layer.
        in_layouts: the :class:`Layout` of each input of the node.
        reused: True when ``twin`` is the twin of an earlier node of the same (shared) layer.

    Example:
        >>> x = Input(shape=(4,))
        >>> graph = Model(x, Add()([x, Linear(output_dim=4)(x)]), seed=0)
        >>> nodes, start = keras_graph_twins(graph)
        >>> [node.reused for node in nodes], start.kind
        ([False, False], 'plain')
    """

    twin: KerasTwin
    in_layouts: list[Layout]
    reused: bool = False  # the twin of an earlier node of the same (shared) layer


def keras_graph_twins(model: Any, dtype: Any = None, per_node: bool = False) -> tuple[list[KerasGraphNode], Layout]:
    """One :class:`KerasGraphNode` per node of a graph model, and the layout of its input.

    A layer used at several nodes gets one twin, reused at each (its weights stay shared), unless
    ``per_node`` (then every node has a twin of its own, e.g. to read each call's gradients).

    Args:
        model: a built graph :class:`~nn_from_scratch.graph.Model`.
        dtype: dtype of the Keras layers; default the model's.
        per_node: give every node a twin of its own, even for a shared layer.

    Returns:
        ``(nodes, input_layout)``.

    Example:
        >>> x = Input(shape=(4,))
        >>> graph = Model(x, Add()([x, Linear(output_dim=4)(x)]), seed=0)
        >>> nodes, start = keras_graph_twins(graph)
        >>> len(nodes), start.kind
        (2, 'plain')
    """
    dtype = _model_dtype(model.layers) if dtype is None else np.dtype(dtype).name
    start = input_layout(model.input_shape)
    layer_index = {id(layer): i for i, layer in enumerate(model.layers)}

    def convert_all(flatten_channels_first: bool) -> tuple[list[KerasGraphNode], Layout]:
        layouts = {model.inputs[0].id: start}
        nodes: list[KerasGraphNode] = []
        first_call: dict[int, KerasGraphNode] = {}
        for j, node in enumerate(model.nodes):
            layer = node.layer
            ins = [layouts[t.id] for t in node.inputs]
            where = f"node {j} ({layer.name}, layer {layer_index[id(layer)]})"
            earlier = None if per_node else first_call.get(id(layer))
            if earlier is not None:
                if not all(same_layout(a, b) for a, b in zip(earlier.in_layouts, ins)):
                    raise UnsupportedLayerError(
                        f"to_keras: {where}: a shared layer whose inputs are laid out differently on the Keras side at "
                        f"two calls ({', '.join(a.kind for a in earlier.in_layouts)} vs {', '.join(a.kind for a in ins)}) "
                        "would need different Keras weights")
                graph_node = KerasGraphNode(earlier.twin, ins, reused=True)
            else:
                shapes = [tuple(t.shape) for t in node.inputs]
                ctx = KerasContext(ins[0], shapes[0], dtype, where, flatten_channels_first, layouts=ins, shapes=shapes)
                graph_node = KerasGraphNode(TO_KERAS.lookup(layer, where=f"{where} ")(layer, ctx), ins)
                first_call[id(layer)] = graph_node
            nodes.append(graph_node)
            layouts[node.output.id] = graph_node.twin.out_layout
        return nodes, layouts[model.outputs[0].id]

    nodes, out = convert_all(False)
    if out.kind == "flat":  # the output would come out in Keras' order: flatten in ours instead
        nodes, out = convert_all(True)
    return nodes, start


def build_keras_graph(model: Any, nodes: list[KerasGraphNode], start: Layout, dtype: str) -> "keras.Model":
    """The functional Keras model of a graph model's twins (built, our weights loaded).

    Args:
        model: the graph model.
        nodes: its :class:`KerasGraphNode` list, from :func:`keras_graph_twins`.
        start: the layout of its input, from :func:`keras_graph_twins`.
        dtype: the Keras dtype, e.g. ``"float32"``.

    Returns:
        A built functional ``keras.Model``.

    Example:
        >>> x = Input(shape=(4,))
        >>> graph = Model(x, Add()([x, Linear(output_dim=4)(x)]), seed=0)
        >>> nodes, start = keras_graph_twins(graph)
        >>> build_keras_graph(graph, nodes, start, "float32").output_shape
        (None, 4)
    """
    inp = keras.Input(shape=start.twin_shape(model.input_shape), dtype=dtype)
    tensors = {model.inputs[0].id: inp}
    for node, graph_node in zip(model.nodes, nodes):
        args = [tensors[t.id] for t in node.inputs]
        h = args if node.layer.n_inputs is None else args[0]
        for klayer in graph_node.twin.layers:
            h = klayer(h)
        tensors[node.output.id] = h
    net = keras.Model(inp, tensors[model.outputs[0].id])
    for graph_node in nodes:
        if not graph_node.reused:
            graph_node.twin.load()
    return net


def _graph_to_keras(model: Any, input_shape: tuple[int, ...] | None, dtype: Any) -> "keras.Model":
    if input_shape is not None and tuple(input_shape) != tuple(model.input_shape):
        raise ValueError(f"to_keras: input_shape {tuple(input_shape)} does not match the graph's input {model.input_shape}")
    dtype = _model_dtype(model.layers) if dtype is None else np.dtype(dtype).name
    nodes, start = keras_graph_twins(model, dtype)
    return build_keras_graph(model, nodes, start, dtype)


def _keras_graph_nodes(keras_model: Any) -> list[Any]:
    """The Keras nodes (layer calls) from the model's input to its output, each after its inputs."""
    order: list[Any] = []
    seen: set[int] = set()

    def visit(tensor: Any) -> None:
        operation, node_index, _ = tensor._keras_history
        if operation is None or isinstance(operation, keras.layers.InputLayer):
            return
        knode = operation._inbound_nodes[node_index]
        if id(knode) in seen:
            return
        seen.add(id(knode))
        for source in knode.input_tensors:
            visit(source)
        order.append(knode)

    visit(keras_model.outputs[0])
    return order


def _graph_from_keras(keras_model: Any, loss: Loss | None, optimizer: Any) -> Any:
    from ..graph import Input, Model

    if len(keras_model.inputs) != 1 or len(keras_model.outputs) != 1:
        raise UnsupportedLayerError(f"from_keras: one input and one output are supported, got {len(keras_model.inputs)} "
                                    f"and {len(keras_model.outputs)}")
    kin = keras_model.inputs[0]
    keras_shape = tuple(int(s) for s in kin.shape[1:])
    layout = IMAGE if len(keras_shape) == 3 else PLAIN
    x = Input(shape=(keras_shape[-1], *keras_shape[:-1]) if layout.kind == "image" else keras_shape)
    mapped: dict[int, tuple[Any, Layout]] = {id(kin): (x, layout)}
    order = _keras_graph_nodes(keras_model)
    consumers: dict[int, list[Any]] = {}
    for knode in order:
        for t in knode.input_tensors:
            consumers.setdefault(id(t), []).append(knode)
    calls: dict[int, int] = {}
    for knode in order:
        calls[id(knode.operation)] = calls.get(id(knode.operation), 0) + 1
    output_id = id(keras_model.outputs[0])
    # A shared Keras layer (or a shared pair folded into one of ours) -> our layers, its input
    # layouts, its output layout and the Keras layers it covers.
    converted: dict[int, tuple[list[Layer], list[Layout], Layout, list[int]]] = {}
    done: set[int] = set()
    for k, knode in enumerate(order):
        if id(knode) in done:
            continue
        klayer = knode.operation
        where = f"from_keras: node {k} ({klayer.name})"
        sources = [mapped[id(t)] for t in knode.input_tensors]
        ins = [layout for _, layout in sources]
        # A converter may fold a layer into the next one (ZeroPadding2D + Conv2D): offer it the
        # following calls while each is the only consumer of the one before and is called as
        # often (a shared pair stays a pair at every call).
        chain = [knode]
        while len(chain) < 3:
            out = chain[-1].output_tensors[0]
            nxt = consumers.get(id(out), [])
            if id(out) == output_id or len(nxt) != 1 or len(nxt[0].input_tensors) != 1 \
                    or calls[id(nxt[0].operation)] != calls[id(klayer)]:
                break
            chain.append(nxt[0])
        if id(klayer) in converted:  # a shared layer: the same layers of ours at every call
            layers, first_ins, out_layout, covered = converted[id(klayer)]
            if [id(c.operation) for c in chain[:len(covered)]] != covered:
                raise UnsupportedLayerError(f"{where}: a shared layer followed by different layers at different calls "
                                            "is not supported")
            if not all(same_layout(a, b) for a, b in zip(first_ins, ins)):
                raise UnsupportedLayerError(f"{where}: a shared layer called on inputs laid out differently is not supported")
            chain = chain[:len(covered)]
        else:
            shapes = [tuple(int(s) for s in t.shape[1:]) for t in knode.input_tensors]
            ctx = FromKerasContext(ins[0], shapes[0], where, layouts=ins, keras_shapes=shapes)
            convert = FROM_KERAS.lookup(klayer, where=f"node {k} ")
            layers, used, out_layout = convert([c.operation for c in chain], 0, ctx)
            chain = chain[:used]
            if calls[id(klayer)] > 1:
                converted[id(klayer)] = (layers, ins, out_layout, [id(c.operation) for c in chain])
        args = [tensor for tensor, _ in sources]
        h = args if layers and layers[0].n_inputs is None else args[0]
        for layer in layers:
            h = layer(h)
        for c in chain:
            done.add(id(c))
        mapped[id(chain[-1].output_tensors[0])] = (h, out_layout)
    y, _ = mapped[output_id]
    return Model(x, y, loss=loss, optimizer=optimizer)


# -- layers of modern CNNs: activations, Reshape, UpSampling2D, layer and group normalisation ---
from ..neurons import GroupNormalization, LayerNormalization  # noqa: E402
from ..nodes import ELU, GELU, Identity, LogSoftMax, Reshape, SiLU, Softplus, UpSampling2D  # noqa: E402


def gelu_tanh(x: Any) -> Any:
    """Keras' GELU with the tanh approximation (``Activation(gelu_tanh)``; 'gelu' is the exact one)."""
    return keras.activations.gelu(x, approximate=True)


@keras.saving.register_keras_serializable(package="nn_from_scratch")
class LogSoftmaxLayer(keras.layers.Layer):
    """``log_softmax`` along any axis (``Activation("log_softmax")`` has only the last one)."""

    def __init__(self, axis: int = -1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.axis = int(axis)

    def call(self, x: Any) -> Any:
        return keras.ops.log_softmax(x, axis=self.axis)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axis": self.axis}


_ACTIVATIONS.update({"gelu": GELU, "gelu_tanh": lambda: GELU(approximate="tanh"), "silu": SiLU, "elu": ELU,
                     "softplus": Softplus})

# Our per-sample axis (batch = 0) -> the Keras axis holding it, for an image: C is Keras' last axis.
_IMAGE_AXIS_TO_KERAS = {1: 3, 2: 1, 3: 2}
_KERAS_AXIS_TO_IMAGE = {k: ours for ours, k in _IMAGE_AXIS_TO_KERAS.items()}


def _keras_axis(layout: Layout, axis: int) -> int:
    return _IMAGE_AXIS_TO_KERAS[axis] if layout.kind == "image" else axis


def _our_axis(layout: Layout, axis: int) -> int:
    return _KERAS_AXIS_TO_IMAGE[axis] if layout.kind == "image" else axis


TO_KERAS.register(GELU)(_elementwise(lambda layer, ctx: keras.layers.Activation(
    "gelu" if layer.approximate == "none" else gelu_tanh, dtype=ctx.dtype)))
TO_KERAS.register(SiLU)(_elementwise(lambda layer, ctx: keras.layers.Activation("silu", dtype=ctx.dtype)))
TO_KERAS.register(ELU)(_elementwise(lambda layer, ctx: keras.layers.ELU(alpha=layer.alpha, dtype=ctx.dtype)))
TO_KERAS.register(Identity)(_elementwise(lambda layer, ctx: keras.layers.Identity(dtype=ctx.dtype)))


@TO_KERAS.register(Softplus)
def _softplus_to_keras(layer: Softplus, ctx: KerasContext) -> KerasTwin:
    # Keras' softplus has neither beta nor threshold. On the torch backend it is F.softplus with
    # torch's defaults (beta 1, threshold 20), ours exactly; elsewhere log(1 + exp(x)) throughout,
    # which differs from the linear branch above 20 by log1p(exp(-x)) < 2.1e-9.
    if layer.beta != 1.0 or layer.threshold != 20.0:
        raise UnsupportedLayerError(f"to_keras: {ctx.where} {layer!r}: Keras' softplus has no beta or threshold "
                                    "(only beta=1, threshold=20 convert)")
    return KerasTwin([keras.layers.Activation("softplus", dtype=ctx.dtype)], ctx.layout)


@TO_KERAS.register(LogSoftMax)
def _log_softmax_to_keras(layer: LogSoftMax, ctx: KerasContext) -> KerasTwin:
    ndim = len(ctx.shape) + 1
    axis = layer.axis % ndim
    if ctx.layout.kind == "flat":  # a permutation of the features does not change a log-softmax over all of them
        k_axis = axis
    else:
        k_axis = _keras_axis(ctx.layout, axis)
    if k_axis == ndim - 1:
        return KerasTwin([keras.layers.Activation("log_softmax", dtype=ctx.dtype)], ctx.layout)
    return KerasTwin([LogSoftmaxLayer(axis=k_axis, dtype=ctx.dtype)], ctx.layout)


@TO_KERAS.register(Reshape)
def _reshape_to_keras(layer: Reshape, ctx: KerasContext) -> KerasTwin:
    """Keras reshapes its own (H, W, C) order: an image is first put back in ours (Permute), and a
    3-D result is turned into Keras' image layout (Permute) for the layers after it."""
    target = tuple(layer.output_shape)
    layers: list[Any] = []
    if ctx.layout.kind == "flat":
        if len(target) != 1:
            raise UnsupportedLayerError(f"to_keras: {ctx.where} {layer!r}: reshaping the flattened image of a Keras twin "
                                        "(features in Keras' (H, W, C) order) into several axes has no Keras equivalent")
        return KerasTwin([keras.layers.Reshape(target, dtype=ctx.dtype)], ctx.layout)
    if ctx.layout.kind == "image":
        layers.append(keras.layers.Permute((3, 1, 2), dtype=ctx.dtype))
    layers.append(keras.layers.Reshape(target, dtype=ctx.dtype))
    if len(target) == 3:
        layers.append(keras.layers.Permute((2, 3, 1), dtype=ctx.dtype))
        return KerasTwin(layers, IMAGE)
    return KerasTwin(layers, PLAIN)


def _reshape_from_keras(klayers: list[Any], i: int, ctx: FromKerasContext, channels_first: bool):
    """A Keras ``Reshape`` at ``i``; ``channels_first``: a ``Permute((3, 1, 2))`` put the image in our
    order before it. A 3-D result must be followed by ``Permute((2, 3, 1))`` (back to Keras' image
    layout); returns the layers, the number of Keras layers used (from ``i``) and the layout."""
    target = tuple(int(s) for s in klayers[i].target_shape)
    follows = klayers[i + 1] if i + 1 < len(klayers) else None
    if ctx.layout.kind == "flat" and not channels_first:
        if len(target) != 1:
            raise UnsupportedLayerError(f"{ctx.where}: Reshape of a flattened image (Keras' (H, W, C) order) into several "
                                        "axes has no equivalent here")
        return [Reshape(target)], 1, ctx.layout
    if ctx.layout.kind == "image" and not channels_first:
        raise UnsupportedLayerError(f"{ctx.where}: Reshape of an image reshapes Keras' (H, W, C) order; supported only "
                                    "after Permute((3, 1, 2))")
    if len(target) == 3 and target[0] * target[1] == 1 and ctx.layout.kind == "plain" and not channels_first:
        # Keras' (1, 1, C) holds its C numbers in the order of our (C, 1, 1): an image at once
        # (the gates of a squeeze-and-excitation block).
        return [Reshape((target[2], 1, 1))], 1, IMAGE
    if len(target) == 3:
        if not (isinstance(follows, keras.layers.Permute) and tuple(follows.dims) == (2, 3, 1)):
            raise UnsupportedLayerError(f"{ctx.where}: Reshape to 3 axes is supported only followed by Permute((2, 3, 1)) "
                                        "(Keras' image layout afterwards)")
        return [Reshape(target)], 2, IMAGE
    return [Reshape(target)], 1, PLAIN


FROM_KERAS.register(keras.layers.Reshape)(lambda klayers, i, ctx: _reshape_from_keras(klayers, i, ctx, False))


@TO_KERAS.register(UpSampling2D)
def _upsampling_to_keras(layer: UpSampling2D, ctx: KerasContext) -> KerasTwin:
    _require_image(ctx, layer)
    return KerasTwin([keras.layers.UpSampling2D(layer.size, interpolation=layer.interpolation, dtype=ctx.dtype)], IMAGE)


@FROM_KERAS.register(keras.layers.UpSampling2D)
def _upsampling_from_keras(klayers: list[Any], i: int, ctx: FromKerasContext):
    up = klayers[i]
    _check_channels_last(up, ctx.where)
    if up.interpolation not in ("nearest", "bilinear"):
        raise UnsupportedLayerError(f"{ctx.where}: UpSampling2D(interpolation={up.interpolation!r}) is not supported "
                                    "(only 'nearest' and 'bilinear')")
    return [UpSampling2D(tuple(int(s) for s in up.size), interpolation=up.interpolation)], 1, IMAGE


FROM_KERAS.register(keras.layers.ELU)(lambda klayers, i, ctx: ([ELU(alpha=float(klayers[i].alpha))], 1, ctx.layout))
FROM_KERAS.register(keras.layers.Identity)(lambda klayers, i, ctx: ([Identity()], 1, ctx.layout))


@FROM_KERAS.register(LogSoftmaxLayer)
def _log_softmax_layer_from_keras(klayers: list[Any], i: int, ctx: FromKerasContext):
    ndim = len(ctx.keras_shape) + 1
    k_axis = klayers[i].axis % ndim
    if k_axis == 0:
        raise UnsupportedLayerError(f"{ctx.where}: LogSoftmaxLayer over the batch axis has no equivalent")
    return [LogSoftMax(axis=k_axis if ctx.layout.kind == "flat" else _our_axis(ctx.layout, k_axis))], 1, ctx.layout


def _trailing(axes: list[int], ndim: int) -> bool:
    return sorted(axes) == list(range(ndim - len(axes), ndim))


@TO_KERAS.register(LayerNormalization)
def _layer_norm_to_keras(layer: LayerNormalization, ctx: KerasContext) -> KerasTwin:
    ndim = len(ctx.shape) + 1
    if ctx.layout.kind == "flat":
        k_axes = [1]
    else:
        k_axes = [_keras_axis(ctx.layout, a) for a in layer.axes]
    if keras.backend.backend() == "torch" and not _trailing(k_axes, ndim):
        # Keras 3 (3.15.1) hands any run of consecutive axes to F.layer_norm, which normalises
        # the trailing ones: a wrong answer or a shape error for other axes on this backend.
        raise UnsupportedLayerError(f"to_keras: {ctx.where} {layer!r}: normalises Keras axes {sorted(k_axes)} of a "
                                    f"{ndim}-D tensor, which Keras' LayerNormalization computes over the trailing axes "
                                    "instead on the torch backend")
    order = np.argsort(k_axes)  # Keras lays gamma out along its axes in increasing order
    ln = keras.layers.LayerNormalization(axis=sorted(k_axes), epsilon=layer.eps, dtype=ctx.dtype)

    def to_twin(p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, dtype=ctx.dtype)
        return ctx.layout.to_twin(p[None])[0] if ctx.layout.kind == "flat" else np.ascontiguousarray(p.transpose(order))

    def to_ours(p: np.ndarray) -> np.ndarray:
        return ctx.layout.to_ours(p[None])[0] if ctx.layout.kind == "flat" else np.ascontiguousarray(p.transpose(np.argsort(order)))

    def load() -> None:
        ln.set_weights([to_twin(layer.gamma), to_twin(layer.beta)])

    def read(get):
        return {"gamma": to_ours(get(ln.gamma)), "beta": to_ours(get(ln.beta))}

    return KerasTwin([ln], ctx.layout, read, load)


@FROM_KERAS.register(keras.layers.LayerNormalization)
def _layer_norm_from_keras(klayers: list[Any], i: int, ctx: FromKerasContext):
    ln = klayers[i]
    if not (ln.center and ln.scale) or getattr(ln, "rms_scaling", False):
        raise UnsupportedLayerError(f"{ctx.where}: LayerNormalization needs center=True, scale=True and rms_scaling=False")
    ndim = len(ctx.keras_shape) + 1
    k_axes = sorted(a % ndim for a in ([ln.axis] if isinstance(ln.axis, int) else ln.axis))
    gamma, beta = _weights(ln)
    if ctx.layout.kind == "flat":
        ours = [1]
        gamma, beta = (ctx.layout.to_ours(p[None])[0] for p in (gamma, beta))
    else:
        ours = [_our_axis(ctx.layout, a) for a in k_axes]
        back = np.argsort(ours)  # gamma's axes from Keras' order to ours (increasing our axes)
        gamma, beta = (np.ascontiguousarray(p.transpose(back)) for p in (gamma, beta))
    layer = LayerNormalization(axis=tuple(sorted(ours)), eps=float(ln.epsilon), gamma=gamma, beta=beta, dtype=gamma.dtype)
    return [layer], 1, ctx.layout


@TO_KERAS.register(GroupNormalization)
def _group_norm_to_keras(layer: GroupNormalization, ctx: KerasContext) -> KerasTwin:
    if ctx.layout.kind == "flat" and layer.groups not in (1, layer.num_channels):
        raise UnsupportedLayerError(f"to_keras: {ctx.where} {layer!r}: the features of a flattened image are in Keras' "
                                    "(H, W, C) order, so groups of consecutive features differ")
    axis = -1 if ctx.layout.kind in ("image", "flat") or len(ctx.shape) == 1 else 1
    gn = keras.layers.GroupNormalization(layer.groups, axis=axis, epsilon=layer.eps, dtype=ctx.dtype)
    vector = ctx.layout if ctx.layout.kind == "flat" else PLAIN

    def load() -> None:
        gn.set_weights([vector.to_twin(np.asarray(p, dtype=ctx.dtype)[None])[0] for p in (layer.gamma, layer.beta)])

    def read(get):
        return {"gamma": vector.to_ours(get(gn.gamma)[None])[0], "beta": vector.to_ours(get(gn.beta)[None])[0]}

    return KerasTwin([gn], ctx.layout, read, load)


@FROM_KERAS.register(keras.layers.GroupNormalization)
def _group_norm_from_keras(klayers: list[Any], i: int, ctx: FromKerasContext):
    gn = klayers[i]
    ndim = len(ctx.keras_shape) + 1
    channel_axis = ndim - 1 if ctx.layout.kind in ("image", "flat") or ndim == 2 else 1
    if gn.axis % ndim != channel_axis:
        raise UnsupportedLayerError(f"{ctx.where}: GroupNormalization(axis={gn.axis}) is supported only over the channel axis")
    if not (gn.center and gn.scale):
        raise UnsupportedLayerError(f"{ctx.where}: GroupNormalization needs center=True and scale=True")
    channels = ctx.keras_shape[channel_axis - 1]
    if ctx.layout.kind == "flat" and gn.groups not in (1, channels):
        raise UnsupportedLayerError(f"{ctx.where}: GroupNormalization(groups={gn.groups}) of a flattened image groups "
                                    "features in Keras' (H, W, C) order, which has no equivalent here")
    vector = ctx.layout if ctx.layout.kind == "flat" else PLAIN
    gamma, beta = (vector.to_ours(w[None])[0] for w in _weights(gn))
    layer = GroupNormalization(int(gn.groups), eps=float(gn.epsilon), input_dim=channels, gamma=gamma, beta=beta,
                               dtype=gamma.dtype)
    return [layer], 1, ctx.layout


# -- losses -----------------------------------------------------------------------------------
def keras_loss(loss: Loss, dtype: str) -> Callable[[Any, Any], Any]:
    """A Keras loss object equivalent to ours, called as ``fn(y_true, y_pred)``.

    Args:
        loss: our loss (``SoftMaxLoss``, ``BinaryCrossEntropy``, ``MSELoss``).
        dtype: the Keras dtype, e.g. ``"float32"``.

    Returns:
        A Keras loss object (from logits for the classification losses).

    Example:
        >>> fn = keras_loss(MSELoss(), "float32")
        >>> float(fn(np.ones((2, 1), "float32"), np.zeros((2, 1), "float32")))
        1.0
    """
    return KERAS_LOSSES.lookup(loss, where="loss ")(loss, dtype)


@KERAS_LOSSES.register(SoftMaxLoss)
def _softmax_loss(loss: SoftMaxLoss, dtype: str):
    return keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=loss.label_smoothing, dtype=dtype)


@KERAS_LOSSES.register(BinaryCrossEntropy)
def _bce_loss(loss: BinaryCrossEntropy, dtype: str):
    return keras.losses.BinaryCrossentropy(from_logits=True, dtype=dtype)


@KERAS_LOSSES.register(MSELoss)
def _mse_loss(loss: MSELoss, dtype: str):
    return keras.losses.MeanSquaredError(dtype=dtype)


def keras_targets(loss: Loss, y_true: Any, y_pred_shape: tuple[int, ...], out_layout: Layout, dtype: str) -> np.ndarray:
    """Our targets as the Keras loss wants them: one-hot for classification, Keras layout otherwise.

    Args:
        loss: our loss.
        y_true: our targets (labels ``(N,)`` or arrays in our layout).
        y_pred_shape: the shape of the Keras prediction, e.g. ``(N, K)``.
        out_layout: the :class:`Layout` of the Keras output.
        dtype: the dtype of the targets.

    Returns:
        The targets as an array.

    Example:
        >>> keras_targets(SoftMaxLoss(), np.array([0, 2]), (2, 3), PLAIN, "float32")
        array([[1., 0., 0.],
               [0., 0., 1.]], dtype=float32)
    """
    if isinstance(loss, SoftMaxLoss):
        return one_hot_targets(y_true, y_pred_shape, np.dtype(dtype), loss.name)
    y = np.asarray(y_true, dtype=dtype)
    if isinstance(loss, BinaryCrossEntropy) and y.size == int(np.prod(y_pred_shape)) and y.ndim != len(y_pred_shape):
        y = y.reshape(y_pred_shape)  # labels (N,) for logits (N, 1)
    return out_layout.to_twin(y) if y.ndim == len(y_pred_shape) else y


__all__ = ["FROM_KERAS", "IMAGE", "KERAS_LOSSES", "KerasGraphNode", "PLAIN", "TO_KERAS", "KerasTwin", "build_keras_graph",
           "keras_graph_twins", "Layout", "float64_arithmetic", "UnsupportedLayerError",
           "from_keras", "keras_loss", "keras_targets", "keras_twins", "to_keras"]
