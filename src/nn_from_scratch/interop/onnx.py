"""ONNX export and import: :func:`to_onnx` and :func:`from_onnx`, for ``Sequential`` and graph models.

``pip install 'nn_from_scratch[onnx]'`` (onnx; onnxruntime to run the result). Every layer with
an ONNX operator maps to it:

=============================  ==========================================================
ours                           ONNX
=============================  ==========================================================
Convolution (groups)           Conv (``group``)
TransposedConvolution          ConvTranspose (``output_padding``, ``group``)
Linear                         Gemm (``B`` = rows 1.., ``C`` = row 0 of our ``W``)
BatchNormalization             BatchNormalization (inference: running statistics)
LayerNormalization             LayerNormalization (opset >= 17, trailing axes); else
                               ReduceMean / Sub / Mul / Sqrt / Div
GroupNormalization             GroupNormalization (opset >= 21); else Reshape + the same
MaxPooling, AveragePooling     MaxPool, AveragePool (``count_include_pad`` always written)
GlobalAveragePooling           ReduceMean over the spatial axes (``keepdims=0``)
ReLU, LeakyReLU, Sigmoid,      Relu, LeakyRelu, Sigmoid, Tanh, Softmax, LogSoftmax, Elu,
Tanh, SoftMax, LogSoftMax,     Softplus (``beta != 1``: Mul / Softplus / Div), Gelu (opset
ELU, Softplus, GELU, SiLU,     >= 20; else Erf or Tanh formula), Sigmoid + Mul, Identity
Identity, Dropout              (Dropout is the identity at inference)
Add, Multiply, Concatenate     Add, Mul (a chain for more than two inputs), Concat
Reshape, Vectorization         Reshape (``[0, *shape]``), Flatten (``axis=1``)
UpSampling2D                   Resize (nearest: ``asymmetric`` + ``floor``; bilinear:
                               ``linear`` + ``pytorch_half_pixel``)
=============================  ==========================================================

The batch axis is dynamic (``dim_param="batch"``). A layer without a mapping raises
:class:`~nn_from_scratch.interop.UnsupportedLayerError` naming it; on import, an ONNX node
without one raises it naming the node and its operator.

The traps, each held by a test (``tests/test_onnx.py``):

* ONNX ``pads`` are ``[top, left, bottom, right]`` (all begins, then all ends); ours are
  ``(top, bottom, left, right)``.
* ``AveragePool``'s ``count_include_pad`` defaults to 0, our ``AveragePooling``'s (as torch's)
  to True: it is always written.
* Batch norm's epsilon is carried (an attribute; float32 in ONNX, exact in the metadata below).
* ``Flatten`` flattens C, H, W in that order, as our ``Vectorization`` does (Keras' NHWC
  flatten would not).
* onnxruntime's CPU ``Conv`` has no float64 kernel: a float64 model exports as float64 (exact,
  and ``from_onnx`` gives it back bit for bit) but onnxruntime refuses to run it; pass
  ``dtype="float32"`` to export a model onnxruntime can serve.

Round trip: ``from_onnx(to_onnx(m))`` gives the same model, bit for bit. Each ONNX node that
:func:`to_onnx` writes carries in its ``doc_string`` a small JSON tag: which layer and call it
computes and the layer's :meth:`get_config`. ONNX attributes are float32 (an epsilon of 1e-5
would come back as 9.99999975e-06), so the importer takes the hyper-parameters from the tag
and the weights from the initializers; layers written as several ONNX nodes are rebuilt from
their tag. A file from elsewhere (``torch.onnx.export``) has no tags and is imported operator by
operator.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..interfaces import Layer
from ..neurons import BatchNormalization, Convolution, GroupNormalization, LayerNormalization, Linear, TransposedConvolution
from ..nodes import (ELU, GELU, Add, AveragePooling, Concatenate, Dropout, GlobalAveragePooling, Identity, LeakyReLU,
                     LogSoftMax, MaxPooling, Multiply, ReLU, Reshape, Sigmoid, SiLU, SoftMax, Softplus, Tanh, UpSampling2D,
                     Vectorization)
from ._common import Registry, UnsupportedLayerError, is_graph_model, model_layers

__all__ = ["DEFAULT_OPSET", "from_onnx", "to_onnx", "to_onnx_model", "from_onnx_model", "TO_ONNX", "FROM_ONNX"]

DEFAULT_OPSET = 17
TAG = "nn_from_scratch"
TO_ONNX = Registry("to_onnx")
FROM_ONNX: dict[str, Callable[..., Any]] = {}

_ELEM = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}


def _pads(padding: Sequence[int]) -> list[int]:
    """Our ``(top, bottom, left, right)`` -> ONNX ``[top, left, bottom, right]``."""
    top, bottom, left, right = (int(p) for p in padding)
    return [top, left, bottom, right]


def _our_pads(pads: Sequence[int]) -> tuple[int, int, int, int]:
    """ONNX ``[top, left, bottom, right]`` -> our ``(top, bottom, left, right)``."""
    top, left, bottom, right = (int(p) for p in pads)
    return top, bottom, left, right


# -- export -------------------------------------------------------------------------------------
class _Exporter:
    """Collects nodes and initializers while the converters run."""

    def __init__(self, opset: int, dtype: np.dtype) -> None:
        self.opset, self.dtype = int(opset), np.dtype(dtype)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, onnx.TensorProto] = {}
        self._init_names: dict[tuple[int, str], str] = {}
        self._count = 0
        self.arrays: dict[str, str] = {}  # the current layer's initializers, by our name

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def node(self, op: str, inputs: Sequence[str], outputs: Sequence[str] | None = None, **attrs: Any) -> str:
        outputs = list(outputs) if outputs is not None else [self.name(op.lower())]
        node = helper.make_node(op, list(inputs), outputs, name=self.name(op), **attrs)
        self.nodes.append(node)
        return outputs[0]

    def weight(self, layer: Layer, key: str, array: np.ndarray) -> str:
        """An initializer holding ``array`` in the export dtype, one per (layer, key): a layer
        called at two places of a graph shares it."""
        cache = (id(layer), key)
        if cache not in self._init_names:
            name = f"{layer.name}.{key}_{len(self._init_names)}"
            self.initializers[name] = numpy_helper.from_array(np.ascontiguousarray(array, dtype=self.dtype), name)
            self._init_names[cache] = name
        self.arrays[key] = self._init_names[cache]
        return self._init_names[cache]

    def const(self, array: Any, dtype: Any = None) -> str:
        """An unnamed constant initializer (shapes, axes, scalars of the formulas)."""
        value = np.asarray(array, dtype=self.dtype if dtype is None else dtype)
        name = self.name("const")
        self.initializers[name] = numpy_helper.from_array(value, name)
        return name

    def reduce_mean(self, x: str, axes: Sequence[int], keepdims: int = 1) -> str:
        if self.opset >= 18:
            return self.node("ReduceMean", [x, self.const(list(axes), np.int64)], keepdims=keepdims)
        return self.node("ReduceMean", [x], axes=list(axes), keepdims=keepdims)


def _built(layer: Layer, where: str) -> None:
    if not layer.built:
        raise ValueError(f"to_onnx: {where}: the layer is not built; build the model or run it on a batch first")


@TO_ONNX.register(Convolution)
def _conv(layer: Convolution, ex: _Exporter, xs: list[str]) -> str:
    inputs = [xs[0], ex.weight(layer, "W", layer.W)] + ([ex.weight(layer, "B", layer.B)] if layer.use_bias else [])
    return ex.node("Conv", inputs, kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
                   dilations=list(layer.dilation), group=int(layer.groups), pads=_pads(layer.geometry.padding))


@TO_ONNX.register(TransposedConvolution)
def _conv_transpose(layer: TransposedConvolution, ex: _Exporter, xs: list[str]) -> str:
    pads = layer.padding if len(layer.padding) == 4 else (layer.padding[0],) * 2 + (layer.padding[1],) * 2
    inputs = [xs[0], ex.weight(layer, "W", layer.W)] + ([ex.weight(layer, "B", layer.B)] if layer.use_bias else [])
    return ex.node("ConvTranspose", inputs, kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
                   dilations=list(layer.dilation), group=int(layer.groups), pads=_pads(pads),
                   output_padding=list(layer.output_padding))


@TO_ONNX.register(Linear)
def _linear(layer: Linear, ex: _Exporter, xs: list[str]) -> str:
    # Our W is (n_in + 1, n_out) with the bias in row 0: Gemm's B and C.
    weight, bias = ex.weight(layer, "weight", layer.W[1:]), ex.weight(layer, "bias", layer.W[0])
    return ex.node("Gemm", [xs[0], weight, bias])


@TO_ONNX.register(BatchNormalization)
def _batchnorm(layer: BatchNormalization, ex: _Exporter, xs: list[str]) -> str:
    names = [ex.weight(layer, k, getattr(layer, k)) for k in ("gamma", "beta", "running_mean", "running_var")]
    # ONNX's momentum weighs the *old* running value (torch's weighs the new batch).
    momentum = 0.9 if layer.momentum is None else 1.0 - layer.momentum
    return ex.node("BatchNormalization", [xs[0], *names], epsilon=float(layer.eps), momentum=float(momentum))


def _normalise_formula(ex: _Exporter, x: str, axes: Sequence[int], eps: float) -> str:
    mean = ex.reduce_mean(x, axes)
    centred = ex.node("Sub", [x, mean])
    var = ex.reduce_mean(ex.node("Mul", [centred, centred]), axes)
    std = ex.node("Sqrt", [ex.node("Add", [var, ex.const(eps)])])
    return ex.node("Div", [centred, std])


@TO_ONNX.register(LayerNormalization)
def _layernorm(layer: LayerNormalization, ex: _Exporter, xs: list[str]) -> str:
    axes, rank = tuple(layer.axes), len(layer.input_shape) + 1
    trailing = axes == tuple(range(axes[0], rank))
    if ex.opset >= 17 and trailing:
        return ex.node("LayerNormalization", [xs[0], ex.weight(layer, "gamma", layer.gamma),
                                              ex.weight(layer, "beta", layer.beta)],
                       axis=int(axes[0]), epsilon=float(layer.eps))
    shape = [1] * rank
    for a in axes:
        shape[a] = layer.input_shape[a - 1]
    y = _normalise_formula(ex, xs[0], axes, layer.eps)
    y = ex.node("Mul", [y, ex.weight(layer, "gamma", layer.gamma.reshape(shape))])
    return ex.node("Add", [y, ex.weight(layer, "beta", layer.beta.reshape(shape))])


@TO_ONNX.register(GroupNormalization)
def _groupnorm(layer: GroupNormalization, ex: _Exporter, xs: list[str]) -> str:
    if ex.opset >= 21:
        return ex.node("GroupNormalization", [xs[0], ex.weight(layer, "gamma", layer.gamma),
                                              ex.weight(layer, "beta", layer.beta)],
                       num_groups=int(layer.groups), epsilon=float(layer.eps))
    grouped = ex.node("Reshape", [xs[0], ex.const([0, layer.groups, -1], np.int64)])
    y = _normalise_formula(ex, grouped, [2], layer.eps)
    y = ex.node("Reshape", [y, ex.const([0, *layer.input_shape], np.int64)])
    shape = (layer.input_shape[0],) + (1,) * (len(layer.input_shape) - 1)
    y = ex.node("Mul", [y, ex.weight(layer, "gamma", layer.gamma.reshape(shape))])
    return ex.node("Add", [y, ex.weight(layer, "beta", layer.beta.reshape(shape))])


@TO_ONNX.register(MaxPooling)
def _maxpool(layer: MaxPooling, ex: _Exporter, xs: list[str]) -> str:
    return ex.node("MaxPool", [xs[0]], kernel_shape=list(layer.pool_size), strides=list(layer.stride),
                   pads=_pads(layer.geometry.padding))


@TO_ONNX.register(AveragePooling)
def _avgpool(layer: AveragePooling, ex: _Exporter, xs: list[str]) -> str:
    # count_include_pad is written always: ONNX's default (0) is not ours (True, as torch).
    return ex.node("AveragePool", [xs[0]], kernel_shape=list(layer.pool_size), strides=list(layer.stride),
                   pads=_pads(layer.geometry.padding), count_include_pad=int(layer.count_include_pad))


@TO_ONNX.register(GlobalAveragePooling)
def _global_avg(layer: GlobalAveragePooling, ex: _Exporter, xs: list[str]) -> str:
    return ex.reduce_mean(xs[0], list(range(2, len(layer.input_shape) + 1)), keepdims=0)


def _simple(op: str, **fixed: Any) -> Callable[[Any, _Exporter, list[str]], str]:
    def convert(layer: Any, ex: _Exporter, xs: list[str]) -> str:
        attrs = {k: (v(layer) if callable(v) else v) for k, v in fixed.items()}
        return ex.node(op, [xs[0]], **attrs)

    return convert


TO_ONNX.register(ReLU)(_simple("Relu"))
TO_ONNX.register(LeakyReLU)(_simple("LeakyRelu", alpha=lambda layer: float(layer.alpha)))
TO_ONNX.register(Sigmoid)(_simple("Sigmoid"))
TO_ONNX.register(Tanh)(_simple("Tanh"))
TO_ONNX.register(SoftMax)(_simple("Softmax", axis=-1))
TO_ONNX.register(LogSoftMax)(_simple("LogSoftmax", axis=lambda layer: int(layer.axis)))
TO_ONNX.register(ELU)(_simple("Elu", alpha=lambda layer: float(layer.alpha)))
TO_ONNX.register(Identity, Dropout)(_simple("Identity"))
TO_ONNX.register(Vectorization)(_simple("Flatten", axis=1))


@TO_ONNX.register(Softplus)
def _softplus(layer: Softplus, ex: _Exporter, xs: list[str]) -> str:
    # ONNX Softplus is log(1 + exp(x)): torch's threshold (linear above it) changes the value by
    # less than exp(-threshold), so it is left out.
    if layer.beta == 1.0:
        return ex.node("Softplus", [xs[0]])
    scaled = ex.node("Mul", [xs[0], ex.const(layer.beta)])
    return ex.node("Div", [ex.node("Softplus", [scaled]), ex.const(layer.beta)])


@TO_ONNX.register(GELU)
def _gelu(layer: GELU, ex: _Exporter, xs: list[str]) -> str:
    x = xs[0]
    if ex.opset >= 20:
        return ex.node("Gelu", [x], approximate=layer.approximate)
    half_x = ex.node("Mul", [x, ex.const(0.5)])
    if layer.approximate == "tanh":
        cube = ex.node("Mul", [x, ex.node("Mul", [x, x])])
        inner = ex.node("Add", [x, ex.node("Mul", [cube, ex.const(0.044715)])])
        t = ex.node("Tanh", [ex.node("Mul", [inner, ex.const(np.sqrt(2.0 / np.pi))])])
    else:
        t = ex.node("Erf", [ex.node("Div", [x, ex.const(np.sqrt(2.0))])])
    return ex.node("Mul", [half_x, ex.node("Add", [t, ex.const(1.0)])])


@TO_ONNX.register(SiLU)
def _silu(layer: SiLU, ex: _Exporter, xs: list[str]) -> str:
    return ex.node("Mul", [xs[0], ex.node("Sigmoid", [xs[0]])])


def _chain(op: str) -> Callable[[Any, _Exporter, list[str]], str]:
    def convert(layer: Any, ex: _Exporter, xs: list[str]) -> str:
        out = xs[0]
        for other in xs[1:]:
            out = ex.node(op, [out, other])
        return out

    return convert


TO_ONNX.register(Add)(_chain("Add"))
TO_ONNX.register(Multiply)(_chain("Mul"))


@TO_ONNX.register(Concatenate)
def _concat(layer: Concatenate, ex: _Exporter, xs: list[str]) -> str:
    return ex.node("Concat", xs, axis=int(layer.axis))


@TO_ONNX.register(Reshape)
def _reshape(layer: Reshape, ex: _Exporter, xs: list[str]) -> str:
    return ex.node("Reshape", [xs[0], ex.const([0, *layer.output_shape], np.int64)])


@TO_ONNX.register(UpSampling2D)
def _upsample(layer: UpSampling2D, ex: _Exporter, xs: list[str]) -> str:
    scales = ex.const([1.0, 1.0, *map(float, layer.size)], np.float32)
    if layer.interpolation == "nearest":
        attrs = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    else:
        attrs = {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"}
    return ex.node("Resize", [xs[0], "", scales], **attrs)


def _calls(model: Any) -> tuple[list[tuple[Layer, list[Any], Any]], Any, Any, tuple[int, ...]]:
    """``(layer, input keys, output key)`` per call, the input and output keys and the input shape."""
    if is_graph_model(model):
        calls = [(node.layer, [t.id for t in node.inputs], node.output.id) for node in model.nodes]
        return calls, model.inputs[0].id, model.outputs[0].id, tuple(model.input_shape)
    layers = model_layers(model)
    if not layers or not layers[0].built:
        raise ValueError("to_onnx: the model is not built; pass input_shape= or run it on a batch first")
    calls = [(layer, [i], i + 1) for i, layer in enumerate(layers)]
    return calls, 0, len(layers), tuple(layers[0].input_shape)


def to_onnx_model(model: Any, opset: int = DEFAULT_OPSET, dtype: Any = None) -> onnx.ModelProto:
    """``model`` (``Sequential``, graph ``Model``, a seed ``NeuralNetwork``) as an ``onnx.ModelProto``.

    Args:
        model: a built model.
        opset: the ONNX opset (13 to 21 are tested).
        dtype: ``"float32"`` / ``"float64"`` for the weights, input and output; default the
            model's. onnxruntime's CPU Conv has no float64 kernel: use float32 to serve there.

    Returns:
        The ``onnx.ModelProto`` (checked with ``onnx.checker``).

    Example:
        >>> model = Sequential([Linear(output_dim=3), ReLU()], input_shape=(4,), seed=0)
        >>> [node.op_type for node in to_onnx_model(model).graph.node]
        ['Gemm', 'Relu']
    """
    calls, input_key, output_key, input_shape = _calls(model)
    layers = [layer for layer, _, _ in calls]
    floating = [p.dtype for layer in layers for p in layer.parameters().values()]
    dtype = np.dtype(dtype if dtype is not None else (floating[0] if floating else np.float32))
    if dtype not in _ELEM:
        raise ValueError(f"to_onnx: dtype must be float32 or float64, got {dtype}")
    ex = _Exporter(opset, dtype)
    names: dict[Any, str] = {input_key: "input"}
    layer_index: dict[int, int] = {}
    for j, (layer, inputs, output) in enumerate(calls):
        index = layer_index.setdefault(id(layer), len(layer_index))
        where = f"layer {index} ({layer.name}, {type(layer).__name__})"
        _built(layer, where)
        convert = TO_ONNX.lookup(layer, where=f"{where}: ")
        first, ex.arrays = len(ex.nodes), {}
        result = convert(layer, ex, [names[k] for k in inputs])
        tag = {"layer": index, "call": j, "class": type(layer).__name__, "config": layer.get_config(), "arrays": ex.arrays}
        for node in ex.nodes[first:]:
            node.doc_string = json.dumps({TAG: tag}, sort_keys=True)
        names[output] = result
    out_name = names[output_key]
    if out_name == "input" or any(out_name == i for i in ex.initializers):
        out_name = ex.node("Identity", [out_name])
    # Name the graph's output "output".
    for node in ex.nodes:
        node.output[:] = ["output" if o == out_name else o for o in node.output]
        node.input[:] = ["output" if i == out_name else i for i in node.input]
    elem = _ELEM[dtype]
    output_shape = calls[-1][0].output_shape if not is_graph_model(model) else model.output_shape
    graph = helper.make_graph(
        ex.nodes, getattr(model, "name", "model") or "model",
        [helper.make_tensor_value_info("input", elem, ["batch", *input_shape])],
        [helper.make_tensor_value_info("output", elem, ["batch", *output_shape])],
        initializer=list(ex.initializers.values()),
    )
    opset_id = helper.make_opsetid("", int(opset))
    proto = helper.make_model(graph, opset_imports=[opset_id], producer_name="nn_from_scratch",
                              ir_version=helper.find_min_ir_version_for([opset_id], ignore_unknown=True))
    proto.doc_string = json.dumps({TAG: {"model": type(model).__name__}})
    return proto


def to_onnx(model: Any, path: str | os.PathLike, opset: int = DEFAULT_OPSET, dtype: Any = None) -> onnx.ModelProto:
    """Write ``model`` to ``path`` as ONNX (see :func:`to_onnx_model`); returns the ``ModelProto``.

    Args:
        model: a built ``Sequential``, graph ``Model`` or seed ``NeuralNetwork``.
        path: the file to write.
        opset: the ONNX opset (13 to 21 are tested).
        dtype: ``"float32"`` / ``"float64"`` for the weights, input and output; default the model's.

    Example:
        >>> to_onnx(model, "model.onnx", opset=17)                       # doctest: +SKIP
        >>> onnxruntime.InferenceSession("model.onnx").run(None, {"input": x})[0]   # doctest: +SKIP
    """
    proto = to_onnx_model(model, opset=opset, dtype=dtype)
    onnx.save(proto, os.fspath(path))
    return proto


# -- import -------------------------------------------------------------------------------------
class _Importer:
    def __init__(self, proto: onnx.ModelProto) -> None:
        self.proto = proto
        graph = proto.graph
        self.opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 13)
        self.consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant":
                self.consts[node.output[0]] = numpy_helper.to_array(
                    next(a.t for a in node.attribute if a.name == "value"))
        inputs = [i for i in graph.input if i.name not in self.consts]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise UnsupportedLayerError(f"from_onnx: one input and one output are supported, got {len(inputs)} and "
                                        f"{len(graph.output)}")
        self.input = inputs[0]
        self.dtype = onnx.helper.tensor_dtype_to_np_dtype(self.input.type.tensor_type.elem_type)

    def const(self, node: onnx.NodeProto, k: int) -> np.ndarray | None:
        return self.consts.get(node.input[k]) if k < len(node.input) and node.input[k] else None


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _where(node: onnx.NodeProto) -> str:
    return f"ONNX node {node.name or '(unnamed)'!r} ({node.op_type})"


def _from(*ops: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def add(fn: Callable[..., Any]) -> Callable[..., Any]:
        for op in ops:
            FROM_ONNX[op] = fn
        return fn

    return add


def _refuse(node: onnx.NodeProto, what: str) -> UnsupportedLayerError:
    return UnsupportedLayerError(f"from_onnx: {_where(node)}: {what}")


def _spatial_pads(node: onnx.NodeProto, a: dict[str, Any]) -> Any:
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("NOTSET", "VALID"):
        return _our_pads(a.get("pads", [0, 0, 0, 0])) if auto == "NOTSET" else 0
    if auto == "SAME_UPPER":
        return "same"
    raise _refuse(node, f"auto_pad={auto} is not supported")


@_from("Conv", "ConvTranspose")
def _conv_in(node: onnx.NodeProto, imp: _Importer, shapes: list[tuple[int, ...]]) -> list[Layer]:
    a = _attrs(node)
    W, B = imp.const(node, 1), imp.const(node, 2)
    if W is None:
        raise _refuse(node, "the weight must be an initializer")
    if len(W.shape) != 4:
        raise _refuse(node, f"only 2-D convolutions are supported, got a weight of shape {W.shape}")
    common = dict(kernel_size=tuple(W.shape[2:]), W=W, B=B, use_bias=B is not None, stride=tuple(a.get("strides", (1, 1))),
                  dilation=tuple(a.get("dilations", (1, 1))), groups=int(a.get("group", 1)), dtype=W.dtype)
    if node.op_type == "Conv":
        return [Convolution(None, output_layers=W.shape[0], padding=_spatial_pads(node, a), **common)]
    if "output_shape" in a:
        raise _refuse(node, "output_shape is not supported (give pads and output_padding)")
    pads = _spatial_pads(node, a)
    if pads == "same":
        raise _refuse(node, "auto_pad SAME is not supported for ConvTranspose")
    return [TransposedConvolution(None, output_layers=W.shape[1] * common["groups"], padding=pads if pads else (0, 0),
                                  output_padding=tuple(a.get("output_padding", (0, 0))), **common)]


@_from("Gemm")
def _gemm_in(node: onnx.NodeProto, imp: _Importer, shapes: list[tuple[int, ...]]) -> list[Layer]:
    a = _attrs(node)
    B, C = imp.const(node, 1), imp.const(node, 2)
    if B is None or a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
        raise _refuse(node, "only x @ W + b with constant W, alpha = beta = 1 and transA = 0 maps to Linear")
    weight = B.T if a.get("transB", 0) else B
    bias = np.zeros(weight.shape[1], dtype=weight.dtype) if C is None else np.broadcast_to(C, (weight.shape[1],))
    return [Linear(weight.shape[0], weight.shape[1], W=np.concatenate([bias[None], weight]).astype(weight.dtype),
                   dtype=weight.dtype)]


@_from("BatchNormalization")
def _bn_in(node: onnx.NodeProto, imp: _Importer, shapes: list[tuple[int, ...]]) -> list[Layer]:
    a = _attrs(node)
    arrays = [imp.const(node, k) for k in range(1, 5)]
    if any(v is None for v in arrays) or a.get("training_mode", 0):
        raise _refuse(node, "scale, bias, mean and var must be initializers, in inference mode")
    gamma, beta, mean, var = arrays
    layer = BatchNormalization(momentum=1.0 - float(a.get("momentum", 0.9)), eps=float(a.get("epsilon", 1e-5)),
                               gamma=gamma, beta=beta, dtype=gamma.dtype)
    layer.running_mean[...] = mean
    layer.running_var[...] = var
    return [layer]


@_from("LayerNormalization")
def _ln_in(node: onnx.NodeProto, imp: _Importer, shapes: list[tuple[int, ...]]) -> list[Layer]:
    a = _attrs(node)
    rank = len(shapes[0]) + 1
    axis = int(a.get("axis", -1)) % rank
    scale, bias = imp.const(node, 1), imp.const(node, 2)
    if scale is None or axis == 0 or len(node.output) > 1 and any(node.output[1:]):
        raise _refuse(node, "needs a constant scale, per-sample axes and one output")
    shape = tuple(shapes[0][axis - 1:])
    gamma = np.broadcast_to(scale, shape).astype(scale.dtype)
    beta = np.zeros(shape, scale.dtype) if bias is None else np.broadcast_to(bias, shape).astype(scale.dtype)
    return [LayerNormalization(shape, eps=float(a.get("epsilon", 1e-5)), gamma=gamma, beta=beta, dtype=scale.dtype)]


@_from("GroupNormalization")
def _gn_in(node: onnx.NodeProto, imp: _Importer, shapes: list[tuple[int, ...]]) -> list[Layer]:
    a = _attrs(node)
    scale, bias = imp.const(node, 1), imp.const(node, 2)
    groups, channels = int(a["num_groups"]), shapes[0][0]
    if scale is None or bias is None:
        raise _refuse(node, "scale and bias must be initializers")
    if scale.size != channels:  # opset 18-20: one scale per group
        scale, bias = np.repeat(scale, channels // groups), np.repeat(bias, channels // groups)
    return [GroupNormalization(groups, eps=float(a.get("epsilon", 1e-5)), gamma=scale, beta=bias, dtype=scale.dtype)]


@_from("MaxPool", "AveragePool")
def _pool_in(node: onnx.NodeProto, imp: _Importer, shapes: list[tuple[int, ...]]) -> list[Layer]:
    a = _attrs(node)
    if a.get("ceil_mode", 0) or any(d != 1 for d in a.get("dilations", (1, 1))) or len(node.output) > 1:
        raise _refuse(node, "ceil_mode, dilations and the indices output are not supported")
    kernel = tuple(a["kernel_shape"])
    if len(kernel) != 2:
        raise _refuse(node, "only 2-D pooling is supported")
    stride, padding = tuple(a.get("strides", (1, 1))), _spatial_pads(node, a)
    if node.op_type == "MaxPool":
        return [MaxPooling(kernel, stride, padding=padding)]
    # ONNX's count_include_pad defaults to 0 (ours to True, as torch).
    return [AveragePooling(kernel, stride, padding=padding, count_include_pad=bool(a.get("count_include_pad", 0)))]


@_from("GlobalAveragePool")
def _gap_in(node: onnx.NodeProto, imp: _Importer, shapes: list[tuple[int, ...]]) -> list[Layer]:
    channels, rank = shapes[0][0], len(shapes[0])
    return [GlobalAveragePooling(), Reshape((channels,) + (1,) * (rank - 1))]


@_from("ReduceMean")
def _reduce_mean_in(node: onnx.NodeProto, imp: _Importer, shapes: list[tuple[int, ...]]) -> list[Layer]:
    a = _attrs(node)
    axes = a.get("axes")
    if axes is None and len(node.input) > 1:
        axes = imp.const(node, 1)
    rank = len(shapes[0]) + 1
    axes = sorted(int(x) % rank for x in (axes if axes is not None else []))
    if axes != list(range(2, rank)) or rank < 3:
        raise _refuse(node, f"only a mean over all spatial axes maps (GlobalAveragePooling), got axes {axes}")
    layers: list[Layer] = [GlobalAveragePooling()]
    if a.get("keepdims", 1):
        layers.append(Reshape((shapes[0][0],) + (1,) * (rank - 2)))
    return layers


def _node_in(factory: Callable[[dict[str, Any], onnx.NodeProto, list[tuple[int, ...]]], Layer]) -> Callable[..., list[Layer]]:
    return lambda node, imp, shapes: [factory(_attrs(node), node, shapes)]


def _softmax_in(a: dict[str, Any], node: onnx.NodeProto, shapes: list[tuple[int, ...]]) -> Layer:
    axis = int(a.get("axis", -1))
    if axis % (len(shapes[0]) + 1) != len(shapes[0]):
        raise _refuse(node, f"SoftMax runs over the last axis only, got axis {axis}")
    return SoftMax()


def _dropout_in(a: dict[str, Any], node: onnx.NodeProto, shapes: list[tuple[int, ...]]) -> Layer:
    return Dropout(float(a.get("ratio", 0.5)))


FROM_ONNX["Relu"] = _node_in(lambda a, n, s: ReLU())
FROM_ONNX["LeakyRelu"] = _node_in(lambda a, n, s: LeakyReLU(alpha=float(a.get("alpha", 0.01))))
FROM_ONNX["Sigmoid"] = _node_in(lambda a, n, s: Sigmoid())
FROM_ONNX["Tanh"] = _node_in(lambda a, n, s: Tanh())
FROM_ONNX["Softmax"] = _node_in(_softmax_in)
FROM_ONNX["LogSoftmax"] = _node_in(lambda a, n, s: LogSoftMax(axis=int(a.get("axis", -1))))
FROM_ONNX["Elu"] = _node_in(lambda a, n, s: ELU(alpha=float(a.get("alpha", 1.0))))
FROM_ONNX["Softplus"] = _node_in(lambda a, n, s: Softplus())
FROM_ONNX["Gelu"] = _node_in(lambda a, n, s: GELU(approximate=(a.get("approximate", b"none").decode()
                                                               if isinstance(a.get("approximate"), bytes)
                                                               else a.get("approximate", "none"))))
FROM_ONNX["Identity"] = _node_in(lambda a, n, s: Identity())
FROM_ONNX["Dropout"] = _node_in(_dropout_in)
FROM_ONNX["Add"] = _node_in(lambda a, n, s: Add())
FROM_ONNX["Mul"] = _node_in(lambda a, n, s: Multiply())
FROM_ONNX["Concat"] = _node_in(lambda a, n, s: Concatenate(axis=int(a["axis"]) % (len(s[0]) + 1)))


@_from("Flatten")
def _flatten_in(node: onnx.NodeProto, imp: _Importer, shapes: list[tuple[int, ...]]) -> list[Layer]:
    if int(_attrs(node).get("axis", 1)) != 1:
        raise _refuse(node, "only axis=1 (keep the batch axis) maps to Vectorization")
    return [Vectorization()]


@_from("Reshape")
def _reshape_in(node: onnx.NodeProto, imp: _Importer, shapes: list[tuple[int, ...]]) -> list[Layer]:
    shape = imp.const(node, 1)
    if shape is None or _attrs(node).get("allowzero", 0):
        raise _refuse(node, "the target shape must be a constant (allowzero=0)")
    shape = [int(s) for s in shape]
    if not shape or shape[0] not in (0, -1) or (shape[0] == -1 and -1 in shape[1:]):
        raise _refuse(node, f"the batch axis must stay first (0 or -1), got shape {shape}")
    per_sample = [shapes[0][i] if s == 0 and i < len(shapes[0]) else s for i, s in enumerate(shape[1:])]
    return [Reshape(tuple(per_sample))]


@_from("Resize", "Upsample")
def _resize_in(node: onnx.NodeProto, imp: _Importer, shapes: list[tuple[int, ...]]) -> list[Layer]:
    a = _attrs(node)
    decode = lambda v: v.decode() if isinstance(v, bytes) else v  # noqa: E731
    scales = imp.const(node, 2 if node.op_type == "Resize" else 1)
    if (scales is None or scales.size == 0) and len(node.input) > 3:
        sizes = imp.const(node, 3)
        if sizes is not None:
            scales = np.asarray(sizes, np.float64) / np.asarray((1, 1, *shapes[0][1:]), np.float64)
    if scales is None or len(scales) != 4 or tuple(scales[:2]) != (1, 1) or any(s != int(s) or s < 1 for s in scales[2:]):
        raise _refuse(node, f"only integer scale factors (1, 1, fh, fw) map to UpSampling2D, got {scales}")
    size = (int(scales[2]), int(scales[3]))
    mode = decode(a.get("mode", "nearest"))
    transform = decode(a.get("coordinate_transformation_mode", "half_pixel"))
    if mode == "nearest" and (transform == "asymmetric" and decode(a.get("nearest_mode", "round_prefer_floor")) == "floor"
                              or node.op_type == "Upsample"):
        return [UpSampling2D(size, "nearest")]
    if mode in ("linear", "bilinear") and transform in ("pytorch_half_pixel", "half_pixel"):
        return [UpSampling2D(size, "bilinear")]
    raise _refuse(node, f"mode={mode!r} with coordinate_transformation_mode={transform!r} has no layer")


def _tag(node: onnx.NodeProto) -> dict[str, Any] | None:
    if not node.doc_string:
        return None
    try:
        return json.loads(node.doc_string).get(TAG)
    except (ValueError, AttributeError):
        return None


def _layer_registry() -> dict[str, type]:
    from .. import neurons, nodes

    return {name: getattr(module, name) for module in (nodes, neurons) for name in module.__all__}


def from_onnx_model(proto: onnx.ModelProto, loss: Any = None, optimizer: Any = None) -> Any:
    """An ``onnx.ModelProto`` as our model: a ``Sequential`` when the graph is a chain of layers
    with one input each, else a graph ``Model``. See :func:`from_onnx`.

    Args:
        proto: the ``onnx.ModelProto``.
        loss: our loss to attach, or None.
        optimizer: our optimizer to attach, or None.

    Example:
        >>> model = Sequential([Linear(output_dim=3), ReLU()], input_shape=(4,), seed=0)
        >>> type(from_onnx_model(to_onnx_model(model))).__name__
        'Sequential'
    """
    from ..graph import Input, Model
    from ..model import Sequential

    imp = _Importer(proto)
    dims = imp.input.type.tensor_type.shape.dim
    input_shape = tuple(int(d.dim_value) for d in dims[1:])
    if any(s < 1 for s in input_shape):
        raise UnsupportedLayerError(f"from_onnx: the input's per-sample shape must be known, got {input_shape}")
    x = Input(shape=input_shape, name="input")
    values: dict[str, Any] = {imp.input.name: x}
    registry = _layer_registry()
    shared: dict[int, Layer] = {}
    chain: list[Layer] = []
    is_chain = True
    last = x
    nodes = [n for n in proto.graph.node if n.op_type != "Constant"]
    i = 0
    while i < len(nodes):
        node = nodes[i]
        tag = _tag(node)
        group = [node]
        if tag is not None and "call" in tag:
            while i + len(group) < len(nodes) and (_tag(nodes[i + len(group)]) or {}).get("call") == tag["call"]:
                group.append(nodes[i + len(group)])
        produced = {o for n in group for o in n.output}
        data_inputs = []
        for n in group:
            for name in n.input:
                if name and name not in imp.consts and name not in produced and name not in data_inputs:
                    data_inputs.append(name)
        missing = [name for name in data_inputs if name not in values]
        if missing:
            raise UnsupportedLayerError(f"from_onnx: {_where(node)} reads {missing}, which no supported node computes")
        args = [values[name] for name in data_inputs]
        shapes = [tuple(t.shape) for t in args]
        if tag is not None and tag.get("layer") in shared:
            layers = [shared[tag["layer"]]]
        elif tag is not None and tag.get("class") in registry:
            layers = [_rebuild(tag, group, imp, registry, shapes, args)]
        elif tag is None and _is_gelu_formula(nodes[i : i + 5], imp):
            group = nodes[i : i + 5]  # torch's GELU below opset 20: x * (erf(x / sqrt 2) + 1) * 0.5
            layers = [GELU()]
        else:
            if len(group) > 1 or node.op_type not in FROM_ONNX:
                supported = ", ".join(sorted(FROM_ONNX))
                raise UnsupportedLayerError(f"from_onnx: no mapping for {_where(node)}; supported: {supported}")
            layers = FROM_ONNX[node.op_type](node, imp, shapes)
        if tag is not None and "layer" in tag:
            shared.setdefault(tag["layer"], layers[0])
        out: Any = args if layers[0].n_inputs is None else args[0]
        if len(args) != 1 or args[0] is not last or layers[0].n_inputs is None:
            is_chain = False
        for layer in layers:
            out = layer(out)
            if any(layer is other for other in chain):
                is_chain = False
            chain.append(layer)
        last = out
        values[group[-1].output[0]] = out
        i += len(group)
    output = values.get(proto.graph.output[0].name)
    if output is None:
        raise UnsupportedLayerError(f"from_onnx: the output {proto.graph.output[0].name!r} is not computed by the graph")
    exported_as = {}
    try:
        exported_as = json.loads(proto.doc_string).get(TAG) or {} if proto.doc_string else {}
    except (ValueError, AttributeError):
        pass
    if is_chain and output is last and chain and exported_as.get("model") != "Model":
        return Sequential(chain, loss=loss, optimizer=optimizer, input_shape=input_shape)
    return Model(x, output, loss=loss, optimizer=optimizer)


def _is_gelu_formula(nodes: list[onnx.NodeProto], imp: _Importer) -> bool:
    """``Div(x, sqrt 2) -> Erf -> Add(., 1) -> Mul(x, .) -> Mul(., 0.5)``, what ``torch.onnx.export``
    writes for ``nn.GELU()`` below opset 20 (either operand order of the Add and the Muls)."""
    if [n.op_type for n in nodes] != ["Div", "Erf", "Add", "Mul", "Mul"]:
        return False
    div, erf, add, mul, half = nodes

    def scalar(node: onnx.NodeProto, other: str) -> float | None:
        names = [n for n in node.input if n != other]
        value = imp.consts.get(names[0]) if len(names) == 1 else None
        return float(value) if value is not None and value.size == 1 else None

    x = div.input[0]
    sqrt2, one, h = scalar(div, x), scalar(add, erf.output[0]), scalar(half, mul.output[0])
    return (erf.input[0] == div.output[0] and sorted(mul.input) == sorted([x, add.output[0]])
            and sqrt2 is not None and abs(sqrt2 - 2 ** 0.5) < 1e-6 and one == 1.0 and h == 0.5)


def _rebuild(tag: dict[str, Any], group: list[onnx.NodeProto], imp: _Importer, registry: dict[str, type],
             shapes: list[tuple[int, ...]], args: list[Any]) -> Layer:
    """A layer written by :func:`to_onnx`: hyper-parameters from its tag, weights from the initializers."""
    cls = registry[tag["class"]]
    config = dict(tag.get("config") or {})
    layer = cls(**config)
    layer.build(shapes if layer.n_inputs is None else shapes[0])
    targets = {**layer.parameters(), **layer.buffers()}
    if not targets:
        return layer
    if len(group) == 1 and group[0].op_type in FROM_ONNX and not isinstance(layer, (LayerNormalization, GroupNormalization)):
        # One operator: its importer reads the weights (the same code path as a foreign file).
        twin = FROM_ONNX[group[0].op_type](group[0], imp, shapes)[0]
        twin.build(shapes[0])
        sources = {**twin.parameters(), **twin.buffers()}
    else:
        # Several operators (a formula): the initializers the tag names.
        sources = {key: imp.consts[name] for key, name in (tag.get("arrays") or {}).items() if name in imp.consts}
    for key, target in targets.items():
        if key not in sources:
            if key == "num_batches_tracked":
                continue
            raise UnsupportedLayerError(f"from_onnx: {tag['class']} {config.get('name')}: no values for {key}")
        target[...] = np.asarray(sources[key]).reshape(target.shape)
    return layer


def from_onnx(path: str | os.PathLike | onnx.ModelProto, loss: Any = None, optimizer: Any = None) -> Any:
    """Load an ONNX file (or ``ModelProto``) as our model; see the module docstring for the operators.

    Args:
        path: an ONNX file, or an ``onnx.ModelProto``.
        loss: our loss to attach, or None.
        optimizer: our optimizer to attach, or None.

    Returns:
        Our ``Sequential`` for a chain of layers, else a graph ``Model``.

    Example:
        >>> model = from_onnx("model.onnx")           # doctest: +SKIP
        >>> model.predict(x)                           # doctest: +SKIP
    """
    proto = path if isinstance(path, onnx.ModelProto) else onnx.load(os.fspath(path))
    return from_onnx_model(proto, loss=loss, optimizer=optimizer)
