"""The steps of `make book` that derive the published course from `_config.yml`.

    python book/publish.py install-cells          # labs/: install cells from the course URL
    python book/publish.py student-edition TREE   # TREE: the student edition's sources
    python book/publish.py student-branch TREE OUT  # OUT: what the `student` branch holds

The course's home is set once in `_config.yml`: `repository.url` (the source) and
`html.baseurl` (the published site, which carries the course wheel under `course/`).
The student edition is built from the released notebooks; its launch buttons open the
`student` branch, which holds those notebooks and a Binder environment that installs the
course wheel, so no button opens a notebook holding solutions.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import yaml

from labkit import __version__
from labkit.grading.release import (
    COURSE_FOLDER,
    CPU_TORCH_INDEX,
    DISTRIBUTION,
    course_site,
    wheel_name,
    write_install_cells,
)

ROOT = Path(__file__).resolve().parents[1]
STUDENT_BRANCH = "student"
INSTRUCTOR_PAGE, STUDENT_PAGE = "book/instructors", "book/honesty"
INTRO_INSTRUCTORS = ("Instructors: {doc}`instructors` explains how to release the student "
                     "notebooks and grade\nsubmissions.")
INTRO_STUDENTS = ("Students: the page {doc}`on grading and academic honesty <honesty>` "
                  "says how your\nwork is graded and what counts as your own.")


def student_edition(tree: Path) -> None:
    """Turn ``tree``, a copy of the book's sources with released labs, into the student
    edition: launch buttons on the student branch, no link to the repository (whose
    ``labs/`` hold the solutions), the instructor chapter replaced by the student page."""
    config_path, toc_path = tree / "_config.yml", tree / "_toc.yml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    config["repository"]["branch"] = STUDENT_BRANCH
    config["html"].update(use_repository_button=False, use_issues_button=False)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    toc = toc_path.read_text(encoding="utf-8")
    if f"file: {INSTRUCTOR_PAGE}\n" not in toc:
        raise ValueError(f"{toc_path} must list {INSTRUCTOR_PAGE}, the page to replace")
    toc_path.write_text(toc.replace("caption: For instructors", "caption: For students")
                        .replace(f"file: {INSTRUCTOR_PAGE}\n", f"file: {STUDENT_PAGE}\n"),
                        encoding="utf-8")
    intro = tree / "book" / "intro.md"
    text = intro.read_text(encoding="utf-8")
    if INTRO_INSTRUCTORS not in text:
        raise ValueError(f"{intro} must hold the sentence {INTRO_INSTRUCTORS!r}")
    intro.write_text(text.replace(INTRO_INSTRUCTORS, INTRO_STUDENTS), encoding="utf-8")
    (tree / f"{INSTRUCTOR_PAGE}.md").unlink()


def binder_requirements(site: str, version: str = __version__) -> str:
    """``binder/requirements.txt`` of the student branch: the course wheel from the site,
    within the course's pinned versions, with torch's CPU build."""
    course = f"{site}{COURSE_FOLDER}/"
    return (f"# The course {version} from {site}, as the labs' install cells take it.\n"
            f"--extra-index-url {CPU_TORCH_INDEX}\n"
            f"-c {course}constraints.txt\n"
            f"{DISTRIBUTION}[lab] @ {course}{wheel_name(version)}\n")


def student_branch(tree: Path, out: Path) -> None:
    """Write into ``out`` what the student branch holds: the released labs of ``tree``
    and a Binder environment (repo2docker) that installs the course wheel."""
    site = course_site(tree / "_config.yml")
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(tree / "labs", out / "labs")
    binder = out / "binder"
    binder.mkdir()
    (binder / "requirements.txt").write_text(binder_requirements(site), encoding="utf-8")
    shutil.copy(ROOT / "binder" / "runtime.txt", binder / "runtime.txt")
    (binder / "postBuild").write_text(
        "#!/usr/bin/env bash\nset -euo pipefail\nOMP_NUM_THREADS=1 labkit cache fill\n",
        encoding="utf-8")
    (binder / "postBuild").chmod(0o755)
    (out / "README.md").write_text(
        f"# Student notebooks\n\nThe released labs of the course published at {site}: "
        "the exercises are yours to write.\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    steps = parser.add_subparsers(dest="step", required=True)
    steps.add_parser("install-cells", help="write the labs' install cells from _config.yml")
    edition = steps.add_parser("student-edition", help="make TREE the student edition")
    edition.add_argument("tree", type=Path)
    branch = steps.add_parser("student-branch", help="write the student branch into OUT")
    branch.add_argument("tree", type=Path)
    branch.add_argument("out", type=Path)
    arguments = parser.parse_args(argv)
    if arguments.step == "install-cells":
        site = course_site(ROOT / "_config.yml")
        for path in write_install_cells(ROOT / "labs", ROOT / "_config.yml"):
            print(f"the install cell of {path.name} now installs from {site}")
    elif arguments.step == "student-edition":
        student_edition(arguments.tree)
    else:
        student_branch(arguments.tree, arguments.out)


if __name__ == "__main__":
    main()
