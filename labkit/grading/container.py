"""The ``container`` mode: a fresh unprivileged user id per submission.

For a grader that runs as root where namespaces are refused: Gradescope's and most
Docker containers keep Docker's default capabilities (``CAP_SETUID`` and ``CAP_SETGID``
among them) and a seccomp profile that refuses ``unshare``, so ``bwrap`` cannot start but
changing user can. Each submission's processes run as a user id of their own, drawn at
random from ``[2^30, 2^31)`` where no account lives, with no supplementary groups and
``no_new_privs`` (no setuid program gives privileges back). As that id a submission

- cannot read or write what is closed to other users: the instructor's notebooks, the
  course secret, the grader's results and environment (``/proc/<pid>/environ`` of
  another user is unreadable), the other submissions;
- counts its own processes only under ``RLIMIT_NPROC`` (no other process has its id);
- leaves nothing behind: :meth:`ContainerRunner.close` kills every process of the id,
  detached or not, before the grader reads anything, and removes its files from the
  shared ``/tmp`` and ``/dev/shm`` (which count in its disk quota meanwhile).

The grader refuses this mode when the folders it must hide are open to other users
(:func:`exposed`); ``run_autograder`` closes Gradescope's before grading. Linux only.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import psutil

from labkit.grading.isolation import Runner, kill_all, kill_tree, prctl
from labkit.grading.records import CONTAINER, Limits

PR_SET_NO_NEW_PRIVS = 38
FIRST_ID = 2**30
SHARED = (Path("/tmp"), Path("/dev/shm"))


def fresh_id() -> int:
    """A user and group id no account and no process uses."""
    while True:
        uid = FIRST_ID + secrets.randbelow(2**30 - 2)
        if not any(process.info["uids"] and process.info["uids"].real == uid
                   for process in psutil.process_iter(["uids"])):
            return uid


def drop_privileges(uid: int) -> None:
    """In the child: no groups, the user and group ``uid``, ``no_new_privs``."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    prctl(PR_SET_NO_NEW_PRIVS, 1)


@lru_cache(maxsize=1)
def probe() -> str | None:
    """Why this mode cannot run here (None when it can): not root, no ``CAP_SETUID``,
    or the course environment unreadable for another user."""
    if not sys.platform.startswith("linux"):
        return "the container mode needs Linux"
    if os.geteuid() != 0:
        return "the container mode needs the grader to run as root"
    uid = fresh_id()
    try:
        result = subprocess.run([sys.executable, "-c", "import labkit.grading.checks"],
                                capture_output=True, timeout=120, cwd="/",
                                env={"PATH": "/usr/bin:/bin", "HOME": "/"},
                                preexec_fn=lambda: drop_privileges(uid))
    except (OSError, subprocess.SubprocessError) as error:
        return f"cannot run a process as another user ({error})"
    if result.returncode != 0:
        reason = result.stderr.decode(errors="replace").strip().splitlines()[-1:]
        return (f"an unprivileged user cannot run the course environment "
                f"({sys.executable}: {' '.join(reason)[:200]}); install it where every "
                "user can read it")
    return None


def exposed(paths: list[Path]) -> list[Path]:
    """The ``paths`` another user could read: neither the path nor a folder above it
    is closed to others (no read or search permission for "other")."""
    found = []
    for path in map(Path, paths):
        chain = [path.resolve(), *path.resolve().parents]
        closed = False
        for index, folder in enumerate(chain):
            with contextlib.suppress(OSError):
                mode = folder.stat().st_mode
                needed = stat.S_IROTH if index == 0 else stat.S_IXOTH
                closed = closed or not mode & needed
        if not closed:
            found.append(path)
    return found


class ContainerRunner(Runner):
    """Each submission as a fresh unprivileged user id."""

    name = CONTAINER
    probe = staticmethod(probe)

    def __init__(self, root: Path, limits: Limits) -> None:
        super().__init__(root, limits)
        self.uid = fresh_id()

    def own(self) -> None:
        """Give the scratch folder to the submission's user id (call before starting)."""
        os.chown(self.root, self.uid, self.uid)
        os.chmod(self.root, 0o700)
        for path, folders, files in os.walk(self.root):
            for name in folders + files:
                os.lchown(os.path.join(path, name), self.uid, self.uid)

    def process_limit(self) -> int:
        return self.limits.processes

    def enter(self) -> None:
        drop_privileges(self.uid)

    def members(self, leader: psutil.Process) -> list[psutil.Process]:
        return [process for process in psutil.process_iter(["uids"])
                if process.info["uids"] and process.info["uids"].real == self.uid]

    def _shared_files(self) -> list[tuple[Path, int]]:
        found = []
        for shared in SHARED:
            for path, folders, files in os.walk(shared):
                folders[:] = [name for name in folders  # the scratch folder is counted apart
                              if Path(path, name).resolve() != self.root.resolve()]
                for name in folders + files:
                    with contextlib.suppress(OSError):
                        info = os.lstat(os.path.join(path, name))
                        if info.st_uid == self.uid:
                            found.append((Path(path) / name,
                                          max(info.st_size, info.st_blocks * 512)))
        return found

    def extra_bytes(self) -> int:
        return sum(size for _, size in self._shared_files())

    def close(self, process: subprocess.Popen) -> None:
        """Kill every process of the user id until none is left, then remove its files
        from ``/tmp`` and ``/dev/shm``."""
        kill_tree(process)
        kill_all(lambda: self.members(psutil.Process()))
        for path, _ in self._shared_files():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    path.unlink()
