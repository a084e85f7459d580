"""Callbacks: the hooks fit calls, LR schedules (against their formulas and torch's schedulers),
EarlyStopping and ReduceLROnPlateau (against Keras 3 on the same scripted metric sequences),
ModelCheckpoint and CSVLogger."""

from __future__ import annotations

import csv
import math
import os
from types import SimpleNamespace

import numpy as np
import pytest

from nn_from_scratch import Sequential, load_model
from nn_from_scratch.callbacks import (
    Callback,
    CosineDecay,
    CSVLogger,
    EarlyStopping,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
    StepDecay,
)
from nn_from_scratch.losses import SoftMaxLoss
from nn_from_scratch.neurons import Linear
from nn_from_scratch.nodes import ReLU
from nn_from_scratch.optimizers import Adam, GradientDescent


def data(seed: int = 0, n: int = 60):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 5)) * 2
    y = rng.integers(0, 3, size=n)
    return centres[y] + 0.7 * rng.normal(size=(n, 5)), y


def model(seed: int = 0, lr: float = 0.05) -> Sequential:
    return Sequential([Linear(5, 8), ReLU(), Linear(8, 3)], loss=SoftMaxLoss(), optimizer=GradientDescent(lr),
                      input_shape=(5,), seed=seed)


class Recorder(Callback):
    """Records every hook call and the learning rate each batch trains with."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple] = []
        self.batch_lrs: list[float] = []
        self.epoch_lrs: list[float] = []

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin",))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch))

    def on_batch_begin(self, batch, logs=None):
        self.calls.append(("batch_begin", batch))

    def on_batch_end(self, batch, logs=None):
        self.calls.append(("batch_end", batch, sorted(logs)))
        self.batch_lrs.append(self.model.optimizer.lr)

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch, sorted(logs)))
        self.epoch_lrs.append(self.model.optimizer.lr)

    def on_train_end(self, logs=None):
        self.calls.append(("train_end",))


def test_hooks_are_called_in_order_with_their_logs():
    x, y = data()
    rec = Recorder()
    model(seed=1).fit(x, y, epochs=2, batch_size=25, validation_split=0.2, callbacks=[rec], verbose=0)
    batch_logs = ["accuracy", "loss"]
    epoch_logs = ["accuracy", "loss", "val_accuracy", "val_loss"]
    expected = [("train_begin",)]
    for epoch in range(2):
        expected.append(("epoch_begin", epoch))
        for batch in range(2):  # 48 training samples in batches of 25
            expected += [("batch_begin", batch), ("batch_end", batch, batch_logs)]
        expected.append(("epoch_end", epoch, epoch_logs))
    expected.append(("train_end",))
    assert rec.calls == expected


def test_a_callback_can_stop_training():
    class StopAfterBatch(Callback):
        def on_batch_end(self, batch, logs=None):
            if batch == 1:
                self.model.stop_training = True

    x, y = data()
    m = model()
    history = m.fit(x, y, epochs=5, batch_size=10, callbacks=[StopAfterBatch()], verbose=0)
    assert m.optimizer.iterations == 2 and len(history.history["loss"]) == 1


# -- learning-rate schedules -------------------------------------------------------------------
def test_step_decay_matches_torch_step_lr():
    torch = pytest.importorskip("torch")
    x, y = data()
    rec = Recorder()
    model(lr=0.2).fit(x, y, epochs=7, batch_size=30, callbacks=[StepDecay(step_size=3, gamma=0.5), rec], verbose=0)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    expected = []
    for _ in range(7):
        expected += [opt.param_groups[0]["lr"]] * 2
        opt.step()
        sched.step()
    np.testing.assert_allclose(rec.batch_lrs, expected, rtol=1e-15)


def test_cosine_decay_per_epoch_matches_torch_cosine_annealing():
    torch = pytest.importorskip("torch")
    x, y = data()
    rec = Recorder()
    model(lr=0.1).fit(x, y, epochs=6, batch_size=60, callbacks=[CosineDecay(decay_steps=4, alpha=0.1), rec], verbose=0)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4, eta_min=0.01)
    expected = []
    for epoch in range(6):
        # torch's T_max is a half period (it rises again after); Keras' decay holds the floor.
        expected.append(opt.param_groups[0]["lr"] if epoch <= 4 else 0.01)
        opt.step()
        sched.step()
    np.testing.assert_allclose(rec.batch_lrs, expected, rtol=1e-12)


def test_cosine_decay_per_batch_is_keras_formula_with_warmup():
    x, y = data(n=50)
    rec = Recorder()
    lr0, decay, warm, alpha = 0.08, 6, 2, 0.25
    cb = CosineDecay(decay_steps=decay, alpha=alpha, unit="batch", warmup_steps=warm)
    model(lr=lr0).fit(x, y, epochs=2, batch_size=10, callbacks=[cb, rec], verbose=0)
    expected = []
    for t in range(10):
        if t < warm:
            expected.append(lr0 * (t + 1) / warm)
        else:
            s = min(t - warm, decay)
            expected.append(lr0 * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * s / decay)) + alpha))
    np.testing.assert_allclose(rec.batch_lrs, expected, rtol=1e-14)
    assert rec.batch_lrs[warm] == pytest.approx(lr0) and rec.batch_lrs[-1] == pytest.approx(alpha * lr0)


def test_learning_rate_scheduler_with_a_function_and_bad_rates():
    x, y = data()
    rec = Recorder()
    m = model(lr=0.1)
    m.fit(x, y, epochs=3, batch_size=60, callbacks=[LearningRateScheduler(lambda epoch, lr: lr * 0.5), rec], verbose=0)
    assert rec.epoch_lrs == [0.05, 0.025, 0.0125]
    with pytest.raises(ValueError, match="invalid learning rate"):
        m.fit(x, y, epochs=1, callbacks=[LearningRateScheduler(lambda epoch, lr: -1.0)], verbose=0)


# -- against Keras 3 ---------------------------------------------------------------------------
def keras_callbacks():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    return pytest.importorskip("keras").callbacks


class FakeModel:
    """What the callbacks touch: the optimizer's rate, stop_training and the weights. The
    'weights' are the epoch number, so restoring them says which epoch was restored."""

    def __init__(self, lr: float):
        self.optimizer = SimpleNamespace(lr=lr, learning_rate=lr)
        self.stop_training = False
        self.epoch = -1

    def get_weights(self):
        return [np.array(self.epoch)]

    def set_weights(self, weights):
        self.epoch = int(weights[0])


def drive(callback, values, lr=1.0, keras_style=False):
    """Run ``callback`` over a scripted metric sequence; return (lrs, stop epoch, restored epoch)."""
    fake = FakeModel(lr)
    callback.set_model(fake)
    callback.on_train_begin({})
    lrs, stopped = [], None
    for epoch, value in enumerate(values):
        fake.epoch = epoch
        callback.on_epoch_begin(epoch, {})
        callback.on_epoch_end(epoch, {"val_loss": value, "val_accuracy": -value})
        if keras_style:
            fake.optimizer.lr = fake.optimizer.learning_rate
        else:
            fake.optimizer.learning_rate = fake.optimizer.lr
        lrs.append(fake.optimizer.lr)
        if fake.stop_training:
            stopped = epoch
            break
    callback.on_train_end({})
    return lrs, stopped, fake.epoch


def scripted_sequences():
    # Plateaus, ties, tiny improvements and noise: the cases where the rules differ.
    rng = np.random.default_rng(0)
    sequences = [[1.0, 0.9, 0.9, 0.9, 0.8, 0.8, 0.85, 0.7999, 0.7, 0.7, 0.7, 0.7, 0.6]]
    for _ in range(20):
        steps = rng.choice([0.0, 0.0, -0.05, -1e-5, 0.02], size=25)
        sequences.append(list(np.round(1.0 + np.cumsum(steps), 6)))
    return sequences


@pytest.mark.parametrize("config", [
    dict(patience=0), dict(patience=2), dict(patience=3, min_delta=0.01), dict(patience=2, restore_best_weights=True),
    dict(patience=1, baseline=0.95), dict(patience=2, start_from_epoch=3, restore_best_weights=True),
    dict(patience=2, monitor="val_accuracy", mode="max", restore_best_weights=True),
])
def test_early_stopping_matches_keras(config):
    kc = keras_callbacks()
    for values in scripted_sequences():
        ours = drive(EarlyStopping(**config), values)
        theirs = drive(kc.EarlyStopping(**config), values, keras_style=True)
        assert ours == theirs, (config, values)


@pytest.mark.parametrize("config", [
    dict(patience=0), dict(patience=2, factor=0.5), dict(patience=1, factor=0.5, cooldown=2),
    dict(patience=2, factor=0.1, min_lr=0.005), dict(patience=1, factor=0.5, min_delta=0.01),
    dict(patience=2, factor=0.5, monitor="val_accuracy", mode="max"),
])
def test_reduce_lr_on_plateau_matches_keras(config):
    kc = keras_callbacks()
    for values in scripted_sequences():
        ours = drive(ReduceLROnPlateau(**config), values)
        theirs = drive(kc.ReduceLROnPlateau(**config), values, keras_style=True)
        np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-12)


def test_early_stopping_in_fit_restores_the_best_weights():
    x, y = data()
    scripted = [1.0, 0.5, 0.7, 0.8, 0.9, 0.3]
    snapshots = []

    class Script(Callback):  # replaces val_loss by a script and remembers each epoch's weights
        def on_epoch_end(self, epoch, logs=None):
            logs["val_loss"] = scripted[epoch]
            snapshots.append(self.model.get_weights())

    m = model()
    history = m.fit(x, y, epochs=6, batch_size=20, validation_split=0.2, verbose=0,
                    callbacks=[Script(), EarlyStopping(patience=2, restore_best_weights=True)])
    assert history.history["val_loss"] == scripted[:4]
    for now, best in zip(m.get_weights(), snapshots[1]):
        np.testing.assert_array_equal(now, best)


def test_reduce_lr_on_plateau_logs_the_learning_rate():
    x, y = data()
    m = model(lr=0.1)
    history = m.fit(x, y, epochs=3, batch_size=20, verbose=0,
                    callbacks=[ReduceLROnPlateau(monitor="loss", patience=0, factor=0.5, min_delta=10.0)])
    # The first epoch always improves on "nothing yet"; then every epoch halves the rate.
    assert history.history["learning_rate"] == [0.1, 0.1, 0.05]
    assert m.optimizer.lr == 0.025


def test_unknown_monitor_warns_and_is_skipped():
    x, y = data()
    with pytest.warns(RuntimeWarning, match="'val_loss' is not in the logs"):
        model().fit(x, y, epochs=2, batch_size=30, callbacks=[EarlyStopping(patience=0)], verbose=0)


# -- files -------------------------------------------------------------------------------------
def test_model_checkpoint_saves_the_best_epochs(tmp_path):
    x, y = data()
    scripted = [0.9, 0.5, 0.6, 0.4, 0.45]
    snapshots = []

    class Script(Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["val_loss"] = scripted[epoch]
            snapshots.append(self.model.get_weights())

    best = ModelCheckpoint(tmp_path / "best.safetensors", save_best_only=True)
    every = ModelCheckpoint(str(tmp_path / "epoch-{epoch:02d}-{val_loss:.2f}.safetensors"))
    m = Sequential([Linear(5, 3)], loss=SoftMaxLoss(), optimizer=Adam(0.01), seed=3)
    m.fit(x, y, epochs=5, batch_size=20, validation_split=0.1, callbacks=[Script(), best, every], verbose=0)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["best.safetensors"] + [f"epoch-{e + 1:02d}-{v:.2f}.safetensors" for e, v in enumerate(scripted)]
    for now, expected in zip(load_model(tmp_path / "best.safetensors").get_weights(), snapshots[3]):
        np.testing.assert_array_equal(now, expected)
    for now, expected in zip(load_model(tmp_path / "epoch-03-0.60.safetensors").get_weights(), snapshots[2]):
        np.testing.assert_array_equal(now, expected)


def test_csv_logger_writes_the_history(tmp_path):
    x, y = data()
    path = tmp_path / "log.csv"
    m = model()
    history = m.fit(x, y, epochs=3, batch_size=20, validation_split=0.2, callbacks=[CSVLogger(path)], verbose=0)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    for key, values in history.history.items():
        assert [float(r[key]) for r in rows] == values
    m.fit(x, y, epochs=2, batch_size=20, validation_split=0.2, callbacks=[CSVLogger(path, append=True)], verbose=0)
    with open(path, newline="") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1, 2, 0, 1]
