"""Progress bars in a notebook leave no widget view behind once they close."""

import nbformat
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def test_a_closed_progress_bar_leaves_no_widget_view_in_the_saved_notebook(tmp_path):
    notebook = new_notebook(cells=[
        new_code_cell("from labkit.training import ProgressBar\nprint('before')\n"
                      "for _ in ProgressBar(range(3), desc='train', leave=False):\n    pass\n"
                      "print('after')"),
        new_code_cell("for _ in ProgressBar(range(2), desc='kept', leave=True):\n    pass"),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}})
    NotebookClient(notebook, timeout=120, store_widget_state=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    closed, kept = notebook.cells
    assert not any(WIDGET_VIEW in output.get("data", {}) for output in closed.outputs)
    assert "".join(o.get("text", "") for o in closed.outputs) == "before\nafter\n"
    [view] = [o for o in kept.outputs if WIDGET_VIEW in o.get("data", {})]
    state = notebook.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]
    assert view.data[WIDGET_VIEW]["model_id"] in state
    nbformat.validate(notebook)
