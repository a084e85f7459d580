"""One depthwise 3x3 convolution layer, this library vs PyTorch eager: 32 channels, 28x28, batch 64, float32.

A training step is the layer's forward and backward (dL/dx, dL/dW, dL/dB) for a fixed dL/dy;
``--inference`` times the forward alone. Ours: ``Convolution(groups=32)`` (kernels.GroupedConv2dPlan,
direct kernel-tap sums on contiguous slices). Torch: ``F.conv2d(groups=32)`` with autograd.
The input comes either in plain NCHW order or, as inside a network after another convolution of
this library, batch-innermost (``--layout chwn``; torch gets the same values in NCHW).

    python benchmarks/depthwise_conv.py --threads 1            # ~30 s
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

N, C, H, W = 64, 32, 28, 28


def runners(inference: bool, layout: str) -> dict:
    from nn_from_scratch.neurons import Convolution

    torch = common.import_torch()
    F = torch.nn.functional
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    dy = rng.standard_normal((N, C, H, W)).astype(np.float32)
    layer = Convolution((C, H, W), 3, C, padding=1, groups=C)
    layer.B[...] = rng.standard_normal(C)
    x_ours = x if layout == "nchw" else np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    xt = torch.from_numpy(x).requires_grad_(not inference)
    wt = torch.from_numpy(layer.W.copy()).requires_grad_(not inference)
    bt = torch.from_numpy(layer.B.copy()).requires_grad_(not inference)
    dyt = torch.from_numpy(dy)

    y_t = F.conv2d(xt, wt, bt, padding=1, groups=C).detach().numpy()
    err = float(np.abs(layer.forward(x_ours) - y_t).max() / np.abs(y_t).max())
    print(f"same work: relative difference of the outputs {err:.1e}")

    def ours(i: int) -> None:
        layer.forward(x_ours)
        if not inference:
            layer.zero_grad()
            layer.backward(dy)

    def theirs(i: int) -> None:
        if inference:
            with torch.no_grad():
                F.conv2d(xt, wt, bt, padding=1, groups=C)
            return
        xt.grad = wt.grad = bt.grad = None
        F.conv2d(xt, wt, bt, padding=1, groups=C).backward(dyt)

    return {"nn_from_scratch": ours, "torch": theirs}


def main() -> dict:
    import argparse

    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--inference", action="store_true")
    extra.add_argument("--layout", choices=("nchw", "chwn"), default="nchw")
    known, rest = extra.parse_known_args()
    sys.argv = [sys.argv[0], *rest]
    args = common.parse_args(__doc__.splitlines()[0], steps=10, reps=10)
    what = "forward" if known.inference else "forward + backward"
    print(f"depthwise 3x3 conv, {C} channels, {H}x{W}, batch {N}, float32, {what}, input {known.layout}, "
          f"{common.blas_threads()} BLAS/torch threads")
    timings = common.time_alternating(runners(known.inference, known.layout), N, args.steps, args.reps, args.warmup)
    return common.report(f"depthwise 3x3 conv, {what}, input {known.layout}", timings)


if __name__ == "__main__":
    main()
