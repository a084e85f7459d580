"""Data-parallel training on MPI (nn_from_scratch.distributed), issue 10.

The reference is one process training on the same global batches: in float64, 2 and 3 ranks
must end within 1e-12 (relative) of it after 42 steps -- full batches of 20 split 10/10 and
7/7/6, and a last batch of 2 split 1/1 and 1/1/0 (an empty shard) -- for the seed CNN with SGD,
LeNet with Adam, LeNet with synchronised batch norm and Adam, and a dense network with batch
norm over features and SGD with momentum (its statistics need the other ranks when a shard
holds one sample). The ranks start from
different seeds (rank 0's weights must be broadcast), their weights must be bit-identical, and
each rank's loss must have seen exactly its shard of every global batch. The tests run
``mpiexec`` (the mpich wheel's) and skip only when mpi4py is not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nn_from_scratch.distributed import shard_bounds

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import mpi_worker  # noqa: E402  (the script the ranks run; shares the model recipes with the reference)

N_SAMPLES = 822  # 41 batches of 20 and a last batch of 2: 42 steps


def _mpiexec() -> str:
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install 'nn_from_scratch[mpi]')")
    beside = Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    assert found, "mpi4py is installed but no mpiexec was found (pip install mpich)"
    return found


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    src = str(HERE.parent / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _mpirun(ranks: int, args: list[str], timeout: float, cwd: Path | None = None) -> subprocess.CompletedProcess:
    command = [_mpiexec(), "-n", str(ranks), sys.executable, "-m", "mpi4py", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=_env(), cwd=cwd)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    from nn_from_scratch.datasets import mnist

    (x, y), _ = mnist.load_data()
    x, y = x[:N_SAMPLES, None] / 255.0, y[:N_SAMPLES].astype(np.intp)
    path = tmp_path_factory.mktemp("mpi") / "data.npz"
    np.savez(path, x=x, y=y)
    return path, x, y


@pytest.fixture(scope="module")
def one_process(data: tuple[Path, np.ndarray, np.ndarray]) -> dict[str, tuple[dict[str, np.ndarray], dict]]:
    """The reference: each case trained in this process, no MPI."""
    _, x, y = data
    out = {}
    for case in mpi_worker.CASES:
        model = mpi_worker.build(case, seed=0)
        history = model.fit(x, y, epochs=mpi_worker.EPOCHS, batch_size=mpi_worker.BATCH, verbose=0)
        out[case] = ({k: v.copy() for k, v in mpi_worker.state(model).items()}, history.history)
    return out


def test_shard_bounds_cut_as_array_split() -> None:
    for n in range(0, 12):
        for size in range(1, 5):
            expected = [len(part) for part in np.array_split(np.arange(n), size)]
            assert np.diff(shard_bounds(n, size)).tolist() == expected


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    return float(np.max(np.abs(a - b))) / scale if scale else float(np.max(np.abs(a - b), initial=0.0))


@pytest.mark.parametrize("ranks", [2, 3])
def test_data_parallel_training_matches_one_process(ranks: int, data, one_process, tmp_path: Path) -> None:
    path, x, _ = data
    extra = ["lenet_bn_local"] if ranks == 2 else []
    run = _mpirun(ranks, [str(HERE / "mpi_worker.py"), "train", str(path), str(tmp_path), *mpi_worker.CASES, *extra],
                  timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    steps = -(-len(x) // mpi_worker.BATCH)
    assert steps >= 40 and len(x) % mpi_worker.BATCH  # enough steps, and a short last batch
    batches = [np.arange(len(x))[i : i + mpi_worker.BATCH] for i in range(0, len(x), mpi_worker.BATCH)]
    for case in mpi_worker.CASES:
        reference, history = one_process[case]
        results = [dict(np.load(tmp_path / f"{case}_rank{r}.npz")) for r in range(ranks)]
        for r, result in enumerate(results):
            # This rank's loss saw exactly its shard of every global batch (empty shards: no call).
            shards = [len(np.array_split(b, ranks)[r]) for b in batches]
            assert result["seen"].tolist() == [s for s in shards if s], (case, r)
        for key, ref in reference.items():
            worst = max(_relative(result[key], ref) for result in results)
            assert worst <= 1e-12, f"{case} {key}: {ranks} ranks differ from one process by {worst:.2e} (relative)"
            for r, result in enumerate(results[1:], start=1):
                assert np.array_equal(result[key], results[0][key]), f"{case} {key}: rank {r} differs from rank 0"
        # The logs are the global batches' (accuracy is a count, so it is exactly equal).
        assert results[0]["accuracy"].tolist() == history["accuracy"]
        assert results[0]["f1"].tolist() == history.get("f1", []) and (case != "seed_sgd" or len(history["f1"]) == 1)
        np.testing.assert_allclose(results[0]["loss"], history["loss"], rtol=1e-12, atol=0)
        # Training moved the weights (a run that did nothing would not be a check).
        initial = mpi_worker.state(mpi_worker.build(case, seed=0))
        assert any(not np.allclose(reference[k], initial[k]) for k in reference if k.startswith("p."))
    if ranks == 2:
        # Per-shard batch norm (sync_batch_norm=False): the ranks stay identical (rank 0's running
        # statistics are broadcast), but the statistics are no longer the global batch's.
        reference, _ = one_process["lenet_bn_adam"]
        results = [dict(np.load(tmp_path / f"lenet_bn_local_rank{r}.npz")) for r in range(ranks)]
        for key in reference:
            assert np.array_equal(results[0][key], results[1][key]), key
        assert max(_relative(results[0][k], reference[k]) for k in reference) > 1e-6


def test_cli_distributed_saves_the_weights_of_one_process(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    common = ["-m", "nn_from_scratch", "train", "--dtype", "float64", "--train-size", "3000", "--no-progress"]
    single = subprocess.run([sys.executable, *common, "--save", "a.safetensors"], capture_output=True, text=True,
                            timeout=300, env=_env(), cwd=tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]
    run = _mpirun(2, [*common, "--distributed", "--save", "b.safetensors"], timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.count("test accuracy") == 1  # rank 0 alone reports
    a, b = load_file(str(tmp_path / "a.safetensors")), load_file(str(tmp_path / "b.safetensors"))
    weights = [k for k in a if k.endswith(".W") or ".params." in k]
    assert sorted(a) == sorted(b) and weights
    for key in a:
        if a[key].dtype.kind == "f":
            assert a[key].dtype == np.float64
            assert _relative(b[key], a[key]) <= 1e-12, key


def test_a_failing_rank_ends_the_job_quickly() -> None:
    started = time.monotonic()
    run = _mpirun(2, [str(HERE / "mpi_worker.py"), "fail", "3"], timeout=60)
    elapsed = time.monotonic() - started
    assert run.returncode != 0
    assert "fails on purpose" in run.stderr + run.stdout
    assert elapsed < 30, f"the job took {elapsed:.1f} s to end"


def test_one_rank_strategy_trains_as_plain_fit_and_hands_back_batch_norm() -> None:
    """In this process (a world of one rank): the same result as without the strategy, batch
    norm switched back to local statistics afterwards, rank-0 callbacks filtered elsewhere."""
    MPI = pytest.importorskip("mpi4py.MPI", reason="mpi4py is not installed")
    from nn_from_scratch.callbacks import CSVLogger, EarlyStopping, ModelCheckpoint
    from nn_from_scratch.distributed import DataParallel
    from nn_from_scratch.neurons import BatchNormalization

    from nn_from_scratch import zoo
    from nn_from_scratch.losses import SoftMaxLoss
    from nn_from_scratch.optimizers import GradientDescent

    rng = np.random.default_rng(1)
    x, y = rng.random((30, 1, 28, 28)), rng.integers(0, 10, 30)
    # SGD: on these random images some gradients are ~1e-8 with rounding errors of ~1e-16 (sums
    # that cancel), which Adam (eps 1e-8) would turn into 1e-11 differences between two correct
    # orders of summation (the synchronised statistics' and one process's).
    plain, parallel = zoo.lenet5(dtype=np.float64, seed=0), zoo.lenet5(dtype=np.float64, seed=0)
    for model in (plain, parallel):
        model.compile(optimizer=GradientDescent(0.05, momentum=0.9), loss=SoftMaxLoss())
    plain.fit(x, y, batch_size=8, verbose=0)
    strategy = DataParallel(comm=MPI.COMM_SELF)
    parallel.fit(x, y, batch_size=8, verbose=0, distributed=strategy)
    for (k, a), (_, b) in zip(mpi_worker.state(plain).items(), mpi_worker.state(parallel).items()):
        assert _relative(b, a) <= 1e-12, k
    assert strategy.local_samples == 30
    assert all(layer.sync is None for layer in parallel.layers if isinstance(layer, BatchNormalization))

    keep, checkpoint, logger = EarlyStopping(), ModelCheckpoint("m.safetensors"), CSVLogger("log.csv")
    strategy.rank = 1  # as another rank would see it
    assert strategy.callbacks([keep, checkpoint, logger]) == [keep]
    strategy.rank = 0
    assert strategy.callbacks([keep, checkpoint, logger]) == [keep, checkpoint, logger]
