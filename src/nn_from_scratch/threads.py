"""How many threads the library's array work uses: NumPy's BLAS thread pool, via threadpoolctl.

Every matrix product of the library (convolutions, linear layers) runs in NumPy's BLAS, whose
thread pool is shared by the whole process; the element-wise passes are single-threaded NumPy.

    import nn_from_scratch
    nn_from_scratch.set_num_threads(1)      # every later product on one thread
    nn_from_scratch.get_num_threads()       # -> 1
    nn_from_scratch.set_num_threads(None)   # back to the setting the process started with

Choosing the count (measured on a 2-core machine shared with other busy processes, load
average 10-12; benchmarks/resnet.py and the notes of issue 9): a BLAS thread that has to wait
for a core held by another process stalls every product it takes part in, so two threads on a
busy 2-core machine were *slower* than one: zoo.resnet's training step at batch 128 took a
median 8.3 s with two threads against 0.8-1.4 s with one (torch: 4.1 s against 0.5-1.0 s), and
the seed CNN and LeNet ran 10-20x slower (``train --model lenet`` took 286 s with the default
two threads and 41 s with one). :func:`default_num_threads` therefore picks one thread per core that is idle
(by the 1-minute load average, at least one), and ``python -m nn_from_scratch train`` uses it
unless ``--threads N`` says otherwise.
"""

from __future__ import annotations

import numbers
import os
from typing import Any

__all__ = ["default_num_threads", "get_num_threads", "set_num_threads"]

_original: Any = None  # the threadpoolctl limiter holding the start-up settings, once we changed them


def set_num_threads(n: int | None) -> int:
    """Limit the BLAS thread pools of this process (NumPy's) to ``n`` threads.

    Other libraries' own pools (torch's intra-op threads, OpenMP) are left alone.

    Args:
        n: a positive thread count, or ``None`` to restore the counts the process had before
            the first call (e.g. from ``OPENBLAS_NUM_THREADS``).

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
        return previous
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
