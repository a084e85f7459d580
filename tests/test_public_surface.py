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


def test_read_idx_bytes_decodes_a_hand_written_file_and_its_gzip():
    import gzip
    import struct

    from nn_from_scratch.datasets.idx import read_idx_bytes

    values = np.array([[1, -2, 3], [400, 5, -6]], dtype=">i2")
    raw = struct.pack(">HBB", 0, 0x0B, 2) + struct.pack(">2I", 2, 3) + values.tobytes()  # magic, int16, dims
    for data in (raw, gzip.compress(raw)):
        got = read_idx_bytes(data)
        assert got.shape == (2, 3)
        np.testing.assert_array_equal(got, [[1, -2, 3], [400, 5, -6]])


def test_erf_and_erfc_match_the_standard_library():
    import math

    from nn_from_scratch import kernels

    x = np.array([-np.inf, -6.0, -2.5, -0.3, 0.0, 1e-8, 0.5, 1.7, 4.0, 27.0, np.inf, np.nan])
    expected = np.array([math.erf(v) if np.isfinite(v) else (np.sign(v) if np.isinf(v) else np.nan) for v in x])
    np.testing.assert_allclose(kernels.erf(x), expected, rtol=4e-16, atol=0, equal_nan=True)
    complement = np.array([math.erfc(v) if np.isfinite(v) else (0.0 if v > 0 else 2.0) if np.isinf(v) else np.nan for v in x])
    np.testing.assert_allclose(kernels.erfc(x), complement, rtol=1e-14, atol=0, equal_nan=True)


def test_bilinear_upsampling_reference_matches_torch():
    torch = pytest.importorskip("torch")
    from nn_from_scratch import kernels

    x = np.random.default_rng(2).normal(size=(2, 3, 4, 5))
    expected = torch.nn.functional.interpolate(torch.tensor(x), scale_factor=(2, 3), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(kernels.upsample_bilinear2d_reference(x, (2, 3)), expected.numpy(), rtol=1e-12, atol=1e-14)


def test_reprs_of_a_graph_model_a_comparison_row_and_torch_helper_modules():
    pytest.importorskip("torch")
    from nn_from_scratch import Input, interop
    from nn_from_scratch.graph import Model
    from nn_from_scratch.nodes import Concatenate
    from nn_from_scratch.verify import compare

    inputs = Input((4,))
    a, b = Linear(None, 3, dtype=np.float64)(inputs), Linear(None, 2, dtype=np.float64)(inputs)
    model = Model(inputs, Concatenate()([a, b]), loss=MSELoss())
    assert repr(model) == "Model((4,) -> (5,), 3 nodes)"
    twin = interop.to_torch(model)
    assert "TorchConcatenate(dim=1)" in repr(twin)
    rng = np.random.default_rng(3)
    report = compare(model, rng.normal(size=(2, 4)), rng.normal(size=(2, 5)), reference="torch", dtype=np.float64)
    row = repr(report.rows[0])
    assert row.startswith("LayerComparison(") and "max_rel=" in row


def test_torch_twin_of_a_layer_norm_over_the_channel_axis():
    torch = pytest.importorskip("torch")
    from nn_from_scratch import interop
    from nn_from_scratch.neurons import LayerNormalization

    model = Sequential([LayerNormalization(axis=1, dtype=np.float64)], input_shape=(3, 4, 5))
    twin = interop.to_torch(model)
    assert "LayerNormOverAxes(axes=(1,), shape=(3,), eps=1e-05)" in repr(twin)
    x = np.random.default_rng(4).normal(size=(2, 3, 4, 5))
    # Reference: torch's layer_norm over the last axis of the channels-last tensor.
    expected = torch.nn.functional.layer_norm(torch.tensor(x).movedim(1, -1), (3,), eps=1e-5).movedim(-1, 1)
    np.testing.assert_allclose(twin(torch.tensor(x)).detach().numpy(), expected.numpy(), rtol=1e-12, atol=1e-12)


def test_keras_twin_of_a_log_softmax_over_axis_1_keeps_its_axis_in_the_config():
    from conftest import keras_or_skip

    keras_or_skip()
    import torch

    from nn_from_scratch import interop
    from nn_from_scratch.nodes import LogSoftMax

    twin = interop.to_keras(Sequential([LogSoftMax(axis=1)], input_shape=(4, 5)), dtype=np.float64)
    layer = twin.layers[-1]
    assert layer.get_config()["axis"] == 1
    x = np.random.default_rng(5).normal(size=(2, 4, 5))
    expected = torch.log_softmax(torch.tensor(x), dim=1).numpy()
    np.testing.assert_allclose(type(layer).from_config(layer.get_config())(torch.tensor(x)).detach().numpy(), expected,
                               rtol=1e-6, atol=1e-6)
