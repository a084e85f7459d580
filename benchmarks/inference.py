"""Inference speed (predict only), this library vs PyTorch eager, float32.

Both networks of the training benchmarks (seed CNN, LeNet-5), at their training batch size
and at batch 1000, on real MNIST images. Ours: ``Sequential.predict(x, batch_size=None)``
(inference mode, one pass); torch: ``net.eval()`` under ``torch.inference_mode()``.

    python benchmarks/inference.py           # ~1 minute on 2 cores
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import lenet  # noqa: E402
import seed_cnn  # noqa: E402

NETWORKS = {"seed CNN": seed_cnn, "LeNet-5": lenet}
CONFIGS = [(name, batch) for name, module in NETWORKS.items() for batch in (module.BATCH, 1000)]
IMAGES = 4000  # distinct real images, cycled


def inference_runners(network: str, batch: int, which=("ours", "torch")):
    module = NETWORKS[network]
    x, _ = common.mnist_batches(batch, max(IMAGES // batch, 2))
    ours = module.build_ours()
    runners = {}
    if "ours" in which:
        def run_ours(i: int) -> None:
            ours.predict(x[i % len(x)], batch_size=None)

        runners["nn_from_scratch"] = run_ours
    if "torch" in which:
        torch = common.import_torch()
        net = module.build_torch(torch, ours).eval()
        xt = [torch.from_numpy(b) for b in x]

        def run_torch(i: int) -> None:
            with torch.inference_mode():
                net(xt[i % len(xt)])

        runners["torch"] = run_torch
    return runners


def main() -> dict:
    args = common.parse_args(__doc__.splitlines()[0], steps=0, reps=8)
    if args.memory_child:
        which, network, batch = args.memory_child.split(":")
        run = next(iter(inference_runners(network, int(batch), which=(which,)).values()))
        result = {"rss_growth_kib": common.peak_rss_growth_kib(run, 5)}
        if which == "ours":
            result["tracemalloc_kib"] = common.numpy_step_peak_bytes(run) / 1024
        print(json.dumps(result))
        raise SystemExit(0)
    results = []
    for network, batch in CONFIGS:
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
        results.append(result)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return {"results": results}


if __name__ == "__main__":
    main()
