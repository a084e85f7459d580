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

``safetensors`` is a runtime dependency of the package, imported only here.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import math
import os
import re
import stat
import tempfile
from typing import Any, Iterable

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

import numpy as np

from . import neurons, nodes
from .errors import ModelFileError
from .interfaces import Layer, Neuron, Optimizer
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

    Args:
        cls: a :class:`~nn_from_scratch.interfaces.Layer` subclass; its name must not be taken by
            another registered class.

    Returns:
        ``cls`` itself, now in :data:`LAYERS`.

    Example:
        >>> @register_layer
        ... class MyReLU(ReLU):
        ...     pass
        >>> LAYERS["MyReLU"] is MyReLU
        True
    """
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise TypeError(f"register_layer: expected a Layer subclass, got {cls!r}")
    existing = LAYERS.get(cls.__name__)
    if existing is not None and existing is not cls:
        raise ValueError(f"register_layer: another layer class is already registered as {cls.__name__!r}")
    LAYERS[cls.__name__] = cls
    return cls


def register_optimizer(cls: type[Optimizer]) -> type[Optimizer]:
    """Allow :func:`save_model` / :func:`load_model` to save and rebuild optimizers of your own
    class, with their state (usable as a decorator), as :func:`register_layer` does for layers.

    The class must rebuild itself from ``cls(**optimizer.get_config())``. Its per-parameter
    state (``state_for(param)``) is saved as it is for the built-in optimizers: arrays shaped
    as their parameter, and integer counters (e.g. a step count, ``1 <= step <= iterations``).

    Args:
        cls: an :class:`~nn_from_scratch.interfaces.Optimizer` subclass; its name must not be taken
            by another registered class.

    Example:
        >>> @register_optimizer
        ... class SignSGD(Optimizer):
        ...     def update(self, param, grad):
        ...         param -= self.lr * np.sign(grad)
    """
    if not (isinstance(cls, type) and issubclass(cls, Optimizer)):
        raise TypeError(f"register_optimizer: expected an Optimizer subclass, got {cls!r}")
    existing = OPTIMIZERS.get(cls.__name__)
    if existing is not None and existing is not cls:
        raise ValueError(f"register_optimizer: another optimizer class is already registered as {cls.__name__!r}")
    OPTIMIZERS[cls.__name__] = cls
    return cls


def register_model(cls: type) -> type:
    """Let :func:`load_model` rebuild models of this class (``cls.from_config(layers, structure, ...)``).

    Args:
        cls: the model class (it provides ``from_config``); its name must not be taken by another
            registered class.

    Returns:
        ``cls`` itself, now in :data:`MODELS`.

    Example:
        >>> @register_model
        ... class MySequential(Sequential):
        ...     pass
        >>> MODELS["MySequential"] is MySequential
        True
    """
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
            "saving and loading models needs the 'safetensors' package, a dependency of nn_from_scratch: "
            "pip install safetensors (or reinstall: pip install -e .)"
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
            f"register it with nn_from_scratch.serialization.register_{what}"
            if what in ("layer", "optimizer")
            else f"save: {what} class {type(obj).__name__} is not one this library can load ({', '.join(registry)})"
        )


def model_to_tensors(model: Any, include_optimizer: bool = True) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors and metadata :func:`save_model` writes.

    Args:
        model: a built ``Sequential`` or graph ``Model``.
        include_optimizer: also save the optimizer's per-parameter state (Adam's moments ...).

    Returns:
        ``(tensors, metadata)``: arrays by name (``layers.{i}.params.W`` ...) and the string
        metadata (``format``, ``format_version``, ``architecture``, ``sha256``).

    Example:
        >>> model = Sequential([Linear(output_dim=3), ReLU()], input_shape=(4,), seed=0)
        >>> tensors, metadata = model_to_tensors(model)
        >>> sorted(tensors), sorted(metadata)
        (['layers.0.params.W'], ['architecture', 'format', 'format_version', 'sha256'])
    """
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
        # What a continued run needs beyond the weights: the epochs done (fit's initial_epoch)
        # and the generator that shuffles and draws dropout masks.
        "epoch": int(getattr(model, "epoch", 0) or 0),
        "rng": model.rng.bit_generator.state,
    }
    if model.loss is not None:
        _check_registered(model.loss, LOSSES, "loss")
        architecture["loss"] = _describe(model.loss, "loss")
    if model.optimizer is not None:
        opt = model.optimizer
        _check_registered(opt, OPTIMIZERS, "optimizer")
        architecture["optimizer"] = {**_describe(opt, "optimizer"), "iterations": int(opt.iterations), "state": {},
                                     "initial_lr": getattr(opt, "initial_lr", None)}
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


def _umask() -> int:
    """The process umask, read without changing it where the system allows (Linux)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: the classic read-by-setting, restored at once
    os.umask(mask)
    return mask


# mkstemp appends 8 characters from [a-z0-9_]; the temporary name is ``.{prefix}.{8}.tmp``.
_TMP_RANDOM = 8
_TMP_OVERHEAD = len(".") + len(".") + _TMP_RANDOM + len(".tmp")


def _temp_prefix(directory: str, basename: str) -> str:
    """``basename`` cut (in bytes, as the file system counts) so that the temporary name fits
    in the directory's name limit -- a target name of 255 bytes must still save."""
    try:
        limit = int(os.pathconf(directory, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        limit = 255
    raw = os.fsencode(basename)[: max(1, min(limit, 255) - _TMP_OVERHEAD)]
    return os.fsdecode(raw)


def _lock(fd: int, blocking: bool) -> bool:
    """An exclusive advisory lock on an open file (held until it is closed); False if taken."""
    if fcntl is None:  # pragma: no cover - Windows: no debris clean-up
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except OSError:
        return False
    return True


def _remove_debris(directory: str, prefix: str) -> None:
    """Delete the temporary files that killed saves to this target left behind.

    A save holds a lock on its temporary file while it writes; the kernel drops the lock when
    the writer dies (even by SIGKILL). So a temporary file of this target whose lock can be
    taken belongs to nobody alive and is removed; a live save's file is never touched.
    """
    if fcntl is None:  # pragma: no cover
        return
    pattern = re.compile(re.escape("." + prefix + ".") + "[A-Za-z0-9_]{%d}" % _TMP_RANDOM + re.escape(".tmp"))
    with contextlib.suppress(OSError):
        names = [entry.name for entry in os.scandir(directory) if pattern.fullmatch(entry.name)]
    for name in locals().get("names", []):
        candidate = os.path.join(directory, name)
        with contextlib.suppress(OSError):
            fd = os.open(candidate, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
            try:
                here = os.fstat(fd)
                if stat.S_ISREG(here.st_mode) and _lock(fd, blocking=False):
                    there = os.stat(candidate, follow_symlinks=False)
                    if (there.st_dev, there.st_ino) == (here.st_dev, here.st_ino):
                        os.unlink(candidate)
            finally:
                os.close(fd)


def _create_temporary(directory: str, prefix: str) -> tuple[int, str]:
    """A new locked temporary file in ``directory`` (its name still on disk once locked)."""
    for _ in range(100):
        fd, tmp = tempfile.mkstemp(prefix=f".{prefix}.", suffix=".tmp", dir=directory)
        _lock(fd, blocking=True)
        # Another save's clean-up may have taken the lock in the instant between mkstemp and
        # our lock, and removed the file: then start over with a new name.
        with contextlib.suppress(OSError):
            there, here = os.stat(tmp, follow_symlinks=False), os.fstat(fd)
            if (there.st_dev, there.st_ino) == (here.st_dev, here.st_ino):
                return fd, tmp
        os.close(fd)
    raise OSError(f"could not create a temporary file in {directory}")  # pragma: no cover


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` by ``data`` so that readers see the old file or the new one, never a mix.

    A new file gets the usual permissions under the process umask (``0o666 & ~umask``); a file
    that is replaced keeps its mode. The temporary file sits next to the target (a rename across
    file systems would not be atomic) under a name that fits the name limit; leftovers of
    saves killed earlier (SIGKILL, power loss) are removed by the next save to the same path.

    Args:
        path: the file to write (created or replaced).
        data: its new contents.

    Example:
        >>> atomic_write_bytes("notes.txt", b"hello")             # doctest: +SKIP
        >>> open("notes.txt", "rb").read()                         # doctest: +SKIP
        b'hello'
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    prefix = _temp_prefix(directory, os.path.basename(path))
    _remove_debris(directory, prefix)
    fd, tmp = _create_temporary(directory, prefix)
    try:
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)  # mkstemp makes it private (0600)
        else:  # pragma: no cover
            os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as file:  # closing it releases the lock, after the rename
            _write_all(file, data)
            file.flush()
            os.fsync(file.fileno())
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


_SAFETENSORS_NAMES = {np.dtype(v).str: k for k, v in {
    "F16": "<f2", "F32": "<f4", "F64": "<f8", "BOOL": "|b1", "I8": "|i1", "I16": "<i2", "I32": "<i4", "I64": "<i8",
    "U8": "|u1", "U16": "<u2", "U32": "<u4", "U64": "<u8"}.items()}


def encode(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """The safetensors bytes of ``tensors`` and ``metadata``, deterministically.

    The layout is the ``safetensors`` package's (data ordered by alignment then name, the
    header padded with spaces to a multiple of 8 bytes), but the header's keys are always in the
    same order -- the package writes its metadata map in a per-process random order -- so the
    same model always gives the same bytes (save -> load -> save is byte-identical).

    Args:
        tensors: the arrays by name (any shapes; C-contiguous copies are written).
        metadata: string keys and string values, stored in the header's ``__metadata__``.

    Returns:
        The bytes of a ``.safetensors`` file.

    Example:
        >>> data = encode({"w": np.zeros(2, np.float32)}, {"note": "demo"})
        >>> data == encode({"w": np.zeros(2, np.float32)}, {"note": "demo"})
        True
    """
    header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))}
    chunks, offset = [], 0
    for name in sorted(tensors, key=lambda k: (-tensors[k].dtype.itemsize, k)):
        a = _contiguous(np.asarray(tensors[name]))
        dtype = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
        if dtype.str not in _SAFETENSORS_NAMES:
            raise TypeError(f"save: cannot store {name!r} of dtype {a.dtype} in a safetensors file")
        a = a.astype(dtype, copy=False)
        header[name] = {"dtype": _SAFETENSORS_NAMES[dtype.str], "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        chunks.append(a.reshape(-1).view(np.uint8).tobytes())
        offset += a.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + b"".join(chunks)


def save_model(model: Any, path: str | os.PathLike, include_optimizer: bool = True) -> None:
    """Write ``model`` to ``path`` as one safetensors file (see the module docstring), atomically.

    Args:
        model: a built ``Sequential`` or graph ``Model``.
        path: the file to write, conventionally ``*.safetensors``.
        include_optimizer: also save the optimizer's state, so that training resumes exactly.

    Example:
        >>> model = Sequential([Linear(output_dim=3), ReLU()], input_shape=(4,), seed=0)
        >>> save_model(model, "model.safetensors")                # doctest: +SKIP
        >>> load_model("model.safetensors").predict(np.ones((2, 4))).shape   # doctest: +SKIP
        (2, 3)
    """
    tensors, metadata = model_to_tensors(model, include_optimizer)
    atomic_write_bytes(path, encode(tensors, metadata))


# -- reading: the container ------------------------------------------------------------------
# safetensors' dtype names and the numpy types they hold (always little-endian).
_DTYPES = {
    "F16": "<f2", "F32": "<f4", "F64": "<f8", "BOOL": "|b1",
    "I8": "|i1", "I16": "<i2", "I32": "<i4", "I64": "<i8",
    "U8": "|u1", "U16": "<u2", "U32": "<u4", "U64": "<u8",
}
_MAX_HEADER = 100 * 2**20  # safetensors' own limit
_MAX_NDIM = 32
_METADATA_KEYS = {"format", "format_version", "architecture", "sha256"}


def _fail(path: str, message: str) -> ModelFileError:
    return ModelFileError(f"{path}: {message}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        keys = [key for key, _ in pairs]
        raise ValueError(f"duplicate key {next(k for k in keys if keys.count(k) > 1)!r}")
    return result


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} out of range")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _parse_json(text: bytes | str, path: str, what: str) -> Any:
    """Strict JSON: no duplicate keys, no NaN/Infinity, no overflowing floats, bounded nesting."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_float=_finite_float,
                          parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError, RecursionError, TypeError) as error:
        raise _fail(path, f"the {what} is not valid JSON: {str(error)[:200]}") from None


def _is_int(value: Any) -> bool:
    return type(value) is int  # JSON integers; bool excluded


def _open_regular_file(path: str) -> int:
    """A read-only descriptor of ``path``, refusing anything but a regular file.

    The path is checked with ``stat`` before it is opened (opening a FIFO would block, a device
    could have side effects), then opened non-blocking and checked again with ``fstat`` (it may
    have been swapped in between).
    """
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))

    def refuse(mode: int) -> None:
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in kinds if test(mode)), "a special file")
            raise _fail(path, f"not a regular file ({kind}); a model file must be a regular file")

    refuse(os.stat(path).st_mode)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        refuse(os.fstat(fd).st_mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_exactly(file: Any, n: int, path: str) -> bytearray:
    buffer = bytearray(n)
    view, got = memoryview(buffer), 0
    while got < n:
        k = file.readinto(view[got:])
        if not k:
            raise _fail(path, "the file is truncated (it changed while being read?)")
        got += k
    return buffer


def _check_tensor_entry(name: str, entry: Any, path: str) -> tuple[np.dtype, tuple[int, ...], int, int]:
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise _fail(path, f"malformed safetensors header entry for {name!r}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise _fail(path, f"tensor {name!r} has an unsupported dtype {str(dtype)[:20]!r}")
    if not isinstance(shape, list) or len(shape) > _MAX_NDIM or not all(_is_int(s) and s >= 0 for s in shape):
        raise _fail(path, f"tensor {name!r} has a malformed shape")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
        raise _fail(path, f"tensor {name!r} has malformed data offsets")
    np_dtype = np.dtype(_DTYPES[dtype])
    begin, end = offsets
    if not 0 <= begin <= end or (end - begin) != math.prod(shape) * np_dtype.itemsize:
        raise _fail(path, f"tensor {name!r}: its data offsets do not match its shape and dtype")
    return np_dtype, tuple(shape), begin, end


def _read_container(path: str) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """The metadata and tensors of the safetensors file at ``path`` (a regular file)."""
    fd = _open_regular_file(path)
    with os.fdopen(fd, "rb") as file:
        data = _read_exactly(file, os.fstat(file.fileno()).st_size, path)
    return _parse_container(data, path)


def _parse_container(data: bytes | bytearray, path: str) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """The metadata and tensors of a safetensors byte string, every header field checked first.
    The tensors are views of ``data`` (writable when it is a ``bytearray``)."""
    size = len(data)
    if size < 8:
        raise _fail(path, "not a valid safetensors file (corrupt or truncated?): too short")
    header_length = int.from_bytes(data[:8], "little")
    if header_length > min(_MAX_HEADER, size - 8):
        raise _fail(path, "not a valid safetensors file (corrupt or truncated?): "
                          f"its header claims {header_length} bytes")
    header = _parse_json(bytes(data[8 : 8 + header_length]), path, "safetensors header")
    if not isinstance(header, dict):
        raise _fail(path, "not a valid safetensors file: the header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _fail(path, "the safetensors metadata is not a map of strings")
    start, data_length = 8 + header_length, size - 8 - header_length
    entries = {name: _check_tensor_entry(name, entry, path) for name, entry in header.items()}
    # The data blocks must tile the buffer exactly: in order, no gap, no overlap, no tail.
    position = 0
    for _, _, begin, end in sorted(entries.values(), key=lambda e: (e[2], e[3])):
        if begin != position:
            raise _fail(path, "not a valid safetensors file: tensor data overlaps or leaves gaps")
        position = end
    if position != data_length:
        raise _fail(path, "not a valid safetensors file (corrupt or truncated?): "
                          f"the tensors hold {position} bytes, the file has {data_length}")
    tensors = {}
    for name, (dtype, shape, begin, end) in entries.items():
        flat = np.frombuffer(data, dtype=dtype, count=(end - begin) // dtype.itemsize, offset=start + begin) \
            if end > begin else np.empty(0, dtype=dtype)
        tensors[name] = flat.reshape(shape)
    return metadata, tensors


# -- reading: the architecture -----------------------------------------------------------------
_ARCH_KEYS = {"class", "layers", "structure", "loss", "optimizer", "input_shape", "dtype", "seed"}
_ARCH_OPTIONAL = {"name", "epoch", "rng"}
_OPT_KEYS = {"class", "config", "iterations", "state"}
_FLOAT_DTYPES = {"float16", "float32", "float64"}
_MAX_DIM = 2**31 - 1
_MAX_INT = 2**53
_MAX_JSON_DEPTH = 8
_RNG_CLASSES = ("PCG64", "PCG64DXSM", "Philox", "SFC64", "MT19937")
# What each optimizer keeps per parameter: array slots (shaped as the parameter) and integer
# counters (Adam's per-parameter step). A file naming anything else is refused.
OPTIMIZER_SLOTS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "GradientDescent": (frozenset({"velocity"}), frozenset()),
    "Adam": (frozenset({"exp_avg", "exp_avg_sq"}), frozenset({"step"})),
    "AdamW": (frozenset({"exp_avg", "exp_avg_sq"}), frozenset({"step"})),
    "RMSProp": (frozenset({"square_avg", "grad_avg", "momentum_buffer"}), frozenset()),
}


def _check_json_value(value: Any, where: str, path: str, depth: int = 0) -> None:
    """A config value: JSON scalars, lists and string-keyed maps, bounded in depth and magnitude."""
    if depth > _MAX_JSON_DEPTH:
        raise _fail(path, f"{where}: nested too deeply")
    if value is None or isinstance(value, (bool, str, float)):
        return
    if _is_int(value):
        if abs(value) > _MAX_INT:
            raise _fail(path, f"{where}: the integer {str(value)[:30]} is out of range")
        return
    if isinstance(value, list):
        for item in value:
            _check_json_value(item, where, path, depth + 1)
        return
    if isinstance(value, dict):
        for item in value.values():
            _check_json_value(item, where, path, depth + 1)
        return
    raise _fail(path, f"{where}: unexpected value of type {type(value).__name__}")  # pragma: no cover


def _check_entry(entry: Any, registry: dict[str, type], what: str, path: str) -> tuple[type, dict[str, Any]]:
    """``{"class": name, "config": {...}}`` naming a registered class whose constructor takes
    every key of the config."""
    if not isinstance(entry, dict) or not {"class", "config"} <= set(entry) or not isinstance(entry["config"], dict):
        raise _fail(path, f"malformed {what} entry (expected {{'class': ..., 'config': {{...}}}})")
    name, config = entry["class"], entry["config"]
    cls = registry.get(name) if isinstance(name, str) else None
    if cls is None:
        shown = name if isinstance(name, str) else f"<{type(name).__name__}>"
        raise _fail(
            path, f"unknown {what} class {str(shown)[:80]!r}; known: {', '.join(sorted(registry))}"
            + (" (register your own with nn_from_scratch.serialization.register_layer)" if what.startswith("layer") else "")
        )
    _check_json_value(config, f"{what} {name} config", path)
    for key in ("name", "dtype"):
        if config.get(key) is not None and not isinstance(config[key], str):
            raise _fail(path, f"{what} {name} config: {key} must be a string")
    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # pragma: no cover - a class without a signature
        parameters = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    unknown = [key for key in config if key not in parameters and not takes_any]
    if unknown:
        raise _fail(path, f"cannot rebuild {what} {name} from its config: unexpected argument {str(unknown[0])[:80]!r}")
    return cls, config


def _check_shape(value: Any, where: str, path: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= _MAX_NDIM or not all(
        _is_int(s) and 1 <= s <= _MAX_DIM for s in value
    ):
        raise _fail(path, f"{where} must be a list of positive ints, got {str(value)[:80]}")
    return tuple(value)


def _check_structure(model_class: str, structure: Any, n_layers: int, path: str) -> None:
    if not isinstance(structure, dict):
        raise _fail(path, "malformed model structure (expected a JSON object)")
    _check_json_value(structure, "model structure", path)
    if model_class == "Sequential" and structure:
        raise _fail(path, "a Sequential model has no structure beyond its layer list")
    if model_class != "Model":
        return

    def is_ref(ref: Any) -> bool:
        return isinstance(ref, list) and len(ref) == 2 and ref[0] in ("input", "node") and _is_int(ref[1])

    inputs, nodes, outputs = structure.get("inputs"), structure.get("nodes"), structure.get("outputs")
    ok = (
        set(structure) == {"inputs", "nodes", "outputs"}
        and isinstance(inputs, list) and len(inputs) == 1 and isinstance(inputs[0], dict)
        and set(inputs[0]) <= {"shape", "name"} and isinstance(inputs[0].get("name", ""), str)
        and isinstance(nodes, list)
        and all(isinstance(n, dict) and set(n) == {"layer", "inputs"} and _is_int(n["layer"])
                and 0 <= n["layer"] < n_layers and isinstance(n["inputs"], list) and n["inputs"]
                and all(is_ref(r) for r in n["inputs"]) for n in nodes)
        and isinstance(outputs, list) and len(outputs) == 1 and is_ref(outputs[0])
    )
    if not ok:
        raise _fail(path, "malformed graph structure")
    _check_shape(inputs[0].get("shape"), "the graph input shape", path)


def _check_architecture(architecture: Any, path: str) -> dict[str, Any]:
    """Type-check every field of the architecture (before anything is built)."""
    if not isinstance(architecture, dict):
        raise _fail(path, f"the architecture in the metadata is not a model ({', '.join(MODELS)})")
    keys = set(architecture)
    if not _ARCH_KEYS <= keys or not keys <= _ARCH_KEYS | _ARCH_OPTIONAL:
        missing, extra = sorted(_ARCH_KEYS - keys), sorted(keys - _ARCH_KEYS - _ARCH_OPTIONAL)
        raise _fail(path, f"the architecture in the metadata is not a model (missing {missing}, unexpected "
                          f"{[str(k)[:40] for k in extra]})")
    if not isinstance(architecture["class"], str) or architecture["class"] not in MODELS:
        raise _fail(path, f"the architecture in the metadata is not a model ({', '.join(MODELS)})")
    if not isinstance(architecture.get("name", "model"), str):
        raise _fail(path, "the model name must be a string")
    layers = architecture["layers"]
    if not isinstance(layers, list) or not layers:
        raise _fail(path, "the architecture has no layer list")
    _check_shape(architecture["input_shape"], "input_shape", path)
    if architecture["dtype"] is not None and architecture["dtype"] not in _FLOAT_DTYPES:
        raise _fail(path, f"unsupported model dtype {str(architecture['dtype'])[:40]!r}")
    seed = architecture["seed"]
    if seed is not None and not (_is_int(seed) and 0 <= seed < 2**128):
        raise _fail(path, f"the seed must be null or an int in [0, 2**128), got {str(seed)[:40]}")
    epoch = architecture.get("epoch", 0)
    if not (_is_int(epoch) and 0 <= epoch <= _MAX_DIM):
        raise _fail(path, f"the epoch must be a non-negative int, got {str(epoch)[:40]}")
    _check_structure(architecture["class"], architecture["structure"], len(layers), path)
    for i, entry in enumerate(layers):
        _check_entry(entry, LAYERS, f"layer {i}", path)
    if architecture["loss"] is not None:
        _check_entry(architecture["loss"], LOSSES, "loss", path)
    opt = architecture["optimizer"]
    if opt is not None:
        if not isinstance(opt, dict) or not _OPT_KEYS <= set(opt) or not set(opt) <= _OPT_KEYS | {"initial_lr"}:
            raise _fail(path, "malformed optimizer entry")
        _check_entry(opt, OPTIMIZERS, "optimizer", path)
        if not (_is_int(opt["iterations"]) and 0 <= opt["iterations"] < 2**63):
            raise _fail(path, f"optimizer iterations must be a non-negative int, got {str(opt['iterations'])[:40]}")
        initial_lr = opt.get("initial_lr")
        if initial_lr is not None and not (isinstance(initial_lr, (int, float)) and not isinstance(initial_lr, bool)
                                           and math.isfinite(initial_lr) and initial_lr > 0):
            raise _fail(path, "the optimizer's initial_lr must be null or a positive number")
        state = opt["state"]
        if not isinstance(state, dict) or not all(
            isinstance(scalars, dict) and all(_is_int(v) for v in scalars.values()) for scalars in state.values()
        ):
            raise _fail(path, "malformed optimizer state (expected {parameter: {slot: int}})")
    if architecture.get("rng") is not None:
        _generator_from_state(architecture["rng"], path)  # type-checks it
    return architecture


def _generator_from_state(state: Any, path: str) -> np.random.Generator:
    if not isinstance(state, dict) or state.get("bit_generator") not in _RNG_CLASSES:
        raise _fail(path, f"the generator state must name one of {', '.join(_RNG_CLASSES)}")
    generator = np.random.Generator(getattr(np.random, state["bit_generator"])())
    try:
        generator.bit_generator.state = state
    except Exception as error:  # numpy raises TypeError, ValueError, KeyError, OverflowError...
        raise _fail(path, f"malformed generator state: {str(error)[:200]}") from None
    return generator


def read_model_file(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The architecture and the tensors of a model file, verified.

    Raises :class:`ModelFileError` for anything that is not an intact file written by
    :func:`save_model`: not a regular file, not safetensors, truncated, foreign metadata,
    corrupt payload, or an architecture whose fields are not what :func:`save_model` writes.
    Nothing but the file's own bytes is allocated (its tensors are views of them).

    Args:
        path: a file written by :func:`save_model`.

    Returns:
        ``(architecture, tensors)``: the decoded architecture (``class``, ``layers``, ``loss``,
        ``optimizer``, ``input_shape`` ...) and the arrays by name.

    Example:
        >>> model = Sequential([Linear(output_dim=3), ReLU()], input_shape=(4,), seed=0)
        >>> save_model(model, "model.safetensors")                # doctest: +SKIP
        >>> architecture, tensors = read_model_file("model.safetensors")   # doctest: +SKIP
        >>> architecture["class"], sorted(tensors)                 # doctest: +SKIP
        ('Sequential', ['layers.0.params.W'])
    """
    _safetensors()  # the same dependency as saving, for a clear message when it is missing
    path = os.fspath(path)
    return _verify(*_read_container(path), path)


def _verify(metadata: dict[str, str], tensors: dict[str, np.ndarray], path: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    if metadata.get("format") != FORMAT:
        raise _fail(path, f"a safetensors file, but not a model saved by nn_from_scratch (its metadata has "
                          f"format={str(metadata.get('format'))[:40]!r}, expected {FORMAT!r})")
    version = metadata.get("format_version")
    if version != str(FORMAT_VERSION):
        raise _fail(path, f"format version {str(version)[:20]!r} is not supported (this library reads {FORMAT_VERSION})")
    if set(metadata) != _METADATA_KEYS:
        raise _fail(path, f"unexpected metadata keys: {sorted(str(k)[:40] for k in set(metadata) ^ _METADATA_KEYS)}")
    arch_json = metadata["architecture"]
    if metadata["sha256"] != _digest(arch_json, tensors):
        raise _fail(path, "the file is corrupt: its contents do not match the checksum stored in it")
    architecture = _check_architecture(_parse_json(arch_json, path, "architecture in the metadata"), path)
    return architecture, tensors


# -- reading: building the model ---------------------------------------------------------------
def _canonical(value: Any) -> Any:
    return json.loads(json.dumps(value, default=_json_default, sort_keys=True))


def _build_layer(i: int, entry: dict[str, Any], tensors: dict[str, np.ndarray], path: str) -> Layer:
    """Rebuild layer ``i``. A layer with parameters gets them from the file through its
    constructor (``W=``, ``gamma=`` ...), so it never draws -- nor allocates -- weights of the
    size its config declares: a forged config that does not match the stored tensors is refused
    by the shape checks, not after gigabytes were allocated."""
    cls, config = _check_entry(entry, LAYERS, f"layer {i}", path)
    kwargs = dict(config)
    if issubclass(cls, Neuron):
        accepted = inspect.signature(cls).parameters
        names = [n for n in cls.parameter_names if n in accepted]
        if names:  # the library's layers all take their parameters (a registered class may not)
            first = f"layers.{i}.params.{names[0]}"
            if first not in tensors:
                raise _fail(path, f"layer {i} ({cls.__name__}): {names[0]} is missing from the file")
            for name in names:
                key = f"layers.{i}.params.{name}"
                if key in tensors:
                    if tensors[key].dtype.kind != "f":
                        raise _fail(path, f"layer {i} ({cls.__name__}): {name} is stored as {tensors[key].dtype}, "
                                          "not a floating type")
                    kwargs[name] = tensors[key].copy()
    try:
        layer = cls(**kwargs)
    except Exception as error:  # a constructor's ValueError/TypeError, or anything a forged value reaches
        raise _fail(path, f"cannot rebuild layer {i} {cls.__name__} from its config {str(config)[:200]}: "
                          f"{type(error).__name__}: {str(error)[:300]}") from None
    return layer


def _build_other(entry: Any, registry: dict[str, type], what: str, path: str) -> Any:
    cls, config = _check_entry(entry, registry, what, path)
    try:
        return cls(**config)
    except Exception as error:
        raise _fail(path, f"cannot rebuild {what} {cls.__name__} from its config {str(config)[:200]}: "
                          f"{str(error)[:300]}") from None


def _restore_optimizer(model: Any, optimizer: Optimizer, entry: dict[str, Any],
                       tensors: dict[str, np.ndarray], path: str) -> None:
    """Check every piece of optimizer state against the parameter it belongs to, then attach it."""
    params = dict(_named_parameters(model))
    iterations = entry["iterations"]
    arrays, counters = OPTIMIZER_SLOTS.get(type(optimizer).__name__, (None, None))
    pending: dict[str, dict[str, Any]] = {}
    for name, scalars in entry["state"].items():
        if name not in params:
            raise _fail(path, f"optimizer state for unknown parameter {str(name)[:80]!r}")
        for slot, value in scalars.items():
            if counters is not None and slot not in counters:
                raise _fail(path, f"optimizer state {name}: {type(optimizer).__name__} keeps no counter {str(slot)[:40]!r}")
            if not 1 <= value <= iterations:
                raise _fail(path, f"optimizer state {name}: {slot}={value} is not in [1, iterations={iterations}]")
        pending[name] = dict(scalars)
    for key, value in tensors.items():
        if not key.startswith("optimizer."):
            continue
        name, _, slot = ("layers." + key[len("optimizer."):]).rpartition(".")
        if name not in pending:
            raise _fail(path, f"optimizer tensor {key!r} belongs to no saved parameter state")
        if arrays is not None and slot not in arrays:
            raise _fail(path, f"optimizer tensor {key!r}: {type(optimizer).__name__} keeps no {slot!r}")
        p = params[name]
        if value.shape != p.shape or value.dtype != p.dtype:
            raise _fail(path, f"optimizer tensor {key!r} is {value.dtype}{list(value.shape)}, "
                              f"its parameter is {p.dtype}{list(p.shape)}")
        pending[name][slot] = value.copy()
    for name, state in pending.items():
        # Adam's step and its two moments come together, or not at all.
        if counters and (set(state) & (arrays | counters)) and not (arrays | counters) <= set(state):
            raise _fail(path, f"optimizer state {name}: has {sorted(state)}, needs all of {sorted(arrays | counters)}")
    optimizer.iterations = iterations
    optimizer.initial_lr = entry.get("initial_lr")
    for name, state in pending.items():
        optimizer.state_for(params[name]).update(state)


def load_model(path: str | os.PathLike) -> Any:
    """Rebuild a model saved by ``model.save``: architecture, weights, buffers, loss,
    optimizer (with its state when it was saved), the generator state and the epoch count, so
    that ``fit(..., initial_epoch=model.epoch)`` continues the run exactly. Predictions are
    identical to the saved model's.

    Every field is checked before anything is built, and layers take their weights from the
    file (never drawing ones of the size a config declares); any problem raises
    :class:`ModelFileError`.

    Args:
        path: a file written by :func:`save_model` / ``model.save``.

    Returns:
        The model (``Sequential`` or graph ``Model``), built.

    Example:
        >>> model = Sequential([Linear(output_dim=3), ReLU()], input_shape=(4,), seed=0)
        >>> model.save("model.safetensors")                       # doctest: +SKIP
        >>> same = load_model("model.safetensors")                 # doctest: +SKIP
        >>> bool(np.array_equal(same.predict(np.ones((2, 4))), model.predict(np.ones((2, 4)))))  # doctest: +SKIP
        True
    """
    path = os.fspath(path)
    return _rebuild(*read_model_file(path), path)


def load_model_bytes(data: bytes | bytearray, name: str = "<bytes>") -> Any:
    """:func:`load_model` for the contents of a model file held in memory (``name`` appears in
    the error messages). The same checks; any problem raises :class:`ModelFileError`.

    Args:
        data: the bytes of a model file.
        name: what error messages call it.

    Returns:
        The model, as :func:`load_model` returns it.

    Example:
        >>> model = Sequential([Linear(output_dim=3), ReLU()], input_shape=(4,), seed=0)
        >>> tensors, metadata = model_to_tensors(model)
        >>> same = load_model_bytes(encode(tensors, metadata))
        >>> same.predict(np.ones((2, 4), dtype=np.float32)).shape
        (2, 3)
    """
    _safetensors()
    return _rebuild(*_verify(*_parse_container(bytearray(data), name), name), name)


def _rebuild(architecture: dict[str, Any], tensors: dict[str, np.ndarray], path: str) -> Any:
    layers = [_build_layer(i, entry, tensors, path) for i, entry in enumerate(architecture["layers"])]
    loss = None if architecture["loss"] is None else _build_other(architecture["loss"], LOSSES, "loss", path)
    opt_entry = architecture["optimizer"]
    optimizer = None
    if opt_entry is not None:
        config = opt_entry["config"] if isinstance(opt_entry, dict) else None
        # A schedule may end at a rate of exactly 0 (CosineDecay with alpha=0), which no
        # constructor accepts: build with the schedule's initial rate, then set the saved one.
        at_zero = isinstance(config, dict) and type(config.get("lr")) in (int, float) and config["lr"] == 0
        if at_zero:
            opt_entry = {**opt_entry, "config": {**config, "lr": opt_entry.get("initial_lr") or 1.0}}
        optimizer = _build_other(opt_entry, OPTIMIZERS, "optimizer", path)
        if at_zero:
            optimizer.lr = 0.0
    try:
        model = MODELS[architecture["class"]].from_config(
            layers, architecture["structure"], loss=loss, optimizer=optimizer,
            input_shape=tuple(architecture["input_shape"]), seed=architecture["seed"],
            name=architecture.get("name", "model"))
    except Exception as error:
        raise _fail(path, f"the saved layers do not fit together: {type(error).__name__}: {str(error)[:300]}") from None
    for layer in layers:
        if isinstance(layer, Neuron):
            layer.user_weights = False  # the weights are the file's, not the user's
    for i, (layer, entry) in enumerate(zip(model.layers, architecture["layers"])):
        if _canonical(layer.get_config()) != _canonical(entry["config"]):
            raise _fail(path, f"layer {i} ({type(layer).__name__}): its config does not match its weights and input")
    if len(model.layers) != len(layers):
        raise _fail(path, "the graph structure does not use every saved layer exactly once")
    strays = sorted(k for k in tensors if not k.startswith(("layers.", "optimizer.")))
    if strays or (optimizer is None and any(k.startswith("optimizer.") for k in tensors)):
        raise _fail(path, f"the file has tensors that belong to nothing: {(strays or ['optimizer.*'])[:5]}")
    try:
        _assign_state(model, tensors, path, exact_dtype=True)
    except ValueError as error:
        raise ModelFileError(str(error)) from None
    if optimizer is not None:
        _restore_optimizer(model, optimizer, opt_entry, tensors, path)
    if architecture.get("rng") is not None:
        _use_generator(model, _generator_from_state(architecture["rng"], path))
    model.epoch = architecture.get("epoch", 0)
    return model


def _use_generator(model: Any, generator: np.random.Generator) -> None:
    """Make ``generator`` the model's (and its layers') source of randomness."""
    old = model.rng
    model.rng = generator
    for layer in model.layers:
        if getattr(layer, "rng", None) is old:
            layer.rng = generator


def _state_problems(model: Any, tensors: dict[str, np.ndarray], exact_dtype: bool = False) -> list[str]:
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
        elif exact_dtype and tensors[name].dtype != target.dtype:
            problems.append(f"{where}: expected dtype {target.dtype}, the file has {tensors[name].dtype}")
        elif tensors[name].dtype.kind not in "fiub" or (target.dtype.kind == "f") != (tensors[name].dtype.kind == "f"):
            problems.append(f"{where}: expected {target.dtype}, the file has {tensors[name].dtype}")
    extra = sorted(k for k in tensors if k.startswith("layers.") and k not in targets)
    if extra:
        problems.append(f"the file has weights this model lacks: {', '.join(extra[:20])}")
    return problems


def _assign_state(model: Any, tensors: dict[str, np.ndarray], path: str, exact_dtype: bool = False) -> None:
    """Copy every parameter and buffer from ``tensors`` into ``model`` in place, after checking
    that the names and shapes match exactly (all problems are reported at once)."""
    problems = _state_problems(model, tensors, exact_dtype)
    if problems:
        raise ValueError(f"{path}: the weights do not fit this model:\n  " + "\n  ".join(problems))
    for name, target in _named_state(model):
        target[...] = tensors[name]  # in place: optimizer state keyed by the array stays attached


# Config entries that do not change what a layer computes from its weights: load_weights
# ignores them when it compares the model with the file's architecture.
_WEIGHT_NEUTRAL = {"name", "kernel_initializer", "W_init_range", "dtype"}


def _architecture_differences(model: Any, architecture: dict[str, Any]) -> list[str]:
    """Where ``model`` is not the architecture saved in the file (classes, configs, graph)."""
    saved = architecture["layers"]
    if type(model).__name__ != architecture["class"]:
        return [f"the file holds a {architecture['class']}, this is a {type(model).__name__}"]
    if len(model.layers) != len(saved):
        return [f"the file has {len(saved)} layers, this model {len(model.layers)}"]
    problems = []
    for i, (layer, entry) in enumerate(zip(model.layers, saved)):
        if type(layer).__name__ != entry["class"]:
            problems.append(f"layer {i}: the file has {entry['class']}, this model {type(layer).__name__}")
            continue
        mine = _canonical(layer.get_config())
        for key, value in _canonical(entry["config"]).items():
            if key in _WEIGHT_NEUTRAL or mine.get(key) is None or value is None:
                continue
            if mine.get(key) != value:
                problems.append(f"layer {i} ({entry['class']}): {key} is {mine.get(key)!r} here, {value!r} in the file")
    structure = model.get_config()
    if not problems and _canonical(structure) != architecture["structure"]:
        problems.append("the layers are connected differently")
    return problems


def load_weights(model: Any, path: str | os.PathLike) -> None:
    """Load the weights and buffers saved in ``path`` into ``model`` (optimizer state untouched).

    The model must have the file's architecture: the same layer classes with the same
    configuration (names, initialisers and dtypes aside) -- a same-shaped model that computes
    something else (``Tanh`` where the file has ``ReLU``, another stride) is refused. Every name
    and shape is checked before anything is written; a mismatch raises ``ValueError`` naming
    the layer, the array, the expected and the stored shape. An unbuilt model is built for the
    input shape stored in the file only once a twin has shown that the weights fit; otherwise
    it stays unbuilt.

    Args:
        model: a model with the file's architecture (built or not).
        path: a file written by :func:`save_model`.

    Example:
        >>> model = Sequential([Linear(output_dim=3), ReLU()], input_shape=(4,), seed=0)
        >>> model.save("model.safetensors")                       # doctest: +SKIP
        >>> other = Sequential([Linear(output_dim=3), ReLU()], input_shape=(4,), seed=1)
        >>> load_weights(other, "model.safetensors")               # doctest: +SKIP
        >>> bool(np.array_equal(other.layers[0].W, model.layers[0].W))   # doctest: +SKIP
        True
    """
    path = os.fspath(path)
    architecture, tensors = read_model_file(path)
    differences = _architecture_differences(model, architecture)
    target = model
    if not model.built and architecture.get("input_shape") is not None:
        target = _unbuilt_twin(model)
        try:
            target.build(tuple(architecture["input_shape"]))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: the weights do not fit this model: {error}") from None
    problems = _state_problems(target, tensors)
    if problems:
        raise ValueError(f"{path}: the weights do not fit this model:\n  " + "\n  ".join(problems + differences))
    if differences:
        raise ValueError(f"{path}: the file holds another architecture than this model:\n  " + "\n  ".join(differences))
    if target is not model:
        model.build(tuple(architecture["input_shape"]))
    _assign_state(model, tensors, path)


def _unbuilt_twin(model: Any) -> Any:
    """A copy of ``model``'s architecture with fresh layers (its own generator: nothing is drawn
    from the model's), to try a build without touching the model."""
    fresh = [type(layer)(**layer.get_config()) for layer in model.layers]
    return type(model).from_config(fresh, model.get_config(), seed=0)
