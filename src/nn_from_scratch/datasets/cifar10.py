"""CIFAR-10 (A. Krizhevsky, 2009): 50,000 training and 10,000 test colour images 32x32 in 10
classes, read from the official binary archive ``cifar-10-binary.tar.gz``.

The archive holds ``cifar-10-batches-bin/data_batch_1.bin`` .. ``data_batch_5.bin`` and
``test_batch.bin``; each is a sequence of 10,000 records of 3,073 bytes: one label byte
(0-9), then the 3,072 pixel bytes of the image, the 1,024 red values row by row, then the
green, then the blue -- which is exactly channels-first ``(3, 32, 32)``.

Nothing is bundled (the archive is 162 MB): ``load_data(path=...)`` reads an archive (or its
extracted directory) you have; ``load_data(download=True)`` fetches it once into the cache
(the shared machinery of :mod:`.download`: mirrors tried in order, time limits, atomic
replacement) and checks it against the MD5 the dataset's page publishes, the only checksum
the authors give. A damaged cached archive is downloaded again.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from .download import DEFAULT_DEADLINE, default_cache_dir, fetch
from .idx import ChecksumError, DatasetFileError

__all__ = ["ARCHIVE", "CLASSES", "MD5", "MIRRORS", "load_data", "read_batch"]

ARCHIVE = "cifar-10-binary.tar.gz"
#: The MD5 published on https://www.cs.toronto.edu/~kriz/cifar.html for the binary version.
MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
RECORD = 1 + 3 * 32 * 32


def read_batch(data: bytes, name: str = "batch") -> tuple[np.ndarray, np.ndarray]:
    """The images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` uint8 of one ``.bin`` batch file.

    Args:
        data: the file's bytes: ``N`` records of 3,073 bytes (a label, then 3x32x32 pixels).
        name: what error messages call the file.

    Raises:
        DatasetFileError: a size that is not a whole number of 3,073-byte records, or a label
            outside 0-9; the message names the file.

    Example:
        >>> x, y = read_batch(bytes([3]) + bytes(3072)); (x.shape, y.tolist())
        ((1, 3, 32, 32), [3])
    """
    if len(data) == 0 or len(data) % RECORD:
        raise DatasetFileError(f"CIFAR-10 {name}: {len(data)} bytes is not a whole number of {RECORD}-byte records")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD)
    labels = records[:, 0].copy()
    if labels.max() > 9:
        raise DatasetFileError(f"CIFAR-10 {name}: label {int(labels.max())} is not a class 0-9")
    return records[:, 1:].reshape(-1, 3, 32, 32).copy(), labels


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_archive(path: Path, md5: str | None) -> dict[str, bytes]:
    if md5 is not None and _md5(path) != md5:
        raise ChecksumError(f"CIFAR-10 archive {path}: MD5 {_md5(path)} is not the published {md5}")
    wanted = set(TRAIN_FILES) | {TEST_FILE}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                base = member.name.rsplit("/", 1)[-1]
                if base in wanted and member.isfile():
                    if member.size > 10 * RECORD * 10_000:
                        raise DatasetFileError(f"CIFAR-10 archive {path}: {member.name} is {member.size} bytes, too large")
                    found[base] = archive.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as error:
        raise DatasetFileError(f"CIFAR-10 archive {path}: not a readable tar archive ({error})") from None
    missing = sorted(wanted - set(found))
    if missing:
        raise DatasetFileError(f"CIFAR-10 archive {path}: missing {', '.join(missing)}")
    return found


def _read_directory(path: Path) -> dict[str, bytes]:
    found = {}
    for name in (*TRAIN_FILES, TEST_FILE):
        candidates = (path / name, path / "cifar-10-batches-bin" / name)
        file = next((c for c in candidates if c.is_file()), None)
        if file is None:
            raise FileNotFoundError(f"CIFAR-10 file {name} not found in {path} (nor in {path / 'cifar-10-batches-bin'})")
        found[name] = file.read_bytes()
    return found


def load_data(
    path: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    mirrors: Sequence[str] | None = None,
    md5: str | None = MD5,
    timeout: float = 30.0,
    deadline: float = DEFAULT_DEADLINE,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``(x_train, y_train), (x_test, y_test)`` as ``keras.datasets.cifar10.load_data()``
    returns them, but channels first: ``x`` uint8 ``(N, 3, 32, 32)``, ``y`` uint8 ``(N, 1)``.

    Args:
        path: the archive ``cifar-10-binary.tar.gz``, or a directory holding it or its
            extracted ``.bin`` files (directly or in ``cifar-10-batches-bin/``).
        download: fetch the archive into the cache (``cache_dir``) if it is not there or damaged.
        cache_dir: the download cache (default: the one of :func:`.download.default_cache_dir`).
        mirrors: base URLs that serve ``cifar-10-binary.tar.gz``, tried in order.
        md5: the archive's expected MD5 (the published one); ``None`` skips the check (for
            archives you wrote yourself). Extracted directories are not checked.
        timeout, deadline: per-read and per-URL limits of the download, in seconds.

    Raises:
        FileNotFoundError: no archive or files where they were looked for (and ``download=False``).
        DatasetFileError: a damaged archive or batch file (``ChecksumError`` for a wrong MD5).
        DownloadError: every mirror failed.

    Example:
        >>> (x_train, y_train), (x_test, y_test) = load_data(download=True)     # doctest: +SKIP
        >>> x_train.shape, y_train.shape, x_test.shape                            # doctest: +SKIP
        ((50000, 3, 32, 32), (50000, 1), (10000, 3, 32, 32))
    """
    if path is not None and download:
        raise ValueError("cifar10.load_data: give path or download=True, not both")
    if path is not None:
        path = Path(path).expanduser()
        if path.is_dir():
            archive = path / ARCHIVE
            files = _read_archive(archive, md5) if archive.is_file() else _read_directory(path)
        elif path.is_file():
            files = _read_archive(path, md5)
        else:
            raise FileNotFoundError(f"CIFAR-10: {path} does not exist")
    elif download:
        destination = (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / "cifar10" / ARCHIVE
        files = None
        if destination.is_file():
            try:
                files = _read_archive(destination, md5)
            except DatasetFileError as error:
                warnings.warn(f"{error}; downloading it again", RuntimeWarning, stacklevel=2)
        if files is None:
            fetch([base.rstrip("/") + "/" + ARCHIVE for base in (mirrors or MIRRORS)], destination,
                  lambda downloaded: _read_archive(Path(downloaded), md5), timeout=timeout, deadline=deadline)
            files = _read_archive(destination, md5)
    else:
        raise FileNotFoundError(
            "CIFAR-10 is not bundled with the package: pass path= (the cifar-10-binary.tar.gz archive or its "
            "directory) or download=True"
        )
    train = [read_batch(files[name], name) for name in TRAIN_FILES]
    x_test, y_test = read_batch(files[TEST_FILE], TEST_FILE)
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return (x_train, y_train[:, None]), (x_test, y_test[:, None])

