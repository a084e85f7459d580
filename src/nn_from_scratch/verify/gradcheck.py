"""Finite-difference gradient check, with the semantics of ``torch.autograd.gradcheck``.

For a scalar function ``L(x, theta)`` the analytic gradients come from one ``backward`` pass;
the numeric ones from central differences, one element at a time::

    numeric[i] = (L(x + h e_i) - L(x - h e_i)) / ((x_i + h) - (x_i - h))

(the denominator is the perturbation as actually stored in float64, not ``2 h``, so the rounding
of ``x_i +- h`` does not enter the error). An element fails when
``|analytic - numeric| > atol + rtol * |numeric|``.

What ``L`` is depends on what is checked:

* a **loss** ``loss(y_pred, y_true)``: ``L`` is the loss, ``x`` is ``y_pred``;
* a **layer** or a **model** (a ``Sequential``, anything with ``.layers``, or a list of layers)
  followed by ``loss`` and targets ``y``: ``L = loss(f(x), y)``;
* a layer or model without a loss: ``L = sum(v * f(x))`` for a fixed random ``v`` (seeded), so
  ``dL/dy = v``. Its numeric gradient is computed as ``sum(v * (f(x+) - f(x-)))``: differencing
  the outputs before reducing them keeps the rounding error at the level of single outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..interfaces import Layer
from ..interop._common import is_graph_model
from ..losses import Loss


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with its finite-difference estimate.

    Raised by :func:`gradcheck` (with ``raise_exception=True``); an ``AssertionError``, so
    pytest shows it as a failed check.

    Args:
        *args: the message (which tensor, which element, analytic and numeric values).

    Example:
        >>> try:
        ...     raise GradcheckError("layer 0 (Linear).W: analytic 1.0, numeric 2.0")
        ... except AssertionError as error:
        ...     print(type(error).__name__)
        GradcheckError
    """


@dataclass
class _Tensor:
    """One array whose gradient is checked: the input or a parameter (perturbed in place)."""

    label: str
    array: np.ndarray
    analytic: np.ndarray


def gradcheck(
    layer_or_model: Any,
    x: Any,
    y: Any = None,
    loss: Loss | None = None,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    raise_exception: bool = True,
    *,
    check_input: bool = True,
    check_parameters: bool = True,
    training: bool | None = None,
    seed: int = 0,
) -> bool:
    """Compare every analytic gradient of ``layer_or_model`` with central finite differences.

    Args:
        layer_or_model: a :class:`~nn_from_scratch.interfaces.Layer`, a ``Sequential`` (or any
            object with a ``layers`` list, e.g. the seed's ``NeuralNetwork``), a list of layers,
            or a :class:`~nn_from_scratch.losses.Loss`. Every parameter must be float64.
        x: the input batch (for a loss: the predictions). Converted to a float64 copy.
        y: targets for ``loss`` (for a loss: its ``y_true``). When a model is given ``y`` but no
            ``loss``, the model's own loss (``model.loss`` / ``model.loss_fn``) is used.
        loss: a loss applied to the output; without it the output is reduced by a fixed random
            projection ``L = sum(v * output)``.
        eps: the finite-difference step.
        atol, rtol: an element fails when ``|analytic - numeric| > atol + rtol * |numeric|``.
        raise_exception: raise :class:`GradcheckError` on failure (else return ``False``).
        check_input / check_parameters: which gradients to check.
        training: set every layer's ``training`` flag for the check (``None`` leaves them as
            they are); flags are restored afterwards. A graph
            :class:`~nn_from_scratch.graph.Model` is run by its own ``forward(x, training)`` /
            ``backward``, all layers in one mode: ``training``, or training mode for ``None``.
        seed: seeds the projection ``v``.

    Returns:
        ``True`` when every checked element agrees.

    Raises:
        GradcheckError: a gradient disagrees; the message names the tensor (``input``, or the
            layer and parameter), the index of the worst element, its analytic and numeric
            values, and how many elements fail.
        TypeError: a layer or parameter is not float64.

    Parameters (and layer buffers such as running statistics) are left exactly as they were:
    every perturbed element is restored to its saved value.

    Example:
        >>> from nn_from_scratch.nodes import Tanh
        >>> gradcheck(Tanh(), np.linspace(-2, 2, 12).reshape(3, 4))
        True
    """
    if isinstance(layer_or_model, Loss):
        if loss is not None:
            raise ValueError("gradcheck: a loss is being checked; pass its targets as y and no loss=")
        if y is None:
            raise ValueError(f"gradcheck: checking {layer_or_model.name} needs its targets y")
        return _check_loss(layer_or_model, x, y, eps, atol, rtol, raise_exception)

    layers = _layers_of(layer_or_model)
    if loss is None and y is not None:
        loss = getattr(layer_or_model, "loss", None) or getattr(layer_or_model, "loss_fn", None)
        if loss is None:
            raise ValueError("gradcheck: y was given but no loss (pass loss=...)")
    _require_float64(layers)
    single = isinstance(layer_or_model, Layer)
    saved_flags = [layer.training for layer in layers]
    saved_buffers = [{k: np.array(b, copy=True) for k, b in layer.buffers().items()} for layer in layers]
    if training is not None:
        for layer in layers:
            layer.training = training
    try:
        x = np.array(x, dtype=np.float64, copy=True)

        graph = is_graph_model(layer_or_model)
        mode = True if training is None else bool(training)

        def forward(inp: np.ndarray) -> np.ndarray:
            if graph:  # the model's own pass (keep_cache: a backward may follow an inference-mode pass)
                return layer_or_model.forward(inp, training=mode, keep_cache=True)
            out = inp
            for layer in layers:
                out = layer.forward(out)
            return out

        out = forward(x)
        if np.asarray(out).dtype != np.float64:
            raise TypeError(f"gradcheck: the output is {np.asarray(out).dtype}, not float64; build every layer with dtype=np.float64")
        if loss is None:
            v = np.random.default_rng(seed).standard_normal(np.shape(out))
            dL_dout = v

            def evaluate() -> np.ndarray:
                # A copy: a layer may return a view of its input (a reshape) or reuse a buffer.
                return np.array(forward(x), dtype=np.float64, copy=True)

            def difference(plus: np.ndarray, minus: np.ndarray) -> float:
                return float(np.vdot(v, plus - minus))

        else:
            loss.forward(out, y)
            dL_dout = loss.backward()

            def evaluate() -> float:
                return float(loss.forward(forward(x), y))

            def difference(plus: float, minus: float) -> float:
                return plus - minus

        grad = dL_dout
        for layer in layers:
            layer.zero_grad()  # gradients accumulate: start from none
        if graph:
            grad = layer_or_model.backward(grad)  # sums over consumers and over a shared layer's calls
        else:
            for layer in reversed(layers):
                grad = layer.backward(grad)
        tensors: list[_Tensor] = []
        if check_input:
            tensors.append(_Tensor("input", x, np.array(grad, dtype=np.float64, copy=True)))
        if check_parameters:
            held: dict[int, _Tensor] = {}  # one array held by two layers: perturbing it moves both
            for i, layer in enumerate(layers):
                grads = layer.gradients()
                for name, p in layer.parameters().items():
                    where = f"{layer.name} parameter {name}" if single else f"layer {i} ({layer.name}) parameter {name}"
                    analytic = np.zeros(p.shape) if grads[name] is None else np.array(grads[name], dtype=np.float64)
                    if id(p) in held:
                        held[id(p)].analytic = held[id(p)].analytic + analytic
                        held[id(p)].label += f" (= {where})"
                        continue
                    held[id(p)] = _Tensor(where, p, analytic)
                    tensors.append(held[id(p)])
        failures = [msg for t in tensors if (msg := _compare(t, evaluate, difference, eps, atol, rtol))]
    finally:
        for layer, flag, buffers in zip(layers, saved_flags, saved_buffers):
            layer.training = flag
            current = layer.buffers()
            for k, b in buffers.items():
                current[k][...] = b
    return _verdict(failures, raise_exception)


# -- helpers ----------------------------------------------------------------------------------
def _layers_of(target: Any) -> list[Layer]:
    if isinstance(target, Layer):
        return [target]
    layers = getattr(target, "layers", target)
    if isinstance(layers, Sequence) and layers and all(isinstance(layer, Layer) for layer in layers):
        return list(layers)
    raise TypeError(
        f"gradcheck: expected a Layer, a model with .layers, a list of layers or a Loss, got {type(target).__name__}"
    )


def _require_float64(layers: list[Layer]) -> None:
    for i, layer in enumerate(layers):
        dtype = getattr(layer, "dtype", None)
        if dtype is not None and np.dtype(dtype) != np.float64:
            raise TypeError(
                f"gradcheck: layer {i} ({layer.name}) is {np.dtype(dtype)}; finite differences need float64 "
                "(build it with dtype=np.float64)"
            )
        for name, p in layer.parameters().items():
            if p.dtype != np.float64:
                raise TypeError(f"gradcheck: parameter {name} of layer {i} ({layer.name}) is {p.dtype}, not float64")


def _compare(
    tensor: _Tensor,
    evaluate: Callable[[], Any],
    difference: Callable[[Any, Any], float],
    eps: float,
    atol: float,
    rtol: float,
) -> str | None:
    """Central differences over every element of ``tensor.array`` (restored after each one)."""
    flat = tensor.array.reshape(-1)
    if not np.shares_memory(flat, tensor.array):
        raise TypeError(f"gradcheck: {tensor.label} is not contiguous, so it cannot be perturbed in place")
    if tensor.analytic.shape != tensor.array.shape:
        return (
            f"gradient of {tensor.label} has shape {tensor.analytic.shape}, "
            f"but the tensor has shape {tensor.array.shape}"
        )
    numeric = np.empty(flat.size)
    for i in range(flat.size):
        original = flat[i]
        try:
            flat[i] = original + eps
            step = flat[i]
            plus = evaluate()
            flat[i] = original - eps
            step = step - flat[i]
            minus = evaluate()
        finally:
            flat[i] = original
        numeric[i] = difference(plus, minus) / step
    return _mismatch(tensor.label, tensor.analytic.reshape(-1), numeric, tensor.array.shape, atol, rtol)


def _mismatch(label: str, analytic: np.ndarray, numeric: np.ndarray, shape: tuple[int, ...], atol: float, rtol: float) -> str | None:
    error = np.abs(analytic - numeric)
    allowed = atol + rtol * np.abs(numeric)
    bad = ~(error <= allowed)  # NaN counts as a failure
    if not bad.any():
        return None
    ratio = np.where(np.isnan(error), np.inf, error / np.maximum(allowed, np.finfo(float).tiny))
    worst = int(np.argmax(ratio))
    index = tuple(int(i) for i in np.unravel_index(worst, shape))
    return (
        f"{label}: gradient wrong at index {index}: analytic {float(analytic[worst])!r}, "
        f"numeric {float(numeric[worst])!r} "
        f"(|diff| {error[worst]:.3e} > atol + rtol*|numeric| = {allowed[worst]:.3e}); "
        f"{int(bad.sum())} of {bad.size} elements fail"
    )


def _verdict(failures: list[str], raise_exception: bool) -> bool:
    if not failures:
        return True
    if raise_exception:
        raise GradcheckError("gradcheck failed:\n  " + "\n  ".join(failures))
    return False


def _check_loss(loss: Loss, y_pred: Any, y_true: Any, eps: float, atol: float, rtol: float, raise_exception: bool) -> bool:
    y_pred = np.array(y_pred, dtype=np.float64, copy=True)
    loss.forward(y_pred, y_true)
    analytic = np.array(loss.backward(), dtype=np.float64, copy=True)
    tensor = _Tensor(f"{loss.name} prediction", y_pred, analytic)
    failure = _compare(tensor, lambda: float(loss.forward(y_pred, y_true)), lambda a, b: a - b, eps, atol, rtol)
    return _verdict([failure] if failure else [], raise_exception)
