"""Central finite differences in float64 for every layer and loss of ``layer_cases.py``.

Each case draws its own random shapes (and, for convolutions, padding, stride and dilation)
from the seed. An element passes when ``|analytic - numeric| <= atol + rtol * |numeric|`` with
``rtol = 1e-7``; ``atol = 1e-9`` only absorbs the rounding of the difference quotient on elements
that are themselves tiny (gradients here are of order 1e-2 to 10).

Then ``gradcheck`` itself is tested: it must catch a planted bug, say where, and leave the
parameters as they were.
"""

from __future__ import annotations

import numpy as np
import pytest

from layer_cases import LAYER_CASES, LOSS_CASES, away_from_kinks
from nn_from_scratch.losses import MSELoss, SoftMaxLoss
from nn_from_scratch.model import Sequential
from nn_from_scratch.neurons import Convolution, Linear
from nn_from_scratch.nodes import ReLU, Tanh, Vectorization
from nn_from_scratch.verify import GradcheckError, gradcheck

SEEDS = range(12)
# eps = 1e-5 rather than torch's 1e-6: the layers are linear or smooth on that scale, and the
# larger step divides the rounding error of L(x+h) - L(x-h) by ten.
TIGHT = dict(eps=1e-5, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", LAYER_CASES, ids=lambda c: c.name)
def test_layer_gradients_match_finite_differences(case, seed):
    layer, x = case.make(np.random.default_rng(seed), np.float64)
    if not case.smooth:
        x = away_from_kinks(x)
    assert gradcheck(layer, x, **TIGHT, seed=seed)


@pytest.mark.parametrize("case", LAYER_CASES, ids=lambda c: c.name)
def test_the_finite_difference_draws_are_not_vacuous(case):
    """A layer stubbed to zeros (forward and backward) passes a finite-difference check too, so
    the draws above must exercise something: most have a non-zero output and dL/dx. (A few may
    not: a softmax over an axis of length 1, dropout dropping all of a tiny input.)"""
    alive = 0
    for seed in SEEDS:
        layer, x = case.make(np.random.default_rng(seed), np.float64)
        if not case.smooth:
            x = away_from_kinks(x)
        y = layer.forward(x)
        dx = layer.backward(np.random.default_rng(seed).normal(size=y.shape))
        alive += bool(np.abs(y).max() > 0 and dx is not None and np.abs(dx).max() > 0)
    assert alive >= len(SEEDS) // 2, f"{case.name}: only {alive} of {len(SEEDS)} draws have a non-zero output and dL/dx"


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", LOSS_CASES, ids=lambda c: c.name)
def test_loss_gradients_match_finite_differences(case, seed):
    loss, y_pred, y_true = case.make(np.random.default_rng(seed), np.float64)
    assert gradcheck(loss, y_pred, y_true, **TIGHT)
    # Finite differences only check that backward is the derivative of forward, which a loss
    # stubbed to 0 (gradient 0) also satisfies: the loss of these random draws must be positive
    # (cross-entropies and squared errors of distinct values are) and its gradient non-zero.
    assert loss.forward(y_pred, y_true) > 0
    assert np.abs(loss.backward()).max() > 0


def small_cnn(rng: np.random.Generator) -> Sequential:
    layers = [
        Convolution((2, 9, 8), 3, 3, padding=1, stride=2, dtype=np.float64),
        Tanh(),
        Convolution(None, (2, 3), 2, dilation=(2, 1), dtype=np.float64),
        Vectorization(),
        Linear(output_dim=4, dtype=np.float64),
    ]
    model = Sequential(layers, input_shape=(2, 9, 8), seed=int(rng.integers(1 << 30)))
    for layer in layers:
        if isinstance(layer, Convolution):
            layer.B[...] = rng.normal(size=layer.B.shape)
    return model


@pytest.mark.parametrize("seed", range(3))
def test_model_with_loss_matches_finite_differences(seed):
    rng = np.random.default_rng(seed)
    model = small_cnn(rng)
    x = rng.normal(size=(3, 2, 9, 8))
    labels = rng.integers(0, 4, size=3)
    assert gradcheck(model, x, labels, SoftMaxLoss(), **TIGHT)


def test_models_own_loss_is_used_when_only_targets_are_given():
    from nn_from_scratch.examples.simple_nn import NeuralNetwork
    from nn_from_scratch.optimizers import GradientDescent

    rng = np.random.default_rng(7)
    x, labels = rng.normal(size=(4, 2, 9, 8)), rng.integers(0, 4, size=4)
    model = small_cnn(rng)
    model.loss = SoftMaxLoss()
    assert gradcheck(model, x, labels, **TIGHT)
    net = NeuralNetwork(None, 4, 4, GradientDescent(0.1), model.layers, MSELoss())
    assert gradcheck(net, x, rng.normal(size=(4, 4)), **TIGHT)
    with pytest.raises(ValueError, match="no loss"):
        gradcheck(model.layers, x, labels)


# -- gradcheck itself ------------------------------------------------------------------------
def test_parameters_are_left_bit_for_bit():
    rng = np.random.default_rng(0)
    model = small_cnn(rng)
    before = {name: p.copy() for name, p in model.parameters()}
    ids = {name: id(p) for name, p in model.parameters()}
    gradcheck(model, rng.normal(size=(2, 2, 9, 8)))
    for name, p in model.parameters():
        assert id(p) == ids[name]
        np.testing.assert_array_equal(p, before[name])


def test_buffers_and_training_flags_are_restored():
    from nn_from_scratch.neurons import BatchNormalization

    rng = np.random.default_rng(5)
    layer = BatchNormalization(input_dim=3, dtype=np.float64)
    layer.forward(rng.normal(size=(6, 3)))  # running statistics away from their initial values
    layer.training = False
    before = {name: b.copy() for name, b in layer.buffers().items()}
    # In training mode every forward would update the running statistics.
    assert gradcheck(layer, rng.normal(size=(6, 3)), training=True, **TIGHT)
    assert layer.training is False
    for name, b in layer.buffers().items():
        np.testing.assert_array_equal(b, before[name], err_msg=name)


def test_input_array_is_not_modified():
    x = np.random.default_rng(1).normal(size=(2, 5))
    copy = x.copy()
    gradcheck(Linear(5, 3, dtype=np.float64), x)
    np.testing.assert_array_equal(x, copy)


class _FlippedConvolution(Convolution):
    """A planted bug: dL/dx is flipped left-right."""

    def backward(self, dL_dy):
        return super().backward(dL_dy)[..., ::-1]


def test_detects_wrong_input_gradient_and_names_it():
    layer = _FlippedConvolution((1, 5, 6), 3, 2, padding=1, dtype=np.float64)
    x = np.random.default_rng(2).normal(size=(2, 1, 5, 6))
    with pytest.raises(GradcheckError, match=r"input: gradient wrong at index \(\d+, 0, \d+, \d+\): analytic -?\d.* numeric -?\d"):
        gradcheck(layer, x)
    assert gradcheck(layer, x, raise_exception=False) is False
    assert gradcheck(layer, x, check_input=False) is True  # the parameter gradients are right


class _ScaledBiasLinear(Linear):
    """A planted bug: the bias gradient is doubled."""

    def backward(self, dL_dy):
        dx = super().backward(dL_dy)
        self._W_pd[0] *= 2
        return dx


def test_detects_wrong_parameter_gradient_in_a_model_and_names_the_layer():
    rng = np.random.default_rng(3)
    model = Sequential([Linear(4, 3, dtype=np.float64), ReLU(), _ScaledBiasLinear(3, 2, dtype=np.float64)])
    model.layers[2].W[0] = 1.0
    x = away_from_kinks(rng.normal(size=(5, 4)))
    with pytest.raises(GradcheckError) as info:
        gradcheck(model, x, rng.normal(size=(5, 2)), MSELoss())
    message = str(info.value)
    assert "layer 2 (_ScaledBiasLinear) parameter W: gradient wrong at index (0, " in message
    assert "input" not in message and "layer 0" not in message


def test_detects_a_small_error_that_default_tolerances_would_pass():
    class Slightly(Tanh):
        def backward(self, dL_dy):
            return super().backward(dL_dy) * (1 + 1e-5)

    x = np.random.default_rng(4).normal(size=(3, 4))
    assert gradcheck(Slightly(), x)  # rtol = 1e-3, as torch
    with pytest.raises(GradcheckError, match="input: gradient wrong"):
        gradcheck(Slightly(), x, **TIGHT)


def test_float32_layer_is_refused_with_a_clear_error():
    with pytest.raises(TypeError, match=r"Linear.*float32.*float64"):
        gradcheck(Linear(3, 2), np.ones((1, 3)))


def test_loss_needs_targets():
    with pytest.raises(ValueError, match="targets"):
        gradcheck(SoftMaxLoss(), np.zeros((2, 3)))
