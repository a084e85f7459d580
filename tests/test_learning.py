"""The seed CNN learns: SGD lr 0.1, batch 50, 5,000 training images, 2 epochs, > 85% on the
10,000 test images. It runs through the main job's own code path (``cli.train``), so the
inputs are preprocessed exactly as ``python -m nn_from_scratch train`` does."""

from __future__ import annotations

import re

import numpy as np
import pytest

from nn_from_scratch import cli, zoo


@pytest.fixture(scope="module")
def result():
    return cli.train(model="seed", epochs=2, batch_size=50, lr=0.1, seed=0, train_size=5000, progress=False)


def test_seed_cnn_beats_85_percent(result):
    assert result.test_accuracy > 0.85


def test_loss_decreases_between_epochs(result):
    first, second = result.epoch_losses
    assert np.isfinite(second) and second < first


def test_seed_cnn_shape_and_size():
    model = zoo.seed_cnn(seed=0)
    assert model.output_shape == (10,)
    assert [layer.output_shape for layer in model.layers] == [(4, 26, 26), (4, 26, 26), (2, 20, 20), (2, 20, 20), (800,), (10,)]
    assert model.count_params() == 4 * 9 + 2 * 4 * 49 + 801 * 10  # 8,438, as the notebook's summary


def test_same_seed_same_model():
    a, b = zoo.seed_cnn(seed=3), zoo.seed_cnn(seed=3)
    for (name, p), (_, q) in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p, q, err_msg=name)


@pytest.mark.parametrize("method", zoo.PREPROCESSING)
def test_preprocessing(method):
    images = np.array([[[0, 255], [128, 33]]], dtype=np.uint8)
    x = zoo.preprocess_images(images, method)
    assert x.shape == (1, 1, 2, 2) and x.dtype == np.float32
    expected = (images - zoo.MNIST_MEAN) / zoo.MNIST_STD if method == "standardize" else images / 255
    np.testing.assert_allclose(x[:, 0], expected, rtol=1e-6, atol=1e-6)  # float32 rounding


def test_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--model", "no-such-model"])
    with pytest.raises(SystemExit):
        cli.main(["train", "--lr", "-1"])
    assert "argument --lr: expected a positive finite number, got '-1'" in capsys.readouterr().err


def printed_results(out: str) -> tuple[float, float]:
    """(last epoch loss, test accuracy) from the two lines ``cli.main`` prints."""
    loss = re.search(r"last epoch loss (\d+\.\d{4})", out)
    accuracy = re.search(r"test accuracy: (\d\.\d{4})\n", out)
    assert loss and accuracy, out
    return float(loss.group(1)), float(accuracy.group(1))


def recipe_by_hand(model, optimizer, train_size: int, epochs: int, batch_size: int, callbacks=()):
    """The README's recipe written out with the public API: the first ``train_size`` MNIST
    images, x / 255, seed 0, shuffled fit; the accuracy counted here with numpy."""
    from nn_from_scratch.datasets import mnist
    from nn_from_scratch.losses import SoftMaxLoss

    (x, y), (x_test, y_test) = mnist.load_data()
    x = (x[:train_size] / 255).astype(np.float32)[:, None]
    model.loss, model.optimizer = SoftMaxLoss(), optimizer
    history = model.fit(x, y[:train_size].astype(np.intp), epochs=epochs, batch_size=batch_size, shuffle=True,
                        callbacks=list(callbacks), verbose=0)
    logits = model.predict((x_test / 255).astype(np.float32)[:, None], batch_size=1000)
    return history.history["loss"][-1], float(np.mean(logits.argmax(axis=1) == y_test))


def test_cli_trains_and_prints_the_accuracy(capsys):
    """The numbers printed are those of the documented recipe (SGD lr 0.1, batch 50, 1 epoch,
    x / 255, seed 0), reproduced by hand; the same command prints the same numbers again."""
    from nn_from_scratch.optimizers import GradientDescent

    assert cli.main(["train", "--train-size", "100", "--batch-size", "50", "--no-progress"]) == 0
    loss, accuracy = printed_results(capsys.readouterr().out)
    expected_loss, expected_accuracy = recipe_by_hand(zoo.seed_cnn(seed=0), GradientDescent(0.1), 100, 1, 50)
    assert loss == round(expected_loss, 4) and accuracy == round(expected_accuracy, 4)
    assert 0.1 < accuracy < 1.0  # 100 images and 2 steps: better than chance, far from done
    assert cli.main(["train", "--train-size", "100", "--batch-size", "50", "--no-progress"]) == 0
    assert printed_results(capsys.readouterr().out) == (loss, accuracy)
