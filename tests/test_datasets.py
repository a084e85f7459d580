"""MNIST loader, IDX reader and mirror download.

Downloads are tested against a local ``http.server`` on 127.0.0.1; any other host name is
refused by a fixture, so these tests never touch the internet.
"""

from __future__ import annotations

import functools
import gzip
import http.server
import shutil
import socket
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from nn_from_scratch.datasets import ChecksumError, DatasetFileError, DownloadError, IDXFormatError, mnist, read_idx
from nn_from_scratch.datasets.download import CACHE_ENV_VAR, default_cache_dir, fetch

BUNDLED = mnist.bundled_dir()
SMALL = "t10k-labels-idx1-ubyte"  # 10 kB uncompressed: cheap to corrupt in many ways

# Published figures: label counts of the MNIST train and test sets, and the train pixel
# mean and standard deviation given to 3 decimals in shared/README.md.
TRAIN_LABEL_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
TRAIN_PIXEL_MEAN, TRAIN_PIXEL_STD = 33.318, 78.567

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@pytest.fixture(autouse=True)
def no_internet(monkeypatch):
    """Refuse to resolve any host but the loopback, and keep proxies out of the way."""
    real_getaddrinfo = socket.getaddrinfo

    def loopback_only(host, *args, **kwargs):
        if host not in LOOPBACK:
            raise AssertionError(f"test tried to reach {host!r}; tests must not touch the internet")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    for variable in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(variable, "*")


@pytest.fixture(scope="module")
def bundled():
    return mnist.load_data()


def raw_bytes(name: str) -> bytes:
    return gzip.decompress((BUNDLED / f"{name}.gz").read_bytes())


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode ``array`` as an IDX file (the format's writer, kept to the tests)."""
    codes = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}
    code = codes[f"{array.dtype.kind}{array.dtype.itemsize}"]
    header = struct.pack(f">HBB{array.ndim}I", 0, code, array.ndim, *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


# -- the bundled data ----------------------------------------------------------------------


def test_bundled_arrays_are_shaped_like_keras(bundled):
    (x_train, y_train), (x_test, y_test) = bundled
    assert [a.shape for a in (x_train, y_train, x_test, y_test)] == [(60000, 28, 28), (60000,), (10000, 28, 28), (10000,)]
    for array in (x_train, y_train, x_test, y_test):
        assert array.dtype == np.uint8
        assert array.flags.writeable and array.flags.c_contiguous


def test_bundled_label_counts_and_pixel_statistics(bundled):
    (x_train, y_train), (x_test, y_test) = bundled
    assert np.bincount(y_train, minlength=10).tolist() == TRAIN_LABEL_COUNTS
    assert np.bincount(y_test, minlength=10).tolist() == TEST_LABEL_COUNTS
    # The published figures are rounded to 3 decimals.
    assert abs(x_train.mean(dtype=np.float64) - TRAIN_PIXEL_MEAN) <= 5e-4
    assert abs(x_train.std(dtype=np.float64) - TRAIN_PIXEL_STD) <= 5e-4
    assert x_train.min() == 0 and x_train.max() == 255


def test_load_from_a_directory_of_raw_and_gzipped_files(tmp_path, bundled):
    for name in mnist.FILES:
        shutil.copy(BUNDLED / f"{name}.gz", tmp_path)
    for name in ("train-labels-idx1-ubyte", SMALL):  # a mix: these two raw, the rest gzipped
        (tmp_path / name).write_bytes(raw_bytes(name))
        (tmp_path / f"{name}.gz").unlink()
    (x_train, y_train), (x_test, y_test) = mnist.load_data(tmp_path)
    (ex_train, ey_train), (ex_test, ey_test) = bundled
    for got, expected in ((x_train, ex_train), (y_train, ey_train), (x_test, ex_test), (y_test, ey_test)):
        np.testing.assert_array_equal(got, expected)


def test_a_damaged_file_in_a_directory_is_named(tmp_path):
    for name in mnist.FILES:
        shutil.copy(BUNDLED / f"{name}.gz", tmp_path)
    damaged = tmp_path / f"{SMALL}.gz"
    damaged.write_bytes(damaged.read_bytes()[:-100])
    with pytest.raises(IDXFormatError, match=SMALL):
        mnist.load_data(tmp_path)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.*download=True"):
        mnist.load_data(tmp_path)


def test_download_options_need_download_true(tmp_path):
    with pytest.raises(ValueError, match="download=True"):
        mnist.load_data(mirrors=["http://127.0.0.1:1/"])
    with pytest.raises(ValueError, match="download=True"):
        mnist.load_data(cache_dir=tmp_path)
    with pytest.raises(ValueError, match="not both"):
        mnist.load_data(tmp_path, download=True, cache_dir=tmp_path)


# -- the IDX reader ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
def test_read_idx_round_trip(tmp_path, dtype):
    rng = np.random.default_rng(sum(map(ord, dtype)))
    shape = tuple(rng.integers(1, 6, size=rng.integers(1, 5)))
    array = (rng.standard_normal(shape) * 100).astype(dtype)
    data = idx_bytes(array)
    (tmp_path / "a.idx").write_bytes(data)
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(data))
    for path in (tmp_path / "a.idx", tmp_path / "a.idx.gz"):
        got = read_idx(path)
        assert got.dtype == np.dtype(dtype) and got.dtype.isnative and got.shape == shape
        np.testing.assert_array_equal(got, array)


def _with_byte(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + bytes([value]) + data[offset + 1 :]


RAW_DAMAGE = {
    "empty": (lambda raw: b"", "truncated"),
    "bad magic": (lambda raw: _with_byte(raw, 0, 0x12), "bad magic number"),
    "unknown dtype": (lambda raw: _with_byte(raw, 2, 0x0A), "unknown dtype code 0x0A"),
    "no dimensions": (lambda raw: _with_byte(raw, 3, 0), "0 dimensions"),
    "truncated header": (lambda raw: raw[:6], "truncated header"),
    "truncated payload": (lambda raw: raw[:-1], r"truncated payload.*\(10000,\).*10000 bytes\), found only 9999"),
    "trailing bytes": (lambda raw: raw + b"\x00\x00", "2 bytes after the payload"),
    "gzip without .gz": (lambda raw: gzip.compress(raw), "looks like a gzip file"),
}


@pytest.mark.parametrize("damage", RAW_DAMAGE)
def test_a_damaged_raw_file_raises_a_clear_error(tmp_path, damage):
    corrupt, message = RAW_DAMAGE[damage]
    path = tmp_path / SMALL
    path.write_bytes(corrupt(raw_bytes(SMALL)))
    with pytest.raises(IDXFormatError, match=message) as caught:
        read_idx(path, sha256=mnist.SHA256[SMALL])
    assert str(path) in str(caught.value)


GZ_DAMAGE = {
    "truncated gzip": (lambda gz: gz[: len(gz) // 2], "gzip stream ends early"),
    "not gzip": (lambda gz: b"this is not a gzip stream at all", "bad gzip stream"),
    "flipped CRC": (lambda gz: _with_byte(gz, len(gz) - 6, gz[-6] ^ 0xFF), "bad gzip stream.*CRC"),
}


@pytest.mark.parametrize("damage", GZ_DAMAGE)
def test_a_damaged_gzip_file_raises_a_clear_error(tmp_path, damage):
    corrupt, message = GZ_DAMAGE[damage]
    path = tmp_path / f"{SMALL}.gz"
    path.write_bytes(corrupt((BUNDLED / f"{SMALL}.gz").read_bytes()))
    with pytest.raises(IDXFormatError, match=message) as caught:
        read_idx(path, sha256=mnist.SHA256[SMALL])
    assert str(path) in str(caught.value)


def test_any_flipped_byte_in_the_compressed_stream_is_caught(tmp_path):
    gz = (BUNDLED / f"{SMALL}.gz").read_bytes()
    rng = np.random.default_rng(7)
    for offset in rng.integers(10, len(gz), size=20):  # past the gzip header
        path = tmp_path / f"{SMALL}.gz"
        path.write_bytes(_with_byte(gz, int(offset), gz[offset] ^ (1 << int(rng.integers(8)))))
        with pytest.raises(DatasetFileError, match=SMALL):
            read_idx(path, sha256=mnist.SHA256[SMALL])


def test_a_valid_file_with_other_content_fails_the_checksum(tmp_path):
    raw = raw_bytes(SMALL)
    path = tmp_path / SMALL
    path.write_bytes(_with_byte(raw, 100, (raw[100] + 1) % 10))  # still a valid label file
    assert read_idx(path).shape == (10000,)
    with pytest.raises(ChecksumError, match=f"{path}: sha256 mismatch.*expected {mnist.SHA256[SMALL]}"):
        read_idx(path, sha256=mnist.SHA256[SMALL])


# -- downloading from mirrors --------------------------------------------------------------


class MirrorServer:
    """A local HTTP server whose subdirectories act as mirrors; it logs every request path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        requests = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def mirror(self, subdirectory: str) -> str:
        (self.root / subdirectory).mkdir(exist_ok=True)
        return f"http://127.0.0.1:{self.server.server_address[1]}/{subdirectory}/"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    mirror_server = MirrorServer(root)
    good = root / "good"
    good.mkdir()
    for name in mnist.FILES:
        shutil.copy(BUNDLED / f"{name}.gz", good)
    # Every file on the "bad" mirror is wrong in a different way.
    bad = root / "bad"
    bad.mkdir()
    shutil.copy(BUNDLED / "t10k-images-idx3-ubyte.gz", bad / "train-images-idx3-ubyte.gz")  # valid IDX, other data
    (bad / "train-labels-idx1-ubyte.gz").write_bytes((BUNDLED / "train-labels-idx1-ubyte.gz").read_bytes()[:1000])
    (bad / "t10k-images-idx3-ubyte.gz").write_bytes(b"<html>Not Found</html>")
    raw = raw_bytes(SMALL)
    (bad / f"{SMALL}.gz").write_bytes(gzip.compress(_with_byte(raw, 100, (raw[100] + 1) % 10)))
    yield mirror_server
    mirror_server.close()


@pytest.fixture
def refused_mirror():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/"  # nothing listens there any more


def leftover_partials(directory: Path) -> list[Path]:
    return list(directory.glob(".partial-*"))


def test_download_skips_failing_mirrors_and_reuses_the_cache(tmp_path, server, refused_mirror, bundled, monkeypatch):
    cache = tmp_path / "cache"
    mirrors = [refused_mirror, server.mirror("missing"), server.mirror("good")]
    (x_train, y_train), (x_test, y_test) = mnist.load_data(download=True, cache_dir=cache, mirrors=mirrors)

    (ex_train, ey_train), (ex_test, ey_test) = bundled
    for got, expected in ((x_train, ex_train), (y_train, ey_train), (x_test, ex_test), (y_test, ey_test)):
        np.testing.assert_array_equal(got, expected)
    assert sorted(server.requests) == sorted(f"/{mirror}/{name}.gz" for mirror in ("missing", "good") for name in mnist.FILES)
    assert sorted(p.name for p in (cache / "mnist").iterdir()) == sorted(f"{name}.gz" for name in mnist.FILES)

    # Second load, finding the cache through the environment variable: no request at all.
    server.requests.clear()
    monkeypatch.setenv(CACHE_ENV_VAR, str(cache))
    (x_train_again, _), _ = mnist.load_data(download=True, mirrors=mirrors)
    assert server.requests == []
    np.testing.assert_array_equal(x_train_again, ex_train)


def test_a_corrupted_mirror_is_rejected_for_the_next_one(tmp_path, server, bundled):
    cache = tmp_path / "cache"
    _, (x_test, y_test) = mnist.load_data(download=True, cache_dir=cache, mirrors=[server.mirror("bad"), server.mirror("good")])
    np.testing.assert_array_equal(x_test, bundled[1][0])
    np.testing.assert_array_equal(y_test, bundled[1][1])
    for name in mnist.FILES:
        assert server.requests.index(f"/bad/{name}.gz") < server.requests.index(f"/good/{name}.gz")
    assert leftover_partials(cache / "mnist") == []


def test_when_every_mirror_fails_the_error_lists_each_one(tmp_path, server, refused_mirror):
    cache = tmp_path / "cache"
    mirrors = [refused_mirror, server.mirror("missing"), server.mirror("bad")]
    with pytest.raises(DownloadError) as caught:
        mnist.load_data(download=True, cache_dir=cache, mirrors=mirrors)
    message = str(caught.value)
    name = "train-images-idx3-ubyte.gz"
    assert f"could not download {name} from any of 3 mirror(s)" in message
    assert f"{refused_mirror}{name}: unreachable" in message
    assert f"{server.mirror('missing')}{name}: HTTP 404" in message
    assert f"{server.mirror('bad')}{name}: ChecksumError: {name}: sha256 mismatch" in message
    assert [url for url, _ in caught.value.attempts] == [mirror + name for mirror in mirrors]
    # The bad download was deleted; nothing unverified is left in the cache.
    assert list((cache / "mnist").iterdir()) == []


@pytest.mark.parametrize("name", [n for n in mnist.FILES if n != "t10k-images-idx3-ubyte"])
def test_each_kind_of_bad_download_is_rejected(tmp_path, server, name):
    destination = tmp_path / "cache" / f"{name}.gz"
    with pytest.raises(DownloadError, match=r"DatasetFileError|IDXFormatError|ChecksumError") as caught:
        fetch([server.mirror("bad") + f"{name}.gz"], destination, lambda path: read_idx(path, sha256=mnist.SHA256[name]))
    assert len(caught.value.attempts) == 1
    assert not destination.exists() and leftover_partials(destination.parent) == []


def test_an_html_page_instead_of_the_file_is_rejected(tmp_path, server):
    name = "t10k-images-idx3-ubyte"
    destination = tmp_path / f"{name}.gz"
    with pytest.raises(DownloadError, match="bad gzip stream"):
        fetch([server.mirror("bad") + f"{name}.gz"], destination, lambda path: read_idx(path, sha256=mnist.SHA256[name]))


def test_a_damaged_cached_file_is_downloaded_again(tmp_path, server, bundled):
    directory = tmp_path / "cache" / "mnist"
    directory.mkdir(parents=True)
    for name in mnist.FILES:
        shutil.copy(BUNDLED / f"{name}.gz", directory)
    (directory / f"{SMALL}.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.warns(RuntimeWarning, match=f"{SMALL}.gz.*downloading it again"):
        _, (_, y_test) = mnist.load_data(download=True, cache_dir=tmp_path / "cache", mirrors=[server.mirror("good")])
    assert server.requests == [f"/good/{SMALL}.gz"]
    np.testing.assert_array_equal(y_test, bundled[1][1])


def test_path_is_the_download_directory_with_download_true(tmp_path, server):
    target = tmp_path / "my-mnist"
    mnist.load_data(target, download=True, mirrors=[server.mirror("good")])
    assert sorted(p.name for p in target.iterdir()) == sorted(f"{name}.gz" for name in mnist.FILES)


def test_default_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "nn_from_scratch"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "nn_from_scratch"
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"


def test_fetch_rejects_unsupported_schemes(tmp_path):
    with pytest.raises(ValueError, match="unsupported URL scheme 'ftp'"):
        fetch(["ftp://127.0.0.1/x.gz"], tmp_path / "x.gz", lambda path: None)
