"""``Sequential``: a stack of layers, trained end to end."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from . import initializers
from .interfaces import Layer, Neuron, Optimizer, Shape
from .losses import Loss


class TrainingDivergedError(FloatingPointError):
    """Raised when the loss becomes NaN or infinite."""


class Sequential:
    """Layers applied one after another: ``y = f_L(... f_2(f_1(x)))``.

    Layer shapes are inferred from ``input_shape`` (per sample, no batch size) or from the first
    input. With ``seed=``, every random draw of the model -- initial weights, shuffling,
    dropout -- comes from one ``numpy.random.Generator``, so the same seed gives the same model.
    """

    def __init__(
        self,
        layers: Sequence[Layer],
        loss: Loss | None = None,
        optimizer: Optimizer | None = None,
        input_shape: Shape | None = None,
        seed: int | None = None,
    ) -> None:
        self.layers = list(layers)
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: layer {i} must be a Layer (Node or Neuron), got {type(layer).__name__}")
        self.loss = loss
        self.optimizer = optimizer
        self.seed = seed
        self.rng = np.random.default_rng(seed) if seed is not None else initializers.default_rng()
        for layer in self.layers:
            layer.rng = self.rng  # dropout and friends draw from the model's generator
        if seed is not None:
            # Layers that already drew their weights (their shapes were known at construction)
            # draw again, in order, from the model's generator.
            for layer in self.layers:
                if isinstance(layer, Neuron) and not layer.user_weights and layer.parameters():
                    layer.reset_parameters(self.rng)
        if input_shape is not None:
            self.build(tuple(input_shape))

    # -- building -------------------------------------------------------------------------
    @property
    def built(self) -> bool:
        return all(layer.built for layer in self.layers)

    def build(self, input_shape: Shape) -> None:
        """Infer every layer's shapes (and create its weights) from a per-sample input shape."""
        shape = tuple(int(s) for s in input_shape)
        for layer in self.layers:
            if layer.built:
                if layer.input_shape != shape:
                    raise ValueError(f"{layer.name}: expected input of shape (batch, {', '.join(map(str, layer.input_shape))}), got (batch, {', '.join(map(str, shape))})")
            else:
                layer.build(shape, rng=self.rng)
            shape = layer.output_shape

    @property
    def input_shape(self) -> Shape | None:
        return self.layers[0].input_shape if self.layers else None

    @property
    def output_shape(self) -> Shape | None:
        return self.layers[-1].output_shape if self.layers else None

    # -- passes ---------------------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        for layer in self.layers:
            layer.training = training
            x = layer.forward(x)
        return x

    __call__ = forward

    def backward(self, dL_dy: np.ndarray) -> np.ndarray:
        for layer in reversed(self.layers):
            dL_dy = layer.backward(dL_dy)
        return dL_dy

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One forward, backward and optimizer step on a batch; returns the batch loss."""
        if self.loss is None or self.optimizer is None:
            raise ValueError("Sequential: train_step needs a loss and an optimizer (pass loss=... and optimizer=...)")
        logits = self.forward(x, training=True)
        loss = float(self.loss.forward(logits, y))
        if not np.isfinite(loss):
            raise TrainingDivergedError(
                f"Sequential: the loss became {loss} at optimizer step {self.optimizer.iterations + 1}; "
                "training stopped. Try a smaller learning rate or check the inputs for NaN/inf."
            )
        self.backward(self.loss.backward())
        self.optimizer.step(self.layers)
        return loss

    def predict(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Outputs of the last layer, in inference mode, for any number of samples."""
        x = np.asarray(x)
        if batch_size is None or len(x) <= batch_size:
            return self.forward(x, training=False)
        return np.concatenate([self.forward(x[i : i + batch_size], training=False) for i in range(0, len(x), batch_size)])

    # -- parameters -----------------------------------------------------------------------
    def parameters(self) -> Iterable[tuple[str, np.ndarray]]:
        for i, layer in enumerate(self.layers):
            for name, p in layer.parameters().items():
                yield f"{i}.{name}", p

    def count_params(self) -> int:
        return sum(layer.count_params() for layer in self.layers)
