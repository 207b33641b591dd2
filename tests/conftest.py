"""Shared fixtures: a private model cache, the digits splits, and the tiny lab.

With ``LABKIT_REQUIRE_SANDBOX=1`` (as CI sets it) the run stops at once when the bwrap
sandbox cannot start here, instead of skipping the sandbox tests.
"""

import os
from pathlib import Path

import nbformat
import pytest

from labkit import data
from tests.support.tinylab import TINY, tiny_instructor


def pytest_sessionstart(session):
    if os.environ.get("LABKIT_REQUIRE_SANDBOX") == "1":
        from labkit.grading import sandbox

        if reason := sandbox.probe():
            pytest.exit(f"the sandbox tests must run, and the bwrap sandbox cannot: {reason}",
                        returncode=3)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Every test uses a model cache of its session, never the user's."""
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path_factory.getbasetemp() / "labkit-cache"))


@pytest.fixture(scope="session")
def digits():
    return data.load("digits")


@pytest.fixture
def tiny_labs(tmp_path) -> Path:
    """A labs folder holding the tiny lab (:mod:`tinylab`)."""
    labs = tmp_path / "labs"
    labs.mkdir()
    nbformat.write(tiny_instructor(), labs / f"{TINY}.ipynb")
    return labs
