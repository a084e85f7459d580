"""The library's own exceptions, in one place so that any module can raise them without
importing the module that usually does (no import cycles).

Each subclasses the built-in exception a caller would catch anyway (``ValueError``,
``FloatingPointError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

from typing import Any


class TrainingDivergedError(FloatingPointError):
    """Raised when the loss becomes NaN or infinite. ``history`` holds what ``fit`` recorded."""

    history: Any = None


class ModelFileError(ValueError):
    """The file is not a model saved by this library, or it is corrupt, truncated or forged."""


class GraphError(ValueError):
    """A graph model cannot be built: a cycle, a disconnected output, mismatched merge shapes."""
