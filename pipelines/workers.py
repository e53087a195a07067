"""Worker processes for reading and encoding inputs, started once per command and reused.

How children start matters more than anything else here on small machines:

- `fork` when it is safe: on Linux, from a parent with one Python thread and no ML framework
  loaded. A forked child starts in milliseconds with the decoders the parent already imported.
- otherwise `forkserver` (a clean server process forks the children; `prestart` launches it early
  so that it imports the decoders while the parent imports TensorFlow), or `spawn`. A forked copy
  of a process running TensorFlow's thread pools can deadlock, so it is never forked.

Children use one BLAS thread each: two workers with two OpenBLAS threads each on 2 cores read
audio four times slower than one worker (the spinning threads fight over the cores).

The parent only hands out chunks: when it read chunks too, the pool's feeder threads waited for
the GIL behind its work and the children starved (reading 2,000 clips on 2 cores: 1.14 s with
the parent and one child, 1.02 s with two children). Children are started on first use and
reused by every step of a command (reading each split, then encoding it).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from pipelines.allocator import keep_freed_memory
from preprocess import ConvpipeError

logger = logging.getLogger(__name__)

#: Loaded in a parent, these make forking unsafe (their runtimes own threads and locks).
FRAMEWORKS = ("tensorflow", "jax", "torch")
#: How often a child checks that the command process that started it still runs.
PARENT_CHECK_SECONDS = 1.0
#: Thread counts of the BLAS and OpenMP runtimes, set to 1 in children.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


#: More worker processes than this only add start-up cost; far more overflow the pool's C int.
MAX_WORKERS = 1024


def resolve_workers(workers: int | None) -> int:
    """`None` or 0 mean one worker per available CPU core."""
    if workers is None or workers == 0:
        return available_cores()
    if not 0 < workers <= MAX_WORKERS:  # the process pool takes a C int
        raise ConvpipeError(
            f"--workers must be 0 (one per CPU core) or a positive integer up to {MAX_WORKERS}, got {workers}."
        )
    return workers


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


def worker_imports(preprocessor_class: type | None = None) -> list[str]:
    """The modules children need: the reading and encoding code and the decoders of
    `preprocessor_class` (of every preprocessor when None)."""
    from preprocess import PREPROCESSORS

    names = ["pipelines.parallel_read", "pipelines.parallel_encode"]
    for cls in PREPROCESSORS.values() if preprocessor_class is None else [preprocessor_class]:
        names += [cls.__module__, *cls.worker_imports]
    return names


def import_decoders(preprocessor: Any) -> None:
    """Import what reading needs now (librosa takes about a second), e.g. before timing.
    `preprocessor` is a preprocessor or its class."""
    for name in getattr(preprocessor, "worker_imports", ()):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


@contextlib.contextmanager
def one_thread_per_child():
    """Children started inside inherit 1 for every BLAS/OpenMP thread count the user left unset."""
    unset = [name for name in THREAD_VARIABLES if name not in os.environ]
    for name in unset:
        os.environ[name] = "1"
    try:
        yield
    finally:
        for name in unset:
            os.environ.pop(name, None)


def prestart(workers: int | None, preprocessor_class: type | None = None) -> None:
    """Start the fork server in the background (it imports the decoders), so that children are
    ready when a command that loads TensorFlow before reading (train, evaluate) reaches its
    inputs: the decoders' import then overlaps TensorFlow's."""
    if resolve_workers(workers) < 2 or "forkserver" not in multiprocessing.get_all_start_methods():
        return
    multiprocessing.get_context("forkserver").set_forkserver_preload(worker_imports(preprocessor_class))
    with one_thread_per_child():
        _start_fork_server()


def _start_fork_server() -> None:
    """Start the fork server with SIGINT ignored, which it keeps across its exec: Ctrl-C reaches
    the whole process group, and the server printed a traceback of its own from the middle of
    its imports (the command reports the interrupt, once)."""
    from multiprocessing import forkserver

    main = threading.current_thread() is threading.main_thread()  # signal handlers are set there only
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        forkserver.ensure_running()
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)


def _one_blas_thread_here() -> contextlib.AbstractContextManager:
    """Limit this process' BLAS thread pools to one thread until the context exits."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(1)


def _init_child(parent: int) -> None:
    # Ctrl-C reaches the whole process group; the parent stops the pool and reports it once.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_without, args=(parent,), name="parent-watch", daemon=True).start()
    from pipelines import parallel_read

    keep_freed_memory()  # spawned and fork-server children do not inherit it
    parallel_read.forget_parent_state()  # a forked child must not share the parent's SQLite connections
    _one_blas_thread_here().__enter__()  # libraries loaded before a fork ignore the environment


def _exit_without(parent: int) -> None:
    """End this child once the command process `parent` is gone. A SIGKILLed command's children
    otherwise wait for work forever (each holds both ends of the pool's queue, so none sees it
    close), with the decoders and a cache connection loaded; so does a fork server they keep."""
    while True:
        time.sleep(PARENT_CHECK_SECONDS)
        try:
            os.kill(parent, 0)
        except (ProcessLookupError, PermissionError):  # PermissionError: another user's process reused the id
            os._exit(1)


class Workers:
    """`count` worker processes, started on first use (none when `count` is 1: then this process
    does the work).

    Use as a context manager, or call `close()`; children are reused until then.
    """

    def __init__(self, count: int | None = None, preprocessor_class: type | None = None):
        self.count = resolve_workers(count)
        self.preprocessor_class = preprocessor_class
        # Every command that reads data comes here first. Its chunk- and batch-sized arrays then
        # reuse freed memory instead of page-faulting it in again (`pipelines.allocator`).
        keep_freed_memory()
        self.method: str | None = None
        self._pool: ProcessPoolExecutor | None = None
        self._environment: contextlib.ExitStack | None = None

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._environment is not None:
            self._environment.close()
            self._environment = None

    def _children(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self.method = start_method()
            context = multiprocessing.get_context(self.method)
            if self.method == "forkserver":
                context.set_forkserver_preload(worker_imports(self.preprocessor_class))
            # Kept until close(): spawn and forkserver start children lazily, on submit.
            self._environment = contextlib.ExitStack()
            self._environment.enter_context(one_thread_per_child())
            if self.method == "forkserver":
                _start_fork_server()  # now, not at the first submit: see there
            self._pool = ProcessPoolExecutor(
                self.count, mp_context=context, initializer=_init_child, initargs=(os.getpid(),)
            )
            logger.info("started %d %s workers", self.count, self.method)
        return self._pool

    def map_chunks(
        self,
        chunks: Sequence[Any],
        local: Callable[[Any], Any],
        remote: Callable[[Any], tuple],
        parallel: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> list[Any]:
        """For every chunk, `fn(*args)` in a child where `remote(chunk)` gives `(fn, *args)`
        (picklable), or `local(chunk)` in this process without `parallel` or with one worker;
        the results in chunk order. `progress(chunks_done)` is called as chunks finish.
        """
        if not (parallel and self.count > 1 and len(chunks) > 1):
            results = []
            for chunk in chunks:
                results.append(local(chunk))
                if progress is not None:
                    progress(len(results))
            return results
        pool = self._children()
        pending = {pool.submit(*remote(chunk)): index for index, chunk in enumerate(chunks)}
        results: list[Any] = [None] * len(chunks)
        done = 0
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    results[pending.pop(future)] = future.result()
                    done += 1
                if progress is not None:
                    progress(done)
        except BrokenProcessPool:
            raise ConvpipeError(
                "A worker process died while reading or encoding inputs (out of memory?); "
                "try fewer workers, e.g. --workers 1."
            ) from None
        except BaseException:
            for future in pending:
                future.cancel()
            raise
        return results


@contextlib.contextmanager
def borrowed(workers: "Workers | int | None", preprocessor_class: type | None = None):
    """`workers` itself when it is a `Workers` (its owner closes it), else a new one for this block."""
    if isinstance(workers, Workers):
        yield workers
        return
    with Workers(workers, preprocessor_class) as pool:
        yield pool
