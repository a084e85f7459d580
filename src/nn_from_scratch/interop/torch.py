"""Our models <-> ``torch.nn.Sequential``, one converter per layer type.

Layouts: torch and we are both NCHW, and ``Convolution.W`` is torch's ``(O, C, kh, kw)``, so
only ``Linear`` is transposed: our ``W`` is ``(n_in + 1, n_out)`` with the bias in row 0, torch's
``weight`` is ``(n_out, n_in)`` and ``bias`` is separate. ``nn.Conv2d`` pads symmetrically only;
a ``Convolution`` with asymmetric padding (e.g. ``"same"`` with an even kernel) becomes
``nn.ZeroPad2d`` followed by an unpadded ``nn.Conv2d``, and ``from_torch`` folds that pair back.

Adding a layer: register a function in ``TO_TORCH`` ((our layer, :class:`TorchContext`) -> :class:`TorchTwin`) and one in
``FROM_TORCH`` (torch modules -> our layers). A layer without an entry raises
:class:`UnsupportedLayerError` naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..interfaces import Layer
from ..losses import BinaryCrossEntropy, Loss, MSELoss, SoftMaxLoss, one_hot_targets
from ..model import Sequential
from ..neurons import BatchNormalization, Convolution, Linear
from ..neurons import TransposedConvolution
from ..kernels import resolve_padding
from ..nodes import (AveragePooling, Dropout, GlobalAveragePooling, LeakyReLU, MaxPooling, ReLU, Sigmoid, SoftMax, Tanh,
                     Vectorization)
from ._common import Registry, UnsupportedLayerError, is_graph_model, layer_label, model_layers

# ``read(get)`` returns the twin's parameters in OUR layouts, keyed by our parameter names;
# ``get`` turns one torch parameter into an array (its value, or its gradient).
Reader = Callable[[Callable[[torch.Tensor], np.ndarray]], dict[str, np.ndarray]]


def _no_parameters(get: Callable[[torch.Tensor], np.ndarray]) -> dict[str, np.ndarray]:
    return {}


@dataclass
class TorchTwin:
    """The torch modules that compute one of our layers, applied in order.

    Args:
        modules: the torch modules, applied in order (e.g. ``[ZeroPad2d, Conv2d]``).
        read: ``read(get)`` -> the twin's parameters in OUR layouts (``get`` turns a tensor into an array).
        read_buffers: the same for buffers (batch-norm running statistics).
        extras: converter-specific details.

    Example:
        >>> twin = torch_twins(Sequential([Linear(output_dim=3)], input_shape=(4,), seed=0))[0]
        >>> twin.modules
        [Linear(in_features=4, out_features=3, bias=True)]
    """

    modules: list[nn.Module]
    read: Reader = _no_parameters
    # Buffers (e.g. batch-norm running statistics) in our layout, same convention as ``read``.
    read_buffers: Reader = _no_parameters
    extras: dict[str, Any] = field(default_factory=dict)


TO_TORCH = Registry("to_torch")
FROM_TORCH = Registry("from_torch")
TORCH_LOSSES = Registry("torch loss")


def torch_dtype(dtype: Any) -> torch.dtype:
    """The torch dtype of a NumPy dtype.

    Args:
        dtype: anything ``np.dtype`` accepts (``"float64"``, ``np.float32`` ...).

    Example:
        >>> torch_dtype("float64")
        torch.float64
    """
    return torch.from_numpy(np.zeros(0, dtype=np.dtype(dtype))).dtype


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array, copy=True))


def _assign(param: torch.Tensor, value: np.ndarray) -> None:
    with torch.no_grad():
        param.copy_(_tensor(value))


# -- our layers -> torch ----------------------------------------------------------------------
@dataclass
class TorchContext:
    """What a converter to torch gets besides the layer."""

    where: str  # "layer 3 (Convolution)", for messages
    rank: int | None  # number of per-sample axes of the layer's input, where known


# Per-sample rank of what a layer type outputs, for models whose shapes are not known yet (e.g.
# fresh from ``from_torch``): batch norm needs it to choose BatchNorm1d or BatchNorm2d.
OUTPUT_RANK: dict[type, int] = {Convolution: 3, MaxPooling: 3, AveragePooling: 3, Vectorization: 1, Linear: 1,
                                GlobalAveragePooling: 1}

OUTPUT_RANK[TransposedConvolution] = 3


def _input_ranks(layers: list[Layer]) -> list[int | None]:
    ranks, rank = [], None
    for layer in layers:
        if layer.input_shape is not None:
            rank = len(layer.input_shape)
        ranks.append(rank)
        if layer.output_shape is not None:
            rank = len(layer.output_shape)
        else:
            rank = next((r(layer) if callable(r) else r for cls, r in OUTPUT_RANK.items() if isinstance(layer, cls)), rank)
    return ranks


def torch_twins(model: Any) -> list[TorchTwin]:
    """One :class:`TorchTwin` per layer of ``model`` (of ``model.layers`` for a graph), with our current weights.

    Args:
        model: our ``Sequential``, graph ``Model`` or list of layers, built.

    Returns:
        A list of :class:`TorchTwin`, one per layer, in order.

    Example:
        >>> model = Sequential([Linear(output_dim=3), ReLU()], input_shape=(4,), seed=0)
        >>> [twin.modules for twin in torch_twins(model)]
        [[Linear(in_features=4, out_features=3, bias=True)], [ReLU()]]
    """
    layers = model_layers(model)
    twins = []
    ranks = graph_layer_ranks(model) if is_graph_model(model) else _input_ranks(layers)
    for i, (layer, rank) in enumerate(zip(layers, ranks)):
        convert = TO_TORCH.lookup(layer, where=f"layer {i} ")
        twins.append(convert(layer, TorchContext(layer_label(i, layer), rank)))
    return twins


def to_torch(model: Any) -> nn.Module:
    """An equivalent ``torch.nn.Sequential`` holding copies of the model's weights.

    ``model`` is a ``Sequential``, the seed's ``NeuralNetwork`` or a list of layers. Parameters
    keep their dtype. Raises :class:`UnsupportedLayerError` for a layer without a converter.
    A graph :class:`~nn_from_scratch.graph.Model` becomes a :class:`GraphModule`: one torch module
    per layer (a layer used at two nodes is one module, so the weights stay shared) run in the
    order of the model's nodes.

    Args:
        model: our ``Sequential``, graph ``Model``, seed ``NeuralNetwork`` or list of layers (built).

    Returns:
        An ``nn.Sequential`` (a :class:`GraphModule` for a graph) on NCHW / ``(N, D)`` inputs.

    Example:
        >>> model = Sequential([Linear(output_dim=3), ReLU()], input_shape=(4,), seed=0)
        >>> to_torch(model)
        Sequential(
          (0): Linear(in_features=4, out_features=3, bias=True)
          (1): ReLU()
        )
    """
    if is_graph_model(model):
        return _graph_to_torch(model)
    return nn.Sequential(*[m for twin in torch_twins(model) for m in twin.modules])


def _needs(layer: Layer, what: Any, where: str) -> None:
    if what is None:
        raise ValueError(f"{where}: the layer is not built yet; build the model (model.build(input_shape)) or run it on a batch first")


@TO_TORCH.register(Convolution)
def _conv_to_torch(layer: Convolution, ctx: TorchContext) -> TorchTwin:
    _needs(layer, layer.W, ctx.where)
    if layer.geometry is not None:
        pads: Any = layer.geometry.padding
    elif isinstance(layer.padding, str) and layer.padding == "same":
        if layer.stride != (1, 1):
            _needs(layer, None, ctx.where)  # "same" with stride > 1 depends on the input size
        pads = "same"
    else:
        pads = resolve_padding(layer.padding, (1, 1), layer.kernel_size, layer.stride, layer.dilation, ctx.where)
    modules: list[nn.Module] = []
    if pads == "same":
        padding: Any = "same"
    elif pads[0] == pads[1] and pads[2] == pads[3]:
        padding = (pads[0], pads[2])
    else:
        top, bottom, left, right = pads
        modules.append(nn.ZeroPad2d((left, right, top, bottom)))
        padding = 0
    out_channels, in_channels = layer.W.shape[0], layer.W.shape[1] * layer.groups
    conv = nn.Conv2d(
        in_channels, out_channels, layer.kernel_size, stride=layer.stride, padding=padding,
        dilation=layer.dilation, groups=layer.groups, bias=layer.use_bias, dtype=torch_dtype(layer.W.dtype),
    )
    _assign(conv.weight, layer.W)
    if layer.use_bias:
        _assign(conv.bias, layer.B)
    modules.append(conv)

    def read(get):
        out = {"W": get(conv.weight)}
        if layer.use_bias:
            out["B"] = get(conv.bias)
        return out

    return TorchTwin(modules, read)


@TO_TORCH.register(Linear)
def _linear_to_torch(layer: Linear, ctx: TorchContext) -> TorchTwin:
    _needs(layer, layer.W, ctx.where)
    n_in, n_out = layer.W.shape[0] - 1, layer.W.shape[1]
    linear = nn.Linear(n_in, n_out, dtype=torch_dtype(layer.W.dtype))
    _assign(linear.weight, layer.W[1:].T)
    _assign(linear.bias, layer.W[0])

    def read(get):
        return {"W": np.concatenate([get(linear.bias)[None], get(linear.weight).T])}

    return TorchTwin([linear], read)


def _simple(module_factory: Callable[[Any], nn.Module]) -> Callable[[Any, str], TorchTwin]:
    return lambda layer, ctx: TorchTwin([module_factory(layer)])


TO_TORCH.register(ReLU)(_simple(lambda layer: nn.ReLU()))
TO_TORCH.register(LeakyReLU)(_simple(lambda layer: nn.LeakyReLU(layer.alpha)))
TO_TORCH.register(Sigmoid)(_simple(lambda layer: nn.Sigmoid()))
TO_TORCH.register(Tanh)(_simple(lambda layer: nn.Tanh()))
TO_TORCH.register(SoftMax)(_simple(lambda layer: nn.Softmax(dim=-1)))
TO_TORCH.register(Vectorization)(_simple(lambda layer: nn.Flatten()))


def _pool_pads(layer: Any, where: str) -> tuple[int, int, int, int]:
    if layer.geometry is not None:
        return layer.geometry.padding
    if isinstance(layer.padding, str) and layer.padding == "same":
        _needs(layer, None, where)  # "same" depends on the input size
    return resolve_padding(layer.padding, (1, 1), layer.pool_size, layer.stride, (1, 1), where)


@TO_TORCH.register(MaxPooling)
def _max_pool_to_torch(layer: MaxPooling, ctx: TorchContext) -> TorchTwin:
    top, bottom, left, right = _pool_pads(layer, ctx.where)
    if (top, left) == (bottom, right):
        return TorchTwin([nn.MaxPool2d(layer.pool_size, layer.stride, padding=(top, left))])
    # -inf padding never wins a max, which is what MaxPool2d's own padding means.
    return TorchTwin([nn.ConstantPad2d((left, right, top, bottom), float("-inf")), nn.MaxPool2d(layer.pool_size, layer.stride)])


class AvgPool2dExcludingPadding(nn.Module):
    """Average pooling over an asymmetrically zero-padded input, each window divided by the
    number of its elements inside the input (``count_include_pad=False``), which
    ``nn.AvgPool2d`` cannot do with asymmetric padding."""

    def __init__(self, kernel_size: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = tuple(kernel_size), tuple(stride), tuple(padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom, left, right = self.padding
        pad = (left, right, top, bottom)
        total = F.avg_pool2d(F.pad(x, pad), self.kernel_size, self.stride, divisor_override=1)
        count = F.avg_pool2d(F.pad(torch.ones_like(x[:1, :1]), pad), self.kernel_size, self.stride, divisor_override=1)
        return total / count

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


@TO_TORCH.register(AveragePooling)
def _avg_pool_to_torch(layer: AveragePooling, ctx: TorchContext) -> TorchTwin:
    top, bottom, left, right = _pool_pads(layer, ctx.where)
    if (top, left) == (bottom, right):
        return TorchTwin([nn.AvgPool2d(layer.pool_size, layer.stride, padding=(top, left), count_include_pad=layer.count_include_pad)])
    if layer.count_include_pad:
        return TorchTwin([nn.ZeroPad2d((left, right, top, bottom)), nn.AvgPool2d(layer.pool_size, layer.stride)])
    return TorchTwin([AvgPool2dExcludingPadding(layer.pool_size, layer.stride, (top, bottom, left, right))])


@TO_TORCH.register(GlobalAveragePooling)
def _global_avg_to_torch(layer: GlobalAveragePooling, ctx: TorchContext) -> TorchTwin:
    spatial = 2 if ctx.rank is None else ctx.rank - 1
    pools = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}
    if spatial not in pools:
        raise UnsupportedLayerError(f"to_torch: {ctx.where}: GlobalAveragePooling over {spatial} spatial axes has no torch module")
    return TorchTwin([pools[spatial](1), nn.Flatten()])


TO_TORCH.register(Dropout)(lambda layer, where: TorchTwin([nn.Dropout(layer.rate)]))


@TO_TORCH.register(BatchNormalization)
def _batchnorm_to_torch(layer: BatchNormalization, ctx: TorchContext) -> TorchTwin:
    _needs(layer, layer.gamma, ctx.where)
    ndim = ctx.rank
    if ndim == 3:
        cls: Any = nn.BatchNorm2d
    elif ndim in (1, 2):
        cls = nn.BatchNorm1d
    elif ndim == 4:
        cls = nn.BatchNorm3d
    else:
        raise ValueError(f"{ctx.where}: the rank of its input is unknown (BatchNorm1d or 2d depends on it); build the model first")
    bn = cls(layer.num_features, eps=layer.eps, momentum=layer.momentum, dtype=torch_dtype(layer.gamma.dtype))
    _assign(bn.weight, layer.gamma)
    _assign(bn.bias, layer.beta)
    _assign(bn.running_mean, layer.running_mean)
    _assign(bn.running_var, layer.running_var)
    _assign(bn.num_batches_tracked, np.asarray(layer.num_batches_tracked, dtype=np.int64))

    def read(get):
        return {"gamma": get(bn.weight), "beta": get(bn.bias)}

    def read_buffers(get):
        return {"running_mean": get(bn.running_mean), "running_var": get(bn.running_var),
                "num_batches_tracked": get(bn.num_batches_tracked)}

    return TorchTwin([bn], read, read_buffers)


# -- torch -> our layers ----------------------------------------------------------------------
def _flat_modules(module: nn.Module) -> list[nn.Module]:
    if isinstance(module, nn.Sequential):
        return [m for child in module for m in _flat_modules(child)]
    return [module]


def from_torch(
    module: nn.Module,
    input_shape: tuple[int, ...] | None = None,
    loss: Loss | None = None,
    optimizer: Any = None,
) -> Sequential:
    """Our ``Sequential`` equivalent to a torch ``Sequential`` (nested ones are flattened).

    Weights are copied and keep their dtype. ``input_shape`` (per sample, NCHW) builds the model
    at once; otherwise shapes are inferred from the first batch.

    Graphs: a plain ``nn.Module`` keeps its graph in Python code (its ``forward``), which there is
    no way to read, so only the :class:`GraphModule` made by :func:`to_torch` from one of our graph
    models converts back, to a graph ``Model`` (``input_shape`` is ignored: it is in the structure).

    Args:
        module: a torch ``nn.Sequential`` (nested ones flattened) or a :class:`GraphModule`.
        input_shape: per-sample input shape, NCHW (e.g. ``(1, 28, 28)``), to build at once.
        loss: our loss to attach, or None.
        optimizer: our optimizer to attach, or None.

    Returns:
        Our ``Sequential`` (graph ``Model`` for a ``GraphModule``).

    Example:
        >>> module = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
        >>> from_torch(module, input_shape=(4,)).predict(np.ones((2, 4), dtype=np.float32)).shape
        (2, 3)
    """
    if isinstance(module, GraphModule):
        return _graph_from_torch(module, loss, optimizer)
    modules = _flat_modules(module)
    layers: list[Layer] = []
    i = 0
    while i < len(modules):
        convert = FROM_TORCH.lookup(modules[i], where=f"module {i} ")
        new_layers, used = convert(modules, i)
        layers.extend(new_layers)
        i += used
    return Sequential(layers, loss=loss, optimizer=optimizer, input_shape=input_shape)


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


@FROM_TORCH.register(nn.Conv2d)
def _conv_from_torch(modules: list[nn.Module], i: int, extra_padding: tuple[int, int, int, int] | None = None):
    conv = modules[i]
    where = f"from_torch: module {i} (Conv2d)"
    if conv.padding_mode != "zeros":
        raise UnsupportedLayerError(f"{where}: padding_mode={conv.padding_mode!r} is not supported (only 'zeros')")
    padding: Any = conv.padding if isinstance(conv.padding, str) else tuple(int(p) for p in conv.padding)
    if extra_padding is not None:
        if isinstance(padding, str):
            if padding != "valid":
                raise UnsupportedLayerError(f"{where}: ZeroPad2d before a Conv2d with padding={padding!r} is not supported")
            padding = (0, 0)
        top, bottom, left, right = extra_padding
        padding = (top + padding[0], bottom + padding[0], left + padding[1], right + padding[1])
    W = _array(conv.weight)
    B = None if conv.bias is None else _array(conv.bias)
    layer = Convolution(
        None, tuple(conv.kernel_size), conv.out_channels, padding=padding, W=W, B=B, use_bias=B is not None,
        stride=tuple(conv.stride), dilation=tuple(conv.dilation), groups=conv.groups, dtype=W.dtype,
    )
    return [layer], 1


@TO_TORCH.register(TransposedConvolution)
def _transposed_conv_to_torch(layer: TransposedConvolution, ctx: TorchContext) -> TorchTwin:
    _needs(layer, layer.W, ctx.where)
    # Asymmetric padding (top, bottom, left, right): torch's symmetric part, then ZeroPad2d with
    # negative amounts crops the rest (from_torch folds the pair back).
    top, bottom, left, right = layer.padding if len(layer.padding) == 4 else (layer.padding[0],) * 2 + (layer.padding[1],) * 2
    ph, pw = min(top, bottom), min(left, right)
    conv = nn.ConvTranspose2d(
        layer.W.shape[0], layer.out_channels, layer.kernel_size, stride=layer.stride, padding=(ph, pw),
        output_padding=layer.output_padding, groups=layer.groups, bias=layer.use_bias, dilation=layer.dilation,
        dtype=torch_dtype(layer.W.dtype),
    )
    _assign(conv.weight, layer.W)  # (in, out/groups, kh, kw) on both sides
    if layer.use_bias:
        _assign(conv.bias, layer.B)

    def read(get):
        out = {"W": get(conv.weight)}
        if layer.use_bias:
            out["B"] = get(conv.bias)
        return out

    crop = (left - pw, right - pw, top - ph, bottom - ph)
    return TorchTwin([conv] + ([nn.ZeroPad2d(tuple(-c for c in crop))] if any(crop) else []), read)


@FROM_TORCH.register(nn.ConvTranspose2d)
def _transposed_conv_from_torch(modules: list[nn.Module], i: int):
    conv = modules[i]
    if conv.padding_mode != "zeros":
        raise UnsupportedLayerError(f"from_torch: module {i} (ConvTranspose2d): padding_mode={conv.padding_mode!r} is not "
                                    "supported (only 'zeros')")
    W = _array(conv.weight)
    B = None if conv.bias is None else _array(conv.bias)
    ph, pw = (int(p) for p in conv.padding)
    padding: Any = (ph, pw)
    follows = modules[i + 1] if i + 1 < len(modules) else None
    crop = isinstance(follows, nn.ZeroPad2d) and all(int(p) <= 0 for p in follows.padding)
    if crop:  # a ZeroPad2d with negative amounts right after it: asymmetric padding (see to_torch)
        left, right, top, bottom = (-int(p) for p in follows.padding)
        padding = (ph + top, ph + bottom, pw + left, pw + right)
    layer = TransposedConvolution(
        None, tuple(conv.kernel_size), conv.out_channels, padding=padding, W=W, B=B,
        use_bias=B is not None, stride=tuple(conv.stride), output_padding=tuple(int(p) for p in conv.output_padding),
        dilation=tuple(conv.dilation), groups=conv.groups, dtype=W.dtype,
    )
    return [layer], 2 if crop else 1


@FROM_TORCH.register(nn.ZeroPad2d)
def _zeropad_from_torch(modules: list[nn.Module], i: int):
    left, right, top, bottom = (int(p) for p in modules[i].padding)
    following = {nn.Conv2d: _conv_from_torch, nn.AvgPool2d: _avg_pool_from_torch}
    target = modules[i + 1] if i + 1 < len(modules) else None
    convert = next((fn for cls, fn in following.items() if isinstance(target, cls)), None)
    if convert is None or min(left, right, top, bottom) < 0:
        raise UnsupportedLayerError(
            f"from_torch: module {i} (ZeroPad2d {modules[i].padding}) is supported only with non-negative padding, "
            "right before a Conv2d or an AvgPool2d"
        )
    layers, used = convert(modules, i + 1, extra_padding=(top, bottom, left, right))
    return layers, used + 1


@FROM_TORCH.register(nn.Linear)
def _linear_from_torch(modules: list[nn.Module], i: int):
    linear = modules[i]
    weight = _array(linear.weight)
    bias = np.zeros(weight.shape[0], dtype=weight.dtype) if linear.bias is None else _array(linear.bias)
    W = np.concatenate([bias[None], weight.T])
    return [Linear(None, linear.out_features, W=W, dtype=W.dtype)], 1


@FROM_TORCH.register(nn.Flatten)
def _flatten_from_torch(modules: list[nn.Module], i: int):
    flatten = modules[i]
    if flatten.start_dim != 1 or flatten.end_dim != -1:
        raise UnsupportedLayerError(f"from_torch: module {i} (Flatten(start_dim={flatten.start_dim}, end_dim={flatten.end_dim})) "
                                    "is supported only as Flatten(1, -1)")
    return [Vectorization()], 1


@FROM_TORCH.register(nn.Softmax)
def _softmax_from_torch(modules: list[nn.Module], i: int):
    if modules[i].dim != -1:
        raise UnsupportedLayerError(f"from_torch: module {i} (Softmax(dim={modules[i].dim})) is supported only with dim=-1")
    return [SoftMax()], 1


def _node_from_torch(factory: Callable[[nn.Module], Layer]):
    return lambda modules, i: ([factory(modules[i])], 1)


FROM_TORCH.register(nn.ReLU)(_node_from_torch(lambda m: ReLU()))
FROM_TORCH.register(nn.LeakyReLU)(_node_from_torch(lambda m: LeakyReLU(alpha=m.negative_slope)))
FROM_TORCH.register(nn.Sigmoid)(_node_from_torch(lambda m: Sigmoid()))
FROM_TORCH.register(nn.Tanh)(_node_from_torch(lambda m: Tanh()))


def _pool_geometry(pool: nn.Module, where: str) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    def pair(v: Any) -> tuple[int, int]:
        return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))

    if getattr(pool, "ceil_mode", False):
        raise UnsupportedLayerError(f"{where}: ceil_mode=True is not supported")
    if getattr(pool, "dilation", 1) not in (1, (1, 1)):
        raise UnsupportedLayerError(f"{where}: pooling with dilation {pool.dilation} is not supported")
    if getattr(pool, "return_indices", False):
        raise UnsupportedLayerError(f"{where}: return_indices=True is not supported")
    kernel = pair(pool.kernel_size)
    stride = kernel if pool.stride is None else pair(pool.stride)
    return kernel, stride, pair(pool.padding)


@FROM_TORCH.register(nn.MaxPool2d)
def _max_pool_from_torch(modules: list[nn.Module], i: int, extra_padding: tuple[int, int, int, int] | None = None):
    kernel, stride, (ph, pw) = _pool_geometry(modules[i], f"from_torch: module {i} (MaxPool2d)")
    padding: Any = (ph, pw)
    if extra_padding is not None:
        top, bottom, left, right = extra_padding
        padding = (top + ph, bottom + ph, left + pw, right + pw)
    return [MaxPooling(kernel, stride, padding)], 1


@FROM_TORCH.register(nn.ConstantPad2d)
def _constant_pad_from_torch(modules: list[nn.Module], i: int):
    pad = modules[i]
    left, right, top, bottom = (int(p) for p in pad.padding)
    if pad.value != float("-inf") or i + 1 >= len(modules) or not isinstance(modules[i + 1], nn.MaxPool2d) \
            or min(left, right, top, bottom) < 0:
        raise UnsupportedLayerError(f"from_torch: module {i} ({pad!r}) is supported only as -inf padding right before a MaxPool2d")
    layers, used = _max_pool_from_torch(modules, i + 1, extra_padding=(top, bottom, left, right))
    return layers, used + 1


@FROM_TORCH.register(nn.AvgPool2d)
def _avg_pool_from_torch(modules: list[nn.Module], i: int, extra_padding: tuple[int, int, int, int] | None = None):
    pool = modules[i]
    where = f"from_torch: module {i} (AvgPool2d)"
    if pool.divisor_override is not None:
        raise UnsupportedLayerError(f"{where}: divisor_override is not supported")
    kernel, stride, (ph, pw) = _pool_geometry(pool, where)
    padding: Any = (ph, pw)
    count_include_pad = bool(pool.count_include_pad)
    if extra_padding is not None:
        if (ph, pw) != (0, 0) and not count_include_pad:
            raise UnsupportedLayerError(f"{where}: ZeroPad2d before an AvgPool2d(count_include_pad=False) with padding is not supported")
        top, bottom, left, right = extra_padding
        padding = (top + ph, bottom + ph, left + pw, right + pw)
        count_include_pad = True  # the zeros of ZeroPad2d are counted, like padding with count_include_pad
    return [AveragePooling(kernel, stride, padding, count_include_pad=count_include_pad)], 1


@FROM_TORCH.register(AvgPool2dExcludingPadding)
def _avg_excluding_from_torch(modules: list[nn.Module], i: int):
    pool = modules[i]
    return [AveragePooling(pool.kernel_size, pool.stride, pool.padding, count_include_pad=False)], 1


@FROM_TORCH.register(nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
def _adaptive_avg_from_torch(modules: list[nn.Module], i: int):
    size = modules[i].output_size
    sizes = (size,) if isinstance(size, int) else tuple(size)
    follows = modules[i + 1] if i + 1 < len(modules) else None
    if any(s != 1 for s in sizes) or not (isinstance(follows, nn.Flatten) and follows.start_dim == 1 and follows.end_dim == -1):
        raise UnsupportedLayerError(f"from_torch: module {i} ({modules[i]!r}) is supported only with output size 1 followed by "
                                    "Flatten() (a global average pooling)")
    return [GlobalAveragePooling()], 2


FROM_TORCH.register(nn.Dropout)(lambda modules, i: ([Dropout(modules[i].p)], 1))


@FROM_TORCH.register(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
def _batchnorm_from_torch(modules: list[nn.Module], i: int):
    bn = modules[i]
    if not bn.affine or not bn.track_running_stats:
        raise UnsupportedLayerError(f"from_torch: module {i} ({bn!r}) needs affine=True and track_running_stats=True")
    gamma = _array(bn.weight)
    layer = BatchNormalization(momentum=bn.momentum, eps=bn.eps, input_dim=bn.num_features, gamma=gamma,
                               beta=_array(bn.bias), dtype=gamma.dtype)
    layer.running_mean[...] = _array(bn.running_mean)
    layer.running_var[...] = _array(bn.running_var)
    layer.num_batches_tracked[...] = int(bn.num_batches_tracked)
    return [layer], 1


# -- graph models -----------------------------------------------------------------------------
from ..nodes import Add, Concatenate, Multiply  # noqa: E402


class TorchAdd(nn.Module):
    """``xs[0] + xs[1] + ...`` on a list of tensors (our :class:`~nn_from_scratch.nodes.Add`), broadcasting as torch."""

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        out = xs[0] + xs[1]
        for x in xs[2:]:
            out = out + x
        return out


class TorchMultiply(nn.Module):
    """``xs[0] * xs[1] * ...`` on a list of tensors (our :class:`~nn_from_scratch.nodes.Multiply`)."""

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        out = xs[0] * xs[1]
        for x in xs[2:]:
            out = out * x
        return out


class TorchConcatenate(nn.Module):
    """``torch.cat(xs, dim)`` (our :class:`~nn_from_scratch.nodes.Concatenate`; its ``axis`` counts the batch axis, as ``dim``)."""

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = int(dim)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(xs), dim=self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


TO_TORCH.register(Add)(_simple(lambda layer: TorchAdd()))
TO_TORCH.register(Multiply)(_simple(lambda layer: TorchMultiply()))
TO_TORCH.register(Concatenate)(_simple(lambda layer: TorchConcatenate(layer.axis)))
FROM_TORCH.register(TorchAdd)(lambda modules, i: ([Add()], 1))
FROM_TORCH.register(TorchMultiply)(lambda modules, i: ([Multiply()], 1))
FROM_TORCH.register(TorchConcatenate)(lambda modules, i: ([Concatenate(axis=modules[i].dim)], 1))


def graph_layer_ranks(model: Any) -> list[int]:
    """The per-sample rank of the (first) input of each of ``model.layers`` in a graph model."""
    ranks: dict[int, int] = {}
    for node in model.nodes:
        ranks.setdefault(id(node.layer), len(node.inputs[0].shape))
    return [ranks[id(layer)] for layer in model.layers]


def graph_node_twin(model: Any, j: int) -> TorchTwin:
    """A fresh :class:`TorchTwin` for node ``j`` of a graph model (its own copy of the layer's weights)."""
    node = model.nodes[j]
    where = f"node {j} ({node.layer.name})"
    return TO_TORCH.lookup(node.layer, where=f"{where} ")(node.layer, TorchContext(where, len(node.inputs[0].shape)))


class GraphModule(nn.Module):
    """The torch twin of a graph :class:`~nn_from_scratch.graph.Model`.

    ``layer_modules[i]`` computes ``model.layers[i]`` (an ``nn.Sequential`` of its twin's modules,
    e.g. ``ZeroPad2d`` then ``Conv2d``); ``structure`` is the model's :meth:`get_config`, whose nodes
    say which layer runs on which earlier outputs. A layer used at several nodes is one module, called
    at each of them, so its weights are shared and autograd sums their gradients -- as in our model.
    ``twins[i]`` is the :class:`TorchTwin` of layer ``i`` (``read`` gives its weights in our layouts).

    Args:
        twins: one :class:`TorchTwin` per layer of the graph model.
        structure: the graph model's :meth:`get_config` (its nodes).
        takes_list: per layer, whether its module takes a list of inputs (``Add``, ``Concatenate``...).

    Example:
        >>> x = Input(shape=(4,))
        >>> graph = Model(x, Add()([x, Linear(output_dim=4)(x)]), seed=0)
        >>> module = to_torch(graph)                  # a GraphModule, built for you
        >>> module(torch.ones(2, 4)).shape
        torch.Size([2, 4])
    """

    def __init__(self, twins: list[TorchTwin], structure: dict[str, Any], takes_list: list[bool]) -> None:
        super().__init__()
        self.layer_modules = nn.ModuleList([nn.Sequential(*twin.modules) for twin in twins])
        self.structure = structure
        self.takes_list = list(takes_list)
        self.twins = twins

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: list[torch.Tensor] = []

        def value(ref: list[Any]) -> torch.Tensor:
            return x if ref[0] == "input" else values[ref[1]]

        for entry in self.structure["nodes"]:
            i = entry["layer"]
            args = [value(r) for r in entry["inputs"]]
            values.append(self.layer_modules[i](args if self.takes_list[i] else args[0]))
        return value(self.structure["outputs"][0])


def _graph_to_torch(model: Any) -> GraphModule:
    return GraphModule(torch_twins(model), model.get_config(), [layer.n_inputs is None for layer in model.layers])


def _graph_from_torch(module: GraphModule, loss: Loss | None, optimizer: Any) -> Any:
    from ..graph import Model
    from ..nodes import Identity

    layers: list[Layer] = []
    for i, sub in enumerate(module.layer_modules):
        modules = _flat_modules(sub)
        converted: list[Layer] = []
        k = 0
        while k < len(modules):
            new_layers, used = FROM_TORCH.lookup(modules[k], where=f"layer module {i}, module {k} ")(modules, k)
            converted.extend(new_layers)
            k += used
        if len(converted) > 1:
            raise UnsupportedLayerError(f"from_torch: layer module {i} ({sub!r}) becomes {len(converted)} layers; "
                                        "a graph node must be one layer")
        layers.append(converted[0] if converted else Identity())
    return Model.from_config(layers, module.structure, loss=loss, optimizer=optimizer)


# -- layers of modern CNNs: activations, Reshape, UpSampling2D, layer and group normalisation ---
from ..neurons import GroupNormalization, LayerNormalization  # noqa: E402
from ..nodes import ELU, GELU, Identity, LogSoftMax, Reshape, SiLU, Softplus, UpSampling2D  # noqa: E402

OUTPUT_RANK[UpSampling2D] = 3
OUTPUT_RANK[Reshape] = lambda layer: len(layer.target_shape)  # type: ignore[assignment]

TO_TORCH.register(GELU)(_simple(lambda layer: nn.GELU(approximate=layer.approximate)))
TO_TORCH.register(SiLU)(_simple(lambda layer: nn.SiLU()))
TO_TORCH.register(ELU)(_simple(lambda layer: nn.ELU(alpha=layer.alpha)))
TO_TORCH.register(Softplus)(_simple(lambda layer: nn.Softplus(beta=layer.beta, threshold=layer.threshold)))
TO_TORCH.register(LogSoftMax)(_simple(lambda layer: nn.LogSoftmax(dim=layer.axis)))
TO_TORCH.register(Identity)(_simple(lambda layer: nn.Identity()))

FROM_TORCH.register(nn.GELU)(_node_from_torch(lambda m: GELU(approximate=m.approximate)))
FROM_TORCH.register(nn.SiLU)(_node_from_torch(lambda m: SiLU()))
FROM_TORCH.register(nn.ELU)(_node_from_torch(lambda m: ELU(alpha=m.alpha)))
FROM_TORCH.register(nn.Softplus)(_node_from_torch(lambda m: Softplus(beta=m.beta, threshold=m.threshold)))
FROM_TORCH.register(nn.Identity)(_node_from_torch(lambda m: Identity()))


@FROM_TORCH.register(nn.LogSoftmax)
def _log_softmax_from_torch(modules: list[nn.Module], i: int):
    dim = modules[i].dim
    if dim is None or dim == 0:
        raise UnsupportedLayerError(f"from_torch: module {i} (LogSoftmax(dim={dim})) is supported only with an explicit "
                                    "per-sample dim (not None, not 0)")
    return [LogSoftMax(axis=int(dim))], 1


@TO_TORCH.register(Reshape)
def _reshape_to_torch(layer: Reshape, ctx: TorchContext) -> TorchTwin:
    # torch has no reshape module: flatten each sample (unless it is flat already), then unflatten.
    target = tuple(layer.output_shape) if layer.output_shape is not None else layer.target_shape
    modules: list[nn.Module] = [] if ctx.rank == 1 else [nn.Flatten()]
    if len(target) > 1:
        modules.append(nn.Unflatten(1, target))
    return TorchTwin(modules or [nn.Flatten()])


# Modules that keep a (batch, features) tensor flat, looked through to find what an Unflatten reads.
_FLAT_PRESERVING = (nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU, nn.ELU, nn.Softplus, nn.Identity,
                    nn.Dropout, nn.BatchNorm1d, nn.LayerNorm, nn.Softmax, nn.LogSoftmax)


@FROM_TORCH.register(nn.Unflatten)
def _unflatten_from_torch(modules: list[nn.Module], i: int):
    """``nn.Unflatten(1, sizes)`` of a flat ``(batch, features)`` tensor is ``Reshape(sizes)``: the
    tensor must come from a ``Flatten()`` or a ``Linear`` (through element-wise modules) or be the
    model's input. On a ``(batch, C, L)`` input it would split ``C`` only, which ``Reshape`` of the
    whole sample is not, so that is refused."""
    unflatten = modules[i]
    where = f"from_torch: module {i} ({unflatten!r})"
    if unflatten.dim != 1:
        raise UnsupportedLayerError(f"{where}: supported only as Unflatten(1, sizes)")
    j = i - 1
    while j >= 0 and isinstance(modules[j], _FLAT_PRESERVING):
        j -= 1
    source = modules[j] if j >= 0 else None
    flat = source is None or isinstance(source, nn.Linear) or (
        isinstance(source, nn.Flatten) and source.start_dim == 1 and source.end_dim == -1)
    if not flat:
        raise UnsupportedLayerError(f"{where}: supported only on a flat (batch, features) tensor, after Flatten() or "
                                    f"Linear, not after {type(source).__name__}")
    return [Reshape(tuple(int(s) for s in unflatten.unflattened_size))], 1


@TO_TORCH.register(UpSampling2D)
def _upsampling_to_torch(layer: UpSampling2D, ctx: TorchContext) -> TorchTwin:
    scale = (float(layer.size[0]), float(layer.size[1]))
    if layer.interpolation == "nearest":
        return TorchTwin([nn.Upsample(scale_factor=scale, mode="nearest")])
    return TorchTwin([nn.Upsample(scale_factor=scale, mode="bilinear", align_corners=False)])


@FROM_TORCH.register(nn.Upsample)
def _upsample_from_torch(modules: list[nn.Module], i: int):
    up = modules[i]
    where = f"from_torch: module {i} ({up!r})"
    if up.size is not None or up.scale_factor is None:
        raise UnsupportedLayerError(f"{where}: supported only with scale_factor (integers), not an output size")
    factors = up.scale_factor if isinstance(up.scale_factor, tuple) else (up.scale_factor,) * 2
    if len(factors) != 2 or any(float(f) != int(f) or f < 1 for f in factors):
        raise UnsupportedLayerError(f"{where}: supported only with integer scale factors >= 1 on (N, C, H, W)")
    if up.mode not in ("nearest", "bilinear") or (up.mode == "bilinear" and up.align_corners):
        raise UnsupportedLayerError(f"{where}: supported only with mode='nearest' or mode='bilinear', align_corners=False")
    return [UpSampling2D((int(factors[0]), int(factors[1])), interpolation=up.mode)], 1


class LayerNormOverAxes(nn.Module):
    """``nn.LayerNorm`` over any set of per-sample axes (batch = 0), not only the trailing ones:
    the axes are moved to the end, normalised, and moved back. ``weight``/``bias`` have the sizes
    of those axes in increasing order (our ``LayerNormalization(axis=...)`` layout)."""

    def __init__(self, axes: tuple[int, ...], shape: tuple[int, ...], eps: float, dtype: torch.dtype) -> None:
        super().__init__()
        self.axes, self.eps = tuple(int(a) for a in axes), float(eps)
        self.weight = nn.Parameter(torch.ones(shape, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(shape, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = list(range(x.ndim - len(self.axes), x.ndim))
        moved = x.movedim(self.axes, last)
        return F.layer_norm(moved, tuple(self.weight.shape), self.weight, self.bias, self.eps).movedim(last, self.axes)

    def extra_repr(self) -> str:
        return f"axes={self.axes}, shape={tuple(self.weight.shape)}, eps={self.eps}"


@TO_TORCH.register(LayerNormalization)
def _layer_norm_to_torch(layer: LayerNormalization, ctx: TorchContext) -> TorchTwin:
    _needs(layer, layer.axes, ctx.where)
    rank = len(layer.input_shape)
    shape = tuple(layer.gamma.shape)
    dtype = torch_dtype(layer.gamma.dtype)
    if layer.axes == tuple(range(rank - len(shape) + 1, rank + 1)):  # the trailing axes: torch's own module
        module: nn.Module = nn.LayerNorm(shape, eps=layer.eps, elementwise_affine=True, bias=True, dtype=dtype)
    else:
        module = LayerNormOverAxes(layer.axes, shape, layer.eps, dtype)
    _assign(module.weight, layer.gamma)
    _assign(module.bias, layer.beta)
    return TorchTwin([module], lambda get: {"gamma": get(module.weight), "beta": get(module.bias)})


@FROM_TORCH.register(nn.LayerNorm)
def _layer_norm_from_torch(modules: list[nn.Module], i: int):
    ln = modules[i]
    if not ln.elementwise_affine or ln.bias is None:
        raise UnsupportedLayerError(f"from_torch: module {i} ({ln!r}) needs elementwise_affine=True and bias=True")
    gamma = _array(ln.weight)
    return [LayerNormalization(tuple(ln.normalized_shape), eps=ln.eps, gamma=gamma, beta=_array(ln.bias), dtype=gamma.dtype)], 1


@FROM_TORCH.register(LayerNormOverAxes)
def _layer_norm_axes_from_torch(modules: list[nn.Module], i: int):
    ln = modules[i]
    gamma = _array(ln.weight)
    return [LayerNormalization(axis=ln.axes, eps=ln.eps, gamma=gamma, beta=_array(ln.bias), dtype=gamma.dtype)], 1


@TO_TORCH.register(GroupNormalization)
def _group_norm_to_torch(layer: GroupNormalization, ctx: TorchContext) -> TorchTwin:
    _needs(layer, layer.gamma, ctx.where)
    gn = nn.GroupNorm(layer.groups, layer.num_channels, eps=layer.eps, affine=True, dtype=torch_dtype(layer.gamma.dtype))
    _assign(gn.weight, layer.gamma)
    _assign(gn.bias, layer.beta)
    return TorchTwin([gn], lambda get: {"gamma": get(gn.weight), "beta": get(gn.bias)})


@FROM_TORCH.register(nn.GroupNorm)
def _group_norm_from_torch(modules: list[nn.Module], i: int):
    gn = modules[i]
    if not gn.affine:
        raise UnsupportedLayerError(f"from_torch: module {i} ({gn!r}) needs affine=True")
    gamma = _array(gn.weight)
    return [GroupNormalization(gn.num_groups, eps=gn.eps, input_dim=gn.num_channels, gamma=gamma, beta=_array(gn.bias),
                               dtype=gamma.dtype)], 1


# -- losses -----------------------------------------------------------------------------------
def torch_loss(loss: Loss, y_pred: torch.Tensor, y_true: Any) -> torch.Tensor:
    """The torch value of our ``loss`` on a torch prediction (differentiable).

    Args:
        loss: our loss (``SoftMaxLoss``, ``BinaryCrossEntropy``, ``MSELoss``).
        y_pred: the torch prediction (logits for the classification losses), e.g. ``(N, K)``.
        y_true: our targets (integer labels ``(N,)`` or one-hot ``(N, K)`` for ``SoftMaxLoss``).

    Returns:
        A scalar torch tensor.

    Example:
        >>> float(torch_loss(SoftMaxLoss(), torch.zeros(2, 3), np.array([0, 2])))   # log(3)
        1.0986123085021973
    """
    return TORCH_LOSSES.lookup(loss, where="loss ")(loss, y_pred, y_true)


@TORCH_LOSSES.register(SoftMaxLoss)
def _softmax_loss(loss: SoftMaxLoss, logits: torch.Tensor, y_true: Any) -> torch.Tensor:
    np_dtype = torch.empty(0, dtype=logits.dtype).numpy().dtype
    target = one_hot_targets(y_true, tuple(logits.shape), np_dtype, loss.name)
    return F.cross_entropy(logits, _tensor(target), label_smoothing=loss.label_smoothing)


@TORCH_LOSSES.register(BinaryCrossEntropy)
def _bce_loss(loss: BinaryCrossEntropy, logits: torch.Tensor, y_true: Any) -> torch.Tensor:
    # Evaluated in float64 and cast back: torch's float32 kernel computes log(1 + e^z) without
    # log1p and loses ~1e-5 relative for confident logits, more than our float32 tolerance.
    target = torch.as_tensor(np.asarray(y_true), dtype=torch.float64).reshape(logits.shape)
    return F.binary_cross_entropy_with_logits(logits.double(), target).to(logits.dtype)


@TORCH_LOSSES.register(MSELoss)
def _mse_loss(loss: MSELoss, y_pred: torch.Tensor, y_true: Any) -> torch.Tensor:
    return F.mse_loss(y_pred, torch.as_tensor(np.asarray(y_true)).to(y_pred.dtype).reshape(y_pred.shape))




# -- optimizers -------------------------------------------------------------------------------
TORCH_OPTIMIZERS = Registry("torch optimizer")


def torch_optimizer(optimizer: Any, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    """The ``torch.optim`` optimizer with the same update rule and settings as ours.

    ``clip_norm`` is not part of it: apply ``torch.nn.utils.clip_grad_norm_`` before ``step``.

    Args:
        optimizer: our optimizer (``GradientDescent``, ``Adam``, ``AdamW``, ``RMSProp``).
        params: the torch parameters it updates.

    Returns:
        A ``torch.optim.Optimizer``.

    Example:
        >>> from nn_from_scratch.optimizers import Adam
        >>> opt = torch_optimizer(Adam(1e-3), [torch.zeros(2, requires_grad=True)])
        >>> type(opt).__name__, opt.defaults["lr"]
        ('Adam', 0.001)
    """
    return TORCH_OPTIMIZERS.lookup(optimizer, where="optimizer ")(optimizer, params)


def _register_optimizers() -> None:
    from .. import optimizers as ours

    def sgd(opt, params):
        return torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum, dampening=0.0, nesterov=opt.nesterov,
                               weight_decay=opt.weight_decay)

    def adam(opt, params):
        return torch.optim.Adam(params, lr=opt.lr, betas=(opt.beta1, opt.beta2), eps=opt.eps, weight_decay=opt.weight_decay)

    def adamw(opt, params):
        return torch.optim.AdamW(params, lr=opt.lr, betas=(opt.beta1, opt.beta2), eps=opt.eps, weight_decay=opt.weight_decay)

    def rmsprop(opt, params):
        return torch.optim.RMSprop(params, lr=opt.lr, alpha=opt.alpha, eps=opt.eps, weight_decay=opt.weight_decay,
                                   momentum=opt.momentum, centered=opt.centered)

    table = {"GradientDescent": sgd, "Adam": adam, "AdamW": adamw, "RMSProp": rmsprop}
    for name, fn in table.items():
        if hasattr(ours, name):  # an optimizer this version of the library does not have is skipped
            TORCH_OPTIMIZERS.register(getattr(ours, name))(fn)


_register_optimizers()


__all__ = ["FROM_TORCH", "GraphModule", "TORCH_LOSSES", "TORCH_OPTIMIZERS", "TO_TORCH", "TorchTwin", "UnsupportedLayerError", "from_torch",
           "to_torch", "torch_dtype", "torch_loss", "torch_optimizer", "torch_twins"]
