"""benchmarks/under_load.py: the busy processes it starts never outlive it.

They are killed when the loaded block ends (also by an exception), at SIGTERM, and they quit by
themselves when the benchmark is killed outright (SIGKILL). Each test keeps one busy process
alive for well under a second.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
under_load = pytest.importorskip("under_load")

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


def alive(pid: int) -> bool:
    """Running (or sleeping), not gone and not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_gone(pids: list[int], seconds: float = 5.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def test_busy_processes_run_and_are_killed_when_the_block_raises():
    with pytest.raises(RuntimeError, match="boom"):
        with under_load.BusyProcesses(1) as busy:
            pids = [p.pid for p in busy.procs]
            time.sleep(0.2)
            assert all(alive(p) for p in pids)
            raise RuntimeError("boom")
    assert wait_gone(pids) == []
    assert under_load._STARTED == []


CHILD = """
import sys, time
sys.path.insert(0, {benchmarks!r})
import under_load
with under_load.BusyProcesses(1) as busy:
    print(busy.procs[0].pid, flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_busy_processes_do_not_outlive_a_killed_benchmark(sig):
    code = CHILD.format(benchmarks=str(BENCHMARKS))
    if sig == signal.SIGTERM:  # the signal handler main() installs
        code = code.replace("import under_load\n", "import under_load, signal\n"
                            "signal.signal(signal.SIGTERM, under_load._exit_on_signal)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        busy_pid = int(parent.stdout.readline())
        assert alive(busy_pid)
        parent.send_signal(sig)
        parent.wait(timeout=10)
        if sig == signal.SIGTERM:  # killed and reaped by the parent on its way out, not left to notice
            assert not alive(busy_pid)
        else:  # SIGKILL: the orphan notices and quits
            assert wait_gone([busy_pid]) == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
