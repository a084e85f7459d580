"""Datasets: MNIST and Fashion-MNIST bundled with the package (``datasets.mnist.load_data()``,
``datasets.fashion_mnist.load_data()``), and the IDX reader.

* :mod:`.idx` -- the IDX file format, with integrity checks.
* :mod:`.download` -- fetching a file from mirrors into a cache, atomically and verified.
* :mod:`.idx_dataset` -- what both datasets share: four IDX files, bundled, cached or downloaded.
* :mod:`.mnist` -- MNIST, as ``keras.datasets.mnist`` returns it.
* :mod:`.fashion_mnist` -- Fashion-MNIST, as ``keras.datasets.fashion_mnist`` returns it.
* :mod:`.cifar10` -- CIFAR-10 from its official binary archive (not bundled; ``download=True``).
"""

from typing import Any

from . import cifar10, fashion_mnist, mnist
from .download import DownloadError
from .idx import ChecksumError, DatasetFileError, IDXFormatError, read_idx, read_idx_bytes

#: The datasets :func:`load_dataset` (and the command line's ``--dataset``) knows by name.
DATASETS = ("mnist", "fashion_mnist")


def load_dataset(name: str) -> Any:
    """``(x_train, y_train), (x_test, y_test)`` of ``"mnist"`` or ``"fashion_mnist"`` (uint8 images).

    Args:
        name: ``"mnist"`` or ``"fashion_mnist"`` (the copies bundled with the package).

    Returns:
        ``((x_train, y_train), (x_test, y_test))``: uint8 ``(60000, 28, 28)``, ``(60000,)``,
        ``(10000, 28, 28)``, ``(10000,)``.

    Example:
        >>> (x_train, y_train), (x_test, y_test) = load_dataset("fashion_mnist")
        >>> x_train.shape, x_train.dtype, y_test.shape
        ((60000, 28, 28), dtype('uint8'), (10000,))
    """
    if name == "mnist":
        from . import mnist

        return mnist.load_data()
    if name == "fashion_mnist":
        from . import fashion_mnist

        return fashion_mnist.load_data()
    raise ValueError(f"load_dataset: unknown dataset {name!r}; choose one of {list(DATASETS)}")


__all__ = [
    "load_dataset", "ChecksumError", "DatasetFileError", "DownloadError", "IDXFormatError", "cifar10", "fashion_mnist", "mnist", "read_idx",
    "read_idx_bytes",
]
