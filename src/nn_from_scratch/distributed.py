"""Data-parallel training on MPI (mpi4py), as Horovod and torch's DistributedDataParallel do it.

One line turns a single-process script into a data-parallel one::

    model.fit(x, y, epochs=3, batch_size=64, distributed=True)      # or distributed=DataParallel()

and the script runs under MPI, one process per rank::

    mpiexec -n 4 python -m mpi4py train.py
    mpiexec -n 2 python -m mpi4py -m nn_from_scratch train --distributed

``python -m mpi4py`` matters: a rank that raises an uncaught exception then calls
``MPI_Abort``, so the whole job exits with an error instead of hanging in a collective.
Install the optional extra ``pip install 'nn_from_scratch[mpi]'`` (mpi4py and the ``mpich``
wheel; no system packages).

What :class:`DataParallel` does, every rank running the same script on the same data:

* **Same start.** At the start of ``fit`` the parameters and buffers of rank 0 are broadcast
  to every rank (one packed buffer), as is rank 0's random generator state.
* **Same global batches as one process.** Every epoch, rank 0's shuffled order (drawn from the
  model's seeded generator, as one process draws it) is broadcast; each global batch of
  ``batch_size`` samples is split into ``size`` contiguous shards as ``numpy.array_split``
  splits it (the first ``n % size`` ranks get one more sample; a batch smaller than the number
  of ranks leaves some shards empty).
* **One allreduce per step.** Each rank scales its loss gradient by ``n_r / n`` (its shard
  size over the global batch size; the losses are means over the batch), so the sum over the
  ranks is exactly the gradient of the global batch's mean loss. All gradients -- plus the
  loss sum and the counts of the counting metrics (accuracy) -- are packed into one buffer and
  summed with one ``Allreduce`` (other metrics, e.g. AUC, are fed the outputs gathered from
  every rank, one more collective per step); then every rank takes the same optimizer step, so the ranks' weights stay
  bit-identical. A rank with an empty shard still runs the step (on one stand-in sample whose
  contributions are zeroed), so collectives always match.
* **Synchronised batch norm.** Every :class:`~nn_from_scratch.neurons.BatchNormalization`
  computes the statistics of the global batch (see its docstring: two per-channel
  allreduces in the forward, one in the backward).
* **Global logs.** The logged ``loss`` and ``accuracy`` are those of the global batches;
  validation runs on every rank over the whole validation set (same weights, same result).
* **Rank 0 speaks.** The progress bar, ``verbose`` output and the callbacks that write files
  (``ModelCheckpoint``, ``CSVLogger``, any callback with ``rank_zero_only = True``) run on
  rank 0 only; learning-rate schedules and early stopping run on every rank (they see the
  same global logs, so they decide alike).

The loss must be a mean over the samples of the batch (every loss of this library is). In
float64 the trained weights agree with one process on the same global batches to rounding
(``tests/test_distributed.py`` checks 1e-12 after 40+ steps with 2 and 3 ranks).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .interfaces import TrainableModel

__all__ = ["DataParallel", "shard_bounds", "get_strategy"]


def _mpi() -> Any:
    try:
        from mpi4py import MPI
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "nn_from_scratch.distributed needs mpi4py and an MPI library: pip install 'nn_from_scratch[mpi]' "
            "(mpi4py and the mpich wheel)"
        ) from error
    return MPI


def shard_bounds(n: int, size: int) -> np.ndarray:
    """Start offsets of the ``size`` shards of a batch of ``n`` (length ``size + 1``), as
    ``numpy.array_split`` cuts: the first ``n % size`` shards hold one sample more.

    Args:
        n: the number of samples in the batch.
        size: the number of shards (ranks).

    Returns:
        An ``intp`` array of shape ``(size + 1,)``; shard ``r`` is ``[bounds[r], bounds[r + 1])``.

    Example:
        >>> shard_bounds(7, 3).tolist()
        [0, 3, 5, 7]
        >>> shard_bounds(2, 3).tolist()
        [0, 1, 2, 2]
    """
    base, extra = divmod(int(n), int(size))
    sizes = [base + (1 if r < extra else 0) for r in range(int(size))]
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.intp)


class DataParallel:
    """Synchronous data-parallel training over the ranks of an MPI communicator.

    Pass it (or ``True``) as ``fit(..., distributed=...)``; see the module docstring for what it
    does at each point of the loop.

    Args:
        comm: an ``mpi4py`` intracommunicator (default ``MPI.COMM_WORLD``).
        sync_batch_norm: synchronise batch-norm statistics over the ranks (default True);
            False normalises each shard by its own statistics, as plain DistributedDataParallel,
            and broadcasts rank 0's running statistics after each step (its ``broadcast_buffers``).
        root: the rank whose weights, generator and shuffle everyone takes (default 0).

    Example:
        >>> model.fit(x, y, batch_size=64, distributed=DataParallel())   # under mpiexec
    """

    #: Callback classes that act on the world (files): they run on the root rank only.
    rank_zero_callbacks: tuple[str, ...] = ("ModelCheckpoint", "CSVLogger")

    def __init__(self, comm: Any = None, sync_batch_norm: bool = True, root: int = 0) -> None:
        MPI = _mpi()
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank = int(self.comm.Get_rank())
        self.size = int(self.comm.Get_size())
        if not 0 <= int(root) < self.size:
            raise ValueError(f"DataParallel: root must be a rank in [0, {self.size}), got {root}")
        self.root = int(root)
        self.sync_batch_norm = bool(sync_batch_norm)
        #: the global batch size of the step in progress (read by synchronised batch norm)
        self.batch_size = 0
        #: samples this rank trained on (its shards), for checks and benchmarks
        self.local_samples = 0
        self._ghost = False
        self._synced: list[Any] = []

    @property
    def is_root(self) -> bool:
        return self.rank == self.root

    # -- collectives used by the layers ---------------------------------------------------
    def allreduce(self, local: np.ndarray) -> np.ndarray:
        """The sum of ``local`` over the ranks (a rank with an empty shard contributes zeros)."""
        buf = np.zeros_like(local) if self._ghost else np.ascontiguousarray(local).copy()
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return buf

    # -- hooks called by the training loop --------------------------------------------------
    def setup(self, model: TrainableModel) -> None:
        """Check that every rank holds the same architecture, broadcast rank 0's weights, buffers
        and generator state, and switch batch norm to the global statistics."""
        arrays = [a for layer in model.layers for a in (*layer.parameters().values(), *layer.buffers().values())]
        signature = [(type(layer).__name__, tuple((k, v.shape, v.dtype.str) for k, v in
                      (*layer.parameters().items(), *layer.buffers().items()))) for layer in model.layers]
        signatures = self.comm.allgather(signature)
        for rank, other in enumerate(signatures):
            if other != signatures[self.root]:
                raise ValueError(f"DataParallel: rank {rank} holds a different model than rank {self.root} "
                                 "(layers, parameter shapes or dtypes differ)")
        self._broadcast(arrays)
        model.rng.bit_generator.state = self.comm.bcast(model.rng.bit_generator.state, root=self.root)
        self._synced = []
        if self.sync_batch_norm:
            from .neurons import BatchNormalization

            for layer in model.layers:
                if isinstance(layer, BatchNormalization):
                    layer.sync = self
                    self._synced.append(layer)

    def _broadcast(self, arrays: Sequence[np.ndarray]) -> None:
        """Root's values of ``arrays``, in place, on every rank (one broadcast per array: dtypes differ)."""
        seen: set[int] = set()
        for a in arrays:
            if id(a) in seen:
                continue
            seen.add(id(a))
            if a.flags.c_contiguous:
                self.comm.Bcast(a, root=self.root)
            else:
                tmp = np.ascontiguousarray(a)
                self.comm.Bcast(tmp, root=self.root)
                a[...] = tmp

    def teardown(self, model: TrainableModel) -> None:
        """Back to per-process batch norm (inference and later single-process steps)."""
        for layer in self._synced:
            layer.sync = None
        self._synced = []

    def callbacks(self, callbacks: Sequence[Any]) -> list[Any]:
        """The callbacks this rank runs: all on the root; elsewhere, all but those that write files."""
        if self.is_root:
            return list(callbacks)
        return [c for c in callbacks if not getattr(c, "rank_zero_only", type(c).__name__ in self.rank_zero_callbacks)]

    def verbose(self, verbose: int) -> int:
        return verbose if self.is_root else 0

    def epoch_order(self, order: np.ndarray | None) -> np.ndarray | None:
        """Rank 0's shuffled order, on every rank."""
        if order is None:
            return None
        order = np.ascontiguousarray(order, dtype=np.int64)
        self.comm.Bcast(order, root=self.root)
        return order

    def train_batch(self, model: TrainableModel, x: np.ndarray, y: np.ndarray, index: Any,
                    metrics: Sequence[Any]) -> tuple[float, int]:
        """One synchronous step on the global batch ``x[index]``; returns its loss and size.

        This rank trains on its shard; the loss and the metrics are updated with the global
        batch's values. A non-finite global loss leaves the weights untouched on every rank.
        """
        from .training import cast_batch

        index = np.arange(len(x))[index] if isinstance(index, slice) else np.asarray(index)
        n = len(index)
        bounds = shard_bounds(n, self.size)
        mine = index[bounds[self.rank] : bounds[self.rank + 1]]
        n_local = len(mine)
        self.batch_size, self._ghost = n, n_local == 0
        self.local_samples += n_local
        # A rank with an empty shard runs one stand-in sample, so that it makes the same
        # collective calls (synchronised batch norm); allreduce() zeroes its contributions.
        xb = cast_batch(model, x[mine if n_local else index[:1]])
        yb = y[mine]
        # As training.train_batch: buffers (batch-norm statistics) are put back when the step is
        # not taken (a non-finite global loss, or an exception before the step).
        buffers = [(b, b.copy()) for layer in model.layers for b in layer.buffers().values()]
        applied = False
        try:
            model.zero_grad()
            output = model.forward(xb, training=True)
            if n_local:
                local_loss = float(model.loss.forward(output, yb))
                dL_dout = model.loss.backward() * (n_local / n)
            else:
                local_loss = 0.0
                dL_dout = np.zeros_like(output)
            model.backward(dL_dout, need_input_grad=False)

            grads: list[np.ndarray] = []
            seen: set[int] = set()
            for layer in model.layers:
                for g in layer.gradients().values():
                    if g is not None and id(g) not in seen:
                        seen.add(id(g))
                        grads.append(g)
            # Counting metrics (accuracy) travel in the gradient buffer; any other metric is fed
            # the global batch's outputs, gathered from the ranks in shard order.
            counting = [m for m in metrics if hasattr(m, "count") and hasattr(m, "correct") and hasattr(m, "judged")]
            others = [m for m in metrics if not any(m is c for c in counting)]
            counts = [metric.count(output, yb) if n_local else (0, 0) for metric in counting]
            dtype = np.result_type(*grads) if grads else np.float64
            total = sum(g.size for g in grads)
            buf = np.zeros(total + 1 + 2 * len(counts), dtype=dtype)
            if n_local:
                offset = 0
                for g in grads:
                    buf[offset : offset + g.size] = g.ravel()
                    offset += g.size
                buf[total] = local_loss * n_local
                for i, (right, judged) in enumerate(counts):
                    buf[total + 1 + 2 * i : total + 3 + 2 * i] = (right, judged)
            self._ghost = False
            self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
            offset = 0
            for g in grads:
                g[...] = buf[offset : offset + g.size].reshape(g.shape)
                offset += g.size
            loss = float(buf[total]) / n
            for i, metric in enumerate(counting):
                metric.correct += int(round(float(buf[total + 1 + 2 * i])))
                metric.judged += int(round(float(buf[total + 2 + 2 * i])))
            if others:
                parts = [p for p in self.comm.allgather((output, yb) if n_local else None) if p is not None]
                global_output = np.concatenate([p[0] for p in parts])
                global_y = np.concatenate([p[1] for p in parts])
                for metric in others:
                    metric.update(global_output, global_y)
            if math.isfinite(loss):
                model.optimizer.step(model.layers)
                applied = True
        finally:
            self._ghost = False
            if not applied:
                for target, value in buffers:
                    target[...] = value
            model.zero_grad()
        if buffers and not self.sync_batch_norm:
            # Per-rank statistics differ: rank 0's are everyone's (DistributedDataParallel's
            # broadcast_buffers), so the ranks stay identical.
            self._broadcast([target for target, _ in buffers])
        return loss, n


def get_strategy(distributed: Any) -> DataParallel | None:
    """``fit``'s ``distributed=`` argument as a strategy: None/False -> None, True -> ``DataParallel()``.

    Args:
        distributed: None, False, True, or a strategy object (a :class:`DataParallel` or anything
            with its hooks ``setup``, ``train_batch``, ``epoch_order``, ``callbacks``, ``verbose``
            and ``teardown``), which is returned as is.

    Returns:
        The strategy, or None for single-process training.

    Raises:
        TypeError: ``distributed`` is none of these.

    Example:
        >>> get_strategy(False) is None
        True
        >>> get_strategy("yes")
        Traceback (most recent call last):
        ...
        TypeError: fit: distributed must be True, False, None or a DataParallel, got str
    """
    if distributed is None or distributed is False:
        return None
    if distributed is True:
        return DataParallel()
    for hook in ("setup", "train_batch", "epoch_order", "callbacks", "verbose", "teardown"):
        if not hasattr(distributed, hook):
            raise TypeError(f"fit: distributed must be True, False, None or a DataParallel, got {type(distributed).__name__}")
    return distributed
