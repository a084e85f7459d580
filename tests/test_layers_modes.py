"""Training versus inference behaviour of Dropout and BatchNormalization.

The gradients of both layers (in each mode) are checked by the layer table (``layer_cases.py``);
here: dropout's mask, scaling and keep rate, and batch norm's running statistics and
inference-mode output against ``torch.nn.BatchNorm1d`` / ``BatchNorm2d`` over several steps.
"""

from __future__ import annotations

import numpy as np
import pytest

from nn_from_scratch import initializers
from nn_from_scratch.model import Sequential
from nn_from_scratch.neurons import BatchNormalization
from nn_from_scratch.nodes import Dropout

try:
    import torch
except ImportError:  # only the tests marked needs_torch use it; the others run without
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="needs torch (the reference implementation)")

F64_TOL = 1e-10
F32_TOL = 1e-5


def relative_error(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


# -- dropout ----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(3))
def test_dropout_is_the_identity_at_inference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    layer = Dropout(float(rng.uniform(0.1, 0.9)))
    layer.rng = rng
    layer.training = False
    x = rng.normal(size=(4, 3, 5))
    np.testing.assert_array_equal(layer.forward(x), x)
    dy = rng.normal(size=x.shape)
    np.testing.assert_array_equal(layer.backward(dy), dy)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(3))
def test_dropout_zeroes_or_scales_by_inverse_keep_probability(seed: int, dtype) -> None:
    rng = np.random.default_rng(seed)
    rate = float(rng.uniform(0.1, 0.9))
    layer = Dropout(rate)
    layer.rng = np.random.default_rng(seed + 100)
    x = rng.uniform(0.5, 2.0, size=(8, 6, 7)).astype(dtype)  # never zero, so a zero output means dropped
    y = layer.forward(x)
    assert y.dtype == dtype
    kept = y != 0
    assert 0 < kept.sum() < kept.size
    tol = F32_TOL if dtype == np.float32 else F64_TOL
    assert relative_error(y[kept], x[kept] / (1 - rate)) <= tol


@pytest.mark.parametrize("seed", range(3))
def test_dropout_backward_reuses_the_forward_mask(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rate = float(rng.uniform(0.1, 0.9))
    layer = Dropout(rate)
    layer.rng = np.random.default_rng(seed + 200)
    x = rng.uniform(0.5, 2.0, size=(5, 9))
    y = layer.forward(x)
    dy = rng.normal(size=x.shape)
    dx = layer.backward(dy)
    np.testing.assert_array_equal(dx == 0, y == 0)
    assert relative_error(dx, dy * (y / x)) <= F64_TOL
    # A second backward (no new forward) still uses the same mask.
    np.testing.assert_array_equal(layer.backward(dy), dx)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_dropout_keep_rate_and_mean_are_as_expected(rate: float) -> None:
    layer = Dropout(rate)
    layer.rng = np.random.default_rng(int(rate * 1000))
    n = 1_000_000
    y = layer.forward(np.ones((1000, n // 1000)))
    keep = 1 - rate
    sigma = np.sqrt(keep * rate / n)  # binomial standard deviation of the kept fraction
    assert abs(np.mean(y != 0) - keep) < 5 * sigma
    assert abs(np.mean(y) - 1.0) < 5 * sigma / keep  # inverted dropout keeps the expectation


def test_dropout_draws_from_its_rng_or_the_library_default() -> None:
    x = np.ones((6, 50))
    a, b = Dropout(0.5), Dropout(0.5)
    a.rng, b.rng = np.random.default_rng(5), np.random.default_rng(5)
    np.testing.assert_array_equal(a.forward(x), b.forward(x))
    unset = Dropout(0.5)
    initializers.set_seed(11)
    first = unset.forward(x)
    initializers.set_seed(11)
    np.testing.assert_array_equal(unset.forward(x), first)


def test_dropout_mask_changes_between_forwards() -> None:
    layer = Dropout(0.5)
    layer.rng = np.random.default_rng(0)
    x = np.ones((4, 64))
    first, second = layer.forward(x), layer.forward(x)
    assert not np.array_equal(first, second)
    # The positive twin: a layer on the same seed draws the same two masks, in the same order.
    twin = Dropout(0.5)
    twin.rng = np.random.default_rng(0)
    np.testing.assert_array_equal(twin.forward(x), first)
    np.testing.assert_array_equal(twin.forward(x), second)


@pytest.mark.parametrize("rate", [0.2, 0.6])
def test_dropout_mask_elements_are_independent_of_position_and_of_each_other(rate: float) -> None:
    """The mask's law, checked through its statistics (not a copy of the rule): every position
    is kept with probability 1 - rate, and whether a neighbour was kept says nothing."""
    layer = Dropout(rate)
    layer.rng = np.random.default_rng(int(rate * 100))
    n, width = 4000, 25
    kept = layer.forward(np.ones((n, width))) != 0
    keep = 1 - rate
    sigma = np.sqrt(keep * rate / n)  # binomial standard deviation of one column's kept share
    assert np.all(np.abs(kept.mean(axis=0) - keep) < 5 * sigma)
    both = np.mean(kept[:, 1:] & kept[:, :-1])  # neighbours kept together: keep^2 if independent
    assert abs(both - keep**2) < 5 * np.sqrt(keep**2 * (1 - keep**2) / (n * (width - 1)))


def test_dropout_in_a_model_is_on_for_training_off_for_predict_and_seeded() -> None:
    x = np.random.default_rng(1).normal(size=(16, 30))
    outputs = []
    for _ in range(2):
        model = Sequential([Dropout(0.4)], seed=123)
        np.testing.assert_array_equal(model.predict(x), x)
        outputs.append(model.forward(x, training=True))
    assert np.any(outputs[0] == 0)
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_dropout_rate_zero_is_the_identity_and_bad_rates_raise() -> None:
    x = np.random.default_rng(2).normal(size=(3, 4))
    np.testing.assert_array_equal(Dropout(0.0).forward(x), x)
    for rate in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="rate"):
            Dropout(rate)
    assert Dropout(0.25).get_config()["rate"] == 0.25


# -- batch normalisation ----------------------------------------------------------------------
def torch_batchnorm_for(shape: tuple[int, ...], momentum, eps: float, dtype):
    c = shape[1]
    cls = torch.nn.BatchNorm2d if len(shape) == 4 else torch.nn.BatchNorm1d
    return cls(c, momentum=momentum, eps=eps, dtype=dtype)


SHAPES = [(8, 5), (4, 3, 7), (3, 4, 5, 6), (2, 1, 3, 3)]


@needs_torch
@pytest.mark.parametrize("momentum", [0.1, 0.35, None])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_batchnorm_running_stats_and_inference_match_torch(shape, momentum) -> None:
    rng = np.random.default_rng([len(shape), shape[1], 0 if momentum is None else int(momentum * 100)])
    c = shape[1]
    eps = float(rng.choice([1e-5, 1e-3]))
    ours = BatchNormalization(momentum=momentum, eps=eps, dtype=np.float64)
    reference = torch_batchnorm_for(shape, momentum, eps, torch.float64)
    gamma, beta = rng.normal(size=c), rng.normal(size=c)
    ours.build(shape[1:])
    ours.gamma[...], ours.beta[...] = gamma, beta
    with torch.no_grad():
        reference.weight.copy_(torch.tensor(gamma))
        reference.bias.copy_(torch.tensor(beta))
    buffers = {k: v for k, v in ours.buffers().items()}
    offset = rng.normal(size=(1, c) + (1,) * (len(shape) - 2)) * 3

    reference.train()
    for step in range(5):
        x = rng.normal(size=shape) * rng.uniform(0.5, 4) + offset
        y = ours.forward(x)
        y_ref = reference(torch.tensor(x)).detach().numpy()
        assert relative_error(y, y_ref) <= F64_TOL, f"training output, step {step + 1}"
        assert relative_error(ours.running_mean, reference.running_mean.numpy()) <= F64_TOL
        assert relative_error(ours.running_var, reference.running_var.numpy()) <= F64_TOL
        assert int(ours.num_batches_tracked) == int(reference.num_batches_tracked) == step + 1
    for name, array in ours.buffers().items():
        assert array is buffers[name], f"buffer {name} must be updated in place"

    ours.training = False
    reference.eval()
    x = rng.normal(size=shape) * 2 + offset
    x_t = torch.tensor(x, requires_grad=True)
    y_ref = reference(x_t)
    dy = rng.normal(size=shape)
    y_ref.backward(torch.tensor(dy))
    before = ours.running_mean.copy(), ours.running_var.copy()
    assert relative_error(ours.forward(x), y_ref.detach().numpy()) <= F64_TOL
    assert relative_error(ours.backward(dy), x_t.grad.numpy()) <= F64_TOL
    assert relative_error(ours.gradients()["gamma"], reference.weight.grad.numpy()) <= F64_TOL
    assert relative_error(ours.gradients()["beta"], reference.bias.grad.numpy()) <= F64_TOL
    np.testing.assert_array_equal(ours.running_mean, before[0])  # inference never updates them
    np.testing.assert_array_equal(ours.running_var, before[1])


@needs_torch
@pytest.mark.parametrize("shape", [(16, 6), (4, 3, 5, 5)])
def test_batchnorm_float32_matches_torch(shape) -> None:
    rng = np.random.default_rng(shape[1])
    ours = BatchNormalization(dtype=np.float32)
    reference = torch_batchnorm_for(shape, 0.1, 1e-5, torch.float32)
    for _ in range(3):
        x = (rng.normal(size=shape) * 2 + 1).astype(np.float32)
        y = ours.forward(x)
        assert y.dtype == np.float32 and ours.running_var.dtype == np.float32
        assert relative_error(y, reference(torch.tensor(x)).detach().numpy()) <= F32_TOL
    assert relative_error(ours.running_var, reference.running_var.numpy()) <= F32_TOL
    ours.training = False
    reference.eval()
    x = rng.normal(size=shape).astype(np.float32)
    assert relative_error(ours.forward(x), reference(torch.tensor(x)).detach().numpy()) <= F32_TOL


def test_batchnorm_mode_follows_the_model() -> None:
    rng = np.random.default_rng(4)
    layer = BatchNormalization(momentum=0.5, input_dim=3, dtype=np.float64)
    model = Sequential([layer], seed=0)
    x = rng.normal(size=(10, 3)) * 3 + 2
    trained = model.forward(x, training=True)
    np.testing.assert_allclose(trained.mean(axis=0), 0, atol=1e-12)  # batch statistics
    running_mean = layer.running_mean.copy()
    predicted = model.predict(x)
    expected = (x - layer.running_mean) / np.sqrt(layer.running_var + layer.eps)
    assert relative_error(predicted, expected) <= F64_TOL
    np.testing.assert_array_equal(layer.running_mean, running_mean)


def test_batchnorm_parameters_buffers_config_and_reset() -> None:
    layer = BatchNormalization(momentum=0.2, eps=1e-4, input_dim=(4, 5, 5), dtype=np.float64)
    assert set(layer.parameters()) == {"gamma", "beta"}
    assert set(layer.gradients()) == {"gamma", "beta"}
    assert set(layer.buffers()) == {"running_mean", "running_var", "num_batches_tracked"}
    assert layer.count_params() == 8
    layer.forward(np.random.default_rng(0).normal(size=(2, 4, 5, 5)) + 1)
    layer.gamma[...] = 3.0
    layer.reset_parameters()
    np.testing.assert_array_equal(layer.gamma, 1.0)
    np.testing.assert_array_equal(layer.running_mean, 0.0)
    np.testing.assert_array_equal(layer.running_var, 1.0)
    assert int(layer.num_batches_tracked) == 0
    config = layer.get_config()
    rebuilt = BatchNormalization(**config)
    assert rebuilt.get_config() == config and rebuilt.input_shape == (4, 5, 5)


def test_batchnorm_bad_inputs_raise_clear_errors() -> None:
    layer = BatchNormalization(input_dim=3, dtype=np.float64)
    with pytest.raises(ValueError, match=r"BatchNormalization.*\(batch, 3, \.\.\.\).*\(batch, 4\)"):
        layer.forward(np.ones((5, 4)))
    with pytest.raises(ValueError, match=r"more than one value per channel.*\(1, 3\)"):
        BatchNormalization(input_dim=3, dtype=np.float64).forward(np.ones((1, 3)))
    with pytest.raises(ValueError, match="gamma"):
        BatchNormalization(input_dim=3, gamma=np.ones(4))
    with pytest.raises(ValueError, match="momentum"):
        BatchNormalization(momentum=1.5)
    single = BatchNormalization(input_dim=3, dtype=np.float64)
    single.training = False
    assert single.forward(np.ones((1, 3))).shape == (1, 3)  # inference works on one sample
