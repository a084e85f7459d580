"""Data pipelines: where the training loop's batches come from.

* :class:`ArrayBatches` -- mini-batches of in-memory arrays, reshuffled every epoch from the
  model's generator (what ``fit(x, y)`` uses), with per-sample weights from ``sample_weight``
  and ``class_weight``;
* :class:`IterableBatches` -- batches from any iterable of ``(x, y)`` or ``(x, y, sample_weight)``
  tuples: a Python generator, a list, a :class:`Dataset` (what ``fit(generator)`` uses);
* :class:`Dataset` -- a small ``tf.data``-like pipeline: ``Dataset.from_arrays(x, y)
  .shuffle(seed=0).batch(64).map(augment).prefetch(2)``.

A batch is always a triple ``(x, y, w)`` with ``w`` the per-sample weights or ``None``.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

Batch = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]


def sample_weights(y: np.ndarray, sample_weight: Any = None, class_weight: Mapping[int, float] | None = None,
                   who: str = "fit") -> np.ndarray | None:
    """Per-sample weights ``sample_weight[n] * class_weight[class of n]`` (Keras' rule), or None.

    Classes are read from integer labels ``(N,)`` / ``(N, 1)`` or one-hot rows (their arg-max).

    Args:
        y: the targets, (N,) / (N, 1) integer classes or (N, K) one-hot.
        sample_weight: per-sample weights, (N,), or None.
        class_weight: ``{class: weight}``, or None.
        who: the caller's name for error messages.

    Returns:
        The weights, (N,), or None when neither is given.

    Example:
        >>> sample_weights(np.array([0, 1, 1]), class_weight={0: 1.0, 1: 3.0})
        array([1., 3., 3.])
        >>> sample_weights(np.array([0, 1, 1]), sample_weight=np.array([1.0, 0.5, 2.0]), class_weight={0: 1.0, 1: 3.0})
        array([1. , 1.5, 6. ])
        >>> sample_weights(np.array([0, 1])) is None
        True
    """
    n = len(y)
    weights = None
    if sample_weight is not None:
        weights = np.asarray(sample_weight, dtype=np.float64)
        if weights.shape != (n,):
            raise ValueError(f"{who}: sample_weight must have shape ({n},) (one weight per sample), got {weights.shape}")
    if class_weight is not None:
        if not isinstance(class_weight, Mapping):
            raise TypeError(f"{who}: class_weight must be a dict {{class: weight}}, got {type(class_weight).__name__}")
        y = np.asarray(y)
        labels = y.argmax(axis=1) if y.ndim == 2 and y.shape[1] > 1 else y.reshape(n)
        table = {int(k): float(v) for k, v in class_weight.items()}
        missing = sorted(set(np.unique(labels).astype(int).tolist()) - set(table))
        if missing:
            raise ValueError(f"{who}: class_weight has no weight for classes {missing}")
        per_class = np.array([table[int(c)] for c in labels], dtype=np.float64)
        weights = per_class if weights is None else weights * per_class
    if weights is not None and (not np.all(np.isfinite(weights)) or np.any(weights < 0)):
        raise ValueError(f"{who}: sample weights must be finite and >= 0")
    return weights


class ArrayBatches:
    """Mini-batches of ``(x, y)`` arrays, gathered by index (the data is never copied whole).

    Args:
        x, y: arrays with the same number of samples.
        batch_size: samples per batch; the last batch may be smaller (as Keras).
        shuffle: a fresh order every epoch, drawn from the generator passed to :meth:`epoch`.
        weights: per-sample weights ``(N,)`` or None.

    Example:
        >>> batches = ArrayBatches(np.arange(10.0)[:, None], np.arange(10), batch_size=4, shuffle=False)
        >>> [yb.tolist() for xb, yb, wb in batches.epoch(np.random.default_rng(0))]
        [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool = True,
                 weights: np.ndarray | None = None) -> None:
        self.x, self.y, self.batch_size, self.shuffle, self.weights = x, y, int(batch_size), bool(shuffle), weights
        self.samples = len(x)
        self.steps = (self.samples + self.batch_size - 1) // self.batch_size

    def epoch(self, rng: np.random.Generator, order_hook: Callable[[Any], Any] | None = None) -> Iterator[Batch]:
        """The epoch's batches; ``order_hook`` may replace the shuffled order (data-parallel ranks
        take rank 0's). :attr:`last_index` is the index of the batch just yielded."""
        order = rng.permutation(self.samples) if self.shuffle else None
        if order_hook is not None:
            order = order_hook(order)
        for step in range(self.steps):
            window = slice(step * self.batch_size, (step + 1) * self.batch_size)
            index = order[window] if order is not None else window
            self.last_index = index
            yield self.x[index], self.y[index], None if self.weights is None else self.weights[index]


def _as_batch(item: Any, who: str) -> Batch:
    if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
        raise TypeError(f"{who}: each batch must be a tuple (x, y) or (x, y, sample_weight), got {type(item).__name__}")
    x, y = np.asarray(item[0]), np.asarray(item[1])
    if x.ndim < 1 or len(x) != len(y):
        raise ValueError(f"{who}: a batch's x and y must have the same number of samples, got shapes {x.shape} and {y.shape}")
    w = None if len(item) == 2 or item[2] is None else np.asarray(item[2], dtype=np.float64)
    return x, y, w


class IterableBatches:
    """Batches from an iterable of ``(x, y[, sample_weight])`` tuples.

    Without ``steps_per_epoch`` an epoch is one pass over ``iter(source)``; a one-shot generator
    then feeds only the first epoch, and a later empty epoch raises (pass ``steps_per_epoch``).
    With it, each epoch takes that many batches from one running iterator, restarted when a
    re-iterable source (a list, a :class:`Dataset`) runs out; a generator that runs out stops
    training, as in Keras.

    Args:
        source: an iterable of ``(x, y)`` or ``(x, y, sample_weight)`` batches.
        steps_per_epoch: batches per epoch, or None for one pass over ``source``.
        who: the caller's name for error messages.

    Example:
        >>> source = [(np.zeros((2, 3)), np.array([0, 1])), (np.ones((1, 3)), np.array([2]))]
        >>> batches = IterableBatches(source, steps_per_epoch=3)
        >>> [yb.tolist() for xb, yb, wb in batches.epoch(np.random.default_rng(0))]
        [[0, 1], [2], [0, 1]]
    """

    def __init__(self, source: Iterable[Any], steps_per_epoch: int | None = None, who: str = "fit") -> None:
        if not hasattr(source, "__iter__"):
            raise TypeError(f"{who}: x must be an array (with y) or an iterable of (x, y) batches, got {type(source).__name__}")
        if steps_per_epoch is not None and (isinstance(steps_per_epoch, bool) or int(steps_per_epoch) < 1):
            raise ValueError(f"{who}: steps_per_epoch must be a positive int, got {steps_per_epoch!r}")
        self.source, self.who = source, who
        self.steps = int(steps_per_epoch) if steps_per_epoch is not None else self._length(source)
        self.steps_per_epoch = steps_per_epoch
        self._iterator: Iterator[Any] | None = None
        self.exhausted = False
        self.samples = None

    @staticmethod
    def _length(source: Any) -> int | None:
        try:
            return len(source)
        except TypeError:
            return None

    def epoch(self, rng: np.random.Generator) -> Iterator[Batch]:
        if self.steps_per_epoch is None:
            count = 0
            for item in self.source:
                count += 1
                yield _as_batch(item, self.who)
            if count == 0:
                raise ValueError(
                    f"{self.who}: the data ran out (a generator can be read only once); pass steps_per_epoch= "
                    "with a generator that repeats, or a re-iterable source such as a list or a Dataset"
                )
            return
        restartable = iter(self.source) is not self.source
        for _ in range(self.steps):
            if self._iterator is None:
                self._iterator = iter(self.source)
            try:
                item = next(self._iterator)
            except StopIteration:
                self._iterator = None
                if not restartable:
                    self.exhausted = True
                    return
                self._iterator = iter(self.source)
                try:
                    item = next(self._iterator)
                except StopIteration:
                    self.exhausted = True
                    return
            yield _as_batch(item, self.who)


class Dataset:
    """A re-iterable pipeline of batches, in the spirit of ``tf.data.Dataset``.

    Every method returns a new ``Dataset``; iterating it yields ``(x, y)`` batches. Shuffling
    draws a fresh order every pass from its own seeded generator; ``map`` applies a function to
    each batch ``(x, y) -> (x, y)`` (augmentation); ``prefetch(n)`` prepares up to ``n`` batches
    in a background thread while the model trains on the current one.

    Args:
        x, y: arrays with the same number of samples (:meth:`from_arrays`).

    Example:
        >>> ds = Dataset.from_arrays(x, y).shuffle(seed=0).batch(64).map(lambda x, y: (x / 255, y)).prefetch(2)
        >>> model.fit(ds, epochs=3)
    """

    def __init__(self, make_iterator: Callable[[], Iterator[Any]], length: int | None) -> None:
        self._make_iterator = make_iterator
        self._length = length

    @classmethod
    def from_arrays(cls, x: Any, y: Any) -> "Dataset":
        """Samples ``(x[i], y[i])``; :meth:`batch` groups them."""
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim < 1 or len(x) != len(y):
            raise ValueError(f"Dataset.from_arrays: x and y need the same number of samples, got {x.shape} and {y.shape}")
        return _ArrayDataset(x, y)

    def __iter__(self) -> Iterator[Any]:
        return self._make_iterator()

    def __len__(self) -> int:
        if self._length is None:
            raise TypeError("this Dataset has no known length")
        return self._length

    def map(self, fn: Callable[..., Any]) -> "Dataset":
        """Apply ``fn(x, y) -> (x, y)`` to every batch."""
        return Dataset(lambda: (fn(*item) for item in self), self._length)

    def prefetch(self, buffer_size: int = 1) -> "Dataset":
        """Prepare up to ``buffer_size`` batches ahead in a background thread."""
        if int(buffer_size) < 1:
            raise ValueError(f"Dataset.prefetch: buffer_size must be >= 1, got {buffer_size}")
        return Dataset(lambda: _prefetching(iter(self), int(buffer_size)), self._length)


class _ArrayDataset(Dataset):
    """Samples of in-memory arrays, optionally shuffled, optionally batched (gathered by index)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int | None = None,
                 rng: np.random.Generator | None = None) -> None:
        self.x, self.y, self.batch_size, self.rng = x, y, batch_size, rng
        n = len(x)
        super().__init__(self._iterate, n if batch_size is None else (n + batch_size - 1) // batch_size)

    def _iterate(self) -> Iterator[Any]:
        n = len(self.x)
        order = self.rng.permutation(n) if self.rng is not None else np.arange(n)
        size = self.batch_size or 1
        for start in range(0, n, size):
            index = order[start : start + size]
            if self.batch_size is None:
                yield self.x[index[0]], self.y[index[0]]
            else:
                yield self.x[index], self.y[index]

    def shuffle(self, seed: int | None = None) -> "Dataset":
        """A fresh order of the samples on every pass, from a generator seeded with ``seed``."""
        return _ArrayDataset(self.x, self.y, self.batch_size, np.random.default_rng(seed))

    def batch(self, batch_size: int) -> "Dataset":
        """Group the samples into batches of ``batch_size`` (the last may be smaller)."""
        if isinstance(batch_size, bool) or int(batch_size) < 1:
            raise ValueError(f"Dataset.batch: batch_size must be a positive int, got {batch_size!r}")
        return _ArrayDataset(self.x, self.y, int(batch_size), self.rng)


_DONE = object()


def _prefetching(source: Iterator[Any], buffer_size: int) -> Iterator[Any]:
    """Run ``source`` in a daemon thread, ``buffer_size`` items ahead; re-raise its errors here."""
    items: queue.Queue = queue.Queue(maxsize=buffer_size)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in source:
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(_DONE)
        except BaseException as error:  # handed to the consumer, raised there
            items.put(error)

    worker = threading.Thread(target=produce, daemon=True)
    worker.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
