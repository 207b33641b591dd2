"""The ``bwrap`` mode: one bubblewrap sandbox per submission.

``bwrap`` (the namespace sandbox Flatpak uses; Debian/Ubuntu package ``bubblewrap``,
Fedora ``bubblewrap``) runs pytest, nbval and the kernel in new user (where available),
PID, network, IPC, UTS and cgroup namespaces. Inside, the system (``/usr``), the Python
installation, the course environment and the ``labkit`` package are mounted read-only;
the submission's scratch folder is mounted at ``/grading`` (its only writable folder,
watched against the disk quota), and ``/tmp`` and ``/dev/shm`` are size-limited tmpfs
inside the same quota. Nothing else of the grader's machine is there: not the
instructor's labs, not the other submissions, not the output folder, not the grader's
home or environment (``--clearenv``), no network. ``--die-with-parent`` and the PID
namespace end every process of the submission with the sandbox. Linux only.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

import labkit
from labkit.grading.isolation import Runner
from labkit.grading.records import BWRAP, Limits

INSIDE = Path("/grading")
"""Where the scratch folder appears inside the sandbox."""

PACKAGE = "bubblewrap"
INSTALL = f"apt-get install {PACKAGE} (Debian, Ubuntu) or dnf install {PACKAGE} (Fedora)"
ETC_FILES = ("/etc/ld.so.cache", "/etc/localtime", "/etc/passwd", "/etc/group",
             "/etc/nsswitch.conf", "/etc/hosts")


def bwrap() -> str | None:
    """The path of the ``bwrap`` executable, or None."""
    return shutil.which("bwrap")


def _read_only_roots() -> list[Path]:
    """The folders the kernel needs to read: system, Python, course environment, labkit
    (each where links lead, and the environment also where the grader named it, as
    ``sys.executable`` does)."""
    roots = [Path("/usr"), Path(sys.base_prefix), Path(sys.prefix),
             Path(labkit.__file__).resolve().parent]
    named = {root.resolve() for root in roots} | {Path(sys.prefix).absolute()}
    kept: list[Path] = []
    for root in sorted(named, key=lambda p: len(p.parts)):
        if not any(root == k or k in root.parents for k in kept):
            kept.append(root)
    return kept


def tmpfs_bytes(limits: Limits) -> tuple[int, int]:
    """The sizes of the sandbox's ``/tmp`` and ``/dev/shm``: a quarter and an eighth of
    the disk quota, which the scratch folder's share leaves room for."""
    quota = int(limits.disk_mib * 2**20)
    return quota // 4, quota // 8


def command(scratch: Path, argv: list[str], env: dict[str, str], limits: Limits,
            working_dir: Path = INSIDE, overlays: tuple = ()) -> list[str]:
    """The ``bwrap`` command line that runs ``argv`` with ``env`` over ``scratch``;
    ``overlays`` (source, target) are mounted read-only over what is there."""
    executable = bwrap()
    if executable is None:
        raise FileNotFoundError(f"bwrap is not installed: {INSTALL}")
    tmp, shm = tmpfs_bytes(limits)
    line = [executable, "--unshare-user-try", "--unshare-pid", "--unshare-net",
            "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--die-with-parent",
            "--new-session", "--hostname", "sandbox", "--clearenv",
            "--size", str(tmp), "--tmpfs", "/tmp"]
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
    for source, target in overlays:
        line += ["--ro-bind", str(source), str(target)]
    line += ["--proc", "/proc", "--dev", "/dev", "--size", str(shm), "--tmpfs", "/dev/shm",
             "--bind", str(scratch), str(INSIDE), "--chdir", str(working_dir)]
    for key, value in sorted(env.items()):
        line += ["--setenv", key, value]
    return [*line, "--", *argv]


@lru_cache(maxsize=1)
def probe() -> str | None:
    """Why a sandbox cannot start here (None when it can): ``bwrap`` missing or its
    namespaces refused (as in Docker's and Gradescope's containers)."""
    if bwrap() is None:
        return f"bwrap is not installed ({INSTALL})"
    scratch = Path(tempfile.mkdtemp(prefix="labkit-probe-"))
    try:
        result = subprocess.run(command(scratch, ["/bin/true"], {}, Limits(disk_mib=64)),
                                capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"bwrap could not start ({error})"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if result.returncode != 0:
        reason = result.stderr.decode(errors="replace").strip()[:300]
        return f"bwrap cannot create its namespaces here ({reason})"
    return None


class BwrapRunner(Runner):
    """Each submission in its own bubblewrap sandbox."""

    name = BWRAP
    probe = staticmethod(probe)

    @property
    def inside(self) -> Path:
        return INSIDE

    def command(self, argv: list[str], env: dict[str, str]) -> list[str]:
        return command(self.root, argv, env, self.limits, INSIDE / "work",
                       tuple(self.overlays))

    def extra_bytes(self) -> int:
        """The sandbox's ``/tmp`` and ``/dev/shm`` at their full size (they are tmpfs of
        bounded size, not visible from here)."""
        return sum(tmpfs_bytes(self.limits))
