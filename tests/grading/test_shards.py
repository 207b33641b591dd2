"""Shards: the stable hash, partial tables and their merge, the Slurm and CI examples.

The merge is tested on a made-up class of grades (no kernel); one test runs the body of
``examples/slurm/grade.sbatch`` as a job array would, on two real submissions of lab 00.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from benchmarks.grading import markdown, write_class
from labkit.cli import main
from labkit.grading.grade import grade_shard
from labkit.grading.records import Answer, CheckResult, LabGrade, Shard, shard_of
from labkit.grading.submissions import find_submissions
from labkit.grading.tables import (
    class_digest,
    labs_digest,
    merge_parts,
    part_path,
    table_paths,
    write_part,
    write_tables,
)
from tests.support.lab_submissions import LAB_00, exercises, submission, wrong_sparsity
from tests.support.paths import ROOT

SBATCH = ROOT / "examples" / "slurm" / "grade.sbatch"
WORKFLOW = ROOT / "examples" / "ci-matrix" / "grade.yml"
LABS_SHA = "a" * 64
CLASS_SHA = "c" * 64


def made_up_class(students: int = 23) -> list[LabGrade]:
    """Two labs per student, with passes, failures, notes and answers of every kind."""
    grades = []
    for number in range(students):
        student = f"student-{number:02d}"
        for lab in ("00_baseline", "01_granularity"):
            checks = [CheckResult(f"check_{lab}_{c}", (number + c) % 3 != 0, 1 + c,
                                  "" if (number + c) % 3 else f"case {c}, failed; got 0")
                      for c in range(3)]
            answers = [Answer("q-1", "Why, \"really\"?", f"Because {number},\nline two")]
            notes = ["not submitted"] if number % 7 == 0 else []
            grades.append(LabGrade(student, lab, checks, answers, notes))
    return grades


def write_shards(grades, folder: Path, count: int, labs_sha=LABS_SHA, class_sha=CLASS_SHA):
    """Each shard's part of ``grades``, as ``labkit grade --shard`` writes it."""
    outs = []
    for index in range(1, count + 1):
        shard = Shard(index, count)
        out = folder / f"grades-{index}.csv"
        write_part([g for g in grades if shard.holds(g.student)], out, shard, "labs",
                   labs_sha, class_sha)
        outs.append(out)
    return outs


def tables(out: Path) -> list[bytes]:
    return [path.read_bytes() for path in table_paths(out)]


# --- the stable hash -------------------------------------------------------------------


def test_shard_of_is_a_fixed_sha256_of_the_student_id():
    """Pinned values: another process, machine or Python must give the same shards."""
    assert [shard_of(s, 4) for s in ("alice", "bob", "carol", "dave")] == [4, 3, 3, 4]
    assert subprocess.run(
        [sys.executable, "-c", "from labkit.grading.records import shard_of; "
                               "print(shard_of('alice', 4))"],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "7"},
    ).stdout.strip() == "4"


def test_every_student_is_in_exactly_one_shard_and_shards_are_balanced():
    students = [f"s{number}" for number in range(2000)]
    for count in (1, 2, 3, 8):
        sizes = [sum(Shard(index, count).holds(s) for s in students)
                 for index in range(1, count + 1)]
        assert sum(sizes) == len(students)
        assert min(sizes) > 0.8 * len(students) / count


def test_an_added_student_moves_no_one():
    before = {f"s{n}": shard_of(f"s{n}", 5) for n in range(50)}
    assert {s: shard_of(s, 5) for s in before} == before


@pytest.mark.parametrize("spec", ["3/2", "0/4", "a/b", "1/0", "2", "-1/3", "1/2/3", ""])
def test_bad_shard_specs_are_refused_naming_the_spec(spec):
    with pytest.raises(ValueError, match=f"shard must be I/N .*got {spec!r}"):
        Shard.parse(spec)


def test_shard_parses_and_prints_its_spec():
    assert Shard.parse(" 2 / 4 ") == Shard(2, 4)
    assert str(Shard(2, 4)) == "2/4"
    with pytest.raises(ValueError, match="shard index must be an int >= 1, got True"):
        Shard(True, 2)
    with pytest.raises(ValueError, match="count must be an int >= 1, got 0"):
        shard_of("alice", 0)


# --- merging the parts -----------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 3, 5, 40])
def test_merged_shards_give_exactly_the_unsharded_tables(tmp_path, count):
    grades = made_up_class()
    write_tables(grades, tmp_path / "unsharded.csv")
    parts = write_shards(grades, tmp_path, count)

    merge_parts(list(reversed(parts)), tmp_path / "merged.csv")

    assert tables(tmp_path / "merged.csv") == tables(tmp_path / "unsharded.csv")


def test_merge_takes_the_part_manifests_too(tmp_path):
    grades = made_up_class()
    write_tables(grades, tmp_path / "unsharded.csv")
    parts = write_shards(grades, tmp_path, 3)
    merge_parts([part_path(p) for p in parts], tmp_path / "merged.csv")
    assert tables(tmp_path / "merged.csv") == tables(tmp_path / "unsharded.csv")


def refused(parts, out: Path, message: str) -> None:
    """``merge_parts`` raises ``message`` and writes none of the three tables."""
    with pytest.raises(ValueError, match=message):
        merge_parts(parts, out)
    assert not any(path.exists() for path in table_paths(out))


def test_merge_refuses_a_missing_shard(tmp_path):
    parts = write_shards(made_up_class(), tmp_path, 4)
    refused(parts[:1] + parts[2:], tmp_path / "merged.csv",
            r"parts: shards 2/4 missing \(given: 1/4, 3/4, 4/4\)")


def test_merge_refuses_a_shard_given_twice(tmp_path):
    parts = write_shards(made_up_class(), tmp_path, 2)
    copy = tmp_path / "copy"
    copy.mkdir()
    [again] = write_shards(made_up_class(), copy, 2)[:1]
    refused([*parts, again], tmp_path / "merged.csv", "parts: shard 1/2 given twice")


def test_merge_refuses_parts_of_different_shard_counts(tmp_path):
    (tmp_path / "two").mkdir()
    (tmp_path / "three").mkdir()
    two = write_shards(made_up_class(), tmp_path / "two", 2)
    three = write_shards(made_up_class(), tmp_path / "three", 3)
    refused([two[0], *three], tmp_path / "merged.csv", "graded with different shard counts")


def test_merge_refuses_parts_from_different_labs_folders(tmp_path):
    grades = made_up_class()
    first = write_shards(grades, tmp_path, 2)[0]
    other = tmp_path / "other"
    other.mkdir()
    second = write_shards(grades, other, 2, labs_sha="b" * 64)[1]
    refused([first, second], tmp_path / "merged.csv", "graded with different labs folders")


def test_merge_refuses_parts_of_different_classes(tmp_path):
    grades = made_up_class()
    first = write_shards(grades, tmp_path, 2)[0]
    other = tmp_path / "other"
    other.mkdir()
    second = write_shards(grades, other, 2, class_sha="d" * 64)[1]
    refused([first, second], tmp_path / "merged.csv", "graded with different submission folders")


def test_merge_refuses_a_part_holding_another_shards_student(tmp_path):
    parts = write_shards(made_up_class(), tmp_path, 2)
    manifest = json.loads(part_path(parts[0]).read_text())
    manifest["index"], manifest["shard"] = 2, "2/2"
    part_path(parts[0]).write_text(json.dumps(manifest))
    parts[1].rename(tmp_path / "spare.csv")
    part_path(parts[1]).unlink()
    manifest["index"], manifest["shard"], manifest["grades"] = 1, "1/2", []
    (tmp_path / "empty-part.json").write_text(json.dumps(manifest))
    refused([parts[0], tmp_path / "empty-part.json"], tmp_path / "merged.csv",
            r"holds 'student-\d\d', who belongs to shard 1/2, not 2/2")


def test_merge_refuses_tables_without_a_manifest_and_overwriting_a_part(tmp_path):
    grades = made_up_class()
    write_tables(grades, tmp_path / "plain.csv")
    refused([tmp_path / "plain.csv"], tmp_path / "merged.csv", "has no plain-part.json beside it")
    (tmp_path / "junk-part.json").write_text("{}")
    refused([tmp_path / "junk-part.json"], tmp_path / "merged.csv", "is not a part of format")
    parts = write_shards(grades, tmp_path, 2)
    before = tables(parts[0])
    with pytest.raises(ValueError, match="out must not overwrite a part's table"):
        merge_parts(parts, parts[0])
    assert tables(parts[0]) == before
    refused([], tmp_path / "merged.csv", "parts must name at least one partial table")


def test_merge_command_line_reports_the_error_and_writes_nothing(tmp_path, capsys):
    parts = write_shards(made_up_class(), tmp_path, 3)
    out = tmp_path / "merged.csv"
    assert main(["merge", str(parts[0]), "--out", str(out)]) == 1
    assert "labkit merge: parts: shards 2/3, 3/3 missing" in capsys.readouterr().err
    assert not out.exists()
    assert main(["merge", *map(str, parts), "--out", str(out)]) == 0
    assert out.exists()


def test_labs_and_class_digests_depend_on_content_not_path(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "00_baseline.ipynb").write_bytes(LAB_00.read_bytes())
    assert labs_digest(tmp_path / "a") == labs_digest(tmp_path / "b")
    (tmp_path / "b" / "00_baseline.ipynb").write_bytes(LAB_00.read_bytes() + b"\n")
    assert labs_digest(tmp_path / "a") != labs_digest(tmp_path / "b")
    assert class_digest([]) != class_digest(made_up_class(1)[:1])


# --- the command line, bad input -------------------------------------------------------


@pytest.mark.parametrize("spec", ["3/2", "0/4", "a/b"])
def test_grade_refuses_a_bad_shard_spec_and_writes_nothing(tmp_path, capsys, spec):
    (tmp_path / "subs" / "alice").mkdir(parents=True)
    out = tmp_path / "grades.csv"
    assert main(["grade", str(tmp_path / "subs"), "--labs", str(LAB_00.parent), "--out",
                 str(out), "--shard", spec]) == 1
    assert "labkit grade: shard must be I/N" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [tmp_path / "subs"]


def test_sharded_grade_refuses_an_empty_submissions_folder(tmp_path):
    (tmp_path / "subs").mkdir()
    with pytest.raises(ValueError, match="submissions must hold notebooks of the labs"):
        grade_shard(tmp_path / "subs", LAB_00.parent, tmp_path / "grades.csv", Shard(1, 2))
    assert list(tmp_path.iterdir()) == [tmp_path / "subs"]


# --- the examples ----------------------------------------------------------------------


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as file:
        return list(csv.reader(file))


def test_slurm_job_array_then_merge_grades_the_class(tmp_path):
    """The script's body as Slurm runs it: tasks 1 and 2 of the array, then the merge job.

    Shard 1 holds bob and carol, shard 2 alice (``shard_of``).
    """
    labs = tmp_path / "labs"
    labs.mkdir()
    lab = labs / "00_baseline.ipynb"
    lab.write_bytes(LAB_00.read_bytes())
    subs = tmp_path / "submissions"
    (subs / "carol").mkdir(parents=True)  # a student who handed in nothing
    for student, sources in (("alice", exercises(lab)), ("bob", wrong_sparsity(lab))):
        (subs / student).mkdir()
        nbformat.write(submission(lab, **sources), subs / student / "00_baseline.ipynb")
    env = {**os.environ, "SUBMISSIONS": str(subs), "LABS": str(labs),
           "PARTS": str(tmp_path / "parts"), "OUT": str(tmp_path / "grades.csv"),
           "LABKIT": str(Path(sys.executable).parent / "labkit"), "SLURM_CPUS_PER_TASK": "1"}
    for task in (1, 2):
        subprocess.run(["bash", str(SBATCH)], cwd=tmp_path, check=True, capture_output=True,
                       env={**env, "SLURM_ARRAY_TASK_ID": str(task),
                            "SLURM_ARRAY_TASK_COUNT": "2"})
    subprocess.run(["bash", str(SBATCH)], cwd=tmp_path, check=True, capture_output=True,
                   env=env)

    rows = {(row[0], row[2]): row[3:7] for row in read_rows(tmp_path / "grades.csv")[1:]}
    assert sorted(rows) == [(student, check) for student in ("alice", "bob", "carol")
                            for check in ("check_get_model_size", "check_get_sparsity")]
    assert rows["alice", "check_get_model_size"][0] == "True"
    assert rows["bob", "check_get_sparsity"][0] == "False"
    assert rows["bob", "check_get_sparsity"][3].startswith("get_sparsity: case 'all non-zero'")
    assert rows["carol", "check_get_sparsity"] == ["False", "1", "0", "not submitted"]
    parts = {path.name: json.loads(path.read_text())
             for path in (tmp_path / "parts").glob("*-part.json")}
    assert {name: sorted(g["student"] for g in part["grades"]) for name, part in parts.items()} \
        == {"grades-1-part.json": ["bob", "carol"], "grades-2-part.json": ["alice"]}
    assert (tmp_path / "grades-totals.csv").exists()


def test_ci_matrix_example_runs_one_job_per_shard_then_the_merge():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    shards = int(workflow["env"]["SHARDS"])
    jobs = workflow["jobs"]
    assert jobs["shard"]["strategy"]["matrix"]["shard"] == list(range(1, shards + 1))
    grade_step = " ".join(step.get("run", "") for step in jobs["shard"]["steps"])
    assert "--shard ${{ matrix.shard }}/${{ env.SHARDS }}" in grade_step
    assert jobs["merge"]["needs"] == "shard"
    assert any("labkit merge" in step.get("run", "") for step in jobs["merge"]["steps"])


def test_the_grading_benchmark_writes_a_class_and_renders_its_tables(tmp_path):
    write_class(tmp_path, 5)
    found, ignored = find_submissions(tmp_path, ["00_baseline"])
    assert [s.student for s in found] == [f"student-{n:02d}" for n in range(5)] and not ignored
    results = {"lab": "00_baseline", "submissions": 5, "shard_jobs": 2,
               "isolation": "bwrap", "per_submission_s": {"1": 9.0, "2": 5.0},
               "modes_per_submission_s": {"bwrap": 9.0, "process": 9.5},
               "unsharded_s": 25.0,
               "shards": [{"shards": 2, "shard_s": [12.0, 13.5], "merge_s": 0.01,
                           "total_s": 25.51, "same_tables": True, "ratio_to_unsharded": 1.02}],
               "similarity_s": 0.2}
    table = markdown(results)
    assert "| 2 | bwrap | 5.0 s | 25 s |" in table
    assert "| process | 9.5 s | 1.06× |" in table
    assert "Not measured (this machine cannot run it): container." in table
    assert "| 2 | 12 s, 14 s | 0.01 s | 26 s | 1.02× | yes |" in table
