"""The seed CNN learns: SGD lr 0.1, batch 50, 5,000 training images, 2 epochs, > 85% on the
10,000 test images. It runs through the main job's own code path (``cli.train``), so the
inputs are preprocessed exactly as ``python -m nn_from_scratch train`` does."""

from __future__ import annotations

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
    assert "--lr must be positive" in capsys.readouterr().err


def test_cli_trains_and_prints_the_accuracy(capsys):
    assert cli.main(["train", "--train-size", "100", "--batch-size", "50", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy: 0." in out
