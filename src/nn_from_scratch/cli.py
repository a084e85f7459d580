"""The command line: ``python -m nn_from_scratch train``.

Trains a named model (see :mod:`nn_from_scratch.zoo`) on the bundled MNIST with mini-batch
SGD and softmax cross-entropy, shows a progress bar with the running loss, and prints the test
accuracy. The defaults are the seed notebook's: the seed CNN, all 60,000 training images,
1 epoch, batch 50, learning rate 0.1.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from . import zoo
from .losses import SoftMaxLoss
from .model import Sequential
from .optimizers import GradientDescent


@dataclass
class TrainResult:
    """What :func:`train` measured."""

    test_accuracy: float
    epoch_losses: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    images_per_second: float = 0.0


def train_epochs(
    model: Sequential,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    batch_size: int,
    rng: np.random.Generator,
    progress: bool = True,
) -> list[float]:
    """Mini-batch training, reshuffled every epoch; returns each epoch's mean batch loss.

    A last batch smaller than ``batch_size`` is dropped, as in the seed (which reshaped the
    data into whole batches).
    """
    n_batches = len(x) // batch_size
    if n_batches == 0:
        raise ValueError(f"train: {len(x)} training images are fewer than one batch of {batch_size}")
    losses = []
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x))
        total = 0.0
        bar = tqdm(range(n_batches), desc=f"epoch {epoch}/{epochs}", unit="batch", disable=not progress)
        for i in bar:
            batch = order[i * batch_size : (i + 1) * batch_size]
            total += model.train_step(x[batch], y[batch])
            if i % 10 == 0 or i == n_batches - 1:
                bar.set_postfix(loss=f"{total / (i + 1):.4f}")
        losses.append(total / n_batches)
    return losses


def accuracy(model: Sequential, x: np.ndarray, labels: np.ndarray, batch_size: int = 1000) -> float:
    """Share of ``x`` whose highest logit is the right class."""
    predicted = model.predict(x, batch_size=batch_size).argmax(axis=1)
    return float(np.mean(predicted == labels))


def train(
    model: str = "seed",
    epochs: int = 1,
    batch_size: int = 50,
    lr: float = 0.1,
    seed: int = 0,
    train_size: int | None = None,
    preprocessing: str = zoo.DEFAULT_PREPROCESSING,
    progress: bool = True,
) -> TrainResult:
    """Train ``zoo.MODELS[model]`` on MNIST (the first ``train_size`` images, default all) and
    measure its accuracy on the 10,000 test images."""
    from .datasets import mnist

    if model not in zoo.MODELS:
        raise ValueError(f"train: unknown model {model!r}; choose one of {sorted(zoo.MODELS)}")
    (x_train, y_train), (x_test, y_test) = mnist.load_data()
    if train_size is not None:
        x_train, y_train = x_train[:train_size], y_train[:train_size]
    x_train = zoo.preprocess_images(x_train, preprocessing)
    x_test = zoo.preprocess_images(x_test, preprocessing)

    net = zoo.MODELS[model](seed=seed)
    net.loss = SoftMaxLoss()
    net.optimizer = GradientDescent(lr)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    losses = train_epochs(net, x_train, y_train.astype(np.intp), epochs, batch_size, rng, progress)
    seconds = time.perf_counter() - start
    n_seen = epochs * (len(x_train) // batch_size) * batch_size
    return TrainResult(accuracy(net, x_test, y_test), losses, seconds, n_seen / seconds if seconds else 0.0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nn_from_scratch", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("train", help="train a model on MNIST and print its test accuracy")
    p.add_argument("--model", choices=sorted(zoo.MODELS), default="seed", help="which model (default: seed, the notebook's CNN)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--lr", type=float, default=0.1, help="SGD learning rate")
    p.add_argument("--seed", type=int, default=0, help="seeds the initial weights and the shuffling")
    p.add_argument("--train-size", type=int, default=None, help="use only the first N training images")
    p.add_argument("--preprocessing", choices=zoo.PREPROCESSING, default=zoo.DEFAULT_PREPROCESSING,
                   help="standardize: (x - 33.318) / 78.567; scale: x / 255")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)

    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.lr <= 0:
        parser.error("--lr must be positive")
    result = train(args.model, args.epochs, args.batch_size, args.lr, args.seed, args.train_size,
                   args.preprocessing, progress=not args.no_progress)
    print(f"trained {args.model} for {args.epochs} epoch(s) in {result.train_seconds:.1f} s "
          f"({result.images_per_second:.0f} images/s); last epoch loss {result.epoch_losses[-1]:.4f}")
    print(f"test accuracy: {result.test_accuracy:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
