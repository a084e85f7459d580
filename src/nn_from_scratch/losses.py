"""Loss functions: ``forward(y_pred, y_true) -> scalar`` and ``backward() -> dL/dy_pred``.

Every loss is a mean over the batch, so its gradient carries a ``1 / N``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from .interfaces import as_float


class Loss(ABC):
    """Base of the losses. The shape argument of the seed's constructors is accepted and ignored."""

    def __init__(self, n_input: Any = None, name: str | None = None) -> None:
        self.name = name or type(self).__name__

    @abstractmethod
    def forward(self, y_pred: np.ndarray, y_true: np.ndarray) -> np.floating:
        """The loss of a batch; remembers what ``backward`` needs."""

    @abstractmethod
    def backward(self) -> np.ndarray:
        """``dL/dy_pred`` for the last ``forward``."""

    def __call__(self, y_pred: np.ndarray, y_true: np.ndarray) -> np.floating:
        return self.forward(y_pred, y_true)

    def get_config(self) -> dict[str, Any]:
        return {}

    def _check_pred(self, y_pred: Any, ndim: int | None = None) -> np.ndarray:
        y_pred = as_float(np.asarray(y_pred))
        if ndim is not None and y_pred.ndim != ndim:
            raise ValueError(f"{self.name}: expected predictions of shape (batch, classes), got {y_pred.shape}")
        return y_pred


def one_hot_targets(y_true: Any, shape: tuple[int, int], dtype: np.dtype, who: str) -> np.ndarray:
    """Integer labels ``(N,)`` or one-hot / soft labels ``(N, K)`` -> a float ``(N, K)`` target."""
    y_true = np.asarray(y_true)
    n, k = shape
    if y_true.shape == (n,) or y_true.shape == (n, 1) and k > 1:
        labels = y_true.reshape(n)
        if labels.dtype.kind not in "iu" and not np.all(labels == np.round(labels)):
            raise ValueError(f"{who}: integer class labels expected, got non-integer values")
        labels = labels.astype(np.intp)
        if labels.size and (labels.min() < 0 or labels.max() >= k):
            raise ValueError(f"{who}: class labels must lie in [0, {k - 1}], got range [{labels.min()}, {labels.max()}]")
        target = np.zeros(shape, dtype=dtype)
        target[np.arange(n), labels] = 1
        return target
    if y_true.shape == (n, k):
        return y_true.astype(dtype, copy=False)
    raise ValueError(f"{who}: expected labels of shape ({n},) or one-hot ({n}, {k}), got {y_true.shape}")


class SoftMaxLoss(Loss):
    """Softmax cross-entropy on logits, fused.

    ``L = -(1/N) sum_n sum_k t[n,k] log softmax(z[n])_k`` with ``log softmax(z) = z - logsumexp(z)``
    (computed after subtracting the row maximum, so it never overflows), and
    ``dL/dz = (softmax(z) - t) / N``. Labels ``t`` are integer classes ``(N,)`` or one-hot /
    soft ``(N, K)``. With ``label_smoothing = a``, ``t <- (1 - a) t + a / K``, as in PyTorch and Keras.
    """

    def __init__(self, n_input: Any = None, label_smoothing: float = 0.0, name: str | None = None) -> None:
        super().__init__(n_input, name)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"{self.name}: label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def forward(self, y_pred: np.ndarray, y_true: np.ndarray) -> np.floating:
        z = self._check_pred(y_pred, ndim=2)
        target = one_hot_targets(y_true, z.shape, z.dtype, self.name)
        if self.label_smoothing:
            target = target * (1 - self.label_smoothing) + self.label_smoothing / z.shape[1]
        shifted = z - z.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        sum_exp = exp.sum(axis=1, keepdims=True)
        log_softmax = shifted - np.log(sum_exp)
        self._softmax = exp / sum_exp
        self._target = target
        return -np.sum(target * log_softmax) / z.shape[0]

    def backward(self) -> np.ndarray:
        return (self._softmax - self._target) / self._softmax.shape[0]

    def get_config(self) -> dict[str, Any]:
        return {"label_smoothing": self.label_smoothing}


class MSELoss(Loss):
    """Mean squared error over all elements: ``L = mean((y - t)^2)``, ``dL/dy = 2 (y - t) / y.size``."""

    def forward(self, y_pred: np.ndarray, y_true: np.ndarray) -> np.floating:
        y = self._check_pred(y_pred)
        t = np.asarray(y_true, dtype=y.dtype)
        if t.shape != y.shape:
            raise ValueError(f"{self.name}: expected targets of shape {y.shape}, got {t.shape}")
        self._diff = y - t
        return np.mean(self._diff * self._diff)

    def backward(self) -> np.ndarray:
        return 2 * self._diff / self._diff.size


class BinaryCrossEntropy(Loss):
    """Binary cross-entropy on logits, fused with the sigmoid, mean over all elements.

    As ``torch.nn.functional.binary_cross_entropy_with_logits`` (reduction ``"mean"``): with
    ``z`` the logits and ``t`` in ``[0, 1]`` the targets (hard or soft), ``s = sigmoid(z)``::

        L     = mean(-t log s - (1 - t) log(1 - s)) = mean(softplus(z) - t z)
        dL/dz = (s - t) / z.size

    ``softplus(z) = max(z, 0) + log1p(exp(-|z|))`` never overflows and keeps full precision
    for large ``|z|``. Targets have the shape of ``z``; for ``z`` of shape ``(N, 1)``, labels
    of shape ``(N,)`` are accepted too.
    """

    def forward(self, y_pred: np.ndarray, y_true: np.ndarray) -> np.floating:
        z = self._check_pred(y_pred)
        t = np.asarray(y_true, dtype=z.dtype)
        if t.shape != z.shape:
            if z.ndim == 2 and z.shape[1] == 1 and t.shape == z.shape[:1]:
                t = t.reshape(z.shape)
            else:
                raise ValueError(f"{self.name}: expected targets of shape {z.shape}, got {t.shape}")
        exp_neg_abs = np.exp(-np.abs(z))
        losses = np.maximum(z, 0) - t * z + np.log1p(exp_neg_abs)
        # sigmoid from the same exp: 1 / (1 + e^-z) for z >= 0, e^z / (1 + e^z) for z < 0.
        self._sigmoid = np.where(z >= 0, 1, exp_neg_abs) / (1 + exp_neg_abs)
        self._target = t
        return np.mean(losses)

    def backward(self) -> np.ndarray:
        return (self._sigmoid - self._target) / self._target.size
