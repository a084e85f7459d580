"""Every optimizer against ``torch.optim`` in float64: same parameters, same gradient sequence,
same trajectory to <= 1e-10 relative error at every step, with and without gradient clipping."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from nn_from_scratch.interfaces import Node
from nn_from_scratch.optimizers import Adam, AdamW, GradientDescent, RMSProp

try:
    import torch
except ImportError:  # only the tests marked needs_torch use it; the others run without
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="needs torch (the reference implementation)")

STEPS = 50
REL_TOL = 1e-10


class ParameterHolder(Node):
    """A stand-in layer: some parameter arrays and, per step, gradients set from outside."""

    def __init__(self, params: dict[str, np.ndarray]) -> None:
        super().__init__("holder")
        self.params = params
        self.grads = {k: np.zeros_like(v) for k, v in params.items()}

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x

    def backward(self, dL_dy: np.ndarray) -> np.ndarray:
        return dL_dy

    def parameters(self) -> dict[str, np.ndarray]:
        return self.params

    def gradients(self) -> dict[str, np.ndarray]:
        return self.grads


# (our class, our kwargs, torch class, torch kwargs)
CONFIGS: list[tuple[str, type, dict[str, Any], str, dict[str, Any]]] = [
    ("sgd", GradientDescent, dict(lr=0.05), "SGD", dict(lr=0.05)),
    ("sgd-momentum", GradientDescent, dict(lr=0.03, momentum=0.9), "SGD", dict(lr=0.03, momentum=0.9)),
    ("sgd-nesterov", GradientDescent, dict(lr=0.02, momentum=0.8, nesterov=True),
     "SGD", dict(lr=0.02, momentum=0.8, nesterov=True)),
    ("sgd-weight-decay", GradientDescent, dict(lr=0.04, momentum=0.5, weight_decay=0.1),
     "SGD", dict(lr=0.04, momentum=0.5, weight_decay=0.1)),
    ("adam", Adam, dict(lr=0.01), "Adam", dict(lr=0.01)),
    ("adam-custom", Adam, dict(lr=0.003, beta1=0.8, beta2=0.95, eps=1e-6, weight_decay=0.05),
     "Adam", dict(lr=0.003, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.05)),
    ("adamw", AdamW, dict(lr=0.01), "AdamW", dict(lr=0.01)),
    ("adamw-custom", AdamW, dict(lr=0.02, beta1=0.5, beta2=0.9, eps=1e-7, weight_decay=0.3),
     "AdamW", dict(lr=0.02, betas=(0.5, 0.9), eps=1e-7, weight_decay=0.3)),
    ("rmsprop", RMSProp, dict(lr=0.01), "RMSprop", dict(lr=0.01)),
    ("rmsprop-centered", RMSProp, dict(lr=0.005, alpha=0.9, centered=True),
     "RMSprop", dict(lr=0.005, alpha=0.9, centered=True)),
    ("rmsprop-momentum", RMSProp, dict(lr=0.004, momentum=0.9, weight_decay=0.01),
     "RMSprop", dict(lr=0.004, momentum=0.9, weight_decay=0.01)),
    ("rmsprop-centered-momentum", RMSProp, dict(lr=0.003, alpha=0.95, eps=1e-6, momentum=0.7, centered=True, weight_decay=0.02),
     "RMSprop", dict(lr=0.003, alpha=0.95, eps=1e-6, momentum=0.7, centered=True, weight_decay=0.02)),
]


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def random_parameters(rng: np.random.Generator) -> dict[str, np.ndarray]:
    shapes = [tuple(int(s) for s in rng.integers(1, 7, size=int(rng.integers(1, 4)))) for _ in range(int(rng.integers(1, 5)))]
    return {f"p{i}": rng.normal(size=shape) for i, shape in enumerate(shapes)}


@needs_torch
@pytest.mark.parametrize("clip", [False, True], ids=["no-clip", "clip"])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("config", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_matches_torch_optim(config, seed: int, clip: bool) -> None:
    _, ours_cls, ours_kwargs, torch_name, torch_kwargs = config
    rng = np.random.default_rng([seed, len(config[0]), clip])
    params = random_parameters(rng)
    total = sum(p.size for p in params.values())
    # Gradient scales vary over two orders of magnitude, so clipping engages on some steps only.
    clip_norm = float(np.sqrt(total)) if clip else None
    holder = ParameterHolder({k: v.copy() for k, v in params.items()})
    ours = ours_cls(**ours_kwargs, clip_norm=clip_norm)
    torch_params = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in params.values()]
    reference = getattr(torch.optim, torch_name)(torch_params, foreach=False, **torch_kwargs)

    clipped_steps = 0
    for step in range(STEPS):
        scale = 10 ** rng.uniform(-1, 1)
        grads = [rng.normal(size=p.shape) * scale for p in params.values()]
        for name, g in zip(holder.grads, grads):
            holder.grads[name][...] = g
        for tp, g in zip(torch_params, grads):
            tp.grad = torch.tensor(g, dtype=torch.float64)
        if clip:
            norm = float(torch.nn.utils.clip_grad_norm_(torch_params, clip_norm))
            clipped_steps += norm > clip_norm
        ours.step([holder])
        reference.step()
        for (name, ours_p), tp in zip(holder.params.items(), torch_params):
            err = relative_error(ours_p, tp.detach().numpy())
            assert err <= REL_TOL, f"{config[0]}: step {step + 1}, parameter {name}: relative error {err:.3e}"
    assert ours.iterations == STEPS
    if clip:
        assert 0 < clipped_steps < STEPS, "the clip_norm case should clip on some steps and not on others"


@needs_torch
@pytest.mark.parametrize("config", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_learning_rate_changed_between_steps_is_used(config) -> None:
    """A schedule sets ``optimizer.lr``; the next step must use it, as torch's param_groups do."""
    _, ours_cls, ours_kwargs, torch_name, torch_kwargs = config
    rng = np.random.default_rng(7)
    params = random_parameters(rng)
    holder = ParameterHolder({k: v.copy() for k, v in params.items()})
    ours = ours_cls(**ours_kwargs)
    torch_params = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in params.values()]
    reference = getattr(torch.optim, torch_name)(torch_params, foreach=False, **torch_kwargs)
    for step in range(20):
        lr = float(ours_kwargs["lr"] * rng.uniform(0.1, 2.0))
        ours.lr = lr
        reference.param_groups[0]["lr"] = lr
        for (name, p), tp in zip(params.items(), torch_params):
            g = rng.normal(size=p.shape)
            holder.grads[name][...] = g
            tp.grad = torch.tensor(g)
        ours.step([holder])
        reference.step()
    for ours_p, tp in zip(holder.params.values(), torch_params):
        assert relative_error(ours_p, tp.detach().numpy()) <= REL_TOL


@pytest.mark.parametrize("config", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_get_config_rebuilds_the_optimizer(config) -> None:
    _, ours_cls, ours_kwargs, _, _ = config
    ours = ours_cls(**ours_kwargs, clip_norm=2.5)
    config_dict = ours.get_config()
    assert config_dict["clip_norm"] == 2.5
    for key, value in ours_kwargs.items():
        assert config_dict[key] == value
    assert ours_cls(**config_dict).get_config() == config_dict


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls", [GradientDescent, Adam, AdamW, RMSProp])
def test_update_is_in_place_and_keeps_dtype(cls, dtype) -> None:
    rng = np.random.default_rng(3)
    holder = ParameterHolder({"W": rng.normal(size=(4, 3)).astype(dtype)})
    array = holder.params["W"]
    before = array.copy()
    holder.grads["W"][...] = rng.normal(size=(4, 3))
    cls(**({"momentum": 0.9} if cls is RMSProp else {})).step([holder])
    assert holder.params["W"] is array and array.dtype == dtype
    assert not np.array_equal(array, before)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Adam(lr=0),
        lambda: Adam(beta1=1.0),
        lambda: AdamW(beta2=-0.1),
        lambda: RMSProp(alpha=1.5),
        lambda: RMSProp(momentum=-1),
        lambda: GradientDescent(nesterov=True),
    ],
)
def test_bad_hyper_parameters_raise(make) -> None:
    with pytest.raises(ValueError):
        make()
