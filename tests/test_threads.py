"""nn_from_scratch.set_num_threads / get_num_threads, the adaptive default (threads.adapt, threads.choose_threads, threads.default_num_threads) and ``train --threads``.

The thread count is read back through threadpoolctl's own ``threadpool_info`` (what the BLAS
library reports), not through our getter alone.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

threadpoolctl = pytest.importorskip("threadpoolctl")

import nn_from_scratch  # noqa: E402
from nn_from_scratch import cli, threads  # noqa: E402


def blas_counts() -> list[int]:
    return [int(p["num_threads"]) for p in threadpoolctl.threadpool_info() if p.get("user_api") == "blas"]


@pytest.fixture
def restore_threads():
    yield
    nn_from_scratch.set_num_threads(None)


def test_set_num_threads_limits_blas_and_none_restores(restore_threads):
    original = blas_counts()
    assert original, "NumPy's BLAS is not visible to threadpoolctl"
    previous = nn_from_scratch.set_num_threads(1)
    assert previous == max(original)
    assert blas_counts() == [1] * len(original)
    assert nn_from_scratch.get_num_threads() == 1
    a = np.random.default_rng(0).normal(size=(64, 64))
    np.testing.assert_allclose(a @ np.eye(64), a, rtol=0, atol=0)  # BLAS still works on one thread
    assert nn_from_scratch.set_num_threads(2) == 1
    assert blas_counts() == [2] * len(original)
    assert nn_from_scratch.set_num_threads(None) == 2
    assert blas_counts() == original
    assert nn_from_scratch.get_num_threads() == max(original)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_set_num_threads_refuses_bad_counts(bad, restore_threads):
    before = blas_counts()
    with pytest.raises(ValueError, match="set_num_threads: expected a positive integer"):
        nn_from_scratch.set_num_threads(bad)
    assert blas_counts() == before


@pytest.mark.parametrize("cpus, load, expected", [(2, 0.0, 2), (2, 0.4, 2), (2, 1.2, 1), (2, 11.0, 1), (8, 3.2, 5), (1, 0.0, 1)])
def test_default_num_threads_is_the_idle_cores(cpus, load, expected):
    assert threads.default_num_threads(cpus=cpus, load=load) == expected


def _train_spy(monkeypatch):
    """Replace cli.train by a stub that records the BLAS thread count while it "trains"."""
    seen = []

    def fake_train(*args, **kwargs):
        seen.append(blas_counts())
        return cli.TrainResult(test_accuracy=0.0, root=False)

    monkeypatch.setattr(cli, "train", fake_train)
    return seen


def test_train_threads_option_sets_and_restores(monkeypatch):
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    seen = _train_spy(monkeypatch)
    before = blas_counts()
    assert cli.main(["train", "--threads", "1", "--no-progress"]) == 0
    assert seen[-1] == [1] * len(before)
    assert blas_counts() == before


def test_train_without_threads_leaves_the_count_to_the_adaptive_default(monkeypatch):
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(threads, "_adaptive", threads._Adaptive())
    chosen = []
    seen = _train_spy(monkeypatch)
    real_train = cli.train

    def spy(*args, **kwargs):
        chosen.append(threads._adaptive.chosen)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(cli, "train", spy)
    before = blas_counts()
    assert cli.main(["train", "--no-progress"]) == 0
    assert seen[-1] == before and chosen == [False]  # not pinned: threads.adapt decides while training
    assert cli.main(["train", "--threads", "1", "--no-progress"]) == 0
    assert chosen[-1] is True and seen[-1] == [1] * len(before)
    assert blas_counts() == before and threads._adaptive.chosen is False


# -- the adaptive default (threads.adapt) ----------------------------------------------------------
@pytest.mark.parametrize("cpus, others, expected", [
    (2, 0.0, 2), (2, 0.19, 2), (2, 0.25, 1), (2, 1.0, 1), (2, 1.5, 1), (2, 2.0, 1), (1, 0.0, 1),
    (8, 0.0, 8), (8, 3.1, 5), (8, 3.3, 4), (8, 7.9, 1),
])
def test_choose_threads_leaves_the_cores_others_use(cpus, others, expected):
    assert threads.choose_threads(cpus, others) == expected


def test_read_cpu_seconds_sums_the_busy_fields_of_our_cores(tmp_path):
    # user nice system idle iowait irq softirq steal guest guest_nice, in ticks of 1/SC_CLK_TCK s
    stat = tmp_path / "stat"
    stat.write_text("cpu  900 90 900 9000 900 9 9 9 0 0\n"
                    "cpu0 100 10 200 5000 700 1 2 3 0 0\n"
                    "cpu1 300 20 400 4000 200 4 5 6 0 0\n"
                    "cpu2 500 60 300 1000 0 4 2 0 0 0\n"
                    "intr 1 2 3\n")
    hz = os.sysconf("SC_CLK_TCK")
    assert threads.read_cpu_seconds([0], str(stat)) == pytest.approx((100 + 10 + 200 + 1 + 2 + 3) / hz, rel=1e-15)
    assert threads.read_cpu_seconds([0, 1], str(stat)) == pytest.approx((316 + 300 + 20 + 400 + 4 + 5 + 6) / hz, rel=1e-15)
    assert threads.read_cpu_seconds([0], str(tmp_path / "missing")) is None


def test_read_cpu_seconds_sees_this_process_work():
    cpus = threads._available_cpus()
    before = threads.read_cpu_seconds(cpus)
    if before is None:
        pytest.skip("needs /proc/stat")
    own = time.process_time()
    while time.process_time() - own < 0.3:
        pass
    spent = time.process_time() - own
    assert threads.read_cpu_seconds(cpus) - before >= spent - 0.05  # ticks of 10 ms


class FakeMachine:
    """A clock, /proc/stat and this process's CPU time that a test moves forward by hand."""

    def __init__(self, monkeypatch, cpus=2):
        self.now, self.busy, self.own = 100.0, 1000.0, 5.0
        monkeypatch.setattr(threads, "_available_cpus", lambda: list(range(cpus)))
        monkeypatch.setattr(threads, "read_cpu_seconds", lambda cores, path="/proc/stat": self.busy)
        monkeypatch.setattr(threads.time, "process_time", lambda: self.own)
        monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.0, 0.0, 0.0))

    def clock(self) -> float:
        return self.now

    def run(self, seconds: float, own_cores: float, other_cores: float) -> None:
        self.now += seconds
        self.own += own_cores * seconds
        self.busy += (own_cores + other_cores) * seconds


def set_blas(n: int) -> None:
    for controller in threadpoolctl.ThreadpoolController().select(user_api="blas").lib_controllers:
        controller.set_num_threads(n)


@pytest.fixture
def fresh_adaptive(monkeypatch):
    """A fresh adaptive state, no thread environment variables, and NumPy's BLAS put back afterwards."""
    for var in threads.ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(threads, "_adaptive", threads._Adaptive())
    original = blas_counts()
    set_blas(len(threads._available_cpus()))  # as OpenBLAS starts: one thread per core
    yield
    nn_from_scratch.set_num_threads(None)
    set_blas(max(original))


def test_adapt_drops_to_one_thread_when_others_are_busy_and_comes_back(monkeypatch, fresh_adaptive):
    machine = FakeMachine(monkeypatch, cpus=2)
    set_blas(2)  # one thread per (fake) core, as OpenBLAS starts
    assert threads.adapt(machine.clock) == 2  # first call: the load average (0) -> every core
    assert blas_counts() == [2] * len(blas_counts())
    machine.run(0.6, own_cores=2.0, other_cores=0.0)  # idle machine: stays at 2
    assert threads.adapt(machine.clock) == 2
    machine.run(0.6, own_cores=0.5, other_cores=1.5)  # three busy processes start
    assert threads.adapt(machine.clock) == 1 and blas_counts() == [1] * len(blas_counts())
    machine.run(0.1, own_cores=0.0, other_cores=0.0)  # within INTERVAL: no new measurement
    assert threads.adapt(machine.clock) == 1
    # Smoothed with a 0.5 s time constant: 1.5 cores for 0.6 s -> 1.5 * (1 - e^-1.2) = 1.05 above.
    # They stop: 1.05 * e^-1.4 = 0.26 (0.7 s since the last measurement), then 0.26 * e^-1.2 = 0.08;
    # it must fall below a fifth of a core before the second thread comes back.
    counts = []
    for _ in range(3):
        machine.run(0.6, own_cores=1.0, other_cores=0.0)
        counts.append(threads.adapt(machine.clock))
    assert counts == [1, 2, 2] and blas_counts() == [2] * len(blas_counts())


def test_adapt_leaves_a_chosen_count_alone(monkeypatch, fresh_adaptive):
    machine = FakeMachine(monkeypatch, cpus=len(threads._available_cpus()))
    nn_from_scratch.set_num_threads(1)
    machine.run(1.0, own_cores=1.0, other_cores=0.0)
    assert threads.adapt(machine.clock) is None and blas_counts() == [1] * len(blas_counts())
    machine.run(1.0, own_cores=1.0, other_cores=0.0)
    assert threads.adapt(machine.clock) is None and blas_counts() == [1] * len(blas_counts())
    nn_from_scratch.set_num_threads(None)  # back to the adaptive default
    machine.run(1.0, own_cores=1.0, other_cores=5.0)
    assert threads.adapt(machine.clock) is not None


def test_adapt_resumes_after_set_num_threads_none_from_the_count_it_had_set(monkeypatch, fresh_adaptive):
    machine = FakeMachine(monkeypatch, cpus=2)
    set_blas(2)
    assert threads.adapt(machine.clock) == 2
    machine.run(1.0, own_cores=0.5, other_cores=1.5)
    assert threads.adapt(machine.clock) == 1  # busy: adapt set 1
    nn_from_scratch.set_num_threads(2)  # the user's choice for a while ...
    machine.run(1.0, own_cores=0.5, other_cores=1.5)
    assert threads.adapt(machine.clock) is None and blas_counts() == [2] * len(blas_counts())
    nn_from_scratch.set_num_threads(None)  # ... then back: the count before it (1) and adapting
    assert blas_counts() == [1] * len(blas_counts())
    machine.run(1.0, own_cores=1.0, other_cores=0.0)
    threads.adapt(machine.clock)  # first measurement after resuming: a baseline
    machine.run(1.0, own_cores=1.0, other_cores=0.0)
    assert threads.adapt(machine.clock) == 2 and blas_counts() == [2] * len(blas_counts())  # idle again


def test_adapt_leaves_a_threadpool_limits_block_and_the_environment_alone(monkeypatch, fresh_adaptive):
    machine = FakeMachine(monkeypatch, cpus=4)  # 4 cores, so that adapt's wish, its last count and the block's differ
    set_blas(4)  # one thread per (fake) core, as OpenBLAS starts
    assert threads.adapt(machine.clock) == 4
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):  # someone else's limit
        machine.run(1.0, own_cores=1.0, other_cores=2.0)  # adapt would want 2 threads
        assert threads.adapt(machine.clock) == 4  # what it set last: it did not touch the block's count
        assert blas_counts() == [1] * len(blas_counts())
    assert blas_counts() == [4] * len(blas_counts())
    machine.run(1.0, own_cores=2.0, other_cores=2.0)
    assert threads.adapt(machine.clock) == 2 and blas_counts() == [2] * len(blas_counts())  # adapts again
    # A count other than one per core before adapt set any: left alone (someone chose it).
    monkeypatch.setattr(threads, "_adaptive", threads._Adaptive())
    set_blas(3)
    machine.run(1.0, own_cores=1.0, other_cores=3.0)
    assert threads.adapt(machine.clock) is None and blas_counts() == [3] * len(blas_counts())
    # An environment setting: never adapts.
    monkeypatch.setattr(threads, "_adaptive", threads._Adaptive())
    set_blas(4)
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    machine.run(1.0, own_cores=0.1, other_cores=3.0)
    assert threads.adapt(machine.clock) is None and blas_counts() == [4] * len(blas_counts())


def test_adapt_runs_only_in_the_main_thread(monkeypatch, fresh_adaptive):
    machine = FakeMachine(monkeypatch, cpus=len(threads._available_cpus()))
    result = []
    worker = threading.Thread(target=lambda: result.append(threads.adapt(machine.clock)))
    worker.start()
    worker.join()
    assert result == [None] and threads._adaptive.allowed is None  # nothing measured, nothing set


def test_training_steps_and_predict_call_adapt(monkeypatch):
    from nn_from_scratch.losses import SoftMaxLoss
    from nn_from_scratch.model import Sequential
    from nn_from_scratch.neurons import Linear
    from nn_from_scratch.optimizers import SGD
    from nn_from_scratch import training

    calls = []
    monkeypatch.setattr(training, "adapt_threads", lambda: calls.append(1))
    model = Sequential([Linear(4, 3)], loss=SoftMaxLoss(), optimizer=SGD(lr=0.1), seed=0)
    x, y = np.random.default_rng(0).normal(size=(8, 4)), np.arange(8) % 3
    model.train_step(x, y)
    assert len(calls) == 1
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert len(calls) == 3
    model.predict(x)
    assert len(calls) == 4
    model.evaluate(x, y, batch_size=4)
    assert len(calls) == 6
