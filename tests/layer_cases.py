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

from nn_from_scratch.losses import Loss, MSELoss, SoftMaxLoss
from nn_from_scratch.interfaces import Layer
from nn_from_scratch.neurons import Convolution, Linear
from nn_from_scratch.nodes import LeakyReLU, ReLU, Sigmoid, SoftMax, Tanh, Vectorization

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


def torch_conv(layer: Convolution, x, params):
    import torch.nn.functional as F

    top, bottom, left, right = layer.geometry.padding
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


LAYER_CASES: list[LayerCase] = [
    LayerCase("Convolution", random_conv, torch_conv),
    LayerCase("Linear", random_linear, torch_linear),
    node_case("ReLU", lambda rng: ReLU(), lambda l, x: x.relu(), smooth=False),
    node_case("LeakyReLU", _leaky, lambda l, x: __import__("torch").nn.functional.leaky_relu(x, l.alpha), smooth=False),
    node_case("Sigmoid", lambda rng: Sigmoid(), lambda l, x: x.sigmoid()),
    node_case("Tanh", lambda rng: Tanh(), lambda l, x: x.tanh()),
    node_case("SoftMax", lambda rng: SoftMax(), lambda l, x: x.softmax(dim=-1)),
    node_case("Vectorization", lambda rng: Vectorization(), lambda l, x: x.flatten(1)),
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


LOSS_CASES: list[LossCase] = [
    LossCase("SoftMaxLoss", random_softmax_loss, torch_softmax_loss),
    LossCase("MSELoss", random_mse, torch_mse),
]
