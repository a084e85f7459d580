"""Keras' "Simple MNIST convnet" (keras.io/examples/vision/mnist_convnet) in Keras and in
nn_from_scratch, same data, same epochs, one BLAS thread each; prints test accuracy and time.

    python examples/mnist_convnet_side_by_side.py --framework keras --epochs 2
    python examples/mnist_convnet_side_by_side.py --framework nn --epochs 2

Keras runs on its torch backend (``KERAS_BACKEND=torch``), channels-last as in the example;
nn_from_scratch is channels-first. The nn_from_scratch version is
``examples/mnist_convnet.py`` line for line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "torch")
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import numpy as np  # noqa: E402


def run_keras(epochs: int, seed: int) -> dict:
    import torch
    torch.set_num_threads(1)
    import keras
    from keras import layers

    from nn_from_scratch.datasets import mnist

    keras.utils.set_random_seed(seed)
    num_classes, input_shape = 10, (28, 28, 1)
    (x_train, y_train), (x_test, y_test) = mnist.load_data()
    x_train = np.expand_dims(x_train.astype("float32") / 255, -1)
    x_test = np.expand_dims(x_test.astype("float32") / 255, -1)
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
        ]
    )
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x_train, y_train, batch_size=128, epochs=epochs, validation_split=0.1, verbose=2)
    train_s = time.perf_counter() - start
    loss, acc = model.evaluate(x_test, y_test, verbose=0)
    return {"framework": f"keras {keras.__version__} (torch backend)", "epochs": epochs, "test_loss": float(loss),
            "test_accuracy": float(acc), "train_seconds": train_s}


def run_nn(epochs: int, seed: int) -> dict:
    from threadpoolctl import threadpool_limits

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import mnist_convnet

    with threadpool_limits(1):
        return mnist_convnet.main(epochs=epochs, seed=seed, verbose=2)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--framework", choices=("keras", "nn"), required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    result = (run_keras if args.framework == "keras" else run_nn)(args.epochs, args.seed)
    print(json.dumps(result))
