"""API and interop edges that a mutation audit (issue 14) found unguarded.

Each test here failed with one planted bug that the rest of the suite let through (the mutant's
name is in the test's docstring; ``tools/mutants.py`` plants them again). The references are
formulas (initialisers: Keras' documented distributions), hand-computed numbers, or torch and
Keras computing the same thing on their own.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from nn_from_scratch import Sequential, initializers
from nn_from_scratch.callbacks import Callback
from nn_from_scratch.losses import MSELoss, SoftMaxLoss
from nn_from_scratch.neurons import BatchNormalization, Convolution, Linear
from nn_from_scratch.nodes import AveragePooling, MaxPooling, ReLU, Vectorization
from nn_from_scratch.optimizers import GradientDescent


# -- initialisers: the documented distributions ------------------------------------------------
# Keras: glorot_uniform U(+-sqrt(6 / (fan_in + fan_out))); he_uniform U(+-sqrt(6 / fan_in));
# glorot_normal / he_normal a normal truncated at 2 std whose *truncated* std is
# sqrt(2 / (fan_in + fan_out)) / sqrt(2 / fan_in). For a 400x300 dense kernel (120,000 draws)
# a sample std is within ~0.3% of the true one; the tolerance is 3%.
FAN_IN, FAN_OUT = 400, 300
SPECS = {
    "glorot_uniform": ("uniform", math.sqrt(6 / (FAN_IN + FAN_OUT))),
    "he_uniform": ("uniform", math.sqrt(6 / FAN_IN)),
    "glorot_normal": ("truncated", math.sqrt(2 / (FAN_IN + FAN_OUT))),
    "he_normal": ("truncated", math.sqrt(2 / FAN_IN)),
}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_initializers_draw_their_documented_distribution(name):
    """Mutant ``he_normal std sqrt(1/fan_in)`` (and any other initialiser's constant)."""
    kind, scale = SPECS[name]
    layer = Linear(FAN_IN, FAN_OUT, kernel_initializer=name, dtype=np.float64)
    w = layer.W[1:]
    np.testing.assert_array_equal(layer.W[0], 0.0)  # the bias starts at zero
    if kind == "uniform":
        assert np.abs(w).max() <= scale
        assert w.max() > 0.99 * scale and w.min() < -0.99 * scale
        assert np.std(w) == pytest.approx(scale / math.sqrt(3), rel=0.03)
    else:
        assert np.std(w) == pytest.approx(scale, rel=0.03)
        assert abs(np.mean(w)) < 0.01 * scale
        # Truncated at 2 std of the untruncated normal, whose std is scale / 0.87962566.
        bound = 2 * scale / 0.87962566103423978
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.97 * bound


@pytest.mark.parametrize("name", ["he_normal", "he_uniform", "glorot_normal"])
def test_convolution_fans_are_channels_times_kernel_area(name):
    """Keras' conv fans: fan_in = C*kh*kw, fan_out = O*kh*kw."""
    kind, _ = SPECS[name]
    c, o, k = 16, 32, 5
    fan_in, fan_out = c * k * k, o * k * k
    scale = math.sqrt((6 if kind == "uniform" else 2) / (fan_in if name.startswith("he") else fan_in + fan_out))
    conv = Convolution((c, 9, 9), k, o, kernel_initializer=name, dtype=np.float64)
    expected_std = scale / math.sqrt(3) if kind == "uniform" else scale
    assert np.std(conv.W) == pytest.approx(expected_std, rel=0.05)
    np.testing.assert_array_equal(conv.B, 0.0)


def test_zeros_initializer_and_unknown_names():
    np.testing.assert_array_equal(Linear(5, 4, kernel_initializer="zeros").W, 0.0)
    assert np.all(Convolution((2, 4, 4), 3, 2, kernel_initializer="zeros").W == 0.0)
    with pytest.raises(ValueError, match="unknown initializer 'nope'"):
        Linear(5, 4, kernel_initializer="nope")


def test_set_seed_makes_layers_built_outside_a_model_reproducible():
    initializers.set_seed(5)
    a = Linear(6, 4).W.copy()
    initializers.set_seed(5)
    np.testing.assert_array_equal(Linear(6, 4).W, a)
    initializers.set_seed(6)
    assert not np.array_equal(Linear(6, 4).W, a)


# -- max pooling backward with a non-finite dL/dy ----------------------------------------------
def test_max_pooling_backward_with_inf_and_nan_gradients_matches_torch():
    """Mutant: the non-finite branch dropped (``inf * 0`` makes NaN everywhere in the window)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.permutation(2 * 3 * 6 * 6).reshape(2, 3, 6, 6).astype(np.float64)  # distinct: no ties
    for stride in (2, 1):  # disjoint and overlapping windows
        layer = MaxPooling(2, stride)
        y = layer.forward(x)
        dy = rng.normal(size=y.shape)
        dy[0, 0, 0, 0], dy[1, 2, 1, 1], dy[0, 1, 2, 0] = np.inf, -np.inf, np.nan
        dx = layer.backward(dy)
        x_t = torch.tensor(x, requires_grad=True)
        torch.nn.functional.max_pool2d(x_t, 2, stride).backward(torch.tensor(dy))
        # Overlapping windows add in another order than torch: equal up to rounding; inf and NaN
        # must sit at the same places.
        np.testing.assert_allclose(dx, x_t.grad.numpy(), rtol=1e-13, atol=1e-15)
        if stride == 2:
            assert np.isfinite(dx).sum() == dx.size - 3  # one element per non-finite window


# -- compile ------------------------------------------------------------------------------------
def test_compile_sets_the_loss_and_the_optimizer():
    """Mutant: ``compile`` ignoring its loss. The numbers are computed by hand."""
    W = np.array([[0.5, -1.0], [1.0, 2.0], [-3.0, 0.25]])  # bias row 0, then 2 inputs
    x = np.array([[1.0, 2.0], [0.0, -1.0]])
    y = np.array([[1.0, 0.0], [0.0, 1.0]])
    model = Sequential([Linear(2, 2, W=W.copy(), dtype=np.float64)], loss=SoftMaxLoss(), optimizer=GradientDescent(1.0))
    model.compile(optimizer=GradientDescent(0.5), loss=MSELoss())
    assert isinstance(model.loss, MSELoss)
    y_hat = x @ W[1:] + W[0]  # [[-5, 3.75], [3.5, -1.25]]
    assert model.evaluate(x, y, return_dict=True)["loss"] == pytest.approx(np.mean((y_hat - y) ** 2), rel=1e-14)
    model.train_step(x, y)
    grad = 2 * (y_hat - y) / y.size  # d mean((y_hat - y)^2) / d y_hat
    expected = W - 0.5 * np.vstack([grad.sum(0), x.T @ grad])
    np.testing.assert_allclose(model.layers[0].W, expected, rtol=1e-14)
    model.compile()  # nothing passed: nothing changes
    assert isinstance(model.loss, MSELoss) and model.optimizer.lr == 0.5


# -- callbacks: mode="auto" ---------------------------------------------------------------------
class _Fake:
    def __init__(self):
        from types import SimpleNamespace

        self.optimizer = SimpleNamespace(lr=1.0, learning_rate=1.0)
        self.stop_training = False
        self.saved = []

    def get_weights(self):
        return []

    def set_weights(self, weights):
        pass

    def save(self, path, include_optimizer=True):
        self.saved.append(os.fspath(path))


@pytest.mark.parametrize("monitor", ["val_accuracy", "accuracy", "val_acc"])
def test_mode_auto_maximises_an_accuracy_monitor(monitor, tmp_path):
    """Mutant: ``mode="auto"`` minimising accuracy. Keras 2 documents auto as max for names with
    'acc' (Keras 3 reads the metric's direction); a rising accuracy is an improvement."""
    from nn_from_scratch.callbacks import EarlyStopping, ModelCheckpoint, ReduceLROnPlateau

    rising = [0.5, 0.6, 0.7, 0.8, 0.9]
    for cb in (EarlyStopping(monitor=monitor, patience=1), ReduceLROnPlateau(monitor=monitor, patience=1, factor=0.5),
               ModelCheckpoint(tmp_path / "m.safetensors", monitor=monitor, save_best_only=True)):
        fake = _Fake()
        cb.set_model(fake)
        cb.on_train_begin({})
        for epoch, value in enumerate(rising):
            cb.on_epoch_begin(epoch, {})
            cb.on_epoch_end(epoch, {monitor: value, "loss": 1.0})
        assert not fake.stop_training, type(cb).__name__
        assert float(fake.optimizer.lr) == 1.0, type(cb).__name__
        if isinstance(cb, ModelCheckpoint):
            assert len(fake.saved) == len(rising)  # every epoch is a new best
    # ... and a loss monitor still minimises: a rising loss stops after patience epochs.
    stop = EarlyStopping(monitor="val_loss", patience=1)
    fake = _Fake()
    stop.set_model(fake)
    stop.on_train_begin({})
    for epoch, value in enumerate(rising):
        stop.on_epoch_end(epoch, {"val_loss": value})
        if fake.stop_training:
            break
    assert fake.stop_training and epoch == 1


# -- validation_split ---------------------------------------------------------------------------
class _CountSamples(Callback):
    def __init__(self):
        super().__init__()
        self.batches = 0

    def on_batch_end(self, batch, logs=None):
        self.batches += 1


@pytest.mark.parametrize("n, split, n_train", [(10, 0.25, 8), (10, 0.3, 7), (7, 0.5, 4), (3, 0.1, 3)])
def test_validation_split_holds_out_the_last_samples_rounding_the_training_part_up(n, split, n_train):
    """Mutant: rounding down. Keras: ``split_at = ceil(n * (1 - split))`` (n_train by hand)."""
    rng = np.random.default_rng(n)
    x, y = rng.normal(size=(n, 3)), rng.integers(0, 2, size=n)
    model = Sequential([Linear(3, 2, dtype=np.float64)], loss=SoftMaxLoss(), optimizer=GradientDescent(0.1), seed=1)
    counter = _CountSamples()
    history = model.fit(x, y, epochs=1, batch_size=1, validation_split=split, shuffle=False, callbacks=[counter], verbose=0)
    assert counter.batches == n_train
    if n_train < n:
        val_loss, val_acc = model.evaluate(x[n_train:], y[n_train:])
        assert history.history["val_loss"] == [pytest.approx(val_loss, rel=1e-12)]
        assert history.history["val_accuracy"] == [pytest.approx(val_acc)]
    else:
        assert "val_loss" not in history.history


# -- load_weights into an unbuilt model ---------------------------------------------------------
def test_load_weights_builds_an_unbuilt_model(tmp_path):
    """Mutant: ``load_weights`` not building an unbuilt model (the layers had no arrays to fill)."""
    pytest.importorskip("safetensors")

    def layers():
        return [Convolution(None, 3, 2, dtype=np.float64), ReLU(), Vectorization(), Linear(None, 3, dtype=np.float64)]

    model = Sequential(layers(), input_shape=(1, 6, 6), seed=3)
    x = np.random.default_rng(4).normal(size=(4, 1, 6, 6))
    model.save(tmp_path / "m.safetensors")
    fresh = Sequential(layers(), seed=99)
    assert not fresh.built
    fresh.load_weights(tmp_path / "m.safetensors")
    assert fresh.built and fresh.input_shape == (1, 6, 6)
    for (name, a), (_, b) in zip(fresh.parameters(), model.parameters()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    np.testing.assert_array_equal(fresh.predict(x), model.predict(x))


# -- a model keeps the weights its layers already have -----------------------------------------
def test_seeded_model_keeps_weights_the_user_passed():
    """Mutant: ``Sequential(seed=...)`` overwriting weights passed to the layer constructors."""
    W = np.arange(15, dtype=np.float32).reshape(5, 3)
    Wc, Bc = np.ones((2, 1, 3, 3), np.float32), np.array([0.5, -0.5], np.float32)
    gamma = np.array([2.0, 3.0], np.float32)
    model = Sequential([Convolution((1, 5, 5), 3, 2, W=Wc, B=Bc), BatchNormalization(input_dim=2, gamma=gamma),
                        Vectorization(), Linear(None, 3)], seed=0)
    lin = Sequential([Linear(4, 3, W=W)], seed=0)
    np.testing.assert_array_equal(lin.layers[0].W, W)
    np.testing.assert_array_equal(model.layers[0].W, Wc)
    np.testing.assert_array_equal(model.layers[0].B, Bc)
    np.testing.assert_array_equal(model.layers[1].gamma, gamma)
    # The layers without user weights still follow the seed: same seed, same weights.
    again = Sequential([Convolution((1, 5, 5), 3, 2, W=Wc, B=Bc), BatchNormalization(input_dim=2, gamma=gamma),
                        Vectorization(), Linear(None, 3)], seed=0)
    np.testing.assert_array_equal(again.layers[-1].W, model.layers[-1].W)


def _trained_model():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(40, 1, 6, 6)), rng.integers(0, 3, size=40)
    model = Sequential([Convolution(None, 3, 2, dtype=np.float64), ReLU(), Vectorization(), Linear(None, 3, dtype=np.float64)],
                       loss=SoftMaxLoss(), optimizer=GradientDescent(0.5), input_shape=(1, 6, 6), seed=1)
    model.fit(x, y, epochs=2, batch_size=10, verbose=0)
    return model, x


@pytest.mark.parametrize("seed", [None, 0])
def test_a_model_built_from_trained_layers_keeps_their_weights(seed):
    """The bug of issue 14: ``Sequential(trained.layers[:2], input_shape=..., seed=...)``
    re-initialised the trained layers. Reference: the trained arrays, copied before."""
    trained, x = _trained_model()
    before = [(name, p.copy()) for name, p in trained.parameters()]
    head = Sequential(trained.layers[:2], input_shape=(1, 6, 6), seed=seed)
    for (name, p), (_, q) in zip(head.parameters(), before):
        np.testing.assert_array_equal(p, q, err_msg=name)
    # ... and it computes what the first two layers of the trained model compute.
    h = x[:5]
    for layer in trained.layers[:2]:
        layer.training = False
        h = layer.forward(h)
    np.testing.assert_array_equal(head.predict(x[:5]), h)


# -- interop edges ------------------------------------------------------------------------------
def test_to_torch_asymmetric_average_pool_with_count_include_pad():
    """Mutant: the ZeroPad2d dropped (the twin's output 3x3 instead of 4x4). Reference: torch on
    the input padded by hand -- kernel 4, stride 1, "same" on 4x4 pads (top 1, bottom 2, left 1,
    right 2), Keras/TensorFlow's rule: the odd pixel at the bottom/right."""
    torch = pytest.importorskip("torch")
    from nn_from_scratch import interop

    F = torch.nn.functional
    x = np.random.default_rng(8).normal(size=(2, 3, 4, 4))
    expected = F.avg_pool2d(F.pad(torch.tensor(x), (1, 2, 1, 2)), 4, 1).numpy()  # count_include_pad: /16
    assert expected.shape == (2, 3, 4, 4)
    model = Sequential([AveragePooling(4, 1, padding="same", count_include_pad=True)], input_shape=(3, 4, 4))
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-13, atol=1e-15)
    twin = interop.to_torch(model)
    np.testing.assert_allclose(twin(torch.tensor(x)).numpy(), expected, rtol=1e-13, atol=1e-15)
    # count_include_pad=False divides by the number of real elements instead.
    model = Sequential([AveragePooling(4, 1, padding="same", count_include_pad=False)], input_shape=(3, 4, 4))
    ones = F.avg_pool2d(F.pad(torch.ones(1, 1, 4, 4, dtype=torch.float64), (1, 2, 1, 2)), 4, 1).numpy()
    np.testing.assert_allclose(interop.to_torch(model)(torch.tensor(x)).numpy(), expected / ones, rtol=1e-13)
    np.testing.assert_allclose(model.predict(x), expected / ones, rtol=1e-13)


def _keras():
    from conftest import keras_or_skip

    return keras_or_skip()


@pytest.mark.parametrize("momentum", [0.1, 0.3])
def test_to_keras_batch_norm_momentum_is_one_minus_ours(momentum):
    """Mutant: ``momentum`` passed to Keras without ``1 - m``. Keras' update is
    ``moving = moving * momentum + batch * (1 - momentum)`` (its docs); ours is torch's."""
    keras = _keras()
    torch = pytest.importorskip("torch")
    from nn_from_scratch import interop

    rng = np.random.default_rng(9)
    layer = BatchNormalization(momentum=momentum, input_dim=3, dtype=np.float64)
    layer.running_mean[...] = rng.normal(size=3)
    model = Sequential([Linear(4, 3, dtype=np.float64), layer], input_shape=(4,), seed=0)
    twin = interop.to_keras(model)
    bn = [k for k in twin.layers if isinstance(k, keras.layers.BatchNormalization)][0]
    assert bn.momentum == pytest.approx(1 - momentum)
    x = rng.normal(size=(8, 4))
    before = layer.running_mean.copy()
    model.forward(x, training=True)  # one training pass updates the running mean
    batch_mean = (x @ model.layers[0].W[1:] + model.layers[0].W[0]).mean(0)
    np.testing.assert_allclose(layer.running_mean, (1 - momentum) * before + momentum * batch_mean, rtol=1e-12)
    from nn_from_scratch.interop import keras as keras_interop

    with keras_interop.float64_arithmetic():
        twin(torch.from_numpy(x), training=True)
    np.testing.assert_allclose(keras_interop.variable_array(bn.moving_mean), layer.running_mean, rtol=1e-10)


def test_to_keras_batch_norm_after_flatten_follows_keras_hwc_order():
    """Mutant: the per-feature vectors of a batch norm after Flatten left in our (C, H, W) order
    (the Keras twin was off by up to 4.87). Reference: Keras' own prediction vs ours."""
    _keras()
    torch = pytest.importorskip("torch")
    from nn_from_scratch import interop
    from nn_from_scratch.interop import keras as keras_interop

    rng = np.random.default_rng(10)
    bn = BatchNormalization(input_dim=2 * 3 * 4, dtype=np.float64)
    model = Sequential([Convolution((1, 5, 6), 3, 2, dtype=np.float64), Vectorization(), bn, Linear(None, 3, dtype=np.float64)],
                       input_shape=(1, 5, 6), seed=0)
    for arr in (bn.gamma, bn.beta, bn.running_mean):
        arr[...] = rng.normal(size=arr.shape) * 3
    bn.running_var[...] = rng.uniform(0.2, 3.0, size=bn.running_var.shape)
    x = rng.normal(size=(4, 1, 5, 6))
    twin = interop.to_keras(model)
    with keras_interop.float64_arithmetic():
        y = twin(torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, 1, -1))), training=False).detach().numpy()
    np.testing.assert_allclose(y, model.predict(x), rtol=1e-10, atol=1e-12)
