"""The ``process`` mode: nothing a submission starts outlives it.

For a non-root account without bubblewrap (macOS, locked-down servers). The submission
runs as the grader's own account, so it can read what that account can read: this mode
keeps grades honest against detached processes and runaway resources, not against a
submission that reads the instructor's files. On Linux the grading process is a *child
subreaper* (``PR_SET_CHILD_SUBREAPER``): whatever the submission starts, even a process
that detaches itself twice, stays its descendant, and :meth:`ProcessRunner.close` kills
every descendant before the grader reads anything or writes a table. Elsewhere the
submission gets a process group of its own, which a detached process can leave.
"""

from __future__ import annotations

import subprocess
import sys

import psutil

from labkit.grading.isolation import Runner, kill_all, kill_tree, prctl, reap
from labkit.grading.records import PROCESS

PR_SET_CHILD_SUBREAPER = 36


def probe() -> str | None:
    """This mode runs everywhere."""
    return None


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux); whether it is."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        prctl(PR_SET_CHILD_SUBREAPER, 1)
    except OSError:
        return False
    return True


class ProcessRunner(Runner):
    """Each submission as a process group under a subreaper (the grading process)."""

    name = PROCESS
    probe = staticmethod(probe)

    def __init__(self, root, limits) -> None:
        super().__init__(root, limits)
        become_subreaper()

    def members(self, leader: psutil.Process) -> list[psutil.Process]:
        """The grading process's descendants: the submission's, detached ones included."""
        return psutil.Process().children(recursive=True)

    def close(self, process: subprocess.Popen) -> None:
        kill_tree(process)
        kill_all(lambda: self.members(psutil.Process()))
        reap()
