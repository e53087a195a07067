"""Reading inputs into the cache, in this process or in worker processes.

Workers are started with the "spawn" method: the parent may have TensorFlow loaded, and a forked
copy of a multi-threaded process can deadlock. They import only this module, `pipelines.cache`
and `preprocess` (numpy, Pillow, soundfile, librosa), rebuild the preprocessor from its config,
and write each result straight into the cache, so only a reason and notes travel back.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from pipelines.cache import PreprocessCache, ReadResult, entry_key, input_identity, read_key, store_entry
from pipelines.progress import ProgressCallback
from preprocess import ConvpipeError, InputError, InputWarning

logger = logging.getLogger(__name__)

#: Below this many inputs to decode, starting worker processes (each imports numpy, librosa and
#: Pillow: about a second) costs more than it saves.
PARALLEL_MIN_INPUTS = 64


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def resolve_workers(workers: int | None) -> int:
    """`None` or 0 mean one worker per available CPU core."""
    if workers is None or workers == 0:
        return available_cores()
    if workers < 0:
        raise ConvpipeError(f"--workers must be 0 (one per CPU core) or a positive integer, got {workers}.")
    return workers


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


def _read_chunk(class_name: str, config: dict, root: str, tasks: list[tuple[int, Any, str]]) -> list[tuple]:
    """Worker side: read each input and store it; return (index, reason, notes) per input."""
    from preprocess import PREPROCESSORS

    preprocessor = PREPROCESSORS[class_name].from_config(config)
    done = []
    for index, x, key in tasks:
        result = read_one(preprocessor, x)
        store_entry(Path(root), key, result)
        done.append((index, result.reason, result.notes))
    return done


def _ignore_interrupts() -> None:
    # Ctrl-C reaches the whole process group; the parent stops the pool and reports it once.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def read_into_cache(
    preprocessor: Any,
    inputs: list[Any],
    cache: PreprocessCache,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    min_parallel: int = PARALLEL_MIN_INPUTS,
) -> tuple[list[str], list[ReadResult]]:
    """Make sure every input has a cache entry; return each input's key and result (reason and
    notes; the item itself stays in the cache).

    Inputs already cached are not read. The others are read by `workers` processes (1: in this
    one); the entries, and so the arrays, are the same either way.
    """
    prefix = read_key(preprocessor)
    keys = [entry_key(prefix, input_identity(x, cache.verify)) for x in inputs]
    results: list[ReadResult | None] = [None] * len(inputs)
    todo: dict[str, int] = {}  # key -> first index; identical inputs are read once
    for index, key in enumerate(keys):
        if key in todo:
            continue
        found = cache.lookup(key)
        if found is None:
            todo[key] = index
        else:
            results[index] = found
    count = resolve_workers(workers)
    tasks = [(index, inputs[index], key) for key, index in todo.items()]
    if tasks:
        logger.info("reading %d of %d inputs (%d cached) with %d worker(s)", len(tasks), len(inputs),
                    len(inputs) - len(tasks), count if len(tasks) >= min_parallel else 1)
    try:
        if count > 1 and len(tasks) >= max(min_parallel, 2):
            fresh = _read_parallel(preprocessor, tasks, cache.root, count, progress)
        else:
            fresh = _read_serial(preprocessor, tasks, cache.root, progress)
    except OSError as error:
        raise ConvpipeError(
            f"Cannot write the preprocessing cache in {cache.root} ({error.strerror or error}); "
            "pass --cache-dir to use another folder, or --no-cache."
        ) from None
    for index, reason, notes in fresh:
        results[index] = ReadResult(reason=reason, notes=list(notes))
    for index, key in enumerate(keys):
        if results[index] is None:  # a duplicate of an input read just now
            results[index] = results[todo[key]]
    return keys, results  # type: ignore[return-value]


def _read_serial(preprocessor: Any, tasks: list, root: Path, progress: ProgressCallback | None) -> list[tuple]:
    done = []
    for number, (index, x, key) in enumerate(tasks, start=1):
        result = read_one(preprocessor, x)
        store_entry(root, key, result)
        done.append((index, result.reason, result.notes))
        if progress is not None:
            progress(number, len(tasks))
    return done


def _read_parallel(
    preprocessor: Any, tasks: list, root: Path, workers: int, progress: ProgressCallback | None
) -> list[tuple]:
    import multiprocessing

    # Small chunks keep the progress bar moving and the workers balanced; 4 per worker at least.
    size = max(1, min(64, math.ceil(len(tasks) / (workers * 4))))
    chunks = [tasks[start : start + size] for start in range(0, len(tasks), size)]
    name, config = type(preprocessor).__name__, preprocessor.get_config()
    done: list[tuple] = []
    with ProcessPoolExecutor(
        max_workers=min(workers, len(chunks)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_ignore_interrupts,
    ) as pool:
        pending = {pool.submit(_read_chunk, name, config, str(root), chunk) for chunk in chunks}
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    done.extend(future.result())
                if progress is not None:
                    progress(len(done), len(tasks))
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return done
