"""Atomic writes: all or nothing, and finished files readable like any other file."""

from __future__ import annotations

import os
import stat

import pytest

from transferscope.io import atomic_path


def test_a_failed_write_leaves_neither_the_file_nor_a_temporary(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert list(tmp_path.iterdir()) == []


def test_finished_files_get_the_umask_mode_even_when_the_writer_recreates_them(tmp_path):
    old = os.umask(0o022)
    try:
        target = tmp_path / "weights.safetensors"
        with atomic_path(target) as tmp:
            tmp.unlink()  # writers such as safetensors may replace the file they are given
            fd = os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o600)
            os.write(fd, b"x")
            os.close(fd)
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
        assert target.read_bytes() == b"x"
    finally:
        os.umask(old)
