"""The library's own exceptions, in one place so that any module can raise them without
importing the module that usually does (no import cycles).

Each subclasses the built-in exception a caller would catch anyway (``ValueError``,
``FloatingPointError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

from typing import Any


class TrainingDivergedError(FloatingPointError):
    """Raised when the loss becomes NaN or infinite. ``history`` holds what ``fit`` recorded.

    Args:
        *args: the message, as for any exception (``fit`` names the epoch, batch and loss).

    Example:
        >>> try:
        ...     raise TrainingDivergedError("loss is nan at epoch 1, batch 3")
        ... except FloatingPointError as error:
        ...     print(error)
        loss is nan at epoch 1, batch 3
    """

    history: Any = None


class ModelFileError(ValueError):
    """The file is not a model saved by this library, or it is corrupt, truncated or forged.

    Args:
        *args: the message, as for any exception (it names the file and what is wrong).

    Example:
        >>> try:
        ...     raise ModelFileError("model.npz: not a model file")
        ... except ValueError as error:
        ...     print(error)
        model.npz: not a model file
    """


class GraphError(ValueError):
    """A graph model cannot be built: a cycle, a disconnected output, mismatched merge shapes.

    Args:
        *args: the message, as for any exception (it names the layers involved).

    Example:
        >>> try:
        ...     raise GraphError("Model: the output does not depend on the input")
        ... except ValueError as error:
        ...     print(error)
        Model: the output does not depend on the input
    """
