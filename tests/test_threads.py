"""nn_from_scratch.set_num_threads / get_num_threads / threads.default_num_threads and ``train --threads``.

The thread count is read back through threadpoolctl's own ``threadpool_info`` (what the BLAS
library reports), not through our getter alone.
"""

from __future__ import annotations

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


def test_train_default_threads_follow_the_load(monkeypatch):
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    seen = _train_spy(monkeypatch)
    before = blas_counts()
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (11.0, 11.0, 11.0))  # a busy machine
    assert cli.main(["train", "--no-progress"]) == 0
    assert seen[-1] == [1] * len(before)
    assert blas_counts() == before
    # An explicit environment setting is left as it is.
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    assert cli.main(["train", "--no-progress"]) == 0
    assert seen[-1] == before
