"""Peak memory of training and inference, this library vs PyTorch eager, float32, one thread each.

Networks: ``cifar.build_ours('plain')`` and ``cifar.build_ours('vgg')`` (see benchmarks/cifar.py),
the torch twin is ``interop.to_torch`` of the same model. Each (library, network, mode) runs in a
fresh child process, so that no run sees another's allocations:

* **training**: ``train_step`` (forward, softmax cross-entropy, backward, SGD momentum update);
  torch: ``zero_grad(set_to_none=True)``, ``CrossEntropyLoss``, ``backward``, ``step``;
* **inference**: ``model.predict(x, batch_size=None)``; torch: ``model.eval()`` under
  ``torch.inference_mode()``.

Figures (MiB):

* ``peak`` -- growth of the process's peak resident set size over its size after building the
  model and the data and before the first step (``common.peak_rss_growth_kib``), over ``--steps``
  steps. Everything a step needs counts: work buffers a layer keeps between steps too (they
  are allocated during the measured steps, not before them).
* ``held`` -- resident growth after the steps returned: what the model keeps between calls.
* ``numpy peak`` (ours only) -- ``tracemalloc``'s peak of NumPy memory during one step after a
  first one, over what was live before it (``common.numpy_step_peak_bytes``).

With ``--where``, what the layers hold between steps (attribute by attribute), then a per-layer
account of our peak (``tracemalloc``): for the layer call in which
the peak of NumPy memory occurs, the memory live when it started, by the source line that
allocated it (the layer attribute that holds it, where one does), and the call's own
temporaries. This is how the remaining peak is attributed in the closing note.

    python benchmarks/memory.py                      # plain and vgg, batch 128, the table (about 2 minutes)
    python benchmarks/memory.py --nets plain --where # and where our peak comes from
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

MODES = ("train", "infer")


def _data(batch: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(batch, 3, 32, 32)).astype(np.float32), rng.integers(0, 10, size=batch)


def _runner(which: str, net: str, mode: str, batch: int):
    import cifar

    ours = cifar.build_ours(net)
    x, labels = _data(batch)
    if which == "ours":
        if mode == "train":
            return lambda i: ours.train_step(x, labels)
        return lambda i: ours.predict(x, batch_size=None)
    torch = common.import_torch()
    from nn_from_scratch.interop import to_torch

    model = to_torch(ours)
    del ours
    xt, yt = torch.from_numpy(x), torch.from_numpy(labels)
    if mode == "train":
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=cifar.LR, momentum=cifar.MOMENTUM)
        loss_fn = torch.nn.CrossEntropyLoss()

        def run_torch(i: int) -> None:
            opt.zero_grad(set_to_none=True)
            loss_fn(model(xt), yt).backward()
            opt.step()

        return run_torch
    model.eval()

    def infer_torch(i: int) -> None:
        with torch.inference_mode():
            model(xt)

    return infer_torch


def child(spec: str, steps: int) -> dict:
    """Measure one ``which:net:mode:batch`` in this (fresh) process."""
    which, net, mode, batch = spec.split(":")
    common.set_threads(1)
    if which == "torch":
        common.import_torch().set_num_threads(1)
    run = _runner(which, net, mode, int(batch))
    before = common._status_kib("VmRSS")
    result = {"rss_growth_kib": common.peak_rss_growth_kib(run, steps)}
    result["held_kib"] = max(common._status_kib("VmRSS") - before, 0)
    if which == "ours":
        result["tracemalloc_kib"] = common.numpy_step_peak_bytes(run) / 1024
    return result


def in_child(spec: str, steps: int, repeats: int = 1) -> dict:
    """The median of ``repeats`` fresh child processes, figure by figure (RSS growth varies by a
    few tens of MiB from run to run with where the allocator happens to place the arrays)."""
    runs = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, __file__, "--child", spec, "--steps", str(steps)],
            check=True, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {key: float(np.median([r[key] for r in runs])) for key in runs[0]}


# -- where does our peak come from --------------------------------------------------------------
def held_arrays(layers, exclude: frozenset[int] = frozenset()) -> dict[str, int]:
    """Bytes of the arrays each layer attribute holds (recursively into plans, tuples, dicts),
    keyed ``"index:name.attr..."``; an array (or the base of a view) is counted once, and those
    whose ``id`` is in ``exclude`` (parameters, buffers) not at all."""
    seen: set[int] = set(exclude)
    held: dict[str, int] = {}

    def visit(obj, path, depth):
        if isinstance(obj, np.ndarray):
            if id(obj) in seen:
                return
            base = obj
            while isinstance(base.base, np.ndarray):
                base = base.base
            if id(base) not in seen:
                seen.add(id(base))
                held[path] = held.get(path, 0) + base.nbytes
            return
        if depth > 5 or isinstance(obj, (str, bytes, int, float, type)) or obj is None:
            return
        if isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                visit(v, f"{path}[{i}]", depth + 1)
        elif isinstance(obj, dict):
            for k, v in obj.items():
                visit(v, f"{path}[{k!r}]", depth + 1)
        elif hasattr(obj, "__dict__"):
            for k, v in vars(obj).items():
                visit(v, f"{path}.{k}", depth + 1)

    for i, layer in enumerate(layers):
        visit(layer, f"{i}:{layer.name}", 0)
    return held


def where(net: str, mode: str, batch: int, top: int = 10) -> None:
    """Print the per-layer account of our NumPy peak (see the module docstring)."""
    import tracemalloc

    import cifar

    common.set_threads(1)
    model = cifar.build_ours(net)
    parameters = frozenset(id(p) for _, p in model.parameters()) | frozenset(id(b) for _, b in model.buffers())
    x, labels = _data(batch)
    step = (lambda: model.train_step(x, labels)) if mode == "train" else (lambda: model.predict(x, batch_size=None))
    step()  # buffers kept between steps exist from here on: they show up as live at the start
    held = held_arrays(model.layers, parameters)
    mib = 1 / 2**20
    print(f"\n{net}, {mode}, batch {batch}: held by the layers between steps {sum(held.values()) * mib:.1f} MiB "
          "(parameters and buffers left out)")
    for path, size in sorted(held.items(), key=lambda kv: -kv[1]):
        if size >= 2**20:
            print(f"  {size * mib:7.1f} MiB  {path}")
    calls: list[dict] = []
    inspect_call: list = [None, None]  # [index of the call to inspect, what was found there]

    def wrap(layer, method):
        original = getattr(layer, method)

        def traced(*a, **k):
            if inspect_call[0] == len(calls):
                snapshot = tracemalloc.take_snapshot()
                inspect_call[1] = (snapshot, held_arrays(model.layers, parameters))
            start = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            out = original(*a, **k)
            now, peak = tracemalloc.get_traced_memory()
            calls.append({"call": f"{layer.name}.{method}", "live_at_start": start, "peak": peak, "after": now})
            tracemalloc.reset_peak()
            return out

        setattr(layer, method, traced)

    for layer in model.layers:
        wrap(layer, "forward")
        wrap(layer, "backward")
    tracemalloc.start(12)
    base = tracemalloc.get_traced_memory()[0]
    step()
    print(f"\n{net}, {mode}, batch {batch}: NumPy memory per layer call (MiB, over {base * mib:.1f} live before the step)")
    print(f"{'call':34s} {'live at start':>13s} {'peak in call':>12s} {'after':>8s}")
    for c in calls:
        print(f"{c['call']:34s} {(c['live_at_start'] - base) * mib:13.1f} {(c['peak'] - base) * mib:12.1f} {(c['after'] - base) * mib:8.1f}")
    worst_index = max(range(len(calls)), key=lambda i: calls[i]["peak"])
    worst = calls[worst_index]
    # A second, identical step, stopped at the start of the worst call to see what is live there.
    calls.clear()
    inspect_call[0] = worst_index
    step()
    tracemalloc.stop()
    snapshot, held = inspect_call[1]
    print(f"\npeak {(worst['peak'] - base) * mib:.1f} MiB during {worst['call']}: "
          f"{(worst['peak'] - worst['live_at_start']) * mib:.1f} MiB of its own temporaries and output, "
          f"on top of {(worst['live_at_start'] - base) * mib:.1f} MiB live when it started.")
    print("live at its start, held by layer attributes (parameters and buffers left out):")
    for path, size in sorted(held.items(), key=lambda kv: -kv[1])[:top]:
        if size >= 2**16:
            print(f"  {size * mib:7.1f} MiB  {path}")
    print("live at its start, by the line that allocated it:")
    stats = snapshot.filter_traces([tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)]).statistics("traceback")
    for s in stats[:top]:
        frames = [f for f in s.traceback if "nn_from_scratch" in f.filename] or list(s.traceback)
        f = frames[-1]  # the innermost frame of the library: the line that allocated it
        print(f"  {s.size * mib:7.1f} MiB in {s.count:3d} arrays  {Path(f.filename).parent.name}/{Path(f.filename).name}:{f.lineno}")


def main() -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nets", nargs="+", default=["plain", "vgg"])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3, help="fresh child processes per figure (the median is shown)")
    p.add_argument("--where", action="store_true", help="also print where our peak comes from")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps)))
        raise SystemExit(0)
    rows = []
    mib = 1 / 1024
    print(f"peak memory, float32, batch {args.batch}, 1 thread each, fresh process per run, median of {args.repeats} (MiB)")
    print(f"{'net':6s} {'mode':6s} {'ours peak':>9s} {'torch peak':>10s} {'ratio':>6s} {'ours held':>9s} "
          f"{'torch held':>10s} {'ours numpy peak':>15s}")
    for net in args.nets:
        for mode in MODES:
            m = {which: in_child(f"{which}:{net}:{mode}:{args.batch}", args.steps, args.repeats) for which in ("ours", "torch")}
            ratio = m["ours"]["rss_growth_kib"] / max(m["torch"]["rss_growth_kib"], 1)
            rows.append({"net": net, "mode": mode, "batch": args.batch, "ours": m["ours"], "torch": m["torch"], "ratio": ratio})
            print(f"{net:6s} {mode:6s} {m['ours']['rss_growth_kib'] * mib:9.1f} {m['torch']['rss_growth_kib'] * mib:10.1f} "
                  f"{ratio:6.2f} {m['ours']['held_kib'] * mib:9.1f} {m['torch']['held_kib'] * mib:10.1f} "
                  f"{m['ours']['tracemalloc_kib'] * mib:15.1f}", flush=True)
    targets = {"train": 1.2, "infer": 1.5}
    print("targets (issue 9): training <= 1.2x torch, inference <= 1.5x torch")
    for r in rows:
        print(f"  {r['net']} {r['mode']}: {r['ratio']:.2f}x  {'ok' if r['ratio'] <= targets[r['mode']] else 'over'}")
    if args.where:
        for net in args.nets:
            for mode in MODES:
                where(net, mode, args.batch)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return {"results": rows}


if __name__ == "__main__":
    main()
