"""Training speed of LeNet-5, this library vs PyTorch eager, batch 64, float32.

Network: conv 5x5 1->6 (padding 2), ReLU, max pool 2x2, conv 5x5 6->16, ReLU, max pool 2x2,
flatten, linear 400->120, ReLU, 120->84, ReLU, 84->10; softmax cross-entropy; SGD lr 0.1.
A step is forward + loss + backward + update on one real MNIST batch.

    python benchmarks/lenet.py               # ~1 minute on 2 cores
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from seed_cnn import build_torch, run_benchmark  # noqa: E402

BATCH = 64
N_BATCHES = 200


def build_ours():
    from nn_from_scratch.losses import SoftMaxLoss
    from nn_from_scratch.model import Sequential
    from nn_from_scratch.neurons import Convolution, Linear
    from nn_from_scratch.nodes import MaxPooling, ReLU, Vectorization
    from nn_from_scratch.optimizers import GradientDescent

    layers = [
        Convolution((1, 28, 28), kernel_size=5, output_layers=6, padding=2),
        ReLU(),
        MaxPooling(2),
        Convolution((6, 14, 14), kernel_size=5, output_layers=16),
        ReLU(),
        MaxPooling(2),
        Vectorization(),
        Linear(400, 120),
        ReLU(),
        Linear(120, 84),
        ReLU(),
        Linear(84, 10),
    ]
    return Sequential(layers, loss=SoftMaxLoss(), optimizer=GradientDescent(0.1), seed=0)


def main() -> dict:
    args = common.parse_args(__doc__.splitlines()[0], steps=30, reps=10)
    return run_benchmark("LeNet-5, training", Path(__file__), build_ours, build_torch, BATCH, N_BATCHES, args)


if __name__ == "__main__":
    main()
