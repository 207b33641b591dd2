"""The Gradescope autograder in a Docker-like container: root without namespaces.

Gradescope runs ``run_autograder`` as root in a Docker container, whose default
capabilities and seccomp profile refuse the namespaces bubblewrap needs; the grader must
then choose its ``container`` isolation by itself (a fresh unprivileged user id per
submission). :mod:`containerlib` builds such a container with bubblewrap: Docker's
capability set, a seccomp filter that refuses ``unshare``, ``setns`` and ``clone`` with
namespace flags, its own PID namespace, ``/tmp`` and ``/dev/shm``, ``/autograder`` bound
from a temporary folder. A driver inside runs ``run_autograder`` once per submission, as
Gradescope does, and reports each ``results.json``, what was left in the results folder,
and any process or shared file of a submission's user id still there afterwards.

Lab 00 is graded for a correct and a wrong submission; the tricks (wrong answers plus
one trick each) are graded on a tiny two-check lab, so that both containers finish in
about a minute and a half on two cores.
"""

import json
import sys
import textwrap
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest

from labkit.grading.gradescope import build_autograder
from labkit.grading.records import Limits
from tests.support.containerlib import (
    SETPRIV,
    course,
    environment,
    read_rows,
    run_in_container,
    seccomp_supported,
)
from tests.support.lab_submissions import LAB_00, exercises, submission
from tests.support.tinylab import TINY, solutions, student_copy, tiny_instructor
from tests.support.tricks import reference_tricks, resource_tricks

UNSUPPORTED = seccomp_supported() or (None if SETPRIV else "setpriv is not installed")
pytestmark = pytest.mark.skipif(UNSUPPORTED is not None,
                                reason=f"no Docker-like container here: {UNSUPPORTED}")

SECRET_VARIABLE = "LABKIT_HARNESS_SECRET"
SECRET = "gradescope-secret-5b1d9e"
MARKER = "CONTAINER-REDTEAM-DAEMON"
TRICK_LIMITS = Limits(cell_timeout_s=60, notebook_timeout_s=300)
REVIEW = "review exercise cell"

WRONG_SPARSITY = ("def get_sparsity(tensor):\n"
                  "    return tensor.count_nonzero().item() / tensor.numel()\n")
WRONG_SIZE = ("def get_model_size(model, data_width=32, count_nonzero_only=False):\n"
              "    return 0\n")
WRONG_AGP = ("def agp_sparsity(t, n, s_initial, s_final):\n"
             "    return s_initial + (s_final - s_initial) * t / n\n")
WRONG_KEEP = "def get_num_channels_to_keep(channels, prune_ratio):\n    return channels\n"

READ_LABS = textwrap.dedent("""\
    import glob, json
    STOLEN = []
    for path in sorted(glob.glob("/autograder/source/labs/*.ipynb")
                       + glob.glob("/autograder/source/**/*.ipynb", recursive=True)):
        try:
            with open(path) as file:
                notebook = json.load(file)
        except OSError:
            continue
        for cell in notebook["cells"]:
            kind = cell["metadata"].get("tags", [])
            if "exercise" in kind or "check" in kind:
                STOLEN.append((kind, "".join(cell["source"]), cell.get("outputs", [])))
    """) + WRONG_AGP + textwrap.dedent("""\
    for kind, source, outputs in STOLEN:
        if "exercise" in kind:
            exec(source)
        for output in outputs:
            print("".join(output.get("text", "")))
    """)
USE_STOLEN = WRONG_KEEP + textwrap.dedent("""\
    for kind, source, outputs in STOLEN:
        if "exercise" in kind:
            exec(source)
    """)
DETACHED = textwrap.dedent(f"""\
    import os, sys
    DAEMON = '''
    import json, time
    forged = json.dumps({{"score": 3, "output": "forged by a detached process", "tests": []}})
    time.sleep(3)
    end = time.time() + 120
    while time.time() < end:
        try:
            with open("/autograder/results/results.json", "w") as file:
                file.write(forged)
        except OSError:
            pass
        time.sleep(0.2)
    '''
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv(sys.executable, [sys.executable, "-c", DAEMON, "{MARKER}"])
        os._exit(0)
    os.wait()
    """) + WRONG_AGP
READ_ENVIRON = textwrap.dedent(f"""\
    import glob
    LEAKED = []
    for path in glob.glob("/proc/[0-9]*/environ"):
        try:
            with open(path, "rb") as file:
                data = file.read()
        except OSError:
            continue
        if b"{SECRET_VARIABLE}" in data:
            LEAKED.append(data.decode(errors="replace"))
    """) + WRONG_AGP
USE_ENVIRON = textwrap.dedent("""\
    def get_num_channels_to_keep(channels, prune_ratio):
        return " ".join(LEAKED) if LEAKED else channels
    """)
WRITE_RESULTS = textwrap.dedent("""\
    import json, os
    FORGED = json.dumps({"score": 3, "output": "forged by the kernel", "tests": []})
    for path in ("/autograder/results/results.json", "/autograder/results/forged.json",
                 "/autograder/results.json"):
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as file:
                file.write(FORGED)
        except OSError:
            pass
    """) + WRONG_AGP

DRIVER = textwrap.dedent("""\
    # Runs inside the container, as root: one run_autograder per submission, as Gradescope.
    import json, os, shutil, subprocess, time
    from pathlib import Path

    ROOT, HARNESS = Path("/autograder"), Path("/harness")
    plan = json.loads((HARNESS / "plan.json").read_text())

    def uid_of(pid):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
        return 0

    def survivors():
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                line = (entry / "cmdline").read_bytes().replace(b"\\0", b" ").decode()
                uid = uid_of(entry.name)
            except (OSError, ValueError):
                continue
            if plan["marker"] in line or uid >= 2**30:
                found.append(f"pid {entry.name} uid {uid}: {line}")
        return found

    def shared_files():
        found = []
        for shared in ("/tmp", "/dev/shm"):
            for path, folders, files in os.walk(shared):
                for name in folders + files:
                    try:
                        if os.lstat(os.path.join(path, name)).st_uid >= 2**30:
                            found.append(os.path.join(path, name))
                    except OSError:
                        pass
        return found

    report = {}
    for run in plan["runs"]:
        for name in ("submission", "results"):
            shutil.rmtree(ROOT / name, ignore_errors=True)
        (ROOT / "submission").mkdir()
        for name, source in run["files"].items():
            shutil.copy(HARNESS / source, ROOT / "submission" / name)
        start = time.monotonic()
        done = subprocess.run([str(ROOT / "source" / "run_autograder")], capture_output=True,
                              text=True, timeout=600)
        seconds = time.monotonic() - start
        results = ROOT / "results" / "results.json"
        first = results.read_text() if results.exists() else None
        time.sleep(run["wait"])
        report[run["name"]] = {
            "results": first, "later": results.read_text() if results.exists() else None,
            "seconds": seconds, "returncode": done.returncode, "stdout": done.stdout,
            "stderr": done.stderr[-4000:], "results_folder": sorted(os.listdir(ROOT / "results")),
            "root_folder": sorted(os.listdir(ROOT)), "survivors": survivors(),
            "shared_files": shared_files()}
    (HARNESS / "report.json").write_text(json.dumps(report))
    """)


def notebook_bytes(notebook) -> bytes:
    return nbformat.writes(notebook).encode()


def run_gradescope(base: Path, labs: list[Path], limits: Limits | None,
                   runs: list[tuple[str, str, bytes, float]]) -> dict:
    """Build the zip of ``labs`` (defaults: no forced isolation), unpack it into
    ``base/autograder/source`` and grade each of ``runs`` (name, submitted file name,
    content, seconds to wait afterwards) in one Docker-like container."""
    base.mkdir(parents=True)
    zip_path = build_autograder(labs, base / "autograder.zip", limits=limits)
    root, harness = base / "autograder", base / "harness"
    root.mkdir(mode=0o755)
    harness.mkdir(mode=0o700)
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(root / "source")
    (root / "source" / "run_autograder").chmod(0o755)
    plan = {"marker": MARKER, "runs": []}
    for name, file_name, content, wait in runs:
        (harness / f"{name}.ipynb").write_bytes(content)
        plan["runs"].append({"name": name, "files": {file_name: f"{name}.ipynb"},
                             "wait": wait})
    (harness / "plan.json").write_text(json.dumps(plan))
    (harness / "driver.py").write_text(DRIVER)
    env = environment(LABKIT_PYTHON=sys.executable, **{SECRET_VARIABLE: SECRET})
    done = run_in_container([sys.executable, "/harness/driver.py"],
                            {str(root): "/autograder", str(harness): "/harness"}, env,
                            timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((harness / "report.json").read_text())
    for name, run in report.items():
        print(f"{name}: run_autograder took {run['seconds']:.1f} s")
    return report


def lab_00_runs() -> list[tuple[str, str, bytes, float]]:
    solved = exercises(LAB_00)
    sparsity, size, *_ = solved
    wrong = {**solved, sparsity: WRONG_SPARSITY, size: WRONG_SIZE}
    return [("correct", "00_baseline.ipynb", notebook_bytes(submission(LAB_00, **solved)), 0),
            ("wrong", "my lab.ipynb", notebook_bytes(submission(LAB_00, **wrong)), 0)]


def trick_runs() -> list[tuple[str, str, bytes, float]]:
    instructor = tiny_instructor()
    tricks = {"honest": solutions(instructor),
              "read_labs": {"cell_2": READ_LABS, "cell_4": USE_STOLEN},
              "read_environ": {"cell_2": READ_ENVIRON, "cell_4": USE_ENVIRON},
              "write_results": {"cell_2": WRITE_RESULTS, "cell_4": WRONG_KEEP},
              "detached": {"cell_2": DETACHED, "cell_4": WRONG_KEEP}}
    return [(name, f"{TINY}.ipynb", notebook_bytes(student_copy(instructor, **sources)),
             8 if name == "detached" else 0) for name, sources in tricks.items()]


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> dict:
    """Lab 00's container and the tricks' container, run side by side."""
    base = tmp_path_factory.mktemp("container")
    lab_00 = base / "lab-00-labs" / LAB_00.name
    lab_00.parent.mkdir()
    lab_00.write_bytes(LAB_00.read_bytes())
    tiny = base / "tiny-labs" / f"{TINY}.ipynb"
    tiny.parent.mkdir()
    nbformat.write(tiny_instructor(), tiny)
    with ThreadPoolExecutor(2) as pool:
        lab = pool.submit(run_gradescope, base / "lab-00", [lab_00], None, lab_00_runs())
        tricks = pool.submit(run_gradescope, base / "tricks", [tiny], TRICK_LIMITS,
                             trick_runs())
        return {**lab.result(), **tricks.result()}


def results_of(graded: dict, name: str) -> dict:
    run = graded[name]
    assert run["results"] is not None, run
    results = json.loads(run["results"])
    assert "in the container isolation" in run["stdout"], run
    assert REVIEW not in results["output"], results
    assert run["survivors"] == [], run
    assert run["shared_files"] == [], run
    assert run["later"] == run["results"], run
    return results


def scores(results: dict) -> dict[str, tuple[int, int]]:
    return {test["name"].split(": ", 1)[1]: (test["score"], test["max_score"])
            for test in results["tests"] if test["max_score"]}


def outputs(results: dict) -> dict[str, str]:
    return {test["name"].split(": ", 1)[1]: test["output"] for test in results["tests"]
            if test["max_score"]}


# --- the container itself --------------------------------------------------------------


def test_the_container_refuses_namespaces_and_the_grader_chooses_container(tmp_path):
    script = textwrap.dedent("""\
        import subprocess
        from labkit.grading import isolation
        nested = subprocess.run(["bwrap", "--unshare-pid", "--ro-bind", "/", "/", "true"],
                                capture_output=True, text=True)
        print("nested", nested.returncode, nested.stderr.strip())
        print("chosen", isolation.choose())
        """)
    done = run_in_container([sys.executable, "-c", script], {}, environment(), timeout=300)
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert done.returncode == 0, done.stderr
    assert not lines["nested"].startswith("0 "), lines
    assert "Operation not permitted" in lines["nested"], lines
    assert lines["chosen"] == "container", done.stdout


# --- lab 00 -----------------------------------------------------------------------------


def test_a_correct_lab_00_submission_gets_full_marks_in_the_container(graded):
    results = results_of(graded, "correct")
    assert scores(results) == {"check_get_sparsity": (1, 1), "check_get_model_size": (1, 1)}, \
        results
    assert results["score"] == 2


def test_a_wrong_lab_00_submission_gets_nothing_in_the_container(graded):
    results = results_of(graded, "wrong")
    assert scores(results) == {"check_get_sparsity": (0, 1), "check_get_model_size": (0, 1)}, \
        results
    assert results["score"] == 0
    assert outputs(results)["check_get_sparsity"].startswith(
        "get_sparsity: case 'all non-zero' failed"), results


# --- tricks, on the tiny lab ------------------------------------------------------------

AGP, KEEP = "check_agp_sparsity", "check_get_num_channels_to_keep"
TRICKED = {AGP: (0, 2), KEEP: (0, 1)}


def test_an_honest_tiny_submission_gets_full_marks_in_the_container(graded):
    """The control: the tricks' zeros below are the tricks', not the container's."""
    results = results_of(graded, "honest")
    assert scores(results) == {"check_agp_sparsity": (2, 2),
                               "check_get_num_channels_to_keep": (1, 1)}, results


def test_reading_the_instructor_notebooks_earns_nothing(graded):
    results = results_of(graded, "read_labs")
    assert scores(results) == TRICKED, results
    assert outputs(results)["check_agp_sparsity"].startswith("agp_sparsity: case "), results
    assert REVIEW in graded["read_labs"]["stdout"]  # the flag goes to the instructor only


def test_a_detached_process_cannot_rewrite_the_results_and_is_gone(graded):
    results = results_of(graded, "detached")  # unchanged 8 s later, no process left
    assert scores(results) == TRICKED, results
    assert "forged" not in graded["detached"]["later"]
    assert REVIEW in graded["detached"]["stdout"]


def test_the_graders_environment_cannot_be_read_through_proc(graded):
    results = results_of(graded, "read_environ")
    assert scores(results) == TRICKED, results
    assert SECRET not in graded["read_environ"]["results"]
    assert SECRET_VARIABLE not in graded["read_environ"]["results"]
    assert outputs(results)["check_agp_sparsity"].startswith("agp_sparsity: case "), results


def test_the_kernel_cannot_write_the_results(graded):
    run = graded["write_results"]
    results = results_of(graded, "write_results")
    assert scores(results) == TRICKED, results
    assert "forged" not in run["results"]
    assert run["results_folder"] == ["results.json"], run
    assert "results.json" not in run["root_folder"], run


def test_no_results_output_shows_review_flags(graded):
    for name, run in graded.items():
        if run["results"] is not None:
            assert REVIEW not in json.loads(run["results"])["output"], name


# --- every trick, graded with `labkit grade` in container mode -------------------------

PLANTED = "PLANTED-CONTAINER-HOST-FILE-7d21"
GRADE_IN_CONTAINER = textwrap.dedent("""\
    from pathlib import Path
    from labkit.grading.grade import grade
    from labkit.grading.records import GradingConfig, Limits

    if __name__ == "__main__":  # the grading jobs start by spawning
        limits = Limits(cell_timeout_s=20, notebook_timeout_s=120, disk_mib=96, files=5000,
                        processes=128, memory_gib=2)
        grade(Path("submissions"), Path("labs"), Path("out/grades.csv"), jobs=2,
              config=GradingConfig(limits, isolation="container"))
        print("graded")
    """)


@pytest.fixture(scope="module")
def tricked(tmp_path_factory) -> dict:
    """The tiny lab's tricks, each class of the sandbox's red team, graded side by side
    (two jobs) by ``grade`` in the container's own isolation."""
    base = tmp_path_factory.mktemp("container-tricks") / "course"
    solved = solutions(tiny_instructor())
    students = {**{name: {**solved, **edits} for name, edits in
                   {**reference_tricks("/course/planted.txt"),
                    **resource_tricks(solved)}.items()}, "honest": solved}
    course(base, {"planted.txt": PLANTED, "grade.py": GRADE_IN_CONTAINER}, students)
    done = run_in_container(["bash", "-c", "cd /course && python grade.py"],
                            {str(base): "/course"},
                            environment(HOME="/course/home", LABKIT_CACHE="/course/home/cache"),
                            timeout=900)
    assert "graded" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    out = base / "out"
    return {"rows": read_rows(out / "grades.csv"),
            "tables": "".join(path.read_text() for path in out.iterdir())}


def test_every_reference_trick_earns_nothing_in_container_mode(tricked):
    rows = tricked["rows"]
    assert {row["mode"] for row in rows.values()} == {"container"}
    assert (rows["honest", AGP]["earned"], rows["honest", KEEP]["earned"]) == ("2", "1")
    for student in reference_tricks(""):
        assert rows[student, AGP]["earned"] == "0", (student, rows[student, AGP])
        assert rows[student, KEEP]["earned"] == "0", student
    assert PLANTED not in tricked["tables"]


def test_every_resource_abuse_costs_that_submission_only_in_container_mode(tricked):
    rows = tricked["rows"]
    passed = {student: [rows[student, check]["passed"] == "True" for check in (AGP, KEEP)]
              for student, _ in rows}
    quota = "not run: the submission stored more than its disk quota of 96 MiB or 5,000 files"
    for student in ("filler", "folders", "shm"):
        assert rows[student, AGP]["message"] == quota, rows[student, AGP]
    # Without cgroups, the watcher sums resident memory (the forks' shared pages in each,
    # as Docker gives the grader no ptrace to read their proportional share) and stops
    # a fork bomb or a pool as a whole; it stops a process that widens its affinity,
    # which it may not put back without CAP_SYS_NICE.
    memory = "not run: the submission's processes used more than 2 GiB of memory together"
    assert passed["bomber"][1] is False and passed["pool"][1] is False
    assert {rows["pool", AGP]["message"], rows["bomber", AGP]["message"]} <= {memory, ""}
    assert rows["hog", AGP]["message"] == (
        "not run: the submission's processes left the CPU cores of their grading job")
    assert passed["honest"] == [True, True]
