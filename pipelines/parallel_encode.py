"""Encoding read items into shards, a chunk of rows at a time, in this process and in workers.

The parent fits the preprocessor, creates the shard files (`ShardWriter`) and hands out row
ranges; whichever worker takes a range loads its items from the cache in one query, encodes them
and writes the rows straight into place. Children rebuild the fitted preprocessor from its config
and fitted state, so only row numbers travel back. On the 2-core machine two workers encoded
5,000 64x64 images in 0.16-0.21 s against 0.38-0.42 s in the parent (once the parent stopped
page-faulting, `pipelines.allocator`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipelines.cache import PreprocessCache, fitted_key
from pipelines.parallel_read import PARALLEL_MIN_INPUTS, child_cache, chunk_size, read_one
from pipelines.progress import ProgressCallback
from pipelines.shards import ShardedArray, ShardWriter, write_rows
from pipelines.workers import Workers

_CHILD_PREPROCESSORS: dict[str, Any] = {}


def fitted_in_child(key: str, name: str, config: dict, state: tuple[dict, dict]) -> Any:
    """The fitted preprocessor in a child, rebuilt once per fit (`key`) and reused across chunks."""
    from preprocess import PREPROCESSORS

    if key not in _CHILD_PREPROCESSORS:
        preprocessor = PREPROCESSORS[name].from_config(config)
        preprocessor._restore_state(*state)
        _CHILD_PREPROCESSORS.clear()
        _CHILD_PREPROCESSORS[key] = preprocessor
    return _CHILD_PREPROCESSORS[key]


def encode_rows(
    preprocessor: Any, cache: PreprocessCache, keys: list[str], inputs: list[Any], target: tuple[str, int], layout: tuple
) -> int:
    """Load, encode and write one range of rows; returns how many."""
    items = cache.items(keys, lambda position: read_one(preprocessor, inputs[position]))
    row_shape, dtype = layout
    encoded = np.stack([np.asarray(preprocessor.encode(item), dtype=dtype) for item in items])
    write_rows(target, encoded, row_shape, np.dtype(dtype))
    return len(items)


def _encode_chunk(fit, name, config, state, root, keys, inputs, target, layout) -> int:
    return encode_rows(fitted_in_child(fit, name, config, state), child_cache(root), keys, inputs, target, layout)


def encode_into_shards(
    folder: Path,
    preprocessor: Any,
    cache: PreprocessCache,
    keys: list[str],
    inputs: list[Any],
    workers: Workers,
    progress: ProgressCallback | None = None,
) -> ShardedArray:
    """Encode the entries `keys` (read from `inputs`) into new shards in `folder`."""
    row_shape, dtype = tuple(preprocessor.output_shape), np.dtype(preprocessor.output_dtype)
    layout = (row_shape, dtype.str)
    writer = ShardWriter(folder, len(keys), row_shape, dtype)
    try:
        parallel = workers.count > 1 and len(keys) >= PARALLEL_MIN_INPUTS
        ranges = writer.ranges(chunk_size(len(keys), workers.count if parallel else 1))
        name, config, state = type(preprocessor).__name__, preprocessor.get_config(), preprocessor._fitted_state()
        fit = fitted_key(preprocessor)
        root = str(cache.root)

        def rows(r: tuple[int, int]) -> tuple:
            return keys[r[0] : r[1]], inputs[r[0] : r[1]], writer.target(r[0]), layout

        size = ranges[0][1] - ranges[0][0] if ranges else 1
        workers.map_chunks(
            ranges,
            local=lambda r: encode_rows(preprocessor, cache, *rows(r)),
            remote=lambda r: (_encode_chunk, fit, name, config, state, root, *rows(r)),
            parallel=parallel,
            progress=None if progress is None else lambda done: progress(min(done * size, len(keys)), len(keys)),
        )
        return writer.commit()
    except BaseException:
        writer.abort()
        raise
