"""Numerical edge cases of issue 13 (items 10-16), each against PyTorch or a hand-computed answer.

* 10: ``SoftMaxLoss`` with multi-hot / unnormalised soft targets (gradient ``(softmax * sum(t) - t) / N``);
* 11: ``SoftMaxLoss`` with ``-inf`` logits and with a logit spread that overflows;
* 12: batch norm on a constant ``1e37`` float32 input;
* 13: integer input to pooling (torch keeps the dtype in max pooling, refuses average pooling);
* 14: a parameter reached twice by ``Optimizer.step`` is updated once, with the sum of its gradients;
* 15: ``label_smoothing=1.0``;
* 16: invalid hyper-parameters fail at construction.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nn_from_scratch.losses import SoftMaxLoss
from nn_from_scratch.neurons import BatchNormalization, Convolution, Linear
from nn_from_scratch.nodes import AveragePooling, GlobalAveragePooling, MaxPooling
from nn_from_scratch.optimizers import Adam, AdamW, GradientDescent, RMSProp

NINF = -np.inf
DTYPES = {np.float32: torch.float32, np.float64: torch.float64}


def torch_cross_entropy(z: np.ndarray, y: np.ndarray, label_smoothing: float = 0.0) -> tuple[float, np.ndarray]:
    """torch's loss value and dL/dz for logits ``z`` and labels (class indices or probabilities)."""
    logits = torch.tensor(z, requires_grad=True)
    target = torch.tensor(y) if y.dtype.kind in "iu" else torch.tensor(y, dtype=logits.dtype)
    loss = F.cross_entropy(logits, target, label_smoothing=label_smoothing)
    loss.backward()
    return loss.item(), logits.grad.numpy()


def ours(z: np.ndarray, y: np.ndarray, label_smoothing: float = 0.0) -> tuple[float, np.ndarray]:
    loss = SoftMaxLoss(label_smoothing=label_smoothing)
    value = loss.forward(z, y)
    grad = loss.backward()
    assert grad.dtype == z.dtype
    return float(value), grad


def assert_matches_torch(z, y, label_smoothing=0.0):
    tol = 1e-10 if z.dtype == np.float64 else 1e-5
    value, grad = ours(z, y, label_smoothing)
    expected_value, expected_grad = torch_cross_entropy(z, y, label_smoothing)
    np.testing.assert_allclose(value, expected_value, rtol=tol, atol=0, equal_nan=True)
    np.testing.assert_allclose(grad, expected_grad, rtol=tol, atol=tol * 1e-3, equal_nan=True)
    assert np.isnan(value) == math.isnan(expected_value) and np.isinf(value) == math.isinf(expected_value)


# -- 10: soft targets that are not a distribution ----------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "targets",
    [
        [[1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 1.0]],  # multi-hot
        [[0.5, 2.0, 0.25, 0.0], [3.0, 0.0, 0.0, 0.0], [0.1, 0.1, 0.1, 0.1]],  # unnormalised
        [[0.0, 0.0, 0.0, 0.0], [0.2, 0.3, 0.1, 0.4], [1.0, 0.0, 0.0, 0.0]],  # a zero row
    ],
    ids=["multi-hot", "unnormalised", "zero-row"],
)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_soft_targets_that_do_not_sum_to_one_match_torch(dtype, targets, label_smoothing):
    rng = np.random.default_rng(10)
    z = rng.normal(size=(3, 4)).astype(dtype) * 3
    assert_matches_torch(z, np.array(targets, dtype=dtype), label_smoothing)


def test_soft_target_gradient_is_the_finite_difference_of_the_loss():
    # The forward and backward must agree: central differences of the loss itself.
    rng = np.random.default_rng(11)
    z = rng.normal(size=(2, 5))
    t = np.array([[1.0, 1.0, 0.0, 1.0, 0.0], [0.5, 0.0, 2.5, 0.0, 0.0]])
    _, grad = ours(z, t)
    numeric = np.zeros_like(z)
    h = 1e-6
    for index in np.ndindex(*z.shape):
        plus, minus = z.copy(), z.copy()
        plus[index] += h
        minus[index] -= h
        numeric[index] = (ours(plus, t)[0] - ours(minus, t)[0]) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-7, atol=1e-9)


# -- 11: -inf logits, overflowing spread -----------------------------------------------------


def _big(dtype) -> float:
    return 3e38 if dtype == np.float32 else 1e308


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "case",
    [
        "ninf-nontarget-int",
        "ninf-nontarget-onehot",
        "ninf-nontarget-int-smoothed",
        "ninf-target-int",
        "spread-int",
        "spread-int-wrong",
        "spread-onehot",
        "spread-int-smoothed",
    ],
)
def test_infinite_logits_and_overflowing_spread_match_torch(dtype, case):
    big = _big(dtype)
    if case == "ninf-target-int":
        z = np.array([[1.0, NINF, NINF], [0.0, 1.0, 2.0]], dtype=dtype)
        labels = np.array([1, 2])
    elif case.startswith("ninf"):
        z = np.array([[1.0, NINF, 2.0], [0.0, 1.0, NINF]], dtype=dtype)
        labels = np.array([0, 1])
    else:
        z = np.array([[big, -big, 0.0], [-big, big, 1.0]], dtype=dtype)
        labels = np.array([1, 0]) if case == "spread-int-wrong" else np.array([0, 1])
    y = np.eye(3, dtype=dtype)[labels] if "onehot" in case else labels
    assert_matches_torch(z, y, 0.1 if "smoothed" in case else 0.0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_minus_inf_non_target_logit_gives_a_finite_loss(dtype):
    # The case, spelled out: class labels, one logit at -inf that is not the target.
    z = np.array([[2.0, NINF, 0.0]], dtype=dtype)
    value, grad = ours(z, np.array([0]))
    expected = math.log1p(math.exp(-2.0))
    assert np.isfinite(value) and value == pytest.approx(expected, rel=1e-6)
    assert np.all(np.isfinite(grad)) and grad[0, 1] == 0


# -- 15: label_smoothing = 1 -----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_label_smoothing_one_is_accepted_as_in_torch(dtype):
    rng = np.random.default_rng(15)
    z = rng.normal(size=(4, 5)).astype(dtype)
    assert_matches_torch(z, np.array([0, 3, 4, 1]), 1.0)
    assert_matches_torch(z, rng.random((4, 5)).astype(dtype), 1.0)


@pytest.mark.parametrize("bad", [1.0000001, 1.5])
def test_label_smoothing_above_one_is_refused_as_in_torch(bad):
    with pytest.raises(ValueError, match="label_smoothing"):
        SoftMaxLoss(label_smoothing=bad)
    with pytest.raises(RuntimeError, match="label_smoothing"):
        F.cross_entropy(torch.zeros(1, 3), torch.tensor([0]), label_smoothing=bad)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), "0.1"])
def test_label_smoothing_below_zero_or_nan_is_refused(bad):
    # torch 2.13 checks only the upper bound; a negative or NaN smoothing is no distribution,
    # so we refuse it deliberately (SoftMaxLoss docstring).
    with pytest.raises(ValueError, match="label_smoothing"):
        SoftMaxLoss(label_smoothing=bad)


# -- 12: batch norm on a constant huge input ---------------------------------------------------


@pytest.mark.parametrize("shape", [(64, 3), (8, 2, 4, 4), (4, 3)])
def test_batch_norm_of_a_constant_1e37_float32_input_is_zero(shape):
    # Hand-computed: a constant channel has mean 1e37 and variance 0, so x^ = 0 and y = beta;
    # running_mean = 0.1 * 1e37, running_var = 0.9 * 1 + 0.1 * 0 (momentum 0.1).
    layer = BatchNormalization(dtype=np.float32)
    x = np.full(shape, 1e37, dtype=np.float32)
    with np.errstate(all="raise"):  # no overflow anywhere, not even a silent one
        y = layer.forward(x)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, np.zeros(shape, dtype=np.float32))
    np.testing.assert_allclose(layer.running_mean, np.float32(1e36), rtol=1e-6)
    np.testing.assert_array_equal(layer.running_var, np.float32(0.9))
    dx = layer.backward(np.ones(shape, dtype=np.float32))
    assert np.all(np.isfinite(dx))
    layer.training = False
    assert np.all(np.isfinite(layer.forward(x)))


def test_batch_norm_with_a_huge_spread_has_no_nan():
    # Values near the float32 limit with opposite signs: the mean is 0 but the naive sum overflows.
    x = np.tile(np.array([[3e38], [-3e38]], dtype=np.float32), (32, 2))
    layer = BatchNormalization(dtype=np.float32)
    y = layer.forward(x)
    expected = np.tile(np.array([[1.0], [-1.0]]), (32, 2))  # (x - 0) / sqrt(9e76 + eps), exactly +-1
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    assert np.all(np.isfinite(layer.running_mean))


# -- 13: integer input to pooling ------------------------------------------------------------


INT_DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.int64]


@pytest.mark.parametrize("dtype", INT_DTYPES)
@pytest.mark.parametrize("padding", [0, 1])
def test_max_pooling_keeps_an_integer_dtype_as_torch(dtype, padding):
    rng = np.random.default_rng(13)
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max, size=(2, 3, 5, 5), dtype=dtype, endpoint=True)
    x[0, 0] = info.min  # a window of minima beside the padding
    layer = MaxPooling(3, stride=2, padding=padding)
    y = layer.forward(x)
    expected = F.max_pool2d(torch.from_numpy(x.astype(np.int64) if dtype == np.uint8 else x), 3, 2, padding)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, expected.numpy())


@pytest.mark.parametrize("layer", [lambda: AveragePooling(2), lambda: GlobalAveragePooling()], ids=["avg", "global"])
@pytest.mark.parametrize("dtype", INT_DTYPES + [np.bool_])
def test_average_pooling_refuses_integer_input(layer, dtype):
    # torch: avg_pool2d is "not implemented" for uint8/int8/int16/int32 and bool, and computes an
    # integer-truncated mean for int64; mean() refuses every integer dtype. We refuse them all.
    x = np.ones((1, 1, 4, 4), dtype=dtype)
    with pytest.raises(TypeError, match=r"floating.*" + np.dtype(dtype).name):
        layer().forward(x)


def test_max_pooling_refuses_bool_as_torch():
    with pytest.raises(TypeError, match="bool"):
        MaxPooling(2).forward(np.ones((1, 1, 4, 4), dtype=bool))
    with pytest.raises(NotImplementedError):
        F.max_pool2d(torch.ones(1, 1, 4, 4, dtype=torch.bool), 2)


# -- 14: a parameter reached twice ----------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: GradientDescent(0.1, momentum=0.9), lambda: Adam(0.01)], ids=["sgd", "adam"])
def test_a_layer_listed_twice_is_updated_once(make):
    rng = np.random.default_rng(14)
    x = rng.normal(size=(5, 4))
    layers = []
    for _ in range(2):
        layer = Linear(4, 3, W=rng.normal(size=(5, 3)), dtype=np.float64)
        layers.append(layer)
    layers[1].W[...] = layers[0].W
    for layer in layers:
        layer.forward(x)
        layer.backward(np.ones((5, 3)))
    once, twice = make(), make()
    for _ in range(2):
        once.step([layers[0]])
        twice.step([layers[1], layers[1]])
    np.testing.assert_array_equal(layers[1].W, layers[0].W)


def test_a_parameter_shared_by_two_layers_is_updated_once_with_the_summed_gradient():
    # One weight matrix used by two Linear layers: torch's answer is one parameter whose
    # gradient is the sum of both uses, and one update.
    rng = np.random.default_rng(140)
    W = rng.normal(size=(5, 4))
    x = rng.normal(size=(3, 4))
    W_initial = W.copy()  # the layers update W in place
    first, second = Linear(4, 4, W=W, dtype=np.float64), Linear(4, 4, W=W, dtype=np.float64)
    assert first.W is second.W
    h = first.forward(x)
    y = second.forward(h)
    second_dx = second.backward(2 * y)  # L = sum(y^2)
    first.backward(second_dx)
    optimizer = Adam(0.05)
    optimizer.step([first, second])

    Wt = torch.tensor(W_initial, requires_grad=True)
    xt = torch.tensor(x)
    yt = (xt @ Wt[1:] + Wt[0]) @ Wt[1:] + Wt[0]
    (yt**2).sum().backward()
    reference = torch.optim.Adam([Wt], lr=0.05)
    reference.step()
    np.testing.assert_allclose(first.W, Wt.detach().numpy(), rtol=1e-12, atol=1e-12)


# -- 16: hyper-parameters checked at construction ---------------------------------------------


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    "build",
    [
        lambda: GradientDescent(lr=NAN),
        lambda: GradientDescent(lr=INF),
        lambda: GradientDescent(lr=0.0),
        lambda: Adam(lr=NAN),
        lambda: Adam(lr=INF),
        lambda: AdamW(lr=NAN),
        lambda: RMSProp(lr=INF),
        lambda: Adam(eps=NAN),
        lambda: Adam(eps=INF),
        lambda: RMSProp(eps=NAN),
        lambda: Adam(beta1=NAN),
        lambda: Adam(weight_decay=NAN),
        lambda: GradientDescent(0.1, momentum=NAN),
        lambda: GradientDescent(0.1, momentum=-0.5),
        lambda: GradientDescent(0.1, weight_decay=-1.0),
        lambda: GradientDescent(0.1, clip_norm=-1.0),
        lambda: GradientDescent(0.1, clip_norm=0.0),
        lambda: Adam(clip_norm=NAN),
        lambda: Adam(clip_norm=INF),
        lambda: BatchNormalization(eps=NAN),
        lambda: BatchNormalization(eps=INF),
        lambda: BatchNormalization(momentum=NAN),
    ],
)
def test_invalid_hyperparameters_fail_at_construction(build):
    with pytest.raises(ValueError, match=r"lr|eps|beta1|weight_decay|momentum|clip_norm"):
        build()


@pytest.mark.parametrize(
    "build",
    [
        lambda: GradientDescent(lr="0.1"),
        lambda: GradientDescent(0.1, clip_norm="1"),
        lambda: Linear(10, "10"),
        lambda: Linear("10", 10),
        lambda: Linear(10, 10.5),
        lambda: Linear(10, True),
        lambda: Convolution(1, kernel_size="3"),
        lambda: Convolution(1, kernel_size=3, output_layers="4"),
        lambda: Convolution(1, kernel_size=3, output_layers=4.0),
        lambda: Convolution(1, kernel_size=2.5),
        lambda: Convolution(1, kernel_size=3, stride=1.5),
        lambda: Convolution(1, kernel_size=3, padding="1"),
        lambda: Convolution(1, kernel_size=3, padding=1.5),
        lambda: Convolution("1", kernel_size=3),
        lambda: Convolution((1, "28", 28), kernel_size=3),
        lambda: BatchNormalization(eps="1e-5"),
    ],
)
def test_type_confusion_in_constructor_arguments_is_a_clear_error(build):
    with pytest.raises((TypeError, ValueError), match=r"must be|expected"):
        build()


def test_valid_hyperparameters_are_still_accepted():
    GradientDescent(np.float32(0.1), momentum=0.9, clip_norm=np.float64(1.0))
    Adam(1e-3, eps=0.0)
    Linear(np.int64(10), 10)
    Convolution(np.int32(1), kernel_size=(3, 3), output_layers=np.int64(2), stride=(1, 2), padding=(1, 1))
    Convolution(1, kernel_size=np.array([3, 3]), stride=np.array([1, 2]), padding=np.array([1, 1]))
