"""Symbolic tensors: what ``Input(shape=...)`` returns and what calling a layer on one returns.

A :class:`SymbolicTensor` carries no data, only a per-sample ``shape`` and the :class:`GraphNode`
that produced it (``None`` for an input). Calling a layer on symbolic tensors builds the layer
for their shapes and records one node of a graph; :class:`nn_from_scratch.graph.Model` then
walks these nodes. This module depends on nothing else in the package, so that
:meth:`Layer.__call__ <nn_from_scratch.interfaces.Layer.__call__>` can use it without a cycle.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Sequence

_ids = itertools.count()


@dataclass(eq=False)
class GraphNode:
    """One call of ``layer`` on ``inputs``; its output is ``output``.

    Args:
        layer: the layer that was called.
        inputs: the :class:`SymbolicTensor` arguments of the call, in order (one for most
            layers, several for a merge layer).
        output: the :class:`SymbolicTensor` the call returned (set right after the node is made).

    Example:
        >>> from nn_from_scratch.neurons import Linear
        >>> x = Input(shape=(4,))
        >>> node = Linear(4, 3)(x).node
        >>> type(node.layer).__name__, node.inputs[0] is x, node.output.shape
        ('Linear', True, (3,))
    """

    layer: Any
    inputs: tuple["SymbolicTensor", ...]
    output: "SymbolicTensor | None" = None


@dataclass(eq=False)
class SymbolicTensor:
    """A placeholder for a batch of shape ``(N, *shape)`` flowing through a graph model.

    Made by :func:`Input` and by calling a layer on symbolic tensors, rarely by hand. It holds
    no data: converting it to a NumPy array raises ``TypeError``.

    Args:
        shape: the per-sample shape (no batch axis).
        node: the :class:`GraphNode` that produced it, or None for a graph input.
        name: a name shown in reprs (default: the producing layer's name, or ``Input``).
        id: a unique number (drawn automatically).

    Example:
        >>> x = Input(shape=(1, 28, 28), name="image")
        >>> x
        <SymbolicTensor image shape=(None, 1, 28, 28)>
        >>> x.node is None
        True
    """

    shape: tuple[int, ...]
    node: GraphNode | None = None
    name: str = ""
    id: int = field(default_factory=lambda: next(_ids))

    def __repr__(self) -> str:
        source = "Input" if self.node is None else self.node.layer.name
        return f"<SymbolicTensor {self.name or source} shape=(None, {', '.join(map(str, self.shape))})>"

    # Arrays and symbolic tensors must not be mixed by accident: no numpy conversion.
    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"{self!r} is a symbolic tensor of a graph model, not data: build a Model(inputs, outputs) "
            "and call model.predict(x) on arrays"
        )


def Input(shape: Sequence[int], name: str = "") -> SymbolicTensor:
    """The input of a graph model: a batch of shape ``(N, *shape)``, e.g. ``Input(shape=(1, 28, 28))``.

    Args:
        shape: the per-sample shape (no batch axis), e.g. ``(1, 28, 28)``.
        name: a name for the tensor (shown in reprs and summaries).

    Returns:
        A :class:`SymbolicTensor`: call layers on it to build the graph, then pass it to
        :class:`~nn_from_scratch.graph.Model` as ``inputs``.

    Example:
        >>> Input(shape=(1, 28, 28)).shape
        (1, 28, 28)
    """
    if isinstance(shape, int):
        shape = (shape,)
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise TypeError(f"Input: shape must be a tuple of positive ints (per sample, no batch axis), got {shape!r}") from None
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"Input: shape must be a tuple of positive ints (per sample, no batch axis), got {shape!r}")
    return SymbolicTensor(shape, None, name or "input")


def call_layer_symbolically(layer: Any, inputs: Any) -> SymbolicTensor:
    """Build ``layer`` for the shapes of ``inputs`` and record the call as a graph node.

    This is what ``layer(inputs)`` does when ``inputs`` are symbolic. A layer that is already
    built (a shared layer) must be called on the same shapes.

    Args:
        layer: the layer to call (built here if it is not yet).
        inputs: one :class:`SymbolicTensor`, or a list of them for a merge layer.

    Returns:
        The output :class:`SymbolicTensor`, of shape ``layer.output_shape``.

    Raises:
        ValueError: a one-input layer got several tensors, or a built layer got other shapes.
        TypeError: a merge layer got a single tensor.

    Example:
        >>> from nn_from_scratch.neurons import Linear
        >>> call_layer_symbolically(Linear(4, 3), Input(shape=(4,)))
        <SymbolicTensor Linear shape=(None, 3)>
    """
    many = isinstance(inputs, (list, tuple))
    tensors = tuple(inputs) if many else (inputs,)
    if layer.n_inputs == 1 and many:
        if len(tensors) != 1:
            raise ValueError(f"{layer.name}: takes one input, got a list of {len(tensors)}")
    if layer.n_inputs is None and not many:
        raise TypeError(f"{layer.name}: a merge layer takes a list of tensors, e.g. {type(layer).__name__}()([a, b])")
    shapes = [t.shape for t in tensors]
    input_shape: Any = shapes if layer.n_inputs is None else shapes[0]
    if layer.built:
        expected = layer.input_shape
        if (list(map(tuple, expected)) if layer.n_inputs is None else tuple(expected)) != (
            [tuple(s) for s in shapes] if layer.n_inputs is None else tuple(shapes[0])
        ):
            raise ValueError(
                f"{layer.name}: already built for input shape {expected}, called on {input_shape} "
                f"(from {', '.join(_source(t) for t in tensors)}); a shared layer needs the same shape at every call"
            )
    else:
        layer.build(input_shape)
    node = GraphNode(layer, tensors)
    node.output = SymbolicTensor(tuple(layer.output_shape), node)
    return node.output


def _source(tensor: SymbolicTensor) -> str:
    return "Input" if tensor.node is None else tensor.node.layer.name
