"""MNIST handwritten digits, as ``keras.datasets.mnist.load_data()`` returns them.

The four IDX files ship with the package (``datasets/data/mnist/``), so no network is needed.
For an install without them, ``load_data(download=True)`` fetches them from public mirrors
into a cache. Every file is checked against the sha256 of its uncompressed bytes on every load.

MNIST is by Y. LeCun, C. Cortes and C. Burges, under CC BY-SA 3.0.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .download import DEFAULT_DEADLINE
from .idx_dataset import IDXDataset

__all__ = ["FILES", "MIRRORS", "SHA256", "bundled_dir", "load_data"]

# (train images, train labels, test images, test labels), the order load_data returns them in.
FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# sha256 of the *uncompressed* IDX files: mirrors serve differently compressed .gz files of
# the same data, so only the uncompressed digest identifies it.
SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

# The mirrors torchvision and TensorFlow use, then the original site; each serves "<name>.gz".
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

CACHE_SUBDIR = "mnist"


def bundled_dir() -> Path:
    """The directory of the MNIST files that ship with the package.

    Example:
        >>> sorted(p.name for p in bundled_dir().glob("*.gz"))[:2]
        ['t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz']
    """
    return Path(__file__).resolve().parent / "data" / "mnist"


_DATASET = IDXDataset("MNIST", FILES, SHA256, MIRRORS, CACHE_SUBDIR, bundled_dir())


def load_data(
    path: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    mirrors: Sequence[str] | None = None,
    timeout: float = 30.0,
    deadline: float = DEFAULT_DEADLINE,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Load MNIST: ``(x_train, y_train), (x_test, y_test) = load_data()``.

    The same arrays as ``keras.datasets.mnist.load_data()``: writable ``uint8`` arrays of
    shapes ``(60000, 28, 28)``, ``(60000,)``, ``(10000, 28, 28)`` and ``(10000,)``, pixels in
    0..255, labels in 0..9. Each file's sha256 is checked on every load.

    Where the files come from:

    * ``load_data()``: the copy bundled with the package. No network.
    * ``load_data(path)``: the directory ``path``, holding the four IDX files
      (``train-images-idx3-ubyte``, ...), each either raw or gzipped (``<name>.gz``).
    * ``load_data(download=True)``: the cache directory ``<cache_dir>/mnist``. Files that are
      missing, or damaged (bad header, truncated, wrong checksum), are downloaded from
      ``mirrors``, each mirror tried in turn; a file already valid in the cache is reused
      without any request. A damaged file is replaced only once its download has been
      verified: when every mirror fails, it is still there.
    * ``load_data(path, download=True)``: as above, with ``path`` as the download directory.

    Args:
        path: a directory holding the IDX files; ``None`` for the bundled copy (or, with
            ``download=True``, the cache).
        download: fetch missing or damaged files from the mirrors.
        cache_dir: root of the download cache, used with ``download=True`` and no ``path``.
            Default: ``$NN_FROM_SCRATCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/nn_from_scratch``,
            else ``~/.cache/nn_from_scratch``. The files go in its ``mnist`` subdirectory.
        mirrors: base URLs, each serving ``<base><name>.gz``; default :data:`MIRRORS`.
        timeout: seconds to wait for each connection and read when downloading.
        deadline: seconds one mirror may take for a whole file, after which the next mirror
            is tried (a server that trickles bytes cannot hold the download forever).

    Returns:
        ``((x_train, y_train), (x_test, y_test))``.

    Raises:
        FileNotFoundError: a file is missing and ``download`` is false.
        IDXFormatError: a file is corrupt or truncated (bad gzip stream, bad header, wrong
            payload length). The message names the file.
        ChecksumError: a file's sha256 is not MNIST's. The message names the file.
        DownloadError: no mirror gave a valid copy of a file; lists what each mirror did.
        ValueError: ``cache_dir`` or ``mirrors`` given without ``download=True``, or
            ``cache_dir`` together with ``path``.

    Example:
        >>> (x_train, y_train), (x_test, y_test) = load_data()
        >>> x_train.shape, x_train.dtype, y_train[:5].tolist()
        ((60000, 28, 28), dtype('uint8'), [5, 0, 4, 1, 9])
    """
    return _DATASET.load_data(
        path, download=download, cache_dir=cache_dir, mirrors=mirrors, timeout=timeout, deadline=deadline,
        who="mnist.load_data",
    )
