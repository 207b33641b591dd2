r"""Hidden cases that are stable and personal: seeds from a course secret.

Each submission's hidden cases are drawn from

.. math::

    \text{seed}(s, \ell) = \text{int}\big(\text{HMAC-SHA256}(K, s \| \ell)[{:}4]\big)
    \bmod 2^{31}

for the course secret :math:`K`, the student :math:`s` and the lab :math:`\ell`: a
regrade draws the same cases, two students draw different ones, and without :math:`K` no
one can compute them. The secret is 32 random bytes created on the first
``labkit grade`` in the instructor's labs folder (:data:`SECRET_FILE`, readable by its
owner only); ``labkit release`` never copies it, the Gradescope zip carries it. A
``--seed`` given to ``labkit grade`` replaces the secret, to reproduce one run.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

SECRET_FILE = ".labkit-course-secret"
SECRET_BYTES = 32


def course_secret(labs: Path) -> bytes:
    """The course secret kept in the folder ``labs``, created (mode 0600) on first use."""
    path = Path(labs) / SECRET_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        secret = path.read_bytes()
        if len(secret) < 16:
            raise ValueError(f"the course secret {str(path)!r} is shorter than 16 bytes; "
                             "restore it from a backup (a new one changes every hidden case)"
                             ) from None
        return secret
    with os.fdopen(fd, "wb") as file:
        file.write(secrets.token_bytes(SECRET_BYTES))
    return path.read_bytes()


def secret_of_seed(seed: int) -> bytes:
    """The secret that ``--seed`` stands for (for reproducing one run)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    return f"labkit-seed:{seed}".encode()


def hidden_seed(secret: bytes, student: str, lab: str) -> int:
    """The seed of ``student``'s hidden cases in ``lab``, in ``[0, 2**31)``."""
    if not secret:
        raise ValueError("secret must be non-empty bytes, got an empty secret")
    digest = hmac.new(secret, f"{student}\0{lab}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:4], "big") % 2**31
