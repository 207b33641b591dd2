"""The similarity report on made-up submissions of lab 00 (no kernel runs).

Five students write their own code for both exercises; ben copied ann's
``get_model_size`` with every variable renamed and two lines swapped; fay pasted the
instructor's solutions.
"""

import csv
import inspect

import nbformat
import pytest

from labkit import measure
from labkit.cli import main
from labkit.grading.similarity import LABKIT, SOLUTION, compare, similarity_report
from tests.support.lab_submissions import LAB_00, exercises, submission

SPARSITY, SIZE = list(exercises())
SPARSITY_HEAD = ('def get_sparsity(tensor: torch.Tensor) -> float:\n'
                 '    """Fraction of zero elements of ``tensor``, a float in [0, 1]."""\n')
SIZE_HEAD = ('def get_model_size(model: torch.nn.Module, data_width: int = 32,\n'
             '                   count_nonzero_only: bool = False) -> int:\n'
             '    """Size of ``model``\'s parameters in bits."""\n')
ANN_SIZE = """\
    total = 0
    for parameter in model.parameters():
        if count_nonzero_only:
            total += int((parameter != 0).sum())
        else:
            total += parameter.numel()
    bits = total * data_width
    return bits
"""
BEN_SIZE = """\
    n = 0
    for w in model.parameters():
        if count_nonzero_only:
            n += int((w != 0).sum())
        else:
            n += w.numel()
    size = n * data_width
    return size
"""
CODE = {
    "ann": ("    zeros = (tensor == 0).sum().item()\n    return zeros / tensor.numel()\n",
            ANN_SIZE),
    "ben": ("    total = tensor.numel()\n    zeros = (tensor == 0).sum().item()\n"
            "    return zeros / total\n", BEN_SIZE),
    "cara": ("    flat = tensor.flatten().tolist()\n"
             "    return sum(1 for x in flat if x == 0) / len(flat)\n",
             "    weights = list(model.state_dict().values())\n"
             "    counts = [w.count_nonzero().item() if count_nonzero_only else w.numel()\n"
             "              for w in weights if w.is_floating_point()]\n"
             "    return data_width * sum(counts)\n"),
    "dan": ("    nonzero = torch.count_nonzero(tensor)\n"
            "    return float(1 - nonzero / tensor.numel())\n",
            "    import numpy as np\n"
            "    arrays = [p.detach().numpy() for p in model.parameters()]\n"
            "    if count_nonzero_only:\n"
            "        elements = sum(np.count_nonzero(a) for a in arrays)\n"
            "    else:\n        elements = sum(a.size for a in arrays)\n"
            "    return int(elements) * data_width\n"),
    "eve": ("    mask = tensor.eq(0)\n    return mask.float().mean().item()\n",
            "    result = 0\n    params = model.parameters()\n    while True:\n        try:\n"
            "            p = next(params)\n        except StopIteration:\n            break\n"
            "        result += p.count_nonzero().item() if count_nonzero_only "
            "else p.nelement()\n    return result * data_width\n"),
}
OWN = set(CODE) - {"ben"}


def write_class(root, students=CODE):
    root.mkdir(parents=True, exist_ok=True)
    for name, (sparsity, size) in students.items():
        nbformat.write(submission(**{SPARSITY: SPARSITY_HEAD + sparsity,
                                     SIZE: SIZE_HEAD + size}), root / f"{name}__00_baseline.ipynb")
    nbformat.write(submission(**exercises()), root / "fay__00_baseline.ipynb")
    nbformat.write(submission(), root / "gus__00_baseline.ipynb")  # answered nothing
    return root


@pytest.fixture
def labs(tmp_path):
    folder = tmp_path / "labs"
    folder.mkdir()
    (folder / LAB_00.name).write_bytes(LAB_00.read_bytes())
    return folder


def test_a_disguised_copy_ranks_above_every_independent_pair(tmp_path, labs):
    matches, ignored = compare(write_class(tmp_path / "subs"), labs)
    assert ignored == []
    copied = next(m for m in matches if {m.first, m.second} == {"ann", "ben"} and m.cell == SIZE)
    independent = [m for m in matches if {m.first, m.second} <= OWN]
    assert copied.similarity > 0.9
    assert all(copied.similarity > m.similarity for m in independent)
    assert "gus" not in {m.first for m in matches}


def test_a_pasted_solution_is_flagged_against_it_and_counts_for_nothing_between_students(
        tmp_path, labs):
    matches, _ = compare(write_class(tmp_path / "subs"), labs)
    against_solution = {m.cell: m for m in matches if (m.first, m.second) == ("fay", SOLUTION)}
    assert set(against_solution) == {SPARSITY, SIZE}
    assert all(m.similarity == 1 for m in against_solution.values())
    assert not [m for m in matches if "fay" in (m.first, m.second)
                and m.second != SOLUTION and not m.second.startswith("(labkit")]


def test_labkits_published_reference_pasted_in_is_flagged_against_it(tmp_path, labs):
    """Copying labkit's source of the exercise passes the checks where labkit is absent,
    so the report compares every answer with it."""
    source = inspect.getsource(measure.get_sparsity)
    body = source.split('"""', 2)[2]
    root = write_class(tmp_path / "subs", {"hal": ("    from labkit.validation import "
                                                   "check_tensor" + body, ANN_SIZE)})
    matches, _ = compare(root, labs)
    pasted = next(m for m in matches if m.first == "hal" and m.cell == SPARSITY
                  and m.second == LABKIT.format("labkit.measure.get_sparsity"))
    assert pasted.similarity >= 0.5  # flagged at the report's default threshold
    assert not any(m.first == "ann" and m.cell == SPARSITY and m.second.startswith("(labkit")
                   and m.similarity > 0.5 for m in matches)


def test_report_writes_html_side_by_side_and_a_csv_of_every_pair(tmp_path, labs):
    out = tmp_path / "similarity.html"
    assert main(["similarity", str(write_class(tmp_path / "subs")), "--labs", str(labs),
                 "--out", str(out)]) == 0
    page = out.read_text()
    assert "00_baseline, cell d1e691cc: ann and ben, 100%" in page
    assert "<mark>" in page and "fay and (instructor solution)" in page
    assert "<script" not in page
    with open(tmp_path / "similarity.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert rows[0]["flagged"] == "True"
    assert {(r["student_a"], r["student_b"]) for r in rows if r["flagged"] == "True"} == {
        ("ann", "ben"), ("fay", SOLUTION)}
    assert [float(r["similarity"]) for r in rows] == sorted(
        (float(r["similarity"]) for r in rows), reverse=True)


def test_unreadable_submissions_are_left_out_with_a_note(tmp_path, labs):
    subs = write_class(tmp_path / "subs", {"ann": CODE["ann"]})
    (subs / "zed__00_baseline.ipynb").write_text('{"cells": [')
    _, ignored = compare(subs, labs)
    assert len(ignored) == 1 and "zed__00_baseline.ipynb: not a readable notebook" in ignored[0]


def test_bad_input_is_refused_and_nothing_written(tmp_path, labs, capsys):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "similarity.html"
    assert main(["similarity", str(tmp_path / "empty"), "--labs", str(labs),
                 "--out", str(out)]) == 1
    assert "labkit similarity: submissions must hold notebooks of the labs" in \
        capsys.readouterr().err
    subs = write_class(tmp_path / "subs", {"ann": CODE["ann"]})
    for options, message in (({"threshold": 1.5}, r"threshold must be in \[0, 1\], got 1.5"),
                             ({"noise": 0}, "noise must be an int >= 1, got 0"),
                             ({"window": 2.0}, "window must be an int >= 1, got 2.0")):
        with pytest.raises(ValueError, match=message):
            similarity_report(subs, labs, out, **options)
    with pytest.raises(ValueError, match="out must be an .html file"):
        similarity_report(subs, labs, tmp_path / "similarity.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "labs", "subs"]
