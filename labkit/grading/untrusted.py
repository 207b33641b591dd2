"""Reading what a submission wrote, and writing what it said, without trusting either.

Everything in a submitted file or a scratch folder may be hostile: a link to a host file
or to ``/dev/zero``, a FIFO that never answers, a file of gigabytes, text holding
terminal escapes or spreadsheet formulas. :func:`read_bytes` opens without following
links (``O_NOFOLLOW``), without blocking, accepts regular files only and reads at most a
bound; :func:`clean_text` strips control characters and caps a message with a note of
what was cut.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

MAX_MESSAGE_CHARS = 2000
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class UntrustedFileError(ValueError):
    """A file that must be read is a link, not a regular file, or too large."""


def read_bytes(path: Path, limit: int, *, tail: bool = False) -> bytes:
    """The bytes of the regular file ``path``: all of them when it holds at most
    ``limit``, else :class:`UntrustedFileError` (or, with ``tail``, its last ``limit``).

    The last component is opened with ``O_NOFOLLOW | O_NONBLOCK``, so a link, a FIFO or
    a device is refused without being read or waited on.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as error:
        kind = "a link" if os.path.islink(path) else type(error).__name__
        raise UntrustedFileError(f"{Path(path).name} cannot be read ({kind})") from error
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UntrustedFileError(f"{Path(path).name} is not a regular file")
        if info.st_size > limit and not tail:
            raise UntrustedFileError(f"{Path(path).name} has {info.st_size:,} bytes, more "
                                     f"than {limit:,}")
        if tail and info.st_size > limit:
            os.lseek(fd, info.st_size - limit, os.SEEK_SET)
        chunks, left = [], limit
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(path: Path, limit: int, *, tail: bool = False) -> str:
    """:func:`read_bytes` decoded as UTF-8 (undecodable bytes replaced)."""
    return read_bytes(path, limit, tail=tail).decode("utf-8", errors="replace")


def clean_text(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` without terminal escapes and control characters (tabs and newlines are
    kept), cut to ``limit`` characters with a note saying how many were cut."""
    text = _CONTROL.sub("", str(text))
    if len(text) <= limit:
        return text
    return f"{text[:limit]} [... {len(text) - limit:,} more characters cut]"
