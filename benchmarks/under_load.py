"""Training speed on a busy machine: the seed CNN and LeNet-5, idle and then under load, both libraries at their defaults.

Neither library's thread count is set: ours picks its own (``nn_from_scratch.threads.adapt``),
torch its own (``torch.get_num_threads()``, one per core). Each network is timed in two phases,
interleaved rep by rep (idle block, loaded block, idle block, ...), each block timing ours and
torch one after the other (order flipping every rep), as in the other benchmarks:

1. **idle**: nothing started by the benchmark (other users' processes are whatever they are:
   the load average is printed);
2. **loaded**: with ``--busy`` (default 3) competing processes that this script starts before
   the block (then trains untimed for ``--settle`` seconds, so that both libraries see the load)
   and kills after it, each a plain Python busy loop (``n += 1`` forever: one core
   each, no memory traffic, no threads), each in a session of its own like another user's
   process (with autogroup scheduling, processes of one session share one group's CPU). On a
   2-core machine three of them leave each runnable thread well under a core.

Printed per network: the ratio ours/torch of the median images/s, idle and loaded, and its
relative change, with the cores' worth of CPU that other processes used during each block (from
``/proc/stat``: on a shared machine the "idle" blocks are only as idle as other users leave them); the target of issue 9 is a loaded ratio no worse than the idle one within 20%.
The busy processes are killed when the loaded phase ends, and at any exit of this script
(exception, Ctrl-C, SIGTERM); each also quits by itself when its parent is gone.

    python benchmarks/under_load.py                   # ~2-3 minutes on 2 cores
    python benchmarks/under_load.py --reps 2 --steps 5 --nets seed   # a smoke run
    python benchmarks/under_load.py --ours-threads 2  # force ours to 2 BLAS threads (experiments)
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

#: The busy loop each competing process runs: pure Python, one core, quits when orphaned or on Ctrl-C.
BUSY_LOOP = """
import os, sys
parent = int(sys.argv[1])
n = 0
try:
    while True:
        n += 1
        if n % 2_000_000 == 0 and os.getppid() != parent:
            break
except KeyboardInterrupt:
    pass
"""


_STARTED: list[subprocess.Popen] = []  # every busy process this script started and has not reaped


def _kill(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        if p in _STARTED:
            _STARTED.remove(p)


atexit.register(lambda: _kill(list(_STARTED)))


class BusyProcesses:
    """``count`` busy-loop processes, started on ``__enter__`` and killed on ``__exit__`` (and at exit)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> "BusyProcesses":
        for _ in range(self.count):
            # A session of its own, as another user's process has: with the kernel's autogroup
            # scheduling (sched_autogroup_enabled), processes of one session share one group's
            # CPU, so busy loops in ours would compete only with this benchmark, not as others do.
            proc = subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(os.getpid())], stdin=subprocess.DEVNULL,
                                    start_new_session=True)
            _STARTED.append(proc)
            self.procs.append(proc)
        return self

    def __exit__(self, *exc) -> None:
        _kill(self.procs)
        self.procs = []


def _exit_on_signal(signum, frame):  # SIGTERM / SIGHUP: unwind, so that the finally blocks and atexit run
    raise SystemExit(128 + signum)


NETWORKS = ("seed", "lenet")


def runners_for(net: str, ours_threads: int | None, torch_threads: int | None):
    """Training step functions of both libraries for ``net``, at the libraries' default threads
    unless ``ours_threads`` / ``torch_threads`` say otherwise."""
    import lenet
    import seed_cnn

    module = seed_cnn if net == "seed" else lenet
    import torch

    if torch_threads:
        torch.set_num_threads(torch_threads)
    if ours_threads:
        import nn_from_scratch

        nn_from_scratch.set_num_threads(ours_threads)
    # seed_cnn.training_runners takes torch from common.import_torch, which copies NumPy's BLAS
    # thread count into torch; here torch keeps its own default.
    original = common.import_torch
    common.import_torch = lambda: torch
    try:
        runners = seed_cnn.training_runners(module.build_ours, module.build_torch, module.BATCH, module.N_BATCHES)
    finally:
        common.import_torch = original
    title = {"seed": "seed CNN, training", "lenet": "LeNet-5, training"}[net]
    return title, module.BATCH, runners


def thread_counts() -> dict:
    import torch

    import nn_from_scratch

    return {"nn_from_scratch": nn_from_scratch.get_num_threads(), "torch": torch.get_num_threads()}


def other_cpu_sample() -> tuple[float, float | None, float]:
    """(wall s, CPU s of every process on our cores from /proc/stat or None, this process's CPU s)."""
    from nn_from_scratch.threads import _available_cpus, read_cpu_seconds

    return time.monotonic(), read_cpu_seconds(_available_cpus()), time.process_time()


def other_cores(before: tuple, after: tuple) -> float | None:
    """Cores' worth of CPU that other processes (the busy loops included) used between two samples."""
    if before[1] is None or after[1] is None or after[0] <= before[0]:
        return None
    return max(0.0, (after[1] - before[1]) - (after[2] - before[2])) / (after[0] - before[0])


def measure(net: str, args) -> tuple[dict, dict]:
    """Idle and loaded timings of ``net``, the phases interleaved rep by rep (idle, then loaded).

    Interleaving makes a change in other users' load hit both phases alike. Each loaded block
    starts ``args.busy`` busy processes, trains untimed for ``args.settle`` seconds, times, and
    kills them; each idle block also trains untimed for ``args.settle`` seconds first, so that
    both libraries have seen the machine idle again (ours re-measures the load every 0.5 s).
    """
    title, batch, runners = runners_for(net, args.ours_threads, args.torch_threads)
    for run in runners.values():
        for i in range(args.warmup):
            run(i)
    phases = {"idle": {name: common.Timing(name) for name in runners},
              "loaded": {name: common.Timing(name) for name in runners}}
    threads_seen: dict[str, list] = {"idle": [], "loaded": []}
    loads: dict[str, list] = {"idle": [], "loaded": []}
    others: dict[str, list] = {"idle": [], "loaded": []}
    step = args.warmup
    for rep in range(args.reps):
        for phase in ("idle", "loaded"):
            with BusyProcesses(args.busy if phase == "loaded" else 0):
                # Keep training (both libraries, in turn) while the load settles, as a long run
                # would: ours re-measures the load every 0.5 s (threads.adapt).
                end = time.monotonic() + args.settle
                while time.monotonic() < end:
                    for run in runners.values():
                        run(step)
                before = other_cpu_sample()
                block = common.time_alternating(runners, batch, args.steps, 1, 0) if rep % 2 == 0 else \
                    common.time_alternating(dict(reversed(list(runners.items()))), batch, args.steps, 1, 0)
                threads_seen[phase].append(thread_counts())
                loads[phase].append(os.getloadavg()[0])
                others[phase].append(other_cores(before, other_cpu_sample()))
            for name, timing in block.items():
                phases[phase][name].images_per_s += timing.images_per_s
            step += args.steps + 1
    results = {}
    for phase, timings in phases.items():
        label = f"{title}, {phase}" + (f" ({args.busy} busy processes)" if phase == "loaded" else "")
        result = common.report(label, timings)
        result["threads"], result["load_average_1min"] = threads_seen[phase], loads[phase]
        result["other_processes_cores"] = others[phase]
        ours_counts = [t["nn_from_scratch"] for t in threads_seen[phase]]
        torch_counts = [t["torch"] for t in threads_seen[phase]]
        print(f"threads at the end of each block: ours {ours_counts} (BLAS), torch {torch_counts}; "
              f"1-min load average {min(loads[phase]):.1f}-{max(loads[phase]):.1f}; cores used by other processes "
              f"during the blocks: {', '.join('?' if c is None else f'{c:.2f}' for c in others[phase])}")
        results[phase] = result
    return results["idle"], results["loaded"]


def main() -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nets", nargs="+", choices=NETWORKS, default=list(NETWORKS))
    p.add_argument("--busy", type=int, default=3, help="competing busy processes in the loaded phase (default 3)")
    p.add_argument("--steps", type=int, default=20, help="steps per timed block")
    p.add_argument("--reps", type=int, default=5, help="timed blocks per library and phase (idle and loaded interleaved)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--settle", type=float, default=2.0,
                   help="seconds of untimed training before each block (after starting the busy processes)")
    p.add_argument("--ours-threads", type=int, help="set ours to N BLAS threads (default: the library's default)")
    p.add_argument("--torch-threads", type=int, help="set torch to N threads (default: torch's default)")
    p.add_argument("--threads", type=int, help=argparse.SUPPRESS)  # run_all passes it: ignored, defaults are the point
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args()
    os.environ.pop("NNFS_BENCH_THREADS", None)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C raises, even where SIGINT was ignored (`cmd &`)

    import torch

    import nn_from_scratch

    print(f"under load: default threads (ours {nn_from_scratch.get_num_threads()} BLAS at start, torch "
          f"{torch.get_num_threads()}), {args.reps} x {args.steps} steps per library and phase, alternating; "
          f"loaded = {args.busy} busy Python loops on {os.cpu_count()} cores")
    results = []
    for net in args.nets:
        idle, loaded = measure(net, args)
        change = loaded["ratio"] / idle["ratio"] - 1
        verdict = "ok" if loaded["ratio"] >= 0.8 * idle["ratio"] else "WORSE than idle by more than 20%"
        busy_idle = [c for c in idle["other_processes_cores"] if c is not None]
        if busy_idle and statistics.median(busy_idle) >= 0.5:
            idle["idle_was_busy"] = True
            verdict += (f"; but the idle blocks were not idle: other processes used a median "
                        f"{statistics.median(busy_idle):.1f} cores during them")
        print(f"\n==> {net}: ratio ours/torch idle {idle['ratio']:.2f}x, loaded {loaded['ratio']:.2f}x, "
              f"change {change:+.0%} ({verdict}); ours slowed {idle['ours']['median'] / loaded['ours']['median']:.1f}x, "
              f"torch {idle['torch']['median'] / loaded['torch']['median']:.1f}x under load\n")
        loaded["idle_ratio"], loaded["ratio_change"] = idle["ratio"], change
        results += [idle, loaded]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
