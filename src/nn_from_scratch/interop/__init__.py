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
    """Our model -> an equivalent ``torch.nn.Sequential`` (a ``GraphModule`` for a graph; see :mod:`.torch`).

    Args:
        model: our ``Sequential``, graph ``Model`` or list of layers (built, so the weights exist).

    Returns:
        A ``torch.nn.Module`` computing the same function on ``(N, C, H, W)`` / ``(N, D)`` inputs.

    Example:
        >>> model = Sequential([Linear(output_dim=3), ReLU(), Linear(output_dim=2)], input_shape=(4,), seed=0)
        >>> to_torch(model)
        Sequential(
          (0): Linear(in_features=4, out_features=3, bias=True)
          (1): ReLU()
          (2): Linear(in_features=3, out_features=2, bias=True)
        )
    """
    return _backend("torch").to_torch(model)


def from_torch(module: Any, input_shape: tuple[int, ...] | None = None, loss: Any = None, optimizer: Any = None) -> Any:
    """A ``torch.nn.Sequential`` -> our ``Sequential``; a ``GraphModule`` -> our graph (see :mod:`.torch`).

    Args:
        module: a ``torch.nn.Sequential`` (nested ones are flattened) or a ``GraphModule``.
        input_shape: per-sample input shape, NCHW (e.g. ``(1, 28, 28)``), to build at once; default:
            built on the first batch.
        loss: our loss to attach (e.g. ``SoftMaxLoss()``), or None.
        optimizer: our optimizer to attach, or None.

    Returns:
        Our ``Sequential`` (graph ``Model`` for a ``GraphModule``) with copies of the weights.

    Example:
        >>> module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
        >>> from_torch(module, input_shape=(4,)).predict(np.ones((2, 4), dtype=np.float32)).shape
        (2, 3)
    """
    return _backend("torch").from_torch(module, input_shape=input_shape, loss=loss, optimizer=optimizer)


def to_keras(model: Any, input_shape: tuple[int, ...] | None = None, dtype: Any = None) -> Any:
    """Our model -> an equivalent channels-last Keras ``Sequential`` (functional model for a graph; see :mod:`.keras`).

    Args:
        model: our ``Sequential`` or graph ``Model``, built unless ``input_shape`` is given.
        input_shape: per-sample input shape in our layout, ``(C, H, W)`` for images.
        dtype: dtype of every Keras layer; default the dtype of the model's first weights.

    Returns:
        A Keras ``Sequential`` (functional ``keras.Model`` for a graph) taking ``(N, H, W, C)`` images.

    Example:
        >>> model = Sequential([Linear(output_dim=3), ReLU(), Linear(output_dim=2)], input_shape=(4,), seed=0)
        >>> to_keras(model).input_shape
        (None, 4)
    """
    return _backend("keras").to_keras(model, input_shape=input_shape, dtype=dtype)


def from_keras(keras_model: Any, loss: Any = None, optimizer: Any = None) -> Any:
    """A built Keras ``Sequential`` -> our ``Sequential``; a functional model -> our graph (see :mod:`.keras`).

    Args:
        keras_model: a built Keras ``Sequential`` or functional ``keras.Model`` (channels-last).
        loss: our loss to attach, or None.
        optimizer: our optimizer to attach, or None.

    Returns:
        Our ``Sequential`` (or graph ``Model``) taking ``(N, C, H, W)`` where Keras takes ``(N, H, W, C)``.

    Example:
        >>> kmodel = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu")])
        >>> [type(layer).__name__ for layer in from_keras(kmodel).layers]
        ['Linear', 'ReLU']
    """
    return _backend("keras").from_keras(keras_model, loss=loss, optimizer=optimizer)


def to_onnx(model: Any, path: Any, opset: int | None = None, dtype: Any = None) -> Any:
    """Write our model to an ONNX file (see :mod:`.onnx`); needs ``pip install 'nn_from_scratch[onnx]'``.

    Args:
        model: a built ``Sequential`` or graph ``Model``.
        path: the ``.onnx`` file to write.
        opset: the ONNX opset; default ``interop.onnx.DEFAULT_OPSET``.
        dtype: ``"float32"`` / ``"float64"`` for weights, input and output; default the model's.

    Returns:
        The ``onnx.ModelProto`` written.

    Example:
        >>> model = Sequential([Linear(output_dim=3), ReLU(), Linear(output_dim=2)], input_shape=(4,), seed=0)
        >>> [node.op_type for node in to_onnx(model, "model.onnx").graph.node]    # doctest: +SKIP
        ['Gemm', 'Relu', 'Gemm']
    """
    backend = _onnx_backend()
    return backend.to_onnx(model, path, opset=backend.DEFAULT_OPSET if opset is None else opset, dtype=dtype)


def from_onnx(path: Any, loss: Any = None, optimizer: Any = None) -> Any:
    """An ONNX file -> our ``Sequential`` or graph ``Model`` (see :mod:`.onnx`).

    Args:
        path: an ONNX file (or an ``onnx.ModelProto``).
        loss: our loss to attach, or None.
        optimizer: our optimizer to attach, or None.

    Returns:
        Our ``Sequential`` for a chain of layers, else a graph ``Model``.

    Example:
        >>> model = from_onnx("model.onnx")          # doctest: +SKIP
        >>> type(model).__name__                      # doctest: +SKIP
        'Sequential'
    """
    return _onnx_backend().from_onnx(path, loss=loss, optimizer=optimizer)


def _onnx_backend() -> ModuleType:
    try:
        return importlib.import_module(f"{__name__}.onnx")
    except ModuleNotFoundError as err:
        if err.name != "onnx":
            raise
        raise ImportError("nn_from_scratch.interop needs onnx for this: pip install 'nn_from_scratch[onnx]'") from err


__all__ = ["UnsupportedLayerError", "from_keras", "from_onnx", "from_torch", "to_keras", "to_onnx", "to_torch"]
