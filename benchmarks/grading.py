"""Comparison 7: grading a class of lab 00 on this machine, with jobs, shards and merge.

A made-up class of ``grading_submissions`` students hands in lab 00 (released notebook,
each exercise cell filled with one of a few correct or wrong implementations, so the
grades and the similarity report have something to find). Measured, in one run:

- seconds per submission of ``labkit grade`` in the strongest isolation with each of
  ``grading_jobs`` jobs (1 and 2), and at 1 job in every isolation mode this machine can
  run (``bwrap``, ``container``, ``process``), side by side, to show what each costs;
- the wall time of the class graded as each of ``grading_shards`` shards (1, 2 and 4)
  run one after another (``--shard I/N``, with the most jobs each), plus ``labkit
  merge``; sharding splits the work and adds only the merge, so the shards' sum should
  stay within 10% of one unsharded run;
- the similarity report (``labkit similarity``) of the class.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import nbformat

from labkit import zoo
from labkit.grading import isolation, seeds
from labkit.grading.grade import grade, grade_shard
from labkit.grading.records import MODES, GradingConfig, Shard
from labkit.grading.release import release_notebook, tags
from labkit.grading.similarity import similarity_report
from labkit.grading.tables import merge_parts

from . import report
from .config import ROOT, Config

NAME = "grading"
TITLE = "Grading a class: jobs, shards and the similarity report"
LAB = ROOT / "labs" / "00_baseline.ipynb"
SPARSITY = (
    "    return 1.0 - tensor.count_nonzero().item() / tensor.numel()\n",
    "    zeros = (tensor == 0).sum().item()\n    return zeros / tensor.numel()\n",
    "    flat = tensor.flatten().tolist()\n    return sum(1 for x in flat if x == 0) / len(flat)\n",
    "    return tensor.count_nonzero().item() / tensor.numel()\n",  # wrong: the density
)
SIZE = (
    "    total = 0\n    for parameter in model.parameters():\n        if count_nonzero_only:\n"
    "            total += int((parameter != 0).sum())\n        else:\n"
    "            total += parameter.numel()\n    return total * data_width\n",
    "    weights = list(model.parameters())\n"
    "    counts = [w.count_nonzero().item() if count_nonzero_only else w.numel()\n"
    "              for w in weights]\n    return data_width * sum(counts)\n",
    "    return sum(p.numel() for p in model.parameters()) * data_width\n",  # wrong: ignores flag
)


def write_class(folder: Path, students: int) -> None:
    """``students`` submissions of lab 00, each exercise body one of the variants above."""
    instructor = nbformat.read(LAB, as_version=4)
    exercises = [cell for cell in instructor.cells if "exercise" in tags(cell)]
    for number in range(students):
        notebook = release_notebook(instructor)
        bodies = (SPARSITY[number % len(SPARSITY)], SIZE[(number // 2) % len(SIZE)])
        for cell, body in zip(exercises, bodies, strict=True):
            head = cell.source.split("### BEGIN SOLUTION")[0].rstrip(" ")
            released = next(c for c in notebook.cells if c.id == cell.id)
            released.source = head + body
        nbformat.write(notebook, folder / f"student-{number:02d}__{LAB.stem}.ipynb")


def _seconds(function, *args, **kwargs) -> float:
    start = time.perf_counter()
    function(*args, **kwargs)
    return time.perf_counter() - start


def run(config: Config) -> dict:
    for name in sorted(zoo.RECIPES):  # train once, so no grading run pays for it
        zoo.pretrained(name, progress=False)
    students = config.grading_submissions
    with tempfile.TemporaryDirectory(prefix="labkit-bench-grading-") as name:
        root = Path(name)
        submissions, labs = root / "submissions", root / "labs"
        submissions.mkdir()
        labs.mkdir()
        (labs / LAB.name).write_bytes(LAB.read_bytes())
        write_class(submissions, students)
        grading = GradingConfig(cache=zoo.cache_dir(),
                                secret=seeds.secret_of_seed(config.seed))
        options = {"config": grading}
        per_submission = {}
        for jobs in config.grading_jobs:
            wall = _seconds(grade, submissions, labs, root / f"jobs-{jobs}.csv", jobs=jobs,
                            **options)
            per_submission[jobs] = wall / students
            print(f"    {jobs} job(s): {wall / students:.1f} s per submission", flush=True)
        modes = {}
        runnable = [mode for mode in MODES if isolation.probe(mode) is None]
        measured = runnable if config.grading_every_mode else []
        for mode in measured:
            modes[mode] = _seconds(grade, submissions, labs, root / f"{mode}.csv", jobs=1,
                                   config=GradingConfig(grading.limits, grading.secret, mode,
                                                        grading.cache)) / students
            print(f"    1 job, {mode} isolation: {modes[mode]:.1f} s per submission",
                  flush=True)
        shards, shard_jobs = [], max(config.grading_jobs)
        for count in config.grading_shards:
            parts = [root / f"shards-{count}" / f"grades-{index}.csv"
                     for index in range(1, count + 1)]
            walls = [_seconds(grade_shard, submissions, labs, part, Shard(index, count),
                              jobs=shard_jobs, **options)
                     for index, part in enumerate(parts, start=1)]
            merge_s = _seconds(merge_parts, parts, root / f"merged-{count}.csv")
            same = (root / f"merged-{count}.csv").read_bytes() == \
                (root / f"jobs-{shard_jobs}.csv").read_bytes()
            shards.append({"shards": count, "shard_s": walls, "merge_s": merge_s,
                           "total_s": sum(walls) + merge_s, "same_tables": same})
            print(f"    {count} shard(s): {sum(walls) + merge_s:.0f} s", flush=True)
        similarity_s = _seconds(similarity_report, submissions, labs, root / "similarity.html")
    unsharded = per_submission[shard_jobs] * students
    for row in shards:
        row["ratio_to_unsharded"] = row["total_s"] / unsharded
    return {"lab": LAB.stem, "submissions": students, "shard_jobs": shard_jobs,
            "isolation": isolation.choose(), "per_submission_s": per_submission,
            "modes_per_submission_s": modes, "runnable_modes": runnable,
            "unsharded_s": unsharded, "shards": shards,
            "similarity_s": similarity_s}


def markdown(results: dict) -> str:
    students = results["submissions"]
    per = results["per_submission_s"]
    modes = results["modes_per_submission_s"]
    strongest = results["isolation"]
    jobs = report.table(("jobs", "isolation", "seconds per submission", f"wall time of {students}"),
                        [(jobs, strongest, f"{seconds:.1f} s", f"{seconds * students:.0f} s")
                         for jobs, seconds in per.items()])
    side = report.table(("isolation (1 job)", "seconds per submission", "against bwrap"),
                        [(mode, f"{seconds:.1f} s",
                          report.ratio(seconds / modes["bwrap"]) if "bwrap" in modes else "")
                         for mode, seconds in modes.items()])
    runnable = results.get("runnable_modes", list(modes))
    notes = [f"{text}: {', '.join(left)}." for text, left in (
        ("Not measured (this machine cannot run it)", [m for m in MODES if m not in runnable]),
        ("Not measured in this preset", [m for m in runnable if m not in modes])) if left]
    sandbox = "\n\n".join([side, *notes])
    shards = report.table(
        ("shards", "each shard", "merge", "sum", "against unsharded", "same tables"),
        [(row["shards"], ", ".join(f"{s:.0f} s" for s in row["shard_s"]),
          f"{row['merge_s']:.2f} s", f"{row['total_s']:.0f} s",
          report.ratio(row["ratio_to_unsharded"]), "yes" if row["same_tables"] else "**no**")
         for row in results["shards"]])
    return (f"**Grading {students} submissions of `{results['lab']}`**, each isolated, in "
            f"every isolation mode this machine can run.\n\n{jobs}\n\n{sandbox.strip()}\n\n"
            f"**The same class in shards** run one after another "
            f"({results['shard_jobs']} jobs each), then merged; the merged tables are "
            f"compared with those of the unsharded run.\n\n{shards}\n\n"
            f"**Similarity report** of the {students} submissions: "
            f"{results['similarity_s']:.1f} s.\n")
