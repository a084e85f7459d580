"""Optimizers. Each follows ``torch.optim``'s update rule exactly (checked in the test suite)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .interfaces import Optimizer


class GradientDescent(Optimizer):
    """Stochastic gradient descent, with optional momentum, Nesterov and L2 weight decay.

    As ``torch.optim.SGD`` (dampening 0)::

        g = grad + weight_decay * p
        v = g                       on the first step, else  v = momentum * v + g
        g = g + momentum * v        if nesterov, else        g = v
        p = p - lr * g
    """

    def __init__(
        self,
        lr: float = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        clip_norm: float | None = None,
    ) -> None:
        super().__init__(lr, clip_norm)
        if nesterov and momentum <= 0:
            raise ValueError("GradientDescent: nesterov=True needs momentum > 0")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.weight_decay = float(weight_decay)

    def update(self, param: np.ndarray, grad: np.ndarray) -> None:
        if self.weight_decay:
            grad = grad + self.weight_decay * param
        if self.momentum:
            state = self.state_for(param)
            if "velocity" not in state:
                state["velocity"] = np.array(grad, dtype=param.dtype, copy=True)
            else:
                velocity = state["velocity"]
                velocity *= self.momentum
                velocity += grad
            velocity = state["velocity"]
            grad = grad + self.momentum * velocity if self.nesterov else velocity
        param -= (self.lr * grad).astype(param.dtype, copy=False)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
        }
