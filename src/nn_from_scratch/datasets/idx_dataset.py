"""What MNIST and Fashion-MNIST share: four IDX files, bundled or downloaded, sha256-checked.

An :class:`IDXDataset` names its four files (train images, train labels, test images, test
labels), the sha256 of each file's *uncompressed* bytes, the mirrors that serve ``<name>.gz``
and where its bundled copy lives. :meth:`IDXDataset.load_data` returns the arrays as
``keras.datasets.<name>.load_data()`` does.

A file in the download cache (or in ``path`` with ``download=True``) that is damaged -- any
:class:`~.idx.DatasetFileError`: a bad header, an overflowing one, a truncated payload, a
checksum mismatch -- is downloaded again. The damaged file stays where it is until a verified
replacement has arrived (:func:`.download.fetch` moves it into place atomically), so a failed
download never costs the user the file they had.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .download import DEFAULT_DEADLINE, default_cache_dir, fetch
from .idx import DatasetFileError, read_idx

__all__ = ["IDXDataset"]

Arrays = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class IDXDataset:
    """One dataset of four IDX files.

    Args:
        title: the name in messages ("MNIST").
        files: (train images, train labels, test images, test labels), without ``.gz``.
        sha256: hex sha256 of each file's uncompressed bytes.
        mirrors: base URLs, each serving ``<base><name>.gz``, tried in order.
        cache_subdir: the dataset's directory under the download cache.
        bundled: the directory of the copy shipped with the package.

    Example:
        >>> from nn_from_scratch.datasets import mnist
        >>> dataset = IDXDataset("MNIST", mnist.FILES, mnist.SHA256, mnist.MIRRORS, "mnist", mnist.bundled_dir())
        >>> (x_train, y_train), (x_test, y_test) = dataset.load_data()
        >>> x_train.shape, y_test.shape
        ((60000, 28, 28), (10000,))
    """

    title: str
    files: tuple[str, str, str, str]
    sha256: Mapping[str, str]
    mirrors: tuple[str, ...]
    cache_subdir: str
    bundled: Path

    def load_data(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        download: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        mirrors: Sequence[str] | None = None,
        timeout: float = 30.0,
        deadline: float = DEFAULT_DEADLINE,
        who: str = "load_data",
    ) -> Arrays:
        """``(x_train, y_train), (x_test, y_test)``; see ``mnist.load_data`` for the arguments."""
        if not download and (cache_dir is not None or mirrors is not None):
            raise ValueError(f"{who}: cache_dir and mirrors only apply with download=True")
        if path is not None and cache_dir is not None:
            raise ValueError(f"{who}: give path or cache_dir, not both (path is the download directory)")
        if path is not None:
            directory = Path(path).expanduser()
            if directory.exists() and not directory.is_dir():
                raise NotADirectoryError(f"{who}: path {directory} is not a directory of the four {self.title} IDX files")
        elif download:
            directory = (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / self.cache_subdir
        else:
            directory = self.bundled
        mirrors = self.mirrors if mirrors is None else tuple(mirrors)
        x_train, y_train, x_test, y_test = (
            self._load_file(directory, name, download, mirrors, timeout, deadline) for name in self.files
        )
        return (x_train, y_train), (x_test, y_test)

    def _load_file(
        self, directory: Path, name: str, download: bool, mirrors: Sequence[str], timeout: float, deadline: float
    ) -> np.ndarray:
        candidates = (directory / name, directory / f"{name}.gz")
        local = next((candidate for candidate in candidates if candidate.is_file()), None)
        if local is not None:
            try:
                return read_idx(local, sha256=self.sha256[name])
            except DatasetFileError as error:
                if not download:
                    raise
                warnings.warn(f"{error}; downloading it again", RuntimeWarning, stacklevel=5)  # the caller of mnist.load_data
        elif not download:
            hint = "the package was installed without its data; " if directory == self.bundled else ""
            raise FileNotFoundError(
                f"{self.title} file {name} not found: looked for {candidates[0]} and {candidates[1]}; "
                f"{hint}pass download=True to fetch it"
            )

        gz_name = f"{name}.gz"
        # fetch verifies the download before it replaces anything; the damaged local file is
        # kept until then (and stays if every mirror fails).
        destination = fetch(
            [base.rstrip("/") + "/" + gz_name for base in mirrors],
            directory / gz_name,
            lambda downloaded: read_idx(downloaded, sha256=self.sha256[name]),
            timeout=timeout,
            deadline=deadline,
        )
        if local is not None and local != destination:
            local.unlink(missing_ok=True)  # a damaged raw copy would shadow the new .gz
        return read_idx(destination, sha256=self.sha256[name])
