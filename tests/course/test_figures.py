"""The chapter figures are reproducible: drawing them again gives the committed files."""

import subprocess
import sys

from tests.support.paths import ROOT

FIGURES = ROOT / "book" / "figures"


def test_the_chapter_figures_redraw_byte_for_byte(tmp_path):
    subprocess.run([sys.executable, str(FIGURES / "make_figures.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    committed = sorted(path.name for path in (FIGURES / "generated").glob("*.svg"))
    drawn = sorted(path.name for path in tmp_path.glob("*.svg"))
    assert drawn == committed
    changed = [name for name in drawn
               if (tmp_path / name).read_bytes() != (FIGURES / "generated" / name).read_bytes()]
    assert not changed, f"redrawn figures differ from the committed ones: {changed}"
