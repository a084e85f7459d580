"""Metrics computed in streaming form over batches: ``reset()``, ``update(y_pred, y_true)``, ``result()``.

The training loop (:mod:`nn_from_scratch.training`) asks :func:`default_metrics` which metrics a
model reports by default: accuracy, of the kind its loss implies (``Loss.accuracy_kind``):

* ``"binary"`` (binary cross-entropy on logits): the share of outputs whose logit ``> 0``
  agrees with a target ``> 0.5`` -- Keras' ``binary_accuracy`` on logits;
* ``"categorical"``: the share of samples whose highest output is the true class, for labels
  given as integers ``(N,)`` or one-hot ``(N, K)`` (Keras' ``accuracy`` picks ``categorical`` or
  ``sparse`` the same way);
* ``"auto"``: categorical for a model with a vector of ``K > 1`` outputs, none otherwise
  (a single regression output reports the loss only).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


class Metric:
    """A running value over batches. ``name`` is the key in logs and in ``History``."""

    name = "metric"

    def reset(self) -> None:
        raise NotImplementedError

    def update(self, y_pred: np.ndarray, y_true: np.ndarray) -> None:
        raise NotImplementedError

    def result(self) -> float:
        raise NotImplementedError


class _CountingAccuracy(Metric):
    """Accuracy as (number right) / (number judged), exact whatever the batch sizes."""

    name = "accuracy"

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.correct, self.judged = 0, 0

    def update(self, y_pred: np.ndarray, y_true: np.ndarray) -> None:
        right, total = self.count(np.asarray(y_pred), np.asarray(y_true))
        self.correct += right
        self.judged += total

    def result(self) -> float:
        return self.correct / self.judged if self.judged else 0.0

    def count(self, y_pred: np.ndarray, y_true: np.ndarray) -> tuple[int, int]:
        raise NotImplementedError


class BinaryAccuracy(_CountingAccuracy):
    """Share of outputs with ``(logit > 0) == (target > 0.5)``: Keras' ``binary_accuracy`` on logits.

    Args:
        (none)

    Example:
        >>> m = BinaryAccuracy(); m.update(np.array([[2.0], [-1.0]]), np.array([1, 1])); m.result()
        0.5
    """

    def count(self, y_pred: np.ndarray, y_true: np.ndarray) -> tuple[int, int]:
        if y_true.shape != y_pred.shape:
            y_true = y_true.reshape(y_pred.shape)
        return int(np.count_nonzero((y_pred > 0) == (y_true > 0.5))), y_pred.size


class CategoricalAccuracy(_CountingAccuracy):
    """Share of samples whose arg-max output is the true class; labels ``(N,)`` or one-hot ``(N, K)``.

    Ties go to the first maximal output (``numpy.argmax``, as Keras' and torch's argmax).

    Example:
        >>> m = CategoricalAccuracy(); m.update(np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 1])); m.result()
        0.5
    """

    def count(self, y_pred: np.ndarray, y_true: np.ndarray) -> tuple[int, int]:
        labels = y_true.argmax(axis=1) if y_true.ndim == 2 and y_true.shape[1] > 1 else y_true.reshape(len(y_true))
        return int(np.count_nonzero(y_pred.argmax(axis=1) == labels)), len(y_pred)


def default_metrics(loss: Any, output_shape: Sequence[int] | None) -> list[Metric]:
    """The metrics a model with this loss and per-sample output shape reports (see the module docstring)."""
    kind = getattr(loss, "accuracy_kind", "auto")
    if kind == "binary":
        return [BinaryAccuracy()]
    if kind == "categorical" or (
        kind == "auto" and output_shape is not None and len(output_shape) == 1 and output_shape[0] > 1
    ):
        return [CategoricalAccuracy()]
    return []
