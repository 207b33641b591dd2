"""Shared fixtures: a private model cache and the digits splits.

With ``LABKIT_REQUIRE_SANDBOX=1`` (as CI sets it) the run stops at once when the bwrap
sandbox cannot start here, instead of skipping the sandbox tests.
"""

import os

import pytest

from labkit import data


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
