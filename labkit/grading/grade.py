"""Grading, the straight line: submissions -> merged notebooks -> runner -> referee -> tables.

A submission is found and read as untrusted input, merged into the instructor notebook
(:mod:`labkit.grading.submissions`), and its merged notebook runs under
``pytest --nbval-lax`` in a fresh kernel, isolated by the strongest mode this machine
allows (:mod:`labkit.grading.isolation`), with resource limits, a disk quota and
timeouts: nbval's report says which cells ran, and the student sees the figures and
feedback of their notebook. The outcomes that decide come from a second process in the
same isolation, started after every process of the notebook has ended
(:mod:`labkit.grading.checkrun`): it runs only the setup cells the exercises need, the
student's exercise cells and the check cells, with labkit's references stubbed out, and
records the student's outcomes on the public cases and on hidden cases drawn from the
submission's own seed (:mod:`labkit.grading.seeds`). The referee compares those outcomes
with the reference in a process of its own (:mod:`labkit.grading.referee`), and
:mod:`labkit.grading.scoring` turns nbval's report and the verdicts into one result per
check. Submissions grade in parallel, each job on
cores of its own; the tables are written by the grader alone, atomically, after every
submission has ended (:mod:`labkit.grading.tables`).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from labkit.grading import checkrun, isolation, referee, seeds
from labkit.grading.checks import CHECKS
from labkit.grading.checks.core import GRADING_CASES, GRADING_DIR, GRADING_SEED, all_cases
from labkit.grading.container import ContainerRunner, exposed
from labkit.grading.records import (
    BWRAP,
    CONTAINER,
    GradingConfig,
    LabGrade,
    Shard,
    Submission,
    SubmissionError,
)
from labkit.grading.release import tags
from labkit.grading.scoring import NbvalRun, failed, reference_uses, score
from labkit.grading.submissions import (
    check_cells,
    find_submissions,
    lab_names,
    load_labs,
    merge,
    question_answers,
    read_submission,
    replaced_functions,
    review_notes,
)
from labkit.grading.tables import class_digest, labs_digest, write_part, write_tables
from labkit.grading.untrusted import UntrustedFileError, clean_text, read_text

MAX_JUNIT_BYTES = 8 * 2**20
DEFAULT_CONFIG = GradingConfig()


class GradingFailed(RuntimeError):
    """Every submission of a run failed for a reason outside the students' hands."""


# --- one submission ---------------------------------------------------------------------


def kernel_environment(root: Path, threads: int, seed: int | None = None) -> dict[str, str]:
    """The whole environment of pytest and its kernel: nothing of the instructor's.

    ``root`` is the scratch folder as the kernel sees it. With a ``seed``, the checks
    run in grading mode and IPython's profile under ``root`` installs the tripwire.
    """
    env = {
        "HOME": str(root / "home"),
        "TMPDIR": str(root / "tmp"),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"]),
        "LANG": "C.UTF-8",
        "USER": "student",
        "LOGNAME": "student",
        "LABKIT_CACHE": str(root / "cache"),
        "OMP_NUM_THREADS": str(threads),
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
        "JUPYTER_PLATFORM_DIRS": "1",
        "MPLBACKEND": "agg",
    }
    if seed is not None:
        env |= {GRADING_DIR: str(root / "results"), GRADING_SEED: str(seed),
                "IPYTHONDIR": str(root / "ipython")}
    return env


def prepare_scratch(root: Path, notebook: NotebookNode, cache: Path | None,
                    exercises: tuple[str, ...], replaced: dict, inside: Path) -> None:
    """The scratch folder: ``work/`` (the notebook), ``home/``, ``tmp/``, ``cache/`` (a
    copy of the pretrained ``*.pt`` files, so the kernel never trains and never touches
    the instructor's cache), ``results/``, ``report/`` and the IPython profile whose
    startup file installs the tripwire."""
    for folder in ("work", "home", "tmp", "cache", "report", "results"):
        (root / folder).mkdir()
    for model in sorted(Path(cache).glob("*.pt")) if cache else []:
        shutil.copy2(model, root / "cache" / model.name)
    (root / "work" / "pytest.ini").write_text("[pytest]\n")
    nbformat.write(notebook, root / "work" / "submission.ipynb")
    startup = root / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    settings = {"exercises": list(exercises), "replaces": replaced,
                "log": str(inside / "results" / referee.TRIPWIRE_LOG)}
    (root / "tripwire.json").write_text(json.dumps(settings))
    (startup / "00-labkit-tripwire.py").write_text(
        "from labkit.grading import kernel\n"
        f"kernel.install({str(inside / 'tripwire.json')!r})\n"
        "del kernel\n")


def run_nbval(private: Path, notebook: NotebookNode, config: GradingConfig, mode: str,
              seed: int, exercises: tuple[str, ...] = (), replaced: dict | None = None
              ) -> tuple[Path, NbvalRun]:
    """Run ``pytest --nbval-lax`` on ``notebook`` in ``mode`` over a scratch folder in
    ``private`` (a folder only the grader may list); returns the scratch folder and the
    run. Every process of the run has ended when this returns. Raises OSError or
    :class:`subprocess.SubprocessError` when the isolation itself cannot start."""
    root = private / "scratch"
    root.mkdir()
    os.chmod(private, 0o711)
    log = private / "pytest.log"
    runner = isolation.runners()[mode](root, config.limits)
    prepare_scratch(root, notebook, config.cache, exercises, replaced or {}, runner.inside)
    if isinstance(runner, ContainerRunner):
        runner.own()
    argv = [
        sys.executable, "-m", "pytest", "-p", "nbval.plugin", "-p", "labkit.grading.nbval_plugin",
        "-p", "no:cacheprovider",
        "--nbval-lax", "--nbval-current-env",
        f"--nbval-cell-timeout={config.limits.cell_timeout_s}",
        "--junitxml=../report/junit.xml", "--color=no", "-q", "submission.ipynb",
    ]
    env = kernel_environment(runner.inside, config.threads, seed)
    finished = isolation.run(runner, argv, env, config.threads, log, root / "work")
    try:
        junit = read_text(root / "report" / "junit.xml", MAX_JUNIT_BYTES)
    except UntrustedFileError:
        junit = None
    tail = read_text(log, 2000, tail=True)
    return root, NbvalRun(junit, finished.returncode, tail, finished.stopped)


def portable_cases(declared, seed: int) -> dict:
    """The cases of each check that survive a pickle (a case holding an autograd graph
    does not; the check process builds those itself), by check name."""
    portable = {}
    for check in declared:
        cases = all_cases(check, seed)
        try:
            pickle.dumps(cases)
        except Exception:  # whatever torch or a case's objects refuse to pickle
            continue
        portable[check.name] = cases
    return portable


def run_checks(private: Path, notebook: NotebookNode, replaced: dict,
               config: GradingConfig, mode: str, seed: int
               ) -> tuple[Path, isolation.Finished]:
    """Run the check process (:mod:`labkit.grading.checkrun`) of ``notebook`` in
    ``mode`` over a fresh scratch folder in ``private``, with labkit's ``replaced``
    functions stubbed and the cases built here; returns its results folder and how it
    ended (a check process stopped by a limit counts as the notebook stopped). Every
    process of the run has ended when this returns."""
    import labkit

    root = private / "checks"
    root.mkdir()
    stub = checkrun.stub_labkit(private / "stub", replaced)
    runner = isolation.runners()[mode](root, config.limits)
    prepare_scratch(root, notebook, config.cache, (), {}, runner.inside)
    checkrun.write_spec(root, notebook, config.limits.cell_timeout_s)
    declared = {CHECKS[cell.call] for cell in check_cells(notebook) if cell.call in CHECKS}
    (root / "cases.pkl").write_bytes(pickle.dumps(portable_cases(declared, seed)))
    if isinstance(runner, ContainerRunner):
        runner.own()
    env = kernel_environment(runner.inside, config.threads, seed)
    env[GRADING_CASES] = str(runner.inside / "cases.pkl")
    if mode == BWRAP:
        runner.overlays.append((stub, Path(labkit.__file__).resolve().parent))
    else:
        env["PYTHONPATH"] = str(stub.parent)
    argv = [sys.executable, "-m", "labkit.grading.checkrun",
            str(runner.inside / checkrun.SPEC)]
    finished = isolation.run(runner, argv, env, config.threads, private / "checks.log",
                             root / "work")
    return root / "results", finished


def isolation_problem(run: NbvalRun) -> str:
    """Why the isolation, not the submission, stopped this run ("" when it did not)."""
    first = run.log_tail.lstrip().splitlines()[:1]
    if run.junit is None and first and first[0].startswith("bwrap:"):
        return f"the sandbox could not start: {clean_text(first[0], 300)}"
    return ""


def grade_submission(submission: Submission, instructor: NotebookNode,
                     config: GradingConfig = DEFAULT_CONFIG, mode: str | None = None
                     ) -> LabGrade:
    """Grade one submission in ``mode`` (default: the strongest available); any problem
    with it becomes failed checks and a note, any problem of the grader's a
    ``problem`` as well."""
    mode = mode or isolation.choose(config.isolation)
    checks = check_cells(instructor, submission.lab)
    if submission.path is None:
        return replace(failed(submission, checks, "not submitted"), mode=mode)
    try:
        answers = read_submission(submission.path)
    except (SubmissionError, OSError) as error:
        return replace(failed(submission, checks, f"unreadable submission: {error}"),
                       mode=mode)
    merged, missing = merge(instructor, answers)
    notes = review_notes(instructor, answers)
    if missing:
        notes.insert(0, f"cells missing from the submission (unanswered): {', '.join(missing)}")
    exercises = tuple(cell.source for cell in merged.cells if "exercise" in tags(cell))
    seed = seeds.hidden_seed(config.secret or seeds.secret_of_seed(0), submission.student,
                             submission.lab)
    with tempfile.TemporaryDirectory(prefix="labkit-grade-", ignore_cleanup_errors=True) as name:
        try:
            root, run = run_nbval(Path(name), merged, config, mode, seed, exercises,
                                  replaced_functions(instructor))
        except (OSError, subprocess.SubprocessError) as error:
            reason = f"the {mode} isolation could not start: {type(error).__name__}: {error}"
            return replace(failed(submission, checks, reason, problem=reason), mode=mode)
        if problem := isolation_problem(run):
            return replace(failed(submission, checks, problem, problem=problem), mode=mode)
        flagged = reference_uses(instructor, answers, referee.tripwire_calls(root / "results"))
        recorded = root / "results"
        if not run.stopped and run.junit is not None:
            try:
                recorded, finished = run_checks(Path(name), merged,
                                                replaced_functions(instructor), config, mode,
                                                seed)
                run = replace(run, stopped=finished.stopped)
            except (OSError, subprocess.SubprocessError) as error:
                reason = (f"the {mode} isolation could not start the check process: "
                          f"{type(error).__name__}: {error}")
                return replace(failed(submission, checks, reason, problem=reason), mode=mode)
        verdicts = referee.judge_apart(sorted({check.call for check in checks
                                               if check.call in CHECKS}), recorded, seed)

        def verdict(check):
            name = CHECKS[check.call].name
            if name in flagged:
                return referee.Verdict(False, flagged[name])
            return verdicts[check.call]

        results = score(merged, checks, run, config.limits, verdict)
    notes += sorted(set(flagged.values()) - set(notes))
    return LabGrade(submission.student, submission.lab, results,
                    question_answers(instructor, answers), notes, mode)


# --- a class ----------------------------------------------------------------------------


def _pin_worker(slots, cores: list[int], per_job: int) -> None:
    """Pool initializer: give this worker ``per_job`` cores of its own, so busy work in
    one submission cannot starve another job's (where affinity can be set)."""
    with slots.get_lock():
        slot = slots.value
        slots.value += 1
    own = cores[(slot * per_job) % len(cores):][:per_job] or cores[:per_job]
    if hasattr(os, "sched_setaffinity") and len(cores) > per_job:
        os.sched_setaffinity(0, own)


def grade(submissions: Path, labs: Path, out: Path, *, jobs: int | None = None,
          config: GradingConfig = DEFAULT_CONFIG,
          on_graded: Callable[[LabGrade], None] | None = None,
          shard: Shard | None = None) -> tuple[list[LabGrade], list[str]]:
    """Grade every submission in ``submissions`` against ``labs``; write the tables.

    ``jobs`` submissions run at once (default: one per available core), each on
    ``cores // jobs`` cores and threads of its own. Writes ``out`` (one row per check),
    ``<out>-totals.csv`` and ``<out>-questions.csv``
    (:func:`~labkit.grading.tables.write_tables`). Returns the grades and what was
    ignored in ``submissions``. With a ``shard``, only the students it holds are graded
    and written.

    The isolation is ``config.isolation`` or the strongest this machine allows, chosen
    before anything is graded (:class:`~labkit.grading.isolation.IsolationUnavailable`
    says why none can run). Without ``config.secret`` the course secret of ``labs`` is
    used, created on the first run (:func:`~labkit.grading.seeds.course_secret`). Raises
    :class:`GradingFailed`, writing no table, when every submitted notebook failed for a
    reason outside the students' hands.
    """
    mode = isolation.choose(config.isolation)
    if mode == CONTAINER and (open_folders := exposed([labs, submissions, Path(out).parent])):
        raise isolation.IsolationUnavailable(
            f"the container isolation runs submissions as another user, who could read "
            f"{', '.join(map(str, open_folders))}; close them first (chmod o-rwx)")
    secret = config.secret or seeds.course_secret(labs)
    cores = isolation.cores()
    jobs = len(cores) if jobs is None else jobs
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an int >= 1, got {jobs!r}")
    found, ignored = find_submissions(submissions, lab_names(labs))
    if shard is not None:
        found = [submission for submission in found if shard.holds(submission.student)]
    instructors = load_labs(labs, {submission.lab for submission in found})
    per_job = max(1, len(cores) // jobs)
    config = replace(config, secret=secret, isolation=mode, threads=per_job)
    grades = []
    context = multiprocessing.get_context("spawn")  # no fork of a threaded parent
    slots = context.Value("i", 0)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_pin_worker,
                             initargs=(slots, cores, per_job)) as pool:
        futures = {pool.submit(grade_submission, submission, instructors[submission.lab],
                               config, mode): submission for submission in found}
        for future in as_completed(futures):
            submission = futures[future]
            try:
                grades.append(future.result())
            except Exception as error:  # a grader failure costs this submission only
                checks = check_cells(instructors[submission.lab], submission.lab)
                reason = f"grading error: {clean_text(repr(error), 300)}"
                grades.append(replace(failed(submission, checks, reason, problem=reason),
                                      mode=mode))
            if on_graded:
                on_graded(grades[-1])
    submitted = [g for g in grades if (g.student, g.lab) in
                 {(s.student, s.lab) for s in found if s.path is not None}]
    if submitted and all(g.problem for g in submitted):
        reasons = sorted({g.problem for g in submitted})
        raise GradingFailed(f"every submission failed for a reason outside the students' "
                            f"hands ({mode} isolation): {'; '.join(reasons)[:600]}")
    grades.sort(key=lambda lab_grade: (lab_grade.student, lab_grade.lab))
    write_tables(grades, out)
    return grades, ignored


def grade_shard(submissions: Path, labs: Path, out: Path, shard: Shard,
                **options) -> tuple[list[LabGrade], list[str]]:
    """Grade the students of ``shard`` with :func:`grade`.

    ``options`` go to ``grade`` (``jobs``, ``config``, ``on_graded``). Writes the
    shard's tables at ``out`` and its manifest
    (:func:`~labkit.grading.tables.part_path`). Raises ValueError, writing nothing,
    when ``submissions`` holds no notebook of the labs (a shard may hold no student; the
    class may not).
    """
    found, _ = find_submissions(submissions, lab_names(labs))
    if not found:
        raise ValueError(f"submissions must hold notebooks of the labs in {str(labs)!r}, "
                         f"{str(submissions)!r} has none")
    grades, ignored = grade(submissions, labs, out, shard=shard, **options)
    write_part(grades, out, shard, str(labs), labs_digest(labs), class_digest(found))
    return grades, ignored

