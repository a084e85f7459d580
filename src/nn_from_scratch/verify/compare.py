"""``compare``: one forward and backward pass of our model and of its PyTorch or Keras twin,
compared layer by layer.

The twin is built by :mod:`nn_from_scratch.interop` from the model's current weights, cast to
the requested dtype, with the same loss. Our model runs one forward and backward pass on the
batch, recording every layer's input, output, ``dL/dx`` and parameter gradients. The twin runs
one forward and backward pass too, in one of two modes:

* ``mode="local"`` (default) -- each twin layer is fed *our* input of that layer, and its
  backward pass *our* ``dL/dy`` (``retain_grad``-style leaves, one per layer). Every row of the
  report then checks one layer on its own: no error is carried from one layer to the next, so a
  wrong layer is the only failing row, ties and kinks (two equal maxima in a pooling window, a
  ReLU input at 0) are resolved on identical numbers, and badly conditioned layers (batch norm
  on a small batch) do not magnify the rounding of the layers before them.
* ``mode="end_to_end"`` -- the twin runs as a whole on ``x`` (per-layer outputs and input
  gradients read with ``retain_grad``), as the seed notebook compared with TensorFlow. This
  also shows how rounding differences grow through the model, but at exact ties (a max pool
  over a flat MNIST background after batch norm) the two frameworks may route a gradient to
  different, equally valid, elements, and in float32 a batch norm on a small batch can amplify
  harmless rounding past the tolerance; use float64 and read such rows with that in mind.

Per layer the report gives the error of the layer's output, of ``dL/dx`` (the gradient w.r.t.
the layer's input) and of every parameter gradient, as

    max_abs = max |ours - reference|        max_rel = max_abs / max |reference|

(relative to the largest reference value, so that entries near zero do not blow it up). The
gradients of a layer's parameters share one denominator, the largest reference value among them:
a gradient that is zero in exact arithmetic -- the bias of a convolution followed by batch norm --
comes out as rounding noise on both sides, and noise divided by noise is not a divergence.

Default tolerances on ``max_rel`` (``DEFAULT_TOLERANCES``):

* float64 -- ``1e-10``. Unit roundoff is 1.1e-16; a sum of ``K`` terms computed in two
  different orders differs by about ``sqrt(K)`` to ``K`` ulps, so for the ``K`` <= 1e4-1e5
  reductions of a small CNN honest differences stay below ~1e-12 (measured: ~1e-15). Any real
  bug (an index off by one, a flipped kernel, a missing term) is O(1e-3..1).
* float32 -- ``1e-5``. Unit roundoff is 6e-8; the same argument gives a few 1e-7 typically and
  ~1e-6 for the longest reductions (a conv weight gradient sums over batch x pixels; measured
  on the seed CNN: 1.4e-6), under the tolerance, while any bug is far above it. One layer is
  ill-conditioned in float32 by nature: batch norm on a feature whose batch standard deviation
  ``s`` is small next to its values ``x`` rounds to ~``6e-8 * |x| / s`` relative in *every*
  framework, which passes 1e-5 once ``|x| / s`` nears 100 (small batches make that common).
  Check such models in float64.

``first_divergence``: in local mode, the first failing row (each row is independent). End to
end, a wrong *forward* corrupts the outputs of its layer and of every later one, and a wrong
*backward* corrupts ``dL/dx`` of its layer and every gradient of the layers before it (backprop
runs in reverse); so it is the first layer, in forward order, whose output fails; if all
outputs agree, the loss row if it fails, else the *last* layer whose ``dL/dx`` or a parameter
gradient fails -- the first failure in backward order. Either way it is the layer where the
error enters, not a later victim.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from ..interfaces import Layer, Neuron
from ..interop._common import is_graph_model, layer_label, model_layers, model_loss
from ..losses import Loss

DEFAULT_TOLERANCES: dict[np.dtype, float] = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5}


def default_tolerance(dtype: Any) -> float:
    """The relative tolerance :func:`compare` uses by default for ``dtype``.

    Args:
        dtype: ``float32`` (``1e-5``) or ``float64`` (``1e-10``).

    Returns:
        The tolerance.

    Raises:
        ValueError: any other dtype.

    Example:
        >>> default_tolerance(np.float32), default_tolerance("float64")
        (1e-05, 1e-10)
    """
    dtype = np.dtype(dtype)
    if dtype not in DEFAULT_TOLERANCES:
        raise ValueError(f"compare: dtype must be float32 or float64, got {dtype}")
    return DEFAULT_TOLERANCES[dtype]


@dataclass(frozen=True)
class ErrorStat:
    """``max |ours - ref|`` and that divided by ``max |ref|`` (0 when both are all zeros).

    Build one with :meth:`ErrorStat.of`.

    Args:
        max_abs: ``max |ours - ref|`` over the tensor.
        max_rel: ``max_abs / max |ref|``.

    Example:
        >>> stat = ErrorStat.of(np.array([1.0, 2.0]), np.array([1.0, 2.5]))
        >>> stat, stat.ok(1e-5)
        (ErrorStat(max_abs=0.5, max_rel=0.2), False)
    """

    max_abs: float
    max_rel: float

    @classmethod
    def of(cls, ours: np.ndarray, ref: np.ndarray, scale: float | None = None) -> "ErrorStat":
        """``scale`` replaces ``max |ref|`` as the denominator when given (see ``compare``)."""
        ours = np.asarray(ours, dtype=np.float64)
        ref = np.asarray(ref, dtype=np.float64).reshape(ours.shape)
        if ours.size == 0:
            return cls(0.0, 0.0)
        if not (np.all(np.isfinite(ours)) and np.all(np.isfinite(ref))):
            same = np.array_equal(ours, ref, equal_nan=True)
            return cls(0.0 if same else float("inf"), 0.0 if same else float("inf"))
        max_abs = float(np.max(np.abs(ours - ref)))
        scale = float(np.max(np.abs(ref))) if scale is None else float(scale)
        max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
        return cls(max_abs, max_rel)

    def ok(self, tol: float) -> bool:
        return self.max_rel <= tol


@dataclass
class LayerComparison:
    """One row of the report: one layer (or the loss, ``index == len(layers)``).

    Args:
        index: the layer's position (``len(layers)`` for the loss).
        name: the layer's label.
        layer: the layer itself (``None`` for the loss).
        output: the error of the layer's output.
        input_grad: the error of ``dL/dx`` (``None`` when not computed).
        param_grads: parameter name -> error of its gradient.
        input_grads: for a merge node of a graph model, the error of each input's ``dL/dx``.

    Example:
        >>> row = LayerComparison(0, "Linear", None, output=ErrorStat(0.0, 0.0), input_grad=ErrorStat(2e-11, 1e-11),
        ...                       param_grads={"W": ErrorStat(1e-6, 1e-6)})
        >>> row.label, row.forward_ok(1e-10), row.backward_ok(1e-10)
        ('0 Linear', True, False)
    """

    index: int
    name: str
    layer: Any
    output: ErrorStat
    input_grad: ErrorStat | None
    param_grads: dict[str, ErrorStat] = field(default_factory=dict)
    # A merge node of a graph model: dL/dx of each of its inputs (``input_grad`` is the worst of them).
    input_grads: list[ErrorStat] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.index} {self.name}"

    def forward_ok(self, tol: float) -> bool:
        return self.output.ok(tol)

    def backward_ok(self, tol: float) -> bool:
        grads = ([self.input_grad] if self.input_grad is not None else []) + list(self.param_grads.values())
        return all(g.ok(tol) for g in grads)

    @property
    def max_rel(self) -> float:
        stats = [self.output, *([self.input_grad] if self.input_grad else []), *self.param_grads.values()]
        return max(s.max_rel for s in stats)

    def __repr__(self) -> str:
        return f"LayerComparison({self.label}, max_rel={self.max_rel:.3g})"


@dataclass
class ComparisonReport:
    """What :func:`compare` found. ``str(report)`` is a table; ``report.ok`` the verdict.

    Args:
        reference: ``"torch"`` or ``"keras"``.
        dtype: the dtype both sides ran in.
        tol: the relative tolerance a tensor must meet.
        rows: one :class:`LayerComparison` per layer, then one for the loss.
        loss_ours: our loss value.
        loss_reference: the reference's loss value.
        notes: extra lines printed under the table.
        mode: ``"local"`` or ``"end_to_end"`` (see the module docstring).

    Example:
        >>> row = LayerComparison(0, "Linear", None, output=ErrorStat(1e-12, 1e-12), input_grad=ErrorStat(0.0, 0.0))
        >>> report = ComparisonReport("torch", np.dtype(np.float64), 1e-10, [row], loss_ours=0.5, loss_reference=0.5)
        >>> report.ok, report.max_rel_error
        (True, 1e-12)
    """

    reference: str
    dtype: np.dtype
    tol: float
    rows: list[LayerComparison]
    loss_ours: float
    loss_reference: float
    notes: list[str] = field(default_factory=list)
    mode: str = "local"

    @property
    def first_divergence(self) -> LayerComparison | None:
        """Where the error enters (see the module docstring), or ``None``."""
        if self.mode == "local":  # every row is checked on its own inputs: the first failing one
            return next((row for row in self.rows if not (row.forward_ok(self.tol) and row.backward_ok(self.tol))), None)
        for row in self.rows:
            if not row.forward_ok(self.tol):
                return row
        for row in reversed(self.rows):
            if not row.backward_ok(self.tol):
                return row
        return None

    @property
    def ok(self) -> bool:
        return self.first_divergence is None

    @property
    def max_rel_error(self) -> float:
        """The largest relative error anywhere in the report."""
        return max((row.max_rel for row in self.rows), default=0.0)

    def __str__(self) -> str:
        def cell(stat: ErrorStat | None) -> str:
            if stat is None:
                return "-"
            mark = " !" if not stat.ok(self.tol) else ""
            return f"{stat.max_rel:.2e}{mark}"

        head = ["#", "layer", "output", "dL/dx", "parameter grads"]
        body = []
        for row in self.rows:
            params = ", ".join(f"{k} {cell(v)}" for k, v in row.param_grads.items()) or "-"
            dx = ", ".join(cell(g) for g in row.input_grads) if row.input_grads else cell(row.input_grad)
            body.append([str(row.index), row.name, cell(row.output), dx, params])
        widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines = [
            f"compare vs {self.reference}, {self.dtype.name}, {self.mode.replace('_', ' ')}: max relative error per tensor "
            f"(max|ours - ref| / max|ref|), tolerance {self.tol:g}",
            fmt.format(*head),
            fmt.format(*("-" * w for w in widths)),
            *(fmt.format(*r).rstrip() for r in body),
            f"loss: ours {self.loss_ours:.10g}, {self.reference} {self.loss_reference:.10g}",
        ]
        lines += [f"note: {n}" for n in self.notes]
        div = self.first_divergence
        if div is None:
            lines.append(f"OK: every tensor agrees within {self.tol:g} (largest relative error {self.max_rel_error:.2e})")
        else:
            where = "output" if not div.forward_ok(self.tol) else "backward pass"
            lines.append(f"DIVERGES: first divergence at {div.label} ({where}); '!' marks errors above {self.tol:g}")
        return "\n".join(lines)

    __repr__ = __str__


# -- running our model in another dtype without changing it ---------------------------------
@contextlib.contextmanager
def as_dtype(layers: Sequence[Layer], dtype: Any) -> Iterator[None]:
    """Run ``layers`` in ``dtype`` inside the block; restore weights, buffers, grads and modes after.

    Parameters, gradients and floating buffers are replaced by cast copies (the originals are
    untouched, and put back, so optimizer state keyed by the arrays stays valid).

    Args:
        layers: the layers to cast (neurons' parameters, gradients and floating buffers).
        dtype: ``float32`` or ``float64``.

    Example:
        >>> from nn_from_scratch.neurons import Linear
        >>> layer = Linear(input_dim=2, output_dim=1)
        >>> with as_dtype([layer], np.float64):
        ...     print(layer.W.dtype)
        float64
        >>> layer.W.dtype
        dtype('float32')
    """
    dtype = np.dtype(dtype)
    saved = []
    for layer in layers:
        state: dict[str, Any] = {"training": layer.training}
        if isinstance(layer, Neuron):
            state["dtype"] = layer.dtype
            names = list(layer.parameters()) + [f"_{k}_pd" for k in layer.parameters()] + [
                k for k, v in layer.buffers().items() if np.asarray(v).dtype.kind == "f"
            ]
            state["attrs"] = {k: getattr(layer, k, None) for k in names}
            layer.dtype = dtype
            for k, p in layer.parameters().items():
                setattr(layer, k, np.array(p, dtype=dtype))
            layer.zero_grad()
            for k, v in layer.buffers().items():
                if np.asarray(v).dtype.kind == "f" and hasattr(layer, k):
                    setattr(layer, k, np.array(v, dtype=dtype))
            for k, v in layer.buffers().items():
                if np.asarray(v).dtype.kind != "f" and hasattr(layer, k):
                    state.setdefault("int_buffers", {})[k] = np.array(v, copy=True)
        saved.append(state)
    try:
        yield
    finally:
        for layer, state in zip(layers, saved):
            layer.training = state["training"]
            if "dtype" in state:
                layer.dtype = state["dtype"]
                for k, v in state["attrs"].items():
                    setattr(layer, k, v)
                for k, v in state.get("int_buffers", {}).items():
                    getattr(layer, k)[...] = v


def _stochastic(layer: Layer) -> bool:
    """Layers whose training-mode output is random (dropout): compared in inference mode."""
    from ..interop._common import STOCHASTIC_LAYERS

    return isinstance(layer, tuple(STOCHASTIC_LAYERS)) and getattr(layer, "rate", 1.0) != 0.0


@dataclass
class _Pass:
    """One side's forward and backward: per-layer outputs, input grads and parameter grads."""

    outputs: list[np.ndarray]
    input_grads: list[np.ndarray]
    param_grads: list[dict[str, np.ndarray]]
    loss: float
    loss_grad: np.ndarray


def _our_pass(layers: list[Layer], loss: Loss, x: np.ndarray, y: Any, modes: list[bool]) -> _Pass:
    h = x
    outputs = []
    for layer, mode in zip(layers, modes):
        layer.training = mode
        h = layer.forward(h)
        outputs.append(np.array(h, copy=True))
    value = float(loss.forward(h, y))
    g = np.asarray(loss.backward())
    loss_grad = np.array(g, copy=True)
    input_grads: list[np.ndarray] = [None] * len(layers)  # type: ignore[list-item]
    for layer in layers:
        layer.zero_grad()  # gradients accumulate: start from none
    for i in reversed(range(len(layers))):
        g = layers[i].backward(g)
        input_grads[i] = np.array(g, copy=True)
    param_grads = [{k: np.array(v, copy=True) for k, v in layer.gradients().items()} for layer in layers]
    return _Pass(outputs, input_grads, param_grads, value, loss_grad)


@dataclass
class _Feed:
    """What the reference is fed. End to end: only ``x``. Local: each layer's input and the
    gradient w.r.t. its output, as our pass computed them."""

    x: np.ndarray
    local: bool
    ours: _Pass | None = None

    def layer_input(self, i: int) -> np.ndarray:
        return self.x if i == 0 else self.ours.outputs[i - 1]

    def output_grad(self, i: int) -> np.ndarray:
        n = len(self.ours.outputs)
        return self.ours.input_grads[i + 1] if i + 1 < n else self.ours.loss_grad


def _leaf(torch: Any, a: np.ndarray) -> Any:
    return torch.from_numpy(np.array(a, copy=True)).requires_grad_(True)


def _torch_pass(layers: list[Layer], loss: Loss, feed: _Feed, y: Any, modes: list[bool]) -> _Pass:
    from ..interop import _backend

    interop_torch = _backend("torch")
    torch = interop_torch.torch

    twins = interop_torch.torch_twins(layers)
    h = _leaf(torch, feed.x)
    inputs, outputs = [], []
    for i, (twin, mode) in enumerate(zip(twins, modes)):
        if feed.local and i > 0:
            h = _leaf(torch, feed.layer_input(i).reshape(tuple(h.shape)))
        inputs.append(h)
        for module in twin.modules:
            module.train(mode)
            h = module(h)
        if not h.is_leaf:
            h.retain_grad()
        outputs.append(h)
        if feed.local:
            h.backward(torch.from_numpy(np.array(feed.output_grad(i), copy=True)).reshape(h.shape))
    if feed.local:
        h = _leaf(torch, feed.ours.outputs[-1]) if layers else h
    value = interop_torch.torch_loss(loss, h, y)
    value.backward()

    def grad(t: Any) -> np.ndarray:
        return np.zeros(tuple(t.shape), dtype=_np_dtype(t)) if t.grad is None else t.grad.detach().numpy().copy()

    return _Pass(
        outputs=[o.detach().numpy().copy() for o in outputs],
        input_grads=[grad(t) for t in inputs],
        param_grads=[twin.read(grad) for twin in twins],
        loss=float(value.detach()),
        loss_grad=grad(h),
    )


def _np_dtype(t: Any) -> np.dtype:
    import torch

    return torch.empty(0, dtype=t.dtype).numpy().dtype


@contextlib.contextmanager
def _keras_conv_backward_guard() -> Iterator[None]:
    """Turn a known torch failure under Keras into a message that says what to do instead."""
    try:
        yield
    except RuntimeError as err:
        if "grad_weight must be contiguous" not in str(err):
            raise
        raise RuntimeError(
            "compare(reference='keras'): torch cannot backpropagate this Keras Conv2D on the CPU: a float64 "
            "Conv2D with a single filter on channels-last tensors makes torch's slow_conv2d fail "
            f"({err}). Compare it with reference='torch', or in float32."
        ) from err


def _keras_pass(layers: list[Layer], loss: Loss, feed: _Feed, y: Any, modes: list[bool]) -> _Pass:
    from ..interop import _backend

    kinterop = _backend("keras")
    keras = kinterop.keras
    if keras.backend.backend() != "torch":
        raise RuntimeError(
            f"compare(reference='keras') runs Keras on its torch backend; this Keras uses {keras.backend.backend()!r}. "
            "Set KERAS_BACKEND=torch before keras is first imported."
        )
    import torch

    x = feed.x
    twins, layout, _ = kinterop.keras_twins(layers, tuple(x.shape[1:]), dtype=x.dtype)
    dtype = np.dtype(x.dtype).name
    # Build the layers (Keras creates weights on first call) and load our weights.
    keras.Sequential([keras.Input(shape=layout.twin_shape(tuple(x.shape[1:])), dtype=dtype)]
                     + [k for twin in twins for k in twin.layers])
    for twin in twins:
        twin.load()

    with kinterop.float64_arithmetic():
        h = _leaf(torch, layout.to_twin(x))
        inputs, in_layouts, outputs = [], [], []
        for i, (twin, mode) in enumerate(zip(twins, modes)):
            if feed.local and i > 0:
                h = _leaf(torch, layout.to_twin(feed.layer_input(i)))
            inputs.append(h)
            in_layouts.append(layout)
            for klayer in twin.layers:
                h = klayer(h, training=mode)
            if not h.is_leaf:
                h.retain_grad()
            outputs.append(h)
            layout = twin.out_layout
            if feed.local:
                with _keras_conv_backward_guard():
                    h.backward(torch.from_numpy(layout.to_twin(np.array(feed.output_grad(i), copy=True))))
        if feed.local and layers:
            h = _leaf(torch, layout.to_twin(feed.ours.outputs[-1]))
        our_shape = layout.to_ours(np.empty(tuple(h.shape), dtype=np.int8)).shape
        target = kinterop.keras_targets(loss, y, our_shape, layout, dtype)
        value = kinterop.keras_loss(loss, dtype)(torch.from_numpy(np.array(target, copy=True)), h)
        with _keras_conv_backward_guard():
            value.backward()

    def tensor_grad(t: Any) -> np.ndarray:
        return np.zeros(tuple(t.shape), dtype=x.dtype) if t.grad is None else t.grad.detach().numpy().copy()

    def variable_grad(v: Any) -> np.ndarray:
        return tensor_grad(v.value)

    return _Pass(
        outputs=[lay.to_ours(o.detach().numpy().copy()) for lay, o in zip([t.out_layout for t in twins], outputs)],
        input_grads=[lay.to_ours(tensor_grad(t)) for lay, t in zip(in_layouts, inputs)],
        param_grads=[twin.read(variable_grad) for twin in twins],
        loss=float(value.detach()),
        loss_grad=layout.to_ours(tensor_grad(h)),
    )


_REFERENCES = {"torch": _torch_pass, "keras": _keras_pass}


# -- graph models ----------------------------------------------------------------------------
@dataclass
class _GraphPass:
    """One side's pass over a graph model, per node: its output, the gradient it sends to each of
    its inputs (its own contribution, before the sums over consumers), the gradients of its
    layer's parameters from this call alone; and the loss."""

    outputs: list[np.ndarray]
    input_grads: list[list[np.ndarray]]
    param_grads: list[dict[str, np.ndarray]]
    loss: float
    loss_grad: np.ndarray
    output_grads: list[np.ndarray] = field(default_factory=list)  # dL/dy of each node (ours only)


def _our_graph_pass(model: Any, loss: Loss, x: np.ndarray, y: Any, modes: dict[int, bool]) -> _GraphPass:
    """Our forward and backward over ``model.nodes``, as ``Model.forward`` / ``Model.backward`` run
    them (each call's forward cache kept aside for its backward), recording every node."""
    values: dict[int, Any] = {model.inputs[0].id: x}
    contexts, outputs = [], []
    for node in model.nodes:
        layer = node.layer
        layer.training = modes[id(layer)]
        args = [values[t.id] for t in node.inputs]
        out = layer.forward(args if layer.n_inputs is None else args[0])
        contexts.append(layer.save_context())
        values[node.output.id] = out
        outputs.append(np.array(out, copy=True))
    value = float(loss.forward(values[model.outputs[0].id], y))
    loss_grad = np.array(loss.backward(), copy=True)
    grads: dict[int, np.ndarray] = {model.outputs[0].id: loss_grad}
    n = len(model.nodes)
    input_grads: list[list[np.ndarray]] = [[] for _ in range(n)]
    output_grads: list[np.ndarray] = [None] * n  # type: ignore[list-item]
    param_grads: list[dict[str, np.ndarray]] = [{} for _ in range(n)]
    for j in reversed(range(n)):
        node = model.nodes[j]
        layer = node.layer
        g = grads.pop(node.output.id, None)
        g = np.zeros_like(outputs[j]) if g is None else g
        output_grads[j] = np.array(g, copy=True)
        layer.restore_context(contexts[j])
        layer.zero_grad()  # this call's parameter gradients alone
        result = layer.backward(np.array(g, copy=True))
        parts = result if layer.n_inputs is None else [result]
        input_grads[j] = [np.array(p, copy=True) for p in parts]
        param_grads[j] = {k: np.array(v, copy=True) for k, v in layer.gradients().items()}
        for tensor, part in zip(node.inputs, parts):
            grads[tensor.id] = part if tensor.id not in grads else grads[tensor.id] + part
    return _GraphPass(outputs, input_grads, param_grads, value, loss_grad, output_grads)


def _graph_value(model: Any, ours: _GraphPass, x: np.ndarray, tensor: Any) -> np.ndarray:
    """Our value of a symbolic tensor of the model: the input, or a node's output."""
    if tensor.node is None:
        return x
    return ours.outputs[next(j for j, node in enumerate(model.nodes) if node is tensor.node)]


def _torch_graph_pass(model: Any, loss: Loss, feed: _Feed, y: Any, modes: dict[int, bool]) -> _GraphPass:
    """Each node runs a torch twin of its own (per-call parameter gradients). Local: on our inputs
    of the node, backward from our dL/dy. End to end: on the twin's own values, from ``x``; each
    node reads a clone of its inputs, so the gradient of each clone is that node's contribution."""
    from ..interop import _backend

    interop_torch = _backend("torch")
    torch = interop_torch.torch
    values: dict[int, Any] = {model.inputs[0].id: _leaf(torch, feed.x)}
    twins, inputs, outputs = [], [], []
    for j, node in enumerate(model.nodes):
        layer = node.layer
        twin = interop_torch.graph_node_twin(model, j)
        twins.append(twin)
        args = []
        for t in node.inputs:
            if feed.local:
                h = _leaf(torch, _graph_value(model, feed.ours, feed.x, t))
            else:
                h = values[t.id].clone()
                h.retain_grad()
            args.append(h)
        inputs.append(args)
        h = args if layer.n_inputs is None else args[0]
        for module in twin.modules:
            module.train(modes[id(layer)])
            h = module(h)
        if not h.is_leaf:
            h.retain_grad()
        outputs.append(h)
        values[node.output.id] = h
        if feed.local:
            h.backward(torch.from_numpy(np.array(feed.ours.output_grads[j], copy=True)).reshape(h.shape))
    out = values[model.outputs[0].id]
    if feed.local:
        out = _leaf(torch, _graph_value(model, feed.ours, feed.x, model.outputs[0]))
    value = interop_torch.torch_loss(loss, out, y)
    value.backward()

    def grad(t: Any) -> np.ndarray:
        return np.zeros(tuple(t.shape), dtype=_np_dtype(t)) if t.grad is None else t.grad.detach().numpy().copy()

    return _GraphPass(
        outputs=[o.detach().numpy().copy() for o in outputs],
        input_grads=[[grad(t) for t in args] for args in inputs],
        param_grads=[twin.read(grad) for twin in twins],
        loss=float(value.detach()),
        loss_grad=grad(out),
    )


def _keras_graph_pass(model: Any, loss: Loss, feed: _Feed, y: Any, modes: dict[int, bool]) -> _GraphPass:
    """As :func:`_torch_graph_pass`, with a Keras twin per node (on Keras' torch backend)."""
    from ..interop import _backend

    kinterop = _backend("keras")
    keras = kinterop.keras
    if keras.backend.backend() != "torch":
        raise RuntimeError(
            f"compare(reference='keras') runs Keras on its torch backend; this Keras uses {keras.backend.backend()!r}. "
            "Set KERAS_BACKEND=torch before keras is first imported."
        )
    import torch

    x = feed.x
    dtype = np.dtype(x.dtype).name
    gnodes, start = kinterop.keras_graph_twins(model, dtype, per_node=True)
    kinterop.build_keras_graph(model, gnodes, start, dtype)  # builds every Keras layer, loads our weights
    layouts = {model.inputs[0].id: start}
    with kinterop.float64_arithmetic():
        values: dict[int, Any] = {model.inputs[0].id: _leaf(torch, start.to_twin(x))}
        inputs, outputs = [], []
        for j, (node, gnode) in enumerate(zip(model.nodes, gnodes)):
            layer = node.layer
            args = []
            for t in node.inputs:
                if feed.local:
                    h = _leaf(torch, layouts[t.id].to_twin(_graph_value(model, feed.ours, x, t)))
                else:
                    h = values[t.id].clone()
                    h.retain_grad()
                args.append(h)
            inputs.append(args)
            h = args if layer.n_inputs is None else args[0]
            for klayer in gnode.twin.layers:
                h = klayer(h, training=modes[id(layer)])
            if not h.is_leaf:
                h.retain_grad()
            outputs.append(h)
            values[node.output.id] = h
            layouts[node.output.id] = gnode.twin.out_layout
            if feed.local:
                with _keras_conv_backward_guard():
                    h.backward(torch.from_numpy(gnode.twin.out_layout.to_twin(np.array(feed.ours.output_grads[j], copy=True))))
        out_id = model.outputs[0].id
        out_layout = layouts[out_id]
        out = values[out_id]
        if feed.local:
            out = _leaf(torch, out_layout.to_twin(_graph_value(model, feed.ours, x, model.outputs[0])))
        our_shape = out_layout.to_ours(np.empty(tuple(out.shape), dtype=np.int8)).shape
        target = kinterop.keras_targets(loss, y, our_shape, out_layout, dtype)
        value = kinterop.keras_loss(loss, dtype)(torch.from_numpy(np.array(target, copy=True)), out)
        with _keras_conv_backward_guard():
            value.backward()

    def tensor_grad(t: Any) -> np.ndarray:
        return np.zeros(tuple(t.shape), dtype=x.dtype) if t.grad is None else t.grad.detach().numpy().copy()

    return _GraphPass(
        outputs=[g.twin.out_layout.to_ours(o.detach().numpy().copy()) for g, o in zip(gnodes, outputs)],
        input_grads=[[lay.to_ours(tensor_grad(t)) for lay, t in zip(g.in_layouts, args)] for g, args in zip(gnodes, inputs)],
        param_grads=[g.twin.read(lambda v: tensor_grad(v.value)) for g in gnodes],
        loss=float(value.detach()),
        loss_grad=out_layout.to_ours(tensor_grad(out)),
    )


_GRAPH_REFERENCES = {"torch": _torch_graph_pass, "keras": _keras_graph_pass}


def _compare_graph(model: Any, loss: Loss, x: np.ndarray, y: Any, reference: str, dtype: np.dtype, tol: float,
                   training: bool, mode: str) -> ComparisonReport:
    """:func:`compare` for a graph model: one row per node, then the loss."""
    notes, modes = [], {}
    for i, layer in enumerate(model.layers):
        random_layer = training and _stochastic(layer)
        if random_layer:
            notes.append(f"{layer_label(i, layer)} compared in inference mode (its random mask cannot be shared)")
        modes[id(layer)] = training and not random_layer
    calls: dict[int, int] = {}
    with as_dtype(model.layers, dtype):
        ours = _our_graph_pass(model, loss, x, y, modes)
        ref = _GRAPH_REFERENCES[reference](model, loss, _Feed(x, mode == "local", ours), y, modes)
    rows = []
    for j, node in enumerate(model.nodes):
        layer = node.layer
        calls[id(layer)] = calls.get(id(layer), 0) + 1
        name = getattr(layer, "name", type(layer).__name__)
        if calls[id(layer)] > 1:
            name += f" (call {calls[id(layer)]})"
        grad_scale = max((float(np.max(np.abs(g), initial=0.0)) for g in ref.param_grads[j].values()), default=0.0)
        params = {k: ErrorStat.of(v, ref.param_grads[j][k], scale=grad_scale) for k, v in ours.param_grads[j].items()}
        input_grads = [ErrorStat.of(a, b) for a, b in zip(ours.input_grads[j], ref.input_grads[j])]
        rows.append(LayerComparison(
            j, name, layer,
            output=ErrorStat.of(ours.outputs[j], ref.outputs[j]),
            input_grad=max(input_grads, key=lambda s: s.max_rel),
            param_grads=params,
            input_grads=input_grads if len(input_grads) > 1 else [],
        ))
    rows.append(LayerComparison(
        len(model.nodes), f"loss {loss.name}", loss,
        output=ErrorStat.of(np.float64(ours.loss), np.float64(ref.loss)),
        input_grad=ErrorStat.of(ours.loss_grad, ref.loss_grad),
    ))
    notes.append("graph model: one row per node; a merge layer's dL/dx lists each input; a shared layer's "
                 "parameter gradients are those of each call")
    return ComparisonReport(reference, dtype, tol, rows, ours.loss, ref.loss, notes, mode)


def compare(
    model: Any,
    x: Any,
    y: Any,
    reference: str = "torch",
    dtype: Any = np.float64,
    tol: float | None = None,
    *,
    loss: Loss | None = None,
    training: bool = True,
    mode: str = "local",
) -> ComparisonReport:
    """Compare one forward and backward pass of ``model`` with its torch or Keras twin.

    ``model``: a ``Sequential``, the seed's ``NeuralNetwork`` or a list of layers (then give
    ``loss=``). ``x``: a batch in our layout (NCHW); ``y``: targets for the model's loss.
    ``dtype``: float64 or float32, for both sides (the model is cast for the comparison and
    left as it was). ``tol``: relative tolerance, default :data:`DEFAULT_TOLERANCES` (see the
    module docstring). ``training``: the mode of both passes (batch statistics for batch norm);
    dropout is always compared in inference mode, since the two sides cannot draw the same mask.

    Returns a :class:`ComparisonReport`: ``rows`` (one per layer, then the loss),
    ``first_divergence``, ``ok``, ``max_rel_error`` and a table as ``str(report)``.

    A graph :class:`~nn_from_scratch.graph.Model` gives one row per node (in the order the
    model runs them): its output, ``dL/dx`` of each of its inputs (``input_grads`` for a merge
    layer) and the gradients of its layer's parameters from that call alone (a shared layer's
    calls are checked one by one; the model sums them). Each node gets a twin of its own.
    Locally, a node is fed our values of its inputs and our ``dL/dy`` of its output (the sum
    over its consumers).

    Args:
        model: a ``Sequential``, a graph ``Model``, the seed's ``NeuralNetwork`` or a list of layers.
        x: a batch ``(N, *input_shape)`` in our layout (NCHW).
        y: targets for the loss, e.g. integer classes ``(N,)`` or one-hot ``(N, K)``.
        reference: ``"torch"`` or ``"keras"``.
        dtype: ``np.float64`` (default) or ``np.float32``, for both sides.
        tol: the relative tolerance (default 1e-10 in float64, 1e-5 in float32).
        loss: the loss (default: the model's).
        training: the mode of both passes (batch statistics for batch norm).
        mode: ``"local"`` (each layer fed our inputs and our ``dL/dy``) or ``"end_to_end"``
            (each side runs on its own values; errors propagate).

    Returns:
        A :class:`ComparisonReport`.

    Example:
        >>> from nn_from_scratch import zoo
        >>> from nn_from_scratch.losses import SoftMaxLoss
        >>> report = compare(zoo.seed_cnn(dtype=np.float64, seed=0), np.random.rand(2, 1, 28, 28),
        ...                  np.array([3, 5]), loss=SoftMaxLoss())
        >>> report.ok, report.first_divergence
        (True, None)
    """
    if reference not in _REFERENCES:
        raise ValueError(f"compare: reference must be one of {sorted(_REFERENCES)}, got {reference!r}")
    if mode not in ("local", "end_to_end"):
        raise ValueError(f"compare: mode must be 'local' or 'end_to_end', got {mode!r}")
    dtype = np.dtype(dtype)
    tol = default_tolerance(dtype) if tol is None else float(tol)
    layers = model_layers(model)
    loss = loss if loss is not None else model_loss(model)
    if loss is None:
        raise ValueError("compare: the model has no loss; pass loss=... (e.g. SoftMaxLoss())")
    x = np.asarray(x)
    if x.dtype.kind not in "fiub":
        raise TypeError(f"compare: x must be numeric, got dtype {x.dtype}")
    x = x.astype(dtype)
    if is_graph_model(model):
        model.ensure_built(x)
        return _compare_graph(model, loss, x, y, reference, dtype, tol, training, mode)

    notes = []
    modes = []
    for i, layer in enumerate(layers):
        random_layer = training and _stochastic(layer)
        if random_layer:
            notes.append(f"{layer_label(i, layer)} compared in inference mode (its random mask cannot be shared)")
        modes.append(training and not random_layer)

    with as_dtype(layers, dtype):
        ours = _our_pass(layers, loss, x, y, modes)
        # Our first layer may add a channel axis ((N, H, W) -> (N, 1, H, W)); the twin takes the built shape.
        x_twin = x.reshape((len(x),) + tuple(layers[0].input_shape)) if layers else x
        ref = _REFERENCES[reference](layers, loss, _Feed(x_twin, mode == "local", ours), y, modes)

    rows = []
    for i, layer in enumerate(layers):
        # All parameter gradients of a layer are measured against the largest of them, so that
        # one that is zero in exact arithmetic (the bias of a conv followed by batch norm),
        # which both sides compute as rounding noise, is not taken for a divergence.
        grad_scale = max((float(np.max(np.abs(g), initial=0.0)) for g in ref.param_grads[i].values()), default=0.0)
        params = {k: ErrorStat.of(v, ref.param_grads[i][k], scale=grad_scale) for k, v in ours.param_grads[i].items()}
        rows.append(LayerComparison(
            i, getattr(layer, "name", type(layer).__name__), layer,
            output=ErrorStat.of(ours.outputs[i], ref.outputs[i]),
            input_grad=ErrorStat.of(ours.input_grads[i], ref.input_grads[i]),
            param_grads=params,
        ))
    rows.append(LayerComparison(
        len(layers), f"loss {loss.name}", loss,
        output=ErrorStat.of(np.float64(ours.loss), np.float64(ref.loss)),
        input_grad=ErrorStat.of(ours.loss_grad, ref.loss_grad),
    ))
    return ComparisonReport(reference, dtype, tol, rows, ours.loss, ref.loss, notes, mode)


__all__ = ["ComparisonReport", "DEFAULT_TOLERANCES", "ErrorStat", "LayerComparison", "as_dtype", "compare", "default_tolerance"]
