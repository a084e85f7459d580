"""Sequential's Keras-style API: summary, fit / evaluate / predict, modes, accuracy, NaN guard,
seeded reproducibility, and the seed NeuralNetwork on top of it.

Small synthetic data and small models only, so the whole file runs in seconds.
"""

from __future__ import annotations

import re
import tracemalloc

import numpy as np
import pytest

from nn_from_scratch import History, Sequential, TrainingDivergedError
from nn_from_scratch.callbacks import TerminateOnNaN
from nn_from_scratch.examples.simple_nn import NeuralNetwork
from nn_from_scratch.losses import BinaryCrossEntropy, MSELoss, SoftMaxLoss
from nn_from_scratch.neurons import BatchNormalization, Convolution, Linear
from nn_from_scratch.interfaces import Node
from nn_from_scratch.nodes import Dropout, MaxPooling, ReLU, Vectorization
from nn_from_scratch.optimizers import Adam, GradientDescent


def blobs(rng: np.random.Generator, n: int, features: int = 6, classes: int = 3, spread: float = 0.6):
    """Gaussian blobs around random centres: separable enough to learn in a few epochs."""
    centres = rng.normal(size=(classes, features)) * 2
    labels = rng.integers(0, classes, size=n)
    x = centres[labels] + spread * rng.normal(size=(n, features))
    return x, labels


def mlp(seed: int | None = 0, features: int = 6, classes: int = 3, dropout: float = 0.0, dtype=np.float32, **kw):
    layers = [Linear(output_dim=16, dtype=dtype), ReLU()]
    if dropout:
        layers.append(Dropout(dropout))
    layers.append(Linear(output_dim=classes, dtype=dtype))
    return Sequential(layers, loss=SoftMaxLoss(), optimizer=Adam(1e-2), input_shape=(features,), seed=seed, **kw)


def small_cnn(seed: int = 0, bn: bool = False):
    layers = [Convolution(kernel_size=3, output_layers=3)]
    if bn:
        layers.append(BatchNormalization())
    layers += [ReLU(), MaxPooling(2), Vectorization(), Dropout(0.25), Linear(output_dim=4)]
    return Sequential(layers, loss=SoftMaxLoss(), optimizer=Adam(1e-2), input_shape=(1, 8, 8), seed=seed)


def weights(model: Sequential) -> list[np.ndarray]:
    return [p.copy() for _, p in model.parameters()]


# -- summary -------------------------------------------------------------------------------
def seed_cnn_layers():
    return [
        Convolution(kernel_size=3, output_layers=4, use_bias=False),
        ReLU(),
        Convolution(kernel_size=7, output_layers=2, use_bias=False),
        ReLU(),
        Vectorization(),
        Linear(800, 10),
    ]


def test_summary_of_the_seed_cnn_matches_the_notebook():
    lines: list[str] = []
    Sequential(seed_cnn_layers(), input_shape=(1, 28, 28)).summary(print_fn=lines.append)
    text = "\n".join(lines)
    # Keras printed "Total params: 8438 (32.96 KB)" for this network in the notebook.
    expected = 1 * 4 * 3 * 3 + 4 * 2 * 7 * 7 + (800 + 1) * 10
    assert expected == 8438
    assert f"Total params: {expected:,} ({expected * 4 / 1024:.2f} KB)" in text
    assert f"Trainable params: {expected:,}" in text
    assert "Non-trainable params: 0 (0.00 Byte)" in text
    rows = [line for line in lines if "(None" in line]
    assert [int(r.split()[-1]) for r in rows] == [36, 0, 392, 0, 0, 8010]
    assert "(None, 4, 26, 26)" in rows[0] and "(None, 2, 20, 20)" in rows[2] and "(None, 800)" in rows[4]
    # Keras' column layout: header and rows 65 characters wide, columns at 29 and 55.
    header = next(line for line in lines if "Layer (type)" in line)
    assert header.index("Output Shape") == 29 and header.index("Param #") == 55 and len(header) == 65
    assert all(len(line) == 65 for line in rows)
    assert rows[0].startswith(" convolution (Convolution)") and rows[0].index("(None") == 29


def test_summary_counts_batch_norm_statistics_as_non_trainable():
    lines: list[str] = []
    model = small_cnn(bn=True)
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    bn = model.layers[1]
    frozen = bn.running_mean.size + bn.running_var.size
    assert f"Non-trainable params: {frozen:,}" in text
    assert f"Total params: {model.count_params() + frozen:,}" in text
    assert f"Trainable params: {model.count_params():,}" in text


def test_summary_of_an_unbuilt_model_says_how_to_build_it():
    with pytest.raises(ValueError, match="not built.*input_shape"):
        Sequential([Linear(output_dim=3)]).summary()


# -- fit -------------------------------------------------------------------------------------
def test_fit_learns_and_records_history():
    rng = np.random.default_rng(0)
    x, y = blobs(rng, 400)
    model = mlp(seed=1)
    history = model.fit(x, y, epochs=4, batch_size=32, validation_split=0.25, verbose=0)
    assert isinstance(history, History) and model.history is history
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 4 for v in history.history.values()) and history.epoch == [0, 1, 2, 3]
    assert history.history["loss"][-1] < history.history["loss"][0]
    # The validation numbers are exactly what evaluate gives on the held-out last quarter.
    val_loss, val_acc = model.evaluate(x[300:], y[300:], batch_size=64)
    assert history.history["val_loss"][-1] == pytest.approx(val_loss, rel=1e-6)
    assert history.history["val_accuracy"][-1] == val_acc
    assert val_acc > 0.9


def test_validation_data_takes_precedence_over_split():
    rng = np.random.default_rng(1)
    x, y = blobs(rng, 120)
    xv, yv = blobs(rng, 30)
    model = mlp(seed=2)
    history = model.fit(x, y, epochs=1, validation_data=(xv, yv), validation_split=0.5, verbose=0)
    assert history.history["val_loss"][0] == pytest.approx(model.evaluate(xv, yv)[0], rel=1e-6)


def test_integer_and_one_hot_labels_train_identically():
    rng = np.random.default_rng(2)
    x, y = blobs(rng, 100)
    a, b = mlp(seed=3), mlp(seed=3)
    ha = a.fit(x, y, epochs=2, batch_size=16, verbose=0)
    hb = b.fit(x, np.eye(3)[y], epochs=2, batch_size=16, verbose=0)
    for wa, wb in zip(weights(a), weights(b)):
        np.testing.assert_array_equal(wa, wb)
    # The gradients (hence the weights) are bit-identical; the float32 loss values are summed
    # along different paths (a gathered logit for integer labels, a dot product with the
    # one-hot row, as torch's cross_entropy does), so they agree to rounding.
    assert ha.history.keys() == hb.history.keys()
    for key in ha.history:
        np.testing.assert_allclose(ha.history[key], hb.history[key], rtol=1e-6)


def test_training_accuracy_in_history_is_the_running_training_accuracy():
    # With lr tiny the weights hardly move, so the epoch's training accuracy equals the
    # accuracy of the (training-mode) forward pass of the initial weights, sample by sample.
    rng = np.random.default_rng(3)
    x, y = blobs(rng, 64)
    model = Sequential([Linear(6, 3, dtype=np.float64)], loss=SoftMaxLoss(), optimizer=GradientDescent(1e-300), seed=0)
    expected = float(np.mean(model.predict(x).argmax(1) == y))
    history = model.fit(x, y, epochs=1, batch_size=10, shuffle=False, verbose=0)
    assert history.history["accuracy"][0] == expected
    # The loss is the sample mean of the batch means (batches weighted by their size).
    assert history.history["loss"][0] == pytest.approx(model.evaluate(x, y)[0], rel=1e-12)


def test_fit_with_a_partial_last_batch_and_batch_larger_than_data():
    rng = np.random.default_rng(4)
    x, y = blobs(rng, 37)
    model = mlp(seed=0)
    steps = []

    class Count(TerminateOnNaN):
        def on_batch_end(self, batch, logs=None):
            steps.append(batch)
            super().on_batch_end(batch, logs)

    model.fit(x, y, epochs=1, batch_size=10, callbacks=[Count()], verbose=0)
    assert steps == [0, 1, 2, 3] and model.optimizer.iterations == 4
    model.fit(x, y, epochs=1, batch_size=1000, verbose=0)
    assert model.optimizer.iterations == 5


def test_fit_does_not_copy_the_dataset():
    # A float64 dataset for a float32 model: converting it whole would allocate 8 MB (or 16).
    rng = np.random.default_rng(5)
    x = rng.normal(size=(20_000, 100))
    y = rng.integers(0, 3, size=20_000)
    model = Sequential([Linear(100, 3)], loss=SoftMaxLoss(), optimizer=GradientDescent(0.01), seed=0)
    tracemalloc.start()
    try:
        model.fit(x, y, epochs=1, batch_size=500, verbose=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < x.nbytes / 8, f"fit allocated {peak} bytes at peak for a {x.nbytes}-byte dataset"


def test_fit_rejects_bad_arguments():
    model = mlp()
    x, y = np.zeros((10, 6)), np.zeros(10, dtype=int)
    with pytest.raises(ValueError, match="x has 10 samples but y has 9"):
        model.fit(x, y[:9], verbose=0)
    with pytest.raises(ValueError, match="validation_split"):
        model.fit(x, y, validation_split=1.0, verbose=0)
    with pytest.raises(ValueError, match="batch_size"):
        model.fit(x, y, batch_size=0, verbose=0)
    with pytest.raises(ValueError, match="needs a loss and an optimizer"):
        Sequential([Linear(6, 3)]).fit(x, y, verbose=0)


def test_verbosity(capsys):
    rng = np.random.default_rng(6)
    x, y = blobs(rng, 40)
    model = mlp()
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, validation_split=0.2)
    assert capsys.readouterr().out == ""
    model.fit(x, y, epochs=2, batch_size=8, verbose=1)
    out = capsys.readouterr().out
    assert "Epoch 1/2" in out and "Epoch 2/2" in out and re.search(r"loss=\d\.\d{4}", out) and "accuracy=" in out
    model.fit(x, y, epochs=2, batch_size=8, verbose=2, validation_split=0.2)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(re.search(r"loss: .* accuracy: .* val_loss: .* val_accuracy: ", ln) for ln in lines)


# -- modes, predict, evaluate ----------------------------------------------------------------
def test_dropout_is_on_in_fit_and_off_in_predict_and_evaluate():
    rng = np.random.default_rng(7)
    x, y = blobs(rng, 50)
    model = mlp(dropout=0.5)
    seen = []

    class Spy(Dropout):
        def forward(self, x):
            seen.append(self.training)
            return super().forward(x)

    model.layers[2].__class__ = Spy
    model.fit(x, y, epochs=1, batch_size=25, verbose=0)
    assert seen == [True, True]
    seen.clear()
    p1, p2 = model.predict(x), model.predict(x)
    model.evaluate(x, y)
    assert not any(seen) and len(seen) >= 3
    np.testing.assert_array_equal(p1, p2)


def test_batch_norm_uses_running_statistics_at_inference():
    rng = np.random.default_rng(8)
    x = rng.normal(3.0, 2.0, size=(64, 1, 8, 8))
    y = rng.integers(0, 4, size=64)
    model = small_cnn(bn=True)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    bn = model.layers[1]
    assert bn.num_batches_tracked == 4
    # Inference is per sample: a sample's prediction does not depend on the rest of its batch.
    np.testing.assert_allclose(model.predict(x[:5]), model.predict(x)[:5], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("n", [0, 1, 31, 32, 33, 100])
def test_predict_any_number_of_samples(n):
    rng = np.random.default_rng(n)
    model = mlp(dtype=np.float64)
    x = rng.normal(size=(n, 6))
    out = model.predict(x, batch_size=32)
    assert out.shape == (n, 3)
    if n:
        np.testing.assert_allclose(out, model.forward(x), rtol=1e-12, atol=0)
        np.testing.assert_array_equal(model.predict(x, batch_size=None), model.forward(x))


def test_predict_accepts_hw_batches_for_a_single_channel_cnn_built_lazily():
    rng = np.random.default_rng(9)
    x = rng.random((5, 8, 8))
    lazy = Sequential([Convolution(kernel_size=3, output_layers=2), Vectorization(), Linear(output_dim=3)], seed=4)
    eager = Sequential([Convolution(kernel_size=3, output_layers=2), Vectorization(), Linear(output_dim=3)], seed=4,
                       input_shape=(1, 8, 8))
    np.testing.assert_array_equal(lazy.predict(x), eager.predict(x[:, None]))
    assert lazy.input_shape == (1, 8, 8)


def test_evaluate_is_exact_whatever_the_batch_size():
    rng = np.random.default_rng(10)
    x, y = blobs(rng, 77)
    model = mlp(dtype=np.float64)
    logits = model.predict(x)
    shifted = logits - logits.max(1, keepdims=True)
    expected_loss = float(np.mean(np.log(np.exp(shifted).sum(1)) - shifted[np.arange(77), y]))
    expected_acc = float(np.mean(logits.argmax(1) == y))
    for batch_size in (1, 10, 32, 77, 500):
        loss, acc = model.evaluate(x, y, batch_size=batch_size)
        assert loss == pytest.approx(expected_loss, rel=1e-12)
        assert acc == expected_acc
    assert model.evaluate(x, np.eye(3)[y], return_dict=True) == pytest.approx({"loss": expected_loss, "accuracy": expected_acc}, rel=1e-12)


def test_binary_accuracy_uses_the_sign_of_the_logit():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(60, 4))
    y = (x[:, 0] + 0.3 * rng.normal(size=60) > 0).astype(float)
    model = Sequential([Linear(4, 1, dtype=np.float64)], loss=BinaryCrossEntropy(), optimizer=Adam(0.05), seed=0)
    history = model.fit(x, y, epochs=20, batch_size=20, verbose=0)
    loss, acc = model.evaluate(x, y)
    assert acc == float(np.mean((model.predict(x)[:, 0] > 0) == (y > 0.5)))
    assert history.history["accuracy"][-1] > 0.8
    # Logits in (0, 0.5) count as class 1 (probability above one half).
    model.layers[0].W[...] = 0.0
    model.layers[0].W[1, 0] = 0.25  # logit = x0 / 4
    x = np.array([[1.0, 0, 0, 0], [-1.0, 0, 0, 0], [1.5, 0, 0, 0]])
    assert model.evaluate(x, np.array([1.0, 0.0, 1.0]))[1] == 1.0


def test_a_regression_model_reports_the_loss_only():
    rng = np.random.default_rng(12)
    x = rng.normal(size=(40, 3))
    y = x @ np.array([[1.0], [-2.0], [0.5]])
    model = Sequential([Linear(3, 1, dtype=np.float64)], loss=MSELoss(), optimizer=Adam(0.05), seed=0)
    history = model.fit(x, y, epochs=3, batch_size=8, verbose=0)
    assert set(history.history) == {"loss"}
    loss = model.evaluate(x, y)
    assert isinstance(loss, float) and loss == pytest.approx(float(np.mean((model.predict(x) - y) ** 2)), rel=1e-12)


# -- NaN guard ---------------------------------------------------------------------------------
def test_nan_loss_stops_fit_with_a_message_and_leaves_the_weights_of_the_last_good_step():
    rng = np.random.default_rng(13)
    x, y = blobs(rng, 40)
    x[25, 2] = np.nan  # in the third batch of 10
    model = mlp(seed=5)
    snapshots = []

    class Snap(TerminateOnNaN):
        def on_batch_end(self, batch, logs=None):
            super().on_batch_end(batch, logs)
            snapshots.append(weights(self.model))

    with pytest.raises(TrainingDivergedError, match=r"loss became nan at epoch 1, batch 3.*smaller learning rate") as info:
        model.fit(x, y, epochs=2, batch_size=10, shuffle=False, callbacks=[Snap()], verbose=0)
    assert len(snapshots) == 2 and model.optimizer.iterations == 2
    for now, before in zip(weights(model), snapshots[-1]):
        np.testing.assert_array_equal(now, before)
    assert isinstance(info.value.history, History)


def test_terminate_on_nan_can_stop_quietly_as_keras(capsys):
    rng = np.random.default_rng(14)
    x, y = blobs(rng, 40)
    x[5, 0] = np.inf
    model = mlp(seed=6)
    with np.errstate(invalid="ignore"):
        history = model.fit(x, y, epochs=3, batch_size=10, shuffle=False, callbacks=[TerminateOnNaN(raise_error=False)],
                            verbose=0)
    assert "loss became nan at epoch 1, batch 1" in capsys.readouterr().out
    assert len(history.history["loss"]) == 1 and np.isnan(history.history["loss"][0])
    assert model.optimizer.iterations == 0 and all(np.isfinite(w).all() for w in weights(model))


# -- reproducibility ---------------------------------------------------------------------------
def train_cnn(seed: int):
    rng = np.random.default_rng(100)
    x = rng.random((48, 1, 8, 8))
    y = rng.integers(0, 4, size=48)
    model = small_cnn(seed=seed, bn=True)
    model.fit(x, y, epochs=2, batch_size=12, shuffle=True, verbose=0)
    return weights(model) + [b.copy() for _, b in model.buffers()]


def test_same_seed_gives_bit_identical_weights_after_training():
    a, b = train_cnn(seed=21), train_cnn(seed=21)
    for wa, wb in zip(a, b):
        assert wa.dtype == wb.dtype
        np.testing.assert_array_equal(wa, wb)
    c = train_cnn(seed=22)
    assert any(not np.array_equal(wa, wc) for wa, wc in zip(a, c))


def test_the_seed_covers_shuffling_and_dropout_not_only_the_initial_weights():
    rng = np.random.default_rng(15)
    x, y = blobs(rng, 60)
    a, b = mlp(seed=7, dropout=0.5), mlp(seed=7, dropout=0.5)
    b.rng.random(1)  # same initial weights; the later draws (shuffle, dropout) now differ
    for wa, wb in zip(weights(a), weights(b)):
        np.testing.assert_array_equal(wa, wb)
    a.fit(x, y, epochs=1, batch_size=20, verbose=0)
    b.fit(x, y, epochs=1, batch_size=20, verbose=0)
    assert any(not np.array_equal(wa, wb) for wa, wb in zip(weights(a), weights(b)))
    # The positive twin: the same seed and the same draws give the same run, bit for bit.
    c = mlp(seed=7, dropout=0.5)
    c.fit(x, y, epochs=1, batch_size=20, verbose=0)
    for wa, wc in zip(weights(a), weights(c)):
        np.testing.assert_array_equal(wa, wc)


class SampleRecorder(Node):
    """The identity, remembering which samples (column 0 holds the sample's index) each training
    batch brought: the order in which fit visits the data."""

    fixed_input_shape = False

    def __init__(self):
        super().__init__()
        self.batches: list[list[int]] = []

    def forward(self, x):
        if self.training:
            self.batches.append([int(v) for v in np.asarray(x)[:, 0]])
        return x

    def backward(self, dL_dy, need_input_grad=True):
        return dL_dy


def visit_order(seed, shuffle=True, epochs=3, n=23, batch_size=5):
    recorder = SampleRecorder()
    model = Sequential([recorder, Linear(2, 2, dtype=np.float64)], loss=SoftMaxLoss(), optimizer=GradientDescent(0.1),
                       seed=seed)
    x = np.stack([np.arange(n), np.zeros(n)], axis=1).astype(np.float64)
    model.fit(x, np.arange(n) % 2, epochs=epochs, batch_size=batch_size, shuffle=shuffle, verbose=0)
    per_epoch = -(-n // batch_size)
    return [sum(recorder.batches[e * per_epoch : (e + 1) * per_epoch], []) for e in range(epochs)], recorder.batches


def test_shuffle_visits_every_sample_once_per_epoch_in_a_fresh_seeded_order():
    orders, batches = visit_order(seed=3)
    assert [len(b) for b in batches[:5]] == [5, 5, 5, 5, 3]  # the last batch is smaller, as Keras
    for order in orders:
        assert sorted(order) == list(range(23))  # a permutation: every sample exactly once
    assert orders[0] != list(range(23)) and orders[0] != orders[1] != orders[2]  # shuffled, afresh each epoch
    assert visit_order(seed=3)[0] == orders  # same seed, same orders
    assert visit_order(seed=4)[0] != orders  # another seed, other orders
    assert visit_order(seed=3, shuffle=False)[0] == [list(range(23))] * 3  # shuffle=False: the data's order


def test_get_and_set_weights_round_trip_in_place():
    model = small_cnn(bn=True)
    saved = model.get_weights()
    arrays = [p for _, p in model.parameters()]
    rng = np.random.default_rng(16)
    model.set_weights([rng.normal(size=w.shape).astype(w.dtype) for w in saved])
    model.set_weights(saved)
    assert all(p is original for (_, p), original in zip(model.parameters(), arrays))
    for now, w in zip(model.get_weights(), saved):
        np.testing.assert_array_equal(now, w)
    with pytest.raises(ValueError, match="expected W of shape"):
        model.set_weights([np.zeros((1,))] + saved[1:])


# -- the seed's NeuralNetwork ------------------------------------------------------------------
def test_neural_network_is_fit_over_its_batches_in_order():
    rng = np.random.default_rng(17)
    x, y = blobs(rng, 60)
    batches_x, batches_y = x.reshape(6, 10, 6), np.eye(3)[y].reshape(6, 10, 3)
    net = NeuralNetwork(6, 3, 10, GradientDescent(0.1), [Linear(6, 3, dtype=np.float64)], SoftMaxLoss())
    twin = Sequential([Linear(6, 3, W=net.layers[0].W.copy(), dtype=np.float64)], loss=SoftMaxLoss(), optimizer=GradientDescent(0.1))
    loss = net.fit(batches_x, batches_y, n_epochs=2, verbose=False)
    losses = [[twin.train_step(bx, by) for bx, by in zip(batches_x, batches_y)] for _ in range(2)]
    np.testing.assert_array_equal(net.layers[0].W, twin.layers[0].W)
    assert loss == pytest.approx(np.mean(losses[-1]), rel=1e-12)
    assert isinstance(net.model, Sequential)


# -- the zoo's LeNet-5 and the main job ----------------------------------------------------------
@pytest.mark.parametrize("batch_norm", [True, False])
def test_lenet5_shapes_and_parameter_count(batch_norm):
    from nn_from_scratch import zoo

    model = zoo.lenet5(seed=0, batch_norm=batch_norm)
    shapes = [layer.output_shape for layer in model.layers if type(layer).__name__ in ("MaxPooling", "Linear")]
    assert shapes == [(6, 14, 14), (16, 5, 5), (120,), (84,), (10,)]
    conv = (5 * 5 * 1 * 6 + 5 * 5 * 6 * 16) + (0 if batch_norm else 6 + 16)
    norm = 2 * (6 + 16) if batch_norm else 0
    dense = (400 + 1) * 120 + (120 + 1) * 84 + (84 + 1) * 10
    assert model.count_params() == conv + norm + dense


def test_main_job_trains_lenet(capsys):
    from nn_from_scratch import cli

    assert cli.main(["train", "--model", "lenet", "--train-size", "256", "--epochs", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "trained lenet for 1 epoch(s)" in out and re.search(r"test accuracy: 0\.\d{4}", out)
    # The printed numbers are those of the documented recipe (README: Adam 4e-3, cosine decay
    # per batch to 0, batch 64, x / 255, seed 0), written out by hand with the public API.
    from test_learning import printed_results, recipe_by_hand
    from nn_from_scratch import zoo
    from nn_from_scratch.callbacks import CosineDecay

    loss, accuracy = printed_results(out)
    expected = recipe_by_hand(zoo.lenet5(seed=0), Adam(4e-3), 256, 1, 64, [CosineDecay(decay_steps=4, unit="batch")])
    assert (loss, accuracy) == (round(expected[0], 4), round(expected[1], 4))
