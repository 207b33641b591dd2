"""The repository's folders, for a test module in any folder of the tests."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LABS = ROOT / "labs"
NOTEBOOKS = sorted(LABS.glob("*.ipynb"))
"""The instructor notebooks of every lab, in lab order."""
