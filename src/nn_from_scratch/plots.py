"""Pictures of a model at work: learning curves, filters, feature maps, confusion matrices,
predictions, and where a model diverges from its torch or Keras twin.

Needs matplotlib (``pip install 'nn_from_scratch[plot]'``), imported when a function is called,
so ``import nn_from_scratch.plots`` works without it (and :func:`layer_outputs` needs only NumPy).
Every ``plot_*`` function returns the :class:`matplotlib.figure.Figure` and, given ``path=``,
also writes it there as a PNG. In a notebook the figure shows itself; in a script, call
``matplotlib.pyplot.show()`` or pass ``path``.

    from nn_from_scratch import plots
    history = model.fit(x, y, epochs=5, validation_split=0.1)
    plots.plot_history(history, path="curves.png")
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "layer_outputs",
    "plot_comparison",
    "plot_confusion_matrix",
    "plot_feature_maps",
    "plot_filters",
    "plot_history",
    "plot_predictions",
]


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("nn_from_scratch.plots needs matplotlib: pip install 'nn_from_scratch[plot]'") from error
    return plt


def _integer_ticks() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _finish(fig: Any, path: str | os.PathLike | None) -> Any:
    fig.tight_layout()
    if path is not None:
        fig.savefig(os.fspath(path), dpi=100, format="png")
    return fig


# -- learning curves ----------------------------------------------------------------------
def plot_history(history: Any, path: str | os.PathLike | None = None, title: str | None = None) -> Any:
    """Learning curves: the loss, each metric and the learning rate, per epoch.

    One panel per quantity: ``loss`` beside ``val_loss``, ``accuracy`` beside ``val_accuracy``
    and so on; ``learning_rate`` (or ``lr``), when logged, gets a panel of its own on a log scale.

    Args:
        history: the :class:`~nn_from_scratch.callbacks.History` that ``fit`` returns, or its
            ``history`` dict: ``{"loss": [l_0, l_1, ...], "val_loss": [...], ...}``, one value
            per epoch (any keys; ``val_`` + key is drawn with key).
        path: also write the figure there as a PNG.
        title: the figure's title.

    Returns:
        The matplotlib figure.

    Example:
        >>> fig = plot_history({"loss": [2.3, 1.1, 0.7], "val_loss": [2.0, 1.2, 0.9]})
        >>> [ax.get_title() for ax in fig.axes]
        ['loss']
    """
    logs: Mapping[str, Sequence[float]] = getattr(history, "history", history)
    if not isinstance(logs, Mapping) or not logs:
        raise ValueError(f"plot_history: expected a History or a non-empty dict of per-epoch lists, got {history!r}")
    rate_keys = [k for k in ("learning_rate", "lr") if k in logs]
    names = [k for k in logs if not k.startswith("val_") and k not in rate_keys]
    names += [k[4:] for k in logs if k.startswith("val_") and k[4:] not in logs]
    plt = _pyplot()
    n = len(names) + (1 if rate_keys else 0)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        for key, label, style in ((name, "training", "-o"), ("val_" + name, "validation", "--s")):
            if key in logs:
                values = np.asarray(logs[key], dtype=float)
                ax.plot(np.arange(1, len(values) + 1), values, style, label=label, markersize=3)
        ax.set_title(name)
        ax.xaxis.set_major_locator(_integer_ticks())
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    if rate_keys:
        ax = axes[0][-1]
        values = np.asarray(logs[rate_keys[0]], dtype=float)
        ax.plot(np.arange(1, len(values) + 1), values, "-o", color="tab:green", markersize=3)
        ax.set_yscale("log")
        ax.set_title("learning rate")
        ax.xaxis.set_major_locator(_integer_ticks())
        ax.set_xlabel("epoch")
        ax.set_ylabel("learning rate")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return _finish(fig, path)


# -- filters ---------------------------------------------------------------------------
def plot_filters(layer: Any, path: str | os.PathLike | None = None, max_filters: int = 64,
                 title: str | None = None) -> Any:
    """A convolution's kernels as small images, one per (output, input) channel pair.

    Each kernel is drawn on one symmetric colour scale (blue negative, red positive) shared by
    all, so their magnitudes compare.

    Args:
        layer: a :class:`~nn_from_scratch.neurons.Convolution` (or any layer whose ``W`` has
            shape ``(out_channels, in_channels, kh, kw)``).
        path: also write the figure there as a PNG.
        max_filters: draw at most this many kernels (the first ones).
        title: the figure's title (default: the layer's name and ``W``'s shape).

    Returns:
        The matplotlib figure (one axes per kernel, titled ``out,in``).

    Example:
        >>> from nn_from_scratch.neurons import Convolution
        >>> conv = Convolution(input_dim=(1, 28, 28), kernel_size=3, output_layers=4)
        >>> len(plot_filters(conv).axes)     # 4 kernels and the colour bar
        5
    """
    weights = getattr(layer, "W", None)
    if weights is None or np.ndim(weights) != 4:
        raise ValueError(f"plot_filters: expected a convolution whose W is (out, in, kh, kw), "
                         f"got {type(layer).__name__} with W of shape {np.shape(weights) if weights is not None else None}")
    w = np.asarray(weights, dtype=float)
    pairs = [(o, i) for o in range(w.shape[0]) for i in range(w.shape[1])][:max_filters]
    cols = min(len(pairs), 8 if w.shape[1] > 1 else 8)
    rows = math.ceil(len(pairs) / cols)
    plt = _pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols + 0.8, 1.3 * rows + 0.6), squeeze=False)
    limit = float(np.max(np.abs(w))) or 1.0
    image = None
    for ax, (o, i) in zip(axes.flat, pairs):
        image = ax.imshow(w[o, i], cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        ax.set_title(f"{o},{i}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(pairs):]:
        fig.delaxes(ax)
    fig.suptitle(title or f"{getattr(layer, 'name', type(layer).__name__)} kernels, W {tuple(w.shape)}")
    fig.tight_layout()
    fig.colorbar(image, ax=list(axes.flat)[: len(pairs)], shrink=0.8)
    if path is not None:
        fig.savefig(os.fspath(path), dpi=100, format="png")
    return fig


# -- activations -----------------------------------------------------------------------
def _node_names(model: Any) -> list[str]:
    from .model_base import display_names

    if hasattr(model, "nodes"):
        layers = [node.layer for node in model.nodes]
    else:
        layers = list(model.layers)
    unique: dict[int, str] = {}
    for layer, name in zip(layers, display_names(layers)):
        unique.setdefault(id(layer), name)
    seen: dict[int, int] = {}
    names = []
    for layer in layers:
        k = seen.get(id(layer), 0)
        seen[id(layer)] = k + 1
        names.append(unique[id(layer)] if k == 0 else f"{unique[id(layer)]} (call {k + 1})")
    return names


def layer_outputs(model: Any, x: Any) -> list[tuple[str, np.ndarray]]:
    """The output of every layer of ``model`` for the batch ``x``, in inference mode.

    A :class:`~nn_from_scratch.model.Sequential` gives one entry per layer; a graph
    :class:`~nn_from_scratch.graph.Model` one per node in the order it runs them (a shared
    layer once per call, the later calls named ``"name (call 2)"``). The names are those of
    ``model.summary()``. No layer keeps a cache afterwards.

    Args:
        model: a ``Sequential``, a graph ``Model`` or the seed's ``NeuralNetwork``.
        x: a batch ``(N, *input_shape)``, e.g. ``(1, 1, 28, 28)`` for one MNIST image.

    Returns:
        ``[(name, array (N, *output_shape)), ...]``.

    Example:
        >>> from nn_from_scratch import zoo
        >>> outs = layer_outputs(zoo.seed_cnn(seed=0), np.zeros((1, 1, 28, 28), np.float32))
        >>> [(name, a.shape) for name, a in outs][:2]
        [('convolution', (1, 4, 26, 26)), ('re_lu', (1, 4, 26, 26))]
    """
    model = getattr(model, "model", model)  # the seed's NeuralNetwork wraps a Sequential
    x = np.asarray(x)
    model.ensure_built(x)
    if x.dtype.kind in "iub" or (model.dtype is not None and x.dtype != model.dtype):
        x = x.astype(model.dtype or np.float32)
    names = _node_names(model)
    outputs = []
    if hasattr(model, "nodes"):
        values: dict[int, Any] = {model.inputs[0].id: x}
        for node in model.nodes:
            layer = node.layer
            args = [values[t.id] for t in node.inputs]
            out = layer.forward_in_pass(args if layer.n_inputs is None else args[0], training=False, keep_cache=False)
            values[node.output.id] = out
            outputs.append(np.asarray(out))
    else:
        for layer in model.layers:
            x = layer.forward_in_pass(x, training=False, keep_cache=False)
            outputs.append(np.asarray(x))
    return list(zip(names, outputs))


def plot_feature_maps(model: Any, image: Any, layer: int | str | None = None, path: str | os.PathLike | None = None,
                      max_maps: int = 32, title: str | None = None) -> Any:
    """The activations of one layer for one image: one small picture per channel.

    Args:
        model: a ``Sequential`` or a graph ``Model`` (any layer of either).
        image: one input ``(C, H, W)`` (or ``(H, W)``, or a batch of one ``(1, C, H, W)``).
        layer: which layer: its index in :func:`layer_outputs` (negative counts from the end),
            its summary name (``"convolution_1"``), or ``None`` for the last layer whose output
            is an image ``(C, H, W)``.
        path: also write the figure there as a PNG.
        max_maps: draw at most this many channels.
        title: the figure's title (default: the layer's name and output shape).

    Returns:
        The matplotlib figure (one axes per channel, titled ``channel k``). A layer whose output
        is a vector ``(F,)`` is drawn as one bar chart.

    Example:
        >>> from nn_from_scratch import zoo
        >>> fig = plot_feature_maps(zoo.seed_cnn(seed=0), np.zeros((1, 28, 28), np.float32), layer="convolution")
        >>> fig.axes[0].get_title()
        'channel 0'
    """
    x = np.asarray(image)
    x = x if x.ndim == 4 else x[None]
    if len(x) != 1:
        raise ValueError(f"plot_feature_maps: expected one image, got a batch of {len(x)} (shape {np.shape(image)})")
    outputs = layer_outputs(model, x)
    names = [name for name, _ in outputs]
    if layer is None:
        index = max((i for i, (_, a) in enumerate(outputs) if a.ndim == 4), default=len(outputs) - 1)
    elif isinstance(layer, str):
        if layer not in names:
            raise ValueError(f"plot_feature_maps: no layer named {layer!r}; the layers are {names}")
        index = names.index(layer)
    else:
        if not -len(outputs) <= int(layer) < len(outputs):
            raise ValueError(f"plot_feature_maps: layer index {layer} out of range for {len(outputs)} layers")
        index = int(layer) % len(outputs)
    name, maps = outputs[index]
    maps = np.asarray(maps[0], dtype=float)
    plt = _pyplot()
    if maps.ndim != 3:
        fig, ax = plt.subplots(figsize=(6, 3))
        flat = maps.ravel()
        ax.bar(np.arange(len(flat)), flat, color="tab:blue")
        ax.set_title(f"{name} output {tuple(maps.shape)}")
        ax.set_xlabel("feature")
        ax.set_ylabel("activation")
        return _finish(fig, path)
    count = min(len(maps), max_maps)
    cols = min(count, 8)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols, 1.6 * rows + 0.5), squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= count:
            fig.delaxes(ax)
            continue
        ax.imshow(maps[k], cmap="viridis", interpolation="nearest")
        ax.set_title(f"channel {k}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or f"{name}: output {tuple(maps.shape)} (layer {index})")
    return _finish(fig, path)


# -- classification --------------------------------------------------------------------
def plot_confusion_matrix(y_true: Any, y_pred: Any, class_names: Sequence[str] | None = None,
                          normalize: bool = False, path: str | os.PathLike | None = None,
                          title: str = "confusion matrix") -> Any:
    """The confusion matrix of a classifier (:func:`nn_from_scratch.metrics.confusion_matrix`),
    rows the true class, columns the predicted one, each cell labelled with its count.

    Args:
        y_true: true classes ``(N,)`` (integers) or one-hot ``(N, K)``.
        y_pred: predicted classes ``(N,)``, or scores/probabilities ``(N, K)`` (argmax taken).
        class_names: ``K`` names for the axes (default ``0 .. K-1``).
        normalize: show each row as fractions of the true class (the recall on the diagonal).
        path: also write the figure there as a PNG.
        title: the axes' title.

    Returns:
        The matplotlib figure.

    Example:
        >>> fig = plot_confusion_matrix([0, 1, 1, 2], [0, 1, 2, 2])
        >>> fig.axes[0].get_xlabel()
        'predicted'
    """
    from .metrics import confusion_matrix

    k = len(class_names) if class_names is not None else None
    matrix = confusion_matrix(y_true, y_pred, num_classes=k)
    k = len(matrix)
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    shown = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1) if normalize else matrix
    plt = _pyplot()
    size = max(4.0, 0.5 * k + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(shown, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax, shrink=0.8)
    ax.set_xticks(range(k), names, rotation=45 if max(map(len, names)) > 2 else 0, ha="right" if max(map(len, names)) > 2 else "center")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    top = float(np.max(shown)) if shown.size else 0.0
    for i in range(k):
        for j in range(k):
            text = f"{shown[i, j]:.2f}" if normalize else str(int(matrix[i, j]))
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if top and shown[i, j] > 0.5 * top else "black")
    return _finish(fig, path)


def plot_predictions(images: Any, y_true: Any, y_pred: Any, class_names: Sequence[str] | None = None,
                     path: str | os.PathLike | None = None, max_images: int = 32, cols: int = 8,
                     title: str | None = None) -> Any:
    """A grid of images, each titled with its predicted and true class; mistakes in red.

    Args:
        images: ``(N, H, W)``, ``(N, 1, H, W)`` or ``(N, 3, H, W)`` (any scale; each image is
            drawn on its own range).
        y_true: true classes ``(N,)`` or one-hot ``(N, K)``.
        y_pred: predicted classes ``(N,)``, or scores ``(N, K)``; with scores, the title also
            gives the predicted class's softmax probability.
        class_names: names of the classes (default: their numbers).
        path: also write the figure there as a PNG.
        max_images: draw at most this many (the first ones; pass the mistakes to see only them).
        cols: images per row.
        title: the figure's title (default: how many of those drawn are wrong).

    Returns:
        The matplotlib figure; each axes is titled ``"pred <p> / true <t>"``.

    Example:
        >>> fig = plot_predictions(np.zeros((2, 28, 28)), [3, 5], [3, 1])
        >>> [ax.get_title() for ax in fig.axes]
        ['pred 3 / true 3', 'pred 1 / true 5']
    """
    from .metrics import class_labels, predicted_classes

    images = np.asarray(images, dtype=float)
    scores = np.asarray(y_pred)
    predicted = predicted_classes(scores) if scores.ndim == 2 else scores.astype(np.intp)
    truth = np.asarray(y_true)
    truth = truth.argmax(axis=1) if truth.ndim == 2 else truth.astype(np.intp)
    if not (len(images) == len(predicted) == len(truth)):
        raise ValueError(f"plot_predictions: images, y_true and y_pred must have the same length, "
                         f"got {len(images)}, {len(truth)} and {len(predicted)}")
    probability = None
    if scores.ndim == 2:
        z = scores - scores.max(axis=1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        probability = p[np.arange(len(p)), predicted] if not np.allclose(scores.sum(axis=1), 1) or scores.min() < 0 \
            else scores[np.arange(len(scores)), predicted]
    count = min(len(images), max_images)
    cols = max(1, min(cols, count))
    rows = max(1, math.ceil(count / cols))

    def name(c: int) -> str:
        return str(class_names[c]) if class_names is not None else str(int(c))

    plt = _pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(1.7 * cols, 1.9 * rows + 0.4), squeeze=False)
    wrong = 0
    for k, ax in enumerate(axes.flat):
        if k >= count:
            fig.delaxes(ax)
            continue
        img = images[k]
        if img.ndim == 3 and img.shape[0] == 1:
            img = img[0]
        elif img.ndim == 3:
            img = np.moveaxis(img, 0, -1)
            img = (img - img.min()) / ((img.max() - img.min()) or 1.0)
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
        miss = predicted[k] != truth[k]
        wrong += int(miss)
        label = f"pred {name(predicted[k])} / true {name(truth[k])}"
        if probability is not None:
            ax.set_xlabel(f"p = {probability[k]:.2f}", fontsize=7)
        ax.set_title(label, fontsize=7, color="red" if miss else "black")
        if miss:
            for side in ax.spines.values():
                side.set_edgecolor("red")
                side.set_linewidth(2)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or f"{wrong} of {count} wrong (red)")
    return _finish(fig, path)


# -- comparison with a reference ---------------------------------------------------------
def plot_comparison(report: Any, path: str | os.PathLike | None = None, title: str | None = None) -> Any:
    """A :func:`nn_from_scratch.verify.compare` report as a picture: per layer, the relative
    error of its output, of ``dL/dx`` and of each parameter gradient, on a log scale, with the
    tolerance as a dashed line and the first divergence marked.

    Exact agreement (error 0) is drawn at the bottom of the axis (``1e-18``), labelled "exact".

    Args:
        report: the :class:`~nn_from_scratch.verify.compare.ComparisonReport` of ``compare``.
        path: also write the figure there as a PNG.
        title: the axes' title (default: reference, dtype, mode and the verdict).

    Returns:
        The matplotlib figure: x the layers (``"index name"``), y ``max|ours - ref| / max|ref|``.

    Example:
        >>> from nn_from_scratch import zoo, verify
        >>> from nn_from_scratch.losses import SoftMaxLoss
        >>> model = zoo.seed_cnn(dtype=np.float64, seed=0)
        >>> report = verify.compare(model, np.random.rand(2, 1, 28, 28), np.array([3, 5]), loss=SoftMaxLoss())
        >>> plot_comparison(report).axes[0].get_ylabel()
        'relative error'
    """
    rows = list(report.rows)
    if not rows:
        raise ValueError("plot_comparison: the report has no rows")
    floor = 1e-18
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(min(16.0, max(6.0, 0.45 * len(rows) + 3)), 4.6))
    xs = np.arange(len(rows))

    def value(stat: Any) -> float:
        return max(float(stat.max_rel), floor) if math.isfinite(stat.max_rel) else 1e3

    series: dict[str, list[tuple[int, float]]] = {"output": [], "dL/dx": []}
    for i, row in enumerate(rows):
        series["output"].append((i, value(row.output)))
        grads = row.input_grads if row.input_grads else ([row.input_grad] if row.input_grad is not None else [])
        for g in grads:
            series["dL/dx"].append((i, value(g)))
        for pname, stat in row.param_grads.items():
            series.setdefault(f"d{pname}", []).append((i, value(stat)))
    markers = {"output": ("o", 0.0), "dL/dx": ("s", -0.12)}
    extra = ["^", "v", "D", "P", "X", "*"]
    for n, (label, points) in enumerate(series.items()):
        if not points:
            continue
        marker, shift = markers.get(label, (extra[(n - 2) % len(extra)], 0.12))
        ax.scatter([p[0] + shift for p in points], [p[1] for p in points], marker=marker, label=label, s=36, zorder=3)
    ax.axhline(report.tol, color="red", linestyle="--", linewidth=1, label=f"tolerance {report.tol:g}")
    div = report.first_divergence
    if div is not None:
        j = rows.index(div)
        ax.axvspan(j - 0.4, j + 0.4, color="red", alpha=0.15, zorder=0)
        ax.annotate("first divergence", (j, report.tol), xytext=(6, 12), textcoords="offset points", color="red", fontsize=9)
    ax.set_yscale("log")
    ax.set_ylim(floor / 3, max(10.0, max(p[1] for pts in series.values() for p in pts) * 10))
    ax.text(0.005, floor, "exact", transform=ax.get_yaxis_transform(), fontsize=7, va="bottom", color="gray")
    ax.set_xticks(xs, [row.label for row in rows], rotation=35, ha="right", fontsize=8)
    ax.set_xlabel("layer")
    ax.set_ylabel("relative error")
    verdict = "OK" if div is None else f"diverges at {div.label}"
    ax.set_title(title or f"compare vs {report.reference}, {np.dtype(report.dtype).name}, "
                          f"{report.mode.replace('_', ' ')}: {verdict}")
    ax.grid(alpha=0.3, which="major")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _finish(fig, path)
