"""Callbacks for :meth:`Sequential.fit <nn_from_scratch.model.Sequential.fit>`: history, learning-rate
schedules, early stopping, checkpoints, CSV logs and the NaN guard.

The hooks and their arguments are Keras': ``on_train_begin(logs)``, ``on_epoch_begin(epoch, logs)``,
``on_batch_begin(batch, logs)``, ``on_batch_end(batch, logs)``, ``on_epoch_end(epoch, logs)``,
``on_train_end(logs)``; ``epoch`` and ``batch`` count from 0. ``logs`` at the end of a batch
hold the running means of the epoch so far (``loss``, ``accuracy``); at the end of an epoch the
epoch's means plus ``val_loss`` / ``val_accuracy`` when there is validation data. A callback
sees the model as ``self.model`` and stops training by setting ``self.model.stop_training``.

Learning-rate callbacks set ``model.optimizer.lr``; every optimizer reads it at each step.

Where these differ from Keras, the class docstring says so.
"""

from __future__ import annotations

import csv
import math
import os
import re
import string
import warnings
from typing import Any, Callable, Iterable

import numpy as np

from .errors import TrainingDivergedError


class Callback:
    """Base class: every hook does nothing. ``self.model`` and ``self.params`` are set by ``fit``.

    Subclass it and override the hooks you need; ``fit(..., callbacks=[...])`` calls them.

    Example:
        >>> class PrintLoss(Callback):
        ...     def on_epoch_end(self, epoch, logs=None):
        ...         print(f"epoch {epoch}: loss {logs['loss']:.3f}")
        >>> PrintLoss().on_epoch_end(0, {"loss": 0.25})
        epoch 0: loss 0.250
    """

    def __init__(self) -> None:
        self.model: Any = None
        self.params: dict[str, Any] = {}

    def set_model(self, model: Any) -> None:
        self.model = model

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None: ...

    def on_train_end(self, logs: dict[str, float] | None = None) -> None: ...

    def on_train_failure(self, error: BaseException) -> None:
        """Called instead of ``on_train_end`` when ``fit`` raises (an exception in a batch or a
        callback, a NaN guard, Ctrl-C): release files and other resources here. Not in Keras."""

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None: ...

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None: ...

    def on_batch_begin(self, batch: int, logs: dict[str, float] | None = None) -> None: ...

    def on_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None: ...

    # Keras 2/3 spell the batch hooks of training this way too.
    def on_train_batch_begin(self, batch: int, logs: dict[str, float] | None = None) -> None:
        self.on_batch_begin(batch, logs)

    def on_train_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
        self.on_batch_end(batch, logs)


class CallbackList:
    """Calls each hook on every callback, in order.

    Args:
        callbacks: the :class:`Callback` instances, called in this order.
        model: the model being trained; each callback gets it as ``self.model``.

    Example:
        >>> history = History()
        >>> callbacks = CallbackList([history], model=None)
        >>> callbacks.on_epoch_end(0, {"loss": 0.5})
        >>> history.history
        {'loss': [0.5]}
    """

    def __init__(self, callbacks: Iterable[Callback], model: Any) -> None:
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"fit: callbacks must be Callback instances, got {type(cb).__name__}")
            cb.set_model(model)

    def set_params(self, params: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.set_params(params)

    def on_train_begin(self, logs: dict | None = None) -> None:
        for cb in self.callbacks:
            cb.on_train_begin(logs or {})

    def on_train_end(self, logs: dict | None = None) -> None:
        for cb in self.callbacks:
            cb.on_train_end(logs or {})

    def on_train_failure(self, error: BaseException) -> None:
        """Every callback hears of the failure, even if one of them fails in turn."""
        for cb in self.callbacks:
            try:
                hook = getattr(cb, "on_train_failure", None)
                if hook is not None:
                    hook(error)
            except Exception:  # noqa: BLE001 - the original error is the one to raise
                pass

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, logs or {})

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs or {})

    def on_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        for cb in self.callbacks:
            cb.on_train_batch_begin(batch, logs or {})

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        for cb in self.callbacks:
            cb.on_train_batch_end(batch, logs or {})


class History(Callback):
    """Records the epoch logs: ``history.history["loss"][e]`` is epoch ``e``'s loss.

    ``fit`` returns one; ``history.epoch`` lists the epoch indices. Each ``fit`` starts afresh.

    Example:
        >>> history = History()
        >>> history.on_train_begin()
        >>> history.on_epoch_end(0, {"loss": 0.75, "accuracy": 0.5})
        >>> history.on_epoch_end(1, {"loss": 0.5, "accuracy": 0.75})
        >>> history.epoch, history.history["loss"]
        ([0, 1], [0.75, 0.5])
    """

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.history, self.epoch = {}, []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)


class TerminateOnNaN(Callback):
    """Stops training when a batch's loss is NaN or infinite. ``fit`` always adds one.

    Differs from Keras: by default it raises
    :class:`~nn_from_scratch.model.TrainingDivergedError` with a message saying where (epoch,
    batch) and what to try, and the weights are those from *before* the bad batch (its update
    is never applied). ``raise_error=False`` prints the message and sets ``stop_training``, as
    Keras does; ``fit`` then returns its history normally.

    Args:
        raise_error: ``True`` raises :class:`~nn_from_scratch.errors.TrainingDivergedError`;
            ``False`` prints the message and stops training, as Keras.

    Example:
        >>> guard = TerminateOnNaN(raise_error=False)    # model.fit(..., callbacks=[guard])
        >>> guard.raise_error
        False
    """

    def __init__(self, raise_error: bool = True) -> None:
        super().__init__()
        self.raise_error = raise_error
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        loss = logs.get("batch_loss", logs.get("loss"))
        if loss is None or math.isfinite(loss):
            return
        message = (
            f"the loss became {loss} at epoch {self._epoch + 1}, batch {batch + 1}; training stopped "
            "(that batch's update was not applied). Try a smaller learning rate or check the inputs for NaN/inf."
        )
        if self.raise_error:
            raise TrainingDivergedError(f"{type(self.model).__name__}.fit: {message}")
        print(f"TerminateOnNaN: {message}")
        self.model.stop_training = True


# -- learning-rate schedules --------------------------------------------------------------
class LearningRateScheduler(Callback):
    """Sets ``optimizer.lr = schedule(epoch, lr)`` at the start of every epoch (as Keras).

    Subclasses override :meth:`lr_at`. The learning rate the optimizer has when training first
    begins is ``initial_lr`` (kept across later ``fit`` calls, so a schedule is not compounded).
    It is recorded on the optimizer too (``optimizer.initial_lr``, saved with the model), so a
    run resumed from a checkpoint with a new schedule object continues the same schedule; set
    ``optimizer.initial_lr = None`` to start a schedule from the current rate instead.

    Args:
        schedule: ``schedule(epoch, lr) -> new_lr``, with ``epoch`` counted from 0 and ``lr`` the
            current rate; ``None`` only in subclasses that override :meth:`lr_at`.
        verbose: 1 prints the rate set at each epoch.

    Example:
        >>> scheduler = LearningRateScheduler(lambda epoch, lr: lr if epoch < 5 else lr * 0.5)
        >>> scheduler.lr_at(7, 0.1)    # model.fit(..., callbacks=[scheduler]) calls it each epoch
        0.05
    """

    def __init__(self, schedule: Callable[[int, float], float] | None = None, verbose: int = 0) -> None:
        super().__init__()
        self.schedule = schedule
        self.verbose = verbose
        self.initial_lr: float | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        optimizer = self.model.optimizer
        if self.initial_lr is None:
            recorded = getattr(optimizer, "initial_lr", None)
            self.initial_lr = float(optimizer.lr) if recorded is None else float(recorded)
        optimizer.initial_lr = self.initial_lr

    def lr_at(self, epoch: int, lr: float) -> float:
        return float(self.schedule(epoch, lr))

    def _set(self, lr: float, when: str) -> None:
        if not (isinstance(lr, (int, float, np.floating)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"{type(self).__name__}: the schedule gave an invalid learning rate {lr!r}")
        self.model.optimizer.lr = float(lr)
        if self.verbose:
            print(f"{type(self).__name__}: {when}, learning rate {lr:.6g}")

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._set(self.lr_at(epoch, float(self.model.optimizer.lr)), f"epoch {epoch + 1}")


class StepDecay(LearningRateScheduler):
    """``lr = initial_lr * gamma ** (epoch // step_size)``, set at the start of each epoch
    (``torch.optim.lr_scheduler.StepLR``; Keras has no class of this name).

    Args:
        step_size: epochs between two decays (>= 1).
        gamma: the factor applied at each decay (> 0).
        verbose: 1 prints the rate set at each epoch.

    Example:
        >>> decay = StepDecay(step_size=10, gamma=0.5)    # model.fit(..., callbacks=[decay])
        >>> decay.initial_lr = 0.1                        # fit sets it from the optimizer
        >>> [decay.lr_at(epoch, 0.1) for epoch in (0, 9, 10, 25)]
        [0.1, 0.1, 0.05, 0.025]
    """

    def __init__(self, step_size: int, gamma: float = 0.1, verbose: int = 0) -> None:
        super().__init__(verbose=verbose)
        if int(step_size) < 1 or not gamma > 0:
            raise ValueError(f"StepDecay: step_size must be >= 1 and gamma > 0, got {step_size} and {gamma}")
        self.step_size, self.gamma = int(step_size), float(gamma)

    def lr_at(self, epoch: int, lr: float) -> float:
        return self.initial_lr * self.gamma ** (epoch // self.step_size)


class CosineDecay(LearningRateScheduler):
    """Cosine decay from ``initial_lr`` to ``alpha * initial_lr`` over ``decay_steps``:
    ``lr(t) = initial_lr * ((1 - alpha) * (1 + cos(pi * min(t, decay_steps) / decay_steps)) / 2 + alpha)``.

    As Keras' ``CosineDecay`` with ``unit="batch"`` (``t`` is the optimizer's step count,
    ``optimizer.iterations``, as in Keras, so a second ``fit`` or a run resumed from a checkpoint
    continues the schedule instead of restarting it; the rate is set before every batch); with ``unit="epoch"`` (the default) ``t`` is
    the epoch, set at the start of each epoch, as ``torch.optim.lr_scheduler.CosineAnnealingLR``
    with ``T_max = decay_steps`` and ``eta_min = alpha * initial_lr``. ``warmup_steps`` (same
    unit) first ramps linearly from ``initial_lr / warmup_steps`` up to ``initial_lr``; the
    cosine then spans the ``decay_steps`` after the warm-up.

    Args:
        decay_steps: length of the cosine, in ``unit`` (epochs or batches).
        alpha: the final rate as a fraction of the initial one.
        unit: ``"epoch"`` or ``"batch"``.
        warmup_steps: linear warm-up before the cosine, in ``unit``.
        verbose: 1 prints the rate when it changes (per epoch).

    Example:
        >>> schedule = CosineDecay(decay_steps=10, alpha=0.1)    # model.fit(..., callbacks=[schedule])
        >>> schedule.unit
        'epoch'
    """

    def __init__(self, decay_steps: int, alpha: float = 0.0, unit: str = "epoch", warmup_steps: int = 0,
                 verbose: int = 0) -> None:
        super().__init__(verbose=verbose)
        if int(decay_steps) < 1 or not 0.0 <= alpha <= 1.0 or unit not in ("epoch", "batch") or warmup_steps < 0:
            raise ValueError(
                f"CosineDecay: need decay_steps >= 1, 0 <= alpha <= 1, unit 'epoch' or 'batch', warmup_steps >= 0; "
                f"got {decay_steps}, {alpha}, {unit!r}, {warmup_steps}"
            )
        self.decay_steps, self.alpha, self.unit, self.warmup_steps = int(decay_steps), float(alpha), unit, int(warmup_steps)

    def lr_at(self, t: int, lr: float = 0.0) -> float:
        if t < self.warmup_steps:
            return self.initial_lr * (t + 1) / self.warmup_steps
        t = min(t - self.warmup_steps, self.decay_steps)
        cosine = 0.5 * (1.0 + math.cos(math.pi * t / self.decay_steps))
        return self.initial_lr * ((1.0 - self.alpha) * cosine + self.alpha)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.unit == "epoch":
            self._set(self.lr_at(epoch), f"epoch {epoch + 1}")

    def on_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if self.unit == "batch":
            self.model.optimizer.lr = self.lr_at(int(self.model.optimizer.iterations))


# -- monitoring a metric ------------------------------------------------------------------
class _Monitor(Callback):
    """Shared by the callbacks that watch one logged quantity for improvement.

    ``mode="auto"`` maximises a quantity whose name contains ``acc`` and minimises any other,
    as Keras does. An improvement must beat the best by more than ``min_delta``.
    """

    def __init__(self, monitor: str, mode: str, min_delta: float) -> None:
        super().__init__()
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"{type(self).__name__}: mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor = monitor
        self.mode = ("max" if "acc" in monitor else "min") if mode == "auto" else mode
        self.min_delta = abs(float(min_delta))
        self.best = math.inf if self.mode == "min" else -math.inf

    def _improved(self, value: float, best: float) -> bool:
        if self.mode == "min":
            return value < best - self.min_delta
        return value > best + self.min_delta

    def _value(self, logs: dict | None) -> float | None:
        value = (logs or {}).get(self.monitor)
        if value is None:
            warnings.warn(
                f"{type(self).__name__}: '{self.monitor}' is not in the logs (available: {', '.join(sorted(logs or {}))}); "
                "skipping this epoch",
                RuntimeWarning,
                stacklevel=3,
            )
        return value


class EarlyStopping(_Monitor):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    As Keras 3: with ``restore_best_weights=True`` the weights of the best epoch are written
    back when training ends (stopped early or not). ``baseline``: a value the monitored
    quantity must beat for the patience counter to reset. ``start_from_epoch``: epochs to
    wait before watching.

    Args:
        monitor: the logged quantity to watch, e.g. ``"val_loss"`` or ``"val_accuracy"``.
        min_delta: the smallest change that counts as an improvement.
        patience: epochs without improvement before stopping.
        verbose: 1 prints a line when it stops.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (max for accuracies, min otherwise).
        baseline: a value to beat, or ``None``.
        restore_best_weights: write the best epoch's weights back at the end.
        start_from_epoch: epochs to wait before watching.

    Example:
        >>> stop = EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
        >>> stop.patience
        3
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = 0.0,
        patience: int = 0,
        verbose: int = 0,
        mode: str = "auto",
        baseline: float | None = None,
        restore_best_weights: bool = False,
        start_from_epoch: int = 0,
    ) -> None:
        super().__init__(monitor, mode, min_delta)
        self.patience = int(patience)
        self.verbose = verbose
        self.baseline = baseline
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = int(start_from_epoch)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.wait = 0
        self.stopped_epoch = 0
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_weights: list[np.ndarray] | None = None
        self.best_epoch = 0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = self._value(logs)
        if value is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights, self.best_epoch = self.model.get_weights(), epoch
        self.wait += 1
        if self._improved(value, self.best):
            self.best, self.best_epoch = value, epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._improved(value, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.stopped_epoch and self.verbose:
            print(f"EarlyStopping: stopped after epoch {self.stopped_epoch + 1}")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose:
                print(f"EarlyStopping: restoring the weights of epoch {self.best_epoch + 1}")
            self.model.set_weights(self.best_weights)


class ReduceLROnPlateau(_Monitor):
    """Multiply ``optimizer.lr`` by ``factor`` when ``monitor`` has not improved for ``patience``
    epochs, then wait ``cooldown`` epochs; never below ``min_lr``. As Keras 3: ``min_delta`` is
    absolute, and the learning rate of each epoch is logged as ``learning_rate``.

    Args:
        monitor: the logged quantity to watch, e.g. ``"val_loss"``.
        factor: the multiplier applied to the rate, in (0, 1).
        patience: epochs without improvement before the rate is reduced.
        verbose: 1 prints a line when the rate is reduced.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (max for accuracies, min otherwise).
        min_delta: the smallest (absolute) change that counts as an improvement.
        cooldown: epochs to wait after a reduction before watching again.
        min_lr: the rate never goes below this.

    Example:
        >>> plateau = ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2)    # fit(..., callbacks=[plateau])
        >>> plateau.factor, plateau.patience
        (0.5, 2)
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        verbose: int = 0,
        mode: str = "auto",
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
    ) -> None:
        super().__init__(monitor, mode, min_delta)
        if not 0.0 < factor < 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor must be in (0, 1), got {factor}")
        self.factor, self.patience, self.verbose = float(factor), int(patience), verbose
        self.cooldown, self.min_lr = int(cooldown), float(min_lr)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.wait = 0
        self.cooldown_counter = 0
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.lr)  # as Keras 3, into the history
        value = self._value(logs)
        if value is None:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(value, self.best):
            self.best, self.wait = value, 0
        elif self.cooldown_counter <= 0:
            self.wait += 1
            if self.wait >= self.patience:
                old = float(self.model.optimizer.lr)
                if old > self.min_lr:
                    new = max(old * self.factor, self.min_lr)
                    self.model.optimizer.lr = new
                    if self.verbose:
                        print(f"ReduceLROnPlateau: epoch {epoch + 1}, learning rate {old:.6g} -> {new:.6g}")
                    self.cooldown_counter = self.cooldown
                    self.wait = 0


class ModelCheckpoint(_Monitor):
    """Save the model (:meth:`Sequential.save`, atomic) at the end of every epoch, or only when
    ``monitor`` improved with ``save_best_only=True``.

    ``path`` may hold format fields filled from the epoch (counted from 1) and the logs, as in
    Keras: ``"ckpt-{epoch:02d}-{val_loss:.3f}.safetensors"``. ``save_weights_only`` is accepted
    for Keras compatibility; the file always holds the architecture too, and
    :meth:`Sequential.load_weights` reads it either way. ``filepath=`` (Keras' name) is the same as ``path=``.

    Args:
        path: the file to write; may hold ``{epoch}`` and log fields (see above).
        monitor: the logged quantity that decides "best" with ``save_best_only``.
        verbose: 1 prints a line at each save.
        save_best_only: save only when ``monitor`` improved.
        save_weights_only: accepted for Keras compatibility (the file always holds the architecture).
        mode: ``"min"``, ``"max"`` or ``"auto"`` (max for accuracies, min otherwise).
        include_optimizer: also save the optimizer's state, so training can resume.
        filepath: Keras' name for ``path``.

    Example:
        >>> checkpoint = ModelCheckpoint("best.safetensors", monitor="val_accuracy", save_best_only=True)
        >>> checkpoint.save_best_only    # model.fit(..., callbacks=[checkpoint]) writes the file
        True
    """

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        monitor: str = "val_loss",
        verbose: int = 0,
        save_best_only: bool = False,
        save_weights_only: bool = False,
        mode: str = "auto",
        include_optimizer: bool = True,
        *,
        filepath: str | os.PathLike | None = None,
    ) -> None:
        if (path is None) == (filepath is None):
            raise TypeError("ModelCheckpoint: pass the file path once, as path=... or filepath=... (Keras' name)")
        super().__init__(monitor, mode, 0.0)
        self.path = os.fspath(path if filepath is None else filepath)
        self.verbose = verbose
        self.save_best_only = save_best_only
        self.include_optimizer = include_optimizer
        self.last_saved: str | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        """Check the path's format fields against what the epochs will log, before any training:
        ``{val_loss}`` without validation data is an error now, not after a whole epoch."""
        logged = self.params.get("metrics")
        if logged is None:  # not run by fit: nothing known to check against
            return
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(self.path) if name}
        except ValueError as error:
            raise ValueError(f"ModelCheckpoint: the path {self.path!r} is not a valid format string: {error}") from None
        known = {"epoch", "learning_rate", *logged}
        missing = sorted({re.split(r"[.\[]", f, maxsplit=1)[0] for f in fields} - known)
        if missing:
            hint = ""
            if any(m.startswith("val_") for m in missing) and not self.params.get("do_validation"):
                hint = "; pass validation_data=... (or validation_split=...) to fit for val_* values"
            raise ValueError(
                f"ModelCheckpoint: the path {self.path!r} uses {', '.join('{' + m + '}' for m in missing)}, which this "
                f"fit does not log (it logs epoch, {', '.join(logged)}){hint}"
            )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        path = self.path.format(epoch=epoch + 1, **logs)
        if self.save_best_only:
            value = self._value(logs)
            if value is None or not self._improved(value, self.best):
                return
            if self.verbose:
                print(f"ModelCheckpoint: epoch {epoch + 1}, {self.monitor} improved from {self.best:.5g} to {value:.5g}; saving {path}")
            self.best = value
        elif self.verbose:
            print(f"ModelCheckpoint: epoch {epoch + 1}, saving {path}")
        self.model.save(path, include_optimizer=self.include_optimizer)
        self.last_saved = path


class CSVLogger(Callback):
    """Append one row per epoch (``epoch`` from 0, then the logs in sorted order) to a CSV file,
    flushed every epoch. ``append=False`` starts a new file, as Keras.

    Args:
        filename: the CSV file to write.
        separator: the field separator.
        append: add to an existing file instead of starting a new one.

    Example:
        >>> logger = CSVLogger("training.csv", separator=";")    # model.fit(..., callbacks=[logger])
        >>> logger.separator, logger.append
        (';', False)
    """

    def __init__(self, filename: str | os.PathLike, separator: str = ",", append: bool = False) -> None:
        super().__init__()
        self.filename = os.fspath(filename)
        self.separator = separator
        self.append = append
        self._file = None
        self._writer = None
        self._keys: list[str] | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        has_header = self.append and os.path.exists(self.filename) and os.path.getsize(self.filename) > 0
        self._file = open(self.filename, "a" if self.append else "w", newline="")
        self._writer = None
        self._keys = None
        self._has_header = has_header

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        if self._keys is None:
            self._keys = sorted(logs)
            self._writer = csv.DictWriter(self._file, fieldnames=["epoch"] + self._keys, delimiter=self.separator)
            if not self._has_header:
                self._writer.writeheader()
        self._writer.writerow({"epoch": epoch, **{k: logs.get(k, "NA") for k in self._keys}})
        self._file.flush()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def on_train_failure(self, error: BaseException) -> None:
        self.on_train_end()  # the rows written so far stay (flushed every epoch); the file is closed
