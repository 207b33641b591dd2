"""A fresh student notebook runs top to bottom: unfinished checks say "not done yet" and
demonstrations that need an unfinished exercise say which, instead of stopping the run
(JupyterLab's Run All drops the rest of its queue at the first error)."""


import nbformat
import pytest
from nbclient import NotebookClient

from labkit.grading.release import release_notebook
from tests.support.paths import LABS, NOTEBOOKS


@pytest.mark.parametrize("lab", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_a_released_lab_runs_to_its_last_cell(lab, tmp_path):
    released = release_notebook(nbformat.read(lab, as_version=4))
    NotebookClient(released, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(LABS)}}).execute()
    code = [cell for cell in released.cells if cell.cell_type == "code"]
    assert code[-1].execution_count is not None
    checks = [cell for cell in code if "check" in cell.metadata.get("tags", [])]
    assert all("not done yet" in "".join(o.get("text", "") for o in cell.outputs)
               for cell in checks), lab.name
