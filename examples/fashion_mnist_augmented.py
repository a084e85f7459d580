"""Fashion-MNIST with augmentation: a small CNN trained through ``fit`` on a
:class:`~nn_from_scratch.data.Dataset` pipeline, with augmentation layers (``RandomFlip``,
``RandomTranslation``) at the front of the model -- active in training only, drawn from the
model's seeded generator. Written with Keras' names (``nn_from_scratch.layers``).

    python examples/fashion_mnist_augmented.py [epochs]      # default 8

Prints the test accuracy and the training time (one BLAS thread).
"""

from __future__ import annotations

import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

import nn_from_scratch as nn
from nn_from_scratch import layers
from nn_from_scratch.callbacks import LearningRateScheduler
from nn_from_scratch.data import Dataset
from nn_from_scratch.datasets import fashion_mnist


def build(seed: int = 0) -> nn.Sequential:
    model = nn.Sequential([
        layers.Input(shape=(1, 28, 28)),
        layers.RandomFlip("horizontal"),
        layers.RandomTranslation(0.04, 0.04),
        layers.Conv2D(32, 3, padding="same"),
        layers.BatchNormalization(),
        layers.Activation("relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(64, 3, padding="same"),
        layers.BatchNormalization(),
        layers.Activation("relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dropout(0.3),
        layers.Dense(10),
    ], seed=seed)
    model.compile(optimizer=nn.optimizers.Adam(learning_rate=2e-3), loss=nn.losses.SoftMaxLoss(), metrics=["accuracy"])
    return model


def main(epochs: int = 8, seed: int = 0) -> dict:
    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()
    x_train = (x_train.astype("float32") / 255)[:, None]
    x_test = (x_test.astype("float32") / 255)[:, None]
    train = Dataset.from_arrays(x_train, y_train).shuffle(seed=seed).batch(128).prefetch(2)
    model = build(seed)
    # Adam at 2e-3, halved at each of the last four epochs.
    schedule = LearningRateScheduler(lambda epoch, lr: 2e-3 * 0.5 ** max(0, epoch - (epochs - 5)))
    start = time.perf_counter()
    with threadpool_limits(1):
        model.fit(train, epochs=epochs, validation_data=(x_test, y_test), callbacks=[schedule], verbose=2)
        seconds = time.perf_counter() - start
        loss, accuracy = model.evaluate(x_test, y_test, batch_size=500)
    result = {"epochs": epochs, "test_accuracy": accuracy, "test_loss": loss, "train_seconds": seconds}
    print(result)
    return result


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 8)
