"""Saving and loading: round trips (predictions, buffers, optimizer state), every layer's
get_config, shape checks, corrupt / truncated / foreign files, the class registry, and atomic
writes tested by SIGKILLing a subprocess in the middle of a save."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

safetensors_numpy = pytest.importorskip("safetensors.numpy")

from nn_from_scratch import ModelFileError, Sequential, load_model  # noqa: E402
from nn_from_scratch import serialization  # noqa: E402
from nn_from_scratch.losses import BinaryCrossEntropy, MSELoss, SoftMaxLoss  # noqa: E402
from nn_from_scratch.neurons import BatchNormalization, Convolution, Linear  # noqa: E402
from nn_from_scratch.nodes import (  # noqa: E402
    AveragePooling, Dropout, GlobalAveragePooling, LeakyReLU, MaxPooling, ReLU, Sigmoid, SoftMax, Tanh, Vectorization,
)
from nn_from_scratch.optimizers import Adam, AdamW, GradientDescent, RMSProp  # noqa: E402
from nn_from_scratch.neurons import GroupNormalization, LayerNormalization  # noqa: E402
from nn_from_scratch.neurons import TransposedConvolution  # noqa: E402
from nn_from_scratch.nodes import ELU, GELU, Identity, LogSoftMax, Reshape, SiLU, Softplus, UpSampling2D  # noqa: E402
from nn_from_scratch.nodes import RandomCrop, RandomFlip, RandomRotation, RandomTranslation, RandomZoom  # noqa: E402


def every_layer_model(seed: int = 0, optimizer=None, dtype=np.float32) -> Sequential:
    """A model holding one of each registered layer class."""
    layers = [
        Convolution(kernel_size=3, output_layers=4, padding="same", dtype=dtype, name="conv_in"),
        BatchNormalization(dtype=dtype),
        GroupNormalization(2, eps=1e-4, dtype=dtype),
        LeakyReLU(0.1),
        UpSampling2D(2, interpolation="bilinear"),
        MaxPooling(2),
        Convolution(kernel_size=3, output_layers=8, padding=1, groups=4, dtype=dtype),  # depthwise, 2 per channel
        TransposedConvolution(kernel_size=3, output_layers=4, padding=2, dilation=2, output_padding=1, groups=2, dtype=dtype),
        Convolution(kernel_size=(2, 3), output_layers=3, stride=(1, 2), padding=(1, 0, 1, 1), use_bias=False, dtype=dtype),
        Tanh(),
        # augmentation (training only, drawn from the model's generator, which is saved)
        RandomFlip("horizontal"), RandomCrop(4, 4), RandomTranslation(0.1, 0.1), RandomRotation(0.05), RandomZoom(0.1),
        GELU(approximate="tanh"),
        AveragePooling(2, stride=1, padding=1, count_include_pad=False),
        LayerNormalization(axis=1, eps=1e-3, dtype=dtype),
        SiLU(),
        Sigmoid(),
        Dropout(0.2),
        GlobalAveragePooling(),
        Reshape((3, -1)),
        Vectorization(),
        Linear(output_dim=8, dtype=dtype),
        ReLU(),
        ELU(0.5),
        Softplus(beta=2.0, threshold=10.0),
        Identity(),
        Linear(output_dim=5, kernel_initializer="he_normal", dtype=dtype),
        SoftMax(),
        LogSoftMax(),
    ]
    # Merge layers (several inputs) cannot sit in a chain: tests/test_graph.py saves them in a graph.
    single_input = {name for name, cls in serialization.LAYERS.items() if cls.n_inputs == 1}
    assert {type(layer).__name__ for layer in layers} == single_input
    return Sequential(layers, loss=MSELoss(), optimizer=optimizer or Adam(1e-2), input_shape=(2, 8, 8), seed=seed)


def train_a_little(model: Sequential, seed: int = 0, epochs: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(24,) + model.input_shape)
    y = rng.random((24,) + model.output_shape)
    model.fit(x, y, epochs=epochs, batch_size=8, verbose=0)
    return x, y


def test_round_trip_gives_identical_predictions_and_state(tmp_path):
    model = every_layer_model()
    x, _ = train_a_little(model)
    path = tmp_path / "model.safetensors"
    model.save(path)
    loaded = load_model(path)
    assert [type(a) for a in loaded.layers] == [type(b) for b in model.layers]
    assert [a.get_config() for a in loaded.layers] == [b.get_config() for b in model.layers]
    assert loaded.input_shape == model.input_shape and loaded.dtype == model.dtype
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    for (name, a), (_, b) in zip(loaded.buffers(), model.buffers()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert type(loaded.loss) is MSELoss and type(loaded.optimizer) is Adam
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert loaded.optimizer.iterations == model.optimizer.iterations


@pytest.mark.parametrize("optimizer", [lambda: Adam(3e-3), lambda: AdamW(3e-3, weight_decay=0.1),
                                       lambda: RMSProp(1e-3, momentum=0.9, centered=True),
                                       lambda: GradientDescent(0.05, momentum=0.9, nesterov=True)])
def test_training_resumes_exactly_after_a_reload(tmp_path, optimizer):
    # Optimizer state (moments, momentum buffers, step counts) is saved too: continuing from
    # the file gives the same weights as continuing in memory. No dropout and no shuffling,
    # so the only state that matters is in the file.
    def build():
        layers = [Convolution(kernel_size=3, output_layers=2, dtype=np.float64), BatchNormalization(dtype=np.float64),
                  ReLU(), Vectorization(), Linear(output_dim=3, dtype=np.float64)]
        return Sequential(layers, loss=SoftMaxLoss(label_smoothing=0.1), optimizer=optimizer(), input_shape=(1, 6, 6), seed=1)

    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(20, 1, 6, 6)), rng.integers(0, 3, size=20)
    model = build()
    model.fit(x, y, epochs=2, batch_size=5, shuffle=False, verbose=0)
    model.save(tmp_path / "m.safetensors")
    loaded = load_model(tmp_path / "m.safetensors")
    assert loaded.loss.get_config() == {"label_smoothing": 0.1}
    model.fit(x, y, epochs=2, batch_size=5, shuffle=False, verbose=0)
    loaded.fit(x, y, epochs=2, batch_size=5, shuffle=False, verbose=0)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_save_without_optimizer_state(tmp_path):
    model = every_layer_model()
    train_a_little(model)
    model.save(tmp_path / "m.safetensors", include_optimizer=False)
    loaded = load_model(tmp_path / "m.safetensors")
    assert not loaded.optimizer._state
    assert not any(k.startswith("optimizer.") for k in safetensors_numpy.load_file(tmp_path / "m.safetensors"))


def test_the_file_is_plain_safetensors_with_json_architecture(tmp_path):
    model = every_layer_model()
    model.save(tmp_path / "m.safetensors")
    tensors = safetensors_numpy.load_file(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(tensors["layers.0.params.W"], model.layers[0].W)
    np.testing.assert_array_equal(tensors["layers.1.buffers.running_var"], model.layers[1].running_var)
    from safetensors import safe_open

    with safe_open(tmp_path / "m.safetensors", framework="numpy") as f:
        metadata = f.metadata()
    architecture = json.loads(metadata["architecture"])
    assert metadata["format"] == "nn_from_scratch"
    assert [entry["class"] for entry in architecture["layers"]] == [type(layer).__name__ for layer in model.layers]
    assert architecture["input_shape"] == [2, 8, 8] and architecture["dtype"] == "float32"
    assert architecture["optimizer"]["class"] == "Adam"


@pytest.mark.parametrize("layer", [
    Convolution(kernel_size=5, output_layers=6, padding=2, stride=2, dilation=(1, 2), W_init_range=0.1),
    Convolution((3, 9, 9), 3, 2, padding="valid", use_bias=False, name="c"),
    Linear(7, 4, kernel_initializer="he_uniform", dtype=np.float64),
    Linear(output_dim=3),
    BatchNormalization(momentum=None, eps=1e-3, input_dim=4),
    BatchNormalization(momentum=0.2, input_dim=(3, 5, 5), dtype=np.float64),
    MaxPooling((2, 3), stride=(1, 2), padding="same"),
    AveragePooling(3, padding=1, count_include_pad=False, name="avg"),
    GlobalAveragePooling(),
    Dropout(0.3, name="drop"),
    LeakyReLU(0.2, name="leaky"), ReLU(), Sigmoid(), Tanh(), SoftMax(),
    Vectorization(), Vectorization((2, 3, 4)),
])
def test_get_config_rebuilds_every_layer(layer):
    config = layer.get_config()
    text = json.dumps(config)  # plain JSON values (the layer protocol): no numpy scalars, arrays or dtypes
    assert json.loads(text) == config, "get_config must return JSON values that survive a round trip unchanged"
    twin = type(layer)(**json.loads(text))
    assert twin.get_config() == config
    assert twin.name == layer.name
    for name, p in layer.parameters().items():
        assert twin.parameters()[name].shape == p.shape and twin.parameters()[name].dtype == p.dtype
    # The rebuilt layer computes the same function once it holds the same arrays: a config that
    # drops or garbles an argument (stride, padding, alpha, eps...) changes the output.
    shape = layer.input_shape or {"Linear": (5,), "BatchNormalization": (4,), "Vectorization": (2, 3, 4)}.get(
        type(layer).__name__, (2, 7, 8))
    x = np.random.default_rng(0).normal(size=(4, *shape))
    for one in (layer, twin):
        one.training = False
    expected = layer.forward(x)
    twin.forward(x)  # builds a lazily built twin
    for source, target in ((layer.parameters(), twin.parameters()), (layer.buffers(), twin.buffers())):
        for name, array in source.items():
            target[name][...] = array
    np.testing.assert_array_equal(twin.forward(x), expected)


@pytest.mark.parametrize("loss", [SoftMaxLoss(label_smoothing=0.2), MSELoss(), BinaryCrossEntropy()])
def test_losses_round_trip(tmp_path, loss):
    model = Sequential([Linear(3, 2)], loss=loss, optimizer=GradientDescent(0.1))
    model.save(tmp_path / "m.safetensors")
    loaded = load_model(tmp_path / "m.safetensors")
    assert type(loaded.loss) is type(loss) and loaded.loss.get_config() == loss.get_config()


# -- shape checks ------------------------------------------------------------------------------
def test_load_weights_into_a_fresh_model(tmp_path):
    model = every_layer_model(seed=1)
    x, _ = train_a_little(model)
    model.save(tmp_path / "m.safetensors")
    other = every_layer_model(seed=2)
    other.load_weights(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(other.predict(x), model.predict(x))


def test_load_weights_names_every_mismatch_and_changes_nothing(tmp_path):
    model = Sequential([Convolution(kernel_size=3, output_layers=4), ReLU(), Vectorization(), Linear(output_dim=10)],
                       input_shape=(1, 8, 8), seed=0)
    model.save(tmp_path / "m.safetensors")
    other = Sequential([Convolution(kernel_size=3, output_layers=4), ReLU(), Vectorization(),
                        Linear(output_dim=12, name="head")], input_shape=(1, 8, 8), seed=1)
    before = other.get_weights()
    with pytest.raises(ValueError, match=r"layer 3 'head' \(Linear\) W: expected shape \(145, 12\), the file has \(145, 10\)"):
        other.load_weights(tmp_path / "m.safetensors")
    for now, was in zip(other.get_weights(), before):
        np.testing.assert_array_equal(now, was)
    fewer = Sequential([Convolution(kernel_size=3, output_layers=4)], input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match=r"the file has weights this model lacks: layers\.3\.params\.W"):
        fewer.load_weights(tmp_path / "m.safetensors")
    more = Sequential([Convolution(kernel_size=3, output_layers=4), ReLU(), Vectorization(), Linear(output_dim=10),
                       Linear(output_dim=2)], input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match=r"layer 4 'Linear' \(Linear\) W: missing from the file"):
        more.load_weights(tmp_path / "m.safetensors")


def test_an_unbuilt_model_cannot_be_saved(tmp_path):
    with pytest.raises(ValueError, match="not built"):
        Sequential([Linear(output_dim=3)]).save(tmp_path / "m.safetensors")
    assert not os.listdir(tmp_path)


# -- bad files ---------------------------------------------------------------------------------
@pytest.fixture()
def saved(tmp_path):
    path = tmp_path / "m.safetensors"
    every_layer_model().save(path)
    return path


def test_truncated_files_raise(saved):
    data = saved.read_bytes()
    rng = np.random.default_rng(0)
    for cut in [0, 4, 8, 50, len(data) // 2, len(data) - 1] + list(rng.integers(1, len(data), size=5)):
        saved.write_bytes(data[:cut])
        with pytest.raises(ModelFileError, match="not a valid safetensors file"):
            load_model(saved)


def test_corrupt_payload_is_caught_by_the_checksum(saved):
    data = bytearray(saved.read_bytes())
    header_end = 8 + int.from_bytes(data[:8], "little")
    rng = np.random.default_rng(1)
    for position in rng.integers(header_end, len(data), size=5):
        corrupt = bytearray(data)
        corrupt[position] ^= 0x10
        saved.write_bytes(bytes(corrupt))
        with pytest.raises(ModelFileError, match="corrupt.*checksum"):
            load_model(saved)


def test_corrupt_header_raises(saved):
    data = bytearray(saved.read_bytes())
    rng = np.random.default_rng(2)
    header_end = 8 + int.from_bytes(data[:8], "little")
    for position in rng.integers(8, header_end, size=10):
        corrupt = bytearray(data)
        corrupt[position] = (corrupt[position] + 1 + rng.integers(0, 50)) % 128
        saved.write_bytes(bytes(corrupt))
        with pytest.raises(ModelFileError):
            load_model(saved)


def test_foreign_files_raise(tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    safetensors_numpy.save_file({"weight": np.zeros((2, 2), np.float32)}, foreign)
    with pytest.raises(ModelFileError, match="not a model saved by nn_from_scratch"):
        load_model(foreign)
    other_meta = tmp_path / "other.safetensors"
    safetensors_numpy.save_file({"w": np.zeros(2, np.float32)}, other_meta, metadata={"format": "pt"})
    with pytest.raises(ModelFileError, match="format='pt'"):
        load_model(other_meta)
    text = tmp_path / "notes.txt"
    text.write_text("just some text, not a model\n" * 20)
    with pytest.raises(ModelFileError, match="not a valid safetensors file"):
        load_model(text)
    pickle_like = tmp_path / "model.pkl"
    pickle_like.write_bytes(b"\x80\x04\x95" + bytes(range(256)))
    with pytest.raises(ModelFileError):
        load_model(pickle_like)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.safetensors")


def rewrite_architecture(path, edit) -> None:
    """Write a file with an edited architecture and a matching checksum (a deliberate forgery)."""
    tensors = safetensors_numpy.load_file(path)
    from safetensors import safe_open

    with safe_open(path, framework="numpy") as f:
        metadata = f.metadata()
    architecture = json.loads(metadata["architecture"])
    edit(architecture)
    metadata["architecture"] = json.dumps(architecture)
    metadata["sha256"] = serialization._digest(metadata["architecture"], tensors)
    safetensors_numpy.save_file(tensors, path, metadata=metadata)


def test_only_registered_classes_are_built(saved):
    def evil(architecture):
        architecture["layers"][2]["class"] = "os.system"
        architecture["layers"][2]["config"] = {"command": "echo pwned"}

    rewrite_architecture(saved, evil)
    with pytest.raises(ModelFileError, match="unknown layer 2 class 'os.system'"):
        load_model(saved)


def test_bad_configs_and_foreign_versions_raise(saved):
    data = saved.read_bytes()

    def bad_config(architecture):
        architecture["layers"][0]["config"]["no_such_argument"] = 1

    rewrite_architecture(saved, bad_config)
    with pytest.raises(ModelFileError, match="cannot rebuild layer 0 Convolution"):
        load_model(saved)
    saved.write_bytes(data)

    def unknown_optimizer(architecture):
        architecture["optimizer"]["class"] = "Lion"

    rewrite_architecture(saved, unknown_optimizer)
    with pytest.raises(ModelFileError, match="unknown optimizer class 'Lion'"):
        load_model(saved)


def test_register_layer_allows_custom_layers(tmp_path):
    @serialization.register_layer
    class Scale(ReLU):
        def __init__(self, factor: float = 2.0, name=None):
            super().__init__(name=name)
            self.factor = factor

        def forward(self, x):
            return super().forward(x) * self.factor

        def get_config(self):
            return {"factor": self.factor, **super().get_config()}

    try:
        model = Sequential([Linear(3, 2), Scale(3.0)], seed=0)
        model.save(tmp_path / "m.safetensors")
        loaded = load_model(tmp_path / "m.safetensors")
        assert isinstance(loaded.layers[1], Scale) and loaded.layers[1].factor == 3.0
    finally:
        del serialization.LAYERS["Scale"]

    class Unregistered(ReLU):
        pass

    with pytest.raises(TypeError, match="not in the registry"):
        Sequential([Linear(3, 2), Unregistered()]).save(tmp_path / "n.safetensors")


# -- atomic writes -----------------------------------------------------------------------------
SAVER = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    from nn_from_scratch import Sequential, serialization
    from nn_from_scratch.neurons import Linear

    path, mode = sys.argv[1], sys.argv[2]
    model = Sequential([Linear(200, 300)], seed=int(sys.argv[3]))

    if mode == "stall":
        # Write the first half of the temporary file, make it durable, then hang: the parent
        # kills us here, in the middle of the save.
        def half_then_stall(file, data):
            file.write(data[: len(data) // 2])
            file.flush()
            os.fsync(file.fileno())
            print("half", flush=True)
            time.sleep(60)

        serialization._write_all = half_then_stall
        model.save(path)
    else:
        # Save over and over, alternating two different models, until killed.
        other = Sequential([Linear(200, 300)], seed=int(sys.argv[3]) + 1)
        print("ready", flush=True)
        while True:
            model.save(path)
            other.save(path)
    """
)


def spawn(tmp_path, *args):
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    return subprocess.Popen([sys.executable, str(script), *map(str, args)], stdout=subprocess.PIPE, text=True)


def test_a_save_killed_in_the_middle_leaves_the_old_file(tmp_path):
    path = tmp_path / "model.safetensors"
    old = Sequential([Linear(200, 300)], seed=100)
    old.save(path)
    old_bytes = path.read_bytes()
    proc = spawn(tmp_path, path, "stall", 7)
    try:
        assert proc.stdout.readline().strip() == "half"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # The half-written temporary file is there, next to the intact old file.
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".model.safetensors.")]
    assert len(leftovers) == 1 and 0 < leftovers[0].stat().st_size < len(old_bytes)
    assert path.read_bytes() == old_bytes
    np.testing.assert_array_equal(load_model(path).layers[0].W, old.layers[0].W)


def test_saves_killed_at_random_moments_always_leave_a_whole_file(tmp_path):
    path = tmp_path / "model.safetensors"
    candidates = [Sequential([Linear(200, 300)], seed=s).layers[0].W for s in (11, 12)]
    Sequential([Linear(200, 300)], seed=11).save(path)
    rng = np.random.default_rng(0)
    for _ in range(3):
        proc = spawn(tmp_path, path, "loop", 11)
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(float(rng.uniform(0.05, 0.4)))
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
        W = load_model(path).layers[0].W
        assert any(np.array_equal(W, c) for c in candidates)
