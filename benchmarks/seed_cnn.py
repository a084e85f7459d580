"""Training speed of the seed notebook's CNN, this library vs PyTorch eager, batch 50, float32.

Network (the notebook's): conv 3x3 1->4 (no bias), ReLU, conv 7x7 4->2 (no bias), ReLU,
flatten, linear 800->10; softmax cross-entropy; SGD lr 0.1. A step is forward + loss +
backward + update on one real MNIST batch (``Sequential.train_step``, the call
``NeuralNetwork.fit`` makes per batch, without its progress bar).

    python benchmarks/seed_cnn.py            # ~1 minute on 2 cores
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

BATCH = 50
N_BATCHES = 200  # distinct real batches, cycled


def build_ours():
    """The network of the module docstring, from :mod:`nn_from_scratch.zoo`, trained with SGD 0.1."""
    from nn_from_scratch import zoo
    from nn_from_scratch.losses import SoftMaxLoss
    from nn_from_scratch.optimizers import GradientDescent

    model = zoo.seed_cnn(seed=0)
    model.compile(optimizer=GradientDescent(0.1), loss=SoftMaxLoss())
    return model


def build_torch(torch, ours):
    """The PyTorch twin of ``ours``, with the same initial weights: plain ``nn.Conv2d`` /
    ``nn.ReLU`` / ``nn.MaxPool2d`` / ``nn.Flatten`` / ``nn.Linear`` modules, as a torch user writes them."""
    from nn_from_scratch.interop import to_torch

    return to_torch(ours)


def training_runners(build_ours_fn, build_torch_fn, batch: int, n_batches: int, which=("ours", "torch")):
    """Step functions ``run(i)`` for each library, on the same MNIST batches and initial weights."""
    x, labels = common.mnist_batches(batch, n_batches)
    y = common.one_hot(labels)
    runners = {}
    ours = build_ours_fn()
    if "ours" in which:
        def run_ours(i: int) -> None:
            ours.train_step(x[i % n_batches], y[i % n_batches])

        runners["nn_from_scratch"] = run_ours
    if "torch" in which:
        torch = common.import_torch()
        net = build_torch_fn(torch, ours)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        runners["torch"] = common.torch_training_step(torch, net, opt, torch.nn.CrossEntropyLoss(), x, labels)
    return runners


def check_same_training(build_ours_fn, build_torch_fn, batch: int, steps: int = 5) -> float:
    """Both libraries from the same weights on the same batches: the largest difference of the losses.

    A sanity check that the two sides of the benchmark do the same work (float32 rounding only).
    """
    x, labels = common.mnist_batches(batch, steps)
    y = common.one_hot(labels)
    torch = common.import_torch()
    ours = build_ours_fn()
    net = build_torch_fn(torch, ours)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    loss_fn = torch.nn.CrossEntropyLoss()
    worst = 0.0
    for i in range(steps):
        mine = ours.train_step(x[i], y[i])
        opt.zero_grad()
        theirs = loss_fn(net(torch.from_numpy(x[i])), torch.from_numpy(labels[i]))
        theirs.backward()
        opt.step()
        worst = max(worst, abs(mine - theirs.item()))
    return worst


def memory_child(which: str, steps: int, build_ours_fn, build_torch_fn, batch: int, runners_fn=None) -> None:
    runners = (runners_fn or training_runners)(build_ours_fn, build_torch_fn, batch, 20, which=(which,))
    run = next(iter(runners.values()))
    result = {"rss_growth_kib": common.peak_rss_growth_kib(run, steps)}
    if which == "ours":
        result["tracemalloc_kib"] = common.numpy_step_peak_bytes(run) / 1024
    print(json.dumps(result))


def run_benchmark(title, script, build_ours_fn, build_torch_fn, batch, n_batches, args,
                  runners_fn=None, check_fn=None) -> dict:
    """Time, report and (in child processes) measure the memory of one training benchmark.

    ``runners_fn`` / ``check_fn`` replace this module's :func:`training_runners` /
    :func:`check_same_training` (another network's optimizer and loss, e.g. resnet.py).
    """
    runners_fn, check_fn = runners_fn or training_runners, check_fn or check_same_training
    if args.memory_child:
        memory_child(args.memory_child, args.steps, build_ours_fn, build_torch_fn, batch, runners_fn)
        raise SystemExit(0)
    print(f"{title}: batch {batch}, float32, {common.blas_threads()} BLAS/torch threads, "
          f"{args.reps} x {args.steps} steps per library, alternating")
    diff = check_fn(build_ours_fn, build_torch_fn, batch)
    print(f"same work: losses of both over 5 steps from the same weights differ by at most {diff:.1e}")
    runners = runners_fn(build_ours_fn, build_torch_fn, batch, n_batches)
    timings = common.time_alternating(runners, batch, args.steps, args.reps, args.warmup)
    result = common.report(title, timings)
    result["max_loss_difference"] = diff
    if not args.no_memory:
        mem = {name: common.memory_in_child(script, which) for name, which in (("nn_from_scratch", "ours"), ("torch", "torch"))}
        common.print_memory(mem)
        result["memory"] = mem
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


def main() -> dict:
    args = common.parse_args(__doc__.splitlines()[0], steps=40, reps=10)
    return run_benchmark("seed CNN, training", Path(__file__), build_ours, build_torch, BATCH, N_BATCHES, args)


if __name__ == "__main__":
    main()
