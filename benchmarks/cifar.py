"""Training speed of CIFAR-sized CNNs, this library vs PyTorch eager, float32.

Networks (3x32x32 input, 10 classes; conv = 3x3 convolution with padding 1, then ReLU):

* ``plain``:   conv 32, conv 32, max pool 2, conv 64, conv 64, max pool 2, conv 128, max pool 2, dense 10
* ``bn``:      the same, each convolution (without bias) followed by batch normalisation
* ``avg``:     the same as ``plain`` with 2x2 average pooling
* ``stride2``: the same as ``plain`` with each pooling replaced by stride 2 in the convolution before it
* ``dilated``: the same as ``plain`` with dilation 2 (padding 2)
* ``w16``:     the same as ``plain`` at half the width (16-16-32-32-64)
* ``vgg``:     conv 64, conv 64, pool, conv 128, conv 128, pool, conv 256, conv 256, pool, dense 10

A step is forward + softmax cross-entropy + backward + SGD update (lr 0.01, momentum 0.9) on one
batch of random images (speed does not depend on the pixel values; no CIFAR copy is bundled).
The torch twin is ``interop.to_torch`` of the same model: the same initial weights.

    python benchmarks/cifar.py --threads 1                       # every network, batch 32 and 128
    python benchmarks/cifar.py --threads 1 --nets plain --batches 32
    python benchmarks/cifar.py --threads 1 --nets plain --batches 32 --profile   # time per layer, ours
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

NETS = ("plain", "bn", "avg", "stride2", "dilated", "w16", "vgg")
LR, MOMENTUM = 0.01, 0.9
N_BATCHES = 4  # distinct random batches, cycled


def build_ours(net: str):
    """The network ``net`` of the module docstring, compiled with SGD and softmax cross-entropy."""
    from nn_from_scratch.model import Sequential
    from nn_from_scratch.neurons import BatchNormalization, Convolution, Linear
    from nn_from_scratch.nodes import AveragePooling, MaxPooling, ReLU, Vectorization
    from nn_from_scratch.losses import SoftMaxLoss
    from nn_from_scratch.optimizers import GradientDescent

    widths = {"w16": (16, 16, 32, 32, 64), "vgg": (64, 64, 128, 128, 256, 256)}.get(net, (32, 32, 64, 64, 128))
    pool_after = {1, 3, 5} if net == "vgg" else {1, 3, 4}
    layers = []
    for i, width in enumerate(widths):
        stride = 2 if net == "stride2" and i in pool_after else 1
        dilation = 2 if net == "dilated" else 1
        layers.append(Convolution(kernel_size=3, output_layers=width, padding=dilation, stride=stride,
                                  dilation=dilation, use_bias=net != "bn", dtype=np.float32))
        if net == "bn":
            layers.append(BatchNormalization(dtype=np.float32))
        layers.append(ReLU())
        if i in pool_after and net != "stride2":
            layers.append(AveragePooling(2) if net == "avg" else MaxPooling(2))
    layers += [Vectorization(), Linear(widths[-1] * 4 * 4, 10, dtype=np.float32)]
    model = Sequential(layers, input_shape=(3, 32, 32), seed=0)
    model.compile(optimizer=GradientDescent(LR, momentum=MOMENTUM), loss=SoftMaxLoss())
    return model


def batches(batch: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N_BATCHES, batch, 3, 32, 32)).astype(np.float32)
    return x, rng.integers(0, 10, size=(N_BATCHES, batch))


def training_runners(net: str, batch: int, which=("ours", "torch")):
    x, labels = batches(batch)
    ours = build_ours(net)
    runners = {}
    if "ours" in which:
        def run_ours(i: int) -> None:
            ours.train_step(x[i % N_BATCHES], labels[i % N_BATCHES])

        runners["nn_from_scratch"] = run_ours
    if "torch" in which:
        torch = common.import_torch()
        from nn_from_scratch.interop import to_torch

        model = to_torch(ours).train()
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        runners["torch"] = common.torch_training_step(torch, model, opt, torch.nn.CrossEntropyLoss(), x, labels)
    return runners


def profile(net: str, batch: int, steps: int = 10) -> None:
    """Median forward and backward time of each of our layers over ``steps`` training steps."""
    model = build_ours(net)
    x, labels = batches(batch)
    layers = model.layers
    times = {id(layer): ([], []) for layer in layers}
    for layer in layers:
        for kind, method in ((0, "forward"), (1, "backward")):
            original = getattr(layer, method)

            def timed(*a, _original=original, _slot=times[id(layer)][kind], **k):
                start = time.perf_counter()
                out = _original(*a, **k)
                _slot.append(time.perf_counter() - start)
                return out

            setattr(layer, method, timed)
    for i in range(steps):
        model.train_step(x[i % N_BATCHES], labels[i % N_BATCHES])
    total = 0.0
    print(f"{'layer':34s} {'forward ms':>10s} {'backward ms':>11s}")
    for layer in layers:
        f, b = (1e3 * float(np.median(t[2:])) if t[2:] else 0.0 for t in times[id(layer)])
        total += f + b
        print(f"{layer.name:34s} {f:10.2f} {b:11.2f}")
    print(f"{'sum of layers':34s} {total:22.2f} ms")


def memory_child(spec: str, steps: int) -> None:
    which, net, batch = spec.split(":")
    run = next(iter(training_runners(net, int(batch), which=(which,)).values()))
    result = {"rss_growth_kib": common.peak_rss_growth_kib(run, steps)}
    if which == "ours":
        result["tracemalloc_kib"] = common.numpy_step_peak_bytes(run) / 1024
    print(json.dumps(result))


def add_net_arguments(parser, nets=NETS, batches=(32, 128)) -> None:
    """``--nets`` and ``--batches`` (several values each), for this script and conv_ceiling.py."""
    parser.add_argument("--nets", nargs="+", choices=NETS, default=list(nets), help="networks of the module docstring")
    parser.add_argument("--batches", nargs="+", type=int, default=list(batches), help="batch sizes")


def main() -> dict:
    def add_arguments(parser) -> None:
        add_net_arguments(parser)
        parser.add_argument("--profile", action="store_true", help="time each of our layers instead of comparing")

    args = common.parse_args(__doc__.splitlines()[0], steps=0, reps=5, add_arguments=add_arguments)
    nets, batch_sizes = args.nets, args.batches
    if args.memory_child:
        memory_child(args.memory_child, args.steps or 5)
        raise SystemExit(0)
    if args.profile:
        for net in nets:
            for batch in batch_sizes:
                print(f"\n{net}, batch {batch}, {common.blas_threads()} BLAS threads")
                profile(net, batch)
        return {}
    results = []
    for net in nets:
        for batch in batch_sizes:
            steps = args.steps or max(2, 256 // batch)
            title = f"CIFAR {net}, training, batch {batch}"
            print(f"{title}: float32, {common.blas_threads()} BLAS/torch threads, {args.reps} x {steps} steps per library, alternating")
            timings = common.time_alternating(training_runners(net, batch), batch, steps, args.reps, max(2, args.warmup // 4))
            result = common.report(title, timings)
            if not args.no_memory and batch == 128 and net in ("plain", "vgg"):
                result["memory"] = {
                    name: common.memory_in_child(Path(__file__), f"{which}:{net}:{batch}", steps=3)
                    for name, which in (("nn_from_scratch", "ours"), ("torch", "torch"))
                }
                common.print_memory(result["memory"])
            results.append(result)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return {"results": results}


if __name__ == "__main__":
    main()
