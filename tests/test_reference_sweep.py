"""Randomised reference sweep: every layer and loss of ``tests/layer_cases.py`` against PyTorch autograd.

Each configuration is drawn from its own seeded generator, so any failure reproduces alone.
Per configuration: the output, ``dL/dx`` and every ``dL/dparam`` (and, for losses, the loss and
``dL/dy_pred``) are compared with torch, which computes them from the same input and the same
parameters, in the same dtype. The backward pass is driven by a random ``dL/dy``.

Error measure: ``max |ours - torch| / max |torch|`` per tensor. Tolerances: float64 1e-10,
float32 1e-5 (see ``nn_from_scratch.verify.compare`` for why those bounds are honest).

Set ``NN_SWEEP_SEED`` to draw a different set of configurations (the default is fixed).
"""

from __future__ import annotations

import os
import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from layer_cases import LAYER_CASES, LOSS_CASES, LayerCase, LossCase  # noqa: E402

BASE_SEED = int(os.environ.get("NN_SWEEP_SEED", "20231110"))
TOLERANCES = {np.float64: 1e-10, np.float32: 1e-5}
DTYPES = [np.float64, np.float32]
# The convolution has by far the most configuration space (kernel, channels, padding, stride,
# dilation, bias); it gets the most draws.
SEEDS_PER_CASE = {"Convolution": 100, "GroupedConvolution": 40, "DepthwiseConvolution": 40, "TransposedConvolution": 60}
DEFAULT_SEEDS = 16
MIN_CONFIGURATIONS = 200


def _seeds(name: str) -> int:
    return SEEDS_PER_CASE.get(name, DEFAULT_SEEDS)


def _configurations() -> list[tuple[str, object, type, int]]:
    configs = []
    for case in LAYER_CASES + LOSS_CASES:
        kind = "layer" if isinstance(case, LayerCase) else "loss"
        for dtype in DTYPES:
            for seed in range(_seeds(case.name)):
                configs.append((kind, case, dtype, seed))
    return configs


CONFIGURATIONS = _configurations()


def _rng(case_name: str, seed: int) -> tuple[np.random.Generator, list[int]]:
    # The case name is part of the seed, so adding a case elsewhere in the table changes nothing here.
    entropy = [BASE_SEED, zlib.crc32(case_name.encode()), seed]
    return np.random.default_rng(entropy), entropy


def _rel_error(ours: np.ndarray, ref: np.ndarray) -> float:
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64).reshape(ours.shape)
    diff = float(np.max(np.abs(ours - ref), initial=0.0))
    scale = float(np.max(np.abs(ref), initial=0.0))
    if diff == 0.0:
        return 0.0
    return diff / scale if scale > 0 else float("inf")


def _check(what: str, ours: np.ndarray, ref: np.ndarray, tol: float, context: str) -> None:
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != torch {ref.shape}; {context}"
    err = _rel_error(ours, ref)
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:g}; {context}"


def _torch_tensor(a: np.ndarray, grad: bool) -> "torch.Tensor":
    t = torch.from_numpy(np.array(a, copy=True))
    return t.requires_grad_(grad) if grad and t.is_floating_point() else t


def _sweep_layer(case: LayerCase, dtype: type, seed: int) -> None:
    rng, entropy = _rng(case.name, seed)
    layer, x = case.make(rng, dtype)
    context = f"case {case.name}, {np.dtype(dtype).name}, seed {seed} (np.random.default_rng({entropy})), layer {layer!r}, x {x.shape}"
    tol = TOLERANCES[dtype]
    params = {k: np.array(v, copy=True) for k, v in layer.parameters().items()}

    y = layer.forward(x)
    dy = rng.normal(size=np.shape(y)).astype(dtype)
    dx = layer.backward(dy)
    grads = layer.gradients()

    x_t = _torch_tensor(x, True)
    params_t = {k: _torch_tensor(v, True) for k, v in params.items()}
    y_t = case.torch_forward(layer, x_t, params_t)
    (y_t * torch.from_numpy(dy)).sum().backward()

    _check("output", y, y_t.detach().numpy(), tol, context)
    assert x_t.grad is not None, f"torch computed no dL/dx; {context}"
    _check("dL/dx", dx, x_t.grad.numpy(), tol, context)
    assert set(grads) == set(params), f"gradients {sorted(grads)} != parameters {sorted(params)}; {context}"
    for name, g in grads.items():
        ref = params_t[name].grad
        ref = np.zeros_like(params[name]) if ref is None else ref.numpy()
        _check(f"dL/d{name}", g, ref, tol, context)


def _sweep_loss(case: LossCase, dtype: type, seed: int) -> None:
    rng, entropy = _rng(case.name, seed)
    loss, y_pred, y_true = case.make(rng, dtype)
    context = (f"case {case.name}, {np.dtype(dtype).name}, seed {seed} (np.random.default_rng({entropy})), "
               f"loss {type(loss).__name__}({loss.get_config()}), y_pred {y_pred.shape}")
    tol = TOLERANCES[dtype]
    value = loss.forward(y_pred, y_true)
    grad = loss.backward()
    y_t = _torch_tensor(y_pred, True)
    value_t = case.torch_loss(loss, y_t, y_true)
    value_t.backward()
    _check("loss", np.float64(value), np.float64(value_t.item()), tol, context)
    _check("dL/dy_pred", grad, y_t.grad.numpy(), tol, context)


@pytest.mark.parametrize(
    "kind, case, dtype, seed",
    CONFIGURATIONS,
    ids=[f"{case.name}-{np.dtype(dtype).name}-{seed}" for _, case, dtype, seed in CONFIGURATIONS],
)
def test_matches_torch(kind: str, case, dtype: type, seed: int) -> None:
    if kind == "layer":
        _sweep_layer(case, dtype, seed)
    else:
        _sweep_loss(case, dtype, seed)


def test_sweep_size() -> None:
    """The sweep covers every case of the table, in both dtypes, at least 200 configurations."""
    names = {case.name for _, case, _, _ in CONFIGURATIONS}
    assert names == {c.name for c in LAYER_CASES + LOSS_CASES}
    assert len(CONFIGURATIONS) >= MIN_CONFIGURATIONS, f"only {len(CONFIGURATIONS)} configurations"


def test_convolution_sweep_covers_the_geometry() -> None:
    """The convolution draws span kernel 1-7, channels 1-8, padding 0-3, stride 1-3, dilation 1-3, bias on/off."""
    conv = next(case for case in LAYER_CASES if case.name == "Convolution")
    seen: dict[str, set] = {k: set() for k in ("kernel", "c_in", "c_out", "padding", "stride", "dilation", "bias")}
    for dtype in DTYPES:
        for seed in range(_seeds("Convolution")):
            layer, _ = conv.make(_rng("Convolution", seed)[0], dtype)
            seen["kernel"].update(layer.kernel_size)
            seen["c_in"].add(layer.in_channels)
            seen["c_out"].add(layer.out_channels)
            seen["padding"].update(layer.geometry.padding)
            seen["stride"].update(layer.stride)
            seen["dilation"].update(layer.dilation)
            seen["bias"].add(layer.use_bias)
    assert seen["bias"] == {True, False}
    assert {1, 2, 3} <= seen["stride"] and {1, 2, 3} <= seen["dilation"]
    assert {0, 1, 2, 3} <= seen["padding"]
    assert len(seen["kernel"]) >= 6 and len(seen["c_in"]) >= 6 and len(seen["c_out"]) >= 6
