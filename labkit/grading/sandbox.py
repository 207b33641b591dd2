"""One bubblewrap sandbox per submission.

``bwrap`` (the namespace sandbox Flatpak uses; Debian/Ubuntu package ``bubblewrap``)
runs pytest, nbval and the kernel in new user (where available), PID, network, IPC, UTS
and cgroup namespaces. Inside, the system (``/usr``), the Python installation, the
course environment and the ``labkit`` package are mounted read-only; the submission's
scratch folder is mounted at ``/grading`` (its only writable folder, watched against a
disk quota) and ``/tmp`` is a size-limited tmpfs. Nothing else of the grader's machine
is there: not the instructor's labs, not the other submissions, not the output folder,
not the grader's home or environment (``--clearenv``), no network. ``--die-with-parent``
and the PID namespace end every process of the submission with the sandbox, so nothing
it starts outlives it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import labkit

INSIDE = Path("/grading")
"""Where the scratch folder appears inside the sandbox."""

PACKAGE = "bubblewrap"
ETC_FILES = ("/etc/ld.so.cache", "/etc/localtime", "/etc/passwd", "/etc/group",
             "/etc/nsswitch.conf", "/etc/hosts")


class SandboxUnavailable(RuntimeError):
    """``bwrap`` is missing or cannot create its namespaces on this machine."""


def bwrap() -> str | None:
    """The path of the ``bwrap`` executable, or None."""
    return shutil.which("bwrap")


def _read_only_roots() -> list[Path]:
    """The folders the kernel needs to read: system, Python, course environment, labkit."""
    roots = [Path("/usr"), Path(sys.base_prefix), Path(sys.prefix),
             Path(labkit.__file__).resolve().parent]
    kept: list[Path] = []
    for root in sorted({root.resolve() for root in roots}, key=lambda p: len(p.parts)):
        if not any(root == k or k in root.parents for k in kept):
            kept.append(root)
    return kept


def command(scratch: Path, argv: list[str], env: dict[str, str], tmp_mib: float,
            working_dir: Path = INSIDE / "work") -> list[str]:
    """The ``bwrap`` command line that runs ``argv`` with ``env`` over ``scratch``."""
    executable = bwrap()
    if executable is None:
        raise SandboxUnavailable(f"bwrap is not installed: install the {PACKAGE} package "
                                 f"(apt-get install {PACKAGE}) or grade with --no-sandbox")
    line = [executable, "--unshare-user-try", "--unshare-pid", "--unshare-net",
            "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--die-with-parent",
            "--new-session", "--hostname", "sandbox", "--clearenv",
            "--size", str(int(tmp_mib * 2**20)), "--tmpfs", "/tmp"]
    for root in _read_only_roots():  # after /tmp: a root may lie under it
        line += ["--ro-bind", str(root), str(root)]
    for name in ("bin", "lib", "lib64", "sbin"):
        path = Path("/") / name
        if path.is_symlink():
            line += ["--symlink", str(path.readlink()), str(path)]
        elif path.is_dir():
            line += ["--ro-bind", str(path), str(path)]
    for path in ETC_FILES:
        line += ["--ro-bind-try", path, path]
    line += ["--proc", "/proc", "--dev", "/dev",
             "--bind", str(scratch), str(INSIDE), "--chdir", str(working_dir)]
    for key, value in sorted(env.items()):
        line += ["--setenv", key, value]
    return [*line, "--", *argv]


@lru_cache(maxsize=1)
def probe() -> str | None:
    """Why a sandbox cannot start here (None when it can): ``bwrap`` missing or its
    namespaces refused."""
    if bwrap() is None:
        return (f"bwrap is not installed: install the {PACKAGE} package "
                f"(apt-get install {PACKAGE}), or grade with --no-sandbox")
    scratch = Path(tempfile.mkdtemp(prefix="labkit-probe-"))
    try:
        result = subprocess.run(command(scratch, ["/bin/true"], {}, 16, INSIDE),
                                capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"bwrap could not start ({error}); grade with --no-sandbox"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if result.returncode != 0:
        reason = result.stderr.decode(errors="replace").strip()[:300]
        return (f"bwrap cannot create its namespaces here ({reason}); enable unprivileged "
                f"user namespaces or run as root, or grade with --no-sandbox")
    return None


def require() -> None:
    """Raise :class:`SandboxUnavailable` saying what to install when no sandbox starts."""
    reason = probe()
    if reason:
        raise SandboxUnavailable(reason)


PIDS_ROOTS = (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup"))
"""Where a pids cgroup can be made: cgroup v1's pids hierarchy, or a v2 tree."""


@contextlib.contextmanager
def process_group(limit: int) -> Iterator[Path | None]:
    """A fresh pids cgroup that holds at most ``limit`` processes, where this machine
    lets the grader make one (root, or a delegated cgroup); None where it does not.

    ``RLIMIT_NPROC`` alone does not stop a fork bomb when the grader runs as root,
    which the kernel exempts; the cgroup does, and it also finds every process a
    submission started, detached or not, so that :func:`kill_group` ends them all.
    """
    group = None
    for root in PIDS_ROOTS:
        candidate = root / f"labkit-{uuid.uuid4().hex[:12]}"
        try:
            candidate.mkdir()
        except OSError:
            continue
        try:
            (candidate / "pids.max").write_text(f"{limit}\n")
        except OSError:
            candidate.rmdir()
            continue
        group = candidate
        break
    try:
        yield group
    finally:
        if group is not None:
            kill_group(group)
            for _ in range(50):
                try:
                    group.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


def join_group(group: Path | None) -> None:
    """Move the calling process into ``group`` (run in the child before it executes)."""
    if group is not None:
        (group / "cgroup.procs").write_text(f"{os.getpid()}\n")


def kill_group(group: Path) -> None:
    """Kill every process in ``group``, until none is left."""
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
