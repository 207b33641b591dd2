"""Isolation: run a submission's processes under the strongest mode the machine allows.

Three modes, strongest first (:data:`~labkit.grading.records.MODES`), one runner each:

- ``bwrap`` (:mod:`labkit.grading.sandbox`): a bubblewrap sandbox with new PID, network,
  IPC and UTS namespaces, the system read-only, only the scratch folder visible;
- ``container`` (:mod:`labkit.grading.container`): for a grader that is root where
  namespaces are refused (Gradescope, Docker): every process runs as a fresh
  unprivileged user id with ``no_new_privs``, so it can neither read the instructor's
  folders nor write the results, and every process of that id is killed at the end;
- ``process`` (:mod:`labkit.grading.process`): for a non-root account without
  bubblewrap (macOS, locked-down servers): a child subreaper and a process group, so
  nothing the submission starts outlives it.

In every mode the same limits hold (:class:`~labkit.grading.records.Limits`): resource
limits set in the child before it runs; pids, memory and cpuset cgroups where the grader
may make them (else the process limit counts the submission's own processes, and the
watcher sums their memory and puts back any process that left the grading job's cores);
and a watcher that kills everything past the time limit, the disk quota (blocks and
inodes) or the memory limit. :func:`choose` picks the mode, a
:class:`Runner` of it holds one submission, :func:`run` runs a command under it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import psutil

from labkit.grading.records import BWRAP, CONTAINER, MODES, PROCESS, Limits


class IsolationUnavailable(RuntimeError):
    """The isolation mode asked for cannot run on this machine; the message says why."""


@dataclass(frozen=True)
class Finished:
    """How a run ended: the exit code, and why it was stopped (``"time"``, ``"disk"``,
    ``"memory"``, ``"cores"`` or ``""``)."""

    returncode: int
    stopped: str = ""


class Runner:
    """One isolation mode over one scratch folder; the modes override what differs.

    ``inside`` is where the scratch folder appears to the submission; ``command`` wraps
    an argv; ``enter`` runs in the child after the limits are set, before it executes;
    ``members`` are the submission's processes now; ``close`` kills every one left.
    """

    name = ""

    def __init__(self, root: Path, limits: Limits) -> None:
        self.root, self.limits = root, limits
        self.overlays: list[tuple[Path, Path]] = []
        """Folders to show in place of others, (source, target), where the mode can."""

    @property
    def inside(self) -> Path:
        return self.root

    def command(self, argv: list[str], env: dict[str, str]) -> list[str]:
        return argv

    def process_limit(self) -> int:
        """``RLIMIT_NPROC``: the kernel counts every process of the real user id, so the
        submission gets the limit on top of what the account runs now."""
        return self.limits.processes + own_processes(os.getuid())

    def enter(self) -> None:
        """Run in the child before it executes (after the limits)."""

    def members(self, leader: psutil.Process) -> list[psutil.Process]:
        try:
            return [leader, *leader.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def extra_bytes(self) -> int:
        """Storage the submission holds outside its scratch folder (counted in the quota)."""
        return 0

    def close(self, process: subprocess.Popen) -> None:
        kill_tree(process)


def own_processes(uid: int) -> int:
    """The tasks (threads) the user id ``uid`` runs now, as ``RLIMIT_NPROC`` counts them."""
    count = 0
    for process in psutil.process_iter(["uids", "num_threads"]):
        with contextlib.suppress(psutil.Error, TypeError):
            if process.info["uids"].real == uid:
                count += process.info["num_threads"] or 1
    return count


def runners() -> dict[str, type[Runner]]:
    """The runner of each mode, by name."""
    from labkit.grading import container, process, sandbox

    return {BWRAP: sandbox.BwrapRunner, CONTAINER: container.ContainerRunner,
            PROCESS: process.ProcessRunner}


def probe(mode: str) -> str | None:
    """Why ``mode`` cannot run here, or None when it can."""
    if mode not in MODES:
        raise ValueError(f"isolation must be one of {', '.join(MODES)}, got {mode!r}")
    return runners()[mode].probe()


def choose(requested: str | None = None) -> str:
    """The mode to grade in: ``requested`` when it can run here, else
    :class:`IsolationUnavailable` saying why; by default the strongest that can."""
    if requested is not None:
        reason = probe(requested)
        if reason:
            raise IsolationUnavailable(f"isolation {requested} cannot run here: {reason}")
        return requested
    reasons = []
    for mode in MODES:
        reason = probe(mode)
        if reason is None:
            return mode
        reasons.append(f"{mode}: {reason}")
    raise IsolationUnavailable("no isolation mode can run here (" + "; ".join(reasons) + ")")


# --- limits ---------------------------------------------------------------------------


CGROUP_ROOTS = {"pids": (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")),
                "memory": (Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup")),
                "cpuset": (Path("/sys/fs/cgroup/cpuset"), Path("/sys/fs/cgroup"))}
"""Where a cgroup of each controller can be made: cgroup v1's hierarchy, or a v2 tree."""


def _settings(controller: str, root: Path, limits: Limits) -> list[tuple[str, str]]:
    """The files to write in a new cgroup of ``controller`` under ``root``, in order."""
    if controller == "pids":
        return [("pids.max", str(limits.processes))]
    if controller == "memory":
        name = "memory.limit_in_bytes" if root.name == "memory" else "memory.max"
        return [(name, str(int(limits.memory_gib * 2**30)))]
    mems = next((root / name).read_text().strip() for name in
                ("cpuset.mems", "cpuset.mems.effective") if (root / name).is_file())
    return [("cpuset.mems", mems), ("cpuset.cpus", ",".join(map(str, cores())))]


def _make_group(controller: str, limits: Limits) -> Path | None:
    for root in CGROUP_ROOTS[controller]:
        candidate = root / f"labkit-{uuid.uuid4().hex[:12]}"
        try:
            settings = _settings(controller, root, limits)
            candidate.mkdir()
        except (OSError, StopIteration):
            continue
        try:
            for name, value in settings:
                (candidate / name).write_text(f"{value}\n")
            return candidate
        except OSError:
            candidate.rmdir()
    return None


def cores() -> list[int]:
    """The CPU cores this process may run on (its affinity mask, where there is one)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


@dataclass(frozen=True)
class Groups:
    """The submission's cgroups: pids (also finds every process it started, detached or
    not), memory (all its processes together) and cpuset (the grading job's cores, which
    no process inside can leave); None where none could be made."""

    pids: Path | None
    memory: Path | None
    cpus: Path | None

    def all(self) -> list[Path]:
        return [group for group in (self.pids, self.memory, self.cpus) if group is not None]

    def join(self) -> None:
        """Move the calling process into the groups (run in the child)."""
        for group in self.all():
            (group / "cgroup.procs").write_text(f"{os.getpid()}\n")


@contextlib.contextmanager
def cgroups(limits: Limits) -> Iterator[Groups]:
    """Fresh pids, memory and cpuset cgroups for one submission where this machine lets
    the grader make them (root, or a delegated cgroup).

    ``RLIMIT_NPROC`` alone does not stop a fork bomb when the grader runs as root,
    which the kernel exempts; ``RLIMIT_AS`` bounds one process, not a pool of them; and
    a process may widen its own CPU affinity, but not its cpuset. The cgroups bound the
    submission as a whole.
    """
    groups = Groups(*(_make_group(controller, limits)
                      for controller in ("pids", "memory", "cpuset")))
    try:
        yield groups
    finally:
        for group in groups.all():
            kill_group(group)
            for _ in range(50):
                try:
                    group.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


def kill_group(group: Path) -> None:
    """Kill every process in the cgroup ``group``, until none is left."""
    for _ in range(50):
        try:
            pids = [int(pid) for pid in (group / "cgroup.procs").read_text().split()]
        except OSError:
            return
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


LIBC = ctypes.CDLL(None, use_errno=True)
"""The C library, loaded once here: a child between fork and exec loads nothing."""


def prctl(option: int, value: int) -> None:
    """Linux ``prctl(option, value)``; OSError when the kernel refuses it."""
    if LIBC.prctl(option, value, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


def _enter(runner: Runner, limits: Limits, threads: int, groups: Groups,
           nproc: int) -> None:
    """In the child: cgroups, resource limits, then the mode's own step."""
    groups.join()
    memory = int(limits.memory_gib * 2**30)
    cpu = int(limits.notebook_timeout_s * threads) + 1
    size = int(limits.file_size_mib * 2**20)
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    if hasattr(resource, "RLIMIT_NPROC"):
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    runner.enter()


# --- watching -------------------------------------------------------------------------


def folder_usage(folder: Path) -> tuple[int, int]:
    """What ``folder`` holds: bytes in allocated blocks (at least the apparent size),
    and the number of files and folders (links not followed)."""
    total, entries = 0, 0
    for path, folders, files in os.walk(folder):
        entries += len(folders) + len(files)
        for name in files:
            with contextlib.suppress(OSError):
                info = os.lstat(os.path.join(path, name))
                total += max(info.st_size, getattr(info, "st_blocks", 0) * 512)
        total += 4096 * len(folders)
    return total, entries


def kill_tree(process: subprocess.Popen) -> None:
    """Kill ``process``, its process group, and every descendant."""
    try:
        descendants = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    for child in descendants:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    process.wait()


def kill_all(members: Callable[[], list[psutil.Process]]) -> None:
    """Kill every process ``members()`` lists, again and again until it lists none (a
    process may start another while it dies); children that end are reaped."""
    for _ in range(100):
        found = members()
        if not found:
            return
        for member in found:
            with contextlib.suppress(psutil.Error):
                member.kill()
        time.sleep(0.05)
        reap()


def reap() -> None:
    """Collect the exit status of every child of this process that has ended."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def _resident_bytes(processes: Sequence[psutil.Process]) -> int:
    """The memory ``processes`` hold together: their proportional set sizes (a page
    shared by n processes counts 1/n in each, so a thousand forks of one kernel count
    once), or resident set sizes where the kernel does not say."""
    total = 0
    for member in processes:
        with contextlib.suppress(psutil.Error):
            try:
                info = member.memory_full_info()
            except psutil.AccessDenied:
                info = member.memory_info()
            total += getattr(info, "pss", info.rss)
    return total


def keep_on_cores(processes: Sequence[psutil.Process], allowed: list[int]) -> bool:
    """Put back on the ``allowed`` cores each process that widened its CPU affinity
    (where no cpuset holds the submission, a process may call ``sched_setaffinity``);
    False when one cannot be put back (setting another user's affinity needs
    ``CAP_SYS_NICE``, which Docker's containers lack)."""
    kept = True
    for member in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
            if not set(member.cpu_affinity()) <= set(allowed):
                try:
                    member.cpu_affinity(allowed)
                except (psutil.AccessDenied, OSError):
                    kept = False
    return kept


def over_quota(runner: Runner, limits: Limits) -> bool:
    """Whether the submission stores more than its disk quota, in blocks or inodes."""
    used, entries = folder_usage(runner.root)
    return used + runner.extra_bytes() > limits.disk_mib * 2**20 or entries > limits.files


def watch(process: subprocess.Popen, runner: Runner, limits: Limits, groups: Groups) -> str:
    """Wait for ``process``; stop the submission past the time limit (``"time"``), the
    disk quota in blocks or inodes (``"disk"``, checked once more after it ended, so
    that filling a shared folder just before the end does not pass), or, without a
    memory cgroup, its processes' summed resident memory (``"memory"``). Without a
    cpuset, keep its processes on the grading job's cores, and stop it where one cannot
    be put back (``"cores"``), so that it cannot starve another job."""
    deadline = time.monotonic() + limits.notebook_timeout_s
    allowed = cores()
    pinned = groups.cpus is None and len(allowed) < (os.cpu_count() or 1)
    try:
        leader = psutil.Process(process.pid)
    except psutil.NoSuchProcess:
        leader = None
    while True:
        try:
            process.wait(timeout=0.5)
            return "disk" if over_quota(runner, limits) else ""
        except subprocess.TimeoutExpired:
            pass
        watched = leader is not None and (pinned or groups.memory is None)
        members = runner.members(leader) if watched else []
        reason = ("time" if time.monotonic() > deadline else
                  "cores" if pinned and not keep_on_cores(members, allowed) else
                  "disk" if over_quota(runner, limits) else
                  "memory" if groups.memory is None
                  and _resident_bytes(members) > limits.memory_gib * 2**30 else "")
        if reason:
            runner.close(process)
            return reason


def run(runner: Runner, argv: list[str], env: dict[str, str], threads: int, log: Path,
        cwd: Path) -> Finished:
    """Run ``argv`` with ``env`` in ``cwd`` under ``runner``, output to ``log``; every
    process the run started is gone when this returns. Raises OSError or
    :class:`subprocess.SubprocessError` when the isolation itself cannot start."""
    limits = runner.limits
    with open(log, "wb") as output, cgroups(limits) as groups:
        process = subprocess.Popen(
            runner.command(argv, env), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=partial(_enter, runner, limits, threads, groups,
                               runner.process_limit()))
        try:
            stopped = watch(process, runner, limits, groups)
        finally:
            runner.close(process)
    return Finished(process.returncode, stopped)
