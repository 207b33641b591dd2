"""The search tests run on one thread."""

import pytest

from labkit.training import torch_threads


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks run fastest on one thread (see labkit.training.torch_threads)."""
    with torch_threads(1):
        yield
