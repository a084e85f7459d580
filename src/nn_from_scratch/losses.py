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

    #: The accuracy a model trained with this loss reports (see :mod:`nn_from_scratch.metrics`).
    accuracy_kind = "auto"

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

    def per_sample(self) -> np.ndarray:
        """``l_n`` for each sample of the last ``forward``: the loss is ``mean_n l_n``."""
        return self._per_sample

    def weighted_forward(self, y_pred: np.ndarray, y_true: np.ndarray, sample_weight: Any) -> np.floating:
        """``L = sum_n w_n l_n / N``: Keras' ``sum_over_batch_size`` reduction of weighted samples.

        ``sample_weight`` is ``(N,)``, finite and ``>= 0``. Call :meth:`weighted_backward` after it.
        """
        value = self.forward(y_pred, y_true)
        per_sample = self.per_sample()
        w = np.asarray(sample_weight, dtype=per_sample.dtype)
        if w.shape != per_sample.shape:
            raise ValueError(f"{self.name}: expected sample weights of shape {per_sample.shape}, got {w.shape}")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError(f"{self.name}: sample weights must be finite and >= 0")
        self._sample_weight = w
        return type(value)(np.sum(w * per_sample) / len(w))

    def weighted_backward(self) -> np.ndarray:
        """``dL/dy_pred`` of :meth:`weighted_forward`: each sample's row of the gradient times ``w_n``."""
        grad = self.backward()
        return grad * self._sample_weight.reshape((-1,) + (1,) * (grad.ndim - 1))

    def get_config(self) -> dict[str, Any]:
        return {}

    def _check_pred(self, y_pred: Any, ndim: int | None = None) -> np.ndarray:
        y_pred = as_float(np.asarray(y_pred))
        if ndim is not None and y_pred.ndim != ndim:
            raise ValueError(f"{self.name}: expected predictions of shape (batch, classes), got {y_pred.shape}")
        return y_pred


def class_labels(y_true: Any, shape: tuple[int, int], who: str) -> np.ndarray | None:
    """Integer class labels ``(N,)`` (or ``(N, 1)``) as an ``intp`` vector, checked against the
    number of classes; ``None`` when ``y_true`` is not of that form (one-hot / soft ``(N, K)``)."""
    y_true = np.asarray(y_true)
    n, k = shape
    if not (y_true.shape == (n,) or y_true.shape == (n, 1) and k > 1):
        return None
    labels = y_true.reshape(n)
    if labels.dtype.kind not in "iu" and not np.all(labels == np.round(labels)):
        raise ValueError(f"{who}: integer class labels expected, got non-integer values")
    labels = labels.astype(np.intp)
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"{who}: class labels must lie in [0, {k - 1}], got range [{labels.min()}, {labels.max()}]")
    return labels


def one_hot_targets(y_true: Any, shape: tuple[int, int], dtype: np.dtype, who: str) -> np.ndarray:
    """Integer labels ``(N,)`` or one-hot / soft labels ``(N, K)`` -> a float ``(N, K)`` target."""
    labels = class_labels(y_true, shape, who)
    if labels is not None:
        target = np.zeros(shape, dtype=dtype)
        target[np.arange(shape[0]), labels] = 1
        return target
    y_true = np.asarray(y_true)
    if y_true.shape == shape:
        return y_true.astype(dtype, copy=False)
    n, k = shape
    raise ValueError(f"{who}: expected labels of shape ({n},) or one-hot ({n}, {k}), got {y_true.shape}")


class SoftMaxLoss(Loss):
    """Softmax cross-entropy on logits, fused; the value and gradient of ``torch.nn.functional.cross_entropy``.

    With ``z`` the logits ``(N, K)`` and ``log softmax(z) = z - max(z) - log sum exp(z - max(z))``
    (the row maximum subtracted first, so nothing overflows)::

        integer labels c (N,):     L = -(1/N) sum_n log softmax(z[n])_{c_n}
        soft labels t (N, K):      L = -(1/N) sum_n sum_k t[n,k] log softmax(z[n])_k
        dL/dz = (softmax(z) * sum_k t[n,k] - t) / N

    Soft labels need not sum to one (multi-hot, unnormalised): the gradient carries the row sum
    ``sum_k t[n,k]`` (1 for integer labels). With ``label_smoothing = a`` in ``[0, 1]``,
    ``t <- (1 - a) t + a / K`` (for integer labels too: torch's ``(1 - a) * L_label +
    a * mean_k(-log softmax(z)_k)`` is the same sum). Both as PyTorch (and Keras) do; torch
    also accepts a negative or NaN ``a``, which we refuse deliberately.

    Infinite logits and an overflowing logit spread follow torch too: with integer labels only
    the label's log-probability enters the loss, so a ``-inf`` logit elsewhere leaves it finite
    (its softmax and gradient are 0); a ``-inf`` logit *at* the label gives ``inf``; and with soft
    labels (or ``a > 0``) a ``-inf`` log-probability enters the sum (``0 * -inf`` is NaN, as in
    torch). A spread beyond the float range (``z = +-3e38`` in float32) saturates the
    log-probabilities at ``-inf`` and the gradient stays exact.
    """

    def __init__(self, n_input: Any = None, label_smoothing: float = 0.0, name: str | None = None) -> None:
        super().__init__(n_input, name)
        if not isinstance(label_smoothing, (int, float, np.integer, np.floating)) or not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"{self.name}: label_smoothing must be a number in [0, 1], got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)

    def forward(self, y_pred: np.ndarray, y_true: np.ndarray) -> np.floating:
        z = self._check_pred(y_pred, ndim=2)
        n, k = z.shape
        labels = class_labels(y_true, z.shape, self.name)
        a = self.label_smoothing
        # Overflow in z - max (a spread beyond the float range) correctly gives -inf; 0 * -inf
        # with soft labels is NaN as in torch. Neither is worth a warning.
        with np.errstate(over="ignore", invalid="ignore"):
            shifted = z - z.max(axis=1, keepdims=True)
            exp = np.exp(shifted)
            sum_exp = exp.sum(axis=1, keepdims=True)
            log_softmax = shifted - np.log(sum_exp)
            self._softmax = exp / sum_exp
            target = one_hot_targets(y_true if labels is None else labels, z.shape, z.dtype, self.name)
            # Row sums of the smoothed target, from the raw ones: (1 - a) * 1 + a is exactly 1,
            # so one-hot labels get exactly the gradient of integer labels.
            target_sum = None if labels is not None else target.sum(axis=1, keepdims=True) * (1 - a) + a
            if a:
                target = target * (1 - a) + a / k
            terms = target * log_softmax
            if labels is not None and not a and not np.isfinite(log_softmax).all():
                # Only the label's log-probability counts: a -inf elsewhere adds nothing
                # (torch's nll_loss gathers it), where 0 * -inf would be NaN.
                terms[target == 0] = 0
            # One sum for both kinds of labels: integer labels give exactly the value of their
            # one-hot form.
            loss = -np.sum(terms) / n
            per_sample = -np.sum(terms, axis=1)
            self._target_sum = target_sum  # None: every row sums to 1
        self._per_sample = per_sample
        self._target = target
        return z.dtype.type(loss)

    def backward(self) -> np.ndarray:
        scaled = self._softmax if self._target_sum is None else self._softmax * self._target_sum
        return (scaled - self._target) / self._softmax.shape[0]

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
        squared = self._diff * self._diff
        self._per_sample = squared.reshape(len(y), -1).mean(axis=1) if y.ndim else squared
        return np.mean(squared)

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

    accuracy_kind = "binary"

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
        self._per_sample = losses.reshape(len(z), -1).mean(axis=1) if z.ndim else losses
        return np.mean(losses)

    def backward(self) -> np.ndarray:
        return (self._sigmoid - self._target) / self._target.size
