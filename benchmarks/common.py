"""Shared machinery of the benchmarks: data, thread settings, alternating timing, peak memory.

Method (the same for every script):

* **Same work.** Both libraries get the same architecture, batch size, dtype (float32) and
  initial weights (copied from ours into torch), and the same real MNIST batches (the
  bundled files, scaled to [0, 1]). A training step is forward + loss + backward + SGD update.
* **Same threads.** ``torch.set_num_threads`` is set to NumPy's BLAS thread count (read with
  threadpoolctl), so both use the same cores.
* **Alternating.** Each repetition times a block of steps of one library, then of the other
  (the order flips every repetition), after warm-up steps. Load from other processes then
  hits both alike; the ratio of the medians is the figure to read, the min/max show the noise.
* **Peak memory** is measured in a fresh child process per library, so that neither sees the
  other's allocations: the growth of the process's peak resident set size (``ru_maxrss``)
  over its size just before the first training step (the high-water mark is reset there, see
  ``peak_rss_growth_kib``), i.e. the memory the steps need beyond the weights, data and libraries. For ours, ``tracemalloc`` (which sees every NumPy
  allocation) also gives the exact peak of NumPy memory during one step.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def blas_threads() -> int:
    """Threads NumPy's BLAS uses (threadpoolctl reads it from the loaded library)."""
    from threadpoolctl import threadpool_info

    if os.environ.get("NNFS_BENCH_THREADS") and _limits is None:
        set_threads(int(os.environ["NNFS_BENCH_THREADS"]))

    for pool in threadpool_info():
        if pool.get("user_api") == "blas":
            return int(pool["num_threads"])
    return 1


def import_torch():
    """torch with as many threads as NumPy's BLAS, and no autograd anomaly checks."""
    import torch

    torch.set_num_threads(blas_threads())
    return torch


def mnist_batches(batch_size: int, n_batches: int) -> tuple[np.ndarray, np.ndarray]:
    """``n_batches`` real MNIST training batches: x (n, B, 1, 28, 28) float32 in [0, 1], labels (n, B) int64."""
    from nn_from_scratch.datasets import mnist

    (x, y), _ = mnist.load_data()
    n = batch_size * n_batches
    x = (x[:n].astype(np.float32) / np.float32(255)).reshape(n_batches, batch_size, 1, 28, 28)
    return x, y[:n].astype(np.int64).reshape(n_batches, batch_size)


def one_hot(labels: np.ndarray, classes: int = 10) -> np.ndarray:
    return np.eye(classes, dtype=np.float32)[labels]


@dataclass
class Timing:
    name: str
    images_per_s: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.images_per_s)

    @property
    def best(self) -> float:
        return max(self.images_per_s)

    @property
    def worst(self) -> float:
        return min(self.images_per_s)


def time_alternating(
    runners: dict[str, Callable[[int], None]], images_per_step: int, steps: int, reps: int, warmup: int
) -> dict[str, Timing]:
    """Time ``steps`` calls of each runner, ``reps`` times, alternating (order flips each rep).

    ``runner(i)`` does step ``i`` (it picks its batch from ``i``). Returns images/s per rep.
    """
    for run in runners.values():
        for i in range(warmup):
            run(i)
    timings = {name: Timing(name) for name in runners}
    names = list(runners)
    step = warmup
    for rep in range(reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            run = runners[name]
            start = time.perf_counter()
            for i in range(steps):
                run(step + i)
            elapsed = time.perf_counter() - start
            timings[name].images_per_s.append(images_per_step * steps / elapsed)
        step += steps
    return timings


def report(title: str, timings: dict[str, Timing], ours: str = "nn_from_scratch", theirs: str = "torch") -> dict:
    """Print one benchmark's table; return its figures (for run_all.py)."""
    a, b = timings[ours], timings[theirs]
    ratio = a.median / b.median
    print(f"\n{title}")
    print(f"{'':24s} {'median':>10s} {'min':>10s} {'max':>10s}   images/s over {len(a.images_per_s)} reps")
    for t in (a, b):
        print(f"{t.name:24s} {t.median:10,.0f} {t.worst:10,.0f} {t.best:10,.0f}")
    print(f"ratio ours/torch (medians): {ratio:.2f}x   (best/best: {a.best / b.best:.2f}x)")
    return {
        "title": title,
        "ours": {"median": a.median, "min": a.worst, "max": a.best},
        "torch": {"median": b.median, "min": b.worst, "max": b.best},
        "ratio": ratio,
        "ratio_best": a.best / b.best,
    }


# -- peak memory, in a child process per library ------------------------------------------------
def _status_kib(field_name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise KeyError(field_name)


def peak_rss_growth_kib(run: Callable[[int], None], steps: int) -> int:
    """Peak RSS during ``steps`` calls of ``run`` minus the RSS before them (KiB, Linux).

    The kernel's high-water mark (VmHWM, what ``ru_maxrss`` reports) is reset first by writing
    5 to /proc/self/clear_refs, so that loading the data set earlier does not count.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _status_kib("VmRSS")
        for i in range(steps):
            run(i)
        return max(_status_kib("VmHWM") - before, 0)
    except OSError:  # not Linux, or not allowed: fall back to ru_maxrss (may include earlier peaks)
        before = _status_kib("VmRSS") if os.path.exists("/proc/self/status") else 0
        for i in range(steps):
            run(i)
        return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, 0)


def numpy_step_peak_bytes(run: Callable[[int], None]) -> int:
    """Peak NumPy memory allocated during one step, as ``tracemalloc`` sees it."""
    import tracemalloc

    run(0)  # buffers that live across steps are allocated here, outside the trace
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    run(1)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak


def memory_in_child(script: Path, which: str, steps: int = 20) -> dict:
    """Run ``script --memory-child which`` in a fresh interpreter and read the JSON it prints."""
    out = subprocess.run(
        [sys.executable, str(script), "--memory-child", which, "--steps", str(steps)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def print_memory(mem: dict[str, dict]) -> None:
    print("peak memory (fresh process per library):")
    for name, m in mem.items():
        extra = f", NumPy peak in one step (tracemalloc) {m['tracemalloc_kib'] / 1024:.1f} MiB" if "tracemalloc_kib" in m else ""
        print(f"  {name:16s} peak RSS growth while running {m['rss_growth_kib'] / 1024:.1f} MiB{extra}")


def parse_args(description: str, steps: int, reps: int,
               add_arguments: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """The options every benchmark shares, plus a script's own (``add_arguments(parser)``)."""
    p = argparse.ArgumentParser(description=description)
    if add_arguments is not None:
        add_arguments(p)
    p.add_argument("--steps", type=int, default=steps, help="steps per timed block")
    p.add_argument("--reps", type=int, default=reps, help="timed blocks per library (alternating)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, help="BLAS and torch threads (default: NumPy's BLAS default)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)  # internal: which library to measure
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args()
    if args.threads:
        set_threads(args.threads)
    return args


def torch_training_step(torch, net, optimizer, loss_fn, x: np.ndarray, labels: np.ndarray) -> Callable[[int], None]:
    """``run(i)``: one torch training step on batch ``i`` (cycled) of ``x``/``labels`` -- the
    same work as ``Sequential.train_step`` (zero the gradients, loss, backward, optimizer step)."""
    xt = [torch.from_numpy(b) for b in x]
    yt = [torch.from_numpy(b) for b in labels]

    def run(i: int) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(net(xt[i % len(xt)]), yt[i % len(yt)]).backward()
        optimizer.step()

    return run


_limits = None


def set_threads(n: int) -> None:
    """Pin NumPy's BLAS to ``n`` threads for the rest of the process (torch follows via import_torch).

    Through ``nn_from_scratch.set_num_threads``, so that the library's adaptive default
    (``threads.adapt``) leaves the count alone: a threadpoolctl limit of one thread per core
    would look like the default to it.
    """
    global _limits
    import nn_from_scratch

    os.environ["NNFS_BENCH_THREADS"] = str(n)  # memory child processes inherit it
    nn_from_scratch.set_num_threads(n)
    _limits = n


def environment() -> dict:
    import torch

    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.processor() or platform.machine()}, {cpu_model()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "blas": blas_description(),
        "blas_threads": blas_threads(),
        "load_average": " ".join(f"{v:.1f}" for v in os.getloadavg()),
    }


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def blas_description() -> str:
    from threadpoolctl import threadpool_info

    for pool in threadpool_info():
        if pool.get("user_api") == "blas":
            return f"{pool.get('internal_api')} {pool.get('version')} ({pool.get('architecture')})"
    return "unknown"
