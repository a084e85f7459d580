"""Small helpers with Keras' names: :func:`to_categorical`."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["to_categorical"]


def to_categorical(y: Any, num_classes: int | None = None, dtype: Any = "float32") -> np.ndarray:
    """One-hot rows for integer class labels, as ``keras.utils.to_categorical``.

    ``y`` of shape ``S`` (a trailing axis of size 1 is dropped, as Keras does) gives an array
    of shape ``S + (num_classes,)`` with a 1 at each label; ``num_classes`` defaults to
    ``max(y) + 1``.

    Args:
        y: integer labels in ``[0, num_classes)``.
        num_classes: the number of classes; ``max(y) + 1`` when None.
        dtype: the dtype of the result (float32, as Keras).

    Example:
        >>> to_categorical([0, 2], 3)
        array([[1., 0., 0.],
               [0., 0., 1.]], dtype=float32)
    """
    y = np.asarray(y)
    if y.dtype.kind not in "iub" and not (y.dtype.kind == "f" and np.all(y == np.round(y))):
        raise ValueError(f"to_categorical: integer class labels expected, got dtype {y.dtype}")
    labels = y.astype(np.int64)
    if labels.ndim and labels.shape[-1] == 1 and labels.ndim > 1:
        labels = labels.reshape(labels.shape[:-1])
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    num_classes = int(num_classes)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"to_categorical: labels must lie in [0, {num_classes - 1}], got [{labels.min()}, {labels.max()}]")
    out = np.zeros(labels.shape + (num_classes,), dtype=dtype)
    np.put_along_axis(out, labels[..., None], 1, axis=-1)
    return out
