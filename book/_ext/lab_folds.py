"""Fold what a reader should try before reading: solutions and model answers.

A lab notebook marks its exercise code cells with the tags ``exercise`` and ``hide-input``
and its model answers as markdown cells tagged ``question`` (see
:mod:`labkit.grading.release`). When Sphinx reads a notebook, this extension

- labels the fold of every exercise cell "Show solution" / "Hide solution" (MyST-NB's
  per-cell ``code_prompt_show`` and ``code_prompt_hide``);
- wraps every model answer in a closed "Model answer" dropdown (sphinx-design), since
  MyST-NB renders a markdown cell's text without its tags.

A released student notebook holds placeholders instead: its exercise cells are shown
open (there is no solution to hide) and its question cells are left as they are. A figure
that depends on the student's code has no stored output there; its cell gets a note in
its place, so the figure keeps its number, caption and the chapters' references to it.
"""

from __future__ import annotations

import json

from sphinx.application import Sphinx

from labkit.grading.release import ANSWER_PLACEHOLDER, CODE_PLACEHOLDER, tags

FENCE = "`" * 6
SOLUTION_PROMPTS = {"code_prompt_show": "Show solution", "code_prompt_hide": "Hide solution"}
FIGURE_TO_COME = "*This figure appears when you run the lab with your solutions.*"


def fold_model_answer(text: str) -> str:
    """``text`` inside a closed dropdown titled "Model answer"."""
    return (f"{FENCE}{{dropdown}} Model answer\n:class-container: model-answer\n\n"
            f"{text.strip()}\n{FENCE}\n")


def fold_cells(notebook: dict) -> dict:
    """``notebook`` (nbformat JSON) with its solutions labelled and its answers folded."""
    for cell in notebook["cells"]:
        source = "".join(cell["source"])
        cell_tags = tags(cell)
        if cell["cell_type"] == "markdown" and "question" in cell_tags:
            if source.strip() != ANSWER_PLACEHOLDER:
                cell["source"] = fold_model_answer(source)
        elif cell["cell_type"] == "code" and "exercise" in cell_tags:
            metadata = cell.setdefault("metadata", {})
            if CODE_PLACEHOLDER[1] in source:
                metadata["tags"] = [tag for tag in metadata.get("tags", [])
                                    if tag != "hide-input"]
            else:
                metadata.setdefault("mystnb", {}).update(SOLUTION_PROMPTS)
        elif (cell["cell_type"] == "code" and not cell.get("outputs")
              and cell.get("metadata", {}).get("mystnb", {}).get("figure")):
            cell["outputs"] = [{"output_type": "display_data", "metadata": {},
                                "data": {"text/markdown": FIGURE_TO_COME}}]
    return notebook


def on_source_read(app: Sphinx, docname: str, source: list[str]) -> None:
    if str(app.env.doc2path(docname)).endswith(".ipynb"):
        source[0] = json.dumps(fold_cells(json.loads(source[0])), ensure_ascii=False)


def setup(app: Sphinx) -> dict:
    app.connect("source-read", on_source_read)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
