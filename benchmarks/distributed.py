"""Data-parallel training speed: 2 MPI ranks x 1 thread against 1 process x 1 and x 2 threads.

The same training run three ways -- ``fit`` for one epoch over the first ``--images`` MNIST
images, float32, the recipe's global batch (seed CNN 50, LeNet-5 with batch norm 64), SGD /
Adam -- and images/s of the global batches:

* ``1 proc x 1 thread``:  one process, BLAS limited to one thread;
* ``1 proc x 2 threads``: one process, BLAS on two threads;
* ``2 ranks x 1 thread``: ``mpiexec -n 2 python -m mpi4py``, ``fit(distributed=True)``, one BLAS
  thread per rank (each rank trains on half of every global batch; one gradient allreduce per
  step, synchronised batch norm for LeNet).

The three configurations alternate, ``--reps`` times (median, min, max), after one warm-up
epoch each. Needs the ``[mpi]`` extra. ::

    python benchmarks/distributed.py               # ~2 minutes on 2 cores
    python benchmarks/distributed.py --images 3000 --reps 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
MODELS = {"seed": 50, "lenet": 64}


def worker(model_name: str, images: int, distributed: bool) -> None:
    """One timed epoch (after a warm-up one); rank 0 prints ``{"images_per_s": ...}``."""
    import numpy as np

    from nn_from_scratch import zoo
    from nn_from_scratch.datasets import mnist
    from nn_from_scratch.losses import SoftMaxLoss
    from nn_from_scratch.optimizers import Adam, GradientDescent

    (x, y), _ = mnist.load_data()
    x, y = zoo.preprocess_images(x[:images]), y[:images].astype(np.intp)
    model = zoo.seed_cnn(seed=0) if model_name == "seed" else zoo.lenet5(seed=0)
    model.loss = SoftMaxLoss()
    model.optimizer = GradientDescent(0.1) if model_name == "seed" else Adam(1e-3)
    strategy = None
    if distributed:
        from nn_from_scratch.distributed import DataParallel

        strategy = DataParallel()
    batch = MODELS[model_name]
    model.fit(x[: 10 * batch], y[: 10 * batch], batch_size=batch, verbose=0, distributed=strategy)  # warm-up
    if strategy is not None:
        strategy.comm.Barrier()
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, verbose=0, distributed=strategy)
    if strategy is not None:
        strategy.comm.Barrier()
    seconds = time.perf_counter() - start
    if strategy is None or strategy.is_root:
        print(json.dumps({"images_per_s": len(x) / seconds}), flush=True)


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(threads)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _mpiexec() -> str:
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else "mpiexec"


def run(config: str, model_name: str, images: int) -> float:
    args = [str(HERE), "--worker", "--model", model_name, "--images", str(images)]
    if config == "2 ranks x 1 thread":
        command, threads = [_mpiexec(), "-n", "2", sys.executable, "-m", "mpi4py", *args, "--distributed"], 1
    else:
        command, threads = [sys.executable, *args], int(config.split(" x ")[1].split()[0])
    done = subprocess.run(command, capture_output=True, text=True, env=_env(threads), timeout=1200)
    if done.returncode != 0:
        raise RuntimeError(f"{config}: {done.stderr[-2000:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["images_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--distributed", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", choices=sorted(MODELS), nargs="+", default=sorted(MODELS, reverse=True))
    parser.add_argument("--images", type=int, default=6000, help="training images per timed epoch (default 6000)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of the three configurations (default 3)")
    args = parser.parse_args()
    if args.worker:
        worker(args.model[0], args.images, args.distributed)
        return
    configs = ["1 proc x 1 thread", "1 proc x 2 threads", "2 ranks x 1 thread"]
    results = {}
    for model_name in args.model:
        timings: dict[str, list[float]] = {c: [] for c in configs}
        for rep in range(args.reps):
            for config in (configs if rep % 2 == 0 else configs[::-1]):
                timings[config].append(run(config, model_name, args.images))
        results[model_name] = timings
        print(f"\n{model_name}: float32, global batch {MODELS[model_name]}, {args.images} images per epoch, "
              f"{args.reps} repetitions")
        print(f"  {'configuration':<20} {'images/s median':>16} {'min':>8} {'max':>8}")
        for config, values in timings.items():
            print(f"  {config:<20} {statistics.median(values):>16,.0f} {min(values):>8,.0f} {max(values):>8,.0f}")
    print("\n" + json.dumps({"load_average": os.getloadavg(), "results": results}))


if __name__ == "__main__":
    main()
