"""Run every benchmark and write the results as a markdown table to benchmarks/RESULTS.md.

    python benchmarks/run_all.py --threads 1 2        # one table per thread count (the issue-9 tables)
    python benchmarks/run_all.py                      # default threads: ours adapts (threads.adapt)
    python benchmarks/run_all.py --threads 1 --under-load   # plus the run with 3 busy processes
    python benchmarks/run_all.py --quick --threads 1  # smoke run: 2 reps, few steps, no memory children
    python benchmarks/run_all.py --only seed_cnn cifar memory under_load   # a subset

Each benchmark runs in its own process and compares this library with PyTorch eager, alternating,
on the same data, weights and thread count (see benchmarks/common.py for the method):

* seed_cnn.py, lenet.py -- MNIST training;
* inference.py -- throughput (seed CNN, LeNet-5, CIFAR plain at 128) and batch-1 latency;
* cifar.py -- CIFAR-sized training: plain, bn, avg, stride2 at batch 32 and 128, vgg at 32;
* resnet.py -- zoo.resnet training at batch 128;
* memory.py (once, one thread; not with ``--no-memory``) -- peak memory of training and inference,
  CIFAR plain and VGG at batch 128;
* under_load.py (``--under-load``, once, at both libraries' default threads) -- the seed CNN and
  LeNet-5 idle and with three busy processes that it starts itself.

Expect roughly 10 minutes per thread count on an idle 2-core machine (resnet.py and the CIFAR
nets take most of it; two threads on a busy machine take far longer), ~3 minutes for
``--under-load``, and ~3 minutes for ``--quick --threads 1``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402

#: (script, arguments, extra arguments with --quick). The CIFAR nets of issue 9: plain, batch norm,
#: average pooling and stride 2 at batch 32 and 128; the VGG-style net at 32.
JOBS = [
    ("seed_cnn.py", [], ["--steps", "10"]),
    ("lenet.py", [], ["--steps", "10"]),
    ("inference.py", [], ["--calls", "50"]),
    ("cifar.py", ["--nets", "plain", "bn", "avg", "stride2", "--batches", "32", "128"], ["--steps", "2"]),
    ("cifar.py", ["--nets", "vgg", "--batches", "32"], ["--steps", "2"]),
    ("resnet.py", [], ["--steps", "1"]),
]
QUICK = ["--reps", "2", "--warmup", "2"]
UNDER_LOAD_QUICK = ["--reps", "2", "--steps", "5", "--warmup", "2", "--settle", "1.5"]
MEMORY_QUICK = ["--nets", "plain", "--repeats", "1", "--steps", "2"]


def run_script(script: str, threads: int | None, extra: list[str]) -> list[dict]:
    """Run ``script --json FILE [extra] [--threads N]``; its results (a list, one dict per row).

    A script writes one result (a dict) or several (a list); each row gets ``load_average``, the
    1-minute load average when the script ended.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(HERE / script), *extra, "--json", str(out)]
        if threads:
            cmd += ["--threads", str(threads)]
        print("$", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True)
        result = json.loads(out.read_text())
    rows = result if isinstance(result, list) else [result]
    load = os.getloadavg()[0]
    for row in rows:
        row.setdefault("load_average", load)
    return rows


def mib(m: dict, key: str) -> str:
    return f"{m[key] / 1024:.1f}" if key in m else "–"


def table(results: list[dict]) -> list[str]:
    lines = [
        "| benchmark | this library, img/s: median (min–max) | PyTorch eager, img/s: median (min–max) | ratio (medians) "
        "| peak RSS growth, MiB: ours / torch | NumPy peak per step, MiB | load avg (1 min) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        o, t = r["ours"], r["torch"]
        mem = r.get("memory")
        mem_cols = (
            f"{mib(mem['nn_from_scratch'], 'rss_growth_kib')} / {mib(mem['torch'], 'rss_growth_kib')} | "
            f"{mib(mem['nn_from_scratch'], 'tracemalloc_kib')}"
            if mem else "– | –"
        )
        load = r.get("load_average")
        lines.append(
            f"| {r['title']} | {o['median']:,.0f} ({o['min']:,.0f}–{o['max']:,.0f}) "
            f"| {t['median']:,.0f} ({t['min']:,.0f}–{t['max']:,.0f}) | **{r['ratio']:.2f}x** | {mem_cols} "
            f"| {'–' if load is None else f'{load:.1f}'} |"
        )
    return lines


def under_load_table(results: list[dict]) -> list[str]:
    """under_load.py's rows come in (idle, loaded) pairs per network."""
    lines = [
        "| network | idle: ours / torch img/s | idle ratio | loaded: ours / torch img/s | loaded ratio | change "
        "| ours slowed | torch slowed | threads idle / loaded: ours, torch | other processes' cores idle / loaded |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for idle, loaded in zip(results[::2], results[1::2]):
        def counts(r: dict, who: str) -> str:
            return ",".join(str(t[who]) for t in r.get("threads", []))

        def cores(r: dict) -> str:
            return ",".join("?" if c is None else f"{c:.1f}" for c in r.get("other_processes_cores", []))

        name = idle["title"].rsplit(", idle", 1)[0]
        change = loaded["ratio"] / idle["ratio"] - 1
        lines.append(
            f"| {name} | {idle['ours']['median']:,.0f} / {idle['torch']['median']:,.0f} | {idle['ratio']:.2f}x "
            f"| {loaded['ours']['median']:,.0f} / {loaded['torch']['median']:,.0f} | {loaded['ratio']:.2f}x "
            f"| **{change:+.0%}**{' (idle was busy)' if idle.get('idle_was_busy') else ''} | {idle['ours']['median'] / loaded['ours']['median']:.1f}x "
            f"| {idle['torch']['median'] / loaded['torch']['median']:.1f}x "
            f"| ours {counts(idle, 'nn_from_scratch')} / {counts(loaded, 'nn_from_scratch')}; "
            f"torch {counts(idle, 'torch')} / {counts(loaded, 'torch')} | {cores(idle)} / {cores(loaded)} |"
        )
    return lines


def memory_table(rows: list[dict]) -> list[str]:
    """memory.py's rows: peak RSS growth of training and inference, fresh process per run."""
    targets = {"train": 1.2, "infer": 1.5}
    lines = [
        "| network, mode, batch | ours: peak RSS growth, MiB | torch | ratio | issue-9 target | held after, MiB: ours / torch "
        "| NumPy peak per step (ours), MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        o, t = r["ours"], r["torch"]
        lines.append(
            f"| CIFAR {r['net']}, {'training' if r['mode'] == 'train' else 'inference'}, batch {r['batch']} "
            f"| {mib(o, 'rss_growth_kib')} | {mib(t, 'rss_growth_kib')} | **{r['ratio']:.2f}x** "
            f"| <= {targets.get(r['mode'], float('nan'))}x | {mib(o, 'held_kib')} / {mib(t, 'held_kib')} "
            f"| {mib(o, 'tracemalloc_kib')} |"
        )
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="*", default=[None],
                   help="thread counts, one table each (default: one table at the libraries' default threads)")
    p.add_argument("--output", default=str(HERE / "RESULTS.md"))
    p.add_argument("--reps", type=int, help="override each script's repetitions")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 2 reps, few steps, no memory children in the speed scripts, memory.py on plain once")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes and memory.py")
    p.add_argument("--under-load", action="store_true", help="also run under_load.py (default threads, 3 busy processes)")
    p.add_argument("--only", nargs="+", metavar="SCRIPT", help="run only these scripts (e.g. seed_cnn cifar under_load)")
    args = p.parse_args()
    only = {Path(s).stem for s in args.only or ()}
    jobs = [job for job in JOBS if not only or Path(job[0]).stem in only]
    args.under_load = args.under_load or "under_load" in only

    env_before = common.environment()
    sections = []
    for threads in args.threads if jobs else ():
        load_before = os.getloadavg()
        results = []
        for script, script_args, quick_args in jobs:
            extra = [*script_args, *(QUICK + quick_args if args.quick else [])]
            if args.reps:
                extra += ["--reps", str(args.reps)]
            if args.quick or args.no_memory:
                extra.append("--no-memory")
            results += run_script(script, threads, extra)
        load_after = os.getloadavg()
        label = (f"{threads} thread{'s' if threads != 1 else ''} (BLAS = torch threads)" if threads else
                 f"default threads (ours: threads.adapt, {env_before['blas_threads']} BLAS threads at the start; "
                 "torch: NumPy's BLAS count when each script started)")
        sections += [f"### {label}", "",
                     f"Load average (1, 5, 15 min) before this table: {' '.join(f'{v:.1f}' for v in load_before)}; "
                     f"after: {' '.join(f'{v:.1f}' for v in load_after)}.", "", *table(results), ""]
    if (not only or "memory" in only) and not args.no_memory and (HERE / "memory.py").exists():
        rows = run_script("memory.py", None, MEMORY_QUICK if args.quick else [])
        sections += ["### Peak memory: training and inference (memory.py; 1 thread, fresh process per run, median of its repeats)",
                     "", *memory_table(rows), ""]
    if args.under_load:
        extra = UNDER_LOAD_QUICK if args.quick else []
        if args.reps:
            extra = [*extra, "--reps", str(args.reps)]
        results = run_script("under_load.py", None, extra)
        sections += ["### Under load: default threads of both libraries, idle vs 3 busy processes (under_load.py)", "",
                     "Ratio = ours / torch (medians); change = loaded ratio / idle ratio - 1 (issue 9 asks for no worse "
                     "than -20%). The busy processes are pure-Python loops the script starts and kills. Other processes' cores: "
                     "the CPU other processes (the busy loops included) used during each timed block, from /proc/stat; "
                     "'idle was busy' marks a network whose idle blocks had a median of half a core or more of it, "
                     "where the idle ratio (and so the change) says little.", "",
                     *under_load_table(results), ""]
    env_after = common.environment()

    e = env_before
    text = [
        "# Benchmarks: nn_from_scratch vs PyTorch eager (CPU, float32)",
        "",
        f"Generated by `python benchmarks/run_all.py {' '.join(sys.argv[1:])}`".rstrip() + f" on {e['date']}.",
        "",
        f"- Machine: {e['machine']}; Python {e['python']}",
        f"- NumPy {e['numpy']} ({e['blas']}), PyTorch {e['torch']}",
        f"- Load average (1, 5, 15 min) before: {e['load_average']}; after: {env_after['load_average']}"
        " -- other processes were running when above ~0; the ratio of the alternating medians is the figure to read.",
        "",
        "Training rows: forward + loss + backward + SGD update per step, the same initial weights in both",
        "libraries (MNIST rows: real MNIST batches; CIFAR rows: random 3x32x32 images). Inference rows:",
        "predict only; latency rows give the median ms of single batch-1 calls in the title. Images/s over",
        "repeated blocks of steps, the two libraries alternating. Peak RSS growth: fresh process per library,",
        "peak resident memory above the size before the first step (high-water mark reset there). NumPy peak",
        "per step: tracemalloc over one step of ours, buffers kept between steps excluded. Load avg: the",
        "1-minute load average when the row's script ended. Method: benchmarks/common.py.",
        "",
        *sections,
    ]
    Path(args.output).write_text("\n".join(text))
    print(f"\nwrote {args.output}")
    print("\n".join(sections))


if __name__ == "__main__":
    main()
