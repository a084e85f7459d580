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
import warnings
from typing import Any, Iterable

import numpy as np

from .callbacks import CallbackList, History, TerminateOnNaN
from .data import ArrayBatches, IterableBatches, sample_weights
from .errors import TrainingDivergedError
from .interfaces import TrainableModel
from .progress import tqdm
from .threads import adapt as adapt_threads
from .losses import check_model_output
from . import metrics as metrics_module


def _require(model: TrainableModel, what: str, optimizer: bool = True) -> None:
    if model.loss is None or (optimizer and model.optimizer is None):
        needs = "a loss and an optimizer (pass loss=... and optimizer=...)" if optimizer else "a loss (pass loss=...)"
        raise ValueError(f"{type(model).__name__}: {what} needs {needs}")
    # A final softmax/sigmoid with a loss on logits (or the reverse) is refused, never trained.
    check_model_output(model, what)


def check_xy(model: TrainableModel, x: Any, y: Any, who: str) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``y`` as arrays with the same number of samples, or a clear error.

    Args:
        model: the model (a ``Sequential``, a graph ``Model`` or any :class:`~nn_from_scratch.interfaces.TrainableModel`).
        x: the inputs, array-like, (N, ...).
        y: the targets, array-like, (N, ...).
        who: the caller's name for error messages (``"fit"``, ``"evaluate"``).

    Returns:
        ``(x, y)`` as NumPy arrays.

    Example:
        >>> from nn_from_scratch.model import Sequential
        >>> from nn_from_scratch.neurons import Linear
        >>> from nn_from_scratch.losses import SoftMaxLoss
        >>> from nn_from_scratch.optimizers import SGD
        >>> model = Sequential([Linear(4, 3)], loss=SoftMaxLoss(), optimizer=SGD(lr=0.1), seed=0)
        >>> x, y = np.random.default_rng(0).normal(size=(8, 4)), np.arange(8) % 3
        >>> xs, ys = check_xy(model, x.tolist(), y, "fit")
        >>> xs.shape, ys.shape
        ((8, 4), (8,))
        >>> check_xy(model, x, y[:5], "fit")
        Traceback (most recent call last):
        ...
        ValueError: Sequential.fit: x has 8 samples but y has 5
    """
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 1 or y.ndim < 1:
        raise ValueError(f"{type(model).__name__}.{who}: x and y must be batches (N, ...), got shapes {x.shape} and {y.shape}")
    if len(x) != len(y):
        raise ValueError(f"{type(model).__name__}.{who}: x has {len(x)} samples but y has {len(y)}")
    return x, y


def cast_batch(model: TrainableModel, x: np.ndarray) -> np.ndarray:
    """``x`` in the model's floating type (a no-op when it already is).

    Args:
        model: the model (a ``Sequential``, a graph ``Model`` or any :class:`~nn_from_scratch.interfaces.TrainableModel`).
        x: a batch, (N, ...).

    Returns:
        ``x`` cast to ``model.dtype``.

    Example:
        >>> from nn_from_scratch.model import Sequential
        >>> from nn_from_scratch.neurons import Linear
        >>> from nn_from_scratch.losses import SoftMaxLoss
        >>> from nn_from_scratch.optimizers import SGD
        >>> model = Sequential([Linear(4, 3)], loss=SoftMaxLoss(), optimizer=SGD(lr=0.1), seed=0)
        >>> x, y = np.random.default_rng(0).normal(size=(8, 4)), np.arange(8) % 3
        >>> model.build((4,))
        >>> cast_batch(model, x).dtype
        dtype('float32')
    """
    dtype = model.dtype
    return x.astype(dtype) if dtype is not None and x.dtype != dtype else x


def model_metrics(model: TrainableModel) -> list[metrics_module.Metric]:
    """Fresh metrics for a pass: what ``compile(metrics=...)`` asked for, else the loss's default accuracy.

    Args:
        model: the model (a ``Sequential``, a graph ``Model`` or any :class:`~nn_from_scratch.interfaces.TrainableModel`).

    Returns:
        A list of fresh :class:`~nn_from_scratch.metrics.Metric` objects.

    Example:
        >>> from nn_from_scratch.model import Sequential
        >>> from nn_from_scratch.neurons import Linear
        >>> from nn_from_scratch.losses import SoftMaxLoss
        >>> from nn_from_scratch.optimizers import SGD
        >>> model = Sequential([Linear(4, 3)], loss=SoftMaxLoss(), optimizer=SGD(lr=0.1), seed=0)
        >>> x, y = np.random.default_rng(0).normal(size=(8, 4)), np.arange(8) % 3
        >>> [type(m).__name__ for m in model_metrics(model)]
        ['CategoricalAccuracy']
    """
    specs = getattr(model, "metric_specs", None)
    if specs is None:
        return metrics_module.default_metrics(model.loss, model.output_shape)
    return [metrics_module.get(spec, model.loss, model.output_shape) for spec in specs]


def train_batch(model: TrainableModel, x: np.ndarray, y: np.ndarray,
                sample_weight: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """Forward in training mode; when the loss is finite, backward and one optimizer step.

    Returns the batch loss and the model's output. A NaN/inf loss leaves the weights untouched.
    With ``sample_weight`` the loss is ``sum_n w_n l_n / N`` (Keras' ``sum_over_batch_size``).

    Args:
        model: the model (a ``Sequential``, a graph ``Model`` or any :class:`~nn_from_scratch.interfaces.TrainableModel`).
        x: a batch of inputs, (N, ...), already in the model's dtype.
        y: the batch's targets, (N, ...).
        sample_weight: per-sample weights, (N,), or None.

    Returns:
        ``(loss, output)``: the batch loss (a float) and the model's output, (N, ...).

    Example:
        >>> from nn_from_scratch.model import Sequential
        >>> from nn_from_scratch.neurons import Linear
        >>> from nn_from_scratch.losses import SoftMaxLoss
        >>> from nn_from_scratch.optimizers import SGD
        >>> model = Sequential([Linear(4, 3)], loss=SoftMaxLoss(), optimizer=SGD(lr=0.1), seed=0)
        >>> x, y = np.random.default_rng(0).normal(size=(8, 4)), np.arange(8) % 3
        >>> model.build((4,))
        >>> loss, out = train_batch(model, cast_batch(model, x), y)
        >>> round(loss, 4), out.shape
        (1.402, (8, 3))
    """
    # The forward pass updates buffers (batch norm's running statistics). They are put back when
    # the batch is not applied -- a NaN/inf loss, or an exception or Ctrl-C before the optimizer
    # step -- so the model is left exactly as before the batch (issue 13, items 6 and 8).
    adapt_threads()  # BLAS threads follow the load unless chosen (threads.py, issue 9)
    buffers = [(b, b.copy()) for layer in model.layers for b in layer.buffers().values()]
    try:
        model.zero_grad()
        output = model.forward(x, training=True)
        if sample_weight is None:
            loss = float(model.loss.forward(output, y))
        else:
            loss = float(model.loss.weighted_forward(output, y, sample_weight))
        if math.isfinite(loss):
            model.backward(model.loss.backward() if sample_weight is None else model.loss.weighted_backward(),
                           need_input_grad=False)
    except BaseException:
        _restore_buffers(buffers)
        model.zero_grad()
        raise
    if math.isfinite(loss):
        model.optimizer.step(model.layers)  # all or nothing, even under Ctrl-C
    else:
        _restore_buffers(buffers)
    model.zero_grad()
    return loss, output


def _restore_buffers(saved: list[tuple[np.ndarray, np.ndarray]]) -> None:
    for target, value in saved:
        target[...] = value


def train_step(model: TrainableModel, x: Any, y: Any) -> float:
    """One forward, backward and optimizer step on a batch; returns the batch loss.

    A NaN or infinite loss raises :class:`TrainingDivergedError` before any weight changes.

    Args:
        model: the model (a ``Sequential``, a graph ``Model`` or any :class:`~nn_from_scratch.interfaces.TrainableModel`).
        x: a batch of inputs, (N, ...).
        y: the batch's targets, (N, ...).

    Returns:
        The batch loss, a float.

    Example:
        >>> from nn_from_scratch.model import Sequential
        >>> from nn_from_scratch.neurons import Linear
        >>> from nn_from_scratch.losses import SoftMaxLoss
        >>> from nn_from_scratch.optimizers import SGD
        >>> model = Sequential([Linear(4, 3)], loss=SoftMaxLoss(), optimizer=SGD(lr=0.1), seed=0)
        >>> x, y = np.random.default_rng(0).normal(size=(8, 4)), np.arange(8) % 3
        >>> round(train_step(model, x, y), 4)
        1.402
        >>> round(train_step(model, x, y), 4)  # one SGD step later
        1.3795
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


def _is_arrays(x: Any, y: Any) -> bool:
    """Arrays (with targets) rather than an iterable of batches."""
    return y is not None or isinstance(x, np.ndarray)


def batch_source(model: TrainableModel, x: Any, y: Any, batch_size: int, shuffle: bool, sample_weight: Any,
                 class_weight: Any, steps_per_epoch: int | None, who: str) -> ArrayBatches | IterableBatches:
    """Where a pass's batches come from: in-memory arrays, or an iterable of ``(x, y[, w])`` batches.

    Args:
        model: the model (a ``Sequential``, a graph ``Model`` or any :class:`~nn_from_scratch.interfaces.TrainableModel`).
        x: the inputs (an array), or an iterable of ``(x, y[, w])`` batches.
        y: the targets, or None with an iterable.
        batch_size: samples per batch (arrays only).
        shuffle: a fresh order every epoch (arrays only).
        sample_weight: per-sample weights, (N,), or None.
        class_weight: ``{class: weight}``, or None.
        steps_per_epoch: batches per epoch from an iterable, or None.
        who: the caller's name for error messages (``"fit"``, ``"evaluate"``).

    Returns:
        An :class:`~nn_from_scratch.data.ArrayBatches` or :class:`~nn_from_scratch.data.IterableBatches`.

    Example:
        >>> from nn_from_scratch.model import Sequential
        >>> from nn_from_scratch.neurons import Linear
        >>> from nn_from_scratch.losses import SoftMaxLoss
        >>> from nn_from_scratch.optimizers import SGD
        >>> model = Sequential([Linear(4, 3)], loss=SoftMaxLoss(), optimizer=SGD(lr=0.1), seed=0)
        >>> x, y = np.random.default_rng(0).normal(size=(8, 4)), np.arange(8) % 3
        >>> source = batch_source(model, x, y, 4, True, None, None, None, "fit")
        >>> type(source).__name__, [len(xb) for xb, yb, wb in source.epoch(model.rng)]
        ('ArrayBatches', [4, 4])
    """
    if _is_arrays(x, y):
        if y is None:
            raise ValueError(f"{type(model).__name__}.{who}: y is required with array inputs")
        x, y = check_xy(model, x, y, who)
        weights = sample_weights(y, sample_weight, class_weight, f"{type(model).__name__}.{who}")
        return ArrayBatches(x, y, batch_size, shuffle, weights)
    if sample_weight is not None or class_weight is not None:
        raise ValueError(f"{type(model).__name__}.{who}: with batches from an iterable, put the sample weights in "
                         "each batch as (x, y, sample_weight)")
    return IterableBatches(x, steps_per_epoch, f"{type(model).__name__}.{who}")


def _validation_split(
    model: TrainableModel, x: Any, y: Any, validation_data: Any, validation_split: float
) -> tuple[Any, Any, Any]:
    if not 0.0 <= validation_split < 1.0:
        raise ValueError(f"{type(model).__name__}.fit: validation_split must be in [0, 1), got {validation_split}")
    if validation_data is None and validation_split > 0:
        if not _is_arrays(x, y):
            raise ValueError(f"{type(model).__name__}.fit: validation_split needs arrays; pass validation_data= with an iterable")
        x, y = check_xy(model, x, y, "fit")
        # Keras holds out the *last* samples, before shuffling, and rounds the training part up.
        split_at = int(math.ceil(len(x) * (1.0 - validation_split)))
        validation_data = (x[split_at:], y[split_at:])
        x, y = x[:split_at], y[:split_at]
    if validation_data is not None and isinstance(validation_data, (tuple, list)):
        if len(validation_data) not in (2, 3):
            raise ValueError(f"{type(model).__name__}.fit: validation_data must be a pair (x_val, y_val)")
        checked = check_xy(model, *validation_data[:2], "fit (validation_data)")
        validation_data = None if len(checked[0]) == 0 else (*checked, *validation_data[2:])
    return x, y, validation_data


def fit(
    model: TrainableModel,
    x: Any,
    y: Any = None,
    epochs: int = 1,
    batch_size: int = 32,
    validation_data: Any = None,
    validation_split: float = 0.0,
    shuffle: bool = True,
    callbacks: Iterable[Any] = (),
    verbose: int = 1,
    initial_epoch: int = 0,
    steps_per_epoch: int | None = None,
    sample_weight: Any = None,
    class_weight: Any = None,
    strategy: Any = None,
) -> History:
    """Train ``model`` for ``epochs`` passes over the data in mini-batches; returns a ``History``.

    * ``x``, ``y``: arrays (``y`` integer classes ``(N,)``, one-hot ``(N, K)`` or whatever the loss
      takes), or ``x`` alone as an iterable of ``(x, y)`` / ``(x, y, sample_weight)`` batches: a
      generator, a list, a :class:`~nn_from_scratch.data.Dataset`.
    * ``shuffle``: a fresh order every epoch, drawn from the model's generator. The data is
      never copied whole: each batch is gathered by index and cast to the model's dtype.
      The last batch may be smaller than ``batch_size`` (as in Keras).
    * ``steps_per_epoch``: batches per epoch from an iterable (see :class:`~nn_from_scratch.data.IterableBatches`).
    * ``initial_epoch``: the epoch to start at (to continue a run); epochs ``initial_epoch .. epochs - 1`` run.
    * ``sample_weight`` ``(N,)`` and ``class_weight`` ``{class: weight}``: each sample's loss is
      weighted by their product and the batch loss is ``sum_n w_n l_n / N``, as Keras does.
    * ``validation_split``: the *last* fraction of ``x``/``y`` (taken before shuffling, as
      in Keras) is held out; ``validation_data=(x_val, y_val)`` (or an iterable of batches) takes precedence.
    * ``history.history`` maps ``loss``, each metric (and ``val_loss``, ``val_<metric>``)
      to one value per epoch; ``loss`` and the metrics are means over the epoch's batches
      in training mode, as Keras reports them.
    * ``callbacks``: :class:`~nn_from_scratch.callbacks.Callback` objects.
      :class:`~nn_from_scratch.callbacks.TerminateOnNaN` is always on: a NaN/inf loss raises
      :class:`TrainingDivergedError` (weights as before that batch) unless you pass
      ``TerminateOnNaN(raise_error=False)``, which stops quietly as Keras does.
    * ``verbose``: 0 silent, 1 a progress bar per epoch with the running loss and metrics,
      2 one line per epoch.
    * ``strategy``: data-parallel training, e.g. :class:`nn_from_scratch.distributed.DataParallel`;
      an object with the hooks ``setup``, ``teardown``, ``callbacks``, ``verbose``,
      ``epoch_order`` and ``train_batch`` (the loop knows no more of it).

    Args:
        model: the model (a ``Sequential``, a graph ``Model`` or any :class:`~nn_from_scratch.interfaces.TrainableModel`).
        x: the inputs, (N, ...), or an iterable of ``(x, y[, sample_weight])`` batches.
        y: the targets, (N,) classes or (N, K) one-hot (or what the loss takes); None with an iterable.
        epochs: the epoch to stop before.
        batch_size: samples per batch.
        validation_data: ``(x_val, y_val)`` or an iterable of batches, evaluated after each epoch.
        validation_split: the last fraction of ``x``/``y`` to hold out for validation.
        shuffle: a fresh order every epoch.
        callbacks: :class:`~nn_from_scratch.callbacks.Callback` objects.
        verbose: 0 silent, 1 a progress bar, 2 one line per epoch.
        initial_epoch: the epoch to start at.
        steps_per_epoch: batches per epoch from an iterable.
        sample_weight: per-sample weights, (N,).
        class_weight: ``{class: weight}``.
        strategy: a data-parallel strategy, or None.

    Returns:
        A :class:`~nn_from_scratch.callbacks.History`; ``history.history`` maps each name to one value per epoch.

    Example:
        >>> from nn_from_scratch.model import Sequential
        >>> from nn_from_scratch.neurons import Linear
        >>> from nn_from_scratch.losses import SoftMaxLoss
        >>> from nn_from_scratch.optimizers import SGD
        >>> model = Sequential([Linear(4, 3)], loss=SoftMaxLoss(), optimizer=SGD(lr=0.1), seed=0)
        >>> x, y = np.random.default_rng(0).normal(size=(8, 4)), np.arange(8) % 3
        >>> history = fit(model, x, y, epochs=2, batch_size=4, verbose=0)
        >>> sorted(history.history), len(history.history["loss"])
        (['accuracy', 'loss'], 2)
    """
    _require(model, "fit")
    epochs, batch_size, initial_epoch = int(epochs), int(batch_size), int(initial_epoch)
    if epochs < 0 or batch_size < 1 or initial_epoch < 0:
        raise ValueError(f"{type(model).__name__}.fit: epochs and initial_epoch must be >= 0 and batch_size >= 1, "
                         f"got {epochs}, {initial_epoch} and {batch_size}")
    x, y, validation_data = _validation_split(model, x, y, validation_data, validation_split)
    source = batch_source(model, x, y, batch_size, shuffle, sample_weight, class_weight, steps_per_epoch, "fit")
    if isinstance(source, ArrayBatches):
        if source.samples == 0:
            raise ValueError(f"{type(model).__name__}.fit: no training samples")
        model.ensure_built(source.x[:1])
    elif strategy is not None:
        raise ValueError(f"{type(model).__name__}.fit: distributed training takes arrays x, y (each rank shards the global batches)")

    history = History()
    user = list(callbacks)
    if strategy is not None:
        strategy.setup(model)
        user, verbose = strategy.callbacks(user), strategy.verbose(verbose)
    defaults = [] if any(isinstance(c, TerminateOnNaN) for c in user) else [TerminateOnNaN()]
    cbs = CallbackList(defaults + user + [history], model=model)  # History last, as Keras: it sees what others log
    model.history = history
    model.stop_training = False
    metrics = model_metrics(model)
    # What the epoch logs will hold (Keras 2's params["metrics"]): callbacks check their
    # settings against it before training (ModelCheckpoint's path fields).
    logged = ["loss", *(m.name for m in metrics)]
    cbs.set_params({"epochs": epochs, "steps": source.steps, "batch_size": batch_size, "samples": source.samples,
                    "verbose": verbose, "do_validation": validation_data is not None,
                    "metrics": logged + ([f"val_{k}" for k in logged] if validation_data is not None else [])})
    try:
        cbs.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            cbs.on_epoch_begin(epoch)
            epoch_logs = _run_epoch(model, source, metrics, cbs, epoch, epochs, verbose, validation_data, batch_size,
                                    strategy, watch=epoch == initial_epoch)
            model.epoch = epoch + 1  # epochs done: saved with the model, fit(initial_epoch=model.epoch) resumes
            cbs.on_epoch_end(epoch, epoch_logs)
            if model.stop_training or getattr(source, "exhausted", False):
                break
        cbs.on_train_end()
    except BaseException as error:
        if isinstance(error, TrainingDivergedError):
            error.history = history
        cbs.on_train_failure(error)  # on_train_end is not called: callbacks release their files here
        raise
    finally:
        if strategy is not None:
            strategy.teardown(model)
    return history


#: The guard-rail of :func:`_warn_if_exploding`: this many first steps of a fit are watched ...
EXPLOSION_WINDOW = 20
#: ... for a loss this many times the first one.
EXPLOSION_FACTOR = 100.0


def _warn_if_exploding(model: TrainableModel, first_loss: float, loss: float, step: int) -> bool:
    """Warn (once) when the loss grows by orders of magnitude in the first steps of training:
    the usual sign of a learning rate that is too high. Returns True when it warned."""
    if step >= EXPLOSION_WINDOW or not (first_loss > 0 and math.isfinite(loss) and loss > EXPLOSION_FACTOR * first_loss):
        return False
    lr = getattr(model.optimizer, "lr", None)
    warnings.warn(
        f"{type(model).__name__}.fit: the loss grew from {first_loss:.4g} to {loss:.4g} in the first {step + 1} steps; "
        f"the learning rate {lr} is probably too high (try one 10x smaller)",
        RuntimeWarning,
        stacklevel=4,
    )
    return True


def _run_epoch(
    model: TrainableModel,
    source: ArrayBatches | IterableBatches,
    metrics: list,
    cbs: CallbackList,
    epoch: int,
    epochs: int,
    verbose: int,
    validation_data: Any,
    batch_size: int,
    strategy: Any = None,
    watch: bool = False,
) -> dict[str, float]:
    """One pass over the training data; returns the epoch's logs (with validation, if any)."""
    for metric in metrics:
        metric.reset()
    loss_sum, seen = 0.0, 0
    started = time.perf_counter()
    bar = tqdm(total=source.steps, desc=f"Epoch {epoch + 1}/{epochs}", unit="batch", disable=verbose != 1,
               leave=True, file=sys.stdout)
    try:
        batches = source.epoch(model.rng, strategy.epoch_order) if strategy is not None else source.epoch(model.rng)
        for step, (xb, yb, wb) in enumerate(batches):
            cbs.on_batch_begin(step)
            if strategy is not None:
                if wb is not None:
                    raise ValueError(f"{type(model).__name__}.fit: sample weights are not supported in distributed training")
                # The strategy trains this rank's shard of the global batch and updates the metrics.
                loss, size = strategy.train_batch(model, source.x, source.y, source.last_index, metrics)
            else:
                model.ensure_built(xb[:1])
                loss, output = train_batch(model, cast_batch(model, xb), yb, wb)
                size = len(xb)
                for metric in metrics:
                    metric.update(output, yb)
            loss_sum += loss * size
            seen += size
            if watch and math.isfinite(loss):
                if step == 0:
                    first_loss = loss
                elif _warn_if_exploding(model, first_loss, loss, step):
                    watch = False
            logs = {"loss": loss_sum / seen, **{m.name: m.result() for m in metrics}}
            if verbose == 1:
                bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()}, refresh=False)
            bar.update(1)
            if not math.isfinite(loss):
                logs["batch_loss"] = loss
            cbs.on_batch_end(step, logs)
            if not math.isfinite(loss) and not model.stop_training:
                raise TrainingDivergedError(
                    f"{type(model).__name__}.fit: the loss became {loss} at epoch {epoch + 1}, batch {step + 1}; "
                    "training stopped."
                )
            if model.stop_training:
                break
        epoch_logs = {"loss": loss_sum / max(seen, 1), **{m.name: m.result() for m in metrics}}
        if validation_data is not None:
            if isinstance(validation_data, (tuple, list)):
                x_val, y_val, *w_val = validation_data
                val = evaluate(model, x_val, y_val, batch_size=batch_size, return_dict=True,
                               sample_weight=w_val[0] if w_val else None)
            else:
                val = evaluate(model, validation_data, batch_size=batch_size, return_dict=True)
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
    model: TrainableModel, x: Any, y: Any = None, batch_size: int = 32, verbose: int = 0, return_dict: bool = False,
    sample_weight: Any = None, steps: int | None = None,
) -> Any:
    """Loss and metrics over all of the data, in inference mode.

    ``x``, ``y`` are arrays, or ``x`` alone an iterable of ``(x, y[, sample_weight])`` batches
    (``steps`` of them, or all). Returns ``(loss, accuracy)`` as ``loss, acc = model.evaluate(x, y)``
    expects (Keras returns ``[loss, accuracy]`` for a model compiled with the accuracy metric);
    a model without metrics (a single regression output) returns the loss alone, as Keras does.
    ``return_dict=True`` gives ``{"loss": ..., "accuracy": ...}``. Both are exact means over
    the samples, whatever the batch size; with sample weights the loss is ``sum w_n l_n / N``.

    Args:
        model: the model (a ``Sequential``, a graph ``Model`` or any :class:`~nn_from_scratch.interfaces.TrainableModel`).
        x: the inputs, (N, ...), or an iterable of ``(x, y[, sample_weight])`` batches.
        y: the targets, or None with an iterable.
        batch_size: samples per batch (the result does not depend on it).
        verbose: 1 shows a progress bar.
        return_dict: return ``{"loss": ..., "accuracy": ...}``.
        sample_weight: per-sample weights, (N,), or None.
        steps: batches to take from an iterable (default: all).

    Returns:
        ``(loss, accuracy)``, the loss alone for a model without metrics, or a dict.

    Example:
        >>> from nn_from_scratch.model import Sequential
        >>> from nn_from_scratch.neurons import Linear
        >>> from nn_from_scratch.losses import SoftMaxLoss
        >>> from nn_from_scratch.optimizers import SGD
        >>> model = Sequential([Linear(4, 3)], loss=SoftMaxLoss(), optimizer=SGD(lr=0.1), seed=0)
        >>> x, y = np.random.default_rng(0).normal(size=(8, 4)), np.arange(8) % 3
        >>> loss, acc = evaluate(model, x, y)
        >>> sorted(evaluate(model, x, y, return_dict=True))
        ['accuracy', 'loss']
        >>> bool(np.isclose(loss, evaluate(model, x, y, batch_size=3)[0]))
        True
    """
    _require(model, "evaluate", optimizer=False)
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"{type(model).__name__}.evaluate: batch_size must be >= 1, got {batch_size}")
    source = batch_source(model, x, y, batch_size, False, sample_weight, None, steps, "evaluate")
    if isinstance(source, ArrayBatches):
        if source.samples == 0:
            raise ValueError(f"{type(model).__name__}.evaluate: no samples")
        model.ensure_built(source.x[:1])
    metrics = model_metrics(model)
    loss_sum, seen = 0.0, 0
    for xb, yb, wb in tqdm(source.epoch(model.rng), total=source.steps, disable=verbose != 1, desc="evaluate",
                           unit="batch", file=sys.stdout):
        model.ensure_built(xb[:1])
        adapt_threads()
        output = model.forward(cast_batch(model, xb), training=False)
        value = model.loss.forward(output, yb) if wb is None else model.loss.weighted_forward(output, yb, wb)
        loss_sum += float(value) * len(xb)
        seen += len(xb)
        for metric in metrics:
            metric.update(output, yb)
    if seen == 0:
        raise ValueError(f"{type(model).__name__}.evaluate: no samples")
    result = {"loss": loss_sum / seen, **{m.name: m.result() for m in metrics}}
    if return_dict:
        return result
    return (result["loss"], *(m.result() for m in metrics)) if metrics else result["loss"]


def predict(model: TrainableModel, x: Any, batch_size: int | None = 32, verbose: int = 0) -> np.ndarray:
    """The model's outputs, in inference mode, for any number of samples.

    ``batch_size=None`` runs all of ``x`` in one pass.

    Args:
        model: the model (a ``Sequential``, a graph ``Model`` or any :class:`~nn_from_scratch.interfaces.TrainableModel`).
        x: the inputs, (N, ...).
        batch_size: samples per pass, or None for one pass.
        verbose: 1 shows a progress bar.

    Returns:
        The outputs, (N, ...) as ``model.output_shape``.

    Example:
        >>> from nn_from_scratch.model import Sequential
        >>> from nn_from_scratch.neurons import Linear
        >>> from nn_from_scratch.losses import SoftMaxLoss
        >>> from nn_from_scratch.optimizers import SGD
        >>> model = Sequential([Linear(4, 3)], loss=SoftMaxLoss(), optimizer=SGD(lr=0.1), seed=0)
        >>> x, y = np.random.default_rng(0).normal(size=(8, 4)), np.arange(8) % 3
        >>> predict(model, x).shape
        (8, 3)
        >>> bool(np.allclose(predict(model, x, batch_size=None), predict(model, x, batch_size=3)))
        True
    """
    x = np.asarray(x)
    if x.ndim < 1:
        raise ValueError(f"{type(model).__name__}.predict: expected a batch (N, ...), got a scalar")
    if batch_size is not None and int(batch_size) < 1:
        raise ValueError(f"{type(model).__name__}.predict: batch_size must be >= 1, got {batch_size}")
    model.ensure_built(x[:1] if len(x) else x)
    if len(x) == 0:
        return np.empty((0,) + tuple(model.output_shape or ()), dtype=model.dtype or np.float64)
    adapt_threads()
    if batch_size is None or len(x) <= batch_size:
        return model.forward(cast_batch(model, x), training=False)
    starts = range(0, len(x), int(batch_size))
    return np.concatenate(
        [model.forward(cast_batch(model, x[i : i + batch_size]), training=False)
         for i in tqdm(starts, disable=verbose != 1, desc="predict", unit="batch", file=sys.stdout)]
    )
