"""The grading tests' fixtures: a labs folder holding the tiny lab."""

from pathlib import Path

import nbformat
import pytest

from tests.support.tinylab import TINY, tiny_instructor


@pytest.fixture
def tiny_labs(tmp_path) -> Path:
    """A labs folder holding the tiny lab (:mod:`tinylab`)."""
    labs = tmp_path / "labs"
    labs.mkdir()
    nbformat.write(tiny_instructor(), labs / f"{TINY}.ipynb")
    return labs
