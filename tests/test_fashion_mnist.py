"""Fashion-MNIST: bundled, shaped like keras.datasets.fashion_mnist, checked against the
published figures (shared/README.md: pixel mean 72.940, std 90.021; 6,000 images per class),
and downloadable through the machinery it shares with MNIST (a local server on 127.0.0.1)."""

from __future__ import annotations

import functools
import http.server
import shutil
import socket
import threading

import numpy as np
import pytest

from nn_from_scratch.datasets import ChecksumError, fashion_mnist, mnist

TRAIN_PIXEL_MEAN, TRAIN_PIXEL_STD = 72.940, 90.021


@pytest.fixture(scope="module")
def bundled():
    return fashion_mnist.load_data()


def test_shapes_and_dtypes_are_those_of_keras(bundled):
    (x_train, y_train), (x_test, y_test) = bundled
    assert [a.shape for a in (x_train, y_train, x_test, y_test)] == [(60000, 28, 28), (60000,), (10000, 28, 28), (10000,)]
    for array in (x_train, y_train, x_test, y_test):
        assert array.dtype == np.uint8 and array.flags.writeable and array.flags.c_contiguous


def test_label_counts_and_pixel_statistics_are_the_published_ones(bundled):
    (x_train, y_train), (x_test, y_test) = bundled
    assert np.bincount(y_train, minlength=10).tolist() == [6000] * 10
    assert np.bincount(y_test, minlength=10).tolist() == [1000] * 10
    assert abs(x_train.mean(dtype=np.float64) - TRAIN_PIXEL_MEAN) <= 5e-4
    assert abs(x_train.std(dtype=np.float64) - TRAIN_PIXEL_STD) <= 5e-4
    assert len(fashion_mnist.CLASS_NAMES) == 10


def test_it_is_not_mnist(bundled):
    # The two share their file names: a mix-up would load silently without the checksums.
    assert set(fashion_mnist.SHA256.values()).isdisjoint(mnist.SHA256.values())
    with pytest.raises(ChecksumError, match="train-images-idx3-ubyte.*sha256 mismatch"):
        fashion_mnist.load_data(mnist.bundled_dir())


def test_download_from_a_mirror(tmp_path, monkeypatch, bundled):
    real_getaddrinfo = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: real_getaddrinfo(host, *a, **k) if host == "127.0.0.1" else pytest.fail(host))
    monkeypatch.setenv("no_proxy", "*")
    root = tmp_path / "www" / "fashion"
    root.mkdir(parents=True)
    for name in fashion_mnist.FILES:
        shutil.copy(fashion_mnist.bundled_dir() / f"{name}.gz", root)
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path / "www")))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        mirror = f"http://127.0.0.1:{server.server_address[1]}/fashion/"
        (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data(
            download=True, cache_dir=tmp_path / "cache", mirrors=[mirror], timeout=10, deadline=60
        )
    finally:
        server.shutdown()
        server.server_close()
    assert sorted(p.name for p in (tmp_path / "cache" / "fashion_mnist").iterdir()) == sorted(f"{n}.gz" for n in fashion_mnist.FILES)
    for got, expected in zip((x_train, y_train, x_test, y_test), (*bundled[0], *bundled[1])):
        np.testing.assert_array_equal(got, expected)
