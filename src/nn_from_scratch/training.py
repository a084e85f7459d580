"""The training loop: ``fit``, ``evaluate``, ``predict`` and ``train_step`` for any model.

The loop knows a model only through :class:`~nn_from_scratch.interfaces.TrainableModel`
(forward, backward, zero_grad, its layers, loss, optimizer and generator), so ``Sequential``,
the graph ``Model`` and any future model share one loop. ``Sequential.fit(...)`` is
``training.fit(model, ...)``.

One optimizer step (:func:`train_batch`)::

    zero_grad -> forward (training mode) -> loss -> backward -> optimizer.step -> zero_grad

Gradients are zeroed before the backward (they accumulate) and again after the step, so that
between steps every ``_X_pd`` is empty and a manual ``backward`` (the seed notebook's Part 3)
reads exactly its own gradient.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Iterable

import numpy as np
from tqdm.auto import tqdm

from .callbacks import CallbackList, History, TerminateOnNaN
from .errors import TrainingDivergedError
from .interfaces import TrainableModel
from . import metrics as metrics_module


def _require(model: TrainableModel, what: str, optimizer: bool = True) -> None:
    if model.loss is None or (optimizer and model.optimizer is None):
        needs = "a loss and an optimizer (pass loss=... and optimizer=...)" if optimizer else "a loss (pass loss=...)"
        raise ValueError(f"{type(model).__name__}: {what} needs {needs}")


def check_xy(model: TrainableModel, x: Any, y: Any, who: str) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``y`` as arrays with the same number of samples, or a clear error."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 1 or y.ndim < 1:
        raise ValueError(f"{type(model).__name__}.{who}: x and y must be batches (N, ...), got shapes {x.shape} and {y.shape}")
    if len(x) != len(y):
        raise ValueError(f"{type(model).__name__}.{who}: x has {len(x)} samples but y has {len(y)}")
    return x, y


def cast_batch(model: TrainableModel, x: np.ndarray) -> np.ndarray:
    """``x`` in the model's floating type (a no-op when it already is)."""
    dtype = model.dtype
    return x.astype(dtype) if dtype is not None and x.dtype != dtype else x


def model_metrics(model: TrainableModel) -> list[metrics_module.Metric]:
    """Fresh metrics for a pass: what ``compile(metrics=...)`` asked for, else the loss's default accuracy."""
    specs = getattr(model, "metric_specs", None)
    if specs is None:
        return metrics_module.default_metrics(model.loss, model.output_shape)
    return [metrics_module.get(spec, model.loss, model.output_shape) for spec in specs]


def train_batch(model: TrainableModel, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Forward in training mode; when the loss is finite, backward and one optimizer step.

    Returns the batch loss and the model's output. A NaN/inf loss leaves the weights untouched.
    """
    model.zero_grad()
    output = model.forward(x, training=True)
    loss = float(model.loss.forward(output, y))
    if math.isfinite(loss):
        model.backward(model.loss.backward(), need_input_grad=False)
        model.optimizer.step(model.layers)
    model.zero_grad()
    return loss, output


def train_step(model: TrainableModel, x: Any, y: Any) -> float:
    """One forward, backward and optimizer step on a batch; returns the batch loss.

    A NaN or infinite loss raises :class:`TrainingDivergedError` before any weight changes.
    """
    _require(model, "train_step")
    x, y = check_xy(model, x, y, "train_step")
    model.ensure_built(x[:1])
    loss, _ = train_batch(model, cast_batch(model, x), y)
    if not math.isfinite(loss):
        raise TrainingDivergedError(
            f"{type(model).__name__}: the loss became {loss} at optimizer step {model.optimizer.iterations + 1}; "
            "training stopped. Try a smaller learning rate or check the inputs for NaN/inf."
        )
    return loss


def _validation_split(
    model: TrainableModel, x: np.ndarray, y: np.ndarray, validation_data: Any, validation_split: float
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    if not 0.0 <= validation_split < 1.0:
        raise ValueError(f"{type(model).__name__}.fit: validation_split must be in [0, 1), got {validation_split}")
    if validation_data is None and validation_split > 0:
        # Keras holds out the *last* samples, before shuffling, and rounds the training part up.
        split_at = int(math.ceil(len(x) * (1.0 - validation_split)))
        validation_data = (x[split_at:], y[split_at:])
        x, y = x[:split_at], y[:split_at]
    if validation_data is not None:
        if len(validation_data) != 2:
            raise ValueError(f"{type(model).__name__}.fit: validation_data must be a pair (x_val, y_val)")
        validation_data = check_xy(model, *validation_data, "fit (validation_data)")
        if len(validation_data[0]) == 0:
            validation_data = None
    return x, y, validation_data


def fit(
    model: TrainableModel,
    x: Any,
    y: Any,
    epochs: int = 1,
    batch_size: int = 32,
    validation_data: tuple[Any, Any] | None = None,
    validation_split: float = 0.0,
    shuffle: bool = True,
    callbacks: Iterable[Any] = (),
    verbose: int = 1,
    distributed: Any = None,
) -> History:
    """Train ``model`` for ``epochs`` passes over ``(x, y)`` in mini-batches; returns a ``History``.

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
    * ``distributed``: ``True`` or a :class:`~nn_from_scratch.distributed.DataParallel` trains
      data-parallel over the ranks of an MPI job (run the script under ``mpiexec``): the same
      global batches as one process, sharded over the ranks, one gradient allreduce per step,
      synchronised batch norm, global logs, progress and file-writing callbacks on rank 0.
    """
    _require(model, "fit")
    x, y = check_xy(model, x, y, "fit")
    epochs, batch_size = int(epochs), int(batch_size)
    if epochs < 0 or batch_size < 1:
        raise ValueError(f"{type(model).__name__}.fit: epochs must be >= 0 and batch_size >= 1, got {epochs} and {batch_size}")
    x, y, validation_data = _validation_split(model, x, y, validation_data, validation_split)
    n = len(x)
    if n == 0:
        raise ValueError(f"{type(model).__name__}.fit: no training samples")
    model.ensure_built(x[:1])
    strategy = None
    if distributed is not None and distributed is not False:
        from .distributed import get_strategy

        strategy = get_strategy(distributed)
        verbose = strategy.verbose(verbose)

    history = History()
    user = list(callbacks) if strategy is None else strategy.callbacks(list(callbacks))
    defaults = [] if any(isinstance(c, TerminateOnNaN) for c in user) else [TerminateOnNaN()]
    cbs = CallbackList(defaults + user + [history], model=model)  # History last, as Keras: it sees what others log
    steps = (n + batch_size - 1) // batch_size
    cbs.set_params({"epochs": epochs, "steps": steps, "batch_size": batch_size, "samples": n, "verbose": verbose})
    model.history = history
    model.stop_training = False
    metrics = model_metrics(model)
    if strategy is not None:
        strategy.setup(model)
    try:
        cbs.on_train_begin()
        for epoch in range(epochs):
            cbs.on_epoch_begin(epoch)
            order = model.rng.permutation(n) if shuffle else None
            if strategy is not None:
                order = strategy.epoch_order(order)
            epoch_logs = _run_epoch(model, x, y, order, batch_size, steps, metrics, cbs, epoch, epochs, verbose,
                                    validation_data, strategy)
            cbs.on_epoch_end(epoch, epoch_logs)
            if model.stop_training:
                break
        cbs.on_train_end()
    except TrainingDivergedError as error:
        error.history = history
        raise
    finally:
        if strategy is not None:
            strategy.teardown(model)
    return history


def _run_epoch(
    model: TrainableModel,
    x: np.ndarray,
    y: np.ndarray,
    order: np.ndarray | None,
    batch_size: int,
    steps: int,
    metrics: list,
    cbs: CallbackList,
    epoch: int,
    epochs: int,
    verbose: int,
    validation_data: tuple[np.ndarray, np.ndarray] | None,
    strategy: Any = None,
) -> dict[str, float]:
    """One pass over the training data; returns the epoch's logs (with validation, if any)."""
    for metric in metrics:
        metric.reset()
    loss_sum, seen = 0.0, 0
    started = time.perf_counter()
    bar = tqdm(total=steps, desc=f"Epoch {epoch + 1}/{epochs}", unit="batch", disable=verbose != 1,
               leave=True, file=sys.stdout)
    try:
        for step in range(steps):
            window = slice(step * batch_size, (step + 1) * batch_size)
            index = order[window] if order is not None else window
            if strategy is not None:  # this rank's shard; global loss and metrics
                cbs.on_batch_begin(step)
                loss, n_batch = strategy.train_batch(model, x, y, index, metrics)
                loss_sum += loss * n_batch
                seen += n_batch
            else:
                xb, yb = cast_batch(model, x[index]), y[index]
                cbs.on_batch_begin(step)
                loss, output = train_batch(model, xb, yb)
                loss_sum += loss * len(xb)
                seen += len(xb)
                for metric in metrics:
                    metric.update(output, yb)
            logs = {"loss": loss_sum / seen, **{m.name: m.result() for m in metrics}}
            if verbose == 1:
                bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()}, refresh=False)
            bar.update(1)
            if not math.isfinite(loss):
                logs["batch_loss"] = loss
            cbs.on_batch_end(step, logs)
            if not math.isfinite(loss) and not model.stop_training:
                raise TrainingDivergedError(
                    f"{type(model).__name__}.fit: the loss became {loss} at epoch {epoch + 1}, batch {step + 1}; training stopped."
                )
            if model.stop_training:
                break
        epoch_logs = {"loss": loss_sum / max(seen, 1), **{m.name: m.result() for m in metrics}}
        if validation_data is not None:
            val = evaluate(model, *validation_data, batch_size=batch_size, return_dict=True)
            epoch_logs.update({f"val_{k}": v for k, v in val.items()})
        if verbose == 1:
            bar.set_postfix({k: f"{v:.4f}" for k, v in epoch_logs.items()}, refresh=True)
    finally:
        bar.close()
    if verbose == 2:
        shown = " - ".join(f"{k}: {v:.4f}" for k, v in epoch_logs.items())
        print(f"Epoch {epoch + 1}/{epochs} - {time.perf_counter() - started:.1f}s - {shown}")
    return epoch_logs


def evaluate(
    model: TrainableModel, x: Any, y: Any, batch_size: int = 32, verbose: int = 0, return_dict: bool = False
) -> Any:
    """Loss and accuracy over all of ``(x, y)``, in inference mode.

    Returns ``(loss, accuracy)`` as ``loss, acc = model.evaluate(x, y)`` expects (Keras
    returns ``[loss, accuracy]`` for a model compiled with the accuracy metric); a model
    without accuracy (a single regression output) returns the loss alone, as Keras does.
    ``return_dict=True`` gives ``{"loss": ..., "accuracy": ...}``. Both are exact means over
    the samples, whatever the batch size.
    """
    _require(model, "evaluate", optimizer=False)
    x, y = check_xy(model, x, y, "evaluate")
    if len(x) == 0:
        raise ValueError(f"{type(model).__name__}.evaluate: no samples")
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"{type(model).__name__}.evaluate: batch_size must be >= 1, got {batch_size}")
    model.ensure_built(x[:1])
    metrics = model_metrics(model)
    loss_sum = 0.0
    for start in tqdm(range(0, len(x), batch_size), disable=verbose != 1, desc="evaluate", unit="batch",
                      file=sys.stdout):
        xb, yb = cast_batch(model, x[start : start + batch_size]), y[start : start + batch_size]
        output = model.forward(xb, training=False)
        loss_sum += float(model.loss.forward(output, yb)) * len(xb)
        for metric in metrics:
            metric.update(output, yb)
    result = {"loss": loss_sum / len(x), **{m.name: m.result() for m in metrics}}
    if return_dict:
        return result
    return (result["loss"], *(m.result() for m in metrics)) if metrics else result["loss"]


def predict(model: TrainableModel, x: Any, batch_size: int | None = 32, verbose: int = 0) -> np.ndarray:
    """The model's outputs, in inference mode, for any number of samples.

    ``batch_size=None`` runs all of ``x`` in one pass.
    """
    x = np.asarray(x)
    if x.ndim < 1:
        raise ValueError(f"{type(model).__name__}.predict: expected a batch (N, ...), got a scalar")
    if batch_size is not None and int(batch_size) < 1:
        raise ValueError(f"{type(model).__name__}.predict: batch_size must be >= 1, got {batch_size}")
    model.ensure_built(x[:1] if len(x) else x)
    if len(x) == 0:
        return np.empty((0,) + tuple(model.output_shape or ()), dtype=model.dtype or np.float64)
    if batch_size is None or len(x) <= batch_size:
        return model.forward(cast_batch(model, x), training=False)
    starts = range(0, len(x), int(batch_size))
    return np.concatenate(
        [model.forward(cast_batch(model, x[i : i + batch_size]), training=False)
         for i in tqdm(starts, disable=verbose != 1, desc="predict", unit="batch", file=sys.stdout)]
    )
