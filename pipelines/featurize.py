"""Turning a dataset's inputs into arrays, skipping (and recording) the ones that cannot be read."""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.cache import PreprocessCache, ReadResult, cache_errors, digest, fitted_key, read_key
from pipelines.datasets import Dataset, readable_id
from pipelines.parallel_read import read_into_cache, read_one
from pipelines.progress import ProgressCallback
from pipelines.parallel_encode import encode_into_shards
from pipelines.shards import ShardedArray, open_shards
from pipelines.workers import Workers, borrowed
from preprocess import ConvpipeError, InputError, Preprocessor

logger = logging.getLogger(__name__)


@dataclass
class Skipped:
    """Inputs that were not used, with the reason for each."""

    entries: list[dict[str, str]] = field(default_factory=list)
    total: int = 0  # inputs looked at, used or not
    #: inputs used, but not exactly as given (e.g. decoded as Windows-1252), with the reason
    notes: list[dict[str, str]] = field(default_factory=list)

    def add(self, input_id: str, reason: str, split: str = "") -> None:
        self.entries.append({"input": input_id, "reason": reason, **({"split": split} if split else {})})

    def note(self, input_id: str, reason: str, split: str = "") -> None:
        self.notes.append({"input": input_id, "reason": reason, **({"split": split} if split else {})})

    def summary(self) -> str:
        """One line: 'skipped 3 of 1,204 inputs: 2 corrupt or truncated image, 1 empty file'."""
        if not self.entries:
            line = "used the one input" if self.total == 1 else f"used all {self.total:,} inputs"
        else:
            kinds = Counter(_kind(entry["reason"]) for entry in self.entries)
            parts = ", ".join(f"{count} {kind}" for kind, count in kinds.most_common())
            line = f"skipped {len(self.entries):,} of {self.total:,} inputs: {parts}"
        if self.notes:
            kinds = Counter(note["reason"] for note in self.notes)
            line += "; " + ", ".join(f"{count} {kind}" for kind, count in kinds.most_common())
        return line


def _kind(reason: str) -> str:
    """The reason without its details in parentheses, to group similar failures."""
    return reason.split(" (")[0]


def record_result(skipped: Skipped, input_id: str, result: ReadResult, split: str, strict: bool) -> bool:
    """Count one read input as used (with its notes) or skipped; True when it can be used."""
    if result.reason is not None:
        if strict:
            raise ConvpipeError(f"Cannot use input {input_id}: {result.reason} (--strict)")
        logger.info("skipping %s: %s", input_id, result.reason)
        skipped.add(input_id, result.reason, split)
        return False
    for note in result.notes:
        skipped.note(input_id, note, split)
    return True


def read_inputs(
    preprocessor: Preprocessor, dataset: Dataset, split: str, skipped: Skipped, strict: bool
) -> tuple[list[Any], list[int]]:
    """Read every input in this process, without the cache; return the read items and the
    indices of the inputs that worked."""
    items, kept = [], []
    skipped.total += len(dataset)
    for index, (x, input_id) in enumerate(zip(dataset.inputs, dataset.ids)):
        result = read_one(preprocessor, x)
        if record_result(skipped, readable_id(x, input_id), result, split, strict):
            items.append(result.item)
            kept.append(index)
    return items, kept


def encode_items(preprocessor: Preprocessor, items: list[Any]) -> np.ndarray:
    """Encode read items into one in-memory array (small data: check-locality)."""
    if not items:
        return np.zeros((0, *preprocessor.output_shape), dtype=preprocessor.output_dtype)
    return np.stack([preprocessor.encode(item) for item in items])


def check_skip_share(skipped: Skipped, max_share: float) -> None:
    if skipped.total and len(skipped.entries) / skipped.total > max_share:
        raise ConvpipeError(
            f"Too many unreadable inputs: {skipped.summary()} (more than {max_share:.0%}). "
            f"Fix the data (-v lists every skipped input; nothing was written); first: "
            f"{skipped.entries[0]['input']}: {skipped.entries[0]['reason']}."
        )


class CachedItems(Sequence):
    """The read items of a split's usable inputs, loaded from the cache on demand.

    An entry that cannot be loaded any more (damaged on disk) is read again from its input.
    Iterating loads `BLOCK` items per query.
    """

    BLOCK = 256

    def __init__(self, cache: PreprocessCache, keys: list[str], inputs: list[Any], preprocessor: Preprocessor):
        self.cache = cache
        self.keys = keys
        self.inputs = inputs
        self.preprocessor = preprocessor

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> Any:
        return self.load(index, index + 1)[0]

    def load(self, start: int, end: int) -> list[Any]:
        """Items `start` to `end` (exclusive) in one query."""
        return self.cache.items(
            self.keys[start:end], lambda position: read_one(self.preprocessor, self.inputs[start + position])
        )

    def __iter__(self) -> Iterator[Any]:
        for start in range(0, len(self), self.BLOCK):
            yield from self.load(start, start + self.BLOCK)


def read_cached(
    preprocessor: Preprocessor,
    dataset: Dataset,
    split: str,
    skipped: Skipped,
    strict: bool,
    cache: PreprocessCache,
    workers: Workers | int | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[CachedItems, list[int]]:
    """`read_inputs` through the cache (and worker processes): the same skips, notes and items.

    Returns the usable inputs' items (lazily loaded) and their indices in `dataset`.
    """
    keys, results = read_into_cache(preprocessor, dataset.inputs, cache, workers, progress)
    skipped.total += len(dataset)
    kept, kept_keys = [], []
    for index, (key, result, x, input_id) in enumerate(zip(keys, results, dataset.inputs, dataset.ids)):
        if record_result(skipped, readable_id(x, input_id), result, split, strict):
            kept.append(index)
            kept_keys.append(key)
    return CachedItems(cache, kept_keys, [dataset.inputs[i] for i in kept], preprocessor), kept


def fit_cached(preprocessor: Preprocessor, items: CachedItems) -> Preprocessor:
    """`preprocessor.fit_read(items)`, or the fit stored for exactly these training inputs.

    Fitting is deterministic, so the same read entries in the same order always give the same
    vocabulary or statistics; a warm run then reads no item at all.
    """
    if not preprocessor.needs_fit:
        return preprocessor.fit_read(items)
    path = items.cache.root / "fits" / f"{digest('fit', read_key(preprocessor), items.keys)}.json"
    if path.exists():
        try:
            stored = Preprocessor.load(path)
            if type(stored) is type(preprocessor) and stored.get_config() == preprocessor.get_config():
                preprocessor._restore_state(*stored._fitted_state())
                items.cache.stats.fit_hits += 1
                return preprocessor
        except (InputError, ValueError, TypeError, KeyError):
            pass  # unreadable: fit again and overwrite it
    with cache_errors(items.cache.root):  # the items are loaded from the cache as the fit reads them
        preprocessor.fit_read(items)
    try:
        preprocessor.save(path)
    except OSError as error:
        logger.warning("could not store the fitted preprocessor in the cache (%s)", error)
    return preprocessor


def encode_to_shards(
    preprocessor: Preprocessor,
    items: CachedItems,
    progress: ProgressCallback | None = None,
    workers: Workers | int | None = 1,
    resizable: bool = True,
) -> ShardedArray:
    """The encoded arrays of `items`, from cached shards when this fit and these inputs were
    encoded before, else encoded now (by `workers`, a chunk of rows at a time) into new shards.
    `resizable`: the command takes the flags that set the inputs' size (train does; evaluate and
    preprocess read a run's or the default's)."""
    cache = items.cache
    folder = cache.shard_folder(digest("shards", fitted_key(preprocessor), items.keys))
    found = open_shards(folder, verify=cache.verify)
    if found is not None:
        cache.stats.shard_hits += 1
        return found
    cache.stats.shard_misses += 1
    check_free_space(
        folder, len(items), preprocessor.output_shape, preprocessor.output_dtype, temporary=cache.temporary, resizable=resizable
    )
    with cache_errors(folder, "write preprocessed shards"), borrowed(workers, type(preprocessor)) as pool:
        return encode_into_shards(folder, preprocessor, cache, items.keys, items.inputs, pool, progress)


def _size_text(size: int) -> str:
    """GB, or MB below 1 GB ("0.0 GB free" said nothing on a small disk)."""
    return f"{size / 1e9:,.1f} GB" if size >= 1e9 else f"{size / 1e6:,.1f} MB"


def check_free_space(
    folder: Path, rows: int, row_shape: Sequence[int], dtype: Any, temporary: bool = False, resizable: bool = True
) -> None:
    """Refuse to start writing shards that cannot fit on the disk: an oversized --image-size
    once filled 21 GB before training failed for want of memory anyway. `temporary`: the
    folder is --no-cache's, under TMPDIR, where --cache-dir does not apply; `resizable`: see
    `encode_to_shards`."""
    needed = rows * int(np.prod(row_shape)) * np.dtype(dtype).itemsize
    existing = next(parent for parent in (folder, *folder.parents) if parent.exists())
    free = shutil.disk_usage(existing).free
    if needed > free:
        raise ConvpipeError(
            f"The preprocessed inputs need {_size_text(needed)} ({rows:,} x {tuple(row_shape)} "
            f"{np.dtype(dtype).name}) but {existing} has {_size_text(free)} free; "
            + ("lower --image-size (or --positions, --duration), or " if resizable else "")
            + ("use --cache-dir on a larger disk." if not temporary else
               "use --cache with --cache-dir on a larger disk, or set TMPDIR to one (without the cache, they are written there).")
        )
