"""Optimizers. Each follows ``torch.optim``'s update rule exactly (checked in the test suite).

Hyper-parameters are checked at construction, as ``torch.optim`` checks them, and more
strictly: each must be a finite number (``lr > 0``, ``clip_norm > 0``, ``eps``, ``momentum`` and
``weight_decay >= 0``, betas in ``[0, 1)``), else ``ValueError`` (``TypeError`` for a non-number).

Every optimizer takes ``learning_rate=`` (Keras' spelling) as well as ``lr=`` (torch's), and
:func:`get` builds one from a Keras name (``"sgd"``, ``"adam"``, ``"adamw"``, ``"rmsprop"``)
with Keras' default learning rate. Only the learning rate follows Keras there: the other
hyper-parameters keep torch's defaults and update rules (Keras' Adam has ``epsilon=1e-7`` and
RMSprop ``rho=0.9``; pass them to the classes to match).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .interfaces import Optimizer, check_hyperparameter


def _pick_lr(lr: float, default: float, learning_rate: float | None, who: str) -> float:
    """``learning_rate`` (Keras' name) when given, else ``lr``; both given differently is an error."""
    if learning_rate is None:
        return lr
    if lr != default and lr != learning_rate:
        raise TypeError(f"{who}: got both lr={lr!r} and learning_rate={learning_rate!r}; pass one of them")
    return learning_rate


class GradientDescent(Optimizer):
    """Stochastic gradient descent, with optional momentum, Nesterov and L2 weight decay.

    As ``torch.optim.SGD`` (dampening 0)::

        g = grad + weight_decay * p
        v = g                       on the first step, else  v = momentum * v + g
        g = g + momentum * v        if nesterov, else        g = v
        p = p - lr * g

    Args:
        lr: the learning rate (``learning_rate=`` is the same, Keras' name).
        momentum: the momentum factor (0: plain gradient descent).
        nesterov: Nesterov momentum (needs ``momentum > 0``).
        weight_decay: L2 penalty added to the gradient.
        clip_norm: rescale all gradients so that their global L2 norm is at most this.

    Example:
        >>> from nn_from_scratch.neurons import Linear
        >>> layer = Linear(input_dim=1, output_dim=1, W=np.array([[0.0], [1.0]]))
        >>> layer._W_pd = np.array([[1.0], [2.0]], dtype=np.float32)
        >>> GradientDescent(lr=0.1).step([layer])
        >>> layer.W.ravel()
        array([-0.1,  0.8], dtype=float32)
    """

    def __init__(
        self,
        lr: float = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        clip_norm: float | None = None,
        *,
        learning_rate: float | None = None,
    ) -> None:
        super().__init__(_pick_lr(lr, 0.01, learning_rate, "GradientDescent"), clip_norm)
        momentum = check_hyperparameter(momentum, "momentum", "GradientDescent", low=0.0)
        weight_decay = check_hyperparameter(weight_decay, "weight_decay", "GradientDescent", low=0.0)
        if nesterov and momentum <= 0:
            raise ValueError("GradientDescent: nesterov=True needs momentum > 0")
        self.momentum = momentum
        self.nesterov = bool(nesterov)
        self.weight_decay = weight_decay

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


def _lerp_(avg: np.ndarray, target: np.ndarray, weight: float) -> None:
    """``avg <- avg + weight * (target - avg)`` in place, rounded as ``torch.lerp_`` rounds it.

    torch switches to ``target - (target - avg) * (1 - weight)`` for ``weight >= 0.5`` so that
    ``weight = 1`` gives exactly ``target``; matching that keeps us bit-close to torch.
    """
    diff = target - avg
    if weight < 0.5:
        diff *= weight
        avg += diff
    else:
        diff *= 1.0 - weight
        np.subtract(target, diff, out=avg)


class Adam(Optimizer):
    """Adam (Kingma & Ba), exactly as ``torch.optim.Adam`` (amsgrad off)::

        g = grad + weight_decay * p                    (L2 penalty; AdamW decouples it instead)
        m = beta1 * m + (1 - beta1) * g                (first moment, zero at the start)
        v = beta2 * v + (1 - beta2) * g^2              (second moment, zero at the start)
        t = number of updates of this parameter so far, counting this one
        p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    Note the placement of ``eps``: outside the bias-corrected square root, as torch does.
    ``lr``, ``beta1``, ``beta2``, ``eps`` and ``weight_decay`` are plain attributes, read at
    every step, so a schedule can change them between steps. State arrays have the dtype of
    their parameter.

    Args:
        lr: the learning rate (``learning_rate=`` is the same, Keras' name).
        beta1, beta2: decay rates of the first and second moment estimates.
        eps: added to the denominator.
        weight_decay: L2 penalty added to the gradient (coupled; see :class:`AdamW` for decoupled).
        clip_norm: rescale all gradients so that their global L2 norm is at most this.

    Example:
        >>> from nn_from_scratch.neurons import Linear
        >>> layer = Linear(input_dim=1, output_dim=1, W=np.array([[0.0], [1.0]]))
        >>> layer._W_pd = np.array([[1.0], [-2.0]], dtype=np.float32)
        >>> Adam(lr=0.1).step([layer])          # the first step moves each weight by lr * g / (|g| + eps)
        >>> np.round(layer.W.ravel(), 6)
        array([-0.1,  1.1], dtype=float32)
    """

    def __init__(
        self,
        lr: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        clip_norm: float | None = None,
        *,
        learning_rate: float | None = None,
    ) -> None:
        who = type(self).__name__
        super().__init__(_pick_lr(lr, 1e-3, learning_rate, who), clip_norm)
        self.beta1 = check_hyperparameter(beta1, "beta1", who, low=0.0, high=1.0, high_open=True)
        self.beta2 = check_hyperparameter(beta2, "beta2", who, low=0.0, high=1.0, high_open=True)
        self.eps = check_hyperparameter(eps, "eps", who, low=0.0)
        self.weight_decay = check_hyperparameter(weight_decay, "weight_decay", who, low=0.0)

    def _decay(self, param: np.ndarray, grad: np.ndarray) -> np.ndarray:
        """Adam's L2 penalty: folded into the gradient (AdamW overrides this)."""
        return grad + self.weight_decay * param if self.weight_decay else grad

    def update(self, param: np.ndarray, grad: np.ndarray) -> None:
        grad = self._decay(param, grad)
        state = self.state_for(param)
        if "step" not in state:
            state["step"] = 0
            state["exp_avg"] = np.zeros_like(param)
            state["exp_avg_sq"] = np.zeros_like(param)
        state["step"] += 1
        step, exp_avg, exp_avg_sq = state["step"], state["exp_avg"], state["exp_avg_sq"]

        _lerp_(exp_avg, grad, 1.0 - self.beta1)
        exp_avg_sq *= self.beta2
        exp_avg_sq += (1.0 - self.beta2) * (grad * grad)

        step_size = self.lr / (1.0 - self.beta1**step)
        bias_correction2_sqrt = (1.0 - self.beta2**step) ** 0.5
        denom = np.sqrt(exp_avg_sq)
        denom /= bias_correction2_sqrt
        denom += self.eps
        update = exp_avg / denom
        update *= step_size
        param -= update

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "beta1": self.beta1,
            "beta2": self.beta2,
            "eps": self.eps,
            "weight_decay": self.weight_decay,
        }


class AdamW(Adam):
    """Adam with decoupled weight decay, exactly as ``torch.optim.AdamW``.

    Before the Adam step (which then sees the raw gradient)::

        p = p * (1 - lr * weight_decay)

    Args:
        lr: the learning rate (``learning_rate=`` is the same).
        beta1, beta2: decay rates of the moment estimates.
        eps: added to the denominator.
        weight_decay: the decoupled decay factor (torch's default 0.01).
        clip_norm: rescale all gradients so that their global L2 norm is at most this.

    Example:
        >>> opt = AdamW(lr=1e-3, weight_decay=0.05)
        >>> (opt.lr, opt.weight_decay)
        (0.001, 0.05)
    """

    def __init__(
        self,
        lr: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        clip_norm: float | None = None,
        *,
        learning_rate: float | None = None,
    ) -> None:
        super().__init__(_pick_lr(lr, 1e-3, learning_rate, "AdamW"), beta1, beta2, eps, weight_decay, clip_norm)

    def _decay(self, param: np.ndarray, grad: np.ndarray) -> np.ndarray:
        if self.weight_decay:
            param *= 1.0 - self.lr * self.weight_decay
        return grad


class RMSProp(Optimizer):
    """RMSProp, exactly as ``torch.optim.RMSprop``::

        g   = grad + weight_decay * p
        s   = alpha * s + (1 - alpha) * g^2                       (zero at the start)
        a   = alpha * a + (1 - alpha) * g                         (centered only; zero at the start)
        den = sqrt(s - a^2) + eps   if centered, else   sqrt(s) + eps
        b   = momentum * b + g / den;  p = p - lr * b             if momentum > 0
        p   = p - lr * g / den                                    otherwise

    There is no bias correction (torch has none), and ``eps`` is added outside the square root.
    Hyper-parameters are plain attributes, read at every step.

    Args:
        lr: the learning rate (``learning_rate=`` is the same).
        alpha: smoothing constant of the squared-gradient average.
        eps: added to the denominator.
        momentum: momentum factor (0: none).
        centered: divide by the estimated variance (subtract the squared mean gradient).
        weight_decay: L2 penalty added to the gradient.
        clip_norm: rescale all gradients so that their global L2 norm is at most this.

    Example:
        >>> RMSProp(lr=1e-3, momentum=0.9).momentum
        0.9
    """

    def __init__(
        self,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        momentum: float = 0.0,
        centered: bool = False,
        weight_decay: float = 0.0,
        clip_norm: float | None = None,
        *,
        learning_rate: float | None = None,
    ) -> None:
        super().__init__(_pick_lr(lr, 1e-2, learning_rate, "RMSProp"), clip_norm)
        self.alpha = check_hyperparameter(alpha, "alpha", "RMSProp", low=0.0, high=1.0)
        self.eps = check_hyperparameter(eps, "eps", "RMSProp", low=0.0)
        self.momentum = check_hyperparameter(momentum, "momentum", "RMSProp", low=0.0)
        self.centered = bool(centered)
        self.weight_decay = check_hyperparameter(weight_decay, "weight_decay", "RMSProp", low=0.0)

    def update(self, param: np.ndarray, grad: np.ndarray) -> None:
        if self.weight_decay:
            grad = grad + self.weight_decay * param
        state = self.state_for(param)
        if "square_avg" not in state:
            state["square_avg"] = np.zeros_like(param)
        square_avg = state["square_avg"]
        square_avg *= self.alpha
        square_avg += (1.0 - self.alpha) * (grad * grad)

        if self.centered:
            grad_avg = state.setdefault("grad_avg", np.zeros_like(param))
            _lerp_(grad_avg, grad, 1.0 - self.alpha)
            avg = square_avg - grad_avg * grad_avg
            np.sqrt(avg, out=avg)
        else:
            avg = np.sqrt(square_avg)
        avg += self.eps

        if self.momentum > 0:
            buf = state.setdefault("momentum_buffer", np.zeros_like(param))
            buf *= self.momentum
            buf += grad / avg
            param -= self.lr * buf
        else:
            step = grad / avg
            step *= self.lr
            param -= step

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "eps": self.eps,
            "momentum": self.momentum,
            "centered": self.centered,
            "weight_decay": self.weight_decay,
        }


#: Keras' names (lower case) -> (class, Keras' default learning rate).
_BY_NAME: dict[str, tuple[type[Optimizer], float]] = {
    "sgd": (GradientDescent, 0.01),
    "adam": (Adam, 0.001),
    "adamw": (AdamW, 0.001),
    "rmsprop": (RMSProp, 0.001),
}


def get(optimizer: Any, learning_rate: float | None = None) -> Optimizer:
    """An optimizer from a Keras name with Keras' default learning rate (``"sgd"`` 0.01,
    ``"adam"`` / ``"adamw"`` / ``"rmsprop"`` 0.001), or ``optimizer`` itself when it is one.

    Args:
        optimizer: ``"sgd"``, ``"adam"``, ``"adamw"``, ``"rmsprop"`` (case-insensitive), or an
            :class:`Optimizer` (returned as is).
        learning_rate: overrides the default learning rate of a name.

    Example:
        >>> get("adam").lr
        0.001
    """
    if isinstance(optimizer, Optimizer):
        return optimizer
    if not isinstance(optimizer, str):
        raise TypeError(f"optimizers.get: expected an optimizer name or an Optimizer, got {type(optimizer).__name__}")
    key = optimizer.lower()
    if key not in _BY_NAME:
        raise ValueError(f"optimizers.get: unknown optimizer {optimizer!r}; known: {', '.join(sorted(_BY_NAME))}")
    cls, default_lr = _BY_NAME[key]
    return cls(learning_rate=default_lr if learning_rate is None else learning_rate)


# Keras' class names, the same classes.
SGD = GradientDescent
RMSprop = RMSProp
