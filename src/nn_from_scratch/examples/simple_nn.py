"""The seed's ``NeuralNetwork``: a thin adapter over :class:`nn_from_scratch.model.Sequential`.

It trains on data that is already split into batches, as the course notebooks prepare it:
``X`` of shape ``(n_batches, B, ...)`` and one-hot ``y`` of shape ``(n_batches, B, n_classes)``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..interfaces import Layer, Optimizer
from ..losses import Loss
from ..model import Sequential


class NeuralNetwork:
    """``NeuralNetwork(n_input, n_output, batch_size, optimizer, layers, loss_fn)``.

    ``n_input``, ``n_output`` and ``batch_size`` are kept for the seed's signature; shapes come
    from the layers, and any batch size works.
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

        Shows a progress bar with the running loss; returns the mean loss of the last epoch.
        """
        X, y = np.asarray(X), np.asarray(y)
        if len(X) > len(y):
            raise ValueError(f"NeuralNetwork.fit: X has {len(X)} batches but y only has {len(y)}")
        # The seed paired batches with zip(): the notebook slices the images to 1,000 but keeps
        # the labels of all 60,000, so batch i of X goes with batch i of y and the rest is unused.
        y = y[: len(X)]
        epoch_loss = float("nan")
        for epoch in range(1, n_epochs + 1):
            total = 0.0
            bar = tqdm(range(len(X)), disable=not verbose, leave=True)
            for i in bar:
                total += self.model.train_step(X[i], y[i])
                bar.set_postfix(loss=f"{total / (i + 1):.3g}")
            epoch_loss = total / max(len(X), 1)
            if verbose:
                print(f"Epoch {epoch}, Loss: {epoch_loss}")
        return epoch_loss

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Outputs of the last layer for one batch (in inference mode)."""
        return self.model.predict(x)
