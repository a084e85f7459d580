"""How fast could a NumPy library be on the CIFAR-sized nets? A ceiling from the BLAS alone.

For each network of benchmarks/cifar.py, this prints:

* torch's training step (median, the same model, data and weights as cifar.py);
* the convolutions' multiply-adds per step (forward, weight gradient, and input gradient for
  every layer but the first), and the time they take at the **peak** of NumPy's BLAS, measured
  here on a large square sgemm: no NumPy library can do the step faster unless it does fewer
  multiply-adds (Winograd/FFT) or uses another GEMM;
* the time of **the matrix products our kernels actually issue** (kernels.Conv2dPlan: kh
  products per pass with the shapes of its unrolled input, timed alone with every other pass
  left out);
* the resulting ceilings of the ratio ours/torch.

A ceiling below 1.0x means that the convolutions alone, at that speed, take longer than torch's
whole step (torch runs its convolutions through oneDNN, not through a GEMM).

    python benchmarks/conv_ceiling.py --threads 1
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cifar  # noqa: E402
import common  # noqa: E402


def blas_peak_gflops(dtype=np.float32, size: int = 2048, reps: int = 5) -> float:
    """Best GFLOP/s of NumPy's BLAS on a square (size x size) product."""
    a = np.random.default_rng(0).standard_normal((size, size)).astype(dtype)
    out = np.empty_like(a)
    np.matmul(a, a, out=out)
    best = min(_timed(lambda: np.matmul(a, a, out=out)) for _ in range(reps))
    return 2 * size**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def conv_layers(model) -> list:
    from nn_from_scratch.neurons import Convolution

    return [layer for layer in model.layers if isinstance(layer, Convolution)]


def conv_flops(model, batch: int) -> float:
    """Multiply-adds x 2 of every convolution's forward, dW and (but the first) dx, per step."""
    total = 0.0
    for i, layer in enumerate(conv_layers(model)):
        o, oh, ow = layer.output_shape
        c = layer.input_shape[0]
        per_pass = 2.0 * batch * oh * ow * o * c * layer.geometry.kh * layer.geometry.kw
        total += per_pass * (2 if i == 0 else 3)
    return total


def gemm_seconds(model, batch: int, reps: int = 5) -> float:
    """Median time of the matrix products Conv2dPlan issues per step, alone (operands pre-made)."""
    from nn_from_scratch import kernels
    from nn_from_scratch.kernels.blas import gemm

    rng = np.random.default_rng(0)
    calls = []
    for i, layer in enumerate(conv_layers(model)):
        plan = kernels.Conv2dPlan((batch, *layer.input_shape), layer.out_channels, layer.geometry, np.float32)
        k, p, o, kh = plan.taps_k, plan.pixels, plan.out_channels, layer.geometry.kh
        U = rng.standard_normal((k, p)).astype(np.float32)
        W = rng.standard_normal((o, k)).astype(np.float32)
        dy = rng.standard_normal((o, p)).astype(np.float32)
        y, dW, Z = np.empty((o, p), np.float32), np.empty((k, o), np.float32), np.empty((k, p), np.float32)
        for _ in range(kh):
            calls.append(lambda W=W, U=U, y=y: gemm(W, U, y, beta=1.0))  # forward, per kernel row
            calls.append(lambda U=U, dy=dy, dW=dW: gemm(U, dy.T, dW))  # dW, per kernel row
            if i > 0:
                calls.append(lambda W=W, dy=dy, Z=Z: gemm(W.T, dy, Z, beta=1.0))  # dx, per kernel row
    for call in calls:
        call()
    return statistics.median(sum(_timed(call) for call in calls) for _ in range(reps))


def torch_step_seconds(net: str, batch: int, steps: int, reps: int) -> float:
    run = cifar.training_runners(net, batch, which=("torch",))["torch"]
    for i in range(3):
        run(i)
    times = []
    for r in range(reps):
        start = time.perf_counter()
        for i in range(steps):
            run(i)
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


def main() -> list[dict]:
    args = common.parse_args(__doc__.splitlines()[0], steps=0, reps=5,
                             add_arguments=lambda p: cifar.add_net_arguments(p, nets=("plain", "bn", "avg", "stride2", "vgg")))
    nets, batches = args.nets, args.batches
    peak = blas_peak_gflops()
    print(f"NumPy BLAS ({common.blas_description()}), {common.blas_threads()} thread(s): peak {peak:.0f} GFLOP/s "
          "(2048x2048 sgemm, best of 5)")
    print(f"{'network':10s} {'batch':>5s} {'torch ms':>9s} {'GFLOP':>7s} {'at peak ms':>10s} {'our GEMMs ms':>12s} "
          f"{'ceiling (peak)':>14s} {'ceiling (our GEMMs)':>19s}")
    rows = []
    for net in nets:
        for batch in batches:
            model = cifar.build_ours(net)
            flops = conv_flops(model, batch)
            torch_s = torch_step_seconds(net, batch, args.steps or max(2, 256 // batch), args.reps)
            gemm_s = gemm_seconds(model, batch)
            at_peak = flops / (peak * 1e9)
            row = {"net": net, "batch": batch, "torch_ms": 1e3 * torch_s, "gflop": flops / 1e9,
                   "at_peak_ms": 1e3 * at_peak, "our_gemms_ms": 1e3 * gemm_s,
                   "ceiling_peak": torch_s / at_peak, "ceiling_gemms": torch_s / gemm_s}
            rows.append(row)
            print(f"{net:10s} {batch:5d} {row['torch_ms']:9.1f} {row['gflop']:7.2f} {row['at_peak_ms']:10.1f} "
                  f"{row['our_gemms_ms']:12.1f} {row['ceiling_peak']:13.2f}x {row['ceiling_gemms']:18.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
