"""How many threads the library's array work uses: NumPy's BLAS thread pool, via threadpoolctl.

Every matrix product of the library (convolutions, linear layers) runs in NumPy's BLAS, whose
thread pool is shared by the whole process; the element-wise passes are single-threaded NumPy.

    import nn_from_scratch
    nn_from_scratch.set_num_threads(1)      # every later product on one thread (and no adapting)
    nn_from_scratch.get_num_threads()       # -> 1
    nn_from_scratch.set_num_threads(None)   # back to the start-up count and the adaptive default

**The default adapts to the load.** A BLAS thread that has to wait for a core held by another
process stalls every product it takes part in, so two threads on a busy 2-core machine are far
*slower* than one (measured on a 2-core machine shared with other processes, issue 9 and
``benchmarks/under_load.py``): with three busy processes started next to it, the seed CNN's
training step ran 46x slower than idle with OpenBLAS's default two threads, 2.6x slower with
one thread (torch, at its default two threads: 10-14x); zoo.resnet's step at batch 128 took a
median 8.3 s with two threads against 0.8-1.4 s with one; ``train --model lenet`` took 286 s
with two threads and 41 s with one. On an idle machine two threads are 10-15% faster on those
networks. So, unless the thread count was chosen (:func:`set_num_threads`, or
``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``, or any BLAS count other
than one per core before the library changed it), every training step and inference pass first calls
:func:`adapt`, which at most every :data:`INTERVAL` seconds measures the CPU time that *other*
processes took on this process's cores since its last look (``/proc/stat`` minus this process's
own CPU time) and sets BLAS to the cores they left idle (:func:`choose_threads`): all cores on an
idle machine, one thread as soon as others keep a core busy. The first step, with no interval
measured yet, uses the load average (:func:`default_num_threads`). Where ``/proc/stat`` is
missing (not Linux) the load-average choice of the first step stays.

Only the main thread adapts (a BLAS call running in another thread must not see its pool change).
The count can change during a run, and OpenBLAS rounds differently with one and two threads:
for bit-identical runs, fix the count with :func:`set_num_threads` (a ``threadpool_limits``
block that asks for one thread per core looks like the default to :func:`adapt`).
"""

from __future__ import annotations

import math
import numbers
import os
import threading
import time
from typing import Any, Callable

__all__ = ["adapt", "choose_threads", "default_num_threads", "get_num_threads", "set_num_threads"]

_original: Any = None  # the threadpoolctl limiter holding the start-up settings, once we changed them

#: Seconds between two measurements of the load by :func:`adapt`.
INTERVAL = 0.5
#: Time constant (s) of the smoothing of the measured load: a load that starts or stops moves the
#: count after about one to two intervals.
SMOOTHING = 0.5
#: Environment variables that fix the BLAS thread count: when one is set, the library does not adapt.
ENV_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def set_num_threads(n: int | None) -> int:
    """Limit the BLAS thread pools of this process (NumPy's) to ``n`` threads.

    Other libraries' own pools (torch's intra-op threads, OpenMP) are left alone.

    A count set here stays: the library stops adapting the count to the load (see the module
    docstring) until ``set_num_threads(None)``.

    Args:
        n: a positive thread count, or ``None`` to restore the counts the process had before
            the first call (e.g. from ``OPENBLAS_NUM_THREADS``) and the adaptive default.

    Returns:
        The previous BLAS thread count (pass it back to restore it).

    Raises:
        ValueError: ``n`` is not a positive integer (or None).

    Example:
        >>> import nn_from_scratch
        >>> before = nn_from_scratch.set_num_threads(1)
        >>> nn_from_scratch.get_num_threads()
        1
        >>> _ = nn_from_scratch.set_num_threads(before)
    """
    global _original
    from threadpoolctl import threadpool_limits

    if n is not None and (isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1):
        raise ValueError(f"set_num_threads: expected a positive integer number of threads or None, got {n!r}")
    previous = get_num_threads()
    if n is None:
        if _original is not None:
            _original.restore_original_limits()
            _original = None
        _adaptive.resume()
        return previous
    _adaptive.chosen = True  # a chosen count stays
    limiter = threadpool_limits(limits=int(n), user_api="blas")
    if _original is None:
        _original = limiter  # remembers the start-up counts for set_num_threads(None)
    return previous


def get_num_threads() -> int:
    """The number of threads NumPy's BLAS uses now (1 when threadpoolctl finds no BLAS).

    Example:
        >>> import nn_from_scratch
        >>> nn_from_scratch.get_num_threads() >= 1
        True
    """
    from threadpoolctl import threadpool_info

    counts = [int(pool["num_threads"]) for pool in threadpool_info() if pool.get("user_api") == "blas"]
    return max(counts) if counts else 1


def default_num_threads(cpus: int | None = None, load: float | None = None) -> int:
    """The thread count that degrades gracefully on a busy machine: the cores left idle by others.

    ``max(1, min(cpus, cpus - round(load)))`` where ``load`` is the 1-minute load average
    (``os.getloadavg``) and ``cpus`` the cores this process may run on. On an idle machine that
    is every core; when other processes keep the cores busy it is 1 (see the module docstring
    for the measurements behind this).

    Args:
        cpus: cores available (default: ``os.sched_getaffinity`` or ``os.cpu_count``).
        load: the load average to use (default: the current 1-minute load average; 0 where the
            platform has none).

    Example:
        >>> default_num_threads(cpus=2, load=0.1), default_num_threads(cpus=2, load=11.0), default_num_threads(cpus=8, load=3.2)
        (2, 1, 5)
    """
    if cpus is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = os.cpu_count() or 1
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
    return max(1, min(int(cpus), int(cpus) - round(float(load))))


def choose_threads(cpus: int, others: float) -> int:
    """The BLAS thread count for ``cpus`` cores of which other processes kept ``others`` busy.

    ``max(1, min(cpus, floor(cpus - others + 0.2)))``: a core counts as free when others used at
    most a fifth of it -- a thread that waits for a core stalls every product (module docstring),
    while one thread too few costs 10-15% on an idle machine, so the rule leans to fewer threads.

    Args:
        cpus: cores this process may run on.
        others: cores' worth of CPU time other processes used over the last interval (0..cpus).

    Example:
        >>> choose_threads(2, 0.05), choose_threads(2, 0.3), choose_threads(2, 1.5), choose_threads(8, 3.1)
        (2, 1, 1, 5)
    """
    return max(1, min(int(cpus), int(cpus - others + 0.2)))


def _available_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def read_cpu_seconds(cpus: list[int], path: str = "/proc/stat") -> float | None:
    """CPU seconds all processes spent on the cores ``cpus`` since boot (``/proc/stat``; None if unreadable).

    Busy time is user + nice + system + irq + softirq + steal (steal: the hypervisor gave the core
    to someone else); idle and iowait are not.

    Args:
        cpus: core numbers (``os.sched_getaffinity(0)``).
        path: the file in ``/proc/stat``'s format.

    Example:
        >>> seconds = read_cpu_seconds([0])
        >>> seconds is None or seconds > 0
        True
    """
    wanted = {f"cpu{c}" for c in cpus}
    try:
        with open(path) as stat:
            rows = [line.split() for line in stat if line.startswith("cpu")]
        ticks = sum(sum(int(v) for v in row[1:4] + row[6:9]) for row in rows if row[0] in wanted)
        return ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class _Adaptive:
    """State of the adaptive default (one per process): see :func:`adapt`."""

    def __init__(self) -> None:
        self.allowed: bool | None = None  # no ENV_VARS setting (decided at the first adapt)
        self.chosen = False  # set_num_threads(n) is in force
        self.controllers: list[Any] = []
        self.cpus: list[int] = []
        self.forget()

    def forget(self) -> None:
        """Drop the measurements and the last count set (after set_num_threads(None))."""
        self.next_check = 0.0
        self.last: tuple[float, float, float] | None = None  # (wall s, busy CPU s of all on our cores, own CPU s)
        self.others: float | None = None  # smoothed cores' worth of CPU used by other processes
        self.count: int | None = None  # what adapt set last

    def resume(self) -> None:
        """Adapt again from the count restored now (after set_num_threads(None)), with fresh measurements."""
        self.chosen = False
        self.forget()
        if self.controllers:
            self.count = max(c.get_num_threads() for c in self.controllers)

    def start(self) -> None:
        """Decide once whether the environment leaves the count to the library; find NumPy's BLAS."""
        self.allowed = False
        if any(os.environ.get(v) for v in ENV_VARS):
            return
        from threadpoolctl import ThreadpoolController

        self.controllers = ThreadpoolController().select(user_api="blas").lib_controllers
        self.cpus = _available_cpus()
        self.allowed = bool(self.controllers)

    def ours(self) -> bool:
        """Whether BLAS runs at the count adapt set last (or, before it set one, at one thread per core)."""
        expected = len(self.cpus) if self.count is None else self.count
        return all(c.get_num_threads() == expected for c in self.controllers)

    def set(self, n: int) -> None:
        if n != self.count:
            for c in self.controllers:
                c.set_num_threads(n)
            self.count = n

    def update(self, now: float, busy: float, own: float) -> None:
        """One measurement: ``busy`` CPU seconds of every process on our cores, ``own`` ours, at ``now``."""
        if self.last is None:
            if self.count is None:
                self.set(default_num_threads(cpus=len(self.cpus)))  # until an interval is measured
        elif now > self.last[0]:
            dt = now - self.last[0]
            others = max(0.0, (busy - self.last[1]) - (own - self.last[2])) / dt
            # Smoothed with time constant SMOOTHING: an interval of length dt weighs 1 - exp(-dt / SMOOTHING).
            weight = 1.0 if self.others is None else 1.0 - math.exp(-dt / SMOOTHING)
            self.others = (self.others or 0.0) + weight * (others - (self.others or 0.0))
            self.set(choose_threads(len(self.cpus), min(self.others, len(self.cpus))))
        self.last = (now, busy, own)


_adaptive = _Adaptive()


def adapt(clock: Callable[[], float] = time.monotonic) -> int | None:
    """Set BLAS to the cores other processes leave idle, unless the count was chosen (cheap; call often).

    The library calls it before every training step and inference pass. It does nothing when one
    of the environment variables in :data:`ENV_VARS` is set, after :func:`set_num_threads` (until
    ``set_num_threads(None)``), while the BLAS count differs from what it set last (inside a
    ``threadpool_limits`` block, say) -- or, before it set one, from one thread per core --
    outside the main thread, and within :data:`INTERVAL` seconds of its last measurement.

    Args:
        clock: the time source in seconds (tests replace it).

    Returns:
        The count adapt set last, or None when it has not set one.

    Example:
        >>> n = adapt()
        >>> n is None or 1 <= n <= (os.cpu_count() or 1)
        True
    """
    state = _adaptive
    if state.chosen or state.allowed is False:
        return None
    now = clock()
    if now < state.next_check or threading.current_thread() is not threading.main_thread():
        return state.count
    state.next_check = now + INTERVAL
    if state.allowed is None:
        state.start()
        if not state.allowed:
            return None
    if not state.ours():
        return state.count  # someone else's limit, for now
    busy = read_cpu_seconds(state.cpus)
    if busy is None:  # no /proc/stat: the load average, once
        if state.count is None:
            state.set(default_num_threads(cpus=len(state.cpus)))
        return state.count
    state.update(now, busy, time.process_time())
    return state.count
