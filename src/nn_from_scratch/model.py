"""``Sequential``: a stack of layers, trained end to end, with a Keras-style ``fit`` / ``evaluate``
/ ``predict`` / ``summary`` / ``save`` (shared with the graph ``Model`` through
:class:`~nn_from_scratch.model_base.BaseModel`; the loop itself is :mod:`nn_from_scratch.training`).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import serialization
from .errors import TrainingDivergedError
from .interfaces import Layer, Optimizer, Shape
from .layers import LayerChain
from .losses import Loss
from .model_base import BaseModel, shape_text
from .symbolic import SymbolicTensor

__all__ = ["Sequential", "TrainingDivergedError"]


class Sequential(BaseModel):
    """Layers applied one after another: ``y = f_L(... f_2(f_1(x)))``.

    Layer shapes are inferred from ``input_shape`` (per sample, no batch size) or from the first
    input. With ``seed=``, every random draw of the model -- initial weights, shuffling,
    dropout -- comes from one ``numpy.random.Generator``, so the same seed gives the same model,
    bit for bit, after the same training at the same BLAS thread count (README, "Reliability").
    Layers taken from another model keep their weights.

    Training versus inference mode is the model's business: ``fit`` and ``train_step`` run the
    layers with ``layer.training = True``; ``predict``, ``evaluate`` and ``forward`` (by default)
    with ``False``, which turns dropout off, makes batch norm use its running statistics and
    keeps nothing for a backward pass.

    Args:
        layers: the layers, in order.
        loss: a loss from :mod:`nn_from_scratch.losses` (needed by ``fit`` and ``evaluate``).
        optimizer: an optimizer from :mod:`nn_from_scratch.optimizers` (needed by ``fit``).
        input_shape: the per-sample input shape, e.g. ``(1, 28, 28)``; else inferred from the first batch.
        seed: seeds the model's generator (weights, shuffling, dropout).
        name: shown by ``summary``.

    Example:
        >>> model = Sequential([Linear(4, 3), ReLU(), Linear(3, 2)], loss=SoftMaxLoss(),
        ...                    optimizer=GradientDescent(0.1), seed=0)
        >>> model.predict(np.ones((5, 4))).shape
        (5, 2)
    """

    def __init__(
        self,
        layers: Sequence[Layer] = (),
        loss: Loss | None = None,
        optimizer: Optimizer | None = None,
        input_shape: Shape | None = None,
        seed: int | None = None,
        name: str = "sequential",
    ) -> None:
        super().__init__(loss, optimizer, seed, name)
        self.layers: list[Layer] = []
        self._declared_input: Shape | None = None
        for layer in layers:
            self.add(layer)
        if input_shape is None and self._declared_input is not None:
            input_shape = self._declared_input
        if input_shape is not None:
            self.build(tuple(input_shape))
        elif self.layers and self.layers[0].built:
            # The first layer knows its input (e.g. Linear(800, 10)): every shape is known now.
            self.build(self.layers[0].input_shape)

    def add(self, layer: Layer | LayerChain | SymbolicTensor) -> None:
        """Append a layer. Its random draws (weights, dropout masks) come from the model's generator.

        Keras' forms work too: an ``Input(shape=...)`` first (it sets the input shape), and a
        :class:`~nn_from_scratch.layers.LayerChain` (a layer built with ``activation=``),
        whose layers are appended one by one.
        """
        if isinstance(layer, LayerChain):
            for part in layer:
                self.add(part)
            return
        if isinstance(layer, SymbolicTensor) and layer.node is None:
            if self.layers:
                raise TypeError("Sequential: an Input(...) can only come first")
            self._declared_input = tuple(layer.shape)
            return
        if not isinstance(layer, Layer):
            raise TypeError(
                f"Sequential: layer {len(self.layers)} must be a Layer (Node or Neuron), got {type(layer).__name__}"
            )
        if layer.n_inputs != 1:
            raise TypeError(f"Sequential: {layer.name} takes several inputs; build a graph Model for it")
        self._adopt(layer)
        self.layers.append(layer)
        if self._declared_input is not None and not layer.built:
            self.build(self._declared_input)  # Keras' Input first: every added layer is built at once

    # -- building -------------------------------------------------------------------------
    def build(self, input_shape: Shape) -> None:
        """Infer every layer's shapes (and create its weights) from a per-sample input shape."""
        shape = tuple(int(s) for s in input_shape)
        for layer in self.layers:
            if layer.built:
                if layer.input_shape != shape:
                    raise ValueError(
                        f"{layer.name}: expected input of shape (batch, {', '.join(map(str, layer.input_shape))}), "
                        f"got (batch, {', '.join(map(str, shape))})"
                    )
            else:
                layer.build(shape, rng=self.rng)
            shape = layer.output_shape

    def ensure_built(self, x: np.ndarray) -> None:
        """Build from the first batch, so that lazily built layers draw from the model's generator."""
        if self.built or not self.layers:
            return
        if x.ndim < 1:
            raise ValueError(f"{self.name}: expected a batch (N, ...), got a scalar")
        self.build(tuple(x.shape[1:]))

    @property
    def input_shape(self) -> Shape | None:
        return self.layers[0].input_shape if self.layers else None

    @property
    def output_shape(self) -> Shape | None:
        return self.layers[-1].output_shape if self.layers else None

    # -- passes ---------------------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """The output for a batch. In inference mode (the default) every layer drops its cache."""
        x = np.asarray(x)
        self.ensure_built(x)
        for layer in self.layers:
            x = layer.forward_in_pass(x, training, keep_cache=training)
        return x

    __call__ = forward

    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """Backpropagate ``dL_dy`` through every layer; return dL/dx of the model's input.

        Parameter gradients are added to the layers' ``_X_pd`` (see ``zero_grad``). With
        ``need_input_grad=False`` (what training uses) a first layer that can skip dL/dx
        (``can_skip_input_grad``: Convolution, Linear) does, and ``None`` may be returned --
        as torch skips the gradient of an input that does not require one. Each layer's forward
        cache is dropped once its backward has run (``release_after_backward``), so a second
        ``backward`` needs a new training-mode forward, as in torch.
        """
        given = dL_dy
        for i, layer in enumerate(reversed(self.layers)):
            skip = not need_input_grad and i == len(self.layers) - 1 and layer.can_skip_input_grad
            # A dL/dy that a layer of this model returned, and not the caller's array, is read by
            # no one after this layer: it may be overwritten (ReLU's backward runs in place).
            writable = i > 0 and not np.may_share_memory(dL_dy, given)
            dL_dy = layer.backward_in_pass(dL_dy, need_input_grad=not skip, output_grad_writable=writable)
        return dL_dy

    # -- structure ------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """The structure beyond the layer list: none for a chain."""
        return {}

    @classmethod
    def from_config(cls, layers: list[Layer], structure: dict[str, Any], **kwargs: Any) -> "Sequential":
        return cls(layers, **kwargs)

    def summary_rows(self, names: dict[int, str]) -> list[tuple[str, ...]]:
        return [(f" {names[id(layer)]} ({type(layer).__name__})", shape_text(layer.output_shape), str(layer.count_params()))
                for layer in self.layers]

    def __repr__(self) -> str:
        return f"Sequential([{', '.join(map(repr, self.layers))}])"


serialization.register_model(Sequential)
