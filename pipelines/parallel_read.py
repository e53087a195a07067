"""Reading inputs into the cache, a chunk at a time, in this process and in worker processes.

Each chunk is read and written into the cache in one transaction by whichever worker took it
(`pipelines.workers`), so only reasons and notes travel back to the parent. Children rebuild the
preprocessor from its config and open their own connection to the cache.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import warnings
from pathlib import Path
from typing import Any

from pipelines.cache import PreprocessCache, ReadResult, cache_errors, entry_key, input_identity, read_key
from pipelines.progress import ProgressCallback
from pipelines.workers import Workers, borrowed
from preprocess import InputError, InputWarning

logger = logging.getLogger(__name__)

#: Below this many inputs to decode, starting worker processes costs more than it saves.
PARALLEL_MIN_INPUTS = 64
#: Inputs per chunk (one cache transaction) at most.
CHUNK = 64
#: Lists of at least this many inputs are also remembered together (`PreprocessCache.lookup_batch`).
BATCH_MIN_INPUTS = 256


def read_one(preprocessor: Any, x: Any) -> ReadResult:
    """`preprocessor.read(x)`, with an `InputError` turned into a skip and InputWarnings into notes."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InputWarning)
        try:
            item = preprocessor.read(x)
        except InputError as error:
            return ReadResult(reason=error.reason)
    notes = []
    for warning in caught:
        if issubclass(warning.category, InputWarning):
            notes.append(str(warning.message).split(": ", 1)[-1])
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return ReadResult(item=item, notes=notes)


_CHILD_CACHES: dict[str, PreprocessCache] = {}


def child_cache(root: str) -> PreprocessCache:
    """One cache (one SQLite connection) per child process and folder, reused across chunks."""
    if root not in _CHILD_CACHES:
        _CHILD_CACHES[root] = PreprocessCache(Path(root))
    return _CHILD_CACHES[root]


def forget_parent_state() -> None:
    """In a freshly forked child: drop connections inherited from the parent."""
    _CHILD_CACHES.clear()


def _read_chunk(class_name: str, config: dict, root: str, tasks: list[tuple[int, Any, str]]) -> list[tuple]:
    """Child side: rebuild the preprocessor, read the chunk and store it."""
    from preprocess import PREPROCESSORS

    return read_and_store(PREPROCESSORS[class_name].from_config(config), tasks, child_cache(root))


def read_and_store(preprocessor: Any, tasks: list[tuple[int, Any, str]], cache: PreprocessCache) -> list[tuple]:
    """Read `(index, input, key)` tasks, store them in one transaction; (index, reason, notes) each."""
    results = [(index, key, read_one(preprocessor, x)) for index, x, key in tasks]
    cache.store([(key, result) for _, key, result in results])
    return [(index, result.reason, result.notes) for index, _, result in results]


def chunk_size(count: int, workers: int) -> int:
    """Up to `CHUNK` inputs, and at least 8 chunks per worker: balanced, with a moving progress bar."""
    return max(1, min(CHUNK, math.ceil(count / (workers * 8))))


def _read_tasks(
    preprocessor: Any, tasks: list, cache: PreprocessCache, pool: Workers, progress: ProgressCallback | None,
    min_parallel: int, total: int,
) -> list[tuple]:
    """Read `(index, input, key)` tasks into the cache in chunks; (index, reason, notes) each."""
    parallel = pool.count > 1 and len(tasks) >= max(min_parallel, 2)
    if tasks:
        logger.info("reading %d of %d inputs (%d cached) with %d worker(s)", len(tasks), total,
                    total - len(tasks), pool.count if parallel else 1)
    size = chunk_size(len(tasks), pool.count if parallel else 1)
    chunks = [tasks[start : start + size] for start in range(0, len(tasks), size)]
    name, config, root = type(preprocessor).__name__, preprocessor.get_config(), str(cache.root)
    done = pool.map_chunks(
        chunks,
        local=lambda chunk: read_and_store(preprocessor, chunk, cache),
        remote=lambda chunk: (_read_chunk, name, config, root, chunk),
        parallel=parallel,
        progress=None if progress is None else lambda count: progress(min(count * size, len(tasks)), len(tasks)),
    )
    return [row for chunk in done for row in chunk]


def read_into_cache(
    preprocessor: Any,
    inputs: list[Any],
    cache: PreprocessCache,
    workers: Workers | int | None = None,
    progress: ProgressCallback | None = None,
    min_parallel: int = PARALLEL_MIN_INPUTS,
) -> tuple[list[str], list[ReadResult]]:
    """Make sure every input has a cache entry; return each input's key and result (reason and
    notes; the item itself stays in the cache).

    Inputs already cached are not read. The others are read by `workers` (a `Workers`, or a
    count: 1 reads in this process); the entries, and so the arrays, are the same either way.
    """
    prefix = read_key(preprocessor)
    # A str is a path to most preprocessors: key it by the file then, not by its spelling.
    paths = not preprocessor.str_is_data
    keys = [entry_key(prefix, input_identity(Path(x) if paths and isinstance(x, str) else x, cache.verify)) for x in inputs]
    with cache_errors(cache.root):
        if len(keys) >= BATCH_MIN_INPUTS:
            remembered = cache.lookup_batch(keys)
            if remembered is not None:
                return keys, remembered
        first = {key: index for index, key in reversed(list(enumerate(keys)))}  # identical inputs: read once
        unique = list(first)
        results: list[ReadResult | None] = [None] * len(inputs)
        todo: dict[str, int] = {}
        for key, found in zip(unique, cache.lookup_many(unique)):
            if found is None:
                todo[key] = first[key]
            else:
                results[first[key]] = found
        tasks = [(index, inputs[index], key) for key, index in todo.items()]
        with borrowed(workers, type(preprocessor)) as pool:
            fresh = _read_tasks(preprocessor, tasks, cache, pool, progress, min_parallel, len(inputs))
    for index, reason, notes in fresh:
        results[index] = ReadResult(reason=reason, notes=list(notes))
    for index, key in enumerate(keys):
        if results[index] is None:  # a duplicate of an input looked up or read just now
            results[index] = results[first[key]]
    if len(keys) >= BATCH_MIN_INPUTS:
        try:
            cache.store_batch(keys, results)  # type: ignore[arg-type]
        except (OSError, sqlite3.Error) as error:  # only the next run's shortcut is lost
            logger.warning("could not remember this batch in the cache (%s)", error)
    return keys, results  # type: ignore[return-value]
