"""Shared fixtures: a private model cache, and the digits splits."""

import pytest

from labkit import data


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Every test uses a model cache of its session, never the user's."""
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path_factory.getbasetemp() / "labkit-cache"))


@pytest.fixture(scope="session")
def digits():
    return data.load("digits")
