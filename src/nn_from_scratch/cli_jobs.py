"""The jobs behind the command line's subcommands other than ``train`` and ``export``
(:mod:`nn_from_scratch.cli` parses the arguments and calls these).

Each job prints its result through ``out`` (a ``print``-like function) and returns the exit
status; a bad path or value raises :class:`UsageError`, which the command line reports in one
line with exit status 2.

    from nn_from_scratch import cli_jobs
    cli_jobs.summary("lenet.safetensors", print)
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["UsageError", "compare", "evaluate", "gradcheck", "load", "predict", "read_input", "summary"]

Out = Callable[[str], Any]


class UsageError(Exception):
    """A bad path or argument: the command line prints its message in one line and exits with 2.

    Args:
        *args: the message, e.g. ``"cannot load model 'm.safetensors': no such file"``.

    Example:
        >>> try:
        ...     load("no-such-model.safetensors")
        ... except UsageError as error:
        ...     print(error)
        cannot load model 'no-such-model.safetensors': no such file
    """


def load(path: str) -> Any:
    """The model saved at ``path`` (:func:`~nn_from_scratch.serialization.load_model`).

    Args:
        path: a ``.safetensors`` file written by ``train --save`` or ``model.save``.

    Returns:
        The model (a ``Sequential`` or a graph ``Model``).

    Raises:
        UsageError: the file is missing, unreadable or not a model file (the reason in one line).

    Example:
        >>> load("no/such/file.safetensors")
        Traceback (most recent call last):
        ...
        nn_from_scratch.cli_jobs.UsageError: cannot load model 'no/such/file.safetensors': no such file
    """
    from .errors import ModelFileError
    from .serialization import load_model

    if not os.path.exists(path):
        raise UsageError(f"cannot load model {path!r}: no such file")
    try:
        return load_model(path)
    except (ModelFileError, OSError, ValueError) as error:
        reason = " ".join(str(error).split())
        raise UsageError(f"cannot load model {path!r}: {reason}") from None


def _model_input_shape(model: Any) -> tuple[int, ...]:
    shape = getattr(model, "input_shape", None)
    if shape is None:
        raise UsageError("the model has no input shape (it was saved before it was built)")
    return tuple(shape)


def _prepare(images: np.ndarray, model: Any, preprocessing: str) -> np.ndarray:
    """uint8 images -> the model's input (``zoo.preprocess_images``); floats are used as they are."""
    from . import zoo

    dtype = model.dtype or np.float32
    if images.dtype.kind in "iub":
        if images.ndim == 4:  # (N, C, H, W) uint8
            x = images.astype(dtype)
            return x / 255 if preprocessing == "scale" else (x - zoo.MNIST_MEAN) / zoo.MNIST_STD
        return zoo.preprocess_images(images, preprocessing, dtype=dtype)
    x = images.astype(dtype)
    return x[:, None] if x.ndim == 3 and len(_model_input_shape(model)) == 3 else x


def evaluate(model_path: str, dataset: str, preprocessing: str, limit: int | None, out: Out,
             batch_size: int = 1000) -> int:
    """Accuracy, the per-class table and the confusion matrix of a saved model on a test set.

    Args:
        model_path: a saved model (``train --save``).
        dataset: ``"mnist"`` or ``"fashion_mnist"`` (its 10,000 test images, ``(N, 28, 28)``).
        preprocessing: ``"scale"`` (``x / 255``) or ``"standardize"``, as the model was trained.
        limit: use only the first ``limit`` test images (``None``: all).
        out: where the lines go (``print``).
        batch_size: images per forward pass.

    Returns:
        0.

    Example:
        >>> evaluate("lenet.safetensors", "mnist", "scale", 1000, print)  # doctest: +SKIP
        accuracy: 0.9870 (1000 images of mnist)
    """
    from .datasets import load_dataset
    from .metrics import classification_report, confusion_matrix

    model = load(model_path)
    _, (x_test, y_test) = load_dataset(dataset)
    if limit is not None:
        x_test, y_test = x_test[:limit], y_test[:limit]
    x = _prepare(x_test, model, preprocessing)
    if x.shape[1:] != _model_input_shape(model):
        raise UsageError(f"the model takes inputs of shape {_model_input_shape(model)}, {dataset} gives {x.shape[1:]}")
    predicted = model.predict(x, batch_size=batch_size).argmax(axis=1)
    names = _class_names(dataset)
    out(f"accuracy: {np.mean(predicted == y_test):.4f} ({len(y_test)} images of {dataset})")
    out("")
    out(classification_report(y_test, predicted, class_names=names))
    matrix = confusion_matrix(y_test, predicted, num_classes=10)
    out("confusion matrix (rows: true class, columns: predicted class)")
    width = max(5, len(str(int(matrix.max()))) + 1)
    out(" " * 12 + "".join(f"{j:>{width}}" for j in range(len(matrix))))
    for i, row in enumerate(matrix):
        out(f"{i:>2} {names[i][:9]:<9}" + "".join(f"{int(v):>{width}}" for v in row))
    return 0


def _class_names(dataset: str | None) -> list[str]:
    if dataset == "fashion_mnist":
        from .datasets.fashion_mnist import CLASS_NAMES

        return list(CLASS_NAMES)
    return [str(i) for i in range(10)]


def read_input(path: str, input_shape: Sequence[int]) -> np.ndarray:
    """The images in one file, as a batch ``(N, *input_shape)`` (uint8 kept as uint8).

    Args:
        path: a ``.npy`` file (one image ``input_shape`` or ``(H, W)``, or a batch of them) or a
            PNG (Pillow; converted to grey for one channel, RGB for three, never resized).
        input_shape: the model's per-sample input shape, e.g. ``(1, 28, 28)``.

    Returns:
        ``(N, *input_shape)``.

    Raises:
        UsageError: missing file, unknown extension, unreadable file or a shape that does not fit.

    Example:
        >>> np.save("/tmp/digit.npy", np.zeros((28, 28), np.uint8))
        >>> read_input("/tmp/digit.npy", (1, 28, 28)).shape
        (1, 1, 28, 28)
    """
    if not os.path.isfile(path):
        raise UsageError(f"cannot read {path!r}: no such file")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise UsageError(f"cannot read {path!r}: not a .npy array ({' '.join(str(error).split())})") from None
    elif ext == ".png":
        try:
            from PIL import Image, UnidentifiedImageError
        except ImportError:
            raise UsageError("reading PNG images needs Pillow: pip install 'nn_from_scratch[images]'") from None
        try:
            with Image.open(path) as image:
                rgb = len(input_shape) == 3 and input_shape[0] == 3
                array = np.asarray(image.convert("RGB" if rgb else "L"))
        except (OSError, UnidentifiedImageError) as error:
            raise UsageError(f"cannot read {path!r}: not a PNG image ({' '.join(str(error).split())})") from None
        if array.ndim == 3:
            array = np.moveaxis(array, -1, 0)
    else:
        raise UsageError(f"cannot read {path!r}: expected a .npy or .png file")
    if array.dtype.kind not in "iubf":
        raise UsageError(f"cannot read {path!r}: expected numbers, got dtype {array.dtype}")
    shape = tuple(input_shape)
    if array.shape == shape:
        return array[None]
    if array.shape[-len(shape):] == shape and array.ndim == len(shape) + 1:
        return array
    if len(shape) == 3 and shape[0] == 1 and array.shape[-2:] == shape[1:] and array.ndim in (2, 3):
        return array.reshape((-1,) + shape)
    raise UsageError(f"cannot use {path!r}: the model takes images of shape {shape}, the file holds {array.shape}")


def predict(model_path: str, files: Sequence[str], preprocessing: str, class_names: Sequence[str] | None,
            out: Out) -> int:
    """Print the predicted class and its probability for every image of ``files``.

    Args:
        model_path: a saved model.
        files: ``.npy`` or PNG files (see :func:`read_input`); uint8 pixels are preprocessed as
            in training, float arrays are taken as they are.
        preprocessing: ``"scale"`` or ``"standardize"``.
        class_names: names to print beside the class numbers (``None``: numbers only).
        out: where the lines go.

    Returns:
        0.

    Example:
        >>> predict("lenet.safetensors", ["digit.png"], "scale", None, print)  # doctest: +SKIP
        digit.png: class 7 (probability 0.9981)
    """
    model = load(model_path)
    shape = _model_input_shape(model)
    batches = [(path, read_input(path, shape)) for path in files]  # every file checked before any output
    for path, images in batches:
        logits = np.asarray(model.predict(_prepare(images, model, preprocessing), batch_size=None), dtype=np.float64)
        z = logits - logits.max(axis=1, keepdims=True)
        probabilities = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        for k, p in enumerate(probabilities):
            c = int(p.argmax())
            name = f" {class_names[c]}" if class_names is not None and c < len(class_names) else ""
            where = path if len(probabilities) == 1 else f"{path}[{k}]"
            out(f"{where}: class {c}{name} (probability {p[c]:.4f})")
    return 0


def summary(model: str, out: Out) -> int:
    """Print ``model.summary()`` of a saved model file or of a zoo model by name.

    Args:
        model: a saved model's path, or a name of ``zoo.MODELS`` (``seed``, ``lenet``, ``resnet``, ``mobilenet``).
        out: where the lines go.

    Returns:
        0.

    Example:
        >>> summary("seed", print)  # doctest: +SKIP
        Model: "Sequential"
        ...
    """
    from . import zoo

    if model in zoo.MODELS and not os.path.exists(model):
        net = zoo.MODELS[model](seed=0)
        net.ensure_built(np.zeros((1, 1, 28, 28), np.float32))
    else:
        net = load(model)
    net.summary(print_fn=out)
    return 0


def _zoo_model(name: str, seed: int) -> Any:
    from . import zoo
    from .losses import SoftMaxLoss

    model = zoo.MODELS[name](seed=seed, dtype=np.float64)
    if getattr(model, "loss", None) is None:
        model.loss = SoftMaxLoss()
    return model


def _batch(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 28, 28)), rng.integers(0, 10, n)


def gradcheck(model: str, batch: int, seed: int, out: Out) -> int:
    """Finite differences against backpropagation on a zoo model in float64
    (:func:`nn_from_scratch.verify.gradcheck`): dL/dx and every parameter gradient.

    Args:
        model: a name of ``zoo.MODELS``.
        batch: how many random 1x28x28 inputs (the softmax loss on random labels).
        seed: seeds the weights and the batch.
        out: where the lines go.

    Returns:
        0 when every gradient agrees, 1 otherwise (the failing tensor named).

    Example:
        >>> gradcheck("seed", 2, 0, print)  # doctest: +SKIP
        gradcheck seed (float64, batch 2): every gradient agrees with finite differences
    """
    from .verify import gradcheck as check
    from .verify.gradcheck import GradcheckError

    net = _zoo_model(model, seed)
    x, y = _batch(batch, seed)
    n_params = sum(int(np.size(p)) for _, p in net.parameters())
    try:
        check(net, x, y, training=False)
    except GradcheckError as error:
        out(f"gradcheck {model} (float64, batch {batch}): FAILED\n{error}")
        return 1
    out(f"gradcheck {model} (float64, batch {batch}, inference mode): dL/dx and the gradients of "
        f"{n_params:,} parameters agree with central finite differences")
    return 0


def compare(model: str, reference: str, batch: int, seed: int, dtype: str, mode: str, plot: str | None, out: Out) -> int:
    """One forward and backward pass of a zoo model and its torch or Keras twin, layer by layer
    (:func:`nn_from_scratch.verify.compare`); prints the per-layer table.

    Args:
        model: a name of ``zoo.MODELS``.
        reference: ``"torch"`` or ``"keras"``.
        batch: how many random 1x28x28 inputs.
        seed: seeds the weights and the batch.
        dtype: ``"float64"`` or ``"float32"``, both sides.
        mode: ``"local"`` (each layer on our inputs) or ``"end_to_end"``.
        plot: also write :func:`nn_from_scratch.plots.plot_comparison` there (PNG), or ``None``.
        out: where the lines go.

    Returns:
        0 when every tensor agrees within the tolerance, 1 otherwise.

    Example:
        >>> compare("seed", "torch", 4, 0, "float64", "local", None, print)  # doctest: +SKIP
        compare vs torch, float64, local: ...
    """
    from .verify import compare as run_compare

    net = _zoo_model(model, seed)
    x, y = _batch(batch, seed)
    try:
        report = run_compare(net, x, y, reference=reference, dtype=dtype, mode=mode)
    except ImportError as error:
        raise UsageError(f"--reference {reference} needs {error.name or 'its library'}: "
                         f"pip install 'nn_from_scratch[{reference}]'") from None
    out(str(report))
    if plot is not None:
        from .plots import plot_comparison

        plot_comparison(report, path=plot)
        out(f"wrote {plot}")
    return 0 if report.ok else 1
