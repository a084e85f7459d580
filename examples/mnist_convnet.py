"""Keras' "Simple MNIST convnet" (https://keras.io/examples/vision/mnist_convnet/), line for
line with ``nn_from_scratch.layers``. The differences: the import lines, the data loader
(bundled, no download), and channels first: ``input_shape = (1, 28, 28)`` and
``x[:, None]`` where Keras writes ``(28, 28, 1)`` and ``np.expand_dims(x, -1)``.

    python examples/mnist_convnet.py            # 15 epochs, as the Keras example
    python examples/mnist_convnet.py 2          # 2 epochs

``examples/mnist_convnet_side_by_side.py`` runs this and the Keras original with the same
epochs and prints both accuracies.
"""

from __future__ import annotations

import sys
import time

import numpy as np

import nn_from_scratch as keras
from nn_from_scratch import layers
from nn_from_scratch.datasets import mnist


def main(epochs: int = 15, seed: int = 1, verbose: int = 1) -> dict:
    num_classes = 10
    input_shape = (1, 28, 28)
    (x_train, y_train), (x_test, y_test) = mnist.load_data()
    x_train = x_train.astype("float32") / 255
    x_test = x_test.astype("float32") / 255
    x_train = x_train[:, None]
    x_test = x_test[:, None]
    y_train = keras.utils.to_categorical(y_train, num_classes)
    y_test = keras.utils.to_categorical(y_test, num_classes)

    model = keras.Sequential(
        [
            keras.Input(shape=input_shape),
            layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Flatten(),
            layers.Dropout(0.5),
            layers.Dense(num_classes, activation="softmax"),
        ],
        seed=seed,
    )
    batch_size = 128
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, validation_split=0.1, verbose=verbose)
    train_s = time.perf_counter() - start
    score = model.evaluate(x_test, y_test, verbose=0)
    print("Test loss:", score[0])
    print("Test accuracy:", score[1])
    return {"framework": f"nn_from_scratch {keras.__version__}", "epochs": epochs, "test_loss": float(score[0]),
            "test_accuracy": float(score[1]), "train_seconds": train_s}


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
