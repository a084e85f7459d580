"""Public functions that no other test ran (found with ``--cov-branch`` per-function data, issue
14): each is called here and its result checked against a value worked out independently."""

from __future__ import annotations

import numpy as np
import pytest

from nn_from_scratch import Sequential
from nn_from_scratch.losses import MSELoss, SoftMaxLoss
from nn_from_scratch.neurons import BatchNormalization, Linear
from nn_from_scratch.nodes import ReLU, Tanh


def test_a_loss_called_is_its_forward():
    y_pred, y_true = np.array([[1.0, 2.0], [0.5, -1.0]]), np.array([[0.0, 2.0], [1.5, -1.0]])
    assert MSELoss()(y_pred, y_true) == pytest.approx((1.0 + 0.0 + 1.0 + 0.0) / 4)
    logits = np.array([[0.0, np.log(3.0)]])  # softmax (1/4, 3/4)
    assert SoftMaxLoss()(logits, np.array([1])) == pytest.approx(-np.log(0.75))


def test_sequential_repr_lists_the_layers_with_their_configs():
    text = repr(Sequential([Linear(3, 2, name="dense"), ReLU()]))
    assert text.startswith("Sequential([Linear(") and "name='dense'" in text and "output_dim=2" in text
    assert text.endswith("ReLU(name='ReLU')])")


def test_a_layer_called_on_an_array_is_its_forward():
    x = np.array([[-1.0, 0.5, 2.0]])
    np.testing.assert_array_equal(Tanh()(x), np.tanh(x))


def test_forward_cache_can_be_released_taken_out_and_put_back():
    """release_cache drops what backward needs (a clear error instead of a stale gradient);
    save_context / restore_context hand it over and back (a layer shared in a graph)."""
    rng = np.random.default_rng(0)
    layer = Linear(3, 2, dtype=np.float64)
    x1, x2, dy = rng.normal(size=(4, 3)), rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    layer.forward(x1)
    first = layer.save_context()
    with pytest.raises(RuntimeError, match="backward needs a forward"):
        layer.backward(dy)
    layer.forward(x2)
    second = layer.save_context()
    layer.restore_context(first)
    np.testing.assert_allclose(layer.backward(dy), dy @ layer.W[1:].T)  # dL/dx needs no cache
    np.testing.assert_allclose(layer.gradients()["W"][1:], x1.T @ dy)  # dL/dW of the FIRST call
    layer.zero_grad()
    layer.restore_context(second)
    layer.backward(dy)
    np.testing.assert_allclose(layer.gradients()["W"][1:], x2.T @ dy)
    layer.release_cache()
    with pytest.raises(RuntimeError, match="backward needs a forward"):
        layer.backward(dy)


def test_torch_twin_of_an_excluding_pad_average_pool_describes_itself():
    pytest.importorskip("torch")
    from nn_from_scratch import interop
    from nn_from_scratch.nodes import AveragePooling

    twin = interop.to_torch(Sequential([AveragePooling(4, 1, "same", count_include_pad=False)], input_shape=(1, 4, 4)))
    # "same" on 4 with a 4-wide window and stride 1: 3 pixels of padding, 1 before and 2 after.
    assert "kernel_size=(4, 4), stride=(1, 1), padding=(1, 2, 1, 2)" in repr(twin)


def test_keras_twin_reads_batch_norm_running_statistics_back_in_our_layout():
    from conftest import keras_or_skip

    keras_or_skip()
    from nn_from_scratch.interop import keras as keras_interop
    from nn_from_scratch.neurons import Convolution
    from nn_from_scratch.nodes import Vectorization

    rng = np.random.default_rng(1)
    bn = BatchNormalization(input_dim=2 * 2 * 3, dtype=np.float64)
    # A Dense after the batch norm, so the twin flattens in Keras' (H, W, C) order.
    model = Sequential([Convolution((1, 4, 5), 3, 2, dtype=np.float64), Vectorization(), bn, Linear(None, 2, dtype=np.float64)],
                       input_shape=(1, 4, 5))
    bn.running_mean[...] = np.arange(12.0)  # feature (c, h, w) holds c*6 + h*3 + w
    bn.running_var[...] = rng.uniform(0.5, 2.0, size=12)
    keras = keras_or_skip()
    twins, layout, shape = keras_interop.keras_twins(model)
    keras.Sequential([keras.Input(shape=layout.twin_shape(shape), dtype="float64")] + [k for t in twins for k in t.layers])
    for t in twins:
        t.load()  # what to_keras does once the Keras layers are built
    twin = twins[2]
    # Keras holds the features in (H, W, C) order: its moving mean is not ours as stored ...
    keras_bn = twin.layers[0]
    held = keras_interop.variable_array(keras_bn.moving_mean)
    h, w = np.meshgrid(np.arange(2), np.arange(3), indexing="ij")
    expected_hwc = np.stack([0 * 6 + h * 3 + w, 1 * 6 + h * 3 + w], axis=-1).ravel()
    np.testing.assert_array_equal(held, expected_hwc)
    # ... and read_buffers brings it back to ours.
    back = twin.read_buffers(keras_interop.variable_array)
    np.testing.assert_array_equal(back["running_mean"], bn.running_mean)
    np.testing.assert_allclose(back["running_var"], bn.running_var)
