"""Atomic writes: the target holds the old or the new content, never a mix, and a normal mode."""

from __future__ import annotations

import os

import pytest

from preprocess import atomic


def test_a_failed_write_leaves_the_previous_file_and_no_temporary_behind(tmp_path):
    target = tmp_path / "report.json"
    atomic.write_json(target, {"accuracy": 0.9})
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text('{"accur')  # killed half-way through
            raise RuntimeError("interrupted")
    assert target.read_text() == '{\n  "accuracy": 0.9\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_the_temporary_name_keeps_the_suffixes_writers_choose_formats_from(tmp_path):
    with atomic.atomic_path(tmp_path / "best.weights.h5") as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".weights.h5")
        tmp.write_bytes(b"x")
    assert (tmp_path / "best.weights.h5").read_bytes() == b"x"


def test_written_files_get_the_mode_a_plain_open_would_give(tmp_path):
    previous = os.umask(0o027)
    atomic._umask.cache_clear()
    try:
        atomic.write_text(tmp_path / "report.html", "<p>hi</p>")
        (tmp_path / "plain.html").write_text("<p>hi</p>")
        assert (tmp_path / "report.html").stat().st_mode & 0o777 == (tmp_path / "plain.html").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(previous)
        atomic._umask.cache_clear()


def test_errors_name_the_target_not_the_temporary_file(tmp_path, monkeypatch):
    folder = tmp_path / "arrays.npz"
    folder.mkdir()  # a folder where the file should go
    with pytest.raises(IsADirectoryError) as caught:
        atomic.write_text(folder, "x")
    assert caught.value.filename == str(folder)
    assert [p.name for p in tmp_path.iterdir()] == ["arrays.npz"]

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system", str(tmp_path / ".report.x1y2.tmp.json"))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", read_only)
    with pytest.raises(OSError, match="Read-only file system") as caught:
        atomic.write_json(tmp_path / "report.json", {})
    assert caught.value.filename == str(tmp_path / "report.json")
