"""Encoded arrays on disk, in .npy shards, read a batch at a time.

Training and evaluation never hold a whole split in memory: a `ShardWriter` receives encoded rows
a chunk at a time, from this process or from workers, and `ShardedArray.take` reads just the rows of one
batch with positioned reads (`os.pread`), so memory stays bounded by the batch, whatever the
dataset size. Each shard is an ordinary .npy file (`numpy.load(path, mmap_mode="r")` opens it).
"""

from __future__ import annotations

import json
import os
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from preprocess import atomic

#: Rows per shard are chosen so that a shard holds about this many bytes.
SHARD_BYTES = 64 << 20
MANIFEST = "manifest.json"


def _header(path: Path) -> tuple[int, tuple[int, ...], np.dtype]:
    """(byte offset of the data, shape, dtype) of an .npy file."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read(handle)
        if fortran_order:
            raise ValueError(f"{path} is in Fortran order")
        return handle.tell(), tuple(shape), dtype


class ShardedArray:
    """A read-only `(rows, *row_shape)` array stored as .npy shards, optionally a row selection.

    Args:
        paths: the shard files, in order.
        rows: which rows (of all shards, in order) this array exposes; all when None.
    """

    def __init__(self, paths: Sequence[Path], rows: np.ndarray | None = None, row_shape=None, dtype=None):
        self.paths = [Path(p) for p in paths]
        self._offsets, counts = [], []
        for path in self.paths:
            offset, shape, found_dtype = _header(path)
            self._offsets.append(offset)
            counts.append(shape[0])
            row_shape, dtype = tuple(shape[1:]), found_dtype
        if row_shape is None:
            raise ValueError("A ShardedArray without shards needs row_shape and dtype.")
        self.row_shape = tuple(row_shape)
        self.dtype = np.dtype(dtype)
        self._starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        total = int(self._starts[-1])
        self.rows = np.arange(total, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        self._row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self._handles: dict[int, int] = {}

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.row_shape)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, selection) -> "ShardedArray":
        """Row selection (indices or a boolean mask); returns a view, reads nothing."""
        return ShardedArray(self.paths, self.rows[selection], self.row_shape, self.dtype)

    def _fd(self, shard: int) -> int:
        if shard not in self._handles:
            self._handles[shard] = os.open(self.paths[shard], os.O_RDONLY)
        return self._handles[shard]

    def take(self, indices: Sequence[int]) -> np.ndarray:
        """Rows `indices` (positions in this array) as one in-memory array, in that order."""
        rows = self.rows[np.asarray(indices, dtype=np.int64)]
        out = np.empty((len(rows), *self.row_shape), dtype=self.dtype)
        flat = out.view(np.uint8).reshape(len(rows), self._row_bytes)  # no -1: `rows` may be empty
        shards = np.searchsorted(self._starts, rows, side="right") - 1
        position = 0
        while position < len(rows):
            # One read for each run of consecutive rows in one shard (all of an unshuffled batch).
            shard, first = int(shards[position]), int(rows[position])
            end = position + 1
            while end < len(rows) and shards[end] == shard and rows[end] == rows[end - 1] + 1:
                end += 1
            local = first - int(self._starts[shard])
            size = (end - position) * self._row_bytes
            data = os.pread(self._fd(shard), size, self._offsets[shard] + local * self._row_bytes)
            if len(data) != size:
                raise OSError(f"{self.paths[shard]} is shorter than its header says")
            flat[position:end] = np.frombuffer(data, dtype=np.uint8).reshape(end - position, self._row_bytes)
            position = end
        return out

    def to_numpy(self) -> np.ndarray:
        """All rows in memory (small data, tests); `pipelines.export` copies rows a block at a
        time instead."""
        return self.take(np.arange(len(self)))

    def close(self) -> None:
        for fd in self._handles.values():
            os.close(fd)
        self._handles.clear()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass


class ShardWriter:
    """Shard files of a known number of rows, filled by row ranges in any order and from any
    process (`write_rows`), then renamed into place with their manifest by `commit`.

    Until `commit`, the shards are hidden temporary files: an interrupted run leaves nothing that
    `open_shards` would take for complete. `abort` removes them.
    """

    def __init__(self, folder: Path, rows: int, row_shape: tuple[int, ...], dtype: str | np.dtype):
        self.folder = Path(folder)
        self.rows = rows
        self.row_shape = tuple(row_shape)
        self.dtype = np.dtype(dtype)
        self.row_bytes = max(1, int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize)
        per_shard = max(1, SHARD_BYTES // self.row_bytes)
        self.starts = list(range(0, rows, per_shard)) + [rows]
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic.remove_abandoned(self.folder)  # shards a killed writer of this folder left
        self.temps: list[Path] = []
        self.offsets: list[int] = []
        try:
            for start, end in zip(self.starts, self.starts[1:]):
                self._create(end - start)
        except BaseException:
            self.abort()
            raise

    def _create(self, count: int) -> None:
        number = len(self.temps)
        fd, name = tempfile.mkstemp(prefix=atomic.owned_prefix(f"{number:05d}"), suffix=".tmp.npy", dir=self.folder)
        self.temps.append(Path(name))
        with os.fdopen(fd, "wb") as handle:
            header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": (count, *self.row_shape)}
            np.lib.format.write_array_header_1_0(handle, header)
            self.offsets.append(handle.tell())
            handle.truncate(handle.tell() + count * self.row_bytes)

    def ranges(self, size: int) -> list[tuple[int, int]]:
        """Row ranges of at most `size` rows that never straddle two shards."""
        return [
            (start, min(start + size, end))
            for first, end in zip(self.starts, self.starts[1:])
            for start in range(first, end, size)
        ]

    def target(self, start: int) -> tuple[str, int]:
        """(file, byte offset) where row `start` goes."""
        shard = int(np.searchsorted(self.starts, start, side="right")) - 1
        return str(self.temps[shard]), self.offsets[shard] + (start - self.starts[shard]) * self.row_bytes

    def commit(self) -> "ShardedArray":
        # Each shard is fsynced before the manifest that vouches for it is written: shards are
        # created at full size, so one whose rows a power cut never wrote would pass the size
        # check in `open_shards` and read back as zeros. The manifest goes last.
        names, checksums, times = [], [], []
        for number, temp in enumerate(self.temps):
            names.append(f"{number:05d}.npy")
            checksums.append(file_crc32(temp))
            with open(temp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.chmod(temp, 0o666 & ~atomic._umask())
            os.replace(temp, self.folder / names[-1])
            times.append((self.folder / names[-1]).stat().st_mtime_ns)
        atomic.write_json(
            self.folder / MANIFEST,
            {"shards": names, "rows": self.rows, "row_shape": list(self.row_shape), "dtype": self.dtype.str,
             "crc32": checksums, "mtime_ns": times},
        )
        return ShardedArray([self.folder / name for name in names], row_shape=self.row_shape, dtype=self.dtype)

    def abort(self) -> None:
        for temp in self.temps:
            temp.unlink(missing_ok=True)


def write_rows(target: tuple[str, int], rows: np.ndarray, row_shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Write consecutive encoded rows at `target` (from `ShardWriter.target`), checking their shape."""
    rows = np.ascontiguousarray(rows, dtype=dtype)
    if rows.shape[1:] != tuple(row_shape):
        raise ValueError(f"encoded row has shape {rows.shape[1:]}, expected {tuple(row_shape)}")
    fd = os.open(target[0], os.O_WRONLY)
    try:
        data = memoryview(rows).cast("B")
        written = 0
        while written < len(data):
            written += os.pwrite(fd, data[written:], target[1] + written)
    finally:
        os.close(fd)


def file_crc32(path: Path) -> int:
    """CRC-32 of a file's bytes, read a block at a time (about 1 GB/s)."""
    checksum = 0
    with open(path, "rb") as handle:
        while block := handle.read(8 << 20):
            checksum = zlib.crc32(block, checksum)
    return checksum


def open_shards(folder: Path, verify: bool = False) -> ShardedArray | None:
    """The shards in `folder` if they are complete, consistent and unchanged since they were
    written, else None (recompute them; shards from before these checks are recomputed once).

    Unchanged: the same modification times, as the cache tells its inputs apart (a stray write
    would otherwise be trained on); with `verify` (--cache-verify) the same CRC-32s too, which
    reads every byte (38 ms per 64 MB shard: several times a warm run's whole reading of images).
    """
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        paths = [folder / name for name in manifest["shards"]]
        array = ShardedArray(paths, row_shape=tuple(manifest["row_shape"]), dtype=manifest["dtype"])
        expected_rows = int(manifest["rows"])
        for path, offset, start, end in zip(paths, array._offsets, array._starts[:-1], array._starts[1:]):
            if path.stat().st_size != offset + int(end - start) * array._row_bytes:
                return None
        if [path.stat().st_mtime_ns for path in paths] != list(manifest["mtime_ns"]):
            return None
        if verify and [file_crc32(path) for path in paths] != list(manifest["crc32"]):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if len(array) != expected_rows or array.row_shape != tuple(manifest["row_shape"]):
        return None
    return array
