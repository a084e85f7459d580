"""Issue 13, hostile and odd model files (items 1, 2, 18, 19): forged files with a recomputed
checksum, special files, umask, long names, SIGKILL debris, load_weights into the wrong model.

Every forged file here carries a *valid* checksum (the forger recomputes it, as an attacker
would), so only the loader's own validation stands between the file and the library.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import subprocess
import sys
import threading
import tracemalloc

import numpy as np
import pytest

pytest.importorskip("safetensors.numpy")

from nn_from_scratch import ModelFileError, Sequential, load_model, serialization  # noqa: E402
from nn_from_scratch.losses import SoftMaxLoss  # noqa: E402
from nn_from_scratch.neurons import BatchNormalization, Convolution, Linear  # noqa: E402
from nn_from_scratch.nodes import ReLU, Tanh, Vectorization  # noqa: E402
from nn_from_scratch.optimizers import Adam, GradientDescent  # noqa: E402

SAFETENSORS_DTYPES = {"float32": "F32", "float64": "F64", "float16": "F16", "int64": "I64", "int32": "I32"}


def raw_safetensors(header: dict, data: bytes = b"") -> bytes:
    """A safetensors byte string with exactly this header (no validation: forging is the point)."""
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def forge(architecture: dict | str, tensors: dict[str, np.ndarray]) -> bytes:
    """A model file with these contents and a correct checksum: what an attacker can write."""
    arch = architecture if isinstance(architecture, str) else json.dumps(architecture)
    header: dict = {}
    data = b""
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        header[name] = {"dtype": SAFETENSORS_DTYPES[a.dtype.name], "shape": list(a.shape),
                        "data_offsets": [len(data), len(data) + a.nbytes]}
        data += a.tobytes()
    header["__metadata__"] = {"format": "nn_from_scratch", "format_version": "1", "architecture": arch,
                              "sha256": serialization._digest(arch, tensors)}
    return raw_safetensors(header, data)


def small_model(optimizer=None) -> Sequential:
    return Sequential([Linear(4, 3), ReLU(), Linear(3, 2)], loss=SoftMaxLoss(),
                      optimizer=optimizer or Adam(1e-2), input_shape=(4,), seed=0)


def trained(optimizer=None) -> Sequential:
    model = small_model(optimizer)
    rng = np.random.default_rng(0)
    model.fit(rng.normal(size=(16, 4)), rng.integers(0, 2, 16), epochs=1, batch_size=8, verbose=0)
    return model


def contents(model: Sequential) -> tuple[dict, dict[str, np.ndarray]]:
    tensors, metadata = serialization.model_to_tensors(model)
    return json.loads(metadata["architecture"]), tensors


def linear_arch(layers: list, input_shape=(4,), optimizer=None) -> dict:
    return {"class": "Sequential", "name": "m", "layers": layers, "structure": {}, "loss": None,
            "optimizer": optimizer, "input_shape": list(input_shape), "dtype": "float32", "seed": 0}


# -- item 1: forged files ------------------------------------------------------------------
def _edits():
    """(name, edit(architecture, tensors)) pairs: each forges one field of a valid file."""

    def setter(path, value):
        def edit(arch, tensors):
            target = arch
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value
        return edit

    def drop_tensor(name):
        def edit(arch, tensors):
            del tensors[name]
        return edit

    def set_tensor(name, value):
        def edit(arch, tensors):
            tensors[name] = value
        return edit

    return [
        ("iterations not an int", setter(["optimizer", "iterations"], "many")),
        ("iterations negative", setter(["optimizer", "iterations"], -3)),
        ("iterations huge", setter(["optimizer", "iterations"], 10**400)),
        ("optimizer state a list", setter(["optimizer", "state"], [])),
        ("optimizer state entry not a dict", setter(["optimizer", "state", "layers.0.params.W"], 5)),
        ("adam step a string", setter(["optimizer", "state", "layers.0.params.W", "step"], "x")),
        ("adam step beyond iterations", setter(["optimizer", "state", "layers.0.params.W", "step"], 10**6)),
        ("adam step zero with moments", setter(["optimizer", "state", "layers.0.params.W", "step"], 0)),
        ("unknown optimizer slot", setter(["optimizer", "state", "layers.0.params.W", "evil"], 1)),
        ("adam moment of the wrong shape", set_tensor("optimizer.0.params.W.exp_avg", np.zeros((2, 2), np.float32))),
        ("adam moment of the wrong dtype", set_tensor("optimizer.0.params.W.exp_avg_sq", np.zeros((5, 3), np.float64))),
        ("adam moment missing", drop_tensor("optimizer.0.params.W.exp_avg")),
        ("optimizer tensor for no parameter", set_tensor("optimizer.7.params.W.exp_avg", np.zeros(3, np.float32))),
        ("layers not a list", setter(["layers"], {"a": 1})),
        ("layer entry a string", setter(["layers", 0], "Linear")),
        ("layer class not a string", setter(["layers", 0, "class"], ["Linear"])),
        ("layer config a list", setter(["layers", 0, "config"], [4, 3])),
        ("layer config unknown key", setter(["layers", 0, "config", "evil"], 1)),
        ("layer output_dim a string", setter(["layers", 0, "config", "output_dim"], "3")),
        ("layer output_dim a float", setter(["layers", 0, "config", "output_dim"], 3.5)),
        ("layer output_dim huge", setter(["layers", 0, "config", "output_dim"], 10**30)),
        ("layer input_dim huge", setter(["layers", 0, "config", "input_dim"], 10**7)),
        ("layer input_dim negative", setter(["layers", 0, "config", "input_dim"], -4)),
        ("layer dtype unknown", setter(["layers", 0, "config", "dtype"], "object")),
        ("layer dtype a list", setter(["layers", 0, "config", "dtype"], [1])),
        ("layer name a dict", setter(["layers", 0, "config", "name"], {"a": 1})),
        ("input_shape a string", setter(["input_shape"], "abc")),
        ("input_shape an int", setter(["input_shape"], 4)),
        ("input_shape nested", setter(["input_shape"], [[4]])),
        ("input_shape huge", setter(["input_shape"], [10**20])),
        ("input_shape wrong", setter(["input_shape"], [5])),
        ("seed negative", setter(["seed"], -1)),
        ("seed a float", setter(["seed"], 1.5)),
        ("seed huge", setter(["seed"], 10**300)),
        ("dtype unknown", setter(["dtype"], "complex128")),
        ("name a list", setter(["name"], [1])),
        ("structure a list", setter(["structure"], [])),
        ("structure for a graph", setter(["structure"], {"nodes": 1})),
        ("class unknown", setter(["class"], "Model2")),
        ("class a dict", setter(["class"], {})),
        ("loss a string", setter(["loss"], "SoftMaxLoss")),
        ("loss config bad", setter(["loss", "config"], {"label_smoothing": "x"})),
        ("optimizer config bad", setter(["optimizer", "config"], {"lr": [1]})),
        ("optimizer lr nan", setter(["optimizer", "config", "lr"], float("nan"))),
        ("unknown top-level key", setter(["evil"], 1)),
        ("weights of the wrong dtype", set_tensor("layers.0.params.W", np.zeros((5, 3), np.float64))),
        ("weights of the wrong shape", set_tensor("layers.0.params.W", np.zeros((3, 3), np.float32))),
        ("weights missing", drop_tensor("layers.2.params.W")),
        ("extra weights", set_tensor("layers.1.params.W", np.zeros(3, np.float32))),
        ("integer weights", set_tensor("layers.0.params.W", np.zeros((5, 3), np.int64))),
    ]


@pytest.mark.parametrize("name,edit", _edits(), ids=[name for name, _ in _edits()])
def test_every_forged_field_raises_model_file_error(tmp_path, name, edit):
    arch, tensors = contents(trained())
    edit(arch, tensors)
    path = tmp_path / "forged.safetensors"
    path.write_bytes(forge(arch, tensors))
    with pytest.raises(ModelFileError):
        load_model(path)


@pytest.mark.parametrize("text", [
    pytest.param("[" * 100_000 + "]" * 100_000, id="deep-list"),
    pytest.param('{"class": "Sequential", "layers": ' + "[" * 50_000 + "]" * 50_000 + "}", id="deep-layers"),
    "1e999999",
    '{"class": "Sequential", "class": "Sequential"}',
    "null",
    "\"x\"",
    "{\"layers\": [], \"class\": \"Sequential\"}",
])
def test_malformed_architecture_json_raises_model_file_error(tmp_path, text):
    path = tmp_path / "forged.safetensors"
    path.write_bytes(forge(text, {}))
    with pytest.raises(ModelFileError):
        load_model(path)


@pytest.mark.parametrize("header,data", [
    ({"a": {"dtype": "F32", "shape": [10**30], "data_offsets": [0, 4]}}, b"\0" * 4),
    ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4),
    ({"a": {"dtype": "F32", "shape": "4", "data_offsets": [0, 4]}}, b"\0" * 4),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, b"\0" * 4),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 2**70]}}, b"\0" * 4),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
      "b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4),
    ({"a": {"dtype": "XX", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4),
    ({"a": {"dtype": "F32", "shape": [1]}}, b"\0" * 4),
    ({"a": [1, 2]}, b""),
    ({"__metadata__": {"format": 1}}, b""),
    ({"__metadata__": []}, b""),
    ([], b""),
])
def test_forged_safetensors_headers_raise_model_file_error(tmp_path, header, data):
    path = tmp_path / "forged.safetensors"
    path.write_bytes(raw_safetensors(header, data))
    with pytest.raises(ModelFileError):
        load_model(path)


def test_a_huge_declared_header_length_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "forged.safetensors"
    path.write_bytes(struct.pack("<Q", 2**63) + b"{}")
    with pytest.raises(ModelFileError):
        load_model(path)


def _peak_during(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def _load_expecting_refusal(path):
    with pytest.raises(ModelFileError):
        load_model(path)


@pytest.mark.parametrize("layers,tensors,input_shape", [
    # The 408-byte bomb: Linear(8000, 8000) declared, a few bytes of weights.
    ([{"class": "Linear", "config": {"input_dim": 8000, "output_dim": 8000}}],
     {"layers.0.params.W": np.zeros((2, 2), np.float32)}, (8000,)),
    # No weights at all: the layer would draw 256 MB of random numbers.
    ([{"class": "Linear", "config": {"input_dim": 8000, "output_dim": 8000}}], {}, (8000,)),
    ([{"class": "Linear", "config": {"input_dim": 10**7, "output_dim": 10**7}}], {}, (10**7,)),
    ([{"class": "Convolution", "config": {"input_dim": [512, 8, 8], "kernel_size": [64, 64], "output_layers": 512}}],
     {}, (512, 8, 8)),
    ([{"class": "BatchNormalization", "config": {"input_dim": [10**8]}}], {}, (10**8,)),
])
def test_a_small_file_declaring_a_huge_layer_allocates_nothing_big(tmp_path, layers, tensors, input_shape):
    data = forge(linear_arch(layers, input_shape), tensors)
    assert len(data) < 1024
    path = tmp_path / "bomb.safetensors"
    path.write_bytes(data)
    peak = _peak_during(lambda: _load_expecting_refusal(path))
    assert peak < 10 * 2**20, f"a {len(data)}-byte file made load_model allocate {peak / 2**20:.0f} MiB"


# -- item 2: special files -----------------------------------------------------------------
def _load_in_thread(path, timeout=10.0):
    result: dict = {}

    def run():
        try:
            load_model(path)
        except BaseException as error:  # noqa: BLE001 - the test inspects it
            result["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"load_model({path}) hung"
    return result.get("error")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
def test_a_fifo_is_refused_without_blocking(tmp_path):
    path = tmp_path / "model.safetensors"
    os.mkfifo(path)
    error = _load_in_thread(path)
    assert isinstance(error, ModelFileError) and "not a regular file" in str(error)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_a_symlink_to_a_device_is_refused(tmp_path, device):
    path = tmp_path / "model.safetensors"
    os.symlink(device, path)
    error = _load_in_thread(path)
    assert isinstance(error, ModelFileError) and "not a regular file" in str(error)


def test_a_directory_and_a_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="not a regular file"):
        load_model(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.safetensors")


def test_a_symlink_to_a_regular_model_file_still_loads(tmp_path):
    model = trained()
    model.save(tmp_path / "real.safetensors")
    os.symlink(tmp_path / "real.safetensors", tmp_path / "link.safetensors")
    np.testing.assert_array_equal(load_model(tmp_path / "link.safetensors").layers[0].W, model.layers[0].W)


# -- item 18: files on disk ----------------------------------------------------------------
def test_new_model_files_respect_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        trained().save(tmp_path / "private.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "private.safetensors").st_mode) == 0o600
    old = os.umask(0o022)
    try:
        trained().save(tmp_path / "shared.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "shared.safetensors").st_mode) == 0o644


def test_an_existing_file_keeps_its_mode(tmp_path):
    path = tmp_path / "m.safetensors"
    trained().save(path)
    os.chmod(path, 0o640)
    trained().save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


@pytest.mark.parametrize("length", [200, 242, 250, 255])
def test_names_up_to_the_file_system_limit_save(tmp_path, length):
    name = "m" * (length - len(".safetensors")) + ".safetensors"
    assert len(name.encode()) == length
    model = trained()
    model.save(tmp_path / name)
    np.testing.assert_array_equal(load_model(tmp_path / name).layers[0].W, model.layers[0].W)
    assert sorted(os.listdir(tmp_path)) == [name]


def test_long_multibyte_names_save(tmp_path):
    name = "é" * 121 + ".st"  # 242 + 3 bytes
    trained().save(tmp_path / name)
    assert os.listdir(tmp_path) == [name]


KILLED_SAVE = """
import os, signal, sys
from nn_from_scratch import Sequential, serialization
from nn_from_scratch.neurons import Linear
def die(file, data):
    file.write(data[: len(data) // 2]); file.flush()
    os.kill(os.getpid(), signal.SIGKILL)
serialization._write_all = die
Sequential([Linear(20, 30)], seed=1).save(sys.argv[1])
"""


@pytest.mark.parametrize("length", [20, 255])
def test_debris_of_a_killed_save_is_removed_by_the_next_save(tmp_path, length):
    name = "m" * (length - len(".safetensors")) + ".safetensors"
    path = tmp_path / name
    other = tmp_path / "other.safetensors"
    for target in (path, other):
        for _ in range(2):
            proc = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(target)], timeout=120)
            assert proc.returncode == -9
    # Each killed save removed the debris of the one killed before it: one leftover per target.
    debris = sorted(p for p in os.listdir(tmp_path))
    assert len(debris) == 2 and all(p.endswith(".tmp") for p in debris), debris
    trained().save(path)
    left = sorted(os.listdir(tmp_path))
    # The leftover of ``path`` is gone; that of the other file is not this save's to remove.
    assert sorted(left) == sorted([name, next(p for p in debris if p.startswith(".other."))]), left


def test_a_save_in_progress_elsewhere_is_not_cleaned_up(tmp_path):
    """The clean-up removes only debris whose writer is gone, never a live save's file."""
    path = tmp_path / "m.safetensors"
    started, release = threading.Event(), threading.Event()
    original = serialization._write_all
    errors = []

    def slow(file, data):
        started.set()
        release.wait(30)
        original(file, data)

    def first():
        try:
            serialization._write_all = slow
            trained().save(path)
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    thread = threading.Thread(target=first)
    thread.start()
    assert started.wait(30)
    serialization._write_all = original
    try:
        trained().save(path)  # a second save to the same path, while the first is writing
    finally:
        release.set()
        thread.join(30)
    assert not errors, errors
    assert os.listdir(tmp_path) == ["m.safetensors"]


# -- item 19: load_weights into the wrong model ----------------------------------------------
def test_load_weights_into_an_unbuilt_model_that_does_not_fit_leaves_it_unbuilt(tmp_path):
    path = tmp_path / "m.safetensors"
    trained().save(path)  # Linear(4, 3), ReLU, Linear(3, 2)
    model = Sequential([Linear(output_dim=3), ReLU(), Linear(output_dim=5)], seed=0)
    with pytest.raises(ValueError, match="layer 2"):
        model.load_weights(path)
    assert not model.built and all(not layer.built for layer in model.layers)
    model.build((7,))  # still usable with any input
    assert model.layers[0].W.shape == (8, 3)


def test_load_weights_refuses_a_same_shaped_model_of_another_architecture(tmp_path):
    path = tmp_path / "m.safetensors"
    trained().save(path)
    other = Sequential([Linear(4, 3), Tanh(), Linear(3, 2)], seed=1)
    before = other.get_weights()
    with pytest.raises(ValueError, match=r"layer 1.*ReLU.*Tanh|layer 1.*Tanh.*ReLU"):
        other.load_weights(path)
    for a, b in zip(before, other.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_load_weights_refuses_a_different_convolution_geometry(tmp_path):
    path = tmp_path / "c.safetensors"
    Sequential([Convolution(kernel_size=3, output_layers=2, padding=1), Vectorization()], input_shape=(1, 6, 6),
               seed=0).save(path)
    other = Sequential([Convolution(kernel_size=3, output_layers=2, padding=1, stride=2), Vectorization()],
                       input_shape=(1, 6, 6), seed=0)
    with pytest.raises(ValueError, match="stride"):
        other.load_weights(path)


def test_load_weights_still_accepts_the_same_architecture(tmp_path):
    path = tmp_path / "m.safetensors"
    source = trained()
    source.save(path)
    built = small_model()
    built.load_weights(path)
    unbuilt = Sequential([Linear(output_dim=3, name="renamed"), ReLU(), Linear(output_dim=2)], seed=3)
    unbuilt.load_weights(path)
    for model in (built, unbuilt):
        for a, b in zip(source.get_weights(), model.get_weights()):
            np.testing.assert_array_equal(a, b)


def test_load_weights_with_batch_norm_into_a_float64_twin(tmp_path):
    path = tmp_path / "bn.safetensors"
    source = Sequential([Linear(4, 3), BatchNormalization(), ReLU(), Linear(3, 2)], input_shape=(4,), seed=0)
    source.save(path)
    twin = Sequential([Linear(4, 3, dtype=np.float64), BatchNormalization(dtype=np.float64), ReLU(),
                       Linear(3, 2, dtype=np.float64)], input_shape=(4,), seed=5)
    twin.load_weights(path)
    np.testing.assert_array_equal(twin.layers[0].W, source.layers[0].W.astype(np.float64))


def test_optimizer_state_round_trips_and_trains_on(tmp_path):
    for optimizer in (Adam(1e-2), GradientDescent(0.1, momentum=0.9)):
        model = trained(optimizer)
        model.save(tmp_path / "o.safetensors")
        loaded = load_model(tmp_path / "o.safetensors")
        rng = np.random.default_rng(1)
        x, y = rng.normal(size=(8, 4)), rng.integers(0, 2, 8)
        model.train_step(x, y)
        loaded.train_step(x, y)
        for a, b in zip(model.get_weights(), loaded.get_weights()):
            np.testing.assert_array_equal(a, b)
