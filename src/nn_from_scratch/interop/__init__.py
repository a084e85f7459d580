"""Convert models to and from PyTorch and Keras 3, weights included.

* :func:`to_torch` / :func:`from_torch` -- ``torch.nn.Sequential`` (NCHW, like us);
* :func:`to_keras` / :func:`from_keras` -- Keras ``Sequential`` (NHWC), run on any Keras backend
  (``KERAS_BACKEND=torch`` is chosen when none is set and TensorFlow is absent).
* :func:`to_onnx` / :func:`from_onnx` -- ONNX files (:mod:`.onnx`; ``pip install nn_from_scratch[onnx]``).

Graph models (:class:`nn_from_scratch.graph.Model`) convert too: to a ``GraphModule`` for torch
(and back), to and from a functional ``keras.Model``; a shared layer stays shared.

torch and keras are optional (``pip install nn_from_scratch[torch]`` / ``[keras]``) and are
imported only when one of these functions is first called. Each converter is one entry per layer
type in a table (``interop.torch.TO_TORCH`` ...); a layer without one raises
:class:`UnsupportedLayerError`, which names it.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from ._common import UnsupportedLayerError


def _backend(name: str) -> ModuleType:
    """``interop.torch`` or ``interop.keras``, with a clear message when the framework is missing."""
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as err:
        if err.name not in ("torch", "keras"):
            raise
        raise ImportError(f"nn_from_scratch.interop needs {err.name} for this: pip install 'nn_from_scratch[{err.name}]'") from err


def to_torch(model: Any) -> Any:
    """Our model -> an equivalent ``torch.nn.Sequential`` (a ``GraphModule`` for a graph; see :mod:`.torch`)."""
    return _backend("torch").to_torch(model)


def from_torch(module: Any, input_shape: tuple[int, ...] | None = None, loss: Any = None, optimizer: Any = None) -> Any:
    """A ``torch.nn.Sequential`` -> our ``Sequential``; a ``GraphModule`` -> our graph (see :mod:`.torch`)."""
    return _backend("torch").from_torch(module, input_shape=input_shape, loss=loss, optimizer=optimizer)


def to_keras(model: Any, input_shape: tuple[int, ...] | None = None, dtype: Any = None) -> Any:
    """Our model -> an equivalent channels-last Keras ``Sequential`` (functional model for a graph; see :mod:`.keras`)."""
    return _backend("keras").to_keras(model, input_shape=input_shape, dtype=dtype)


def from_keras(keras_model: Any, loss: Any = None, optimizer: Any = None) -> Any:
    """A built Keras ``Sequential`` -> our ``Sequential``; a functional model -> our graph (see :mod:`.keras`)."""
    return _backend("keras").from_keras(keras_model, loss=loss, optimizer=optimizer)


def to_onnx(model: Any, path: Any, opset: int | None = None, dtype: Any = None) -> Any:
    """Write our model to an ONNX file (see :mod:`.onnx`); needs ``pip install 'nn_from_scratch[onnx]'``."""
    backend = _onnx_backend()
    return backend.to_onnx(model, path, opset=backend.DEFAULT_OPSET if opset is None else opset, dtype=dtype)


def from_onnx(path: Any, loss: Any = None, optimizer: Any = None) -> Any:
    """An ONNX file -> our ``Sequential`` or graph ``Model`` (see :mod:`.onnx`)."""
    return _onnx_backend().from_onnx(path, loss=loss, optimizer=optimizer)


def _onnx_backend() -> ModuleType:
    try:
        return importlib.import_module(f"{__name__}.onnx")
    except ModuleNotFoundError as err:
        if err.name != "onnx":
            raise
        raise ImportError("nn_from_scratch.interop needs onnx for this: pip install 'nn_from_scratch[onnx]'") from err


__all__ = ["UnsupportedLayerError", "from_keras", "from_onnx", "from_torch", "to_keras", "to_onnx", "to_torch"]
