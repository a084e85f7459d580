"""Issue 13, hypothesis properties: save -> load -> save gives the same bytes; a run resumed from
a checkpoint is bit-identical to the uninterrupted run; every layer keeps its dtype contract;
no model file under 1 KiB makes ``load_model`` allocate more than 10 MB."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("safetensors.numpy")

from layer_cases import LAYER_CASES  # noqa: E402
from nn_from_scratch import ModelFileError, Sequential, serialization  # noqa: E402
from nn_from_scratch.callbacks import CosineDecay, StepDecay  # noqa: E402
from nn_from_scratch.interfaces import Neuron  # noqa: E402
from nn_from_scratch.losses import MSELoss, SoftMaxLoss  # noqa: E402
from nn_from_scratch.neurons import BatchNormalization, Linear  # noqa: E402
from nn_from_scratch.nodes import Dropout, ReLU, Sigmoid, Tanh  # noqa: E402
from nn_from_scratch.optimizers import Adam, AdamW, GradientDescent, RMSProp  # noqa: E402
from nn_from_scratch.serialization import load_model_bytes  # noqa: E402

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

OPTIMIZERS = {
    "sgd": lambda: GradientDescent(0.05),
    "sgd-momentum": lambda: GradientDescent(0.05, momentum=0.9, weight_decay=1e-3),
    "nesterov": lambda: GradientDescent(0.05, momentum=0.8, nesterov=True),
    "adam": lambda: Adam(1e-2),
    "adamw": lambda: AdamW(1e-2, weight_decay=0.1),
    "rmsprop-centered": lambda: RMSProp(1e-2, momentum=0.5, centered=True),
}
SCHEDULES = {
    "none": lambda: [],
    "cosine-batch": lambda: [CosineDecay(decay_steps=7, alpha=0.0, unit="batch", warmup_steps=2)],
    "cosine-epoch": lambda: [CosineDecay(decay_steps=3, alpha=0.1)],
    "step": lambda: [StepDecay(step_size=2, gamma=0.5)],
}


@st.composite
def models(draw):
    """A small MLP: widths, activations, batch norm, dropout, dtype, optimizer, seed."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n_in = draw(st.integers(1, 5))
    layers, width = [], n_in
    for _ in range(draw(st.integers(1, 3))):
        out = draw(st.integers(1, 6))
        layers.append(Linear(width, out, dtype=dtype))
        if draw(st.booleans()):
            layers.append(BatchNormalization(momentum=draw(st.sampled_from([0.1, 0.5, None])), dtype=dtype))
        layers.append(draw(st.sampled_from([ReLU, Tanh, Sigmoid]))())
        if draw(st.booleans()):
            layers.append(Dropout(draw(st.sampled_from([0.1, 0.5]))))
        width = out
    layers.append(Linear(width, 3, dtype=dtype))
    optimizer = draw(st.sampled_from(sorted(OPTIMIZERS)))
    loss = draw(st.sampled_from([SoftMaxLoss, MSELoss]))
    seed = draw(st.integers(0, 2**32))
    return lambda: Sequential([type(layer)(**layer.get_config()) for layer in layers], loss=loss(),
                              optimizer=OPTIMIZERS[optimizer](), input_shape=(n_in,), seed=seed)


def targets(model: Sequential, n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 3, n) if isinstance(model.loss, SoftMaxLoss) else rng.normal(size=(n, 3))


def file_bytes(model: Sequential, include_optimizer: bool = True, tmp_path=None) -> bytes:
    """What ``model.save`` writes."""
    return serialization.encode(*serialization.model_to_tensors(model, include_optimizer))


def identical(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(u.dtype == v.dtype and u.shape == v.shape and u.tobytes() == v.tobytes()
                                    for u, v in zip(a, b))


def optimizer_state(model: Sequential) -> list[np.ndarray]:
    arrays = []
    for _, p in model.parameters():
        for key, value in sorted(model.optimizer._state.get(id(p), {}).items()):
            if key != "param":
                arrays.append(np.asarray(value))
    return arrays


@settings(max_examples=30, **SETTINGS)
@given(make=models(), epochs=st.integers(0, 2), include_optimizer=st.booleans(), data_seed=st.integers(0, 100))
def test_save_load_save_gives_the_same_bytes(make, epochs, include_optimizer, data_seed):
    model = make()
    rng = np.random.default_rng(data_seed)
    if epochs:
        x = rng.normal(size=(10, *model.input_shape))
        model.fit(x, targets(model, 10, rng), epochs=epochs, batch_size=4, verbose=0)
    first = file_bytes(model, include_optimizer)
    loaded = load_model_bytes(first)
    assert file_bytes(loaded, include_optimizer) == first
    assert identical(loaded.get_weights(), model.get_weights())


@settings(max_examples=15, **SETTINGS)
@given(make=models(), schedule=st.sampled_from(sorted(SCHEDULES)), epochs=st.integers(2, 4), data=st.data(),
       batch_size=st.integers(2, 7), shuffle=st.booleans(), data_seed=st.integers(0, 100))
def test_a_resumed_run_is_bit_identical_to_the_uninterrupted_one(make, schedule, epochs, data, batch_size, shuffle,
                                                                  data_seed):
    split = data.draw(st.integers(1, epochs - 1))
    rng = np.random.default_rng(data_seed)
    probe = make()
    x = rng.normal(size=(14, *probe.input_shape))  # no batch of one sample (batch norm)
    y = targets(probe, 14, rng)
    uninterrupted = make()
    whole = uninterrupted.fit(x, y, epochs=epochs, batch_size=batch_size, shuffle=shuffle,
                              callbacks=SCHEDULES[schedule](), verbose=0)
    first = make()
    first.fit(x, y, epochs=split, batch_size=batch_size, shuffle=shuffle, callbacks=SCHEDULES[schedule](), verbose=0)
    resumed = load_model_bytes(file_bytes(first))
    rest = resumed.fit(x, y, epochs=epochs, batch_size=batch_size, shuffle=shuffle, initial_epoch=resumed.epoch,
                       callbacks=SCHEDULES[schedule](), verbose=0)
    assert identical(resumed.get_weights(), uninterrupted.get_weights())
    assert identical(optimizer_state(resumed), optimizer_state(uninterrupted))
    assert rest.history["loss"] == whole.history["loss"][split:]


# -- dtype contract ------------------------------------------------------------------------------
def _outputs(value):
    return value if isinstance(value, list) else [value]


@settings(max_examples=120, **SETTINGS)
@given(case=st.sampled_from(LAYER_CASES), dtype=st.sampled_from([np.float32, np.float64]),
       feed=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_every_layer_keeps_its_dtype_contract(case, dtype, feed, seed):
    """A neuron computes in its own dtype whatever it is fed; a node in the dtype of its input.
    dL/dx has the dtype of the layer's computation, every gradient its parameter's,
    and buffers never change dtype."""
    rng = np.random.default_rng(seed)
    layer, x = case.make(rng, dtype)
    inputs = [np.asarray(a).astype(feed) for a in _outputs(x)]
    x = inputs if isinstance(x, list) else inputs[0]
    buffer_dtypes = {k: b.dtype for k, b in layer.buffers().items()}
    y = layer.forward(x)
    expected = np.dtype(dtype) if isinstance(layer, Neuron) else np.dtype(feed)
    for out in _outputs(y):
        assert out.dtype == expected, f"{case.name}: fed {np.dtype(feed)}, returned {out.dtype}"
    if getattr(layer, "training", True) is False and not layer.cache_attrs:
        return
    dL_dy = [rng.normal(size=out.shape).astype(out.dtype) for out in _outputs(y)]
    dx = layer.backward(dL_dy if isinstance(y, list) else dL_dy[0])
    for grad in _outputs(dx):
        if grad is not None:
            assert grad.dtype == expected, f"{case.name}: dL/dx is {grad.dtype}, expected {expected}"
    for name, p in layer.parameters().items():
        assert p.dtype == np.dtype(dtype)
        grad = layer.gradients()[name]
        assert grad is not None and grad.dtype == p.dtype, f"{case.name}: dL/d{name} is {getattr(grad, 'dtype', None)}"
    assert {k: b.dtype for k, b in layer.buffers().items()} == buffer_dtypes


# -- small files, small allocations --------------------------------------------------------------
HUGE = st.one_of(st.integers(1, 64), st.integers(10**3, 10**5), st.integers(10**6, 10**12), st.integers(-5, 0))


@st.composite
def small_forged_files(draw):
    """A forged model file under 1 KiB (checksum recomputed) whose architecture declares layers
    of any size, with few or no weights: a memory bomb, if the loader believed it."""
    layers = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["Linear", "Convolution", "BatchNormalization", "LayerNormalization",
                                     "GroupNormalization", "TransposedConvolution", "ReLU", "Reshape"]))
        if kind == "Linear":
            config = {"input_dim": draw(HUGE), "output_dim": draw(HUGE)}
        elif kind in ("Convolution", "TransposedConvolution"):
            config = {"input_dim": [draw(HUGE), draw(HUGE), draw(HUGE)], "kernel_size": [draw(HUGE), draw(HUGE)],
                      "output_layers": draw(HUGE)}
        elif kind == "LayerNormalization":
            config = {"normalized_shape": [draw(HUGE)]}
        elif kind == "GroupNormalization":
            config = {"groups": draw(HUGE), "input_dim": draw(HUGE)}
        elif kind == "Reshape":
            config = {"target_shape": [draw(HUGE), draw(HUGE)]}
        else:
            config = {"input_dim": draw(HUGE)} if kind == "BatchNormalization" else {}
        layers.append({"class": kind, "config": config})
    tensors = {}
    for i, layer in enumerate(layers):
        for name in ("W", "B", "gamma", "beta"):
            if draw(st.integers(0, 3)) == 0:
                shape = draw(st.lists(st.integers(0, 4), min_size=1, max_size=4))
                tensors[f"layers.{i}.params.{name}"] = np.zeros(shape, np.float32)
    architecture = {"class": "Sequential", "name": "m", "layers": layers, "structure": {}, "loss": None,
                    "optimizer": None, "input_shape": [draw(HUGE) for _ in range(draw(st.integers(1, 3)))],
                    "dtype": "float32", "seed": 0}
    return forge(json.dumps(architecture), tensors)


def forge(architecture: str, tensors: dict[str, np.ndarray]) -> bytes:
    import safetensors.numpy as st_numpy

    metadata = {"format": "nn_from_scratch", "format_version": "1", "architecture": architecture,
                "sha256": serialization._digest(architecture, tensors)}
    return st_numpy.save(tensors, metadata=metadata)


@settings(max_examples=150, **SETTINGS)
@given(data=small_forged_files())
def test_no_file_under_1_kib_makes_load_model_allocate_more_than_10_mb(data):
    if len(data) >= 1024:
        return
    tracemalloc.start()
    try:
        try:
            load_model_bytes(data)
        except ModelFileError:
            pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20, f"a {len(data)}-byte file made load_model allocate {peak / 2**20:.1f} MiB"
