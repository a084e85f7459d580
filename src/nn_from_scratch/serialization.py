"""Saving and loading models: one safetensors file, no pickle, atomic writes.

File layout (a standard ``.safetensors`` file, readable by any safetensors reader):

* tensors ``layers.{i}.params.{name}`` -- the trainable arrays of layer ``i`` (``W``, ``B``, ``gamma`` ...);
* tensors ``layers.{i}.buffers.{name}`` -- its saved state (batch norm's running statistics);
* tensors ``optimizer.{i}.{name}.{slot}`` -- optimizer state per parameter (Adam's moments,
  momentum buffers), when saved with ``include_optimizer=True``;
* metadata ``format = "nn_from_scratch"``, ``format_version``, ``architecture`` (JSON: the
  layer classes and their ``get_config()``, the loss, the optimizer config and its scalar state,
  the per-sample input shape, the dtype and the seed) and ``sha256``, a digest of the
  architecture and every tensor (name, dtype, shape, bytes) that catches a corrupt payload,
  which the safetensors header alone cannot.

Loading never executes anything from the file: layer, loss and optimizer classes are looked up
by name in an explicit registry of this library's classes (:data:`LAYERS`, :data:`LOSSES`,
:data:`OPTIMIZERS`; :func:`register_layer` adds your own), and their constructors get the JSON
config as keyword arguments.

Writes are atomic: the bytes go to a temporary file in the target's directory, which is
flushed and fsync'ed and then renamed over the target with ``os.replace`` (atomic on POSIX and
Windows), and the directory is fsync'ed. A save killed at any moment leaves either the old
file or the new one, never a mix; at worst a stray ``.<name>.*.tmp`` file stays behind.

``safetensors`` is an optional dependency (``pip install nn_from_scratch[io]``), imported only here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from typing import Any, Iterable

import numpy as np

from . import neurons, nodes
from .errors import ModelFileError
from .interfaces import Layer, Optimizer
from .losses import BinaryCrossEntropy, Loss, MSELoss, SoftMaxLoss
from .optimizers import Adam, AdamW, GradientDescent, RMSProp

FORMAT = "nn_from_scratch"
FORMAT_VERSION = 1

# Every layer the library exports, by class name: a file can only name one of these (or one
# added with register_layer), never an arbitrary importable object.
LAYERS: dict[str, type[Layer]] = {
    name: cls
    for module in (neurons, nodes)
    for name in module.__all__
    if isinstance(cls := getattr(module, name), type) and issubclass(cls, Layer)
}
LOSSES: dict[str, type[Loss]] = {cls.__name__: cls for cls in (SoftMaxLoss, MSELoss, BinaryCrossEntropy)}
OPTIMIZERS: dict[str, type[Optimizer]] = {cls.__name__: cls for cls in (GradientDescent, Adam, AdamW, RMSProp)}
# Model classes register themselves (``Sequential``, the graph ``Model``) when their module is
# imported, so this module never imports the modules that define models.
MODELS: dict[str, type] = {}

_CHUNK = 1 << 20


def register_layer(cls: type[Layer]) -> type[Layer]:
    """Allow :func:`load_model` to rebuild layers of your own class (usable as a decorator).

    The class must rebuild itself from ``cls(**layer.get_config())``.
    """
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise TypeError(f"register_layer: expected a Layer subclass, got {cls!r}")
    existing = LAYERS.get(cls.__name__)
    if existing is not None and existing is not cls:
        raise ValueError(f"register_layer: another layer class is already registered as {cls.__name__!r}")
    LAYERS[cls.__name__] = cls
    return cls


def register_model(cls: type) -> type:
    """Let :func:`load_model` rebuild models of this class (``cls.from_config(layers, structure, ...)``)."""
    existing = MODELS.get(cls.__name__)
    if existing is not None and existing is not cls:
        raise ValueError(f"register_model: another model class is already registered as {cls.__name__!r}")
    MODELS[cls.__name__] = cls
    return cls


def _safetensors():
    try:
        import safetensors.numpy as st_numpy
        from safetensors import safe_open
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "saving and loading models needs the 'safetensors' package: pip install 'nn_from_scratch[io]'"
        ) from error
    return st_numpy, safe_open


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.dtype):
        return value.name
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} {value!r} in the model file's JSON")


def _contiguous(a: np.ndarray) -> np.ndarray:
    # Not np.ascontiguousarray: it turns 0-d arrays (batch norm's step counter) into shape (1,).
    return a if a.flags.c_contiguous else a.copy(order="C")


def _digest(architecture: str, tensors: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    h.update(architecture.encode())
    for name in sorted(tensors):
        a = _contiguous(tensors[name])
        h.update(f"\0{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.reshape(-1).view(np.uint8))
    return h.hexdigest()


# -- what goes into the file ---------------------------------------------------------------
def _named_parameters(model: Any) -> Iterable[tuple[str, np.ndarray]]:
    for i, layer in enumerate(model.layers):
        for name, p in layer.parameters().items():
            yield f"layers.{i}.params.{name}", p


def _named_state(model: Any) -> Iterable[tuple[str, np.ndarray]]:
    yield from _named_parameters(model)
    for i, layer in enumerate(model.layers):
        for name, b in layer.buffers().items():
            yield f"layers.{i}.buffers.{name}", b


def _describe(obj: Any, who: str) -> dict[str, Any]:
    return {"class": type(obj).__name__, "config": obj.get_config()}


def _check_registered(obj: Any, registry: dict[str, type], what: str) -> None:
    if registry.get(type(obj).__name__) is not type(obj):
        raise TypeError(
            f"save: {what} class {type(obj).__name__} is not in the registry, so the file could not be loaded; "
            f"register it with nn_from_scratch.serialization.register_layer"
            if what == "layer"
            else f"save: {what} class {type(obj).__name__} is not one this library can load ({', '.join(registry)})"
        )


def model_to_tensors(model: Any, include_optimizer: bool = True) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors and metadata :func:`save_model` writes."""
    if not model.built:
        raise ValueError(
            "save: the model is not built, so it has no weights yet; pass input_shape=... or call it on a batch first"
        )
    for layer in model.layers:
        _check_registered(layer, LAYERS, "layer")
    _check_registered(model, MODELS, "model")
    tensors = {name: _contiguous(a) for name, a in _named_state(model)}
    architecture: dict[str, Any] = {
        "class": type(model).__name__,
        "name": model.name,
        "layers": [_describe(layer, "layer") for layer in model.layers],
        "structure": model.get_config(),
        "loss": None,
        "optimizer": None,
        "input_shape": list(model.input_shape),
        "dtype": None if model.dtype is None else model.dtype.name,
        "seed": model.seed,
    }
    if model.loss is not None:
        _check_registered(model.loss, LOSSES, "loss")
        architecture["loss"] = _describe(model.loss, "loss")
    if model.optimizer is not None:
        opt = model.optimizer
        _check_registered(opt, OPTIMIZERS, "optimizer")
        architecture["optimizer"] = {**_describe(opt, "optimizer"), "iterations": int(opt.iterations), "state": {}}
        if include_optimizer:
            for name, p in _named_parameters(model):
                state = opt._state.get(id(p))
                if state is None or state.get("param") is not p:
                    continue
                scalars = {}
                for slot, value in state.items():
                    if slot == "param":
                        continue
                    if isinstance(value, np.ndarray):
                        tensors[f"optimizer.{name[len('layers.'):]}.{slot}"] = _contiguous(value)
                    else:
                        scalars[slot] = value
                architecture["optimizer"]["state"][name] = scalars
    arch_json = json.dumps(architecture, default=_json_default, sort_keys=True)
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "architecture": arch_json,
        "sha256": _digest(arch_json, tensors),
    }
    return tensors, metadata


# -- atomic write ----------------------------------------------------------------------------
def _write_all(file: Any, data: bytes) -> None:
    """Write ``data`` in chunks (a separate function so tests can interrupt a save midway)."""
    view = memoryview(data)
    for start in range(0, len(view), _CHUNK):
        file.write(view[start : start + _CHUNK])


def _fsync_directory(directory: str) -> None:
    # Makes the rename itself durable; not possible (nor needed) on every platform.
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` by ``data`` so that readers see the old file or the new one, never a mix."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as file:
            _write_all(file, data)
            file.flush()
            os.fsync(file.fileno())
        try:
            mode = os.stat(path).st_mode & 0o777
        except FileNotFoundError:
            mode = 0o644
        os.chmod(tmp, mode)  # mkstemp makes it private (0600); keep the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def save_model(model: Any, path: str | os.PathLike, include_optimizer: bool = True) -> None:
    """Write ``model`` to ``path`` as one safetensors file (see the module docstring), atomically."""
    st_numpy, _ = _safetensors()
    tensors, metadata = model_to_tensors(model, include_optimizer)
    atomic_write_bytes(path, st_numpy.save(tensors, metadata=metadata))


# -- reading ---------------------------------------------------------------------------------
def read_model_file(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The architecture and the tensors of a model file, verified.

    Raises :class:`ModelFileError` for anything that is not an intact file written by
    :func:`save_model`: not safetensors, truncated, foreign metadata, corrupt payload.
    """
    st_numpy, _ = _safetensors()
    path = os.fspath(path)
    with open(path, "rb") as file:
        data = file.read()
    try:
        tensors = st_numpy.load(data)
    except Exception as error:  # safetensors raises its own SafetensorError (and others for odd input)
        raise ModelFileError(f"{path}: not a valid safetensors file (corrupt or truncated?): {error}") from None
    header = _read_header(data, path)
    metadata = header.get("__metadata__")
    metadata = metadata if isinstance(metadata, dict) else {}
    for name, tensor in tensors.items():
        # safetensors' numpy reader returns 0-d tensors as shape (1,); the header has the truth.
        shape = tuple(header.get(name, {}).get("shape", tensor.shape))
        if tensor.shape != shape:
            tensors[name] = tensor.reshape(shape)
    if metadata.get("format") != FORMAT:
        raise ModelFileError(
            f"{path}: a safetensors file, but not a model saved by nn_from_scratch "
            f"(its metadata has format={metadata.get('format')!r}, expected {FORMAT!r})"
        )
    version = metadata.get("format_version")
    if version != str(FORMAT_VERSION):
        raise ModelFileError(f"{path}: format version {version!r} is not supported (this library reads {FORMAT_VERSION})")
    arch_json = metadata.get("architecture", "")
    if metadata.get("sha256") != _digest(arch_json, tensors):
        raise ModelFileError(f"{path}: the file is corrupt: its contents do not match the checksum stored in it")
    try:
        architecture = json.loads(arch_json)
    except json.JSONDecodeError as error:
        raise ModelFileError(f"{path}: the architecture in the metadata is not valid JSON: {error}") from None
    if not isinstance(architecture, dict) or architecture.get("class") not in MODELS or not isinstance(
        architecture.get("layers"), list
    ):
        raise ModelFileError(f"{path}: the architecture in the metadata is not a model ({', '.join(MODELS)})")
    return architecture, tensors


def _read_header(data: bytes, path: str) -> dict[str, Any]:
    # The header was validated by safetensors above: 8 bytes of length, then a JSON object.
    header_length = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(data[8 : 8 + header_length])
    except (ValueError, UnicodeDecodeError) as error:
        raise ModelFileError(f"{path}: unreadable safetensors header: {error}") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: unreadable safetensors header")
    return header


def _build(entry: Any, registry: dict[str, type], what: str, path: str) -> Any:
    if not isinstance(entry, dict) or not isinstance(entry.get("config", {}), dict):
        raise ModelFileError(f"{path}: malformed {what} entry {entry!r}")
    name = entry.get("class")
    cls = registry.get(name)
    if cls is None:
        raise ModelFileError(
            f"{path}: unknown {what} class {name!r}; known: {', '.join(sorted(registry))}"
            + (" (register your own with nn_from_scratch.serialization.register_layer)" if what.startswith("layer") else "")
        )
    try:
        return cls(**entry.get("config", {}))
    except (TypeError, ValueError) as error:
        raise ModelFileError(f"{path}: cannot rebuild {what} {name} from its config {entry.get('config')}: {error}") from None


def load_model(path: str | os.PathLike) -> Any:
    """Rebuild a model saved by ``model.save``: architecture, weights, buffers, loss,
    optimizer (with its state when it was saved). Predictions are identical to the saved model's."""
    path = os.fspath(path)
    architecture, tensors = read_model_file(path)
    layers = [_build(entry, LAYERS, f"layer {i}", path) for i, entry in enumerate(architecture["layers"])]
    loss = None if architecture.get("loss") is None else _build(architecture["loss"], LOSSES, "loss", path)
    opt_entry = architecture.get("optimizer")
    optimizer = None if opt_entry is None else _build(opt_entry, OPTIMIZERS, "optimizer", path)
    structure = architecture.get("structure", {})
    if not isinstance(structure, dict):
        raise ModelFileError(f"{path}: malformed model structure {structure!r}")
    try:
        model = MODELS[architecture["class"]].from_config(
            layers, structure, loss=loss, optimizer=optimizer, input_shape=architecture.get("input_shape"),
            seed=architecture.get("seed"), name=architecture.get("name", "model"))
    except (TypeError, ValueError) as error:
        raise ModelFileError(f"{path}: the saved layers do not fit together: {error}") from None
    _assign_state(model, tensors, path)
    if optimizer is not None:
        optimizer.iterations = int(opt_entry.get("iterations", 0))
        params = dict(_named_parameters(model))
        for name, scalars in (opt_entry.get("state") or {}).items():
            if name not in params:
                raise ModelFileError(f"{path}: optimizer state for unknown parameter {name!r}")
            state = optimizer.state_for(params[name])
            state.update(scalars)
            prefix = f"optimizer.{name[len('layers.'):]}."
            for key, value in tensors.items():
                if key.startswith(prefix):
                    state[key[len(prefix):]] = np.array(value, dtype=params[name].dtype)
    return model


def _assign_state(model: Any, tensors: dict[str, np.ndarray], path: str) -> None:
    """Copy every parameter and buffer from ``tensors`` into ``model`` in place, after checking
    that the names and shapes match exactly (all problems are reported at once)."""
    targets = dict(_named_state(model))
    problems = []
    for name, target in targets.items():
        i = int(name.split(".")[1])
        layer = model.layers[i]
        where = f"layer {i} '{layer.name}' ({type(layer).__name__}) {name.split('.', 3)[3]}"
        if name not in tensors:
            problems.append(f"{where}: missing from the file")
        elif tensors[name].shape != target.shape:
            problems.append(f"{where}: expected shape {target.shape}, the file has {tensors[name].shape}")
    extra = sorted(k for k in tensors if k.startswith("layers.") and k not in targets)
    if extra:
        problems.append(f"the file has weights this model lacks: {', '.join(extra)}")
    if problems:
        raise ValueError(f"{path}: the weights do not fit this model:\n  " + "\n  ".join(problems))
    for name, target in targets.items():
        target[...] = tensors[name]  # in place: optimizer state keyed by the array stays attached


def load_weights(model: Any, path: str | os.PathLike) -> None:
    """Load the weights and buffers saved in ``path`` into ``model`` (optimizer state untouched).

    Every name and shape is checked before anything is written; a mismatch raises
    ``ValueError`` naming the layer, the array, the expected and the stored shape. An unbuilt
    model is first built for the input shape stored in the file.
    """
    path = os.fspath(path)
    architecture, tensors = read_model_file(path)
    if not model.built and architecture.get("input_shape") is not None:
        model.build(tuple(architecture["input_shape"]))
    _assign_state(model, tensors, path)
