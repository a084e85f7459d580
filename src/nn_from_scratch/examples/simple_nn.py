"""The seed's ``NeuralNetwork``: a thin adapter over :class:`nn_from_scratch.model.Sequential`.

It trains on data that is already split into batches, as the course notebooks prepare it:
``X`` of shape ``(n_batches, B, ...)`` and one-hot ``y`` of shape ``(n_batches, B, n_classes)``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..callbacks import Callback
from ..interfaces import Layer, Optimizer
from ..losses import Loss
from ..model import Sequential


class NeuralNetwork:
    """``NeuralNetwork(n_input, n_output, batch_size, optimizer, layers, loss_fn)``.

    ``n_input``, ``n_output`` and ``batch_size`` are kept for the seed's signature; shapes come
    from the layers, and any batch size works.

    Args:
        n_input: the input shape, kept for the seed's signature (shapes come from the layers).
        n_output: the output shape, kept for the seed's signature.
        batch_size: the seed's batch size, kept; ``fit`` uses the batches' own size ``B``.
        optimizer: the :class:`~nn_from_scratch.interfaces.Optimizer` (e.g. ``SGD(lr=0.1)``).
        layers: the layers, in order.
        loss_fn: the :class:`~nn_from_scratch.losses.Loss` (e.g. ``SoftMaxLoss()``).

    Example:
        >>> from nn_from_scratch.neurons import Linear
        >>> from nn_from_scratch.losses import SoftMaxLoss
        >>> from nn_from_scratch.optimizers import SGD
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(5, 4, 3)).astype(np.float32)  # 5 batches of 4 samples, 3 features
        >>> y = np.eye(2)[rng.integers(0, 2, size=(5, 4))]     # one-hot, (5, 4, 2)
        >>> net = NeuralNetwork(3, 2, 4, SGD(lr=0.1), [Linear(3, 2)], SoftMaxLoss())
        >>> loss = net.fit(X, y, n_epochs=2, verbose=False)
        >>> type(loss).__name__, net.predict(X[0]).shape
        ('float', (4, 2))
    """

    def __init__(
        self,
        n_input: Any,
        n_output: Any,
        batch_size: int,
        optimizer: Optimizer,
        layers: Sequence[Layer],
        loss_fn: Loss,
    ) -> None:
        self.n_input, self.n_output, self.batch_size = n_input, n_output, batch_size
        self.layers = list(layers)
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.model = Sequential(self.layers, loss=loss_fn, optimizer=optimizer)

    def fit(self, X: np.ndarray, y: np.ndarray, n_epochs: int = 1, verbose: bool = True) -> float:
        """Train on pre-batched ``X`` (n_batches, B, ...) and ``y`` (n_batches, B, ...).

        The batches are used in their order, unshuffled, as the seed did: this is
        :meth:`Sequential.fit` with ``batch_size=B`` and ``shuffle=False`` on the flattened
        data. Shows a progress bar with the running loss; returns the mean loss of the last epoch.
        """
        X, y = np.asarray(X), np.asarray(y)
        if X.ndim < 2 or y.ndim < 2:
            raise ValueError(
                f"NeuralNetwork.fit: expected pre-batched X (n_batches, B, ...) and y (n_batches, B, ...), "
                f"got shapes {X.shape} and {y.shape}"
            )
        if len(X) > len(y):
            raise ValueError(f"NeuralNetwork.fit: X has {len(X)} batches but y only has {len(y)}")
        # The seed paired batches with zip(): the notebook slices the images to 1,000 but keeps
        # the labels of all 60,000, so batch i of X goes with batch i of y and the rest is unused.
        y = y[: len(X)]
        if X.shape[1] != y.shape[1]:
            raise ValueError(f"NeuralNetwork.fit: X has batches of {X.shape[1]} samples but y has batches of {y.shape[1]}")
        if len(X) == 0:
            return float("nan")
        history = self.model.fit(
            X.reshape((-1,) + X.shape[2:]),
            y.reshape((-1,) + y.shape[2:]),
            epochs=n_epochs,
            batch_size=X.shape[1],
            shuffle=False,
            verbose=1 if verbose else 0,
            callbacks=[_PrintEpochLoss()] if verbose else [],
        )
        return float(history.history["loss"][-1]) if history.history else float("nan")

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Outputs of the last layer for one batch (in inference mode), in one pass: splitting it
        into Keras-sized batches would alternate two shapes and rebuild the conv work buffers."""
        return self.model.predict(x, batch_size=None)


class _PrintEpochLoss(Callback):
    """The seed's line after every epoch."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        print(f"Epoch {epoch + 1}, Loss: {(logs or {}).get('loss')}")
