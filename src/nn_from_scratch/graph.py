"""Graph models (Keras' functional API): any directed acyclic graph of layers.

    x = Input(shape=(1, 28, 28))
    h = ReLU()(Convolution(kernel_size=3, output_layers=16, padding=1)(x))
    h = Add()([h, ReLU()(Convolution(kernel_size=3, output_layers=16, padding=1)(h))])   # residual
    y = Linear(output_dim=10)(Vectorization()(h))
    model = Model(x, y, loss=SoftMaxLoss(), optimizer=Adam(1e-3), seed=0)

Calling a layer on a symbolic tensor records a node (:mod:`nn_from_scratch.symbolic`);
``Model`` walks the nodes from the outputs back to the inputs, orders them so every node runs
after its inputs, and runs them:

* forward: each node's layer on its inputs' values;
* backward: in reverse order, each node's ``dL/dy`` is the *sum* over every place its output
  is used (a tensor feeding two layers receives both gradients), and parameter gradients
  accumulate in the layers, so a layer object used at two places (shared weights) receives
  the sum of both calls' gradients -- what torch's autograd gives for a module called twice.

A shared layer keeps one forward cache per call: after each call the model takes the cache out
of the layer (``save_context``) and puts it back before that call's backward.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import serialization
from .errors import GraphError
from .interfaces import Layer, Optimizer, Shape, shape_hint
from .losses import Loss
from .model_base import BaseModel, shape_text
from .symbolic import GraphNode, Input, SymbolicTensor

__all__ = ["Input", "Model"]


def _as_tensor_list(value: Any, what: str) -> list[SymbolicTensor]:
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if not isinstance(v, SymbolicTensor):
            raise TypeError(
                f"Model: {what} must be symbolic tensors (from Input(...) or a layer called on one), "
                f"got {type(v).__name__}"
            )
    return values


def _source_name(tensor: SymbolicTensor) -> str:
    return tensor.name or "input" if tensor.node is None else tensor.node.layer.name


class Model(BaseModel):
    """A model whose layers form a directed acyclic graph from ``inputs`` to ``outputs``.

    Training, evaluation, prediction, callbacks, saving and ``summary`` work as for
    :class:`~nn_from_scratch.model.Sequential`. One input and one output.

    Args:
        inputs: the symbolic tensor returned by :func:`Input`.
        outputs: the symbolic tensor of the last layer call.
        loss: a loss from :mod:`nn_from_scratch.losses`.
        optimizer: an optimizer from :mod:`nn_from_scratch.optimizers`.
        seed: seeds the model's generator; fresh layers re-draw their weights from it in graph order.
        name: shown by ``summary``.

    Raises:
        GraphError: an output that does not depend on the inputs, or a graph with a cycle.

    Example:
        >>> x = Input(shape=(4,))
        >>> h = Linear(output_dim=4)(x)
        >>> model = Model(x, Add()([x, h]), seed=0)     # a residual block
        >>> model.predict(np.ones((2, 4))).shape
        (2, 4)
    """

    summary_columns = (" Layer (type)", "Output Shape", "Param #", "Connected to")
    summary_widths = (0.3, 0.52, 0.62, 1.0)
    summary_line_length = 98

    def __init__(
        self,
        inputs: Any,
        outputs: Any,
        loss: Loss | None = None,
        optimizer: Optimizer | None = None,
        seed: int | None = None,
        name: str = "model",
        input_shape: Shape | None = None,
    ) -> None:
        super().__init__(loss, optimizer, seed, name)
        self.inputs = _as_tensor_list(inputs, "inputs")
        self.outputs = _as_tensor_list(outputs, "outputs")
        if len(self.inputs) != 1 or len(self.outputs) != 1:
            raise GraphError(f"Model: one input and one output are supported, got {len(self.inputs)} and {len(self.outputs)}")
        if input_shape is not None and tuple(input_shape) != self.inputs[0].shape:
            raise ValueError(f"Model: input_shape {tuple(input_shape)} does not match the Input's shape {self.inputs[0].shape}")
        self.nodes = self._order_nodes()
        self.layers: list[Layer] = []
        for node in self.nodes:
            if not any(layer is node.layer for layer in self.layers):
                self.layers.append(node.layer)
        calls = {id(layer): sum(node.layer is layer for node in self.nodes) for layer in self.layers}
        self._shared = {id(layer) for layer in self.layers if calls[id(layer)] > 1}
        for layer in self.layers:
            self._adopt(layer)
        self._contexts: dict[int, dict[str, Any]] = {}

    def _order_nodes(self) -> list[GraphNode]:
        """The nodes that lead to the outputs, each after the nodes that feed it (depth-first)."""
        order: list[GraphNode] = []
        state: dict[int, str] = {}  # node id -> "visiting" | "done"
        input_ids = {t.id for t in self.inputs}

        def visit(tensor: SymbolicTensor, path: list[str]) -> None:
            if tensor.node is None:
                if tensor.id not in input_ids:
                    raise GraphError(
                        f"Model: the output depends on an Input {tensor.name!r} of shape {tensor.shape} that is not "
                        f"among the model's inputs (path: {' <- '.join(path) or 'output'})"
                    )
                return
            node = tensor.node
            seen = state.get(id(node))
            if seen == "done":
                return
            if seen == "visiting":
                raise GraphError(f"Model: the graph has a cycle through {' <- '.join(path + [node.layer.name])}")
            state[id(node)] = "visiting"
            for source in node.inputs:
                visit(source, path + [node.layer.name])
            state[id(node)] = "done"
            order.append(node)

        for output in self.outputs:
            visit(output, [])
        if not order and self.outputs[0].id != self.inputs[0].id:
            raise GraphError("Model: the output is not connected to the input")
        return order

    # -- shapes ---------------------------------------------------------------------------
    @property
    def input_shape(self) -> Shape:
        return self.inputs[0].shape

    @property
    def output_shape(self) -> Shape:
        return self.outputs[0].shape

    def ensure_built(self, x: np.ndarray) -> None:
        """A graph is built when it is defined; this only checks the batch's shape."""
        if x.ndim < 1:
            raise ValueError(f"{self.name}: expected a batch (N, ...), got a scalar")
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"{self.name}: expected input of shape (batch, {', '.join(map(str, self.input_shape))}), got {x.shape}"
                f"{shape_hint(self.input_shape, x.shape)}"
            )

    # -- passes ---------------------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool = False, keep_cache: bool | None = None) -> np.ndarray:
        """Run every node in order. In inference mode (the default) no layer keeps a cache; in
        both modes each intermediate value is dropped as soon as its last consumer has run.
        ``keep_cache=True`` keeps the caches in inference mode too, so that a ``backward`` can
        follow (``verify.gradcheck(model, training=False)``)."""
        keep = training if keep_cache is None else bool(keep_cache)
        x = np.asarray(x)
        self.ensure_built(x)
        values: dict[int, Any] = {self.inputs[0].id: x}
        remaining = self._consumer_counts()
        self._contexts = {}
        for node in self.nodes:
            layer = node.layer
            args = [values[t.id] for t in node.inputs]
            out = layer.forward_in_pass(args if layer.n_inputs is None else args[0], training, keep_cache=keep)
            del args
            if keep and id(layer) in self._shared:
                self._contexts[id(node)] = layer.save_context()
            # A value is dropped once its last consumer has run, in training too: each layer has
            # cached what its backward needs.
            for t in node.inputs:
                remaining[t.id] -= 1
                if remaining[t.id] == 0 and t.id != self.outputs[0].id:
                    del values[t.id]
            values[node.output.id] = out
        return values[self.outputs[0].id]

    __call__ = forward

    def _consumer_counts(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for node in self.nodes:
            for t in node.inputs:
                counts[t.id] = counts.get(t.id, 0) + 1
        return counts

    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """Backpropagate through the last training-mode forward; return dL/dx of the input.

        Gradients reaching a tensor from several consumers are summed. With
        ``need_input_grad=False``, layers that read only the model's input and can skip
        dL/dx do, and ``None`` may be returned.
        """
        input_id = self.inputs[0].id
        given = np.asarray(dL_dy)
        grads: dict[int, np.ndarray] = {self.outputs[0].id: given}
        for node in reversed(self.nodes):
            g = grads.pop(node.output.id, None)
            if g is None:
                continue  # this node's output does not reach the loss
            layer = node.layer
            if id(node) in self._contexts:
                layer.restore_context(self._contexts.pop(id(node)))
            feeds_only_input = all(t.id == input_id for t in node.inputs)
            skip = not need_input_grad and feeds_only_input and layer.can_skip_input_grad
            # A gradient that no other pending gradient (Add hands one array to both branches)
            # and not the caller's array shares memory with is read by no one after this layer:
            # the layer may overwrite it (ReLU and batch norm compute dL/dx in place).
            writable = isinstance(g, np.ndarray) and not np.may_share_memory(g, given) and not any(
                np.may_share_memory(g, other) for other in grads.values())
            result = layer.backward_in_pass(g, need_input_grad=not skip, output_grad_writable=writable)
            del g
            if result is None:
                continue
            parts = result if layer.n_inputs is None else [result]
            for tensor, part in zip(node.inputs, parts):
                if tensor.id == input_id and not need_input_grad:
                    continue
                # Never in place: a layer may return a view of its dL/dy (Add returns it as is).
                grads[tensor.id] = part if tensor.id not in grads else grads[tensor.id] + part
        return grads.get(input_id)

    # -- structure ------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """The graph as JSON: the input, each node (layer index and input references), the output.

        A reference is ``["input", 0]`` or ``["node", j]`` (the output of node ``j``, which comes
        earlier in the list).
        """
        node_index = {id(node): j for j, node in enumerate(self.nodes)}
        layer_index = {id(layer): i for i, layer in enumerate(self.layers)}

        def ref(tensor: SymbolicTensor) -> list[Any]:
            return ["input", 0] if tensor.node is None else ["node", node_index[id(tensor.node)]]

        return {
            "inputs": [{"shape": list(t.shape), "name": t.name} for t in self.inputs],
            "nodes": [{"layer": layer_index[id(node.layer)], "inputs": [ref(t) for t in node.inputs]} for node in self.nodes],
            "outputs": [ref(t) for t in self.outputs],
        }

    @classmethod
    def from_config(cls, layers: list[Layer], structure: dict[str, Any], **kwargs: Any) -> "Model":
        """Rebuild the graph of :meth:`get_config` on ``layers`` (raises :class:`GraphError` if malformed)."""
        try:
            (spec,) = structure["inputs"]
            x = Input(shape=tuple(spec["shape"]), name=str(spec.get("name", "input")))
            tensors: list[SymbolicTensor] = []

            def resolve(reference: Any, j: int) -> SymbolicTensor:
                kind, k = reference
                if kind == "input" and k == 0:
                    return x
                if kind == "node" and isinstance(k, int) and 0 <= k < j:
                    return tensors[k]
                raise GraphError(f"Model: node {j} refers to {reference!r}, which is not an earlier node (a cycle?)")

            for j, entry in enumerate(structure["nodes"]):
                layer = layers[entry["layer"]]
                args = [resolve(r, j) for r in entry["inputs"]]
                tensors.append(layer(args if layer.n_inputs is None else args[0]))
            (out_ref,) = structure["outputs"]
            output = resolve(out_ref, len(tensors))
        except GraphError:
            raise
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise GraphError(f"Model: malformed graph structure: {error}") from None
        return cls(x, output, **kwargs)

    def summary_rows(self, names: dict[int, str]) -> list[tuple[str, ...]]:
        rows = [(f" {self.inputs[0].name or 'input'} (InputLayer)", shape_text(self.input_shape), "0", "-")]
        for node in self.nodes:
            layer = node.layer
            sources = ", ".join(
                (t.name or "input") if t.node is None else names[id(t.node.layer)] for t in node.inputs
            )
            rows.append((f" {names[id(layer)]} ({type(layer).__name__})", shape_text(node.output.shape),
                         str(layer.count_params()), sources))
        return rows

    def __repr__(self) -> str:
        return f"Model({self.input_shape} -> {self.output_shape}, {len(self.nodes)} nodes)"


serialization.register_model(Model)
