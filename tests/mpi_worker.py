"""Run by tests/test_distributed.py under ``mpiexec -n R python -m mpi4py tests/mpi_worker.py``.

Modes (argv[1]):

* ``train DATA.npz OUT_DIR [CASE ...]``: trains the networks of ``CASES`` (or those named)
  data-parallel (float64, ``distributed=True``; ``lenet_bn_local``: ``DataParallel(sync_batch_norm=False)``)
  on the data in DATA.npz and writes, per rank, ``OUT_DIR/{case}_rank{r}.npz``
  with the weights, the buffers, the history and the sizes of the batches this rank's loss saw.
  Ranks other than 0 build their model from another seed, so equal results also show that
  rank 0's weights and generator were broadcast.
* ``fail STEP``: rank 1 raises in its STEP-th batch while the others train (the test checks that
  the job exits non-zero, and quickly).
"""

from __future__ import annotations

import sys

import numpy as np


def build(case: str, seed: int):
    from nn_from_scratch import zoo
    from nn_from_scratch.losses import SoftMaxLoss
    from nn_from_scratch.optimizers import Adam, GradientDescent

    if case == "seed_sgd":
        model = zoo.seed_cnn(dtype=np.float64, seed=seed)
        model.optimizer = GradientDescent(0.1)
        # F1 is read off a confusion matrix (no count to sum): the outputs are gathered from the ranks.
        model.compile(metrics=["accuracy", "f1"])
    elif case == "lenet_adam":
        model = zoo.lenet5(dtype=np.float64, seed=seed, batch_norm=False)
        model.optimizer = Adam(2e-3)
    elif case in ("lenet_bn_adam", "lenet_bn_local"):
        model = zoo.lenet5(dtype=np.float64, seed=seed, batch_norm=True)
        model.optimizer = Adam(2e-3)
    elif case == "mlp_bn_adam":  # batch norm on (N, F): shards of 1 sample and an empty one
        from nn_from_scratch.model import Sequential
        from nn_from_scratch.neurons import BatchNormalization, Linear
        from nn_from_scratch.nodes import ReLU, Vectorization

        model = Sequential([Vectorization(), Linear(784, 32, dtype=np.float64), BatchNormalization(dtype=np.float64),
                            ReLU(), Linear(32, 10, dtype=np.float64)], input_shape=(1, 28, 28), seed=seed)
        # SGD, not Adam: the first Linear's bias feeds batch norm, which cancels it, so its exact
        # gradient is 0 and the computed one is rounding noise (1e-17) -- which Adam would scale
        # up to steps of 1e-12 that differ with the order of the sums, in 1 process and in N.
        model.optimizer = GradientDescent(0.05, momentum=0.9)
    else:
        raise ValueError(case)
    model.loss = SoftMaxLoss()
    return model


CASES = ("seed_sgd", "lenet_adam", "lenet_bn_adam", "mlp_bn_adam")
BATCH = 20
EPOCHS = 1


def state(model) -> dict[str, np.ndarray]:
    out = {f"p.{k}": v for k, v in model.parameters()}
    out.update({f"b.{k}": v for k, v in model.buffers()})
    return out


def train(data: str, out_dir: str, cases: tuple[str, ...] = CASES) -> None:
    from mpi4py import MPI

    from nn_from_scratch.distributed import DataParallel

    rank = MPI.COMM_WORLD.Get_rank()
    arrays = np.load(data)
    x, y = arrays["x"], arrays["y"]
    for case in cases:
        model = build(case, seed=0 if rank == 0 else 100 + rank)
        seen: list[int] = []
        forward = model.loss.forward

        def recording_forward(output, target, _forward=forward):
            seen.append(len(target))
            return _forward(output, target)

        model.loss.forward = recording_forward
        strategy = DataParallel(sync_batch_norm=False) if case == "lenet_bn_local" else True
        history = model.fit(x, y, epochs=EPOCHS, batch_size=BATCH, verbose=0, distributed=strategy)
        np.savez(f"{out_dir}/{case}_rank{rank}.npz", seen=np.array(seen), loss=np.array(history.history["loss"]),
                 accuracy=np.array(history.history["accuracy"]), f1=np.array(history.history.get("f1", [])),
                 **state(model))


def fail(step: int) -> None:
    from mpi4py import MPI

    from nn_from_scratch.callbacks import Callback

    rank = MPI.COMM_WORLD.Get_rank()

    class Boom(Callback):
        def on_batch_begin(self, batch, logs=None):
            if rank == 1 and batch == step:
                raise RuntimeError(f"rank {rank} fails on purpose at batch {batch}")

    rng = np.random.default_rng(0)
    x, y = rng.random((4000, 1, 28, 28)), rng.integers(0, 10, 4000)
    model = build("seed_sgd", seed=0)
    model.fit(x, y, epochs=50, batch_size=20, verbose=0, distributed=True, callbacks=[Boom()])


if __name__ == "__main__":
    if sys.argv[1] == "train":
        train(sys.argv[2], sys.argv[3], tuple(sys.argv[4:]) or CASES)
    elif sys.argv[1] == "fail":
        fail(int(sys.argv[2]))
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]!r}")
