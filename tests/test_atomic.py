"""Atomic writes: the target holds the old or the new content, never a mix, and a normal mode."""

from __future__ import annotations

import os
from pathlib import Path

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


def test_a_preprocessor_whose_arrays_fail_to_save_leaves_the_previous_npz_whole(tmp_path, monkeypatch):
    # A fitted AudioPreprocessor keeps its band statistics in an .npz beside its .json: a save
    # that fails half-way through the arrays must leave the previous pair loadable as it was.
    import numpy as np

    from preprocess import AudioPreprocessor, Preprocessor

    tone = np.sin(np.arange(4000) / 5).astype(np.float32)
    first = AudioPreprocessor(duration=0.25).fit([(tone, 16000)])
    target = tmp_path / "audio.json"
    first.save(target)
    with np.load(tmp_path / "audio.npz") as stored:
        before = {name: stored[name] for name in stored.files}
    second = AudioPreprocessor(duration=0.25).fit([(0.1 * tone + 0.01 * np.cos(np.arange(4000)).astype(np.float32), 16000)])

    def savez(handle, **arrays):
        handle.write(b"PK\x03\x04 half")  # the start of a zip archive, then the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", savez)
    with pytest.raises(OSError):
        second.save(target)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audio.json", "audio.npz"]  # no temporary file left
    with np.load(tmp_path / "audio.npz") as stored:
        assert sorted(stored.files) == sorted(before)
        for name in before:
            np.testing.assert_array_equal(stored[name], before[name])
    loaded = Preprocessor.load(target)  # still the pair saved together
    np.testing.assert_array_equal(loaded.band_mean_, first.band_mean_)


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


def killed_while_writing(code: str) -> None:
    """Run `code` in a fresh process that signals when it is mid-write, then SIGKILL it there:
    the cleanup in `atomic_path` and `ShardWriter.abort` never runs."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    process = subprocess.Popen([sys.executable, "-c", f"{code}\nprint('writing', flush=True)\nimport time; time.sleep(60)"],
                               cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "writing\n"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


def test_temporary_files_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    target = tmp_path / "model.keras"
    killed_while_writing(
        f"from preprocess import atomic\nwriting = atomic.atomic_path({str(target)!r})\n"
        "writing.__enter__().write_bytes(b'half a model')"
    )
    [left] = tmp_path.iterdir()
    assert left.name.startswith(".model.") and left.name.endswith(".tmp.keras")
    # Another live process's temporary file (this one's parent), and another machine's, are kept.
    live = tmp_path / f".model.{atomic._host()}-{os.getppid()}-x1.tmp.keras"
    remote = tmp_path / f".model.elsewhere-{left.name.split('-')[1]}-x2.tmp.keras"
    live.write_bytes(b"being written")
    remote.write_bytes(b"being written there")
    atomic.write_bytes(target, b"a model")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, remote.name, "model.keras"])


def test_shards_of_a_killed_writer_are_removed_by_the_next_writer_of_the_folder(tmp_path):
    import numpy as np

    from pipelines import shards

    folder = tmp_path / "shards"
    killed_while_writing(f"from pipelines import shards\nw = shards.ShardWriter({str(folder)!r}, 10, (3,), '<i4')")
    assert [p.name.endswith(".tmp.npy") for p in folder.iterdir()] == [True]
    writer = shards.ShardWriter(folder, 4, (3,), "<i4")
    shards.write_rows(writer.target(0), np.ones((4, 3), np.int32), (3,), np.dtype("<i4"))
    writer.commit()
    assert sorted(p.name for p in folder.iterdir()) == ["00000.npy", shards.MANIFEST]


def test_the_new_content_is_on_disk_before_it_replaces_the_old(tmp_path, monkeypatch):
    """A rename of an unsynced file can leave an empty file after a power cut (ext4, XFS):
    run files (config.json, model.keras, report.json) must be fsynced before the rename."""
    events, fsync, replace = [], os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", Path(os.readlink(f"/proc/self/fd/{fd}")).name)) or fsync(fd))
    monkeypatch.setattr(os, "replace", lambda src, dst: events.append(("replace", Path(src).name)) or replace(src, dst))
    atomic.write_json(tmp_path / "config.json", {"epochs": 3})
    assert [kind for kind, _ in events] == ["fsync", "replace"]
    assert events[0][1] == events[1][1] != "config.json"  # the temporary file, synced then renamed
    # sync=False (cache entries) skips only the fsync
    events.clear()
    atomic.write_text(tmp_path / "entry.json", "{}", sync=False)
    assert [kind for kind, _ in events] == ["replace"]


def test_the_written_file_is_renamed_into_place_not_copied(tmp_path):
    """A rename is atomic: a reader sees the old file or the whole new one. The file that ends up
    at the target is the very file written (same inode), and no reader can see a partial copy."""
    target = tmp_path / "report.json"
    atomic.write_text(target, "old")
    with open(target) as reader_of_old:
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("new")
            written = os.stat(tmp).st_ino
        assert reader_of_old.read() == "old"  # the old file lives on for whoever has it open
    assert os.stat(target).st_ino == written and target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_a_full_disk_is_one_line_naming_the_file_or_saying_what_to_do(cli_runner, image_folder, tmp_path, monkeypatch):
    # Writes that fail inside a writer (zipfile, Keras' backups) raise ENOSPC without a file name,
    # which the CLI let through as a traceback.
    import errno

    import pipelines.export
    from tests.conftest import assert_one_line_error, invoke

    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def full_inside_a_writer(out, *args):
        with atomic.atomic_path(out) as tmp:
            tmp.write_bytes(b"PK")
            full(tmp)

    args = ["preprocess", "--modality", "image", "--data", image_folder, "--no-cache", "--out", tmp_path / "x.npz"]
    monkeypatch.setattr(pipelines.export, "write_npz_in_blocks", full_inside_a_writer)
    assert_one_line_error(invoke(cli_runner, args), f"Cannot use {tmp_path / 'x.npz'}: No space left on device")
    monkeypatch.setattr(pipelines.export, "write_npz_in_blocks", full)
    assert_one_line_error(invoke(cli_runner, args), "Cannot write: No space left on device; free some space")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["images"]  # no temporary left behind


def test_a_full_disk_is_blamed_on_the_file_being_written(tmp_path):
    import errno

    other = tmp_path / "other.bin"
    for filename, blamed in ((None, tmp_path / "out.npz"), (str(other), other)):
        with pytest.raises(OSError) as caught:
            with atomic.atomic_path(tmp_path / "out.npz"):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)  # the same disk, another file
        assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(blamed)
    assert not (tmp_path / "out.npz").exists()
