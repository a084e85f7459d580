"""Loss functions: ``forward(y_pred, y_true) -> scalar`` and ``backward() -> dL/dy_pred``.

Every loss is a mean over the batch, so its gradient carries a ``1 / N``.

The cross-entropies take logits by default (``from_logits=True``, torch's convention: the
softmax or sigmoid is fused into the loss). ``from_logits=False`` makes them take
probabilities, as Keras' losses do by default: a model that ends with ``SoftMax`` /
``Sigmoid`` (``activation="softmax"``). :func:`get` maps Keras' names to losses *with Keras'
default*, ``from_logits=False``: ``compile(loss="sparse_categorical_crossentropy")`` is
``SoftMaxLoss(from_logits=False)`` and expects a softmax at the end of the model. A final
softmax/sigmoid paired with a loss on logits, or a loss on probabilities on a model that ends
in logits, is refused when ``fit`` / ``evaluate`` start (:func:`check_model_output`), never
silently trained.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from .interfaces import as_float

#: Keras' ``backend.epsilon()``: probabilities are clipped to ``[EPSILON, 1 - EPSILON]``.
EPSILON = 1e-7


class Loss(ABC):
    """Base of the losses. The shape argument of the seed's constructors is accepted and ignored.

    Subclasses implement ``forward(y_pred, y_true)`` (the batch's mean loss, remembering what
    ``backward`` needs, and ``self._per_sample``) and ``backward()`` (``dL/dy_pred``, the shape of ``y_pred``).

    Args:
        n_input: ignored (the seed's shape argument).
        name: shown in messages; defaults to the class name.

    Example:
        >>> class MeanAbsoluteError(Loss):
        ...     def forward(self, y_pred, y_true):
        ...         self._diff = y_pred - y_true
        ...         self._per_sample = np.abs(self._diff).mean(axis=1)
        ...         return self._per_sample.mean()
        ...     def backward(self):
        ...         return np.sign(self._diff) / self._diff.size
        >>> float(MeanAbsoluteError()(np.array([[1.0, -1.0]]), np.array([[0.0, 0.0]])))
        1.0
    """

    #: The accuracy a model trained with this loss reports (see :mod:`nn_from_scratch.metrics`).
    accuracy_kind = "auto"
    #: What the model's output must be for this loss: ``True`` logits, ``False`` probabilities,
    #: ``None`` anything (regression losses). See :func:`check_model_output`.
    from_logits: bool | None = None
    #: The activation a model ends with when it outputs this loss's probabilities.
    probability_activation: str | None = None

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
    number of classes; ``None`` when ``y_true`` is not of that form (one-hot / soft ``(N, K)``).

    Args:
        y_true: the labels: ``(N,)`` or ``(N, 1)`` integers, or one-hot / soft ``(N, K)``.
        shape: ``(N, K)``, the shape of the predictions.
        who: the name put in error messages.

    Returns:
        The labels as an ``(N,)`` ``intp`` array, or ``None`` for one-hot / soft labels.

    Raises:
        ValueError: non-integer labels, or labels outside ``[0, K - 1]``.

    Example:
        >>> class_labels(np.array([[2], [0]]), (2, 3), "MyLoss")
        array([2, 0])
        >>> class_labels(np.eye(2), (2, 2), "MyLoss") is None
        True
    """
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
    """Integer labels ``(N,)`` or one-hot / soft labels ``(N, K)`` -> a float ``(N, K)`` target.

    Args:
        y_true: the labels: ``(N,)`` integers or one-hot / soft ``(N, K)``.
        shape: ``(N, K)``, the shape of the predictions.
        dtype: the dtype of the result.
        who: the name put in error messages.

    Returns:
        The ``(N, K)`` target array.

    Example:
        >>> one_hot_targets([2, 0], (2, 3), np.float32, "MyLoss")
        array([[0., 0., 1.],
               [1., 0., 0.]], dtype=float32)
    """
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

    ``from_logits=False``: ``y_pred`` holds probabilities ``p`` (a final ``SoftMax``), and the
    loss is Keras' ``categorical_crossentropy`` on them, exactly as its torch backend computes
    it: rows renormalised, then clipped to ``[eps, 1 - eps]`` with ``eps = 1e-7``
    (:data:`EPSILON`), the gradient flowing through both (zero where a value is clipped)::

        q = clip(p / sum_k p[n,k], eps, 1 - eps);   L = -(1/N) sum_n sum_k t[n,k] log q[n,k]

    Less accurate than logits (a probability below ``eps`` loses its gradient), which is why
    ``from_logits=True`` is the default here.

    Args:
        n_input: ignored (the seed's shape argument).
        label_smoothing: ``a`` in ``[0, 1]``.
        from_logits: True (default): ``y_pred`` are logits; False: probabilities.
        name: shown in messages.

    Example:
        >>> float(SoftMaxLoss()(np.zeros((2, 4)), np.array([0, 3])))     # log 4
        1.3862943611198906
        >>> float(SoftMaxLoss(from_logits=False)(np.full((2, 4), 0.25), np.array([0, 3])))
        1.3862943611198906
    """

    probability_activation = "softmax"

    def __init__(self, n_input: Any = None, label_smoothing: float = 0.0, name: str | None = None,
                 from_logits: bool = True) -> None:
        super().__init__(n_input, name)
        if not isinstance(label_smoothing, (int, float, np.integer, np.floating)) or not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"{self.name}: label_smoothing must be a number in [0, 1], got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)
        self.from_logits = _check_flag(from_logits, "from_logits", self.name)

    def forward(self, y_pred: np.ndarray, y_true: np.ndarray) -> np.floating:
        if not self.from_logits:
            return self._forward_probabilities(y_pred, y_true)
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

    def _forward_probabilities(self, y_pred: np.ndarray, y_true: np.ndarray) -> np.floating:
        p = self._check_pred(y_pred, ndim=2)
        n, k = p.shape
        labels = class_labels(y_true, p.shape, self.name)
        target = one_hot_targets(y_true if labels is None else labels, p.shape, p.dtype, self.name)
        if self.label_smoothing:
            target = target * (1 - self.label_smoothing) + self.label_smoothing / k
        row_sum = p.sum(axis=1, keepdims=True)
        q = p / row_sum
        eps = p.dtype.type(EPSILON)
        inside = (q >= eps) & (q <= 1 - eps)  # torch.clamp passes the gradient where min <= q <= max
        q = np.clip(q, eps, 1 - eps)
        per_sample = -np.sum(target * np.log(q), axis=1)
        self._prob_cache = (target, q, inside, row_sum)
        self._per_sample = per_sample
        return p.dtype.type(np.sum(per_sample) / n)

    def backward(self) -> np.ndarray:
        if not self.from_logits:
            target, q, inside, row_sum = self._prob_cache
            # dL/dq = -t / (N q), zero where clipped; through q = p / sum(p):
            # dL/dp_j = (g_j - sum_k g_k q_k) / sum(p).
            # (q is clipped only where g is 0, so sum_k g_k q_k is the same with the raw q.)
            g = np.where(inside, -target / q, 0) / len(q)
            return (g - np.sum(g * q, axis=1, keepdims=True)) / row_sum
        scaled = self._softmax if self._target_sum is None else self._softmax * self._target_sum
        return (scaled - self._target) / self._softmax.shape[0]

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"label_smoothing": self.label_smoothing}
        if not self.from_logits:
            config["from_logits"] = False  # only when set: files of logit models stay as they were
        return config


class MSELoss(Loss):
    """Mean squared error over all elements: ``L = mean((y - t)^2)``, ``dL/dy = 2 (y - t) / y.size``.

    Shapes: predictions ``y`` and targets ``t`` of the same shape ``(N, ...)``; ``L`` is a scalar.

    Args:
        n_input: ignored (the seed's shape argument).
        name: shown in messages.

    Example:
        >>> float(MSELoss()(np.array([[1.0, 2.0]]), np.array([[0.0, 0.0]])))
        2.5
    """

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

    ``from_logits=False``: ``y_pred`` holds probabilities ``p`` (a final ``Sigmoid``), and the
    loss is Keras' ``binary_crossentropy`` as its torch backend computes it, with
    ``q = clip(p, eps, 1 - eps)``, ``eps = 1e-7``::

        L = mean(-t log q - (1 - t) log(1 - q)),   dL/dp = (q - t) / (q (1 - q)) / p.size  (0 where clipped)

    Args:
        n_input: ignored (the seed's shape argument).
        name: shown in messages.
        from_logits: True (default): ``y_pred`` are logits; False: probabilities.

    Example:
        >>> float(BinaryCrossEntropy()(np.zeros((2, 1)), np.array([0, 1])))   # log 2
        0.6931471805599453
    """

    accuracy_kind = "binary"
    probability_activation = "sigmoid"

    def __init__(self, n_input: Any = None, name: str | None = None, from_logits: bool = True) -> None:
        super().__init__(n_input, name)
        self.from_logits = _check_flag(from_logits, "from_logits", self.name)

    def get_config(self) -> dict[str, Any]:
        return {} if self.from_logits else {"from_logits": False}

    def forward(self, y_pred: np.ndarray, y_true: np.ndarray) -> np.floating:
        if not self.from_logits:
            p = self._check_pred(y_pred)
            t = self._targets(p, y_true)
            eps = p.dtype.type(EPSILON)
            inside = (p >= eps) & (p <= 1 - eps)
            q = np.clip(p, eps, 1 - eps)
            losses = -(t * np.log(q) + (1 - t) * np.log(1 - q))
            self._prob_cache = (t, q, inside)
            self._per_sample = losses.reshape(len(p), -1).mean(axis=1) if p.ndim else losses
            return np.mean(losses)
        z = self._check_pred(y_pred)
        t = self._targets(z, y_true)
        exp_neg_abs = np.exp(-np.abs(z))
        losses = np.maximum(z, 0) - t * z + np.log1p(exp_neg_abs)
        # sigmoid from the same exp: 1 / (1 + e^-z) for z >= 0, e^z / (1 + e^z) for z < 0.
        self._sigmoid = np.where(z >= 0, 1, exp_neg_abs) / (1 + exp_neg_abs)
        self._target = t
        self._per_sample = losses.reshape(len(z), -1).mean(axis=1) if z.ndim else losses
        return np.mean(losses)

    def _targets(self, z: np.ndarray, y_true: Any) -> np.ndarray:
        t = np.asarray(y_true, dtype=z.dtype)
        if t.shape != z.shape:
            if z.ndim == 2 and z.shape[1] == 1 and t.shape == z.shape[:1]:
                t = t.reshape(z.shape)
            else:
                raise ValueError(f"{self.name}: expected targets of shape {z.shape}, got {t.shape}")
        return t

    def backward(self) -> np.ndarray:
        if not self.from_logits:
            t, q, inside = self._prob_cache
            return np.where(inside, (q - t) / (q * (1 - q)), 0) / q.size
        return (self._sigmoid - self._target) / self._target.size


def _check_flag(value: Any, what: str, who: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{who}: {what} must be True or False, got {value!r}")
    return bool(value)


# -- Keras' names ------------------------------------------------------------------------------
def SparseCategoricalCrossentropy(from_logits: bool = False, label_smoothing: float = 0.0) -> SoftMaxLoss:
    """Keras' ``SparseCategoricalCrossentropy``: :class:`SoftMaxLoss` (integer labels), with
    Keras' default ``from_logits=False`` (the model ends with a softmax).

    Args:
        from_logits: ``True`` if the model outputs logits ``(N, K)``; ``False`` (default) for probabilities.
        label_smoothing: ``a`` in ``[0, 1]`` (see :class:`SoftMaxLoss`).

    Example:
        >>> loss = SparseCategoricalCrossentropy(from_logits=True)
        >>> float(loss(np.zeros((2, 4)), np.array([0, 3])))    # log 4
        1.3862943611198906
    """
    return SoftMaxLoss(label_smoothing=label_smoothing, from_logits=from_logits)


def CategoricalCrossentropy(from_logits: bool = False, label_smoothing: float = 0.0) -> SoftMaxLoss:
    """Keras' ``CategoricalCrossentropy``: :class:`SoftMaxLoss` (one-hot labels; integer labels
    work too), with Keras' default ``from_logits=False``.

    Args:
        from_logits: ``True`` if the model outputs logits ``(N, K)``; ``False`` (default) for probabilities.
        label_smoothing: ``a`` in ``[0, 1]`` (see :class:`SoftMaxLoss`).

    Example:
        >>> probs = np.array([[0.5, 0.25, 0.25], [0.25, 0.25, 0.5]])
        >>> float(CategoricalCrossentropy()(probs, np.array([[1, 0, 0], [0, 0, 1]])))    # log 2
        0.6931471805599453
    """
    return SoftMaxLoss(label_smoothing=label_smoothing, from_logits=from_logits)


def BinaryCrossentropy(from_logits: bool = False) -> BinaryCrossEntropy:
    """Keras' ``BinaryCrossentropy``: :class:`BinaryCrossEntropy` with Keras' default ``from_logits=False``.

    Args:
        from_logits: ``True`` if the model outputs logits ``(N, 1)``; ``False`` (default) for probabilities.

    Example:
        >>> float(BinaryCrossentropy()(np.array([[0.5], [0.5]]), np.array([0, 1])))    # log 2
        0.6931471805599453
    """
    return BinaryCrossEntropy(from_logits=from_logits)


def MeanSquaredError() -> MSELoss:
    """Keras' ``MeanSquaredError``: :class:`MSELoss`.

    Example:
        >>> float(MeanSquaredError()(np.array([[1.0, 2.0]]), np.array([[0.0, 0.0]])))
        2.5
    """
    return MSELoss()


_BY_NAME = {
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "binary_crossentropy": BinaryCrossentropy,
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
}


def get(loss: Any) -> Loss:
    """A loss from a Keras name, or ``loss`` itself when it is a :class:`Loss`.

    ``"sparse_categorical_crossentropy"``, ``"categorical_crossentropy"`` ->
    ``SoftMaxLoss(from_logits=False)``; ``"binary_crossentropy"`` ->
    ``BinaryCrossEntropy(from_logits=False)``; ``"mse"`` / ``"mean_squared_error"`` ->
    ``MSELoss()``. As in Keras, the names mean probabilities (a model ending with
    ``activation="softmax"`` / ``"sigmoid"``); for a model that outputs logits pass
    ``SoftMaxLoss()`` or ``SparseCategoricalCrossentropy(from_logits=True)``.

    Args:
        loss: a Keras loss name (case-insensitive) or a :class:`Loss` instance.

    Example:
        >>> get("sparse_categorical_crossentropy").from_logits
        False
    """
    if isinstance(loss, Loss):
        return loss
    if not isinstance(loss, str):
        raise TypeError(f"losses.get: expected a loss name or a Loss, got {type(loss).__name__}")
    key = loss.lower()
    if key not in _BY_NAME:
        raise ValueError(f"losses.get: unknown loss {loss!r}; known: {', '.join(sorted(_BY_NAME))}")
    return _BY_NAME[key]()


_PROBABILITY_LAYERS = {"softmax": ("SoftMax",), "sigmoid": ("Sigmoid", "SoftMax")}
_PASS_THROUGH = ("Identity", "Dropout")


def final_layer(model: Any) -> Any:
    """The layer whose output is the model's (through trailing ``Identity`` / ``Dropout``), or None.

    Args:
        model: a ``Sequential`` or graph ``Model``.

    Returns:
        The last layer that computes something, or ``None`` for a model without layers.

    Example:
        >>> from nn_from_scratch import Sequential, layers
        >>> model = Sequential([layers.Input(shape=(4,)), layers.Dense(3, activation="softmax"), layers.Dropout(0.5)])
        >>> type(final_layer(model)).__name__
        'SoftMax'
    """
    outputs = getattr(model, "outputs", None)
    if outputs:
        node = outputs[0].node
        while node is not None and type(node.layer).__name__ in _PASS_THROUGH:
            node = node.inputs[0].node
        return None if node is None else node.layer
    layers = [layer for layer in getattr(model, "layers", []) if type(layer).__name__ not in _PASS_THROUGH]
    return layers[-1] if layers else None


def check_model_output(model: Any, who: str) -> None:
    """Refuse a loss that does not fit what the model outputs (``fit`` / ``evaluate`` call this).

    * a cross-entropy on logits (``from_logits=True``) after a final ``SoftMax`` / ``Sigmoid``:
      the softmax would be applied twice (it trains, badly, and silently);
    * a cross-entropy on probabilities (``from_logits=False``) on a model whose last layer is
      one of this library's layers other than the matching activation: ``log`` of logits.

    A last layer of the user's own class is trusted. Raises ``ValueError`` saying what to change.

    Args:
        model: a compiled model (its ``loss`` is checked against :func:`final_layer`).
        who: the calling method, e.g. ``"fit"`` (the message reads ``Sequential.fit: ...``).

    Raises:
        ValueError: the loss and the model's last layer do not fit together.

    Example:
        >>> from nn_from_scratch import Sequential, layers
        >>> model = Sequential([layers.Input(shape=(4,)), layers.Dense(3, activation="softmax")])
        >>> model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
        >>> check_model_output(model, "fit")    # probabilities into a loss on probabilities: fine
        >>> model.compile(loss=SparseCategoricalCrossentropy(from_logits=True), optimizer="adam")
        >>> check_model_output(model, "fit")
        Traceback (most recent call last):
        ...
        ValueError: Sequential.fit: the model ends with SoftMax (SoftMax), but SoftMaxLoss expects logits ...
    """
    loss = getattr(model, "loss", None)
    wanted = getattr(loss, "probability_activation", None)
    if wanted is None or getattr(loss, "from_logits", None) is None:
        return
    layer = final_layer(model)
    if layer is None:
        return
    kind = type(layer).__name__
    lname = type(loss).__name__
    if loss.from_logits and kind in ("SoftMax", "Sigmoid"):
        raise ValueError(
            f"{type(model).__name__}.{who}: the model ends with {kind} ({layer.name}), but {lname} expects logits "
            f"(it applies the {wanted} itself, so the outputs would go through it twice). Either remove the final "
            f"{kind} (activation=None on the last layer) and keep the loss, or keep it and use {lname}(from_logits=False) "
            f"(what Keras' loss names mean, e.g. loss='{'categorical_crossentropy' if wanted == 'softmax' else 'binary_crossentropy'}')"
        )
    library = type(layer).__module__.startswith(__name__.rpartition(".")[0] + ".")
    if not loss.from_logits and library and kind not in _PROBABILITY_LAYERS[wanted]:
        raise ValueError(
            f"{type(model).__name__}.{who}: {lname}(from_logits=False) expects probabilities, but the model ends with "
            f"{kind} ({layer.name}), which outputs logits. Either end the model with activation='{wanted}' "
            f"(a {_PROBABILITY_LAYERS[wanted][0]} layer), or use {lname}(from_logits=True) "
            f"(or e.g. SparseCategoricalCrossentropy(from_logits=True))"
        )
