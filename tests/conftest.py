"""Settings shared by the whole suite."""

from __future__ import annotations

import pytest


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
