"""Settings shared by the whole suite."""

from __future__ import annotations

import os

import pytest

# Keras 3 picks its backend once, at import. The Keras checks feed it torch tensors, so they run
# on the torch backend whatever else is installed (TensorFlow, JAX) or the shell chose.
os.environ["KERAS_BACKEND"] = "torch"

# The library's default BLAS thread count follows the machine's load (threads.adapt), so it could
# change between the two runs that a bit-identical check compares; those checks need one fixed
# count, as a user who wants reproducible runs sets one. OPENBLAS_NUM_THREADS at one thread per
# core -- OpenBLAS's own default -- turns adapting off without changing the count.
# tests/test_threads.py checks adapt with the variable removed.
os.environ.setdefault("OPENBLAS_NUM_THREADS", str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                                  else os.cpu_count() or 1))


def keras_or_skip():
    """``keras`` on its torch backend, or a skip whose reason pytest reports (``-ra``)."""
    pytest.importorskip("torch", reason="the Keras checks need torch (Keras' torch backend)")
    keras = pytest.importorskip("keras", reason="keras is not installed (pip install -e '.[test]')")
    if keras.backend.backend() != "torch":  # imported before this conftest set the backend
        pytest.skip(f"keras runs on its {keras.backend.backend()!r} backend, the checks need 'torch'")
    return keras


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """The reference computations in the tests are tiny: torch's thread pool costs far more
    than it saves there (13x slower on a busy 2-core machine). Benchmarks set their own."""
    try:
        import torch
    except ImportError:  # torch is an optional extra; tests that need it skip or fail on their own
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
