"""The isolation modes as the accounts that use them run them.

- ``process`` as an unprivileged account (no root, ``--isolation process``): a detached
  process of a dishonest submission that would rewrite ``grades.csv`` after the grader
  wrote it is killed before the tables are written;
- a busy account (hundreds of its own processes) still grades an honest submission to
  full marks in ``bwrap`` and ``process`` modes (``RLIMIT_NPROC`` counts the account's
  processes, so the limit must sit above what it already runs);
- ``container`` (root where namespaces are refused, in :mod:`containerlib`'s Docker-like
  container): nothing a submission started, detached or not, and none of its files in
  ``/tmp`` and ``/dev/shm`` is left when ``labkit grade`` returns.

The unprivileged account is a numeric user id with no groups (``setpriv``), in a mount
namespace where it can reach the course's Python (:func:`containerlib.user_command`).
"""

import contextlib
import os
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from labkit.grading import isolation
from labkit.grading.records import Limits
from tests.support.containerlib import (
    BWRAP,
    SETPRIV,
    course,
    environment,
    read_rows,
    run_in_container,
    seccomp_supported,
    user_command,
)
from tests.support.tinylab import TINY, solutions, tiny_instructor

MARKER = "ISOLATION-TEST-DAEMON"
AGP, KEEP = "check_agp_sparsity", "check_get_num_channels_to_keep"
WRONG_AGP = ("def agp_sparsity(t, n, s_initial, s_final):\n"
             "    return s_initial + (s_final - s_initial) * t / n\n")
WRONG_KEEP = "def get_num_channels_to_keep(channels, prune_ratio):\n    return channels\n"
GRADE_OPTIONS = "--jobs 2 --cell-timeout 60 --timeout 300"
WORK = "/tmp/work"
"""Where the test's folder appears to the unprivileged account."""


def _unprivileged_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return "needs Linux"
    if os.geteuid() != 0:
        return "needs root to run the grader as another (unprivileged) user id"
    if BWRAP is None:
        return "needs bwrap (apt-get install bubblewrap)"
    if SETPRIV is None:
        return "needs setpriv (util-linux)"
    return None


UNPRIVILEGED = _unprivileged_reason()
needs_user = pytest.mark.skipif(UNPRIVILEGED is not None,
                                reason=f"no unprivileged account here: {UNPRIVILEGED}")

SCAN = textwrap.dedent(f"""\
    import os
    from pathlib import Path
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            line = (entry / "cmdline").read_bytes().replace(b"\\0", b" ").decode()
            status = (entry / "status").read_text()
        except (OSError, ValueError):
            continue
        uid = int(next(l.split()[1] for l in status.splitlines() if l.startswith("Uid:")))
        if "{MARKER}" in line:
            print(f"survivor pid {{entry.name}} uid {{uid}}: {{line}}")
        elif uid >= 2**30:
            print(f"container process pid {{entry.name}} uid {{uid}}: {{line}}")
    for shared in ("/tmp", "/dev/shm"):
        for path, folders, files in os.walk(shared):
            for name in folders + files:
                try:
                    if os.lstat(os.path.join(path, name)).st_uid >= 2**30:
                        print("shared file", os.path.join(path, name))
                except OSError:
                    pass
    """)
SCAN_FILE = "scan.py"
"""Prints each process of the test's daemons (``survivor``) or of a container-mode user
id (``container process``) still running, and each file such a user id left in ``/tmp``
or ``/dev/shm`` (``shared file``)."""


def detached(script: str) -> str:
    """Exercise source that starts ``script`` in a process detached twice (double fork,
    new session), which the kernel does not wait for."""
    return textwrap.dedent(f"""\
        import os, sys
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv(sys.executable, [sys.executable, "-c", {script!r}, "{MARKER}"])
            os._exit(0)
        os.wait()
        """)


def fresh_user() -> int:
    """A user id no account has (below the container mode's range)."""
    return 2**29 + secrets.randbelow(2**29)


def run_as_user(uid: int, base: Path, script: str, timeout: float = 600
                ) -> subprocess.CompletedProcess:
    """``script`` (bash) as ``uid`` in :data:`WORK` (``base`` bound there)."""
    env = environment(HOME=f"{WORK}/home", LABKIT_CACHE=f"{WORK}/home/cache", USER="grader")
    command = user_command(["bash", "-c", f"cd {WORK} && {script}"], uid, {str(base): WORK},
                           env)
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    finally:
        kill_user(uid)


def kill_user(uid: int) -> None:
    """Kill whatever the test's user id still runs (after a failure or a timeout)."""
    for process in psutil.process_iter(["uids"]):
        if process.info["uids"] and process.info["uids"].real == uid:
            with contextlib.suppress(psutil.Error):
                process.kill()


def show(done: subprocess.CompletedProcess) -> str:
    return f"exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"


# --- process mode, unprivileged --------------------------------------------------------


@needs_user
def test_process_mode_as_a_user_kills_a_detached_process_that_rewrites_the_table(tmp_path):
    uid = fresh_user()
    forged = "\n".join(["student,lab,check,passed,points,earned,message,mode",
                        f"dishonest,{TINY},{AGP},True,2,2,,process",
                        f"dishonest,{TINY},{KEEP},True,1,1,,process", ""])
    daemon = textwrap.dedent(f"""\
        import os, time
        table = "{WORK}/out/grades.csv"
        end = time.time() + 120
        while time.time() < end:
            try:
                if os.path.exists(table) and "forged" not in open(table).read():
                    with open(table, "w") as file:
                        file.write({forged!r} + "forged\\n")
            except OSError:
                pass
            time.sleep(0.1)
        """)
    solved = solutions(tiny_instructor())
    base = course(tmp_path / "course", {SCAN_FILE: SCAN}, {
        "honest": solved,
        "dishonest": {"cell_2": detached(daemon) + WRONG_AGP, "cell_4": WRONG_KEEP}}, uid)

    done = run_as_user(uid, base, textwrap.dedent(f"""\
        id -u
        python -m labkit grade submissions --labs labs --out out/grades.csv \\
            --isolation process {GRADE_OPTIONS}
        echo "grade exited $?"
        sleep 8
        python scan.py
        """))

    assert done.stdout.splitlines()[0] == str(uid), show(done)
    assert "grade exited 0" in done.stdout, show(done)
    assert "labkit grade: isolation process" in done.stdout, show(done)
    assert "survivor" not in done.stdout, show(done)
    table = (base / "out" / "grades.csv").read_text()
    assert "forged" not in table
    rows = read_rows(base / "out" / "grades.csv")
    assert {key: row["earned"] for key, row in rows.items()} == {
        ("dishonest", AGP): "0", ("dishonest", KEEP): "0",
        ("honest", AGP): "2", ("honest", KEEP): "1"}, table
    assert {row["mode"] for row in rows.values()} == {"process"}


# --- a busy account ---------------------------------------------------------------------


@needs_user
@pytest.mark.parametrize("mode", ["bwrap", "process"])
def test_a_busy_account_still_grades_an_honest_submission(tmp_path, mode):
    uid = fresh_user()
    base = course(tmp_path / "course", {SCAN_FILE: SCAN},
                  {"honest": solutions(tiny_instructor())}, uid)

    done = run_as_user(uid, base, textwrap.dedent(f"""\
        for i in $(seq 300); do sleep 600 & done
        echo "own processes $(ps -u {uid} --no-headers | wc -l)"
        python -c "from labkit.grading import isolation; print('probe', isolation.probe('{mode}'))"
        python -m labkit grade submissions --labs labs --out out/grades.csv \\
            --isolation {mode} {GRADE_OPTIONS}
        echo "grade exited $?"
        kill $(jobs -p) 2>/dev/null
        true
        """))

    probe = next((line for line in done.stdout.splitlines() if line.startswith("probe ")), "")
    if mode == "bwrap" and probe != "probe None":
        pytest.skip(f"bwrap cannot run unprivileged here: {probe or show(done)}")
    count = next(line for line in done.stdout.splitlines() if line.startswith("own processes"))
    assert int(count.split()[-1]) >= 300, show(done)
    assert "grade exited 0" in done.stdout, show(done)
    rows = read_rows(base / "out" / "grades.csv")
    assert {key: (row["earned"], row["mode"]) for key, row in rows.items()} == {
        ("honest", AGP): ("2", mode), ("honest", KEEP): ("1", mode)}, \
        (show(done), [row["message"] for row in rows.values()])


# --- container mode ---------------------------------------------------------------------

CONTAINER = seccomp_supported() or UNPRIVILEGED


@pytest.mark.skipif(CONTAINER is not None,
                    reason=f"no Docker-like container here: {CONTAINER}")
def test_container_mode_leaves_no_process_and_no_shared_file(tmp_path):
    solved = solutions(tiny_instructor())
    leaves = textwrap.dedent("""\
        import os, time
        for path in ("/tmp/leftover-daemon", "/dev/shm/leftover-daemon"):
            with open(path, "w") as file:
                file.write("left by a detached process")
        time.sleep(600)
        """)
    litter = textwrap.dedent("""\
        import os
        os.makedirs("/tmp/leftover-folder/inner", exist_ok=True)
        for path in ("/tmp/leftover-file", "/tmp/leftover-folder/inner/file",
                     "/dev/shm/leftover-shm"):
            with open(path, "w") as file:
                file.write("left by the kernel")
        """)
    base = course(tmp_path / "course", {SCAN_FILE: SCAN}, {
        "litter": {**solved, "cell_2": litter + detached(leaves) + solved["cell_2"]}})

    done = run_in_container(["bash", "-c", textwrap.dedent(f"""\
        cd /course
        python -m labkit grade submissions --labs labs --out out/grades.csv \\
            --isolation container {GRADE_OPTIONS}
        echo "grade exited $?"
        python scan.py
        ls -a /tmp /dev/shm
        """)], {str(base): "/course"},
        environment(HOME="/course/home", LABKIT_CACHE="/course/home/cache"), timeout=600)

    assert "grade exited 0" in done.stdout, show(done)
    assert "labkit grade: isolation container" in done.stdout, show(done)
    assert "survivor" not in done.stdout, show(done)
    assert "container process" not in done.stdout, show(done)
    assert "shared file" not in done.stdout, show(done)
    assert "leftover" not in done.stdout, show(done)
    rows = read_rows(base / "out" / "grades.csv")
    # the files were written (the cell ran to its end: full marks), then removed
    assert {key: (row["earned"], row["mode"]) for key, row in rows.items()} == {
        ("litter", AGP): ("2", "container"), ("litter", KEEP): ("1", "container")}, \
        show(done)


# --- cores ------------------------------------------------------------------------------


def test_a_process_that_widens_its_affinity_is_put_back_on_the_jobs_cores():
    if len(isolation.cores()) < 2:
        pytest.skip("one core: nothing to widen to")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        isolation.keep_on_cores([psutil.Process(child.pid)], [0])
        assert psutil.Process(child.pid).cpu_affinity() == [0]
    finally:
        child.kill()
        child.wait()


def test_a_cpuset_holds_the_submission_to_the_graders_cores_where_one_can_be_made():
    if len(isolation.cores()) < 2:
        pytest.skip("one core: nothing to widen to")
    probe = ("import os\nos.sched_setaffinity(0, range(os.cpu_count()))\n"
             "print(sorted(os.sched_getaffinity(0)))")
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, isolation.cores()[:1])
    try:
        with isolation.cgroups(Limits()) as groups:
            if groups.cpus is None:
                pytest.skip("no cpuset cgroup can be made here")
            done = subprocess.run([sys.executable, "-c", probe], capture_output=True,
                                  text=True, preexec_fn=groups.join, check=True)
    finally:
        os.sched_setaffinity(0, before)
    assert done.stdout.strip() == str(sorted(before)[:1])
