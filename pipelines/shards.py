"""Encoded arrays on disk, in .npy shards, read a batch at a time.

Training and evaluation never hold a whole split in memory: `write_shards` encodes one input at a
time and appends its row to a shard file, and `ShardedArray.take` reads just the rows of one
batch with positioned reads (`os.pread`), so memory stays bounded by the batch, whatever the
dataset size. Each shard is an ordinary .npy file (`numpy.load(path, mmap_mode="r")` opens it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

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

    def take(self, indices) -> np.ndarray:
        """Rows `indices` (positions in this array) as one in-memory array, in that order."""
        rows = self.rows[np.asarray(indices, dtype=np.int64)]
        out = np.empty((len(rows), *self.row_shape), dtype=self.dtype)
        flat = out.reshape(len(rows), -1).view(np.uint8).reshape(len(rows), self._row_bytes)
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
        """All rows in memory (export to one .npz file, small data, tests)."""
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


def write_shards(
    folder: Path,
    items: Sequence[Any],
    encode: Callable[[Any], np.ndarray],
    row_shape: tuple[int, ...],
    dtype: str,
    progress: Callable[[int, int], None] | None = None,
) -> ShardedArray:
    """Encode `items` one by one into .npy shards in `folder`; the manifest is written last.

    Rows go straight to the file, so memory does not grow with the number of items.
    """
    dtype = np.dtype(dtype)
    row_bytes = max(1, int(np.prod(row_shape, dtype=np.int64)) * dtype.itemsize)
    per_shard = max(1, SHARD_BYTES // row_bytes)
    names = []
    for number, start in enumerate(range(0, len(items), per_shard)):
        count = min(per_shard, len(items) - start)
        name = f"{number:05d}.npy"
        # Not fsynced (a cache, as the entries): a shard that a power cut leaves short fails the
        # size check in `open_shards` and is encoded again.
        with atomic.atomic_path(folder / name, sync=False) as tmp, open(tmp, "wb") as handle:
            header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (count, *row_shape)}
            np.lib.format.write_array_header_1_0(handle, header)
            for index in range(start, start + count):
                row = np.asarray(encode(items[index]), dtype=dtype)
                if row.shape != tuple(row_shape):
                    raise ValueError(f"encoded row has shape {row.shape}, expected {tuple(row_shape)}")
                handle.write(np.ascontiguousarray(row).tobytes())
                if progress is not None:
                    progress(index + 1, len(items))
        names.append(name)
    atomic.write_json(
        folder / MANIFEST, {"shards": names, "rows": len(items), "row_shape": list(row_shape), "dtype": dtype.str}, sync=False
    )
    return ShardedArray([folder / name for name in names], row_shape=row_shape, dtype=dtype)


def open_shards(folder: Path) -> ShardedArray | None:
    """The shards in `folder` if they are complete and consistent, else None (recompute them)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        paths = [folder / name for name in manifest["shards"]]
        array = ShardedArray(paths, row_shape=tuple(manifest["row_shape"]), dtype=manifest["dtype"])
        expected_rows = int(manifest["rows"])
        for path, offset, start, end in zip(paths, array._offsets, array._starts[:-1], array._starts[1:]):
            if path.stat().st_size != offset + int(end - start) * array._row_bytes:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if len(array) != expected_rows or array.row_shape != tuple(manifest["row_shape"]):
        return None
    return array
