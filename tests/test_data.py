"""Where batches come from: arrays, generators, Dataset pipelines, sample and class weights,
steps_per_epoch and initial_epoch. References: torch training on the same batches with the same
weighted loss, and hand-counted batch sequences."""

from __future__ import annotations

import numpy as np
import pytest

from nn_from_scratch import Sequential
from nn_from_scratch.callbacks import Callback
from nn_from_scratch.data import Dataset, sample_weights
from nn_from_scratch.losses import SoftMaxLoss
from nn_from_scratch.neurons import Linear
from nn_from_scratch.nodes import Tanh
from nn_from_scratch.optimizers import GradientDescent


def mlp(seed: int = 0) -> Sequential:
    return Sequential([Linear(4, 5, dtype=np.float64), Tanh(), Linear(output_dim=3, dtype=np.float64)],
                      loss=SoftMaxLoss(), optimizer=GradientDescent(0.3), seed=seed)


def data(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)), rng.integers(0, 3, n)


def weights_of(model: Sequential) -> list[np.ndarray]:
    return [p.copy() for _, p in model.parameters()]


class RecordBatches(Callback):
    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.epochs: list[int] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)

    def on_batch_end(self, batch, logs=None):
        self.sizes.append(batch)


def torch_weighted_training(model: Sequential, batches) -> list[np.ndarray]:
    """The same steps in torch: cross-entropy per sample, times w, summed over N (Keras' rule)."""
    torch = pytest.importorskip("torch")
    first, second = model.layers[0], model.layers[2]
    w1 = torch.tensor(first.W.copy(), requires_grad=True)
    w2 = torch.tensor(second.W.copy(), requires_grad=True)
    opt = torch.optim.SGD([w1, w2], lr=0.3)
    for x, y, w in batches:
        opt.zero_grad()
        h = torch.tanh(torch.from_numpy(x) @ w1[1:] + w1[0])
        logits = h @ w2[1:] + w2[0]
        per = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y), reduction="none")
        (per * torch.from_numpy(w)).sum().div(len(x)).backward()
        opt.step()
    return [w1.detach().numpy(), w2.detach().numpy()]


def test_sample_and_class_weights_train_as_torch_with_the_weighted_loss():
    x, y = data()
    model = mlp(1)
    sw = np.random.default_rng(5).random(len(x)) * 2
    cw = {0: 1.0, 1: 3.0, 2: 0.5}
    expected_w = sw * np.array([cw[int(c)] for c in y])
    batches = [(x[i : i + 16], y[i : i + 16], expected_w[i : i + 16]) for i in range(0, len(x), 16)]
    reference = torch_weighted_training(model, batches)
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, sample_weight=sw, class_weight=cw)
    for ours, ref in zip(weights_of(model), reference):
        np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-14)


def test_unit_weights_change_nothing_and_bad_weights_are_refused():
    x, y = data()
    a, b = mlp(2), mlp(2)
    a.fit(x, y, epochs=2, batch_size=8, verbose=0)
    b.fit(x, y, epochs=2, batch_size=8, verbose=0, sample_weight=np.ones(len(x)))
    for wa, wb in zip(weights_of(a), weights_of(b)):
        np.testing.assert_allclose(wa, wb, rtol=1e-13)
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(40,\)"):
        mlp().fit(x, y, sample_weight=np.ones(3), verbose=0)
    with pytest.raises(ValueError, match=r"class_weight has no weight for classes \[2\]"):
        mlp().fit(x, y, class_weight={0: 1.0, 1: 1.0}, verbose=0)
    with pytest.raises(ValueError, match="finite and >= 0"):
        sample_weights(y, -np.ones(len(y)))


def test_a_generator_with_steps_per_epoch_trains_on_the_same_batches_as_arrays():
    x, y = data(48)

    def forever():
        while True:
            for i in range(0, 48, 12):
                yield x[i : i + 12], y[i : i + 12]

    a, b = mlp(3), mlp(3)
    a.fit(x, y, batch_size=12, epochs=3, shuffle=False, verbose=0)
    record = RecordBatches()
    history = b.fit(forever(), steps_per_epoch=4, epochs=3, verbose=0, callbacks=[record])
    for wa, wb in zip(weights_of(a), weights_of(b)):
        np.testing.assert_array_equal(wa, wb)
    assert record.sizes == [0, 1, 2, 3] * 3 and len(history.history["loss"]) == 3


def test_a_one_shot_generator_needs_steps_per_epoch_for_a_second_epoch():
    x, y = data(20)
    gen = ((x[i : i + 5], y[i : i + 5]) for i in range(0, 20, 5))
    with pytest.raises(ValueError, match="data ran out.*steps_per_epoch"):
        mlp().fit(gen, epochs=2, verbose=0)
    # With steps_per_epoch, an exhausted generator ends training quietly (as Keras).
    gen = ((x[i : i + 5], y[i : i + 5]) for i in range(0, 20, 5))
    history = mlp().fit(gen, epochs=5, steps_per_epoch=3, verbose=0)
    assert len(history.history["loss"]) == 2  # 3 batches, then 1 and the generator is empty


def test_initial_epoch_runs_the_remaining_epochs_with_their_numbers():
    x, y = data()
    record = RecordBatches()
    history = mlp().fit(x, y, epochs=5, initial_epoch=3, batch_size=20, verbose=0, callbacks=[record])
    assert record.epochs == [3, 4] and len(history.history["loss"]) == 2


def test_dataset_pipeline_shuffles_batches_maps_and_prefetches():
    x, y = np.arange(10.0)[:, None] * np.ones((1, 4)), np.arange(10) % 3
    ds = Dataset.from_arrays(x, y).shuffle(seed=4).batch(4).map(lambda xb, yb: (xb * 2, yb)).prefetch(2)
    assert len(ds) == 3
    first = [xb[:, 0].tolist() for xb, _ in ds]
    second = [xb[:, 0].tolist() for xb, _ in ds]
    assert sorted(v for b in first for v in b) == [2.0 * i for i in range(10)]
    assert [len(b) for b in first] == [4, 4, 2]
    assert first != second  # a fresh order every pass
    order = np.random.default_rng(4).permutation(10)
    assert first[0] == [2.0 * i for i in order[:4]]
    history = mlp().fit(Dataset.from_arrays(*data()).batch(8), epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2


def test_prefetch_hands_errors_of_the_pipeline_to_the_caller():
    def broken(xb, yb):
        raise RuntimeError("augmentation failed")

    ds = Dataset.from_arrays(*data(8)).batch(4).map(broken).prefetch(1)
    with pytest.raises(RuntimeError, match="augmentation failed"):
        list(ds)


def test_evaluate_takes_batches_and_weights():
    x, y = data()
    model = mlp()
    loss, acc = model.evaluate(x, y)
    batched = model.evaluate([(x[i : i + 7], y[i : i + 7]) for i in range(0, len(x), 7)])
    assert batched[0] == pytest.approx(loss, rel=1e-12) and batched[1] == acc
    w = np.zeros(len(x))
    w[:10] = 4.0
    weighted = model.evaluate(x, y, sample_weight=w, return_dict=True)["loss"]
    per = [model.evaluate(x[i : i + 1], y[i : i + 1]) for i in range(10)]
    assert weighted == pytest.approx(4.0 * sum(p[0] for p in per) / len(x), rel=1e-12)
    with pytest.raises(TypeError, match="each batch must be a tuple"):
        model.evaluate([x[:5]])


def test_a_loss_that_explodes_in_the_first_steps_warns_naming_the_learning_rate():
    x, y = data(64)
    model = Sequential([Linear(4, 3, dtype=np.float64)], loss=SoftMaxLoss(), optimizer=GradientDescent(500.0), seed=0)
    with pytest.warns(RuntimeWarning, match="grew from .* learning rate 500.0 is probably too high"):
        model.fit(x * 10, y, epochs=1, batch_size=4, verbose=0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mlp().fit(x, y, epochs=1, batch_size=4, verbose=0)  # a sane rate: no warning


def test_shape_mistakes_get_a_hint():
    from nn_from_scratch.neurons import Convolution

    model = Sequential([Convolution(kernel_size=3, output_layers=2)], input_shape=(3, 8, 8))
    with pytest.raises(ValueError, match=r"single sample without its batch axis\? Pass x\[None\]"):
        model.predict(np.zeros((3, 8, 8)))
    with pytest.raises(ValueError, match=r"channels-last .* x.transpose\(0, 3, 1, 2\)"):
        model.predict(np.zeros((5, 8, 8, 3)))


def test_float16_is_refused_with_the_reason():
    from nn_from_scratch.neurons import Convolution

    with pytest.raises(TypeError, match="float16 is not supported.*eps underflows"):
        Linear(4, 3, dtype=np.float16)
    with pytest.raises(TypeError, match="float16"):
        Convolution(kernel_size=3, output_layers=2, dtype="float16")
    assert np.float16(1e-8) == 0  # the reason, checked
