"""The tiny lab the grading tests grade: a setup cell, two exercises each with its check
(``agp_sparsity``, 2 points; ``get_num_channels_to_keep``, 1 point) and one question,
small enough that a submission grades in seconds. Exercise cells are named ``cell_2``
and ``cell_4`` in the sources that :func:`student_copy` takes."""

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from labkit.grading.release import release_notebook

TINY = "01_tiny"
SETUP = "from labkit.grading import checks"
AGP = ("def agp_sparsity(t, n, s_initial, s_final):\n    ### BEGIN SOLUTION\n"
       "    return s_final + (s_initial - s_final) * (1 - t / n) ** 3\n    ### END SOLUTION")
KEEP = ("def get_num_channels_to_keep(channels, prune_ratio):\n    ### BEGIN SOLUTION\n"
        "    return max(1, round((1 - prune_ratio) * channels))\n    ### END SOLUTION")


def checked(source: str, output: str, count: int, **metadata) -> nbformat.NotebookNode:
    """A check cell as the instructor's executed notebook holds it."""
    return new_code_cell(source, execution_count=count,
                         metadata={"tags": ["check", "nbval-check-output"], **metadata},
                         outputs=[new_output("stream", name="stdout", text=output)])


def tiny_instructor() -> nbformat.NotebookNode:
    """Setup, two exercises each with its check (2 points and 1 point), one question."""
    cells = [
        new_code_cell(SETUP, execution_count=1),
        new_markdown_cell("## The AGP schedule"),
        new_code_cell(AGP, execution_count=2, metadata={"tags": ["exercise"]}),
        checked("checks.check_agp_sparsity(agp_sparsity)", "agp_sparsity: 8/8 cases passed\n",
                3, points=2),
        new_code_cell(KEEP, execution_count=4, metadata={"tags": ["exercise"]}),
        checked("checks.check_get_num_channels_to_keep(get_num_channels_to_keep)",
                "get_num_channels_to_keep: 7/7 cases passed\n", 5),
        new_markdown_cell("## Question\nWhy does AGP prune fast early?"),
        new_markdown_cell("Redundancy is highest at first.", metadata={"tags": ["question"]}),
    ]
    for number, cell in enumerate(cells):
        cell.id = f"cell-{number}"
    return new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})


def student_copy(instructor, **sources) -> nbformat.NotebookNode:
    """The released notebook with the cells named ``cell_<n>`` given new sources."""
    notebook = release_notebook(instructor)
    for cell in notebook.cells:
        key = cell.id.replace("-", "_")
        if key in sources:
            cell.source = sources[key]
    return notebook


def solutions(instructor) -> dict[str, str]:
    """The instructor's exercise sources, as a student who solved everything has them."""
    return {cell.id.replace("-", "_"): cell.source for cell in instructor.cells
            if "exercise" in cell.metadata.get("tags", [])}
