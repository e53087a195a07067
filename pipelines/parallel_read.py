"""Reading inputs into the cache, in this process or in worker processes.

How workers start matters more than anything else here on small machines:

- `fork` when it is safe: on Linux, from a parent with one Python thread and no ML framework
  loaded. A forked worker starts in milliseconds with the decoders the parent already imported.
- otherwise `forkserver` (a clean server process forks the workers; `prestart` launches it early
  so that it imports the decoders while the parent imports TensorFlow), or `spawn`. A forked copy
  of a process running TensorFlow's thread pools can deadlock, so it is never forked.

Each worker uses one BLAS thread: two workers with two OpenBLAS threads each on 2 cores read
audio four times slower than one worker (the spinning threads fight over the cores). Workers
rebuild the preprocessor from its config, read a chunk of inputs and write the chunk into the
cache in one transaction, so only reasons and notes travel back to the parent.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import multiprocessing
import os
import signal
import sqlite3
import sys
import threading
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from pipelines.cache import PreprocessCache, ReadResult, entry_key, input_identity, read_key
from pipelines.progress import ProgressCallback
from preprocess import ConvpipeError, InputError, InputWarning

logger = logging.getLogger(__name__)

#: Below this many inputs to decode, starting worker processes costs more than it saves.
PARALLEL_MIN_INPUTS = 64
#: Inputs per cache transaction when reading in this process.
SERIAL_CHUNK = 64
#: Loaded in a parent, these make forking unsafe (their runtimes own threads and locks).
FRAMEWORKS = ("tensorflow", "jax", "torch")
#: Thread counts of the BLAS and OpenMP runtimes, set to 1 in workers.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


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
    """Worker side: read each input, store the chunk; return (index, reason, notes) per input."""
    from preprocess import PREPROCESSORS

    preprocessor = PREPROCESSORS[class_name].from_config(config)
    cache = _worker_cache(root)
    return _read_and_store(preprocessor, tasks, cache)


_WORKER_CACHES: dict[str, PreprocessCache] = {}


def _worker_cache(root: str) -> PreprocessCache:
    """One cache (one SQLite connection) per worker process and folder, reused across chunks."""
    if root not in _WORKER_CACHES:
        _WORKER_CACHES[root] = PreprocessCache(Path(root))
    return _WORKER_CACHES[root]


def _read_and_store(preprocessor: Any, tasks: list[tuple[int, Any, str]], cache: PreprocessCache) -> list[tuple]:
    results = [(index, key, read_one(preprocessor, x)) for index, x, key in tasks]
    cache.store([(key, result) for _, key, result in results])
    return [(index, result.reason, result.notes) for index, _, result in results]


def _init_worker() -> None:
    # Ctrl-C reaches the whole process group; the parent stops the pool and reports it once.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER_CACHES.clear()  # a forked worker must not share the parent's SQLite connections
    try:  # BLAS libraries loaded before the fork ignore the environment variables
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except Exception:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass


def worker_imports(preprocessor_classes: Any) -> list[str]:
    """The modules workers need: this one and each preprocessor's decoders."""
    names = ["pipelines.parallel_read"]
    for cls in preprocessor_classes:
        names += [cls.__module__, *getattr(cls, "worker_imports", ())]
    return names


def import_decoders(preprocessor: Any) -> None:
    """Import what reading needs now (librosa takes about a second), e.g. before timing.
    `preprocessor` is a preprocessor or its class."""
    for name in getattr(preprocessor, "worker_imports", ()):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def start_method() -> str:
    """`fork` where it is safe, else `forkserver`, else `spawn` (see the module docstring)."""
    methods = multiprocessing.get_all_start_methods()
    if (
        sys.platform.startswith("linux")
        and "fork" in methods
        and threading.active_count() == 1
        and not any(name in sys.modules for name in FRAMEWORKS)
    ):
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


@contextlib.contextmanager
def _one_thread_per_worker():
    """Children started inside inherit 1 for every BLAS/OpenMP thread count the user left unset."""
    unset = [name for name in THREAD_VARIABLES if name not in os.environ]
    for name in unset:
        os.environ[name] = "1"
    try:
        yield
    finally:
        for name in unset:
            os.environ.pop(name, None)


def prestart(workers: int | None) -> None:
    """Start the fork server in the background (it imports every preprocessor's decoders), so
    that workers are ready when a command that loads TensorFlow first reaches its inputs."""
    if resolve_workers(workers) < 2 or "forkserver" not in multiprocessing.get_all_start_methods():
        return
    from multiprocessing import forkserver

    from preprocess import PREPROCESSORS

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(worker_imports(PREPROCESSORS.values()))
    with _one_thread_per_worker():
        forkserver.ensure_running()


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
    first = {key: index for index, key in reversed(list(enumerate(keys)))}  # identical inputs: read once
    unique = list(first)
    results: list[ReadResult | None] = [None] * len(inputs)
    todo: dict[str, int] = {}
    for key, found in zip(unique, cache.lookup_many(unique)):
        if found is None:
            todo[key] = first[key]
        else:
            results[first[key]] = found
    count = resolve_workers(workers)
    tasks = [(index, inputs[index], key) for key, index in todo.items()]
    if tasks:
        logger.info("reading %d of %d inputs (%d cached) with %d worker(s)", len(tasks), len(inputs),
                    len(inputs) - len(tasks), count if len(tasks) >= min_parallel else 1)
    try:
        if count > 1 and len(tasks) >= max(min_parallel, 2):
            fresh = _read_parallel(preprocessor, tasks, cache.root, count, progress)
        else:
            fresh = _read_serial(preprocessor, tasks, cache, progress)
    except (OSError, sqlite3.Error) as error:
        raise ConvpipeError(
            f"Cannot write the preprocessing cache in {cache.root} ({getattr(error, 'strerror', None) or error}); "
            "pass --cache-dir to use another folder, or --no-cache."
        ) from None
    for index, reason, notes in fresh:
        results[index] = ReadResult(reason=reason, notes=list(notes))
    for index, key in enumerate(keys):
        if results[index] is None:  # a duplicate of an input looked up or read just now
            results[index] = results[first[key]]
    return keys, results  # type: ignore[return-value]


def _read_serial(preprocessor: Any, tasks: list, cache: PreprocessCache, progress: ProgressCallback | None) -> list[tuple]:
    done: list[tuple] = []
    for start in range(0, len(tasks), SERIAL_CHUNK):
        done += _read_and_store(preprocessor, tasks[start : start + SERIAL_CHUNK], cache)
        if progress is not None:
            progress(len(done), len(tasks))
    return done


def _read_parallel(
    preprocessor: Any, tasks: list, root: Path, workers: int, progress: ProgressCallback | None
) -> list[tuple]:
    # Chunks of up to 64 keep the progress bar moving, the workers balanced (8 per worker at
    # least) and the cache transactions few.
    size = max(1, min(64, math.ceil(len(tasks) / (workers * 8))))
    chunks = [tasks[start : start + size] for start in range(0, len(tasks), size)]
    name, config = type(preprocessor).__name__, preprocessor.get_config()
    method = start_method()
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        from preprocess import PREPROCESSORS

        context.set_forkserver_preload(worker_imports(PREPROCESSORS.values()))
    logger.info("starting %d %s workers", min(workers, len(chunks)), method)
    done: list[tuple] = []
    with _one_thread_per_worker(), ProcessPoolExecutor(
        max_workers=min(workers, len(chunks)), mp_context=context, initializer=_init_worker
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
