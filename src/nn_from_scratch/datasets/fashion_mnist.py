"""Fashion-MNIST, as ``keras.datasets.fashion_mnist.load_data()`` returns it.

70,000 grayscale 28x28 images of clothing in 10 classes (:data:`CLASS_NAMES`), in MNIST's
layout: the same four IDX file names, shapes and dtypes, so it drops in wherever MNIST goes.
The four files ship with the package (``datasets/data/fashion_mnist/``); ``load_data(download=True)``
fetches them from Zalando's mirrors into a cache instead. Every file is checked against the
sha256 of its uncompressed bytes on every load. The loading machinery is MNIST's
(:class:`.idx_dataset.IDXDataset`).

Fashion-MNIST is by Zalando Research (H. Xiao, K. Rasul, R. Vollgraf, 2017), under the MIT licence.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .download import DEFAULT_DEADLINE
from .idx_dataset import IDXDataset

__all__ = ["CLASS_NAMES", "FILES", "MIRRORS", "SHA256", "bundled_dir", "load_data"]

# (train images, train labels, test images, test labels), the order load_data returns them in.
FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# sha256 of the *uncompressed* IDX files (Zalando's .gz files and Debian's recompressed ones
# differ, their content does not).
SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

# Zalando's own S3 bucket (torchvision's source), the GitHub repository, and the copy that
# keras.datasets.fashion_mnist downloads; each serves "<name>.gz".
MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
)

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

CACHE_SUBDIR = "fashion_mnist"


def bundled_dir() -> Path:
    """The directory of the Fashion-MNIST files that ship with the package.

    Example:
        >>> sorted(p.name for p in bundled_dir().glob("*.gz"))[:2]
        ['t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz']
    """
    return Path(__file__).resolve().parent / "data" / "fashion_mnist"


_DATASET = IDXDataset("Fashion-MNIST", FILES, SHA256, MIRRORS, CACHE_SUBDIR, bundled_dir())


def load_data(
    path: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    mirrors: Sequence[str] | None = None,
    timeout: float = 30.0,
    deadline: float = DEFAULT_DEADLINE,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Load Fashion-MNIST: ``(x_train, y_train), (x_test, y_test) = load_data()``.

    The same arrays as ``keras.datasets.fashion_mnist.load_data()``: writable ``uint8`` arrays
    of shapes ``(60000, 28, 28)``, ``(60000,)``, ``(10000, 28, 28)`` and ``(10000,)``, pixels in
    0..255, labels 0..9 (names in :data:`CLASS_NAMES`; 6,000 training images per class).

    Where the files come from, and every argument, as :func:`nn_from_scratch.datasets.mnist.load_data`:
    the bundled copy by default; ``path``, a directory of the four IDX files (raw or ``.gz``);
    ``download=True``, the cache ``<cache_dir>/fashion_mnist`` filled from ``mirrors``
    (default :data:`MIRRORS`), where a damaged file is replaced only by a verified download.

    Args:
        path: a directory holding the four IDX files; ``None`` for the bundled copy (or, with
            ``download=True``, the cache).
        download: fetch missing or damaged files from the mirrors.
        cache_dir: root of the download cache, used with ``download=True`` and no ``path``; the
            files go in its ``fashion_mnist`` subdirectory.
        mirrors: base URLs, each serving ``<base><name>.gz``; default :data:`MIRRORS`.
        timeout: seconds to wait for each connection and read when downloading.
        deadline: seconds one mirror may take for a whole file.

    Returns:
        ``((x_train, y_train), (x_test, y_test))``.

    Raises:
        FileNotFoundError: a file is missing and ``download`` is false.
        IDXFormatError: a file is corrupt or truncated. The message names the file.
        ChecksumError: a file's sha256 is not Fashion-MNIST's. The message names the file.
        DownloadError: no mirror gave a valid copy of a file; lists what each mirror did.
        ValueError: ``cache_dir`` or ``mirrors`` given without ``download=True``, or
            ``cache_dir`` together with ``path``.

    Example:
        >>> (x_train, y_train), (x_test, y_test) = load_data()
        >>> x_train.shape, x_train.dtype, y_train[:5].tolist()
        ((60000, 28, 28), dtype('uint8'), [9, 0, 0, 3, 0])
    """
    return _DATASET.load_data(
        path, download=download, cache_dir=cache_dir, mirrors=mirrors, timeout=timeout, deadline=deadline,
        who="fashion_mnist.load_data",
    )
