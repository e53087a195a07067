"""The preprocessing cache: what `read` made of each input, and encoded shards, kept on disk.

Three kinds of entries, all keyed by content, so that nothing ever needs to be invalidated by
hand:

    entries.sqlite                 one row per input: its `read` result (or why it was skipped)
                                   key = hash(input identity, preprocessor class + config, version)
    fits/<key>.json (+ .npz)       a fitted preprocessor; key = hash(read config, training entries)
    shards/<key>/NNNNN.npy         encoded arrays of one split, in order, for streaming
                                   key = hash(entry keys in order, fitted preprocessor, version)
    probes (in entries.sqlite)     what a look at sampled training files chose (`probe`)
                                   key = hash(the sampled files' identities, arguments, version)

`read` is stateless, so its entries serve the fit as well: a warm run decodes nothing, not even
to learn the vocabulary or the audio statistics. A changed preprocessing parameter changes every
key (all inputs are affected); a touched file changes only its own key (path, size, mtime_ns,
ctime_ns and inode, and with `verify` a hash of its bytes). A corrupt or half-written entry is a miss, never a crash.

Entries are written in one SQLite transaction per chunk of inputs (`pipelines.entry_store`
says why not one file each); a crash leaves a chunk whole or absent.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import stat as stat_module
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelines import __version__
from pipelines.entry_store import FILENAME, EntryStore, damaged_database, encode_row
from pipelines.file_locks import lock
from preprocess import ConvpipeError

logger = logging.getLogger(__name__)

#: Bumped when the layout or the meaning of an entry changes; old entries are then never read.
#: 2: entries moved from one .npy/.json file per input into entries.sqlite.
#: 3: character-level text reads keep up to 2,048 characters (were 512).
#: 4: text reads refuse whitespace-only files and files holding NUL bytes (were read as text);
#:    an all-silent audio clip reads as the quietest level, not the loudest.
#: 5: text that is not UTF-8 falls back to Windows-1252; UTF-16 with a BOM is read; files full of
#:    control characters are refused; cut-off compressed audio is refused.
#: 6: uint16 colour arrays read as their high bytes, big-endian arrays read, files keyed by
#:    ctime and inode too.
#: 7: text files of only invisible characters refused; 16-bit gray pixels rounded to 8 bits (were
#:    truncated); transparency marked by a colour (PNG tRNS) or an RGBA palette composited.
#: 8: the tRNS gray of 1-, 2-, 4- and 16-bit gray PNGs composited too.
CACHE_FORMAT = 8
#: Bumped when a probe can give another result for the same files (a change to
#: `preprocess.probe_images` or to `defaults.clip_length_median`); stored probes are then never read.
PROBE_VERSION = 1


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/convpipe, else ~/.cache/convpipe."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "convpipe"


def digest(*parts: Any) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        data = part if isinstance(part, (bytes, bytearray, memoryview)) else json.dumps(part, sort_keys=True).encode()
        hasher.update(len(data).to_bytes(8, "little"))
        hasher.update(data)
    return hasher.hexdigest()[:40]


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read a megabyte at a time; OSError when it cannot be read."""
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def input_identity(x: Any, verify: bool = False) -> str:
    """What identifies one input: a file's absolute path, size, mtime, ctime, inode and mode (and a
    hash of its content with `verify`); an in-memory input's content.

    This runs for every input of every run, so files cost one `stat` and no hashing here.
    """
    if isinstance(x, os.PathLike):
        path = os.path.abspath(os.fspath(x))
        try:
            stat = os.stat(path)
        except (OSError, ValueError) as error:  # read() reports it (ValueError: a NUL byte); the skip is cached under this identity
            return f"missing\0{path}\0{type(error).__name__}"
        if verify and stat_module.S_ISREG(stat.st_mode):  # a pipe's reading would wait for a writer
            try:
                return f"file+hash\0{path}\0{stat.st_size}\0{file_sha256(path)}"
            except OSError as error:
                return f"unreadable\0{path}\0{type(error).__name__}"
        # ctime and inode as git's index keeps them: a file replaced by one of the same size whose
        # mtime was carried over (`cp -p`, `rsync -a`, an archive's 2-second times) still misses.
        # The mode too: a file skipped as "permission denied" is read again once it is readable.
        return f"file\0{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ctime_ns}\0{stat.st_ino}\0{stat.st_mode}"
    if isinstance(x, str):  # a text's content; `read_into_cache` passes other modalities' paths as Paths
        return digest("text", x.encode("utf-8", "surrogatepass"))
    if hasattr(x, "getexif") and hasattr(x, "tobytes"):  # a Pillow image: its pixels alone miss its palette
        palette = (x.palette.mode, x.palette.tobytes()) if getattr(x, "palette", None) is not None else None
        meta = [x.mode, list(x.size), repr(x.info.get("transparency")), x.getexif().get(0x0112)]
        return digest("pil", meta, *(() if palette is None else (palette[0], palette[1])), x.tobytes())
    if isinstance(x, (bytes, bytearray)):
        return digest("bytes", bytes(x))
    if isinstance(x, tuple) and len(x) == 2:  # (waveform, sample_rate)
        return digest("pair", input_identity(x[0]), repr(x[1]))
    array = np.ascontiguousarray(x)
    return digest("array", str(array.dtype), list(array.shape), array.tobytes())


def entry_key(prefix: str, identity: str) -> str:
    """The entry of one input under one `read_key`."""
    data = f"{prefix}\0{identity}".encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=20).hexdigest()


def read_key(preprocessor: Any) -> str:
    """Everything `read` depends on: the class, its parameters, its reading, convpipe's version."""
    return digest("read", CACHE_FORMAT, type(preprocessor).__name__, preprocessor.get_config(), __version__, *_reading(preprocessor))


def fitted_key(preprocessor: Any) -> str:
    """Everything `encode` depends on: `read_key` plus the fitted values and arrays."""
    return digest("fitted", read_key(preprocessor), *_fitted_parts(preprocessor))


def fitted_digest(preprocessor: Any) -> str:
    """What a fitted preprocessor computes, whatever convpipe's version: its class, parameters
    and fitted values and arrays (a resumed run checks that its data still fits the same)."""
    return digest("fitted", type(preprocessor).__name__, preprocessor.get_config(), *_fitted_parts(preprocessor), *_reading(preprocessor))


def _reading(preprocessor: Any) -> list[Any]:
    """A reading version other than the first, so that raising it keeps cached reads and resumed
    runs from mixing arrays of two readings, while keys and digests made before it existed stay
    the same."""
    version = getattr(preprocessor, "reading_version", 1)
    return [] if version == 1 else ["reading_version", version]


def _fitted_parts(preprocessor: Any) -> list[Any]:
    values, arrays = preprocessor._fitted_state()
    return [values, *(part for name in sorted(arrays) for part in (name, np.ascontiguousarray(arrays[name]).tobytes()))]


@dataclass
class ReadResult:
    """One input after `read`: its item, or the reason it was skipped; notes either way."""

    item: Any = None
    reason: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class CacheStats:
    """Counts of this process' lookups, recorded under `cache` in config.json (train) and
    report.json (evaluate): the tests check reuse by these, not by timings."""

    hits: int = 0
    misses: int = 0  # inputs that had to be read (decoded) again
    corrupt: int = 0  # entries that existed but could not be read (then recomputed)
    shard_hits: int = 0
    shard_misses: int = 0
    fit_hits: int = 0  # fits restored instead of recomputed
    probe_hits: int = 0  # probes of sampled training files answered without opening them


@contextlib.contextmanager
def cache_errors(
    folder: Path, action: str = "use the preprocessing cache",
    advice: str = "pass --cache-dir to use another folder, or --no-cache",
) -> Iterator[None]:
    """An unusable cache folder (permissions, a full disk, a locked database) as one line:
    "Cannot <action> in <folder> (<reason>); <advice>."."""
    try:
        yield
    except (OSError, sqlite3.Error) as error:
        raise ConvpipeError(f"Cannot {action} in {folder} ({getattr(error, 'strerror', None) or error}); {advice}.") from None


TEMPORARY_PREFIX = "convpipe-shards-"
#: Held shared by every command that uses a cache folder, exclusively by `cache clear`: clearing
#: under a running training would delete the shards it reads each epoch.
LOCK_FILE = "in-use.lock"


def _lock_folder(root: Path, exclusive: bool):
    """The lock file of `root`, open and locked; None where locks are not available (Windows, a
    read-only folder), since the lock is a guard against a mistake, not needed to work."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        handle = open(root / LOCK_FILE, "a+")  # a shared lock needs read access, an exclusive one write
    except OSError:
        return None
    try:
        # A process never conflicts with itself, so a library user may clear a cache that an
        # object of the same process still holds.
        if not lock(handle, exclusive):
            handle.close()
            return None
    except OSError as error:
        handle.close()
        if exclusive:
            raise ConvpipeError(
                f"The cache {root} is in use by another running convpipe command; "
                "clear it when that command has finished."
            ) from None
        logger.debug("No lock on %s: %s", root, error)
        return None
    return handle


def remove_orphaned_temporary_caches(folder: Path) -> None:
    """Remove `--no-cache` folders left in `folder` by processes that no longer run (killed
    before they could clean up)."""
    for path in folder.glob(f"{TEMPORARY_PREFIX}*-*"):
        pid = path.name[len(TEMPORARY_PREFIX):].split("-")[0]
        if not pid.isdigit():
            continue  # named before the process id was added: its owner cannot be told
        try:
            os.kill(int(pid), 0)
            continue  # still running (or a process that reused the id: left for later)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (PermissionError, OverflowError):  # another user's process, or not a process id
            continue


class PreprocessCache:
    """A cache folder: per-input `read` entries and encoded shards.

    Args:
        root: the cache folder (created on first write).
        verify: identify files by a hash of their content too, not only size and mtime.
        temporary: the folder is private to this run and removed by `cleanup` (`--no-cache`).
    """

    def __init__(self, root: Path, verify: bool = False, temporary: bool = False):
        self.root = Path(root)
        self.verify = verify
        self.temporary = temporary
        self.stats = CacheStats()
        self.entries = EntryStore(self.root)
        self._lock = None  # held while the cache is in use (`open`)

    @classmethod
    def open(cls, cache_dir: str | os.PathLike | None, enabled: bool = True, verify: bool = False) -> "PreprocessCache":
        """The cache at `cache_dir` (default: the XDG cache folder), or a temporary one."""
        if not enabled:
            import tempfile

            remove_orphaned_temporary_caches(Path(tempfile.gettempdir()))
            # Removed by `cleanup`, or when the object is garbage collected (an error, Ctrl-C);
            # the process id in the name lets a later run remove it after a SIGKILL.
            folder = tempfile.TemporaryDirectory(
                prefix=f"{TEMPORARY_PREFIX}{os.getpid()}-", ignore_cleanup_errors=True
            )
            cache = cls(Path(folder.name), verify=verify, temporary=True)
            cache._folder = folder
            return cache
        cache = cls(Path(cache_dir).expanduser() if cache_dir else default_cache_dir(), verify=verify)
        cache._lock = _lock_folder(cache.root, exclusive=False)
        return cache

    def cleanup(self) -> None:
        self.entries.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        if self.temporary:
            self._folder.cleanup()

    def __enter__(self) -> "PreprocessCache":
        return self

    def __exit__(self, *exc_info) -> None:
        self.cleanup()

    def lookup_many(self, keys: list[str]) -> list[ReadResult | None]:
        """Each entry's reason and notes (not an array item), or None where it must be computed."""
        found = self.entries.status_many(keys)
        results: list[ReadResult | None] = []
        for key in keys:
            if key not in found:
                self.stats.misses += 1
                results.append(None)
            elif found[key] is None:
                self.stats.corrupt += 1
                self.stats.misses += 1
                results.append(None)
            else:
                self.stats.hits += 1
                results.append(result_of(*found[key], item=None))
        return results

    def lookup_batch(self, keys: list[str]) -> list[ReadResult] | None:
        """The results of exactly these entries, if they were read together before, else None.

        One query instead of one lookup per entry: the warm path of a large split. An entry
        removed since (found corrupt) is recomputed when its item is loaded (`items`).
        """
        document = self.entries.get_batch(digest("batch", keys))
        if document is None or document.get("count") != len(keys):
            return None
        skips, notes = document.get("skips", {}), document.get("notes", {})
        results = []
        for index in range(len(keys)):
            reason = skips.get(str(index))
            results.append(ReadResult(reason=reason, notes=list(notes.get(str(index), []))))
        self.stats.hits += len(keys)
        return results

    def store_batch(self, keys: list[str], results: list[ReadResult]) -> None:
        """Remember the results of these entries together (see `lookup_batch`)."""
        document = {
            "count": len(keys),
            "skips": {str(i): r.reason for i, r in enumerate(results) if r.reason is not None},
            "notes": {str(i): r.notes for i, r in enumerate(results) if r.notes},
        }
        self.entries.put_batch(digest("batch", keys), document)

    def store(self, pairs: list[tuple[str, ReadResult]]) -> None:
        """Write `(key, result)` pairs in one transaction."""
        self.entries.put_many(encode_row(key, r.item, r.reason, r.notes) for key, r in pairs)

    def stored_item(self, key: str) -> Any:
        """The item of a stored entry, or None when there is none or it is damaged (tests, tools)."""
        found = self.entries.get_many([key]).get(key)
        return None if found is None else found[0]

    def items(self, keys: list[str], recompute: Callable[[int], ReadResult]) -> list[Any]:
        """The items of entries found moments ago, in order, loaded in one query. One that cannot
        be loaded now (damaged, removed) is read again with `recompute(position)` and rewritten."""
        found = self.entries.get_many(keys)
        items, fresh = [], []
        for position, key in enumerate(keys):
            value = found.get(key)
            if value is not None and "skip" not in value[1]:
                items.append(value[0])
                continue
            self.stats.corrupt += 1
            result = recompute(position)
            if result.reason is not None:
                raise ConvpipeError(f"An input changed while in use and can no longer be read: {result.reason}")
            fresh.append((key, result))
            items.append(result.item)
        self.store(fresh)
        return items

    def probe(self, name: str, sample: Sequence[Any], arguments: dict[str, Any], compute: Callable[[], Any]) -> Any:
        """`compute()`, a look at `sample` (training files) before any input is read, or what it
        returned for the same files and `arguments` before: a warm run would otherwise open them
        again, and Pillow finds a PNG's EXIF orientation only by decoding the whole file.

        The result must survive JSON unchanged. Files are identified as `read` entries are (a
        changed, added or removed file is probed again); a sample with in-memory inputs, and a
        temporary cache (`--no-cache`), are probed each time and nothing is stored.
        """
        if self.temporary or not all(isinstance(x, (str, os.PathLike)) for x in sample):
            return compute()
        identities = [input_identity(Path(x), self.verify) for x in sample]
        key = digest("probe", PROBE_VERSION, CACHE_FORMAT, __version__, name, arguments, identities)
        # An unusable cache is not reported here: reading the inputs next says so in one line.
        try:
            found = self.entries.get_batch(key)
        except (OSError, sqlite3.Error):
            return compute()
        if isinstance(found, dict) and "result" in found:
            self.stats.probe_hits += 1
            return found["result"]
        result = compute()
        try:
            self.entries.put_batch(key, {"result": result})
        except (OSError, sqlite3.Error) as error:  # only the next run's shortcut is lost
            logger.info("could not remember the %s probe in the cache (%s)", name, error)
        return result

    def shard_folder(self, key: str) -> Path:
        return self.root / "shards" / key


def result_of(is_array: bool, document: dict, item: Any = None) -> ReadResult:
    """A `ReadResult` from an entry's JSON document (and its array item, if loaded)."""
    notes = list(document["notes"])
    if "skip" in document:
        return ReadResult(reason=str(document["skip"]), notes=notes)
    return ReadResult(item=item if is_array else document.get("item"), notes=notes)


def cache_info(root: Path) -> dict[str, Any]:
    """Entries, shard sets, fits and bytes in a cache folder."""
    if root.exists() and not root.is_dir():
        raise ConvpipeError(f"--cache-dir {root} is a file, not a cache folder.")

    def files(folder: str):
        base = root / folder
        return [path for path in base.rglob("*") if path.is_file()] if base.is_dir() else []

    store = EntryStore(root, repair=False)  # looking never replaces a damaged database
    try:
        with cache_errors(root, "read the cache", "check the folder's permissions"):  # e.g. read-only
            try:
                entries = store.count()
            except sqlite3.DatabaseError as error:
                if not damaged_database(error):
                    raise
                entries = None  # the next command that uses the cache starts it afresh
    finally:
        store.close()
    shard_sets = {path.parent for path in files("shards")}
    sizes = [path.stat().st_size for path in store.files()]
    sizes += [path.stat().st_size for folder in ("shards", "fits", "entries") for path in files(folder)]
    return {
        "path": str(root),
        "exists": root.is_dir(),
        "entries": entries,
        "shard_sets": len(shard_sets),
        "fits": len([path for path in files("fits") if path.suffix == ".json"]),
        "bytes": sum(sizes),
    }


def clear_cache(root: Path) -> dict[str, Any]:
    """Remove convpipe's entries and shards from `root`; returns what was there."""
    info = cache_info(root)
    if not info["exists"]:
        return info
    # Its shards/, fits/ or entries/ could be a user's own folders of those names. (entries/ of
    # two-character folders: the layout before format 2.)
    found = list((root / "entries").iterdir()) if (root / "entries").is_dir() else []
    old_layout = bool(found) and all(len(path.name) == 2 and path.is_dir() for path in found)
    if not (any((root / name).exists() for name in (FILENAME, LOCK_FILE)) or old_layout):
        raise ConvpipeError(f"{root} is not a convpipe cache (no {FILENAME}); nothing removed.")
    lock = _lock_folder(root, exclusive=True)
    try:
        with cache_errors(root, "clear the cache", "check the folder's permissions"):
            EntryStore(root).remove()
        for folder in ("entries", "shards", "fits"):  # entries/: the one-file-per-input layout before format 2
            shutil.rmtree(root / folder, ignore_errors=True)
    finally:
        if lock is not None:
            lock.close()
    return info
