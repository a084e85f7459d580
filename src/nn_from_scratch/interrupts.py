"""Ctrl-C at a safe point: :func:`deferred_interrupts` holds SIGINT back while a block of state
changes runs (an optimizer step), then delivers it, so an interrupt leaves the model before or
after the block, never in between.

Only the main thread receives signals in Python, so elsewhere (and where SIGINT is ignored or
was installed from C) the block simply runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any, Iterator


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Run the block with SIGINT deferred; a SIGINT that arrived meanwhile is handled at its end
    by the handler that was in place (``KeyboardInterrupt`` by default).

    Takes no arguments; use it as a context manager around state changes that must not be
    cut in half.

    Example:
        >>> weights = {"W": 1.0, "b": 0.0}
        >>> with deferred_interrupts():  # a Ctrl-C here lands after both updates
        ...     weights["W"] -= 0.1
        ...     weights["b"] -= 0.1
        >>> weights
        {'W': 0.9, 'b': -0.1}
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is None or previous == signal.SIG_IGN:
        yield
        return
    received: list[tuple[int, Any]] = []

    def hold(signum: int, frame: Any) -> None:
        received.append((signum, frame))

    try:
        signal.signal(signal.SIGINT, hold)
    except (ValueError, OSError):  # pragma: no cover - not allowed here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            if callable(previous):
                previous(*received[0])
            else:  # SIG_DFL: let the default action happen now
                os.kill(os.getpid(), signal.SIGINT)
