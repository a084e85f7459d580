"""Datasets: MNIST bundled with the package (``datasets.mnist.load_data()``), and the IDX reader.

* :mod:`.idx` -- the IDX file format, with integrity checks.
* :mod:`.download` -- fetching a file from mirrors into a cache, atomically and verified.
* :mod:`.mnist` -- MNIST, as ``keras.datasets.mnist`` returns it.
"""

from . import mnist
from .download import DownloadError
from .idx import ChecksumError, DatasetFileError, IDXFormatError, read_idx

__all__ = ["ChecksumError", "DatasetFileError", "DownloadError", "IDXFormatError", "mnist", "read_idx"]
