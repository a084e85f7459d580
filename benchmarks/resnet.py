"""Training speed of zoo.resnet (width 32), this library vs PyTorch eager, batch 128, float32.

Network (:func:`nn_from_scratch.zoo.resnet`, 308,074 parameters): conv 3x3 32 + batch norm +
ReLU, max pool, a residual block of width 32, max pool, a block of width 64 with a 1x1
projection, max pool (padding 1), a block of width 128 with a projection, global average
pooling, linear 128->10. The torch twin is ``interop.to_torch`` of the same model (same
initial weights). A step is forward + loss + backward + update on one real MNIST batch with the
resnet recipe's optimizer and loss on both sides: SGD lr 0.05, momentum 0.9, Nesterov, weight
decay 5e-4, softmax cross-entropy with label smoothing 0.1 (what ``train --model resnet`` runs
per batch, without the augmentation and the learning-rate schedule).

    python benchmarks/resnet.py --threads 1      # ~2 minutes on a busy 2-core machine
    python benchmarks/resnet.py --threads 2
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import seed_cnn  # noqa: E402

BATCH = 128
N_BATCHES = 20
LR, MOMENTUM, WEIGHT_DECAY, SMOOTHING = 0.05, 0.9, 5e-4, 0.1


def build_ours():
    """zoo.resnet(seed=0) with the recipe's SGD (Nesterov, weight decay) and label-smoothed loss."""
    from nn_from_scratch import zoo
    from nn_from_scratch.losses import SoftMaxLoss
    from nn_from_scratch.optimizers import GradientDescent

    model = zoo.resnet(seed=0)
    model.compile(optimizer=GradientDescent(LR, momentum=MOMENTUM, nesterov=True, weight_decay=WEIGHT_DECAY),
                  loss=SoftMaxLoss(label_smoothing=SMOOTHING))
    return model


def build_torch(torch, ours):
    """``interop.to_torch(ours)``: torch's Conv2d / BatchNorm2d / ReLU / MaxPool2d modules, the same weights."""
    from nn_from_scratch.interop import to_torch

    return to_torch(ours)


#: Process CPU seconds of each timed step, per library: on a busy machine the wall time of a step
#: includes the time other processes held the cores, its CPU time far less so.
CPU_SECONDS: dict[str, list[float]] = {}


def _with_cpu_time(name: str, run):
    def timed(i: int) -> None:
        start = time.process_time()
        run(i)
        CPU_SECONDS.setdefault(name, []).append(time.process_time() - start)

    return timed


def training_runners(build_ours_fn, build_torch_fn, batch: int, n_batches: int, which=("ours", "torch")):
    """Step functions ``run(i)`` for each library, on the same MNIST batches and initial weights."""
    x, labels = common.mnist_batches(batch, n_batches)
    runners = {}
    ours = build_ours_fn()
    if "ours" in which:
        def run_ours(i: int) -> None:
            ours.train_step(x[i % n_batches], labels[i % n_batches])

        runners["nn_from_scratch"] = _with_cpu_time("nn_from_scratch", run_ours)
    if "torch" in which:
        torch = common.import_torch()
        net = build_torch_fn(torch, ours).train()
        opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM, nesterov=True, weight_decay=WEIGHT_DECAY)
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=SMOOTHING)
        runners["torch"] = _with_cpu_time("torch", common.torch_training_step(torch, net, opt, loss_fn, x, labels))
    return runners


def check_same_training(build_ours_fn, build_torch_fn, batch: int, steps: int = 5) -> float:
    """Both libraries from the same weights on the same batches: the largest difference of the losses.

    In float32 the first losses agree to ~3e-6 and later ones drift to ~1e-3 (batch norm at lr 0.05
    amplifies rounding); the same check in float64 (width 4, batch 16) agrees to 1e-14 over 3 steps, with and without
    Nesterov momentum and weight decay, so both sides do the same work."""
    x, labels = common.mnist_batches(batch, steps)
    torch = common.import_torch()
    ours = build_ours_fn()
    net = build_torch_fn(torch, ours).train()
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM, nesterov=True, weight_decay=WEIGHT_DECAY)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=SMOOTHING)
    worst = 0.0
    for i in range(steps):
        mine = ours.train_step(x[i], labels[i])
        opt.zero_grad()
        theirs = loss_fn(net(torch.from_numpy(x[i])), torch.from_numpy(labels[i]))
        theirs.backward()
        opt.step()
        worst = max(worst, abs(mine - theirs.item()))
    return worst


def main() -> dict:
    args = common.parse_args(__doc__.splitlines()[0], steps=3, reps=7)
    result = seed_cnn.run_benchmark("zoo.resnet w32, training", Path(__file__), build_ours, build_torch, BATCH, N_BATCHES,
                                    args, runners_fn=training_runners, check_fn=check_same_training)
    ms = {name: 1e3 * BATCH / result[key]["median"] for name, key in (("ours", "ours"), ("torch", "torch"))}
    print(f"median step: ours {ms['ours']:.0f} ms, torch {ms['torch']:.0f} ms "
          f"(min-max ours {1e3 * BATCH / result['ours']['max']:.0f}-{1e3 * BATCH / result['ours']['min']:.0f} ms, "
          f"torch {1e3 * BATCH / result['torch']['max']:.0f}-{1e3 * BATCH / result['torch']['min']:.0f} ms)")
    cpu = {name: 1e3 * statistics.median(v[args.warmup :] or v) for name, v in CPU_SECONDS.items()}
    if cpu:
        print(f"median CPU time per step (all threads): ours {cpu['nn_from_scratch']:.0f} ms, torch {cpu['torch']:.0f} ms, "
              f"ratio torch/ours {cpu['torch'] / cpu['nn_from_scratch']:.2f}")
        result["cpu_ms_per_step"] = cpu
        if args.json:  # run_benchmark wrote it before the CPU times were known
            Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
