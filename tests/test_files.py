import os
import stat

import pytest

from labkit import files


def test_write_atomically_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")

    def fail(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        files.write_atomically(path, fail)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_write_atomically_writes_text_and_bytes_readable_as_open_would(tmp_path):
    text, data = tmp_path / "a" / "notes.txt", tmp_path / "b.bin"
    files.write_atomically(text, "grüße\n")
    files.write_atomically(data, b"\x00\x01")
    assert text.read_bytes() == "grüße\n".encode()
    assert data.read_bytes() == b"\x00\x01"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(text.stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b.bin", "notes.txt"]


def test_write_atomically_refuses_other_content(tmp_path):
    with pytest.raises(TypeError, match="content must be str, bytes or a function.*int"):
        files.write_atomically(tmp_path / "x", 3)
    assert not list(tmp_path.iterdir())
