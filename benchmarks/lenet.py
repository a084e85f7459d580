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
    """The network of the module docstring, from :mod:`nn_from_scratch.zoo`, trained with SGD 0.1."""
    from nn_from_scratch import zoo
    from nn_from_scratch.losses import SoftMaxLoss
    from nn_from_scratch.optimizers import GradientDescent

    model = zoo.lenet5(seed=0, batch_norm=False)
    model.compile(optimizer=GradientDescent(0.1), loss=SoftMaxLoss())
    return model


def main() -> dict:
    args = common.parse_args(__doc__.splitlines()[0], steps=30, reps=10)
    return run_benchmark("LeNet-5, training", Path(__file__), build_ours, build_torch, BATCH, N_BATCHES, args)


if __name__ == "__main__":
    main()
