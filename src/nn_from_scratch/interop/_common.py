"""What the torch and Keras converters share: the error, the registries and model unpacking.

This module imports neither torch nor keras.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, TypeVar

from ..interfaces import Layer
from ..losses import Loss

T = TypeVar("T")


class UnsupportedLayerError(NotImplementedError):
    """A layer (ours, torch's or Keras') that has no converter. The message names it."""


class Registry(dict):
    """Converters keyed by class. Lookup walks the MRO, so a subclass uses its parent's entry."""

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what

    def register(self, *classes: type) -> Callable[[T], T]:
        def add(fn: T) -> T:
            for cls in classes:
                self[cls] = fn
            return fn

        return add

    def lookup(self, obj: Any, where: str = "") -> Any:
        for cls in type(obj).__mro__:
            if cls in self:
                return self[cls]
        supported = ", ".join(sorted({c.__name__ for c in self}))
        raise UnsupportedLayerError(
            f"{self.what}: no converter for {where}{type(obj).__name__} ({obj!r}); supported: {supported}"
        )


def model_layers(model: Any) -> list[Layer]:
    """The layers of a ``Sequential``, a seed ``NeuralNetwork``, a list of layers or one layer."""
    if isinstance(model, Layer):
        return [model]
    inner = getattr(model, "model", None)  # the seed's NeuralNetwork wraps a Sequential
    layers = getattr(inner, "layers", None) if inner is not None else None
    if layers is None:
        layers = getattr(model, "layers", model)
    if not isinstance(layers, Iterable):
        raise TypeError(f"expected a Sequential, a NeuralNetwork or a list of layers, got {type(model).__name__}")
    layers = list(layers)
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(f"layer {i} must be a nn_from_scratch Layer, got {type(layer).__name__}")
    return layers


def is_graph_model(model: Any) -> bool:
    """Whether ``model`` is a graph :class:`~nn_from_scratch.graph.Model` (layers joined by nodes, not a chain)."""
    from ..graph import Model

    return isinstance(model, Model)


def model_loss(model: Any) -> Loss | None:
    """The loss attached to a ``Sequential`` (``.loss``) or a ``NeuralNetwork`` (``.loss_fn``)."""
    for name in ("loss", "loss_fn"):
        loss = getattr(model, name, None)
        if isinstance(loss, Loss):
            return loss
    inner = getattr(model, "model", None)
    return model_loss(inner) if inner is not None else None


# Layers whose training-mode output is random, by class name (looked up in ``nodes``/``neurons``
# so this table can name layers that a version of the library does not have).
STOCHASTIC_LAYER_NAMES: tuple[str, ...] = ("Dropout",)


def _stochastic_layers() -> list[type]:
    from .. import neurons, nodes

    return [getattr(m, n) for n in STOCHASTIC_LAYER_NAMES for m in (nodes, neurons) if hasattr(m, n)]


def __getattr__(name: str) -> Any:
    if name == "STOCHASTIC_LAYERS":
        return _stochastic_layers()
    raise AttributeError(name)


def layer_label(index: int, layer: Any) -> str:
    name = getattr(layer, "name", None) or type(layer).__name__
    return f"layer {index} ({name})"
