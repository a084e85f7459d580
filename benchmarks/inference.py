"""Inference speed (predict only), this library vs PyTorch eager, float32: throughput and batch-1 latency.

Networks: the two MNIST networks of the training benchmarks (seed CNN, LeNet-5) on real MNIST
images, and the CIFAR-sized ``plain`` network of ``cifar.py`` (3x32x32, conv 32-32-pool-64-64-
pool-128-pool, dense 10) on random images. Ours: ``Sequential.predict(x, batch_size=None)``
(inference mode, one pass); torch: the ``interop.to_torch`` twin (same weights), ``net.eval()``
under ``torch.inference_mode()``.

* **Throughput** rows (seed CNN and LeNet-5 at their training batch and at 1000, CIFAR plain at
  128): images/s over blocks of calls, the libraries alternating block by block.
* **Latency** rows (batch 1: LeNet-5, CIFAR plain): every single call is timed; the libraries
  alternate in blocks of ``--calls`` calls; the row gives the median milliseconds per call over
  all calls (images/s = 1000 / ms). A second row times ``model.forward(x, training=False)``
  directly -- what ``predict`` calls after its checks -- so that predict's own per-call cost
  shows as the difference.

    python benchmarks/inference.py           # ~1-2 minutes on 2 cores
    python benchmarks/inference.py --reps 2 --calls 50 --no-memory      # a smoke run
    python benchmarks/inference.py --profile-predict   # cProfile of 2000 predict calls at batch 1 (CIFAR plain)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cifar  # noqa: E402
import common  # noqa: E402
import lenet  # noqa: E402
import seed_cnn  # noqa: E402

NETWORKS = {"seed CNN": seed_cnn, "LeNet-5": lenet, "CIFAR plain": None}
#: (network, batch, kind): throughput rows, then latency rows.
CONFIGS = [
    ("seed CNN", seed_cnn.BATCH, "throughput"), ("seed CNN", 1000, "throughput"),
    ("LeNet-5", lenet.BATCH, "throughput"), ("LeNet-5", 1000, "throughput"),
    ("CIFAR plain", 128, "throughput"),
    ("LeNet-5", 1, "latency"), ("CIFAR plain", 1, "latency"),
]
IMAGES = 4000  # distinct real images, cycled (CIFAR: 512 random ones)


def build(network: str):
    """Our model and the data batches (n, batch, ...) for ``network``."""
    if network == "CIFAR plain":
        return cifar.build_ours("plain")
    return NETWORKS[network].build_ours()


def data(network: str, batch: int) -> np.ndarray:
    if network == "CIFAR plain":
        n = max(512 // batch, 2)
        return np.random.default_rng(0).normal(size=(n, batch, 3, 32, 32)).astype(np.float32)
    x, _ = common.mnist_batches(batch, max(IMAGES // batch, 2))
    return x


def torch_twin(torch, network: str, ours):
    from nn_from_scratch.interop import to_torch

    if network == "CIFAR plain":
        return to_torch(ours).eval()
    return NETWORKS[network].build_torch(torch, ours).eval()


def inference_runners(network: str, batch: int, which=("ours", "torch"), forward: bool = False):
    """``run(i)`` per library: one inference call on batch ``i`` (cycled). ``forward=True`` adds
    ``nn_from_scratch forward``: ``model.forward(x, training=False)`` without predict's checks."""
    x = data(network, batch)
    ours = build(network)
    runners = {}
    if "ours" in which:
        def run_ours(i: int) -> None:
            ours.predict(x[i % len(x)], batch_size=None)

        runners["nn_from_scratch"] = run_ours
        if forward:
            def run_forward(i: int) -> None:
                ours.forward(x[i % len(x)], training=False)

            runners["nn_from_scratch forward"] = run_forward
    if "torch" in which:
        torch = common.import_torch()
        net = torch_twin(torch, network, ours)
        xt = [torch.from_numpy(b) for b in x]

        def run_torch(i: int) -> None:
            with torch.inference_mode():
                net(xt[i % len(xt)])

        runners["torch"] = run_torch
    return runners


def time_calls(runners: dict, calls: int, reps: int, warmup: int) -> tuple[dict[str, common.Timing], dict[str, list[float]]]:
    """Each runner ``calls`` times per block, every call timed alone; ``reps`` blocks per runner,
    alternating (order reversed every rep). Returns per-block images/s (1 / median call) and all call times."""
    for run in runners.values():
        for i in range(warmup):
            run(i)
    names = list(runners)
    timings = {name: common.Timing(name) for name in names}
    seconds: dict[str, list[float]] = {name: [] for name in names}
    clock = time.perf_counter
    for rep in range(reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            run, block = runners[name], []
            for i in range(calls):
                start = clock()
                run(i)
                block.append(clock() - start)
            seconds[name] += block
            timings[name].images_per_s.append(1.0 / statistics.median(block))
    return timings, seconds


def latency_rows(network: str, args) -> list[dict]:
    title = f"{network}, inference latency, batch 1"
    print(f"{title}: float32, {common.blas_threads()} BLAS/torch threads, {args.reps} x {args.calls} single calls "
          "per library, alternating")
    timings, seconds = time_calls(inference_runners(network, 1, forward=True), args.calls, args.reps, max(args.warmup, 20))
    ms = {name: 1e3 * statistics.median(v) for name, v in seconds.items()}
    rows = []
    for ours_name, label in (("nn_from_scratch", "predict"), ("nn_from_scratch forward", "model.forward")):
        result = common.report(f"{title} ({label}: {ms[ours_name]:.3f} ms, torch {ms['torch']:.3f} ms per image)",
                               timings, ours=ours_name)
        result["latency_ms"] = {"ours": ms[ours_name], "torch": ms["torch"]}
        result["ratio_latency"] = ms["torch"] / ms[ours_name]  # > 1: ours answers sooner
        rows.append(result)
    print(f"median ms per call: predict {ms['nn_from_scratch']:.3f}, model.forward {ms['nn_from_scratch forward']:.3f} "
          f"(predict's own cost {1e3 * (ms['nn_from_scratch'] - ms['nn_from_scratch forward']):.0f} us), "
          f"torch {ms['torch']:.3f}")
    return rows


def throughput_row(network: str, batch: int, args) -> dict:
    # about 2,000 images per timed block at small batches, 4,000 at batch 1000
    steps = args.steps or max(2, (4000 if batch >= 1000 else 2000) // batch)
    title = f"{network}, inference, batch {batch}"
    print(f"{title}: float32, {common.blas_threads()} BLAS/torch threads, {args.reps} x {steps} batches per library, alternating")
    timings = common.time_alternating(inference_runners(network, batch), batch, steps, args.reps, max(args.warmup // 2, 2))
    result = common.report(title, timings)
    if not args.no_memory and batch >= 1000:
        result["memory"] = {
            name: common.memory_in_child(Path(__file__), f"{which}:{network}:{batch}")
            for name, which in (("nn_from_scratch", "ours"), ("torch", "torch"))
        }
        common.print_memory(result["memory"])
    return result


def profile_predict(network: str = "CIFAR plain", calls: int = 2000) -> None:
    """cProfile of ``calls`` predict calls at batch 1: where predict's per-call time goes."""
    import cProfile
    import pstats

    run = inference_runners(network, 1, which=("ours",))["nn_from_scratch"]
    for i in range(20):
        run(i)
    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(calls):
        run(i)
    profiler.disable()
    print(f"cProfile of {calls} predict calls, {network}, batch 1 (cumulative time per call = cumtime / {calls}):")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def main() -> dict:
    common_parser = argparse.ArgumentParser(add_help=False)
    common_parser.add_argument("--calls", type=int, default=300, help="single calls per latency block")
    common_parser.add_argument("--profile-predict", action="store_true", help="cProfile predict at batch 1 and stop")
    common_parser.add_argument("--only", choices=("throughput", "latency"), help="run only these rows")
    extra, rest = common_parser.parse_known_args()
    sys.argv[1:] = rest
    args = common.parse_args(__doc__.splitlines()[0], steps=0, reps=8)
    args.calls, args.only = extra.calls, extra.only
    if args.memory_child:
        which, network, batch = args.memory_child.split(":")
        run = next(iter(inference_runners(network, int(batch), which=(which,)).values()))
        result = {"rss_growth_kib": common.peak_rss_growth_kib(run, 5)}
        if which == "ours":
            result["tracemalloc_kib"] = common.numpy_step_peak_bytes(run) / 1024
        print(json.dumps(result))
        raise SystemExit(0)
    if extra.profile_predict:
        profile_predict()
        return {}
    results = []
    for network, batch, kind in CONFIGS:
        if args.only and kind != args.only:
            continue
        if kind == "latency":
            results += latency_rows(network, args)
        else:
            results.append(throughput_row(network, batch, args))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return {"results": results}


if __name__ == "__main__":
    main()
