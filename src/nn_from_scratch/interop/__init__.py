"""Convert models to and from PyTorch and Keras 3, weights included.

* :func:`to_torch` / :func:`from_torch` -- ``torch.nn.Sequential`` (NCHW, like us);
* :func:`to_keras` / :func:`from_keras` -- Keras ``Sequential`` (NHWC), run on any Keras backend
  (``KERAS_BACKEND=torch`` is chosen when none is set and TensorFlow is absent).

torch and keras are optional (``pip install nn_from_scratch[torch]`` / ``[keras]``) and are
imported only when one of these functions is first called. Each converter is one entry per layer
type in a table (``interop.torch.TO_TORCH`` ...); a layer without one raises
:class:`UnsupportedLayerError`, which names it.
"""

from __future__ import annotations

from typing import Any

from ._common import UnsupportedLayerError


def to_torch(model: Any) -> Any:
    """Our model -> an equivalent ``torch.nn.Sequential`` (see :mod:`.torch`)."""
    from .torch import to_torch as convert

    return convert(model)


def from_torch(module: Any, input_shape: tuple[int, ...] | None = None, loss: Any = None, optimizer: Any = None) -> Any:
    """A ``torch.nn.Sequential`` -> our ``Sequential`` (see :mod:`.torch`)."""
    from .torch import from_torch as convert

    return convert(module, input_shape=input_shape, loss=loss, optimizer=optimizer)


def to_keras(model: Any, input_shape: tuple[int, ...] | None = None) -> Any:
    """Our model -> an equivalent channels-last Keras ``Sequential`` (see :mod:`.keras`)."""
    from .keras import to_keras as convert

    return convert(model, input_shape=input_shape)


def from_keras(keras_model: Any, loss: Any = None, optimizer: Any = None) -> Any:
    """A built Keras ``Sequential`` -> our ``Sequential`` (see :mod:`.keras`)."""
    from .keras import from_keras as convert

    return convert(keras_model, loss=loss, optimizer=optimizer)


__all__ = ["UnsupportedLayerError", "from_keras", "from_torch", "to_keras", "to_torch"]
