"""A Docker-like container for the grading tests, made with bubblewrap.

:func:`container_command` wraps a command so that it runs as root with Docker's default
capability set and a seccomp filter that refuses namespaces the way Docker's default
profile does (``unshare``, ``setns`` and ``clone`` with a ``CLONE_NEW*`` flag answer
``EPERM``, ``clone3`` answers ``ENOSYS``), with its own PID namespace, ``/proc``,
``/tmp`` and ``/dev/shm``, and the cgroup tree read-only: what Gradescope's container
gives its autograder. The filter is a classic-BPF program built here with ``struct``
(x86_64 only: :func:`seccomp_supported`).

:func:`user_command` wraps a command to run as an unprivileged user id in a mount
namespace where that user can reach the course's interpreter (``/root`` is closed to
other users on this machine; ``/root/.pyenv`` is bound into an empty ``/root``).
"""

from __future__ import annotations

import csv
import os
import platform
import shutil
import struct
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import nbformat

from tests.support.tinylab import TINY, student_copy, tiny_instructor

BWRAP = shutil.which("bwrap")
SETPRIV = shutil.which("setpriv")

# --- the seccomp filter ---------------------------------------------------------------

AUDIT_ARCH_X86_64 = 0xC000003E
SYS_CLONE, SYS_UNSHARE, SYS_SETNS, SYS_CLONE3 = 56, 272, 308, 435
CLONE_NEW = (0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000
             | 0x40000000 | 0x00000080)
"""CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME."""
EPERM, ENOSYS = 1, 38

BPF_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
BPF_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
BPF_JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K
BPF_RET_K = 0x06  # BPF_RET | BPF_K
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000
# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]
NR, ARCH, ARG0_LOW = 0, 4, 16  # little-endian: the low half of args[0] comes first

CAPABILITIES = ("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
                "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
                "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE")
"""Docker's default capability set."""


def seccomp_supported() -> str | None:
    """Why the container cannot be built here (None when it can)."""
    if not sys.platform.startswith("linux") or platform.machine() != "x86_64":
        return f"the seccomp filter is written for x86_64 Linux, not {platform.machine()}"
    if os.geteuid() != 0:
        return "the container harness runs the grader as root; these tests are not root"
    if BWRAP is None:
        return "bwrap is not installed (apt-get install bubblewrap)"
    return None


def _instruction(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


def docker_like_filter() -> bytes:
    """The program (an array of ``struct sock_filter``) bwrap's ``--seccomp`` loads."""
    program = [
        _instruction(BPF_LD_W_ABS, ARCH),
        _instruction(BPF_JEQ_K, AUDIT_ARCH_X86_64, jt=1),  # 1: another arch: allow
        _instruction(BPF_RET_K, RET_ALLOW),
        _instruction(BPF_LD_W_ABS, NR),  # 3
        _instruction(BPF_JEQ_K, SYS_UNSHARE, jt=6),  # 4 -> 11 (EPERM)
        _instruction(BPF_JEQ_K, SYS_SETNS, jt=5),  # 5 -> 11
        _instruction(BPF_JEQ_K, SYS_CLONE3, jt=5),  # 6 -> 12 (ENOSYS)
        _instruction(BPF_JEQ_K, SYS_CLONE, jf=2),  # 7 -> 8, else 10 (allow)
        _instruction(BPF_LD_W_ABS, ARG0_LOW),  # 8: clone's flags
        _instruction(BPF_JSET_K, CLONE_NEW, jt=1),  # 9 -> 11 when a CLONE_NEW* is set
        _instruction(BPF_RET_K, RET_ALLOW),  # 10
        _instruction(BPF_RET_K, RET_ERRNO | EPERM),  # 11
        _instruction(BPF_RET_K, RET_ERRNO | ENOSYS),  # 12
    ]
    return b"".join(program)


def filter_fd() -> int:
    """A file descriptor holding the filter, at its start (the caller closes it)."""
    fd = os.memfd_create("docker-like-seccomp", 0)
    os.write(fd, docker_like_filter())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


# --- the containers -----------------------------------------------------------------


SKIPPED_ROOTS = {"proc", "dev", "tmp", "root", "lost+found"}


def _system() -> list[str]:
    """bwrap options for a fresh root that shows this machine's top-level folders
    read-only (links as links), except ``/proc``, ``/dev``, ``/tmp`` and ``/root``."""
    options = ["--tmpfs", "/"]
    for entry in sorted(Path("/").iterdir()):
        if entry.name in SKIPPED_ROOTS:
            continue
        if entry.is_symlink():
            options += ["--symlink", os.readlink(entry), str(entry)]
        elif entry.is_dir():
            options += ["--ro-bind", str(entry), str(entry)]
    return options


@lru_cache(maxsize=1)
def installed_labkit() -> Path | None:
    """The labkit package this environment imports outside a checkout (an editable
    install maps it to wherever it was installed from)."""
    found = subprocess.run([sys.executable, "-c", "import importlib.util as u; "
                            "print(u.find_spec('labkit').origin)"],
                           cwd="/", capture_output=True, text=True, env={"PATH": "/usr/bin"})
    return Path(found.stdout.strip()).parent if found.returncode == 0 else None


def _reachable_python() -> list[str]:
    """bwrap options that make the course environment reachable by every user: an empty
    ``/root`` with only ``.pyenv`` (read-only) in it, and the environment and the
    installed labkit package (read-only, where they were) when they lie in ``/tmp`` or
    ``/root``, which the containers replace (a checkout cloned under ``/tmp``)."""
    options = ["--perms", "0755", "--tmpfs", "/root"]
    if Path("/root/.pyenv").is_dir():
        options += ["--ro-bind", "/root/.pyenv", "/root/.pyenv"]
    needed = {Path(sys.prefix).absolute(), Path(sys.prefix).resolve(), installed_labkit()}
    opened: set[Path] = set()
    for path in sorted(path for path in needed if path is not None):
        if path.parts[1:2] not in (("tmp",), ("root",)) or path == Path("/root/.pyenv") \
                or Path("/root/.pyenv") in path.parents:
            continue
        for folder in reversed(path.parents[:-2]):  # below /tmp or /root, open to all
            if folder not in opened:
                opened.add(folder)
                options += ["--perms", "0755", "--dir", str(folder)]
        options += ["--ro-bind", str(path), str(path)]
    return options


def container_command(argv: list[str], binds: dict[str, str], fd: int,
                      env: dict[str, str]) -> list[str]:
    """``argv`` as root in a Docker-like container; ``binds`` maps folders here to where
    they appear (writable) inside; ``fd`` holds the seccomp filter (:func:`filter_fd`)."""
    line = [BWRAP, *_system(), "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--die-with-parent", "--proc", "/proc", "--dev", "/dev",
            "--perms", "1777", "--tmpfs", "/tmp", "--perms", "1777", "--tmpfs", "/dev/shm",
            *_reachable_python(), "--clearenv"]
    for outside, inside in binds.items():
        line += ["--bind", outside, inside]
    for key, value in sorted(env.items()):
        line += ["--setenv", key, value]
    line += ["--cap-drop", "ALL"]
    for capability in CAPABILITIES:
        line += ["--cap-add", capability]
    bounding = ",".join(["-all", *(f"+{name[4:].lower()}" for name in CAPABILITIES)])
    return [*line, "--seccomp", str(fd), "--", SETPRIV, f"--bounding-set={bounding}", "--",
            *argv]


def run_in_container(argv: list[str], binds: dict[str, str], env: dict[str, str],
                     timeout: float) -> subprocess.CompletedProcess:
    """Run ``argv`` in a fresh Docker-like container; its output captured as text."""
    fd = filter_fd()
    try:
        return subprocess.run(container_command(argv, binds, fd, env), pass_fds=(fd,),
                              capture_output=True, text=True, timeout=timeout)
    finally:
        os.close(fd)


def user_command(argv: list[str], uid: int, binds: dict[str, str],
                 env: dict[str, str]) -> list[str]:
    """``argv`` as the unprivileged ``uid`` (no groups), in a mount namespace whose
    ``/tmp`` is its own and where ``/root/.pyenv`` is reachable; ``binds`` as above.

    This machine's ``/proc`` is bound as it is, in the same PID namespace: a fresh
    ``/proc`` from bwrap has parts covered read-only, and the kernel then refuses the
    user's own bwrap a ``/proc`` of its own."""
    line = [BWRAP, *_system(), "--die-with-parent", "--bind", "/proc", "/proc",
            "--dev-bind", "/dev", "/dev",
            "--perms", "1777", "--tmpfs", "/tmp", *_reachable_python(), "--clearenv"]
    for outside, inside in binds.items():
        line += ["--bind", outside, inside]
    for key, value in sorted(env.items()):
        line += ["--setenv", key, value]
    return [*line, "--", SETPRIV, f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
            "--", *argv]


def environment(**extra: str) -> dict[str, str]:
    """A plain environment for a command in a container: this Python first on PATH (and
    this run's ``PYTHONPATH``, if any)."""
    env = {"PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin",
                                    "/usr/bin", "/bin"]),
           "LANG": "C.UTF-8", "HOME": "/tmp", "OMP_NUM_THREADS": "1"}
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return {**env, **extra}


# --- a course to grade ----------------------------------------------------------------


def course(base: Path, files: dict[str, str], submissions: dict[str, dict[str, str]],
           owner: int = 0) -> Path:
    """``base``: ``labs/`` (the tiny lab), ``submissions/`` (``<student>__<lab>``, each
    the released notebook with the given exercise sources), ``out/``, ``home/`` and the
    text ``files`` (name: content), all owned by ``owner`` and closed to others."""
    instructor = tiny_instructor()
    for name in ("labs", "submissions", "out", "home"):
        (base / name).mkdir(parents=True)
    for name, text in files.items():
        (base / name).write_text(text)
    nbformat.write(instructor, base / "labs" / f"{TINY}.ipynb")
    for student, sources in submissions.items():
        nbformat.write(student_copy(instructor, **sources),
                       base / "submissions" / f"{student}__{TINY}.ipynb")
    for path in [base, *base.rglob("*")]:
        os.chown(path, owner, owner)
    base.chmod(0o700)
    return base


def read_rows(path: Path) -> dict[tuple[str, str], dict]:
    """A grade table's rows by (student, check)."""
    with open(path, newline="") as file:
        return {(row["student"], row["check"]): row for row in csv.DictReader(file)}
