"""Named models, ready to train, and the input preprocessing they expect.

``MODELS`` maps a name (as the command line's ``--model`` takes it) to a builder
``builder(dtype=np.float32, seed=None)`` that returns an untrained, built model for
``(N, 1, 28, 28)`` inputs, without loss or optimizer (the trainer adds those): a
:class:`~nn_from_scratch.model.Sequential` (``seed``, ``lenet``) or a graph
:class:`~nn_from_scratch.graph.Model` (``resnet``, ``mobilenet``; these also take
``input_shape=(3, 32, 32)`` and ``num_classes``). ``RECIPES`` holds how ``train`` trains each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .graph import Input, Model
from .model import Sequential
from .neurons import BatchNormalization, Convolution, Linear
from .nodes import Add, GlobalAveragePooling, MaxPooling, ReLU, Vectorization

# Mean and standard deviation of the 47 million pixels of the MNIST training set (uint8 scale).
MNIST_MEAN = 33.318
MNIST_STD = 78.567

PREPROCESSING = ("standardize", "scale")
DEFAULT_PREPROCESSING = "scale"


def preprocess_images(images: np.ndarray, method: str = DEFAULT_PREPROCESSING, dtype: Any = np.float32) -> np.ndarray:
    """uint8 images ``(N, H, W)`` -> network input ``(N, 1, H, W)`` of ``dtype``.

    ``"standardize"``: ``(x - 33.318) / 78.567``, zero mean and unit variance over the training
    set. ``"scale"``: ``x / 255``, into ``[0, 1]``, as the seed notebook did.

    Args:
        images: uint8 pixels ``(N, H, W)``.
        method: ``"scale"`` or ``"standardize"``.
        dtype: the floating type of the result.

    Returns:
        ``(N, 1, H, W)`` of ``dtype``.

    Example:
        >>> preprocess_images(np.full((2, 28, 28), 255, np.uint8)).shape
        (2, 1, 28, 28)
    """
    x = np.asarray(images).astype(dtype)[:, None]
    if method == "standardize":
        return (x - MNIST_MEAN) / MNIST_STD  # Python floats keep x's dtype (NEP 50)
    if method == "scale":
        return x / 255
    raise ValueError(f"preprocess_images: method must be one of {PREPROCESSING}, got {method!r}")


def seed_cnn(dtype: Any = np.float32, seed: int | None = None) -> Sequential:
    """The seed notebook's CNN for 28x28 grey images, 10 classes (8,438 parameters)::

        conv 3x3, 4 channels, no bias -> ReLU       (N, 4, 26, 26)
        conv 7x7, 2 channels, no bias -> ReLU       (N, 2, 20, 20)
        flatten                                     (N, 800)
        linear 800 -> 10                            (N, 10) logits

    Args:
        dtype: float32 (default) or float64.
        seed: seeds the model's generator (initial weights, shuffles).

    Returns:
        A built :class:`~nn_from_scratch.model.Sequential` without loss or optimizer.

    Example:
        >>> seed_cnn(seed=0).count_params()
        8438
    """
    layers = [
        Convolution(kernel_size=3, output_layers=4, use_bias=False, dtype=dtype),
        ReLU(),
        Convolution(kernel_size=7, output_layers=2, use_bias=False, dtype=dtype),
        ReLU(),
        Vectorization(),
        Linear(800, 10, dtype=dtype),
    ]
    return Sequential(layers, input_shape=(1, 28, 28), seed=seed)


def lenet5(dtype: Any = np.float32, seed: int | None = None, batch_norm: bool = True) -> Sequential:
    """A LeNet-5 class CNN for 28x28 grey images, 10 classes (ReLU and max pooling, as is usual
    today, instead of LeCun's tanh and subsampling)::

        conv 5x5, 6 channels, padding 2 [-> batch norm] -> ReLU -> max pool 2   (N, 6, 14, 14)
        conv 5x5, 16 channels [-> batch norm] -> ReLU -> max pool 2             (N, 16, 5, 5)
        flatten -> linear 400 -> 120 -> ReLU -> linear 120 -> 84 -> ReLU        (N, 84)
        linear 84 -> 10                                                         (N, 10) logits

    With ``batch_norm`` (the default) each convolution is followed by batch normalisation
    (and has no bias, which the normalisation would cancel); it makes a few epochs of Adam
    reach 99% test accuracy reliably.

    Args:
        dtype: float32 (default) or float64.
        seed: seeds the model's generator.
        batch_norm: follow each convolution with batch normalisation.

    Returns:
        A built ``Sequential`` taking ``(N, 1, 28, 28)``, without loss or optimizer.

    Example:
        >>> lenet5(seed=0).predict(np.zeros((2, 1, 28, 28), np.float32)).shape
        (2, 10)
    """

    def conv_block(kernel: int, channels: int, padding: int) -> list:
        conv = Convolution(kernel_size=kernel, output_layers=channels, padding=padding, use_bias=not batch_norm, dtype=dtype)
        norm = [BatchNormalization(dtype=dtype)] if batch_norm else []
        return [conv, *norm, ReLU(), MaxPooling(2)]

    layers = [
        *conv_block(5, 6, 2),
        *conv_block(5, 16, 0),
        Vectorization(),
        Linear(400, 120, dtype=dtype),
        ReLU(),
        Linear(120, 84, dtype=dtype),
        ReLU(),
        Linear(84, 10, dtype=dtype),
    ]
    return Sequential(layers, input_shape=(1, 28, 28), seed=seed)


def _conv_bn(x: Any, channels: int, kernel: int, dtype: Any, groups: int = 1) -> Any:
    """``kernel x kernel`` convolution ('same' size, stride 1, no bias) -> batch norm."""
    conv = Convolution(kernel_size=kernel, output_layers=channels, padding=kernel // 2, use_bias=False, groups=groups,
                       dtype=dtype)
    return BatchNormalization(dtype=dtype)(conv(x))


def _halve(x: Any) -> Any:
    """2x2 max pooling; an odd side is padded by 1 on both ends (torch's ``MaxPool2d(2, padding=1)``),
    so 7 -> 4 and no row is dropped."""
    h, w = x.shape[-2:]
    return MaxPooling(2, padding=(h % 2, w % 2))(x)


def _check_image_input(input_shape: Any, who: str) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1 or min(shape[1:]) < 8:
        raise ValueError(f"zoo.{who}: input_shape must be (channels, height, width) with height, width >= 8, got {input_shape!r}")
    return shape


def resnet(
    input_shape: tuple[int, int, int] = (1, 28, 28),
    num_classes: int = 10,
    width: int = 32,
    blocks: tuple[int, ...] = (1, 1, 1),
    dtype: Any = np.float32,
    seed: int | None = None,
) -> Model:
    """A small residual network (He et al., 2016) with batch norm and projection shortcuts.

    Every convolution has stride 1; the network downsamples with 2x2 max pooling, which is
    cheaper here than strided convolutions. For ``width = w`` and ``blocks = (1, 1, 1)``
    (shapes for ``1x28x28``; ``3x32x32`` goes 32 -> 16 -> 8 -> 4)::

        stem     conv 3x3 (w) -> BN -> ReLU -> max pool 2                  (N, w, 14, 14)
        stage 1  residual block (w)                                        (N, w, 14, 14)
        stage 2  max pool 2 -> residual block (2w), projection shortcut    (N, 2w, 7, 7)
        stage 3  max pool 2 (pad 1) -> residual block (4w), projection     (N, 4w, 4, 4)
        head     global average pooling -> linear (num_classes)            (N, num_classes) logits

    A residual block is ``ReLU(BN(conv3x3(ReLU(BN(conv3x3(x))))) + shortcut(x))``, where the
    shortcut is ``x`` itself or, when the width changes, ``BN(conv1x1(x))``. ``blocks[k]`` is
    the number of blocks of stage ``k + 1`` (the first of a stage carries the projection).
    Width 32 has 308,074 parameters for ``1x28x28``.

    Args:
        input_shape: per-sample ``(channels, height, width)``, e.g. ``(1, 28, 28)`` or ``(3, 32, 32)``.
        num_classes: number of logits.
        width: channels of the stem and of stage 1; each later stage doubles it.
        blocks: residual blocks per stage (any number of stages).
        dtype: float32 (default) or float64.
        seed: seeds the model's generator, which draws the initial weights.

    Returns:
        A built graph :class:`~nn_from_scratch.graph.Model` without loss or optimizer.

    Example:
        >>> model = resnet((3, 32, 32), num_classes=10, width=8, seed=0)
        >>> model.predict(np.zeros((2, 3, 32, 32), np.float32)).shape
        (2, 10)
    """
    shape = _check_image_input(input_shape, "resnet")
    if int(width) < 1 or int(num_classes) < 1 or not blocks or min(blocks) < 1:
        raise ValueError(f"zoo.resnet: need width >= 1, num_classes >= 1 and blocks >= 1 per stage, got {width}, {num_classes}, {blocks}")
    inputs = Input(shape=shape)
    h = _halve(ReLU()(_conv_bn(inputs, width, 3, dtype)))
    channels = width
    for stage, count in enumerate(blocks):
        if stage > 0:
            h = _halve(h)
        for _ in range(count):
            out = width * 2 ** stage
            branch = _conv_bn(ReLU()(_conv_bn(h, out, 3, dtype)), out, 3, dtype)
            shortcut = h if out == channels else _conv_bn(h, out, 1, dtype)
            h, channels = ReLU()(Add()([branch, shortcut])), out
    logits = Linear(output_dim=int(num_classes), dtype=dtype)(GlobalAveragePooling()(h))
    return Model(inputs, logits, seed=seed, name="resnet")


def mobilenet(
    input_shape: tuple[int, int, int] = (1, 28, 28),
    num_classes: int = 10,
    width: int = 32,
    dtype: Any = np.float32,
    seed: int | None = None,
) -> Model:
    """A small depthwise-separable network in the manner of MobileNet (Howard et al., 2017).

    A separable block is a depthwise 3x3 convolution (``groups = channels``: one filter per
    channel) -> BN -> ReLU, then a pointwise 1x1 convolution that mixes the channels -> BN ->
    ReLU. Downsampling is 2x2 max pooling. For ``width = w`` (shapes for ``1x28x28``)::

        stem     conv 3x3 (w) -> BN -> ReLU -> max pool 2                  (N, w, 14, 14)
        block    separable (w -> 2w)                                       (N, 2w, 14, 14)
        pool     max pool 2 -> separable (2w -> 4w) -> separable (4w)      (N, 4w, 7, 7)
        pool     max pool 2 (pad 1) -> separable (4w -> 8w)                (N, 8w, 4, 4)
        head     global average pooling -> linear (num_classes)            (N, num_classes) logits

    Args:
        input_shape: per-sample ``(channels, height, width)``.
        num_classes: number of logits.
        width: channels of the stem; the blocks double it three times.
        dtype: float32 (default) or float64.
        seed: seeds the model's generator, which draws the initial weights.

    Returns:
        A built graph :class:`~nn_from_scratch.graph.Model` without loss or optimizer.

    Example:
        >>> model = mobilenet((1, 28, 28), width=8, seed=0)
        >>> model.predict(np.zeros((2, 1, 28, 28), np.float32)).shape
        (2, 10)
    """
    shape = _check_image_input(input_shape, "mobilenet")
    if int(width) < 1 or int(num_classes) < 1:
        raise ValueError(f"zoo.mobilenet: need width >= 1 and num_classes >= 1, got {width} and {num_classes}")

    def separable(x: Any, out: int) -> Any:
        x = ReLU()(_conv_bn(x, x.shape[0], 3, dtype, groups=x.shape[0]))
        return ReLU()(_conv_bn(x, out, 1, dtype))

    inputs = Input(shape=shape)
    h = _halve(ReLU()(_conv_bn(inputs, width, 3, dtype)))
    h = separable(h, 2 * width)
    h = separable(separable(_halve(h), 4 * width), 4 * width)
    h = separable(_halve(h), 8 * width)
    logits = Linear(output_dim=int(num_classes), dtype=dtype)(GlobalAveragePooling()(h))
    return Model(inputs, logits, seed=seed, name="mobilenet")


MODELS: dict[str, Callable[..., Sequential | Model]] = {
    "seed": seed_cnn,
    "lenet": lenet5,
    "resnet": resnet,
    "mobilenet": mobilenet,
}


@dataclass(frozen=True)
class Recipe:
    """How the command line trains a model unless told otherwise.

    ``optimizer``: ``"sgd"`` (:class:`~nn_from_scratch.optimizers.GradientDescent` with
    ``momentum``, ``nesterov`` and ``weight_decay``) or ``"adam"``; ``schedule``: ``"constant"``
    or ``"cosine"`` (per batch, a linear warm-up over ``warmup_epochs`` then a cosine from
    ``lr`` to 0 over the rest of the run, :class:`~nn_from_scratch.callbacks.CosineDecay`).
    ``label_smoothing`` goes to :class:`~nn_from_scratch.losses.SoftMaxLoss`; ``crop_padding``
    and ``flip`` to :class:`~nn_from_scratch.augment.RandomCropFlip` (no augmentation when
    both are off). ``dataset`` is the default of ``--dataset``.

    Args:
        epochs: passes over the training set.
        batch_size: samples per step.
        lr: the (peak) learning rate.
        optimizer: ``"sgd"`` or ``"adam"``.
        schedule: ``"constant"`` or ``"cosine"``.
        preprocessing: ``"scale"`` or ``"standardize"`` (see :func:`preprocess_images`).
        momentum: SGD's momentum.
        nesterov: SGD's Nesterov momentum.
        weight_decay: SGD's (L2) weight decay.
        warmup_epochs: epochs of linear warm-up before the cosine.
        label_smoothing: the loss's label smoothing.
        crop_padding: pixels of padding for random crops (0: none).
        flip: random horizontal flips.
        dataset: the default dataset, e.g. ``"mnist"``.

    Example:
        >>> RECIPES["lenet"].optimizer, RECIPES["lenet"].lr, RECIPES["lenet"].epochs
        ('adam', 0.004, 3)
    """

    epochs: int
    batch_size: int
    lr: float
    optimizer: str = "sgd"
    schedule: str = "constant"
    preprocessing: str = "scale"
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    crop_padding: int = 0
    flip: bool = False
    dataset: str = "mnist"


RECIPES: dict[str, Recipe] = {
    # The notebook's settings, shuffled every epoch. x / 255 rather than standardised inputs:
    # with standardisation some seeds start with dead ReLUs and never recover under plain SGD.
    "seed": Recipe(epochs=1, batch_size=50, lr=0.1, optimizer="sgd", schedule="constant", preprocessing="scale"),
    "lenet": Recipe(epochs=3, batch_size=64, lr=4e-3, optimizer="adam", schedule="cosine", preprocessing="scale"),
    # Fashion-MNIST, 1x28x28. SGD with Nesterov momentum and weight decay, a 2-epoch linear warm-up then
    # a per-batch cosine to 0, label smoothing 0.1, fresh 2-pixel crops and flips every epoch.
    "resnet": Recipe(epochs=10, batch_size=128, lr=0.1, optimizer="sgd", schedule="cosine", preprocessing="scale",
                     momentum=0.9, nesterov=True, weight_decay=5e-4, warmup_epochs=2, label_smoothing=0.1,
                     crop_padding=2, flip=True, dataset="fashion_mnist"),
    "mobilenet": Recipe(epochs=10, batch_size=128, lr=0.1, optimizer="sgd", schedule="cosine", preprocessing="scale",
                        momentum=0.9, nesterov=True, weight_decay=5e-4, warmup_epochs=2, label_smoothing=0.1,
                        crop_padding=2, flip=True, dataset="fashion_mnist"),
}
