"""Hostile dataset files and downloads (issue 13, items 3-5).

* 3: an IDX header whose dimensions overflow is an ``IDXFormatError`` (not numpy's "cannot
  reshape"), and in the download cache such a file is damaged, so it is downloaded again;
* 4: a gzip bomb whose header promises more than its compressed size can inflate to is refused
  before it is inflated;
* 5: a damaged file is kept until its replacement is verified; a server that trickles bytes
  is abandoned at the deadline for the next mirror.

Downloads go to a local ``http.server`` on 127.0.0.1 in a thread; every test is bounded in time.
"""

from __future__ import annotations

import functools
import gzip
import http.server
import shutil
import socket
import struct
import threading
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

from nn_from_scratch.datasets import DownloadError, IDXFormatError, mnist, read_idx
from nn_from_scratch.datasets.download import fetch

BUNDLED = mnist.bundled_dir()
SMALL = "t10k-labels-idx1-ubyte"


@pytest.fixture(autouse=True)
def no_internet(monkeypatch):
    real_getaddrinfo = socket.getaddrinfo

    def loopback_only(host, *args, **kwargs):
        if host not in {"127.0.0.1", "localhost"}:
            raise AssertionError(f"test tried to reach {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    for variable in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(variable, "*")


def header(code: int, *dims: int) -> bytes:
    return struct.pack(f">HBB{len(dims)}I", 0, code, len(dims), *dims)


# -- 3: overflowing headers ------------------------------------------------------------------


OVERFLOWING = {
    # numpy's int64 product of these wraps around to 0, so the old reader read no payload and
    # failed in reshape with numpy's "array is too big".
    "2**64 bytes": header(0x08, 65536, 65536, 65536, 65536),
    "2**64 int32s": header(0x0C, 2**16, 2**16, 2**16, 2**16),
    "zero and huge": header(0x08, 0, 2**32 - 1, 2**32 - 1, 2**32 - 1),
    "huge and zero": header(0x0E, 2**32 - 1, 2**32 - 1, 2**32 - 1, 0),
}


@pytest.mark.parametrize("name", OVERFLOWING)
@pytest.mark.parametrize("gzipped", [False, True])
def test_an_overflowing_header_is_a_format_error(tmp_path, name, gzipped):
    data = OVERFLOWING[name]
    path = tmp_path / ("bad.idx.gz" if gzipped else "bad.idx")
    path.write_bytes(gzip.compress(data) if gzipped else data)
    with pytest.raises(IDXFormatError, match=r"bad\.idx.*(overflow|truncated)"):
        read_idx(path)


def test_a_zero_sized_array_with_an_addressable_shape_still_reads(tmp_path):
    path = tmp_path / "empty.idx"
    path.write_bytes(header(0x08, 0, 28, 28))
    assert read_idx(path).shape == (0, 28, 28)


class Mirrors:
    """A local HTTP server: ``/good/`` serves the bundled MNIST, ``/slow/`` trickles bytes
    (headers, then body, one every 20 ms), ``/bad/`` a damaged copy of SMALL."""

    def __init__(self, root: Path) -> None:
        self.requests: list[str] = []
        requests = self.requests
        self.stop = threading.Event()
        stop = self.stop

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                requests.append(self.path)
                if self.path.startswith("/slow"):
                    return self.trickle()
                super().do_GET()

            def trickle(self):
                body = (BUNDLED / Path(self.path).name).read_bytes()
                head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                slow_headers = "headers" in self.path
                try:
                    if not slow_headers:
                        self.wfile.write(head)
                    for byte in (head if slow_headers else b"") + body:
                        if stop.wait(0.02):  # at most 10 s: the server stops with the test
                            return
                        self.wfile.write(bytes([byte]))
                except OSError:
                    return

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        good = root / "good"
        good.mkdir()
        for name in mnist.FILES:
            shutil.copy(BUNDLED / f"{name}.gz", good)
        bad = root / "bad"
        bad.mkdir()
        (bad / f"{SMALL}.gz").write_bytes(b"\x1f\x8b not gzip")

    def url(self, mirror: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{mirror}/"

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def mirrors(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    server = Mirrors(root)
    yield server
    server.close()


@pytest.fixture
def refused_mirror():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def cache_with_damaged(tmp_path: Path, damaged_bytes: bytes, name: str = f"{SMALL}.gz") -> Path:
    directory = tmp_path / "cache" / "mnist"
    directory.mkdir(parents=True)
    for file in mnist.FILES:
        if f"{file}.gz" != name and file != name:
            shutil.copy(BUNDLED / f"{file}.gz", directory)
    (directory / name).write_bytes(damaged_bytes)
    return directory


def test_an_overflowing_header_in_the_cache_counts_as_damaged(tmp_path, mirrors):
    directory = cache_with_damaged(tmp_path, gzip.compress(OVERFLOWING["2**64 bytes"]))
    with pytest.warns(RuntimeWarning, match=f"{SMALL}.gz.*overflow.*downloading it again"):
        _, (_, y_test) = mnist.load_data(download=True, cache_dir=tmp_path / "cache", mirrors=[mirrors.url("good")])
    assert mirrors.requests == [f"/good/{SMALL}.gz"]
    np.testing.assert_array_equal(y_test, read_idx(BUNDLED / f"{SMALL}.gz"))
    assert read_idx(directory / f"{SMALL}.gz").shape == (10000,)


# -- 4: gzip bombs ---------------------------------------------------------------------------


def bomb(claimed_shape: tuple[int, ...], inflated_bytes: int) -> bytes:
    """A gzip stream: an IDX header claiming ``claimed_shape`` uint8, then ``inflated_bytes`` zeros."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip container
    parts = [compressor.compress(header(0x08, *claimed_shape))]
    zeros = bytes(1 << 20)
    for _ in range(inflated_bytes >> 20):
        parts.append(compressor.compress(zeros))
    parts.append(compressor.flush())
    return b"".join(parts)


def test_a_gzip_bomb_is_refused_before_it_is_inflated(tmp_path):
    data = bomb((65536, 65536), 64 << 20)  # claims 4 GiB, holds 64 MiB of zeros, ~65 kB
    assert len(data) < 100_000
    path = tmp_path / "bomb-idx3-ubyte.gz"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        with pytest.raises(IDXFormatError, match=r"truncated payload.*4294967296 bytes.*inflate to at most"):
            read_idx(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"peak {peak / 2**20:.1f} MiB while refusing a 4 GiB claim in {len(data)} bytes"


def test_a_file_whose_claim_fits_the_compression_bound_reads_only_the_claimed_bytes(tmp_path):
    # A header that promises 1 MiB in front of 32 MiB of zeros: at most the claim (and one
    # byte more, to see the trailing data) is inflated, never the 32 MiB.
    path = tmp_path / "long-idx1-ubyte.gz"
    path.write_bytes(bomb((1 << 20,), 32 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(IDXFormatError, match="bytes after the payload"):
            read_idx(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


def test_a_raw_file_shorter_than_its_header_claims_is_refused_before_reading(tmp_path):
    path = tmp_path / "short.idx"
    path.write_bytes(header(0x08, 60000, 28, 28) + bytes(100))
    with pytest.raises(IDXFormatError, match=r"truncated payload.*47040000 bytes\), found only 100 bytes"):
        read_idx(path)


# -- 5: downloads ----------------------------------------------------------------------------


@pytest.mark.parametrize("failure", ["refused", "bad"])
def test_a_damaged_file_is_kept_when_no_mirror_delivers(tmp_path, mirrors, refused_mirror, failure):
    raw = gzip.decompress((BUNDLED / f"{SMALL}.gz").read_bytes())
    damaged = gzip.compress(raw[:100] + bytes([(raw[100] + 1) % 10]) + raw[101:])  # fails only its checksum
    directory = cache_with_damaged(tmp_path, damaged)
    mirror = refused_mirror if failure == "refused" else mirrors.url("bad")
    with pytest.warns(RuntimeWarning, match="downloading it again"), pytest.raises(DownloadError, match=SMALL):
        mnist.load_data(download=True, cache_dir=tmp_path / "cache", mirrors=[mirror])
    assert (directory / f"{SMALL}.gz").read_bytes() == damaged  # the user's file is still there
    assert sorted(p.name for p in directory.iterdir()) == sorted(f"{name}.gz" for name in mnist.FILES)


def test_a_damaged_raw_file_is_replaced_by_the_verified_download(tmp_path, mirrors):
    directory = cache_with_damaged(tmp_path, b"\x00\x00\x08\x01\x00\x00\x00\x05abc", name=SMALL)
    with pytest.warns(RuntimeWarning, match="downloading it again"):
        _, (_, y_test) = mnist.load_data(download=True, cache_dir=tmp_path / "cache", mirrors=[mirrors.url("good")])
    assert not (directory / SMALL).exists() and (directory / f"{SMALL}.gz").is_file()
    assert y_test.shape == (10000,)


@pytest.mark.parametrize("slow", ["slow", "slow-headers"])
def test_a_trickling_mirror_is_abandoned_at_the_deadline_for_the_next(tmp_path, mirrors, slow):
    destination = tmp_path / "cache" / f"{SMALL}.gz"
    start = time.monotonic()
    result = fetch(
        [mirrors.url(slow) + f"{SMALL}.gz", mirrors.url("good") + f"{SMALL}.gz"],
        destination,
        lambda path: read_idx(path, sha256=mnist.SHA256[SMALL]),
        timeout=2.0,  # every single byte arrives well within this
        deadline=0.5,
    )
    elapsed = time.monotonic() - start
    assert result == destination and read_idx(destination, sha256=mnist.SHA256[SMALL]).shape == (10000,)
    assert mirrors.requests == [f"/{slow}/{SMALL}.gz", f"/good/{SMALL}.gz"]
    assert elapsed < 3.0, f"took {elapsed:.1f} s with a 0.5 s deadline"
    assert list(destination.parent.glob(".partial-*")) == []


def test_a_trickling_only_mirror_gives_a_timeout_in_the_download_error(tmp_path, mirrors):
    with pytest.raises(DownloadError, match=r"timed out.*deadline of 0\.3 s"):
        fetch([mirrors.url("slow") + f"{SMALL}.gz"], tmp_path / f"{SMALL}.gz", lambda path: None, timeout=2.0, deadline=0.3)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "5"])
def test_fetch_refuses_a_bad_deadline(tmp_path, bad):
    with pytest.raises(ValueError, match="deadline"):
        fetch(["http://127.0.0.1:1/x"], tmp_path / "x", lambda path: None, deadline=bad)
