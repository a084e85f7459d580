"""``compare_training``: train our model and its PyTorch twin side by side and compare.

Both start from the same weights (the twin is a copy of ours), see the same batches in the same
order, use the same loss and the same optimizer settings (mapped by
``interop.torch.TORCH_OPTIMIZERS``: ``GradientDescent`` -> ``torch.optim.SGD``, ``Adam`` ->
``Adam``, ``AdamW`` -> ``AdamW``, ``RMSProp`` -> ``RMSprop``; ``clip_norm`` ->
``clip_grad_norm_``). A one-step comparison (:func:`~nn_from_scratch.verify.compare`) cannot
see an optimizer bug, a state that is not carried between steps, or an error that only grows
over many steps; this can.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..interop._common import STOCHASTIC_LAYER_NAMES, is_graph_model, layer_label, model_layers, model_loss
from ..losses import Loss
from ..model import Sequential
from .compare import ErrorStat, _stochastic, as_dtype


@dataclass
class TrainingComparison:
    """Per-step losses of both sides and the weight differences after the last step.

    Args:
        reference: ``"torch"`` or ``"keras"``.
        dtype: the dtype both sides trained in.
        losses: our loss at each step, shape ``(steps,)``.
        reference_losses: the reference's loss at each step, shape ``(steps,)``.
        weight_errors: ``"layer i (Class).name"`` -> the error of that parameter or buffer after the last step.

    Example:
        >>> result = TrainingComparison("torch", np.dtype(np.float64), np.array([2.0, 1.5]), np.array([2.0, 1.5]))
        >>> result.max_loss_rel_error, result.max_weight_rel_error
        (0.0, 0.0)
    """

    reference: str
    dtype: np.dtype
    losses: np.ndarray  # ours, one per step
    reference_losses: np.ndarray
    # "layer 0 (Convolution).W" -> error, for every parameter and buffer (batch-norm running statistics)
    weight_errors: dict[str, ErrorStat] = field(default_factory=dict)

    @property
    def loss_rel_errors(self) -> np.ndarray:
        """``|ours - ref| / |ref|`` at every step."""
        ref = np.abs(self.reference_losses)
        diff = np.abs(self.losses - self.reference_losses)
        return np.where(ref > 0, diff / np.where(ref > 0, ref, 1.0), np.where(diff > 0, np.inf, 0.0))

    @property
    def max_loss_rel_error(self) -> float:
        return float(np.max(self.loss_rel_errors, initial=0.0))

    @property
    def max_weight_abs_error(self) -> float:
        """The largest ``|ours - ref|`` over every weight at the end."""
        return max((e.max_abs for e in self.weight_errors.values()), default=0.0)

    @property
    def max_weight_rel_error(self) -> float:
        return max((e.max_rel for e in self.weight_errors.values()), default=0.0)

    def __str__(self) -> str:
        n = len(self.losses)
        shown = sorted(set(range(min(n, 5))) | set(range(max(n - 3, 0), n)) | set(range(0, n, max(n // 10, 1))))
        lines = [f"compare_training vs {self.reference}, {self.dtype.name}, {n} steps",
                 f"{'step':>6}  {'loss (ours)':>22}  {'loss (' + self.reference + ')':>22}  {'rel. diff':>9}"]
        rel = self.loss_rel_errors
        for i in shown:
            lines.append(f"{i + 1:>6}  {self.losses[i]:>22.15g}  {self.reference_losses[i]:>22.15g}  {rel[i]:>9.2e}")
        lines.append(f"largest relative loss difference: {self.max_loss_rel_error:.3e}")
        lines.append(f"largest weight difference at the end: {self.max_weight_abs_error:.3e} "
                     f"(relative {self.max_weight_rel_error:.3e})")
        return "\n".join(lines)

    __repr__ = __str__


def _fresh_optimizer(optimizer: Any) -> Any:
    """A new optimizer of the same type and settings, without state."""
    return type(optimizer)(**optimizer.get_config())


def compare_training(
    model: Any,
    x: Any,
    y: Any,
    steps: int = 100,
    optimizer: Any = None,
    batch_size: int | None = None,
    dtype: Any = np.float64,
    *,
    loss: Loss | None = None,
    reference: str = "torch",
) -> TrainingComparison:
    """Train copies of ``model`` and of its torch twin for ``steps`` steps; compare losses and weights.

    ``x`` (N, ...) and ``y`` (N, ...) are split into ``N // batch_size`` batches (default: one
    batch of all N), used in order and cycled. ``optimizer`` defaults to the model's; a fresh
    one with the same settings is made for each side. The model itself is not changed.
    Models with dropout are refused (the two sides cannot draw the same masks). A graph
    :class:`~nn_from_scratch.graph.Model` trains as a graph (``train_step``, i.e.
    :func:`nn_from_scratch.training.train_batch`) against its :class:`~nn_from_scratch.interop.torch.GraphModule`.

    A parameter whose exact gradient is zero (the bias of a convolution followed by batch norm)
    gets rounding noise as its gradient on each side; SGD leaves it near its start, but Adam and
    RMSProp normalise the noise into steps of their own, so such a parameter can differ (at a
    tiny absolute level) without any bug.

    Args:
        model: a ``Sequential``, the seed's ``NeuralNetwork`` or a graph ``Model``, with a loss.
        x: inputs ``(N, *input_shape)`` in our layout (NCHW).
        y: targets ``(N, ...)`` for the model's loss.
        steps: how many optimizer steps each side takes.
        batch_size: samples per step (default: all ``N``).
        optimizer: the optimizer to copy (default: the model's).
        reference: ``"torch"``.
        dtype: float64 or float32, both sides.
        loss: the loss to train with (default: the model's).

    Returns:
        A :class:`TrainingComparison`: ``losses`` and ``reference_losses`` per step,
        ``weight_errors`` per parameter at the end, ``max_loss_rel_error``, ``max_weight_rel_error``.

    Example:
        >>> from nn_from_scratch import zoo
        >>> from nn_from_scratch.losses import SoftMaxLoss
        >>> from nn_from_scratch.optimizers import Adam
        >>> model = zoo.seed_cnn(dtype=np.float64, seed=0)
        >>> model.compile(Adam(1e-3), SoftMaxLoss())
        >>> result = compare_training(model, np.random.rand(8, 1, 28, 28), np.arange(8), steps=3)
        >>> result.max_weight_rel_error < 1e-10
        True
    """
    if reference != "torch":
        raise ValueError(f"compare_training: only reference='torch' is supported, got {reference!r}")
    from ..interop import _backend

    interop_torch = _backend("torch")
    torch = interop_torch.torch
    torch_loss, torch_optimizer, torch_twins = interop_torch.torch_loss, interop_torch.torch_optimizer, interop_torch.torch_twins

    layers = model_layers(model)
    loss = loss if loss is not None else model_loss(model)
    if loss is None:
        raise ValueError("compare_training: the model has no loss; pass loss=...")
    optimizer = optimizer if optimizer is not None else getattr(model, "optimizer", None)
    if optimizer is None:
        raise ValueError("compare_training: the model has no optimizer; pass optimizer=...")
    for i, layer in enumerate(layers):
        if _stochastic(layer):
            raise ValueError(f"compare_training: {layer_label(i, layer)} is random in training "
                             f"({', '.join(STOCHASTIC_LAYER_NAMES)}); the two sides cannot draw the same masks")
    dtype = np.dtype(dtype)
    x = np.asarray(x).astype(dtype)
    y = np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"compare_training: x has {len(x)} samples but y has {len(y)}")
    batch_size = len(x) if batch_size is None else int(batch_size)
    n_batches = len(x) // batch_size
    if n_batches < 1:
        raise ValueError(f"compare_training: batch_size {batch_size} is larger than the {len(x)} samples")

    ours_layers, ours_loss = copy.deepcopy(layers), copy.deepcopy(loss)
    with as_dtype(ours_layers, dtype):
        if is_graph_model(model):
            # The same graph on the copied layers (a shared layer stays one layer); its twin is
            # one torch module per layer, so the shared weights get the summed gradient there too.
            ours = type(model).from_config(ours_layers, model.get_config(), loss=ours_loss,
                                           optimizer=_fresh_optimizer(optimizer))
            net = interop_torch.to_torch(ours).train()
            twins = net.twins
            input_shape = tuple(ours.input_shape)
        else:
            ours = Sequential(ours_layers, loss=ours_loss, optimizer=_fresh_optimizer(optimizer))
            ours.build(_input_shape(ours_layers, x))
            twins = torch_twins(ours_layers)
            net = torch.nn.Sequential(*[m for twin in twins for m in twin.modules]).train()
            input_shape = tuple(ours_layers[0].input_shape)
        params = list(net.parameters())
        ref_opt = torch_optimizer(optimizer, params) if params else None
        clip = getattr(optimizer, "clip_norm", None)
        shape = (batch_size,) + input_shape

        losses, ref_losses = [], []
        for step in range(steps):
            b = step % n_batches
            xb, yb = x[b * batch_size:(b + 1) * batch_size], y[b * batch_size:(b + 1) * batch_size]
            losses.append(ours.train_step(xb, yb))
            if ref_opt is not None:
                ref_opt.zero_grad()
            value = torch_loss(ours_loss, net(torch.from_numpy(np.array(xb.reshape(shape)))), yb)
            value.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(params, clip)
            if ref_opt is not None:
                ref_opt.step()
            ref_losses.append(float(value.detach()))

        errors = {}
        for i, (layer, twin) in enumerate(zip(ours.layers, twins)):
            ref_params = twin.read(lambda t: t.detach().numpy().copy())
            for name, p in layer.parameters().items():
                errors[f"{layer_label(i, layer)}.{name}"] = ErrorStat.of(p, ref_params[name])
            ref_buffers = twin.read_buffers(lambda t: t.detach().numpy().copy())
            for name, b in layer.buffers().items():  # running statistics follow torch's rule too
                if name in ref_buffers:
                    errors[f"{layer_label(i, layer)}.{name}"] = ErrorStat.of(b, ref_buffers[name])
    return TrainingComparison(reference, dtype, np.array(losses), np.array(ref_losses), errors)


def _input_shape(layers: list[Any], x: np.ndarray) -> tuple[int, ...]:
    first = layers[0]
    if first.input_shape is not None:
        return tuple(first.input_shape)
    return tuple(x.shape[1:])


__all__ = ["TrainingComparison", "compare_training"]
