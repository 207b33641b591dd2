"""The ``labkit`` command line: ``labkit execute``, ``labkit cache`` (and the instructor's
``release``, ``grade``, ``merge``, ``gradescope`` and ``similarity``)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from labkit import zoo

CELL_TIMEOUT_S = 600
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def execute_notebook(path: Path, timeout: int = CELL_TIMEOUT_S) -> float:
    """Execute a notebook in place in its own folder, storing its outputs but no widgets.

    A stored page cannot run a widget, so none is kept: the kernel runs with
    ``TQDM_DISABLE=1`` (tqdm reads ``TQDM_*`` overrides of its defaults, for the bars that
    do not set ``disable`` themselves), every widget-view output (a progress bar, a slider)
    is dropped, and no widget state is stored. What a page shows of an interactive cell is
    the static figure it also draws. Returns the wall time in seconds. The file is
    replaced only after a successful run.
    """
    notebook = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", store_widget_state=False,
        resources={"metadata": {"path": str(path.parent)}},
    ).execute(env={**os.environ, "TQDM_DISABLE": "1"})
    elapsed = time.perf_counter() - start
    _drop_widgets(notebook)
    nbformat.write(notebook, path)
    return elapsed


def _drop_widgets(notebook: nbformat.NotebookNode) -> None:
    """Remove the widget-view outputs and the stored widget state of ``notebook``."""
    notebook.metadata.pop("widgets", None)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [output for output in cell.outputs
                            if WIDGET_VIEW not in output.get("data", {})]


def _execute(args: argparse.Namespace) -> int:
    for path in args.notebooks:
        elapsed = execute_notebook(Path(path))
        print(f"{path}: executed in {elapsed:.1f} s")
    return 0


def _cache(args: argparse.Namespace) -> int:
    if args.action == "clear":
        for path in zoo.clear_cache():
            print(f"removed {path}")
    elif args.action == "path":
        print(zoo.cache_dir())
    elif args.action == "ship":
        for name in sorted(zoo.RECIPES):
            print(f"{name}: shipped {zoo.ship(name)}")
    else:
        for name in sorted(zoo.RECIPES):
            zoo.pretrained(name)
            print(f"{name}: {zoo.cache_path(name)}")
    return 0


def _release(args: argparse.Namespace) -> int:
    from labkit.grading.release import release_folder

    for path in release_folder(Path(args.labs), Path(args.out), force=args.force):
        print(f"released {path}")
    return 0


def _limits(args: argparse.Namespace):
    from labkit.grading.records import Limits

    return Limits(args.cell_timeout, args.timeout, args.memory)


def _grade(args: argparse.Namespace) -> int:
    from labkit.grading import isolation, seeds
    from labkit.grading.grade import grade, grade_shard
    from labkit.grading.records import PROCESS, GradingConfig, LabGrade, Shard
    from labkit.grading.submissions import pretrained_models
    from labkit.grading.tables import table_paths

    def report(lab_grade: LabGrade) -> None:
        notes = f"  ({'; '.join(lab_grade.notes)})" if lab_grade.notes else ""
        print(f"{lab_grade.student} {lab_grade.lab}: {lab_grade.earned}/{lab_grade.points}"
              f"{notes}", flush=True)

    shard = None if args.shard is None else Shard.parse(args.shard)
    mode = isolation.choose(args.isolation)
    print(f"labkit grade: isolation {mode}", flush=True)
    if mode == PROCESS:
        print("labkit grade: WARNING: the process isolation keeps detached processes and "
              "runaway resources in check, not a submission that reads this account's "
              "files (the instructor's notebooks among them)", file=sys.stderr)
    for name in pretrained_models(Path(args.labs)):  # train once here, so no kernel trains
        zoo.pretrained(name, progress=False)
    secret = b"" if args.seed is None else seeds.secret_of_seed(args.seed)
    options = {"jobs": args.jobs, "on_graded": report,
               "config": GradingConfig(_limits(args), secret, mode, zoo.cache_dir())}
    start = time.perf_counter()
    if shard is None:
        _, ignored = grade(Path(args.submissions), Path(args.labs), Path(args.out), **options)
    else:
        _, ignored = grade_shard(Path(args.submissions), Path(args.labs), Path(args.out),
                                 shard, **options)
    for line in ignored:
        print(f"ignored {line}", file=sys.stderr)
    print(f"graded in {time.perf_counter() - start:.1f} s; wrote "
          f"{', '.join(str(path) for path in table_paths(Path(args.out)))}")
    return 0


def _merge(args: argparse.Namespace) -> int:
    from labkit.grading.tables import merge_parts

    written = merge_parts([Path(part) for part in args.parts], Path(args.out))
    print(f"merged {len(args.parts)} parts; wrote {', '.join(str(path) for path in written)}")
    return 0


def _gradescope(args: argparse.Namespace) -> int:
    from labkit.grading.gradescope import build_autograder

    out = build_autograder(
        [Path(lab) for lab in args.labs], Path(args.out), limits=_limits(args),
        visibility=args.visibility, hidden_visibility=args.hidden_visibility,
        isolation=args.isolation, force=args.force)
    print(f"wrote {out}: upload it as the assignment's autograder (zip file upload)")
    return 0


def _similarity(args: argparse.Namespace) -> int:
    from labkit.grading.similarity import similarity_report

    page, table, matches, ignored = similarity_report(
        Path(args.submissions), Path(args.labs), Path(args.out), noise=args.noise,
        threshold=args.threshold)
    for line in ignored:
        print(f"ignored {line}", file=sys.stderr)
    flagged = sum(match.similarity >= args.threshold for match in matches)
    print(f"{flagged} pairs at or above {args.threshold:.0%}; wrote {page}, {table}")
    return 0


def _limit_options(command: argparse.ArgumentParser) -> None:
    """The limits ``grade`` and ``gradescope`` share, and the isolation mode."""
    command.add_argument("--cell-timeout", type=float, default=120, help="seconds per cell")
    command.add_argument("--timeout", type=float, default=900, help="seconds per notebook")
    command.add_argument("--memory", type=float, default=4,
                         help="GiB of memory per submission (and of address space per process)")
    command.add_argument("--isolation", choices=("bwrap", "container", "process"),
                         default=None,
                         help="force an isolation mode (default: the strongest this machine "
                              "allows: bwrap, then container (root without namespaces), "
                              "then process)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labkit", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    execute = commands.add_parser("execute", help="re-execute lab notebooks in place")
    execute.add_argument("notebooks", nargs="+", help="notebook files")
    execute.set_defaults(run=_execute)

    cache = commands.add_parser("cache", help="the pretrained-model cache")
    cache.add_argument("action", choices=("path", "fill", "clear", "ship"),
                       help="print its folder, fill it with every model, empty it, or copy "
                            "this machine's models into labkit/weights (for maintainers)")
    cache.set_defaults(run=_cache)

    release = commands.add_parser("release", help="write the student notebooks of the labs")
    release.add_argument("labs", help="folder of instructor notebooks (labs/)")
    release.add_argument("--out", required=True, help="folder for the student notebooks")
    release.add_argument("--force", action="store_true",
                         help="write into a non-empty --out folder, overwriting notebooks")
    release.set_defaults(run=_release)

    grade = commands.add_parser(
        "grade", help="grade submitted notebooks with nbval",
        description="SUBMISSIONS holds <student>/<lab>.ipynb or <student>__<lab>.ipynb.")
    grade.add_argument("submissions", help="folder of submitted notebooks")
    grade.add_argument("--labs", required=True, help="folder of instructor notebooks (labs/)")
    grade.add_argument("--out", required=True,
                       help="grade table (CSV); -totals.csv and -questions.csv beside it")
    grade.add_argument("--jobs", type=int, default=None,
                       help="kernels at once (default: one per available CPU core)")
    _limit_options(grade)
    grade.add_argument("--seed", type=int, default=None,
                       help="draw the hidden cases from this seed instead of the course "
                            "secret (to reproduce one run)")
    grade.add_argument("--shard", metavar="I/N",
                       help="grade only shard I of N (students by a stable hash of their id); "
                            "--out is then a partial table for labkit merge")
    grade.set_defaults(run=_grade)

    merge = commands.add_parser(
        "merge", help="join the partial tables of labkit grade --shard into the class tables")
    merge.add_argument("parts", nargs="+", help="the shards' --out tables")
    merge.add_argument("--out", required=True,
                       help="grade table (CSV); -totals.csv and -questions.csv beside it")
    merge.set_defaults(run=_merge)

    gradescope = commands.add_parser(
        "gradescope", help="build the Gradescope autograder zip of some labs",
        description="The zip grades each submission as labkit grade does and writes "
                    "Gradescope's results.json: one test per check.")
    gradescope.add_argument("labs", nargs="+", metavar="LAB",
                            help="instructor notebooks (labs/00_baseline.ipynb) or folders")
    gradescope.add_argument("--out", required=True, help="the zip to write (autograder.zip)")
    gradescope.add_argument("--visibility", default="visible",
                            help="visibility of each check's test (default visible)")
    gradescope.add_argument("--hidden-visibility", default="after_published",
                            help="visibility of a check failing on a hidden case "
                                 "(default after_published)")
    _limit_options(gradescope)
    gradescope.add_argument("--force", action="store_true", help="replace an existing zip")
    gradescope.set_defaults(run=_gradescope)

    similarity = commands.add_parser(
        "similarity", help="report pairs of students with the same code, exercise by exercise",
        description="copydetect (winnowing, as MOSS) per exercise cell; the released stub and "
                    "the instructor's solution do not count.")
    similarity.add_argument("submissions", help="folder of submitted notebooks")
    similarity.add_argument("--labs", required=True, help="folder of instructor notebooks")
    similarity.add_argument("--out", required=True,
                            help="the HTML report (similarity.html); the CSV goes beside it")
    similarity.add_argument("--threshold", type=float, default=0.5,
                            help="list pairs at or above this similarity (default 0.5)")
    similarity.add_argument("--noise", type=int, default=25,
                            help="shortest shared code that counts, in filtered characters, a name "
                                 "counting as one (default 25)")
    similarity.set_defaults(run=_similarity)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a refused input or an impossible run prints one line and
    returns 1."""
    from labkit.grading.grade import GradingFailed
    from labkit.grading.isolation import IsolationUnavailable

    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, IsolationUnavailable, GradingFailed) as error:
        print(f"labkit {args.command}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
