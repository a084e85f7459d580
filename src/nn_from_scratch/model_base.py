"""What every model shares, whatever connects its layers: weights by name, the Keras-style
``fit`` / ``evaluate`` / ``predict`` (delegated to :mod:`nn_from_scratch.training`), saving
(delegated to :mod:`nn_from_scratch.serialization`) and the summary table.

A subclass says how layers connect: ``Sequential`` (a chain, :mod:`nn_from_scratch.model`)
or ``Model`` (a graph, :mod:`nn_from_scratch.graph`). It provides ``layers`` (each layer once,
in the order they run), ``forward``, ``backward``, ``input_shape``, ``output_shape``,
``ensure_built``, ``get_config`` / ``from_config`` (its structure as JSON) and the summary rows.
"""

from __future__ import annotations

import os
import re
import weakref
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from . import distributed as distributed_training
from . import initializers, serialization, training
from .interfaces import Layer, Neuron, Optimizer, Shape
from .losses import Loss


class BaseModel:
    """Common base of ``Sequential`` and the graph ``Model``.

    With ``seed=``, every random draw of the model -- initial weights, shuffling, dropout --
    comes from one ``numpy.random.Generator``, so the same seed gives the same model, bit for
    bit, after the same training at the same BLAS thread count (README, "Reliability"). A
    layer that already belongs to a model (it was trained, or loaded) or whose weights the
    user passed keeps its weights: only fresh layers are drawn.

    Args:
        loss: the loss (a :class:`~nn_from_scratch.losses.Loss`), or None until ``compile``.
        optimizer: the optimizer, or None until ``compile``.
        seed: the seed of the model's generator (None: the library's default generator).
        name: the model's name (shown by ``summary``).

    Example:
        >>> from nn_from_scratch.model import Sequential
        >>> from nn_from_scratch.neurons import Linear
        >>> a = Sequential([Linear(4, 3)], seed=0)
        >>> b = Sequential([Linear(4, 3)], seed=0)
        >>> a.build((4,)); b.build((4,))
        >>> isinstance(a, BaseModel), all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))
        (True, True)
    """

    layers: list[Layer]

    def __init__(
        self, loss: Loss | None = None, optimizer: Optimizer | None = None, seed: int | None = None, name: str = "model"
    ) -> None:
        self.loss = loss
        self.optimizer = optimizer
        self.seed = seed
        self.name = name
        self.stop_training = False
        self.history: Any = None
        self.rng = np.random.default_rng(seed) if seed is not None else initializers.default_rng()
        #: What ``compile(metrics=...)`` asked for (names or Metric objects); None: the loss's default.
        self.metric_specs: list[Any] | None = None

    @property
    def optimizer(self) -> Optimizer | None:
        """The optimizer; assigning one binds it to this model (its ``state_dict()`` names parameters by it)."""
        return self.__dict__.get("_optimizer")

    @optimizer.setter
    def optimizer(self, value: Optimizer | None) -> None:
        if isinstance(value, Optimizer):
            value._model_ref = weakref.ref(self)
        self._optimizer = value

    def _adopt(self, layer: Layer) -> None:
        """Make ``layer`` draw from the model's generator; re-draw its weights if they are fresh."""
        layer.rng = self.rng  # dropout and friends draw from the model's generator
        fresh = not getattr(layer, "adopted", False) and not getattr(layer, "user_weights", False)
        if self.seed is not None and fresh and isinstance(layer, Neuron) and layer.parameters():
            # A layer that drew its weights at construction (its shapes were known then) draws
            # again, in order, from the model's generator.
            layer.reset_parameters(self.rng)
        layer.adopted = True

    def compile(self, optimizer: Optimizer | str | None = None, loss: Loss | str | None = None,
                metrics: Sequence[Any] | None = None) -> None:
        """Set the optimizer, the loss and the metrics (the Keras spelling of passing them to the
        constructor). ``metrics`` holds names or :class:`~nn_from_scratch.metrics.Metric` objects
        (see :mod:`nn_from_scratch.metrics`); ``fit`` and ``evaluate`` report each of them.

        ``optimizer`` may be a Keras name (``"adam"``, ``"sgd"``, ``"adamw"``, ``"rmsprop"``, with
        Keras' default learning rate: :func:`nn_from_scratch.optimizers.get`) and ``loss`` one
        too (:func:`nn_from_scratch.losses.get`). As in Keras, the loss names mean
        *probabilities*: ``loss="sparse_categorical_crossentropy"`` is
        ``SoftMaxLoss(from_logits=False)`` and wants a model ending with
        ``activation="softmax"``; for logits pass ``SoftMaxLoss()``. A mismatch is refused when
        ``fit`` / ``evaluate`` start."""
        from . import losses, optimizers

        if optimizer is not None:
            self.optimizer = optimizers.get(optimizer)
        if loss is not None:
            self.loss = losses.get(loss)
        if metrics is not None:
            if isinstance(metrics, (str, bytes)) or not isinstance(metrics, (list, tuple)):
                raise TypeError(f"{type(self).__name__}.compile: metrics must be a list, e.g. metrics=['accuracy'], got {metrics!r}")
            self.metric_specs = list(metrics)

    # -- shapes and types -----------------------------------------------------------------
    @property
    def built(self) -> bool:
        return bool(self.layers) and all(layer.built for layer in self.layers)

    @property
    def dtype(self) -> np.dtype | None:
        """The floating type of the first trainable layer (batches are cast to it), or None."""
        for layer in self.layers:
            if isinstance(layer, Neuron):
                return layer.dtype
        return None

    def _check_built(self) -> None:
        if not self.built:
            raise ValueError(
                f"{self.name}: the model is not built yet, so the shapes are unknown; pass input_shape=... "
                "or call it on a batch first"
            )

    def zero_grad(self) -> None:
        """Forget every layer's accumulated gradients."""
        for layer in self.layers:
            layer.zero_grad()

    # -- training (see nn_from_scratch.training) ------------------------------------------
    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One forward, backward and optimizer step on a batch; returns the batch loss."""
        return training.train_step(self, x, y)

    def fit(self, x: Any, y: Any = None, epochs: int = 1, batch_size: int = 32, validation_data: Any = None,
            validation_split: float = 0.0, shuffle: bool = True, callbacks: Iterable[Any] = (),
            verbose: int = 1, initial_epoch: int = 0, steps_per_epoch: int | None = None,
            sample_weight: Any = None, class_weight: Any = None, distributed: Any = None) -> Any:
        """Train in mini-batches on arrays or an iterable of batches; returns a ``History``.
        See :func:`nn_from_scratch.training.fit` (``distributed=True``: data-parallel over MPI
        ranks, :mod:`nn_from_scratch.distributed`)."""
        return training.fit(self, x, y, epochs=epochs, batch_size=batch_size, validation_data=validation_data,
                            validation_split=validation_split, shuffle=shuffle, callbacks=callbacks, verbose=verbose,
                            initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
                            sample_weight=sample_weight, class_weight=class_weight,
                            strategy=distributed_training.get_strategy(distributed))

    def evaluate(self, x: Any, y: Any = None, batch_size: int = 32, verbose: int = 0, return_dict: bool = False,
                 sample_weight: Any = None, steps: int | None = None) -> Any:
        """Loss and metrics in inference mode. See :func:`nn_from_scratch.training.evaluate`."""
        return training.evaluate(self, x, y, batch_size=batch_size, verbose=verbose, return_dict=return_dict,
                                 sample_weight=sample_weight, steps=steps)

    def predict(self, x: Any, batch_size: int | None = 32, verbose: int = 0) -> np.ndarray:
        """Outputs in inference mode. See :func:`nn_from_scratch.training.predict`."""
        return training.predict(self, x, batch_size=batch_size, verbose=verbose)

    # -- parameters -----------------------------------------------------------------------
    def parameters(self) -> Iterable[tuple[str, np.ndarray]]:
        """``("{layer index}.{name}", array)`` for every trainable array."""
        for i, layer in enumerate(self.layers):
            for name, p in layer.parameters().items():
                yield f"{i}.{name}", p

    def buffers(self) -> Iterable[tuple[str, np.ndarray]]:
        for i, layer in enumerate(self.layers):
            for name, b in layer.buffers().items():
                yield f"{i}.{name}", b

    def count_params(self) -> int:
        """The number of trainable values."""
        return sum(layer.count_params() for layer in self.layers)

    def get_weights(self) -> list[np.ndarray]:
        """Copies of every parameter and buffer, layer by layer (Keras' ``get_weights``)."""
        return [a.copy() for layer in self.layers for a in (*layer.parameters().values(), *layer.buffers().values())]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Write arrays from :meth:`get_weights` back, in place (optimizer state stays attached)."""
        targets = [(layer, name, a) for layer in self.layers
                   for name, a in (*layer.parameters().items(), *layer.buffers().items())]
        if len(weights) != len(targets):
            raise ValueError(f"{type(self).__name__}.set_weights: expected {len(targets)} arrays, got {len(weights)}")
        for (layer, name, target), value in zip(targets, weights):
            value = np.asarray(value)
            if value.shape != target.shape:
                raise ValueError(f"{layer.name}: expected {name} of shape {target.shape}, got {value.shape}")
        for (_, _, target), value in zip(targets, weights):
            target[...] = value

    # -- saving ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, include_optimizer: bool = True) -> None:
        """Write the architecture, weights, buffers (and optimizer state) to one safetensors file,
        atomically. See :mod:`nn_from_scratch.serialization`."""
        serialization.save_model(self, path, include_optimizer=include_optimizer)

    def load_weights(self, path: str | os.PathLike) -> None:
        """Load the weights and buffers of a file written by :meth:`save` into this model,
        checking every shape first. See :mod:`nn_from_scratch.serialization`."""
        serialization.load_weights(self, path)

    # -- summary --------------------------------------------------------------------------
    def summary_rows(self, names: dict[int, str]) -> list[tuple[str, ...]]:
        """One row per layer call for :meth:`summary`: ``(name (Type), output shape, params[, inputs])``."""
        raise NotImplementedError

    summary_columns: tuple[str, ...] = (" Layer (type)", "Output Shape", "Param #")
    summary_widths: tuple[float, ...] = (0.45, 0.85, 1.0)
    summary_line_length = 65

    def summary(self, line_length: int | None = None, print_fn: Callable[[str], Any] | None = None) -> None:
        """Print the layers, their output shapes and parameter counts, then the totals, in the
        layout of Keras 2's ``model.summary()`` (output shapes are channels-first here).

        Non-trainable params are the floating-point buffers (batch norm's running statistics),
        which Keras counts the same way.
        """
        self._check_built()
        print_fn = print_fn or print
        line_length = line_length or self.summary_line_length
        cols = [int(line_length * p) for p in self.summary_widths]

        def row(fields: Sequence[str]) -> list[str]:
            # Each field starts at its column; what does not fit (leaving a space before the
            # next column) wraps onto the following line, as in Keras.
            left, out = list(fields), []
            while any(left):
                line = ""
                for i, end in enumerate(cols):
                    cutoff = end - len(line) - (1 if i < len(cols) - 1 else 0)
                    line += left[i][:cutoff]
                    left[i] = left[i][cutoff:]
                    line += " " * (end - len(line))
                out.append(line)
            return out

        names = dict(zip(map(id, self.layers), display_names(self.layers)))
        rows = self.summary_rows(names)
        lines = [f'Model: "{self.name}"', "_" * line_length, *row(list(self.summary_columns)), "=" * line_length]
        for i, fields in enumerate(rows):
            lines += row(list(fields))
            lines.append("=" * line_length if i == len(rows) - 1 else " " * line_length)
        trainable = [a for layer in self.layers for a in layer.parameters().values()]
        frozen = [b for layer in self.layers for b in layer.buffers().values() if b.dtype.kind == "f"]
        n_train, n_frozen = sum(a.size for a in trainable), sum(b.size for b in frozen)
        b_train, b_frozen = sum(a.nbytes for a in trainable), sum(b.nbytes for b in frozen)
        lines += [
            f"Total params: {n_train + n_frozen:,} ({_readable_size(b_train + b_frozen)})",
            f"Trainable params: {n_train:,} ({_readable_size(b_train)})",
            f"Non-trainable params: {n_frozen:,} ({_readable_size(b_frozen)})",
            "_" * line_length,
        ]
        for line in lines:
            print_fn(line)


def display_names(layers: Sequence[Layer]) -> list[str]:
    """Keras-style names for the summary: ``convolution``, ``convolution_1``, ``re_lu`` ...

    A name the user gave is kept; the layers themselves are not renamed (their error messages
    keep the names the user knows).

    Args:
        layers: the model's layers, in order.

    Returns:
        One name per layer.

    Example:
        >>> from nn_from_scratch.neurons import Linear
        >>> from nn_from_scratch.nodes import ReLU
        >>> display_names([Linear(4, 3), ReLU(), Linear(3, 2, name="head"), ReLU()])
        ['linear', 're_lu', 'head', 're_lu_1']
    """
    counts: dict[str, int] = {}
    names = []
    for layer in layers:
        if layer.name != type(layer).__name__:
            names.append(layer.name)
            continue
        base = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", type(layer).__name__).lower()
        k = counts.get(base, 0)
        counts[base] = k + 1
        names.append(base if k == 0 else f"{base}_{k}")
    return names


def shape_text(shape: Shape) -> str:
    """A per-sample shape as the summary shows it, with ``None`` for the batch axis.

    Args:
        shape: a per-sample shape.

    Example:
        >>> shape_text((1, 28, 28))
        '(None, 1, 28, 28)'
    """
    return "(None, " + ", ".join(map(str, shape)) + ")"


def _readable_size(n_bytes: float) -> str:
    """Keras' ``readable_memory_size``: ``32.96 KB``."""
    for unit in ("Byte", "KB", "MB", "GB", "TB"):
        if n_bytes / 1024 < 1:
            return f"{n_bytes:.2f} {unit}"
        n_bytes /= 1024
    return f"{n_bytes:.2f} PB"
