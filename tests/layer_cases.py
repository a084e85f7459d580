"""One table of every layer and loss, read by both correctness checks.

Each case makes a random, built layer (or loss) and its input from a seeded generator, and
says how to compute the same thing with PyTorch *on our parameter layouts*. Two suites
consume the table:

* ``test_gradients.py`` -- central finite differences in float64 (``verify.gradcheck``);
* ``test_reference_sweep.py`` -- PyTorch autograd, outputs, dL/dx and every dL/dparam.

Adding a layer to the library means adding a case here; both checks then cover it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from nn_from_scratch.losses import BinaryCrossEntropy, Loss, MSELoss, SoftMaxLoss
from nn_from_scratch.interfaces import Layer
from nn_from_scratch.neurons import BatchNormalization, Convolution, Linear
from nn_from_scratch.nodes import (AveragePooling, Dropout, GlobalAveragePooling, LeakyReLU, MaxPooling, ReLU, Sigmoid,
                                   SoftMax, Tanh, Vectorization)

Torch = Any  # torch is imported lazily: this module must load without it


@dataclass
class LayerCase:
    """``make(rng, dtype) -> (layer, x)``; ``torch_forward(layer, x_t, params_t) -> y_t``.

    ``params_t`` maps each name of ``layer.parameters()`` to a torch tensor of the same layout.
    ``smooth`` is False for layers with kinks (ReLU, max pooling): their finite-difference
    check keeps inputs away from the kinks (see ``away_from_kinks``).
    """

    name: str
    make: Callable[[np.random.Generator, Any], tuple[Layer, np.ndarray]]
    torch_forward: Callable[[Layer, Torch, dict[str, Torch]], Torch]
    smooth: bool = True
    tags: set[str] = field(default_factory=set)


@dataclass
class LossCase:
    """``make(rng, dtype) -> (loss, y_pred, y_true)``; ``torch_loss(loss, y_pred_t, y_true) -> scalar``."""

    name: str
    make: Callable[[np.random.Generator, Any], tuple[Loss, np.ndarray, np.ndarray]]
    torch_loss: Callable[[Loss, Torch, np.ndarray], Torch]


def away_from_kinks(x: np.ndarray, margin: float = 1e-3) -> np.ndarray:
    """Push values off ``|x| < margin`` so a central difference never straddles a kink at 0."""
    return np.where(np.abs(x) < margin, np.copysign(margin, x) * 2, x)


# -- convolution ----------------------------------------------------------------------------
def random_conv(rng: np.random.Generator, dtype: Any) -> tuple[Convolution, np.ndarray]:
    """Kernel 1-7, channels 1-8, padding 0-3 (or "same"/"valid"), stride 1-3, dilation 1-3, bias or not."""
    kh, kw = (int(k) for k in rng.integers(1, 8, size=2)) if rng.random() < 0.3 else (int(rng.integers(1, 8)),) * 2
    stride = int(rng.integers(1, 4))
    dilation = int(rng.integers(1, 4))
    choice = rng.random()
    padding: Any = "same" if choice < 0.1 else "valid" if choice < 0.15 else int(rng.integers(0, 4))
    c_in, c_out = (int(c) for c in rng.integers(1, 9, size=2))
    n = int(rng.integers(1, 4))
    min_hw = dilation * (max(kh, kw) - 1) + 1
    h, w = (int(s) for s in rng.integers(min_hw, min_hw + 6, size=2))
    layer = Convolution((c_in, h, w), (kh, kw), c_out, padding=padding, use_bias=bool(rng.random() < 0.7),
                        stride=stride, dilation=dilation, dtype=dtype)
    if layer.B is not None:
        layer.B[...] = rng.normal(size=layer.B.shape)
    return layer, rng.normal(size=(n, c_in, h, w)).astype(dtype)


def reference_padding(padding: Any, hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
                      dilation: tuple[int, int] = (1, 1)) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) from a layer's *arguments*, written here, not taken from the
    library (``layer.geometry``), so that a wrong padding split in the library shows up against
    torch. "same" is TensorFlow's rule: output ``ceil(size / stride)``, the odd pixel at the
    end; ``test_geometry.py`` holds this function against a hand-written table and Keras."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        assert padding == "same", padding
        pads = []
        for size, k, s, d in zip(hw, kernel, stride, dilation):
            out = (size + s - 1) // s
            total = max(0, (out - 1) * s + d * (k - 1) + 1 - size)
            pads += [total // 2, total - total // 2]
        return tuple(pads)
    p = (padding,) if isinstance(padding, (int, np.integer)) else tuple(padding)
    return tuple(int(v) for v in (p * 4 if len(p) == 1 else (p[0], p[0], p[1], p[1]) if len(p) == 2 else p))


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, np.integer)) else (int(v[0]), int(v[1]))


def torch_conv(layer: Convolution, x, params):
    import torch.nn.functional as F

    top, bottom, left, right = reference_padding(layer.padding, tuple(x.shape[2:]), tuple(params["W"].shape[2:]),
                                                 _pair(layer.stride), _pair(layer.dilation))
    return F.conv2d(F.pad(x, (left, right, top, bottom)), params["W"], params.get("B"),
                    stride=layer.stride, dilation=layer.dilation)


# -- linear ---------------------------------------------------------------------------------
def random_linear(rng: np.random.Generator, dtype: Any) -> tuple[Linear, np.ndarray]:
    n, n_in, n_out = (int(v) for v in rng.integers(1, 17, size=3))
    layer = Linear(n_in, n_out, dtype=dtype)
    layer.W[0] = rng.normal(size=n_out)  # a non-zero bias, so its gradient path is exercised
    return layer, rng.normal(size=(n, n_in)).astype(dtype)


def torch_linear(layer: Linear, x, params):
    return x @ params["W"][1:] + params["W"][0]


# -- element-wise and reshaping nodes ----------------------------------------------------------
def random_shape(rng: np.random.Generator) -> tuple[int, ...]:
    return tuple(int(s) for s in rng.integers(1, 6, size=int(rng.integers(2, 5))))


def node_case(name: str, factory: Callable[[np.random.Generator], Layer], torch_fn, smooth: bool = True,
              shape: Callable[[np.random.Generator], tuple[int, ...]] = random_shape) -> LayerCase:
    def make(rng, dtype):
        layer = factory(rng)
        return layer, rng.normal(size=shape(rng)).astype(dtype)

    return LayerCase(name, make, lambda layer, x, params: torch_fn(layer, x), smooth=smooth)


def _leaky(rng):
    return LeakyReLU(alpha=float(rng.uniform(0.01, 0.5)))


# -- pooling --------------------------------------------------------------------------------
def random_pooling_geometry(rng: np.random.Generator) -> tuple[tuple[int, int], Any, Any, tuple[int, int]]:
    """Pool 1-4 (square or not), stride 1-3 or the default, padding up to half the pool or "same"/"valid".

    Returns ``(pool_size, stride, padding, (h, w))`` with at least one output pixel.
    """
    kh, kw = (int(k) for k in rng.integers(1, 5, size=2)) if rng.random() < 0.3 else (int(rng.integers(1, 5)),) * 2
    stride: Any = None if rng.random() < 0.3 else (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    choice = rng.random()
    padding: Any = "same" if choice < 0.15 else "valid" if choice < 0.2 else (int(rng.integers(0, kh // 2 + 1)),
                                                                              int(rng.integers(0, kw // 2 + 1)))
    h, w = int(rng.integers(kh, kh + 7)), int(rng.integers(kw, kw + 7))
    return (kh, kw), stride, padding, (h, w)


def random_max_pooling(rng: np.random.Generator, dtype: Any) -> tuple[MaxPooling, np.ndarray]:
    """Inputs are distinct values at least 1/300 apart, so no window has a (near-)tie that a
    finite-difference step could flip, even after ``away_from_kinks``."""
    pool, stride, padding, (h, w) = random_pooling_geometry(rng)
    shape = (int(rng.integers(1, 4)), int(rng.integers(1, 4)), h, w)
    size = int(np.prod(shape))
    spacing = 4.0 / max(size, 300)
    x = (rng.permutation(size) - (size - 1) / 2) * spacing
    return MaxPooling(pool, stride, padding), x.reshape(shape).astype(dtype)


def random_average_pooling(rng: np.random.Generator, dtype: Any) -> tuple[AveragePooling, np.ndarray]:
    pool, stride, padding, (h, w) = random_pooling_geometry(rng)
    layer = AveragePooling(pool, stride, padding, count_include_pad=bool(rng.random() < 0.6))
    return layer, rng.normal(size=(int(rng.integers(1, 4)), int(rng.integers(1, 4)), h, w)).astype(dtype)


def _pool_padding(layer, x) -> tuple[int, int, int, int]:
    pool = _pair(layer.pool_size)
    stride = pool if getattr(layer, "stride", None) is None else _pair(layer.stride)
    return reference_padding(layer.padding, tuple(x.shape[2:]), pool, stride)


def _symmetric_padding(layer, x) -> tuple[int, int] | None:
    top, bottom, left, right = _pool_padding(layer, x)
    return (top, left) if (top, left) == (bottom, right) else None


def torch_max_pooling(layer: MaxPooling, x, params):
    import torch.nn.functional as F

    symmetric = _symmetric_padding(layer, x)
    if symmetric is not None:  # torch's own padding argument: the most independent reference
        return F.max_pool2d(x, layer.pool_size, layer.stride, padding=symmetric)
    top, bottom, left, right = _pool_padding(layer, x)
    return F.max_pool2d(F.pad(x, (left, right, top, bottom), value=float("-inf")), layer.pool_size, layer.stride)


def torch_average_pooling(layer: AveragePooling, x, params):
    import torch
    import torch.nn.functional as F

    symmetric = _symmetric_padding(layer, x)
    if symmetric is not None:
        return F.avg_pool2d(x, layer.pool_size, layer.stride, padding=symmetric, count_include_pad=layer.count_include_pad)
    top, bottom, left, right = _pool_padding(layer, x)
    pad = (left, right, top, bottom)
    y = F.avg_pool2d(F.pad(x, pad), layer.pool_size, layer.stride)
    if not layer.count_include_pad:  # rescale kh*kw to the number of real elements per window
        inside = F.avg_pool2d(F.pad(torch.ones_like(x[:1, :1]), pad), layer.pool_size, layer.stride)
        y = y / inside
    return y


def random_global_average_pooling(rng: np.random.Generator, dtype: Any) -> tuple[GlobalAveragePooling, np.ndarray]:
    spatial = tuple(int(s) for s in rng.integers(1, 6, size=int(rng.integers(1, 3))))
    shape = (int(rng.integers(1, 4)), int(rng.integers(1, 5))) + spatial
    return GlobalAveragePooling(), rng.normal(size=shape).astype(dtype)


# -- dropout --------------------------------------------------------------------------------
class ReplayGenerator:
    """Stands in for a ``numpy.random.Generator``: every ``random`` call returns the same draws,
    so a dropout layer's forward is a fixed function of its input (a finite-difference check
    calls it many times) and the reference can read the same mask off a twin layer."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def random(self, size: Any = None, dtype: Any = np.float64) -> np.ndarray:
        return np.random.default_rng(self.seed).random(size, dtype=dtype)


def random_dropout(rng: np.random.Generator, dtype: Any, training: bool = True) -> tuple[Dropout, np.ndarray]:
    """Rate 0.05-0.9 on a random shape; in training mode the replayed draws keep at least one
    element and drop at least one (a mask of all zeros would make any dL/dx, zeros included,
    look right), unless the input has a single element."""
    layer = Dropout(float(rng.uniform(0.05, 0.9)))
    shape = random_shape(rng)
    for _ in range(100):
        layer.rng = ReplayGenerator(int(rng.integers(1 << 31)))
        twin = Dropout(layer.rate)
        twin.rng = layer.rng
        kept = twin.forward(np.ones(shape)) != 0
        if kept.any() and (not kept.all() or kept.size == 1):
            break
    layer.training = training
    return layer, rng.normal(size=shape).astype(dtype)


def torch_dropout(layer: Dropout, x, params):
    import torch

    if not layer.training:
        return x
    # Which elements survive is read off the layer (a twin on the same replayed draws, fed
    # ones), not rebuilt with a copy of its rule: the mask's law -- keep rate 1 - rate,
    # independent elements -- is checked through its statistics in test_layers_modes.py. What
    # is checked here is everything else: the inverted scaling 1 / (1 - rate), applied to x.
    twin = Dropout(layer.rate)
    twin.rng = layer.rng
    keep = twin.forward(np.ones(tuple(x.shape))) != 0
    return x * (torch.as_tensor(keep, dtype=x.dtype) / (1 - layer.rate))  # torch's own mask scaling


# -- batch normalisation ----------------------------------------------------------------------
def random_batchnorm(rng: np.random.Generator, dtype: Any, spatial: bool, training: bool):
    """Dense ``(N, F)`` or ``(N, C, L)`` / ``(N, C, H, W)`` input, >= 4 values per channel, random
    gamma/beta/momentum/eps; in inference mode, random running statistics."""
    c = int(rng.integers(2, 6))  # several channels: a per-channel sum can cancel, the max over channels rarely
    if spatial:
        dims = tuple(int(s) for s in rng.integers(2, 5, size=int(rng.integers(1, 3))))
        n = max(int(rng.integers(1, 4)), -(-4 // int(np.prod(dims))))
        shape = (n, c) + dims
    else:
        shape = (int(rng.integers(4, 9)), c)
    layer = BatchNormalization(momentum=[0.1, 0.3, None][int(rng.integers(3))], eps=float(rng.choice([1e-5, 1e-3])),
                               input_dim=c, dtype=dtype)
    layer.gamma[...] = rng.normal(size=c)
    layer.beta[...] = rng.normal(size=c)
    if not training:
        layer.running_mean[...] = rng.normal(size=c)
        layer.running_var[...] = rng.uniform(0.3, 3.0, size=c)
        layer.training = False
    x = rng.normal(size=shape) * rng.uniform(0.5, 3.0, size=(1, c) + (1,) * (len(shape) - 2)) + rng.normal(size=(1, c) + (1,) * (len(shape) - 2))
    return layer, x.astype(dtype)


def torch_batchnorm(layer: BatchNormalization, x, params):
    import torch
    import torch.nn.functional as F

    if layer.training:
        return F.batch_norm(x, None, None, params["gamma"], params["beta"], training=True, eps=layer.eps)
    mean = torch.as_tensor(layer.running_mean, dtype=x.dtype)
    var = torch.as_tensor(layer.running_var, dtype=x.dtype)
    return F.batch_norm(x, mean, var, params["gamma"], params["beta"], training=False, eps=layer.eps)


LAYER_CASES: list[LayerCase] = [
    LayerCase("Convolution", random_conv, torch_conv),
    LayerCase("Linear", random_linear, torch_linear),
    node_case("ReLU", lambda rng: ReLU(), lambda l, x: x.relu(), smooth=False),
    node_case("LeakyReLU", _leaky, lambda l, x: __import__("torch").nn.functional.leaky_relu(x, l.alpha), smooth=False),
    node_case("Sigmoid", lambda rng: Sigmoid(), lambda l, x: x.sigmoid()),
    node_case("Tanh", lambda rng: Tanh(), lambda l, x: x.tanh()),
    node_case("SoftMax", lambda rng: SoftMax(), lambda l, x: x.softmax(dim=-1)),
    node_case("Vectorization", lambda rng: Vectorization(), lambda l, x: x.flatten(1)),
    LayerCase("MaxPooling", random_max_pooling, torch_max_pooling, smooth=False),
    LayerCase("AveragePooling", random_average_pooling, torch_average_pooling),
    LayerCase("GlobalAveragePooling", random_global_average_pooling,
              lambda l, x, params: x.mean(dim=tuple(range(2, x.ndim)))),
    LayerCase("Dropout", random_dropout, torch_dropout),
    LayerCase("Dropout-inference", lambda rng, dtype: random_dropout(rng, dtype, training=False), torch_dropout),
    LayerCase("BatchNormalization-dense", lambda rng, dtype: random_batchnorm(rng, dtype, False, True), torch_batchnorm),
    LayerCase("BatchNormalization-spatial", lambda rng, dtype: random_batchnorm(rng, dtype, True, True), torch_batchnorm),
    LayerCase("BatchNormalization-inference", lambda rng, dtype: random_batchnorm(rng, dtype, bool(rng.random() < 0.5), False),
              torch_batchnorm),
]


# -- layers of modern CNNs (activations, reshape, upsampling, per-sample normalisation) -------
# The torch references are built from each layer's constructor arguments (torch's own modules
# and functions), never from what the layer derived from them.
from nn_from_scratch.neurons import GroupNormalization, LayerNormalization  # noqa: E402
from nn_from_scratch.nodes import ELU, GELU, Identity, LogSoftMax, Reshape, SiLU, Softplus, UpSampling2D  # noqa: E402


def _spread_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Normal values with a random spread of 1-5, so tails (e.g. GELU at -8, softplus above its threshold) occur."""
    return rng.normal(size=shape) * rng.uniform(1.0, 5.0)


def random_activation(factory: Callable[[np.random.Generator], Layer]):
    def make(rng: np.random.Generator, dtype: Any) -> tuple[Layer, np.ndarray]:
        layer = factory(rng)
        return layer, _spread_normal(rng, random_shape(rng)).astype(dtype)

    return make


def random_softplus(rng: np.random.Generator, dtype: Any) -> tuple[Softplus, np.ndarray]:
    """torch's defaults half of the time (what Keras can express); else beta 0.5-3 and a threshold
    of 1-6, low enough that the linear branch is taken. Inputs keep 1e-3 off the switch
    ``beta x = threshold``, where the function jumps by ``log1p(exp(-threshold)) / beta``."""
    layer = Softplus() if rng.random() < 0.5 else Softplus(beta=float(rng.uniform(0.5, 3.0)), threshold=float(rng.uniform(1.0, 6.0)))
    x = _spread_normal(rng, random_shape(rng))
    near = np.abs(x * layer.beta - layer.threshold) < 1e-3
    return layer, np.where(near, x + 2e-3 / layer.beta, x).astype(dtype)


def random_log_softmax(rng: np.random.Generator, dtype: Any) -> tuple[LogSoftMax, np.ndarray]:
    """Any per-sample axis, counted from the front or the back (the last one half of the time)."""
    shape = random_shape(rng)
    ndim = len(shape)
    axis = -1 if rng.random() < 0.5 else int(rng.choice([a for a in range(-ndim + 1, ndim) if a != 0]))
    return LogSoftMax(axis=axis), (rng.normal(size=shape) * 3).astype(dtype)


def random_reshape(rng: np.random.Generator, dtype: Any) -> tuple[Reshape, np.ndarray]:
    """A random factorisation of the per-sample size (dims shuffled, neighbours merged), sometimes with a -1."""
    shape = random_shape(rng)
    dims = [int(d) for d in rng.permutation(shape[1:])]
    target: list[int] = []
    for d in dims:
        if target and rng.random() < 0.4:
            target[-1] *= d
        else:
            target.append(d)
    if rng.random() < 0.3:
        target.append(1)
    if rng.random() < 0.5:
        target[int(rng.integers(len(target)))] = -1
    return Reshape(tuple(target)), rng.normal(size=shape).astype(dtype)


def random_upsampling(interpolation: str):
    def make(rng: np.random.Generator, dtype: Any) -> tuple[UpSampling2D, np.ndarray]:
        factors = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
        size: Any = factors[0] if rng.random() < 0.4 else factors
        shape = (int(rng.integers(1, 4)), int(rng.integers(1, 4)), int(rng.integers(1, 7)), int(rng.integers(1, 7)))
        return UpSampling2D(size, interpolation), rng.normal(size=shape).astype(dtype)

    return make


def torch_upsampling(layer: UpSampling2D, x, params):
    import torch.nn.functional as F

    size = layer.get_config()["size"]
    factors = (size, size) if isinstance(size, int) else tuple(size)
    if layer.interpolation == "nearest":
        return F.interpolate(x, scale_factor=factors, mode="nearest")
    return F.interpolate(x, scale_factor=factors, mode="bilinear", align_corners=False)


def _per_sample_offsets(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Inputs whose samples have their own mean and spread, as activations do."""
    lead = (shape[0],) + (1,) * (len(shape) - 1)
    return rng.normal(size=shape) * rng.uniform(0.5, 3.0, size=lead) + rng.normal(size=lead) * 2


# Groups of one or two values are degenerate and left to test_modern_layers.py (hand-computed
# answers): over one value x^ = 0 and y = beta, and torch's float32 statistics leave rounding
# noise where dL/dgamma is exactly 0 (F.group_norm even refuses one value per group in a batch
# of one); over two, x^ = +-sqrt(var / (var + eps)) and dL/dx ~ eps / var is what is left of
# O(1) terms cancelling, where torch's own float64 backward is ~2e-10 off (against mpmath).
def _normalised_size_ok(size: int) -> bool:
    return size >= 3


def random_layer_norm(rng: np.random.Generator, dtype: Any) -> tuple[LayerNormalization, np.ndarray]:
    """Torch-style trailing ``normalized_shape`` or Keras-style ``axis`` (any non-empty set of
    per-sample axes, negative or positive), eps 1e-5 or 1e-3, random gamma and beta."""
    while True:
        layer, x = _draw_layer_norm(rng, dtype)
        if _normalised_size_ok(int(layer.gamma.size)):
            return layer, x


def _draw_layer_norm(rng: np.random.Generator, dtype: Any) -> tuple[LayerNormalization, np.ndarray]:
    per_sample = tuple(int(s) for s in rng.integers(1, 6, size=int(rng.integers(1, 4))))
    shape = (int(rng.integers(1, 4)),) + per_sample
    rank = len(per_sample)
    eps = float(rng.choice([1e-5, 1e-3]))
    if rng.random() < 0.5:
        k = int(rng.integers(1, rank + 1))
        layer = LayerNormalization(per_sample[rank - k:], eps=eps, dtype=dtype)
    else:
        axes = [a for a in range(1, rank + 1) if rng.random() < 0.5] or [int(rng.integers(1, rank + 1))]
        axis: Any = [a - (rank + 1) if rng.random() < 0.5 else a for a in axes]
        layer = LayerNormalization(axis=axis[0] if len(axis) == 1 and rng.random() < 0.5 else tuple(axis), eps=eps, dtype=dtype)
    layer.build(per_sample)
    layer.gamma[...] = rng.normal(size=layer.gamma.shape)
    layer.beta[...] = rng.normal(size=layer.beta.shape)
    return layer, _per_sample_offsets(rng, shape).astype(dtype)


def torch_layer_norm(layer: LayerNormalization, x, params):
    import torch.nn.functional as F

    config = layer.get_config()
    if config["normalized_shape"] is not None:
        return F.layer_norm(x, tuple(config["normalized_shape"]), params["gamma"], params["beta"], eps=config["eps"])
    axes = sorted({a % x.ndim for a in config["axis"]})  # Keras' axes, batch = 0
    moved = x.movedim(axes, list(range(x.ndim - len(axes), x.ndim)))
    y = F.layer_norm(moved, tuple(moved.shape[x.ndim - len(axes):]), params["gamma"], params["beta"], eps=config["eps"])
    return y.movedim(list(range(x.ndim - len(axes), x.ndim)), axes)


def random_group_norm(rng: np.random.Generator, dtype: Any) -> tuple[GroupNormalization, np.ndarray]:
    """(N, C), (N, C, L) or (N, C, H, W); 1-4 groups of 1-3 channels (groups = 1 and groups = C included)."""
    while True:
        groups, per_group = int(rng.integers(1, 5)), int(rng.integers(1, 4))
        spatial = tuple(int(s) for s in rng.integers(1, 5, size=int(rng.integers(0, 3))))
        if _normalised_size_ok(per_group * int(np.prod(spatial))):
            break
    shape = (int(rng.integers(1, 4)), groups * per_group) + spatial
    layer = GroupNormalization(groups, eps=float(rng.choice([1e-5, 1e-3])), input_dim=groups * per_group, dtype=dtype)
    layer.gamma[...] = rng.normal(size=layer.gamma.shape)
    layer.beta[...] = rng.normal(size=layer.beta.shape)
    return layer, _per_sample_offsets(rng, shape).astype(dtype)


def torch_group_norm(layer: GroupNormalization, x, params):
    import torch.nn.functional as F

    return F.group_norm(x, layer.get_config()["groups"], params["gamma"], params["beta"], eps=layer.get_config()["eps"])


def _torch_fn(name: str, **kwargs):
    return lambda layer, x, params: getattr(__import__("torch").nn.functional, name)(x, **kwargs)


LAYER_CASES += [
    LayerCase("GELU", random_activation(lambda rng: GELU()), _torch_fn("gelu")),
    LayerCase("GELU-tanh", random_activation(lambda rng: GELU(approximate="tanh")), _torch_fn("gelu", approximate="tanh")),
    LayerCase("SiLU", random_activation(lambda rng: SiLU()), _torch_fn("silu")),
    LayerCase("ELU", random_activation(lambda rng: ELU(alpha=float(rng.uniform(0.1, 2.0)))),
              lambda layer, x, params: __import__("torch").nn.functional.elu(x, alpha=layer.get_config()["alpha"]), smooth=False),
    LayerCase("Softplus", random_softplus,
              lambda layer, x, params: __import__("torch").nn.functional.softplus(x, beta=layer.get_config()["beta"],
                                                                                   threshold=layer.get_config()["threshold"])),
    LayerCase("LogSoftMax", random_log_softmax,
              lambda layer, x, params: __import__("torch").nn.functional.log_softmax(x, dim=layer.get_config()["axis"])),
    LayerCase("Identity", random_activation(lambda rng: Identity()), lambda layer, x, params: x * 1),
    LayerCase("Reshape", random_reshape,
              lambda layer, x, params: x.reshape(x.shape[0], *layer.get_config()["target_shape"])),
    LayerCase("UpSampling2D-nearest", random_upsampling("nearest"), torch_upsampling),
    LayerCase("UpSampling2D-bilinear", random_upsampling("bilinear"), torch_upsampling),
    LayerCase("LayerNormalization", random_layer_norm, torch_layer_norm),
    LayerCase("GroupNormalization", random_group_norm, torch_group_norm),
]


# -- grouped, depthwise and transposed convolutions ---------------------------------------------
# The references are torch's conv2d / conv_transpose2d called with the layer's constructor
# arguments (padding through reference_padding above), never with what the layer derived.
from nn_from_scratch.neurons import TransposedConvolution  # noqa: E402


def _conv_family_geometry(rng: np.random.Generator) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Kernel 1-4 (square or not); stride and dilation 1-3 per axis, each (1, 1) half of the time."""
    kernel = tuple(int(k) for k in rng.integers(1, 5, size=2)) if rng.random() < 0.4 else (int(rng.integers(1, 5)),) * 2
    stride = (1, 1) if rng.random() < 0.5 else tuple(int(s) for s in rng.integers(1, 4, size=2))
    dilation = (1, 1) if rng.random() < 0.5 else tuple(int(d) for d in rng.integers(1, 4, size=2))
    return kernel, stride, dilation  # type: ignore[return-value]


def random_grouped_conv(rng: np.random.Generator, dtype: Any, depthwise: bool = False) -> tuple[Convolution, np.ndarray]:
    """groups 2-4 with 1-3 input and 1-3 output channels per group, or depthwise (groups = C = 2-5,
    1-3 outputs per channel); padding an int, a pair, (top, bottom, left, right), "same" or "valid"."""
    (kh, kw), stride, dilation = _conv_family_geometry(rng)
    if depthwise:
        groups = int(rng.integers(2, 6))
        c_in, c_out = groups, groups * int(rng.integers(1, 4))
    else:
        groups = int(rng.integers(2, 5))
        c_in, c_out = groups * int(rng.integers(1, 4)), groups * int(rng.integers(1, 4))
    choice = rng.random()
    padding: Any = ("same" if choice < 0.15 else "valid" if choice < 0.2 else int(rng.integers(0, 3)) if choice < 0.5
                    else tuple(int(p) for p in rng.integers(0, 3, size=2)) if choice < 0.75
                    else tuple(int(p) for p in rng.integers(0, 3, size=4)))
    h, w = (int(s) for s in rng.integers(1, 6, size=2) + np.array(dilation) * (np.array((kh, kw)) - 1))
    layer = Convolution((c_in, h, w), (kh, kw), c_out, padding=padding, use_bias=bool(rng.random() < 0.7),
                        stride=stride, dilation=dilation, groups=groups, dtype=dtype)
    if layer.B is not None:
        layer.B[...] = rng.normal(size=layer.B.shape)
    return layer, rng.normal(size=(int(rng.integers(1, 4)), c_in, h, w)).astype(dtype)


def torch_grouped_conv(layer: Convolution, x, params):
    import torch.nn.functional as F

    top, bottom, left, right = reference_padding(layer.padding, tuple(x.shape[2:]), tuple(params["W"].shape[2:]),
                                                 _pair(layer.stride), _pair(layer.dilation))
    return F.conv2d(F.pad(x, (left, right, top, bottom)), params["W"], params.get("B"),
                    stride=layer.stride, dilation=layer.dilation, groups=layer.groups)


def random_transposed_conv(rng: np.random.Generator, dtype: Any) -> tuple[TransposedConvolution, np.ndarray]:
    """Kernel 1-4, stride and dilation 1-3, padding 0-3 (an int, a pair or, 30%, (top, bottom, left,
    right)), output_padding below max(stride, dilation), groups 1 (70%) or 2-3 with 1-3 channels per
    group, images 1-6 pixels a side, bias or not."""
    while True:
        kernel, stride, dilation = _conv_family_geometry(rng)
        choice = rng.random()
        padding: Any = (int(rng.integers(0, 4)) if choice < 0.3 else tuple(int(p) for p in rng.integers(0, 4, size=2))
                        if choice < 0.7 else tuple(int(p) for p in rng.integers(0, 4, size=4)))
        pads = reference_padding(padding, (1, 1), (1, 1), (1, 1))
        output_padding = tuple(int(rng.integers(0, max(s, d))) for s, d in zip(stride, dilation))
        h, w = (int(s) for s in rng.integers(1, 7, size=2))
        out = [(n - 1) * s - p0 - p1 + d * (k - 1) + op + 1
               for n, k, s, d, (p0, p1), op in zip((h, w), kernel, stride, dilation, (pads[:2], pads[2:]), output_padding)]
        if min(out) >= 1:
            break
    groups = 1 if rng.random() < 0.7 else int(rng.integers(2, 4))
    c_in, c_out = groups * int(rng.integers(1, 4)), groups * int(rng.integers(1, 4))
    layer = TransposedConvolution((c_in, h, w), kernel, c_out, padding=padding,
                                  stride=stride, output_padding=output_padding, dilation=dilation, groups=groups,
                                  use_bias=bool(rng.random() < 0.7), dtype=dtype)
    if layer.B is not None:
        layer.B[...] = rng.normal(size=layer.B.shape)
    return layer, rng.normal(size=(int(rng.integers(1, 4)), c_in, h, w)).astype(dtype)


def torch_transposed_conv(layer: TransposedConvolution, x, params):
    """torch's own symmetric padding; (top, bottom, left, right) as padding 0, then a crop."""
    import torch.nn.functional as F

    padding = layer.get_config()["padding"]
    symmetric = len(padding) == 2
    y = F.conv_transpose2d(x, params["W"], params.get("B"), stride=layer.stride, padding=tuple(padding) if symmetric else 0,
                           output_padding=layer.output_padding, groups=layer.groups, dilation=layer.dilation)
    if symmetric:
        return y
    top, bottom, left, right = padding
    return y[:, :, top : y.shape[2] - bottom, left : y.shape[3] - right]


LAYER_CASES += [
    LayerCase("GroupedConvolution", random_grouped_conv, torch_grouped_conv),
    LayerCase("DepthwiseConvolution", lambda rng, dtype: random_grouped_conv(rng, dtype, depthwise=True), torch_grouped_conv),
    LayerCase("TransposedConvolution", random_transposed_conv, torch_transposed_conv),
]


# -- losses ---------------------------------------------------------------------------------
def random_softmax_loss(rng: np.random.Generator, dtype: Any):
    n, k = int(rng.integers(1, 17)), int(rng.integers(2, 11))
    smoothing = float(rng.choice([0.0, 0.0, 0.1, 0.3]))
    logits = (rng.normal(size=(n, k)) * 3).astype(dtype)
    labels = rng.integers(0, k, size=n)
    y_true = labels if rng.random() < 0.5 else np.eye(k)[labels]
    return SoftMaxLoss(label_smoothing=smoothing), logits, y_true


def torch_softmax_loss(loss: SoftMaxLoss, logits, y_true):
    import torch

    target = torch.as_tensor(y_true.argmax(1) if y_true.ndim == 2 else y_true)
    return torch.nn.functional.cross_entropy(logits, target, label_smoothing=loss.label_smoothing)


def random_mse(rng: np.random.Generator, dtype: Any):
    shape = random_shape(rng)
    return MSELoss(), rng.normal(size=shape).astype(dtype), rng.normal(size=shape).astype(dtype)


def torch_mse(loss: MSELoss, y_pred, y_true):
    import torch

    return torch.nn.functional.mse_loss(y_pred, torch.as_tensor(y_true, dtype=y_pred.dtype))


def random_binary_cross_entropy(rng: np.random.Generator, dtype: Any):
    """Logits up to about +-10; hard 0/1 or soft targets; sometimes ``(N, 1)`` logits with ``(N,)`` labels."""
    if rng.random() < 0.3:
        n = int(rng.integers(1, 17))
        logits = (rng.normal(size=(n, 1)) * 4).astype(dtype)
        return BinaryCrossEntropy(), logits, rng.integers(0, 2, size=n).astype(dtype)
    shape = random_shape(rng)
    logits = (rng.normal(size=shape) * 4).astype(dtype)
    targets = rng.integers(0, 2, size=shape) if rng.random() < 0.5 else rng.random(shape)
    return BinaryCrossEntropy(), logits, targets.astype(dtype)


def torch_binary_cross_entropy(loss: BinaryCrossEntropy, y_pred, y_true):
    import torch

    # Evaluated in float64: torch's float32 kernel computes log(1 + e) where log1p is needed and
    # loses ~1e-5 relative for confident logits (e.g. z = -4, t = 0); ours uses log1p.
    target = torch.as_tensor(np.asarray(y_true), dtype=torch.float64).reshape(y_pred.shape)
    return torch.nn.functional.binary_cross_entropy_with_logits(y_pred.double(), target).to(y_pred.dtype)


LOSS_CASES: list[LossCase] = [
    LossCase("SoftMaxLoss", random_softmax_loss, torch_softmax_loss),
    LossCase("MSELoss", random_mse, torch_mse),
    LossCase("BinaryCrossEntropy", random_binary_cross_entropy, torch_binary_cross_entropy),
]
