"""Dishonest submissions: each trick a student might try earns nothing it did not earn.

Every submission is built from the released lab-00 notebook with deliberately wrong
answers plus one trick; one grading run (sandboxed, as an instructor runs it) grades
them all, and each test reads its rows. The threat table of ``book/instructors.md``
lists these tests one to one.
"""

import csv
import os
import socket
import textwrap
import threading
import time
from pathlib import Path

import nbformat
import psutil
import pytest

from labkit import measure, zoo
from labkit.grading import checks, isolation, sandbox
from labkit.grading.grade import grade
from labkit.grading.records import GradingConfig, Limits
from labkit.grading.release import release_notebook, tags
from labkit.grading.submissions import pretrained_models
from tests.support.containerlib import read_rows
from tests.support.paths import LABS
from tests.support.tinylab import solutions, student_copy, tiny_instructor
from tests.support.tricks import (
    links,
    patched_record,
    referee_bomb,
    resource_tricks,
    runtime_call,
    thread_call,
)

LAB = "00_baseline"
SECRET = "grader-secret-7f3a"
PLANTED = "PLANTED-HOST-FILE-CONTENT-19c2"
MARKER = "REDTEAM-DAEMON"
SPARSITY = "labkit.measure.get_sparsity"
WRONG_SPARSITY = ("def get_sparsity(tensor):\n"
                  "    return tensor.count_nonzero().item() / tensor.numel()\n")
WRONG_SIZE = ("def get_model_size(model, data_width=32, count_nonzero_only=False):\n"
              "    return 0\n")
LIMITS = Limits(cell_timeout_s=60, notebook_timeout_s=300)

pytestmark = pytest.mark.skipif(sandbox.probe() is not None,
                                reason=f"the bwrap sandbox cannot run here: {sandbox.probe()}")


def exercise_ids() -> tuple[str, str]:
    instructor = nbformat.read(LABS / f"{LAB}.ipynb", as_version=4)
    sparsity, size, *_ = (cell.id for cell in instructor.cells if "exercise" in tags(cell))
    return sparsity, size


def public_answers() -> dict:
    """The public cases' answers, as a student who read the check's output could list."""
    return {tuple(case.args[0].flatten().tolist()): measure.get_sparsity(case.args[0])
            for case in checks.CHECKS["check_get_sparsity"].cases()}


def tricks(labs: Path, out: Path, port: int, other: Path,
           planted: Path) -> dict[str, tuple[str, str]]:
    """Per student: the sources of the two exercises (sparsity, size)."""
    snoop = textwrap.dedent(f"""\
        import glob, os, socket

        def _leak():
            found = []
            for path in glob.glob("/proc/[0-9]*/environ") + glob.glob("/proc/[0-9]*/cmdline"):
                try:
                    data = open(path, "rb").read()
                except OSError:
                    continue
                if b"{SECRET}" in data or {str(labs).encode()!r} in data:
                    found.append(path)
            for path in ({str(labs / (LAB + ".ipynb"))!r}, {str(other)!r}):
                try:
                    open(path).read(10)
                    found.append(path)
                except OSError:
                    pass
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=2).close()
                found.append("network")
            except OSError:
                pass
            return found

        LEAK = _leak()

        def get_sparsity(tensor):
            return 1.0 - tensor.count_nonzero().item() / tensor.numel() if LEAK else 0.0
        """)
    daemon = textwrap.dedent(f"""\
        import os, subprocess, sys
        DAEMON = '''
        import time
        end = time.time() + 30
        while time.time() < end:
            for path in ("/grading/report/junit.xml", {str(out)!r}):
                try:
                    open(path, "w").write("forged")
                except OSError:
                    pass
            time.sleep(0.05)
        '''
        subprocess.Popen([sys.executable, "-c", DAEMON, "{MARKER}"], start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if os.fork() == 0:
            os.setsid()
            os.execv(sys.executable, [sys.executable, "-c", DAEMON, "{MARKER}"])
        """) + WRONG_SPARSITY
    return {
        "honest": ("", ""),
        "thread": (thread_call(SPARSITY, "get_sparsity"), WRONG_SIZE),
        "tripwire_link": (links(str(planted)) + runtime_call(SPARSITY, "get_sparsity"),
                          WRONG_SIZE),
        "alias": (
            "import importlib\n"
            "declared = importlib.import_module('labkit.gra' + 'ding.che' + 'cks.mea' + 'sure')\n"
            "REFERENCE = getattr(declared, 'GET_' + 'SPARSITY').reference\n"
            "def get_sparsity(tensor):\n    return REFERENCE(tensor)\n", WRONG_SIZE),
        "magic": ("%time _ = 1\nfrom labkit.measure import get_sparsity as reference\n"
                  "def get_sparsity(tensor):\n    return reference(tensor)\n", WRONG_SIZE),
        "junit_link": (f"import os\nos.symlink({str(planted)!r}, '/grading/report/junit.xml')\n"
                       + WRONG_SPARSITY, WRONG_SIZE),
        "referee_bomb": (referee_bomb("get_sparsity") + WRONG_SPARSITY, WRONG_SIZE),
        "wrong": (WRONG_SPARSITY, WRONG_SIZE),
        "patched_check": (
            "from labkit.grading import checks as c\n"
            "c.check_get_sparsity = lambda f: print('get_sparsity: results recorded')\n"
            + WRONG_SPARSITY,
            "import labkit\nm = getattr(getattr(labkit, 'gra' + 'ding'), 'che' + 'cks')\n"
            "setattr(m, 'check_get_' + 'model_size', "
            "lambda f: print('get_model_size: results recorded'))\n" + WRONG_SIZE),
        "patched_record": (patched_record(SPARSITY) + "def get_sparsity(tensor):\n"
                           "    return 0.0\n", WRONG_SIZE),
        "ipython_hooks": (
            "def rewrite(lines):\n    return [line.replace('checks.check_get_sparsity"
            "(get_sparsity)', 'checks.check_get_sparsity(measure.get_sparsity)') "
            "for line in lines]\n"
            "get_ipython().input_transformers_cleanup.append(rewrite)\n" + WRONG_SPARSITY,
            "get_ipython().set_custom_exc((Exception,), lambda *args, **kwargs: None)\n"
            + WRONG_SIZE),
        "frames": (
            "import sys\ndef get_sparsity(tensor):\n    frame = sys._getframe(1)\n"
            "    while frame is not None:\n        for value in frame.f_locals.values():\n"
            "            if isinstance(value, float):\n                return value\n"
            "        frame = frame.f_back\n    return 0.0\n", WRONG_SIZE),
        "snoop": (snoop, WRONG_SIZE),
        "detached": (daemon, WRONG_SIZE),
        "reference_static": (
            "from labkit.measure import get_sparsity as reference\n"
            "def get_sparsity(tensor):\n    return reference(tensor)\n", WRONG_SIZE),
        "reference_runtime": (
            "import labkit\ndef get_sparsity(tensor):\n"
            "    module = getattr(labkit, 'mea' + 'sure')\n"
            "    return getattr(module, 'get_' + 'spar' + 'sity')(tensor)\n", WRONG_SIZE),
        "hard_coded": (
            f"ANSWERS = {public_answers()!r}\ndef get_sparsity(tensor):\n"
            "    return ANSWERS.get(tuple(tensor.flatten().tolist()), 0.0)\n", WRONG_SIZE),
    }


def write_submissions(root: Path, sources: dict[str, tuple[str, str]]) -> None:
    released = release_notebook(nbformat.read(LABS / f"{LAB}.ipynb", as_version=4))
    instructor = nbformat.read(LABS / f"{LAB}.ipynb", as_version=4)
    solved = {cell.id: cell.source for cell in instructor.cells if "exercise" in tags(cell)}
    sparsity, size = exercise_ids()
    for student, (sparsity_source, size_source) in sources.items():
        notebook = nbformat.from_dict(nbformat.reads(nbformat.writes(released), as_version=4))
        for cell in notebook.cells:
            if cell.id in solved:
                cell.source = solved[cell.id]
            if cell.id == sparsity and sparsity_source:
                cell.source = sparsity_source
            if cell.id == size and size_source:
                cell.source = size_source
        nbformat.write(notebook, root / f"{student}__{LAB}.ipynb")


def read_notes(path: Path) -> dict[str, str]:
    with open(path.with_name(f"{path.stem}-totals.csv"), newline="") as file:
        return {row["student"]: row["notes"] for row in csv.DictReader(file) if row["lab"] == LAB}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """One sandboxed grading run of every trick, with a secret in the grader's
    environment and a server listening on the grader's loopback."""
    base = tmp_path_factory.mktemp("redteam")
    labs = base / "labs"
    labs.mkdir()
    (labs / f"{LAB}.ipynb").write_bytes((LABS / f"{LAB}.ipynb").read_bytes())
    root, out = base / "submissions", base / "out" / "grades.csv"
    root.mkdir()
    server = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=lambda: [server.accept() for _ in range(100)], daemon=True).start()
    planted = base / "planted.txt"
    planted.write_text(PLANTED)
    sources = tricks(labs, out, server.getsockname()[1], root / f"honest__{LAB}.ipynb",
                     planted)
    write_submissions(root, sources)
    submitted = {path: path.read_bytes() for path in root.iterdir()}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LABKIT_CACHE", str(base / "cache"))
        patch.setenv("REDTEAM_SECRET", SECRET)
        for name in pretrained_models(labs):
            zoo.pretrained(name, progress=False)
        grade(root, labs, out, jobs=2,
              config=GradingConfig(LIMITS, isolation="bwrap", cache=zoo.cache_dir()))
    tables = {path: path.read_bytes() for path in out.parent.iterdir()}
    yield {"rows": read_rows(out), "notes": read_notes(out), "out": out, "tables": tables,
           "submitted": submitted, "labs": labs, "root": root, "base": base,
           "port": server.getsockname()[1]}
    server.close()


def earned(graded, student: str, check: str) -> int:
    return int(graded["rows"][student, check]["earned"])


def test_an_honest_submission_earns_full_marks_in_the_sandbox(graded):
    rows = [row for (student, _), row in graded["rows"].items() if student == "honest"]
    assert rows and all(row["passed"] == "True" and row["mode"] == "bwrap" for row in rows)


def test_wrong_answers_earn_nothing(graded):
    assert earned(graded, "wrong", "check_get_sparsity") == 0
    assert earned(graded, "wrong", "check_get_model_size") == 0


def test_patching_the_checks_from_an_exercise_earns_nothing_and_is_flagged(graded):
    for check in ("check_get_sparsity", "check_get_model_size"):
        assert earned(graded, "patched_check", check) == 0
        assert graded["rows"]["patched_check", check]["message"] == (
            "no results were recorded (the check cell did not run to its end)")
    assert "review exercise cell" in graded["notes"]["patched_check"]


def test_replacing_the_recorder_with_the_reference_is_caught_by_the_tripwire(graded):
    assert earned(graded, "patched_record", "check_get_sparsity") == 0
    assert "reference use: labkit.measure.get_sparsity was called" in \
        graded["rows"]["patched_record", "check_get_sparsity"]["message"]
    assert "importlib" in graded["notes"]["patched_record"]


def test_ipython_hooks_neither_swallow_failures_nor_swap_in_the_reference(graded):
    assert earned(graded, "ipython_hooks", "check_get_sparsity") == 0
    message = graded["rows"]["ipython_hooks", "check_get_sparsity"]["message"]
    assert message.startswith("reference use") or "labkit's own function" in message
    assert earned(graded, "ipython_hooks", "check_get_model_size") == 0
    assert "get_ipython" in graded["notes"]["ipython_hooks"]


def test_stack_frames_hold_no_expected_value_to_read(graded):
    assert earned(graded, "frames", "check_get_sparsity") == 0
    assert "_getframe" in graded["notes"]["frames"]


def test_the_sandbox_hides_secrets_labs_other_submissions_and_the_network(graded):
    """The probing submission answers correctly only if it saw something it must not."""
    assert earned(graded, "snoop", "check_get_sparsity") == 0


def test_without_the_sandbox_the_same_probe_does_see_the_grader(graded, monkeypatch):
    """The control: the probe works, so the sandboxed zero above means something."""
    base = graded["base"]
    root, out = base / "control", base / "control-out" / "grades.csv"
    root.mkdir()
    (root / f"snoop__{LAB}.ipynb").write_bytes(graded["submitted"][
        graded["root"] / f"snoop__{LAB}.ipynb"])
    monkeypatch.setenv("LABKIT_CACHE", str(base / "cache"))
    monkeypatch.setenv("REDTEAM_SECRET", SECRET)
    grade(root, graded["labs"], out, jobs=1,
          config=GradingConfig(LIMITS, isolation="process", cache=zoo.cache_dir()))
    rows = read_rows(out)
    assert rows["snoop", "check_get_sparsity"]["earned"] == "1"
    assert rows["snoop", "check_get_sparsity"]["mode"] == "process"


def test_nothing_a_submission_starts_outlives_its_sandbox(graded):
    time.sleep(2)
    alive = [process.info["cmdline"] for process in psutil.process_iter(["cmdline"])
             if MARKER in " ".join(process.info["cmdline"] or [])]
    assert alive == []
    assert {path: path.read_bytes() for path in graded["out"].parent.iterdir()} == \
        graded["tables"]
    assert earned(graded, "detached", "check_get_sparsity") == 0


def test_calling_the_reference_earns_nothing_and_says_why(graded):
    assert earned(graded, "reference_static", "check_get_sparsity") == 0
    assert graded["rows"]["reference_static", "check_get_sparsity"]["message"].startswith(
        "reference use: exercise cell")
    assert earned(graded, "reference_runtime", "check_get_sparsity") == 0
    assert graded["rows"]["reference_runtime", "check_get_sparsity"]["message"] == (
        "reference use: labkit.measure.get_sparsity was called from the student's code "
        "while grading")


def test_hard_coded_public_answers_fail_the_hidden_cases(graded):
    assert earned(graded, "hard_coded", "check_get_sparsity") == 0
    assert "hidden case" in graded["rows"]["hard_coded", "check_get_sparsity"]["message"]


def test_the_reference_under_another_name_earns_nothing(graded):
    """A check declaration's ``reference`` is the labkit function under another name;
    in the check process it is a stub, whatever name reaches it."""
    assert earned(graded, "alias", "check_get_sparsity") == 0
    assert "is not available while grading" in \
        graded["rows"]["alias", "check_get_sparsity"]["message"]


def test_a_magic_first_line_does_not_hide_a_cell_from_the_inspection(graded):
    assert earned(graded, "magic", "check_get_sparsity") == 0
    assert graded["rows"]["magic", "check_get_sparsity"]["message"].startswith(
        "reference use: exercise cell")


def test_a_report_linked_to_a_host_file_leaks_nothing(graded):
    assert earned(graded, "junit_link", "check_get_sparsity") == 0
    assert all(PLANTED not in text.decode() for text in graded["tables"].values())


def test_the_reference_called_from_another_thread_earns_nothing(graded):
    """With the recorder's state switched off around the call, in a worker thread: in
    the check process the reference is a stub in every thread."""
    assert earned(graded, "thread", "check_get_sparsity") == 0
    assert earned(graded, "thread", "check_get_model_size") == 0


def test_a_tripwire_log_linked_elsewhere_hides_nothing_and_leaks_nothing(graded):
    """The kernel's tripwire can only add a review flag; the verdict comes from the
    check process, where the reference does not compute. The grader reads no link: the
    junit report linked away is no report."""
    assert earned(graded, "tripwire_link", "check_get_sparsity") == 0
    assert graded["rows"]["tripwire_link", "check_get_sparsity"]["message"].startswith(
        "not run: pytest exited with code 1")
    assert all(PLANTED not in text.decode() for text in graded["tables"].values())
    assert (graded["base"] / "planted.txt").read_text() == PLANTED


def test_results_built_to_exhaust_the_referee_cost_that_submission_only(graded):
    assert earned(graded, "referee_bomb", "check_get_sparsity") == 0
    assert earned(graded, "honest", "check_get_sparsity") == 1
    assert len(graded["rows"]["referee_bomb", "check_get_sparsity"]["message"]) < 2100


def test_submissions_are_never_written_to(graded):
    assert {path: path.read_bytes() for path in graded["root"].iterdir()
            if path.name.endswith(f"__{LAB}.ipynb")} == graded["submitted"]


# --- resource abuse on a tiny lab ---------------------------------------------------


def test_resource_abuse_stops_that_submission_only(tmp_path):
    """Filling the disk, its inodes or /dev/shm; forking endlessly; a process pool whose
    members each stay under the memory limit but not together; busy processes that
    widen their CPU affinity to starve the other job. Each costs the abusing check,
    and the honest submission graded beside them (jobs=2) keeps full marks."""
    labs, root = tmp_path / "labs", tmp_path / "submissions"
    labs.mkdir()
    root.mkdir()
    instructor = tiny_instructor()
    nbformat.write(instructor, labs / "01_tiny.ipynb")
    solved = solutions(instructor)
    for student, edits in {**resource_tricks(solved), "honest": {}}.items():
        nbformat.write(student_copy(instructor, **{**solved, **edits}),
                       root / f"{student}__01_tiny.ipynb")
    limits = Limits(cell_timeout_s=20, notebook_timeout_s=120, disk_mib=96, files=5000,
                    processes=128, memory_gib=2)
    with isolation.cgroups(limits) as groups:
        if groups.pids is None and os.geteuid() == 0:
            pytest.skip("no pids cgroup here, and root ignores RLIMIT_NPROC")
    grades, _ = grade(root, labs, tmp_path / "grades.csv", jobs=2,
                      config=GradingConfig(limits, isolation="bwrap"))
    passed = {g.student: [r.passed for r in g.checks] for g in grades}
    messages = {g.student: {r.message for r in g.checks} for g in grades}
    quota = "not run: the submission stored more than its disk quota of 96 MiB or 5,000 files"
    assert messages["filler"] == messages["folders"] == {quota}
    assert passed["shm"][0] is False
    assert passed["bomber"] == passed["pool"] == [True, False]
    assert passed["hog"] == [False, True], messages["hog"]
    assert passed["honest"] == [True, True]
