"""Datasets: MNIST and Fashion-MNIST bundled with the package (``datasets.mnist.load_data()``,
``datasets.fashion_mnist.load_data()``), and the IDX reader.

* :mod:`.idx` -- the IDX file format, with integrity checks.
* :mod:`.download` -- fetching a file from mirrors into a cache, atomically and verified.
* :mod:`.idx_dataset` -- what both datasets share: four IDX files, bundled, cached or downloaded.
* :mod:`.mnist` -- MNIST, as ``keras.datasets.mnist`` returns it.
* :mod:`.fashion_mnist` -- Fashion-MNIST, as ``keras.datasets.fashion_mnist`` returns it.
* :mod:`.cifar10` -- CIFAR-10 from its official binary archive (not bundled; ``download=True``).
"""

from . import cifar10, fashion_mnist, mnist
from .download import DownloadError
from .idx import ChecksumError, DatasetFileError, IDXFormatError, read_idx, read_idx_bytes

__all__ = [
    "ChecksumError", "DatasetFileError", "DownloadError", "IDXFormatError", "cifar10", "fashion_mnist", "mnist", "read_idx",
    "read_idx_bytes",
]
