"""Reading IDX files, the format of MNIST and Fashion-MNIST, with integrity checks.

An IDX file is a 4-byte magic number, one big-endian ``uint32`` per dimension, then the
payload in C order, big-endian::

    offset 0   0x00 0x00          always zero
    offset 2   dtype code         0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                                  0x0D float32, 0x0E float64
    offset 3   ndim               number of dimensions, >= 1
    offset 4   ndim x uint32      the shape
    then       prod(shape) items  the data

Files may be gzipped (``.gz``). Every check here fails with a :class:`DatasetFileError`
that names the file and says what was wrong: a bad gzip stream, a bad magic number, an
unknown dtype code, dimensions whose product overflows, a payload shorter or longer than the
header promises, or a sha256 of the uncompressed bytes that differs from the expected one.

The errors a damaged file can raise are exactly :class:`IDXFormatError` and
:class:`ChecksumError`, both :class:`DatasetFileError` (a ``ValueError``); a missing or
unreadable file raises the usual ``OSError``. ``fuzz/fuzz_idx.py`` holds the reader to that.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import stat
import struct
import sys
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

__all__ = ["ChecksumError", "DatasetFileError", "IDXFormatError", "read_idx", "read_idx_bytes"]

# Big-endian element types by IDX dtype code.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# No real IDX file has more axes; a larger count means the header is garbage.
MAX_NDIM = 8
# Deflate's maximum compression ratio (zlib's technical notes): n compressed bytes never
# inflate to more than about 1032 n.
MAX_DEFLATE_RATIO = 1032
_READ_CHUNK = 1 << 20


class DatasetFileError(ValueError):
    """A dataset file is damaged or is not the file expected. Names the file.

    Args:
        *args: the message (``ValueError``'s arguments); it names the file.

    Example:
        >>> try:
        ...     read_idx_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8]), name="labels")
        ... except DatasetFileError as err:
        ...     print(type(err).__name__)
        IDXFormatError
    """


class IDXFormatError(DatasetFileError):
    """The file is not a valid (optionally gzipped) IDX file.

    Args:
        *args: the message (``ValueError``'s arguments); it names the file.

    Example:
        >>> try:
        ...     read_idx_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8]), name="labels")    # 2 of the 3 payload bytes
        ... except IDXFormatError as err:
        ...     print(err)
        labels: truncated payload: the header promises shape (3,) of uint8 (3 bytes), found only 2 bytes
    """


class ChecksumError(DatasetFileError):
    """The file is a valid IDX file, but its sha256 is not the expected one.

    Args:
        *args: the message (``ValueError``'s arguments); it names the file.

    Example:
        >>> try:
        ...     read_idx_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]), sha256="0" * 64, name="labels")
        ... except ChecksumError as err:
        ...     print(err)
        labels: sha256 mismatch: the uncompressed data has sha256 e660eb3c...6a9, expected 000...000; the file is corrupt or not the expected one
    """


def read_idx(path: str | os.PathLike[str], sha256: str | None = None) -> np.ndarray:
    """Read an IDX file (gzipped if its name ends in ``.gz``) into a writable NumPy array.

    Args:
        path: the file.
        sha256: the expected hex sha256 of the *uncompressed* bytes (header included), or
            ``None`` to skip the check. The uncompressed digest is used because the same
            data is published under several different gzip encodings.

    Returns:
        An array of the header's shape, in native byte order (``uint8`` for MNIST).

    Raises:
        FileNotFoundError: the file does not exist (other ``OSError`` for unreadable files).
        IDXFormatError: bad gzip stream, bad magic number, unknown dtype code, dimensions whose
            product overflows, or a payload whose length does not match the header.
        ChecksumError: the sha256 of the uncompressed bytes differs from ``sha256``.

    Memory is bounded by what the file can hold: a header promising more bytes than a regular
    file has (or, gzipped, more than its compressed size can inflate to at deflate's maximum
    ratio of 1032:1) is refused before any payload is read, and no more than the header's
    payload (plus one byte, to detect trailing data) is ever decompressed.

    Example:
        >>> read_idx("t10k-labels-idx1-ubyte.gz")[:5]          # MNIST's test labels  # doctest: +SKIP
        array([7, 2, 1, 0, 4], dtype=uint8)
    """
    path = Path(path)
    with open(path, "rb") as raw:
        info = os.fstat(raw.fileno())
        size = info.st_size if stat.S_ISREG(info.st_mode) else None  # pipes and devices: no bound known
        return _read(raw, size, path.name.endswith(".gz"), str(path), sha256)


def read_idx_bytes(data: bytes, sha256: str | None = None, *, gzipped: bool | None = None, name: str = "<bytes>") -> np.ndarray:
    """:func:`read_idx` on the bytes of a file (``gzipped=None``: gzipped if they start ``1f 8b``).

    ``name`` stands for the file in error messages. Raises only :class:`IDXFormatError` and
    :class:`ChecksumError` (both :class:`DatasetFileError`, a ``ValueError``).

    Args:
        data: the file's bytes, raw or gzipped.
        sha256: the expected hex sha256 of the uncompressed bytes, or ``None`` to skip the check.
        gzipped: whether ``data`` is gzipped; ``None`` decides from the first two bytes.
        name: what error messages call the file.

    Returns:
        An array of the header's shape, as :func:`read_idx` returns it.

    Example:
        >>> read_idx_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]))   # uint8, 1-d, 3 items
        array([7, 8, 9], dtype=uint8)
    """
    data = bytes(data)
    if gzipped is None:
        gzipped = data[:2] == b"\x1f\x8b"
    return _read(io.BytesIO(data), len(data), gzipped, name, sha256)


def _read(raw: BinaryIO, size: int | None, gzipped: bool, label: str, sha256: str | None) -> np.ndarray:
    digest = hashlib.sha256()
    # The most uncompressed bytes the file can yield.
    limit = None if size is None else size * MAX_DEFLATE_RATIO + 1024 if gzipped else size
    try:
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw
        array = _parse(stream, digest, label, limit, gzipped)
    except (gzip.BadGzipFile, zlib.error, EOFError) as error:
        # EOFError is how gzip reports a stream cut short.
        reason = "the gzip stream ends early" if isinstance(error, EOFError) else f"bad gzip stream ({error})"
        raise IDXFormatError(f"{label}: {reason}; the file is corrupt or truncated") from error
    if sha256 is not None and digest.hexdigest() != sha256.lower():
        raise ChecksumError(
            f"{label}: sha256 mismatch: the uncompressed data has sha256 {digest.hexdigest()}, "
            f"expected {sha256.lower()}; the file is corrupt or not the expected one"
        )
    return array


def _parse(stream: BinaryIO, digest: "hashlib._Hash", path: str, limit: int | None, gzipped: bool) -> np.ndarray:
    magic = _read_exactly(stream, 4, digest)
    if len(magic) < 4:
        raise IDXFormatError(f"{path}: truncated: {len(magic)} bytes, too short for the 4-byte IDX magic number")
    zero, dtype_code, ndim = struct.unpack(">HBB", magic)
    if zero != 0:
        raise IDXFormatError(
            f"{path}: bad magic number 0x{magic.hex()}: an IDX file starts with two zero bytes"
            + (" (this looks like a gzip file without a .gz name)" if magic[:2] == b"\x1f\x8b" else "")
        )
    if dtype_code not in IDX_DTYPES:
        known = ", ".join(f"0x{code:02X} {dtype.name}" for code, dtype in IDX_DTYPES.items())
        raise IDXFormatError(f"{path}: bad magic number 0x{magic.hex()}: unknown dtype code 0x{dtype_code:02X} (known: {known})")
    if not 1 <= ndim <= MAX_NDIM:
        raise IDXFormatError(f"{path}: bad magic number 0x{magic.hex()}: {ndim} dimensions, expected 1 to {MAX_NDIM}")

    dims_bytes = _read_exactly(stream, 4 * ndim, digest)
    if len(dims_bytes) < 4 * ndim:
        raise IDXFormatError(f"{path}: truncated header: {ndim} dimensions need {4 * ndim} bytes, found {len(dims_bytes)}")
    shape = struct.unpack(f">{ndim}I", dims_bytes)
    dtype = IDX_DTYPES[dtype_code]
    # Python integers: exact, whatever the header says (numpy's int64 product wraps around).
    expected = math.prod(shape) * dtype.itemsize
    addressable = math.prod(d for d in shape if d) * dtype.itemsize
    if addressable > sys.maxsize:
        raise IDXFormatError(
            f"{path}: the header's dimensions {shape} of {dtype.name} overflow: {addressable} bytes "
            "is more than an array can address; the header is corrupt"
        )
    header_size = 4 + 4 * ndim
    if limit is not None and header_size + expected > limit:
        # Refused before reading: a damaged header (or a gzip bomb) must not make us inflate
        # or allocate what the file cannot hold.
        holds = (
            f"found only {limit - header_size} bytes" if not gzipped
            else f"the compressed file can inflate to at most {limit - header_size} bytes of payload"
        )
        raise IDXFormatError(
            f"{path}: truncated payload: the header promises shape {shape} of {dtype.name} "
            f"({expected} bytes), {holds}"
        )

    # Read in chunks rather than allocating `expected` bytes up front, so that a damaged
    # header (of a pipe, whose size is unknown) fails as "truncated" instead of as a MemoryError.
    payload = _read_exactly(stream, expected, digest)
    if len(payload) < expected:
        raise IDXFormatError(
            f"{path}: truncated payload: the header promises shape {shape} of {dtype.name} "
            f"({expected} bytes), found only {len(payload)} bytes"
        )
    trailing = _read_exactly(stream, 1, digest)
    if trailing:
        extra = 1 + len(_read_exactly(stream, _READ_CHUNK, digest))
        raise IDXFormatError(
            f"{path}: {extra}{'+' if extra > _READ_CHUNK else ''} bytes after the payload of shape {shape}: "
            "the header does not describe this file"
        )
    array = np.frombuffer(payload, dtype=dtype).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def _read_exactly(stream: BinaryIO, size: int, digest: "hashlib._Hash") -> bytearray:
    """Read up to ``size`` bytes (fewer only at end of file), feeding them to ``digest``."""
    buffer = bytearray()
    while len(buffer) < size:
        chunk = stream.read(min(_READ_CHUNK, size - len(buffer)))
        if not chunk:
            break
        buffer += chunk
    digest.update(buffer)
    return buffer
