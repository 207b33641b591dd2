"""Writing files so that a reader never sees half of one.

:func:`write_atomically` writes to a temporary file in the target's folder and renames
it over the target (``os.replace``, atomic on POSIX and Windows): a reader opens the old
file or the new one. labkit writes its caches (models, latency tables), released
notebooks and grade tables this way.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomically(path: Path, content: str | bytes | Callable[[BinaryIO], None]) -> None:
    """Write ``content`` to ``path`` through a temporary file ``<name><8 characters>.tmp``
    beside it, then rename that file over ``path``.

    ``content`` is text (written as UTF-8), bytes, or a function that writes to the open
    binary file (``lambda f: torch.save(state, f)``).

    The file gets the permissions a plain ``open`` would give (``0o666`` less the
    umask), so others in the group can read it, not the private ``0o600`` of a
    temporary file. On any error the temporary file is removed and ``path`` is left as
    it was.
    """
    if not isinstance(content, str | bytes) and not callable(content):
        raise TypeError(f"content must be str, bytes or a function of the open file, got "
                        f"{type(content).__name__}")
    write = _writer(content)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as file:
            write(file)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _writer(content: str | bytes | Callable[[BinaryIO], None]) -> Callable[[BinaryIO], None]:
    """``content`` as a function that writes it to an open binary file."""
    if callable(content):
        return content
    data = content.encode("utf-8") if isinstance(content, str) else content
    return lambda file: file.write(data)
