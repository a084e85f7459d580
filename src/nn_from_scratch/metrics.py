"""Metrics computed in streaming form over batches: ``reset()``, ``update(y_pred, y_true)``, ``result()``.

``y_pred`` is what the model outputs: logits for classifiers (this library's losses take
logits), so a class is the arg-max of a row and a binary decision is ``logit > 0`` -- the same
decisions as Keras' metrics on probabilities with threshold 0.5. Each metric gives the exact
value over all the samples it has seen, whatever the batch sizes (AUC keeps every score for
that; scikit-learn's functions are the reference in the tests).

Metrics by name (``get``, ``compile(metrics=[...])``): ``"accuracy"`` / ``"acc"`` (its kind
from the loss, below), ``"sparse_categorical_accuracy"``, ``"categorical_accuracy"``,
``"binary_accuracy"``, ``"top_k_accuracy"`` (k=5), ``"precision"``, ``"recall"``, ``"f1"``
(macro averages), ``"auc"``, ``"mae"``, ``"mse"``.

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

import copy
from typing import Any, Sequence

import numpy as np


def class_labels(y_true: np.ndarray, n: int) -> np.ndarray:
    """Integer labels from ``(N,)`` / ``(N, 1)`` labels or one-hot ``(N, K)`` rows.

    Args:
        y_true: labels ``(N,)`` / ``(N, 1)``, or one-hot ``(N, K)`` rows.
        n: the number of samples ``N``.

    Returns:
        An ``(N,)`` integer array.

    Example:
        >>> class_labels(np.array([[0, 1], [1, 0]]), 2)
        array([1, 0])
    """
    y_true = np.asarray(y_true)
    if y_true.ndim == 2 and y_true.shape[1] > 1:
        return y_true.argmax(axis=1)
    return y_true.reshape(n).astype(np.int64)


def predicted_classes(y_pred: np.ndarray) -> np.ndarray:
    """Arg-max of each row of ``(N, K)`` outputs, or ``logit > 0`` for one output ``(N,)``/``(N, 1)``.

    Args:
        y_pred: the model's outputs, ``(N, K)`` scores or ``(N,)`` / ``(N, 1)`` logits.

    Returns:
        An ``(N,)`` integer array of predicted classes.

    Example:
        >>> predicted_classes(np.array([[0.1, 0.9], [0.8, 0.2]]))
        array([1, 0])
        >>> predicted_classes(np.array([[1.5], [-0.3]]))
        array([1, 0])
    """
    y_pred = np.asarray(y_pred)
    if y_pred.ndim == 2 and y_pred.shape[1] > 1:
        return y_pred.argmax(axis=1)
    return (y_pred.reshape(len(y_pred)) > 0).astype(np.int64)


class Metric:
    """A running value over batches. ``name`` is the key in logs and in ``History``.

    Subclasses set ``name`` and implement ``reset()``, ``update(y_pred, y_true)`` (one batch:
    ``y_pred`` the model's ``(N, ...)`` outputs, ``y_true`` the batch's labels) and ``result()`` (a float).

    Example:
        >>> class MeanPrediction(Metric):
        ...     name = "mean_prediction"
        ...     def __init__(self):
        ...         self.reset()
        ...     def reset(self):
        ...         self.total, self.count = 0.0, 0
        ...     def update(self, y_pred, y_true):
        ...         self.total += float(np.sum(y_pred))
        ...         self.count += np.size(y_pred)
        ...     def result(self):
        ...         return self.total / self.count if self.count else 0.0
        >>> m = MeanPrediction(); m.update(np.array([[1.0], [3.0]]), np.array([0, 1])); m.result()
        2.0
    """

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
    """Share of outputs with ``(y > threshold) == (target > 0.5)``: Keras' ``binary_accuracy``
    on logits (``threshold=0``) or on probabilities (``threshold=0.5``, what a model trained
    with ``from_logits=False`` reports).

    Args:
        threshold: 0 for logits, 0.5 for probabilities.

    Example:
        >>> m = BinaryAccuracy(); m.update(np.array([[2.0], [-1.0]]), np.array([1, 1])); m.result()
        0.5
    """

    def __init__(self, threshold: float = 0.0) -> None:
        # 0 on logits; 0.5 for a model that outputs probabilities (a loss with from_logits=False).
        self.threshold = float(threshold)
        super().__init__()

    def count(self, y_pred: np.ndarray, y_true: np.ndarray) -> tuple[int, int]:
        if y_true.shape != y_pred.shape:
            y_true = y_true.reshape(y_pred.shape)
        return int(np.count_nonzero((y_pred > self.threshold) == (y_true > 0.5))), y_pred.size


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


class TopKAccuracy(_CountingAccuracy):
    """Share of samples whose true class is among the ``k`` highest outputs (labels ``(N,)`` or one-hot).

    Ties at the k-th place count as in Keras' ``in_top_k``: the true class is in the top k when
    fewer than ``k`` outputs are strictly larger than its output.

    Args:
        k: how many of the highest outputs count.

    Example:
        >>> m = TopKAccuracy(k=2); m.update(np.array([[0.1, 0.5, 0.4]]), np.array([2])); m.result()
        1.0
    """

    def __init__(self, k: int = 5) -> None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"TopKAccuracy: k must be a positive int, got {k!r}")
        self.k = int(k)
        self.name = f"top_{self.k}_accuracy"
        super().__init__()

    def count(self, y_pred: np.ndarray, y_true: np.ndarray) -> tuple[int, int]:
        labels = class_labels(y_true, len(y_pred))
        true_scores = y_pred[np.arange(len(y_pred)), labels]
        larger = np.count_nonzero(y_pred > true_scores[:, None], axis=1)
        return int(np.count_nonzero(larger < self.k)), len(y_pred)


class ConfusionMatrixMetric(Metric):
    """Base of the metrics read off a running confusion matrix (rows: true class, columns: predicted).

    ``self.matrix`` is the ``(K, K)`` count so far; it grows when a batch shows more classes.

    Args:
        num_classes: ``K`` if known in advance; ``None`` takes it from the outputs ``(N, K)``
            (2 for a single logit output).

    Example:
        >>> m = ConfusionMatrixMetric()
        >>> m.update(np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]), np.array([1, 1, 0]))
        >>> m.matrix
        array([[0, 1],
               [1, 1]])
    """

    def __init__(self, num_classes: int | None = None) -> None:
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        self.matrix = np.zeros((self.num_classes or 0,) * 2, dtype=np.int64)

    def update(self, y_pred: np.ndarray, y_true: np.ndarray) -> None:
        y_pred = np.asarray(y_pred)
        k = y_pred.shape[1] if y_pred.ndim == 2 and y_pred.shape[1] > 1 else 2
        k = max(k, self.num_classes or 0)
        batch = confusion_matrix(class_labels(y_true, len(y_pred)), predicted_classes(y_pred), num_classes=k)
        if self.matrix.shape[0] < k:
            grown = np.zeros((k, k), dtype=np.int64)
            grown[: self.matrix.shape[0], : self.matrix.shape[0]] = self.matrix
            self.matrix = grown
        self.matrix += batch


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den == 0`` (scikit-learn's ``zero_division=0``)."""
    out = np.zeros(num.shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def precision_recall_f1(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall and F1 from a confusion matrix (0 where undefined, as scikit-learn).

    Args:
        matrix: a ``(K, K)`` confusion matrix, rows the true class and columns the predicted one.

    Returns:
        ``(precision, recall, f1)``, three ``(K,)`` float arrays.

    Example:
        >>> precision, recall, f1 = precision_recall_f1(np.array([[1, 1], [0, 2]]))
        >>> precision.round(4), recall, f1.round(4)
        (array([1.    , 0.6667]), array([0.5, 1. ]), array([0.6667, 0.8   ]))
    """
    tp = np.diag(matrix).astype(np.float64)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    precision, recall = _safe_divide(tp, predicted), _safe_divide(tp, actual)
    f1 = _safe_divide(2 * tp, predicted + actual)
    return precision, recall, f1


class _AveragedScore(ConfusionMatrixMetric):
    """Precision / recall / F1, macro-averaged over classes (``average="macro"``) or per class (``None``).

    A binary model (one logit output) reports the positive class's score for ``"binary"``
    (the default there, as scikit-learn's ``average="binary"``).
    """

    which = 0

    def __init__(self, average: str | None = "macro", num_classes: int | None = None) -> None:
        if average not in ("macro", "binary", None):
            raise ValueError(f"{type(self).__name__}: average must be 'macro', 'binary' or None, got {average!r}")
        self.average = average
        super().__init__(num_classes)

    def result(self) -> Any:
        scores = precision_recall_f1(self.matrix)[self.which]
        if self.average is None:
            return scores
        if self.average == "binary":
            return float(scores[1]) if len(scores) > 1 else 0.0
        present = self.matrix.shape[0]
        return float(scores.mean()) if present else 0.0


class Precision(_AveragedScore):
    """Precision ``tp / (tp + fp)`` per class, macro-averaged by default (scikit-learn's ``precision_score``).

    Args:
        average: ``"macro"`` (mean over classes), ``"binary"`` (the positive class), or ``None`` (per class).
        num_classes: the number of classes, when some may be absent from the data.

    Example:
        >>> m = Precision(); m.update(np.array([[2.0, 1.0], [0.0, 3.0]]), np.array([0, 0])); m.result()
        0.5
    """

    name = "precision"
    which = 0


class Recall(_AveragedScore):
    """Recall ``tp / (tp + fn)`` per class, macro-averaged by default (scikit-learn's ``recall_score``).

    Args:
        average: ``"macro"``, ``"binary"`` or ``None`` (per class).
        num_classes: the number of classes, when some may be absent from the data.

    Example:
        >>> m = Recall(); m.update(np.array([[2.0, 1.0], [0.0, 3.0]]), np.array([0, 0])); m.result()
        0.25
    """

    name = "recall"
    which = 1


class F1Score(_AveragedScore):
    """F1 ``2 tp / (2 tp + fp + fn)`` per class, macro-averaged by default (scikit-learn's ``f1_score``).

    Args:
        average: ``"macro"``, ``"binary"`` or ``None`` (per class).
        num_classes: the number of classes, when some may be absent from the data.

    Example:
        >>> m = F1Score(); m.update(np.array([[2.0, 1.0], [0.0, 3.0]]), np.array([0, 0])); round(m.result(), 4)
        0.3333
    """

    name = "f1"
    which = 2


class AUC(Metric):
    """Area under the ROC curve of a binary classifier, exact (scikit-learn's ``roc_auc_score``).

    Scores are the outputs (logits or probabilities: any monotone score gives the same AUC);
    targets are 0/1. Tied scores count one half, as the trapezoidal ROC does. Every score is kept
    until ``reset`` so the value is exact over all batches.

    Example:
        >>> m = AUC(); m.update(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])); m.result()
        0.75
    """

    name = "auc"

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._scores: list[np.ndarray] = []
        self._targets: list[np.ndarray] = []

    def update(self, y_pred: np.ndarray, y_true: np.ndarray) -> None:
        y_pred = np.asarray(y_pred, dtype=np.float64)
        if y_pred.ndim == 2 and y_pred.shape[1] == 2:
            y_pred = y_pred[:, 1] - y_pred[:, 0]  # two logits: the positive class's margin
        self._scores.append(y_pred.reshape(-1))
        self._targets.append(np.asarray(y_true).reshape(-1) > 0.5)

    def result(self) -> float:
        if not self._scores:
            return 0.0
        scores, targets = np.concatenate(self._scores), np.concatenate(self._targets)
        positives, negatives = int(targets.sum()), int((~targets).sum())
        if positives == 0 or negatives == 0:
            return float("nan")  # undefined with one class (scikit-learn raises)
        # Mann-Whitney U with mid-ranks for ties.
        order = np.argsort(scores, kind="mergesort")
        sorted_scores = scores[order]
        ranks = np.empty(len(scores), dtype=np.float64)
        starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
        ends = np.r_[starts[1:], len(scores)]
        for start, end in zip(starts, ends):
            ranks[order[start:end]] = (start + end + 1) / 2.0
        u = ranks[targets].sum() - positives * (positives + 1) / 2.0
        return float(u / (positives * negatives))


class _MeanError(Metric):
    """Mean of an element-wise error over every element seen."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.total, self.count = 0.0, 0

    def update(self, y_pred: np.ndarray, y_true: np.ndarray) -> None:
        y_pred = np.asarray(y_pred, dtype=np.float64)
        diff = y_pred - np.asarray(y_true, dtype=np.float64).reshape(y_pred.shape)
        self.total += float(self.error(diff).sum())
        self.count += diff.size

    def result(self) -> float:
        return self.total / self.count if self.count else 0.0


class MeanAbsoluteError(_MeanError):
    """``mean |y_pred - y_true|`` (scikit-learn's ``mean_absolute_error``, uniform average).

    Example:
        >>> m = MeanAbsoluteError(); m.update(np.array([1.0, 2.0]), np.array([0.0, 4.0])); m.result()
        1.5
    """

    name = "mae"

    @staticmethod
    def error(diff: np.ndarray) -> np.ndarray:
        return np.abs(diff)


class MeanSquaredError(_MeanError):
    """``mean (y_pred - y_true)^2`` (scikit-learn's ``mean_squared_error``).

    Example:
        >>> m = MeanSquaredError(); m.update(np.array([1.0, 2.0]), np.array([0.0, 4.0])); m.result()
        2.5
    """

    name = "mse"

    @staticmethod
    def error(diff: np.ndarray) -> np.ndarray:
        return diff * diff


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int | None = None) -> np.ndarray:
    """``C[i, j]`` = number of samples of true class ``i`` predicted as ``j`` (scikit-learn's layout).

    Args:
        y_true: integer labels ``(N,)`` (or one-hot ``(N, K)``).
        y_pred: integer predictions ``(N,)``, or model outputs ``(N, K)`` (their arg-max is taken).
        num_classes: the size of the matrix; by default one more than the largest label seen.

    Example:
        >>> confusion_matrix([0, 1, 1], [0, 0, 1])
        array([[1, 0],
               [1, 1]])
    """
    y_pred = np.asarray(y_pred)
    if y_pred.ndim == 2:
        y_pred = predicted_classes(y_pred)
    y_true = class_labels(np.asarray(y_true), len(y_pred))
    y_pred = y_pred.astype(np.int64).reshape(-1)
    if len(y_true) != len(y_pred):
        raise ValueError(f"confusion_matrix: {len(y_true)} labels but {len(y_pred)} predictions")
    if len(y_true) and min(y_true.min(), y_pred.min()) < 0:
        raise ValueError("confusion_matrix: labels must be non-negative integers")
    k = int(num_classes) if num_classes is not None else int(max(y_true.max(initial=-1), y_pred.max(initial=-1)) + 1)
    if len(y_true) and max(y_true.max(), y_pred.max()) >= k:
        raise ValueError(f"confusion_matrix: a label is >= num_classes={k}")
    return np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)


def classification_report(y_true: Any, y_pred: Any, class_names: Sequence[str] | None = None, digits: int = 4) -> str:
    """Per-class precision, recall, F1 and support, then accuracy and macro averages, as text
    (the layout of scikit-learn's ``classification_report``).

    Args:
        y_true: true classes ``(N,)`` (or one-hot ``(N, K)``).
        y_pred: predicted classes ``(N,)`` (or scores ``(N, K)``, argmax taken).
        class_names: a name per class for the rows (default: the class numbers).
        digits: decimals of the scores.

    Returns:
        The table as one string.

    Example:
        >>> print(classification_report([0, 1, 1], [0, 0, 1]))  # doctest: +SKIP
    """
    matrix = confusion_matrix(y_true, y_pred)
    precision, recall, f1 = precision_recall_f1(matrix)
    support = matrix.sum(axis=1)
    names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(len(matrix))]
    if len(names) != len(matrix):
        raise ValueError(f"classification_report: {len(names)} class names for {len(matrix)} classes")
    width = max(12, *(len(n) for n in names))
    head = f"{'':>{width}} {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}"
    lines = [head, ""]
    for i, name in enumerate(names):
        lines.append(f"{name:>{width}} {precision[i]:>9.{digits}f} {recall[i]:>9.{digits}f} {f1[i]:>9.{digits}f} {support[i]:>9d}")
    total = int(support.sum())
    accuracy = np.trace(matrix) / total if total else 0.0
    lines += ["", f"{'accuracy':>{width}} {'':>9} {'':>9} {accuracy:>9.{digits}f} {total:>9d}",
              f"{'macro avg':>{width}} {precision.mean():>9.{digits}f} {recall.mean():>9.{digits}f} "
              f"{f1.mean():>9.{digits}f} {total:>9d}"]
    return "\n".join(lines)


_BY_NAME: dict[str, Any] = {
    "sparse_categorical_accuracy": CategoricalAccuracy,
    "categorical_accuracy": CategoricalAccuracy,
    "binary_accuracy": BinaryAccuracy,
    "top_k_accuracy": TopKAccuracy,
    "top_k_categorical_accuracy": TopKAccuracy,
    "sparse_top_k_categorical_accuracy": TopKAccuracy,
    "precision": Precision,
    "recall": Recall,
    "f1": F1Score,
    "f1_score": F1Score,
    "auc": AUC,
    "mae": MeanAbsoluteError,
    "mean_absolute_error": MeanAbsoluteError,
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
}


def get(metric: Any, loss: Any = None, output_shape: Sequence[int] | None = None) -> Metric:
    """A fresh metric from a name (see the module docstring) or a :class:`Metric` instance.

    ``"accuracy"`` / ``"acc"`` resolve to the kind the loss implies (:func:`default_metrics`).

    Args:
        metric: a metric name such as ``"accuracy"``, ``"precision"``, ``"mae"``, or a :class:`Metric`
            (a reset copy is returned).
        loss: the model's loss, which decides what ``"accuracy"`` means.
        output_shape: the model's per-sample output shape, e.g. ``(10,)``.

    Returns:
        A new :class:`Metric`, logged under the name asked for.

    Example:
        >>> from nn_from_scratch.losses import SoftMaxLoss
        >>> type(get("accuracy", loss=SoftMaxLoss(), output_shape=(10,))).__name__
        'CategoricalAccuracy'
    """
    if isinstance(metric, Metric):
        fresh = copy.deepcopy(metric)  # fit's and evaluate's passes must not share running values
        fresh.reset()
        return fresh
    if not isinstance(metric, str):
        raise TypeError(f"metrics: expected a metric name or a Metric, got {type(metric).__name__}")
    key = metric.lower()
    if key in ("accuracy", "acc"):
        found = default_metrics(loss, output_shape) or [CategoricalAccuracy()]
        made = found[0]
    elif key == "binary_accuracy":
        made = _binary_accuracy(loss)
    elif key in _BY_NAME:
        made = _BY_NAME[key]()
    else:
        raise ValueError(f"metrics: unknown metric {metric!r}; known: accuracy, {', '.join(sorted(_BY_NAME))}")
    made.name = key  # logged under the name asked for, as Keras does
    return made


def default_metrics(loss: Any, output_shape: Sequence[int] | None) -> list[Metric]:
    """The metrics a model with this loss and per-sample output shape reports (see the module docstring).

    Args:
        loss: the model's loss (its ``accuracy_kind`` and ``from_logits`` decide).
        output_shape: the model's per-sample output shape, e.g. ``(10,)``, or ``None`` if unknown.

    Returns:
        A list of fresh metrics: one accuracy, or none (e.g. for a regression loss).

    Example:
        >>> from nn_from_scratch.losses import BinaryCrossEntropy
        >>> [(type(m).__name__, m.threshold) for m in default_metrics(BinaryCrossEntropy(from_logits=False), (1,))]
        [('BinaryAccuracy', 0.5)]
    """
    kind = getattr(loss, "accuracy_kind", "auto")
    if kind == "binary":
        return [_binary_accuracy(loss)]
    if kind == "categorical" or (
        kind == "auto" and output_shape is not None and len(output_shape) == 1 and output_shape[0] > 1
    ):
        return [CategoricalAccuracy()]
    return []


def _binary_accuracy(loss: Any) -> BinaryAccuracy:
    """Threshold 0 on logits, 0.5 on the probabilities of a loss with ``from_logits=False``."""
    return BinaryAccuracy(0.5 if getattr(loss, "from_logits", True) is False else 0.0)
