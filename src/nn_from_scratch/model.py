"""``Sequential``: a stack of layers, trained end to end, with a Keras-style ``fit`` / ``evaluate``
/ ``predict`` / ``summary`` / ``save``.

Accuracy, the one metric every model reports, follows the loss: for
:class:`~nn_from_scratch.losses.BinaryCrossEntropy` it is the share of outputs whose logit
``> 0`` agrees with a target ``> 0.5`` (Keras' ``binary_accuracy`` on logits); for any other loss
with a vector of ``K > 1`` outputs it is the share of samples whose highest output is the true
class (labels integer or one-hot, as Keras' ``accuracy`` picks ``categorical`` or ``sparse``).
A model with a single non-binary output (regression) reports the loss only.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from tqdm.auto import tqdm

from . import initializers
from .interfaces import Layer, Neuron, Optimizer, Shape
from .losses import BinaryCrossEntropy, Loss


class TrainingDivergedError(FloatingPointError):
    """Raised when the loss becomes NaN or infinite. ``history`` holds what ``fit`` recorded."""

    history: Any = None


class Sequential:
    """Layers applied one after another: ``y = f_L(... f_2(f_1(x)))``.

    Layer shapes are inferred from ``input_shape`` (per sample, no batch size) or from the first
    input. With ``seed=``, every random draw of the model -- initial weights, shuffling,
    dropout -- comes from one ``numpy.random.Generator``, so the same seed gives the same model,
    bit for bit, after the same training.

    Training versus inference mode is the model's business: ``fit`` and ``train_step`` run the
    layers with ``layer.training = True``; ``predict``, ``evaluate`` and ``forward`` (by default)
    with ``False``, which turns dropout off and makes batch norm use its running statistics.
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
        self.layers: list[Layer] = []
        self.loss = loss
        self.optimizer = optimizer
        self.seed = seed
        self.name = name
        self.stop_training = False
        self.history: Any = None
        self.rng = np.random.default_rng(seed) if seed is not None else initializers.default_rng()
        for layer in layers:
            self.add(layer)
        if input_shape is not None:
            self.build(tuple(input_shape))
        elif self.layers and self.layers[0].built:
            # The first layer knows its input (e.g. Linear(800, 10)): every shape is known now.
            self.build(self.layers[0].input_shape)

    def add(self, layer: Layer) -> None:
        """Append a layer. Its random draws (weights, dropout masks) come from the model's generator."""
        if not isinstance(layer, Layer):
            raise TypeError(
                f"Sequential: layer {len(self.layers)} must be a Layer (Node or Neuron), got {type(layer).__name__}"
            )
        layer.rng = self.rng  # dropout and friends draw from the model's generator
        if self.seed is not None and isinstance(layer, Neuron) and not layer.user_weights and layer.parameters():
            # A layer that drew its weights at construction (its shapes were known then) draws
            # again, in order, from the model's generator.
            layer.reset_parameters(self.rng)
        self.layers.append(layer)

    def compile(self, optimizer: Optimizer | None = None, loss: Loss | None = None) -> None:
        """Set the optimizer and the loss (the Keras spelling of passing them to the constructor)."""
        if optimizer is not None:
            self.optimizer = optimizer
        if loss is not None:
            self.loss = loss

    # -- building -------------------------------------------------------------------------
    @property
    def built(self) -> bool:
        return bool(self.layers) and all(layer.built for layer in self.layers)

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

    def _build_for(self, x: np.ndarray) -> None:
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

    @property
    def dtype(self) -> np.dtype | None:
        """The floating type of the first trainable layer (batches are cast to it), or None."""
        for layer in self.layers:
            if isinstance(layer, Neuron):
                return layer.dtype
        return None

    # -- passes ---------------------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        x = np.asarray(x)
        self._build_for(x)
        for layer in self.layers:
            layer.training = training
            x = layer.forward(x)
        return x

    __call__ = forward

    def backward(self, dL_dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """Backpropagate ``dL_dy`` through every layer; return dL/dx of the model's input.

        With ``need_input_grad=False`` (what training uses) a first layer that can skip dL/dx
        (``can_skip_input_grad``: Convolution, Linear) does, and ``None`` may be returned --
        as torch skips the gradient of an input that does not require one.
        """
        for i, layer in enumerate(reversed(self.layers)):
            if not need_input_grad and i == len(self.layers) - 1 and layer.can_skip_input_grad:
                return layer.backward(dL_dy, need_input_grad=False)
            dL_dy = layer.backward(dL_dy)
        return dL_dy

    def _require(self, what: str) -> None:
        if self.loss is None or self.optimizer is None:
            raise ValueError(f"Sequential: {what} needs a loss and an optimizer (pass loss=... and optimizer=...)")

    def _train_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """Forward in training mode; when the loss is finite, backward and one optimizer step.

        Returns the batch loss and the logits. A NaN/inf loss leaves the weights untouched.
        """
        logits = self.forward(x, training=True)
        loss = float(self.loss.forward(logits, y))
        if math.isfinite(loss):
            for layer in self.layers:
                layer.zero_grad()
            self.backward(self.loss.backward(), need_input_grad=False)
            self.optimizer.step(self.layers)
            for layer in self.layers:
                layer.zero_grad()
        return loss, logits

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One forward, backward and optimizer step on a batch; returns the batch loss.

        A NaN or infinite loss raises :class:`TrainingDivergedError` before any weight changes.
        """
        self._require("train_step")
        loss, _ = self._train_batch(x, y)
        if not math.isfinite(loss):
            raise TrainingDivergedError(
                f"Sequential: the loss became {loss} at optimizer step {self.optimizer.iterations + 1}; "
                "training stopped. Try a smaller learning rate or check the inputs for NaN/inf."
            )
        return loss

    # -- metrics --------------------------------------------------------------------------
    def _accuracy_kind(self) -> str | None:
        if isinstance(self.loss, BinaryCrossEntropy):
            return "binary"
        shape = self.output_shape
        if shape is not None and len(shape) == 1 and shape[0] > 1:
            return "categorical"
        return None

    @staticmethod
    def _count_correct(kind: str | None, logits: np.ndarray, y: np.ndarray) -> tuple[int, int]:
        """(number right, number judged) for one batch; see the module docstring."""
        if kind == "binary":
            y = np.asarray(y)
            if y.shape != logits.shape:
                y = y.reshape(logits.shape)
            return int(np.count_nonzero((logits > 0) == (y > 0.5))), logits.size
        if kind == "categorical":
            y = np.asarray(y)
            labels = y.argmax(axis=1) if y.ndim == 2 and y.shape[1] > 1 else y.reshape(len(y))
            return int(np.count_nonzero(logits.argmax(axis=1) == labels)), len(logits)
        return 0, 0

    # -- Keras-style loops ----------------------------------------------------------------
    def _check_xy(self, x: Any, y: Any, who: str) -> tuple[np.ndarray, np.ndarray]:
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim < 1 or y.ndim < 1:
            raise ValueError(f"Sequential.{who}: x and y must be batches (N, ...), got shapes {x.shape} and {y.shape}")
        if len(x) != len(y):
            raise ValueError(f"Sequential.{who}: x has {len(x)} samples but y has {len(y)}")
        return x, y

    def _cast(self, x: np.ndarray) -> np.ndarray:
        dtype = self.dtype
        if dtype is not None and x.dtype != dtype:
            return x.astype(dtype)
        return x

    def fit(
        self,
        x: Any,
        y: Any,
        epochs: int = 1,
        batch_size: int = 32,
        validation_data: tuple[Any, Any] | None = None,
        validation_split: float = 0.0,
        shuffle: bool = True,
        callbacks: Iterable[Any] = (),
        verbose: int = 1,
    ) -> Any:
        """Train for ``epochs`` passes over ``(x, y)`` in mini-batches; returns a ``History``.

        * ``y``: integer classes ``(N,)`` or one-hot ``(N, K)`` (or whatever the loss takes).
        * ``shuffle``: a fresh order every epoch, drawn from the model's generator. The data is
          never copied whole: each batch is gathered by index and cast to the model's dtype.
          The last batch may be smaller than ``batch_size`` (as in Keras).
        * ``validation_split``: the *last* fraction of ``x``/``y`` (taken before shuffling, as
          in Keras) is held out; ``validation_data=(x_val, y_val)`` takes precedence.
        * ``history.history`` maps ``loss``, ``accuracy`` (and ``val_loss``, ``val_accuracy``)
          to one value per epoch; ``loss`` and ``accuracy`` are means over the epoch's batches
          in training mode, as Keras reports them.
        * ``callbacks``: :class:`~nn_from_scratch.callbacks.Callback` objects.
          :class:`~nn_from_scratch.callbacks.TerminateOnNaN` is always on: a NaN/inf loss raises
          :class:`TrainingDivergedError` (weights as before that batch) unless you pass
          ``TerminateOnNaN(raise_error=False)``, which stops quietly as Keras does.
        * ``verbose``: 0 silent, 1 a progress bar per epoch with the running loss and accuracy,
          2 one line per epoch.
        """
        from .callbacks import CallbackList, History, TerminateOnNaN

        self._require("fit")
        x, y = self._check_xy(x, y, "fit")
        epochs, batch_size = int(epochs), int(batch_size)
        if epochs < 0 or batch_size < 1:
            raise ValueError(f"Sequential.fit: epochs must be >= 0 and batch_size >= 1, got {epochs} and {batch_size}")
        if not 0.0 <= validation_split < 1.0:
            raise ValueError(f"Sequential.fit: validation_split must be in [0, 1), got {validation_split}")
        if validation_data is None and validation_split > 0:
            split_at = int(math.ceil(len(x) * (1.0 - validation_split)))
            validation_data = (x[split_at:], y[split_at:])
            x, y = x[:split_at], y[:split_at]
        if validation_data is not None:
            if len(validation_data) != 2:
                raise ValueError("Sequential.fit: validation_data must be a pair (x_val, y_val)")
            validation_data = self._check_xy(*validation_data, "fit (validation_data)")
            if len(validation_data[0]) == 0:
                validation_data = None
        n = len(x)
        if n == 0:
            raise ValueError("Sequential.fit: no training samples")
        self._build_for(x[:1])

        history = History()
        user = list(callbacks)
        defaults = [] if any(isinstance(c, TerminateOnNaN) for c in user) else [TerminateOnNaN()]
        cbs = CallbackList(defaults + user + [history], model=self)  # History last, as Keras: it sees what others log
        steps = (n + batch_size - 1) // batch_size
        cbs.set_params({"epochs": epochs, "steps": steps, "batch_size": batch_size, "samples": n, "verbose": verbose})
        self.history = history
        self.stop_training = False
        kind = self._accuracy_kind()
        try:
            cbs.on_train_begin()
            for epoch in range(epochs):
                cbs.on_epoch_begin(epoch)
                order = self.rng.permutation(n) if shuffle else None
                loss_sum, seen, correct, judged = 0.0, 0, 0, 0
                started = time.perf_counter()
                bar = tqdm(total=steps, desc=f"Epoch {epoch + 1}/{epochs}", unit="batch", disable=verbose != 1,
                           leave=True, file=sys.stdout)
                try:
                    for step in range(steps):
                        index = order[step * batch_size : (step + 1) * batch_size] if shuffle else slice(
                            step * batch_size, (step + 1) * batch_size)
                        xb, yb = self._cast(x[index]), y[index]
                        cbs.on_batch_begin(step)
                        loss, logits = self._train_batch(xb, yb)
                        nb = len(xb)
                        loss_sum += loss * nb
                        seen += nb
                        right, total = self._count_correct(kind, logits, yb)
                        correct, judged = correct + right, judged + total
                        logs = {"loss": loss_sum / seen}
                        if kind is not None:
                            logs["accuracy"] = correct / judged
                        if verbose == 1:
                            bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()}, refresh=False)
                        bar.update(1)
                        if not math.isfinite(loss):
                            logs["batch_loss"] = loss
                        cbs.on_batch_end(step, logs)
                        if not math.isfinite(loss) and not self.stop_training:
                            raise TrainingDivergedError(
                                f"Sequential.fit: the loss became {loss} at epoch {epoch + 1}, batch {step + 1}; "
                                "training stopped."
                            )
                        if self.stop_training:
                            break
                    epoch_logs = {"loss": loss_sum / max(seen, 1)}
                    if kind is not None:
                        epoch_logs["accuracy"] = correct / max(judged, 1)
                    if validation_data is not None:
                        val = self.evaluate(*validation_data, batch_size=batch_size, return_dict=True)
                        epoch_logs.update({f"val_{k}": v for k, v in val.items()})
                    if verbose == 1:
                        bar.set_postfix({k: f"{v:.4f}" for k, v in epoch_logs.items()}, refresh=True)
                finally:
                    bar.close()
                if verbose == 2:
                    metrics = " - ".join(f"{k}: {v:.4f}" for k, v in epoch_logs.items())
                    print(f"Epoch {epoch + 1}/{epochs} - {time.perf_counter() - started:.1f}s - {metrics}")
                cbs.on_epoch_end(epoch, epoch_logs)
                if self.stop_training:
                    break
            cbs.on_train_end()
        except TrainingDivergedError as error:
            error.history = history
            raise
        return history

    def evaluate(
        self, x: Any, y: Any, batch_size: int = 32, verbose: int = 0, return_dict: bool = False
    ) -> Any:
        """Loss and accuracy over all of ``(x, y)``, in inference mode.

        Returns ``(loss, accuracy)`` as ``loss, acc = model.evaluate(x, y)`` expects (Keras
        returns ``[loss, accuracy]`` for a model compiled with the accuracy metric); a model
        without accuracy (a single regression output) returns the loss alone, as Keras does.
        ``return_dict=True`` gives ``{"loss": ..., "accuracy": ...}``. Both are exact means over
        the samples, whatever the batch size.
        """
        if self.loss is None:
            raise ValueError("Sequential: evaluate needs a loss (pass loss=...)")
        x, y = self._check_xy(x, y, "evaluate")
        if len(x) == 0:
            raise ValueError("Sequential.evaluate: no samples")
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError(f"Sequential.evaluate: batch_size must be >= 1, got {batch_size}")
        self._build_for(x[:1])
        kind = self._accuracy_kind()
        loss_sum, correct, judged = 0.0, 0, 0
        for start in tqdm(range(0, len(x), batch_size), disable=verbose != 1, desc="evaluate", unit="batch",
                          file=sys.stdout):
            xb, yb = self._cast(x[start : start + batch_size]), y[start : start + batch_size]
            logits = self.forward(xb, training=False)
            loss_sum += float(self.loss.forward(logits, yb)) * len(xb)
            right, total = self._count_correct(kind, logits, yb)
            correct, judged = correct + right, judged + total
        result = {"loss": loss_sum / len(x)}
        if kind is not None:
            result["accuracy"] = correct / judged
        if return_dict:
            return result
        return (result["loss"], result["accuracy"]) if kind is not None else result["loss"]

    def predict(self, x: Any, batch_size: int | None = 32, verbose: int = 0) -> np.ndarray:
        """Outputs of the last layer, in inference mode, for any number of samples.

        ``batch_size=None`` runs all of ``x`` in one pass.
        """
        x = np.asarray(x)
        if x.ndim < 1:
            raise ValueError("Sequential.predict: expected a batch (N, ...), got a scalar")
        if batch_size is None or len(x) <= batch_size:
            if len(x) == 0:
                self._build_for(x)
                return np.empty((0,) + tuple(self.output_shape or ()), dtype=self.dtype or np.float64)
            return self.forward(self._cast(x), training=False)
        if int(batch_size) < 1:
            raise ValueError(f"Sequential.predict: batch_size must be >= 1, got {batch_size}")
        starts = range(0, len(x), int(batch_size))
        return np.concatenate(
            [self.forward(self._cast(x[i : i + batch_size]), training=False)
             for i in tqdm(starts, disable=verbose != 1, desc="predict", unit="batch", file=sys.stdout)]
        )

    # -- parameters -----------------------------------------------------------------------
    def parameters(self) -> Iterable[tuple[str, np.ndarray]]:
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
            raise ValueError(f"Sequential.set_weights: expected {len(targets)} arrays, got {len(weights)}")
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
        from .serialization import save_model

        save_model(self, path, include_optimizer=include_optimizer)

    def load_weights(self, path: str | os.PathLike) -> None:
        """Load the weights and buffers of a file written by :meth:`save` into this model,
        checking every shape first. See :mod:`nn_from_scratch.serialization`."""
        from .serialization import load_weights

        load_weights(self, path)

    # -- summary --------------------------------------------------------------------------
    def summary(self, line_length: int = 65, print_fn: Callable[[str], Any] | None = None) -> None:
        """Print the layers, their output shapes and parameter counts, then the totals, in the
        layout of Keras 2's ``model.summary()`` (output shapes are channels-first here).

        Non-trainable params are the floating-point buffers (batch norm's running statistics),
        which Keras counts the same way.
        """
        if not self.built:
            raise ValueError(
                f"{self.name}: the model is not built yet, so the shapes are unknown; pass input_shape=... "
                "or call it on a batch first"
            )
        print_fn = print_fn or print
        cols = [int(line_length * p) for p in (0.45, 0.85, 1.0)]

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

        names = _display_names(self.layers)
        lines = [f'Model: "{self.name}"', "_" * line_length, *row([" Layer (type)", "Output Shape", "Param #"]),
                 "=" * line_length]
        for i, (layer, name) in enumerate(zip(self.layers, names)):
            shape = "(None, " + ", ".join(map(str, layer.output_shape)) + ")"
            lines += row([f" {name} ({type(layer).__name__})", shape, str(layer.count_params())])
            lines.append("=" * line_length if i == len(self.layers) - 1 else " " * line_length)
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

    def __repr__(self) -> str:
        return f"Sequential([{', '.join(map(repr, self.layers))}])"


def _display_names(layers: Sequence[Layer]) -> list[str]:
    """Keras-style names for the summary: ``convolution``, ``convolution_1``, ``re_lu`` ...

    A name the user gave is kept; the layers themselves are not renamed (their error messages
    keep the names the user knows).
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


def _readable_size(n_bytes: float) -> str:
    """Keras' ``readable_memory_size``: ``32.96 KB``."""
    for unit in ("Byte", "KB", "MB", "GB", "TB"):
        if n_bytes / 1024 < 1:
            return f"{n_bytes:.2f} {unit}"
        n_bytes /= 1024
    return f"{n_bytes:.2f} PB"
