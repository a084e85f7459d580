"""Keras' layer names and argument orders, built on this library's layer classes.

A Keras name here is a way to *construct* one of the library's layers, never a second
implementation: ``Conv2D(32, 3)`` returns a :class:`~nn_from_scratch.neurons.Convolution`
with 32 output channels, ``Dense(10)`` a :class:`~nn_from_scratch.neurons.Linear`, and so
on. Models, saving, loading, interop and the gradient tests see only those classes::

    from nn_from_scratch import Sequential, layers

    model = Sequential([
        layers.Input(shape=(1, 28, 28)),                     # channels first: (C, H, W)
        layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Flatten(),
        layers.Dropout(0.5),
        layers.Dense(10, activation="softmax"),
    ])
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])

``activation=``: a layer with an activation is *two* layers, the layer and the activation
layer after it (what Keras computes, and what torch writes as ``nn.Sequential(conv,
nn.ReLU())``). With ``activation=None`` the factory returns the layer itself; with an
activation it returns a :class:`LayerChain` of both, which ``Sequential`` (its constructor and
``add``) unpacks and which, called on a symbolic tensor of a graph model, calls both. The
chain hands attribute reads to its first layer (``Conv2D(8, 3, activation="relu").kernel_size``)
and holds the activation in ``.activation``. So there is one set of layer classes, and a saved
model, an exported ONNX/torch/Keras model and ``summary()`` list the activation as its own
layer (``model.layers`` has one more entry than Keras' for each ``activation=``).

Differences from Keras, deliberately:

* **channels first**: images are ``(N, C, H, W)`` and ``Input(shape=(C, H, W))``; Keras'
  example's ``(28, 28, 1)`` is ``(1, 28, 28)`` here (a channels-last batch gets an error with
  the transpose to use).
* ``BatchNormalization(momentum=0.99, epsilon=1e-3)`` are Keras' values and meaning; the layer
  stores torch's ``momentum = 1 - 0.99 = 0.01`` (Keras: ``moving = m * moving + (1 - m) * batch``;
  torch: ``running = (1 - m) * running + m * batch``). One difference remains: the running
  variance is torch's unbiased batch variance (Keras keeps the biased one); the two agree to
  ``1 / (batch size)`` relative.
* ``Concatenate(axis=1)`` / ``Softmax`` act on the channel axis 1 / the last axis, as this
  library's classes do; Keras' ``axis=-1`` default means channels in its layout.
* ``Dense(use_bias=False)`` is not supported (``Linear`` keeps its bias in row 0 of ``W``).
"""

from __future__ import annotations

from typing import Any, Iterator

from .interfaces import Layer
from .neurons import BatchNormalization as _BatchNormalization
from .neurons import Convolution, Linear, TransposedConvolution
from .neurons import LayerNormalization as _LayerNormalization
from .nodes import Add, AveragePooling, Concatenate, Dropout, GlobalAveragePooling, MaxPooling, Multiply
from .nodes import Reshape, Vectorization
from .nodes import activations as _activations
from .nodes.augmentation import RandomCrop, RandomFlip, RandomRotation, RandomTranslation, RandomZoom
from .symbolic import Input, SymbolicTensor

__all__ = [
    "Activation", "Add", "AveragePooling2D", "BatchNormalization", "Concatenate", "Conv2D", "Conv2DTranspose",
    "Dense", "DepthwiseConv2D", "Dropout", "Flatten", "GlobalAveragePooling2D", "Input", "LayerChain",
    "LayerNormalization", "MaxPooling2D", "Multiply", "RandomCrop", "RandomFlip", "RandomRotation",
    "RandomTranslation", "RandomZoom", "Reshape",
]


class LayerChain:
    """Layers applied one after another, as a layer with ``activation=`` is built: ``layers[0]``
    then its activation. ``Sequential`` unpacks it; calling it (on a symbolic tensor or on an
    array) calls each layer in turn. Attribute reads go to the first layer.

    Args:
        layers: the layers, at least one.

    Example:
        >>> chain = Dense(4, activation="relu")
        >>> [type(layer).__name__ for layer in chain]
        ['Linear', 'ReLU']
    """

    def __init__(self, layers: list[Layer]) -> None:
        if not layers or not all(isinstance(layer, Layer) for layer in layers):
            raise TypeError("LayerChain: expected a non-empty list of layers")
        self.__dict__["layers"] = list(layers)

    @property
    def activation(self) -> Layer | None:
        """The activation layer after the first one (None for a chain of one)."""
        return self.layers[1] if len(self.layers) > 1 else None

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __call__(self, x: Any) -> Any:
        for layer in self.layers:
            x = layer(x)
        return x

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.__dict__["layers"][0], name)

    def __repr__(self) -> str:
        return f"LayerChain({self.layers!r})"


def _activation_layer(activation: Any, who: str) -> Layer | None:
    if activation is None or isinstance(activation, str) and activation.lower() in ("linear", "none"):
        return None
    if isinstance(activation, Layer):
        return activation
    if isinstance(activation, str):
        return _activations.get(activation)
    raise TypeError(f"{who}: activation must be None, a name such as 'relu' or an activation layer, got {activation!r}")


def _with_activation(layer: Layer, activation: Any) -> Layer | LayerChain:
    act = _activation_layer(activation, type(layer).__name__)
    return layer if act is None else LayerChain([layer, act])


def _pair(value: Any) -> Any:
    return list(value) if isinstance(value, (tuple, list)) else value


def Conv2D(filters: int, kernel_size: Any, strides: Any = 1, padding: str | Any = "valid", dilation_rate: Any = 1,
           groups: int = 1, activation: Any = None, use_bias: bool = True, *,
           kernel_initializer: str = "glorot_uniform", dtype: Any = "float32", name: str | None = None) -> Any:
    """Keras' ``Conv2D``: a :class:`~nn_from_scratch.neurons.Convolution` with ``filters`` output
    channels (input channels inferred), Keras' argument order and defaults (``padding="valid"``,
    glorot-uniform kernel, zero bias).

    Args:
        filters: output channels ``O``; input ``(N, C, H, W)`` -> output ``(N, O, H', W')``.
        kernel_size: an int or ``(kh, kw)``.
        strides: an int or ``(sh, sw)``.
        padding: ``"valid"``, ``"same"`` or numeric (torch's) padding.
        dilation_rate: an int or ``(dh, dw)``.
        groups: channel groups (``C`` and ``filters`` divisible by it).
        activation: ``None`` or an activation name / layer, added as a second layer (see above).
        use_bias: add a bias per output channel.
        kernel_initializer: the kernel's initializer name (see :mod:`nn_from_scratch.initializers`).
        dtype: the parameters' dtype.
        name: the layer's name.

    Example:
        >>> conv = Conv2D(16, 3, padding="same")
        >>> (type(conv).__name__, conv.out_channels)
        ('Convolution', 16)
    """
    layer = Convolution(None, kernel_size, filters, padding=_pair(padding), use_bias=use_bias, stride=strides,
                        dilation=dilation_rate, groups=groups, kernel_initializer=kernel_initializer, dtype=dtype,
                        name=name)
    return _with_activation(layer, activation)


def DepthwiseConv2D(kernel_size: Any, strides: Any = 1, padding: str | Any = "valid", depth_multiplier: int = 1,
                    dilation_rate: Any = 1, activation: Any = None, use_bias: bool = True, *,
                    kernel_initializer: str = "glorot_uniform", dtype: Any = "float32", name: str | None = None) -> Any:
    """Keras' ``DepthwiseConv2D``: a :class:`~nn_from_scratch.neurons.Convolution` with
    ``groups = C`` and ``depth_multiplier * C`` output channels, ``C`` taken from the input when
    the layer is built (``Convolution(depth_multiplier=...)``).

    Args:
        kernel_size: an int or ``(kh, kw)``.
        strides: an int or ``(sh, sw)``.
        padding: ``"valid"``, ``"same"`` or numeric padding; input ``(N, C, H, W)``.
        depth_multiplier: output channels per input channel.
        dilation_rate: an int or ``(dh, dw)``.
        activation: ``None`` or an activation name / layer, added as a second layer.
        use_bias: add a bias per output channel.
        kernel_initializer: the kernel's initializer name.
        dtype: the parameters' dtype.
        name: the layer's name.

    Example:
        >>> dw = DepthwiseConv2D(3, padding="same"); dw.build((8, 5, 5)); (dw.groups, dw.out_channels)
        (8, 8)
    """
    layer = Convolution(None, kernel_size, padding=_pair(padding), use_bias=use_bias, stride=strides,
                        dilation=dilation_rate, depth_multiplier=depth_multiplier,
                        kernel_initializer=kernel_initializer, dtype=dtype, name=name)
    return _with_activation(layer, activation)


def Conv2DTranspose(filters: int, kernel_size: Any, strides: Any = 1, padding: str = "valid",
                    output_padding: Any = None, dilation_rate: Any = 1, activation: Any = None, use_bias: bool = True,
                    *, groups: int = 1, kernel_initializer: str = "glorot_uniform", dtype: Any = "float32",
                    name: str | None = None) -> Any:
    """Keras' ``Conv2DTranspose``: a :class:`~nn_from_scratch.neurons.TransposedConvolution`.

    Keras' output size, with ``k' = dilation * (k - 1) + 1``: ``"valid"``: ``H * s + max(k' - s, 0)``;
    ``"same"``: ``H * s``. Both are torch padding fixed by ``k, s, d`` alone: ``output_padding
    = max(s - k', 0)`` and, for ``"same"``, a crop of ``k' - s`` rows split ``floor`` on the
    top/left and the rest on the bottom/right (TensorFlow's split). A numeric ``padding`` is
    torch's. ``output_padding`` given explicitly is torch's too.

    Args:
        filters: output channels ``O``; input ``(N, C, H, W)`` -> output ``(N, O, H', W')``.
        kernel_size: an int or ``(kh, kw)``.
        strides: an int or ``(sh, sw)``.
        padding: ``"valid"``, ``"same"`` or numeric (torch's) padding.
        output_padding: extra rows/columns on the bottom/right (torch's); ``None`` derives it as above.
        dilation_rate: an int or ``(dh, dw)``.
        activation: ``None`` or an activation name / layer, added as a second layer.
        use_bias: add a bias per output channel.
        groups: channel groups.
        kernel_initializer: the kernel's initializer name.
        dtype: the parameters' dtype.
        name: the layer's name.

    Example:
        >>> up = Conv2DTranspose(8, 3, strides=2, padding="same")
        >>> up.build((4, 5, 5))
        >>> up.forward(np.ones((1, 4, 5, 5), dtype=np.float32)).shape
        (1, 8, 10, 10)
    """
    from . import kernels

    k = kernels.as_pair(kernel_size, "kernel_size", "Conv2DTranspose")
    s = kernels.as_pair(strides, "strides", "Conv2DTranspose")
    d = kernels.as_pair(dilation_rate, "dilation_rate", "Conv2DTranspose")
    eff = [di * (ki - 1) + 1 for ki, di in zip(k, d)]
    if isinstance(padding, str):
        if padding not in ("valid", "same"):
            raise ValueError(f"Conv2DTranspose: padding must be 'valid', 'same' or numeric, got {padding!r}")
        op = [max(si - ei, 0) for si, ei in zip(s, eff)]
        if padding == "same":
            crop = [max(ei - si, 0) for si, ei in zip(s, eff)]
            pads: Any = [crop[0] // 2, crop[0] - crop[0] // 2, crop[1] // 2, crop[1] - crop[1] // 2]
        else:
            pads = 0
        if output_padding is None:
            output_padding = op
    else:
        pads = _pair(padding)
    layer = TransposedConvolution(None, kernel_size, filters, pads, use_bias=use_bias, stride=strides,
                                  output_padding=_pair(output_padding or 0), dilation=dilation_rate, groups=groups,
                                  kernel_initializer=kernel_initializer, dtype=dtype, name=name)
    return _with_activation(layer, activation)


def Dense(units: int, activation: Any = None, use_bias: bool = True, *, kernel_initializer: str = "glorot_uniform",
          dtype: Any = "float32", name: str | None = None) -> Any:
    """Keras' ``Dense``: a :class:`~nn_from_scratch.neurons.Linear` with ``units`` outputs
    (inputs inferred), glorot-uniform weights and a zero bias.

    Args:
        units: outputs ``n_out``; input ``(N, n_in)`` -> output ``(N, n_out)``.
        activation: ``None`` or an activation name / layer, added as a second layer.
        use_bias: must be ``True`` (:class:`~nn_from_scratch.neurons.Linear` keeps its bias in row 0 of ``W``).
        kernel_initializer: the weights' initializer name.
        dtype: the parameters' dtype.
        name: the layer's name.

    Example:
        >>> Dense(10).n_out
        10
    """
    if not use_bias:
        raise NotImplementedError("Dense: use_bias=False is not supported (Linear keeps its bias in row 0 of W)")
    layer = Linear(output_dim=units, kernel_initializer=kernel_initializer, dtype=dtype, name=name)
    return _with_activation(layer, activation)


def MaxPooling2D(pool_size: Any = (2, 2), strides: Any = None, padding: str | Any = "valid", *,
                 name: str | None = None) -> MaxPooling:
    """Keras' ``MaxPooling2D``: :class:`~nn_from_scratch.nodes.MaxPooling` (``strides`` defaults to ``pool_size``).

    Args:
        pool_size: the window, an int or ``(kh, kw)``.
        strides: the step, an int or ``(sh, sw)``; ``None`` means ``pool_size``.
        padding: ``"valid"``, ``"same"`` or numeric padding; input ``(N, C, H, W)``.
        name: the layer's name.

    Example:
        >>> MaxPooling2D(2).forward(np.arange(16.0).reshape(1, 1, 4, 4))
        array([[[[ 5.,  7.],
                 [13., 15.]]]])
    """
    return MaxPooling(pool_size, strides, _pair(padding), name=name)


def AveragePooling2D(pool_size: Any = (2, 2), strides: Any = None, padding: str | Any = "valid", *,
                     name: str | None = None) -> AveragePooling:
    """Keras' ``AveragePooling2D``: :class:`~nn_from_scratch.nodes.AveragePooling`; as Keras, the
    padded pixels of ``"same"`` are not counted in the mean (``count_include_pad=False``).

    Args:
        pool_size: the window, an int or ``(kh, kw)``.
        strides: the step, an int or ``(sh, sw)``; ``None`` means ``pool_size``.
        padding: ``"valid"``, ``"same"`` or numeric padding; input ``(N, C, H, W)``.
        name: the layer's name.

    Example:
        >>> pool = AveragePooling2D(2)
        >>> pool.forward(np.arange(16.0).reshape(1, 1, 4, 4))
        array([[[[ 2.5,  4.5],
                 [10.5, 12.5]]]])
    """
    return AveragePooling(pool_size, strides, _pair(padding), count_include_pad=False, name=name)


def GlobalAveragePooling2D(*, name: str | None = None) -> GlobalAveragePooling:
    """Keras' ``GlobalAveragePooling2D``: :class:`~nn_from_scratch.nodes.GlobalAveragePooling`, ``(N, C, H, W) -> (N, C)``.

    Args:
        name: the layer's name.

    Example:
        >>> GlobalAveragePooling2D().forward(np.ones((2, 3, 4, 4))).shape
        (2, 3)
    """
    return GlobalAveragePooling(name=name)


def Flatten(*, name: str | None = None) -> Vectorization:
    """Keras' ``Flatten``: :class:`~nn_from_scratch.nodes.Vectorization` (flattens ``C, H, W`` in that order).

    Args:
        name: the layer's name.

    Example:
        >>> Flatten().forward(np.ones((2, 3, 4, 4))).shape
        (2, 48)
    """
    return Vectorization(name=name)


def BatchNormalization(axis: int = 1, momentum: float = 0.99, epsilon: float = 1e-3, *, dtype: Any = "float32",
                       name: str | None = None) -> _BatchNormalization:
    """Keras' ``BatchNormalization`` with Keras' defaults: :class:`~nn_from_scratch.neurons.BatchNormalization`
    with torch's ``momentum = 1 - momentum`` (0.01 for Keras' 0.99) and ``eps = epsilon`` (1e-3).
    Normalises over the channel axis 1 (channels first); the running variance is torch's
    unbiased one (see the module docstring).

    Args:
        axis: the channel axis; only 1 (or -3), channels first ``(N, C, H, W)`` or ``(N, C)``.
        momentum: Keras' momentum (the weight of the old running statistics).
        epsilon: added to the variance before the square root.
        dtype: the parameters' dtype.
        name: the layer's name.

    Example:
        >>> bn = BatchNormalization(); (round(bn.momentum, 12), bn.eps)
        (0.01, 0.001)
    """
    if axis not in (1, -3):
        raise ValueError(f"BatchNormalization: only the channel axis 1 is supported (channels first), got axis={axis}")
    return _BatchNormalization(momentum=1.0 - float(momentum), eps=epsilon, dtype=dtype, name=name)


def LayerNormalization(axis: Any = -1, epsilon: float = 1e-3, *, dtype: Any = "float32",
                       name: str | None = None) -> _LayerNormalization:
    """Keras' ``LayerNormalization``: :class:`~nn_from_scratch.neurons.LayerNormalization` over
    ``axis`` (Keras' counting: batch = 0, negative from the end) with Keras' ``epsilon = 1e-3``.

    Args:
        axis: the axis or axes to normalise over, e.g. ``-1`` for ``(N, D)`` inputs.
        epsilon: added to the variance before the square root.
        dtype: the parameters' dtype.
        name: the layer's name.

    Example:
        >>> ln = LayerNormalization()
        >>> ln.eps, ln.axis
        (0.001, (-1,))
    """
    return _LayerNormalization(eps=epsilon, axis=axis, dtype=dtype, name=name)


def Activation(activation: Any, *, name: str | None = None) -> Layer:
    """Keras' ``Activation``: the activation layer of that name (``"relu"``, ``"gelu"``,
    ``"softmax"``, ... see :func:`nn_from_scratch.nodes.activations.get`).

    Args:
        activation: a name such as ``"relu"``, an activation layer (returned as is), or ``None`` /
            ``"linear"`` for the identity.
        name: the layer's name.

    Returns:
        The activation layer; it maps ``(N, ...)`` to the same shape.

    Example:
        >>> type(Activation("relu")).__name__
        'ReLU'
    """
    layer = _activation_layer(activation, "Activation")
    if layer is None:
        layer = _activations.Identity()
    if name is not None:
        layer.name = name
    return layer


def is_input(value: Any) -> bool:
    """True for what :func:`Input` returns (a symbolic tensor that no layer produced)."""
    return isinstance(value, SymbolicTensor) and value.node is None
