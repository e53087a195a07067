"""The preprocessing cache: what `read` made of each input, and encoded shards, kept on disk.

Two kinds of entries, both keyed by content, so that nothing ever needs to be invalidated by hand:

    entries/<kk>/<key>.npy|.json   one input's `read` result (or the reason it was skipped)
                                   key = hash(input identity, preprocessor class + config, version)
    fits/<key>.json (+ .npz)       a fitted preprocessor; key = hash(read config, training entries)
    shards/<key>/NNNNN.npy         encoded arrays of one split, in order, for streaming
                                   key = hash(entry keys in order, fitted preprocessor, version)

`read` is stateless, so its entries serve the fit as well: a warm run decodes nothing, not even
to learn the vocabulary or the audio statistics. A changed preprocessing parameter changes every
key (all inputs are affected); a touched file changes only its own key (path, size, mtime_ns,
and with `verify` a hash of its bytes). A corrupt or half-written entry is a miss, never a crash.

Entries are renamed into place atomically but not fsynced: after a power cut an entry can be
empty, which reads as corrupt and is recomputed, while fsyncing thousands of small files would
cost more than decoding them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from preprocess import atomic

logger = logging.getLogger(__name__)

#: The smallest .npy file numpy writes (magic, version, padded header).
NPY_HEADER_BYTES = 64
#: Bumped when the layout or the meaning of an entry changes; old entries are then never read.
CACHE_FORMAT = 2  # 2: character-level reads keep up to 2,048 characters (were 512)


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


def _file_digest(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def input_identity(x: Any, verify: bool = False) -> str:
    """What identifies one input: a file's absolute path, size, mtime and mode (and a hash of its
    content with `verify`); an in-memory input's content.

    This runs for every input of every run, so files cost one `stat` and no hashing here.
    """
    if isinstance(x, os.PathLike):
        path = os.path.abspath(os.fspath(x))
        try:
            stat = os.stat(path)
        except OSError as error:  # read() reports it; the skip is cached under this identity
            return f"missing\0{path}\0{type(error).__name__}"
        if verify and not os.path.isdir(path):
            try:
                return f"file+hash\0{path}\0{stat.st_size}\0{_file_digest(Path(path))}"
            except OSError as error:
                return f"unreadable\0{path}\0{type(error).__name__}"
        # The mode too: a file skipped as "permission denied" is read again once it is readable.
        return f"file\0{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_mode}"
    if isinstance(x, str):
        return digest("text", x.encode("utf-8", "surrogatepass"))
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


def _version() -> str | None:
    from pipelines.environment import package_version

    return package_version("convpipe")


def read_key(preprocessor: Any) -> str:
    """Everything `read` depends on: the class, its parameters, convpipe's version."""
    return digest("read", CACHE_FORMAT, type(preprocessor).__name__, preprocessor.get_config(), _version())


def fitted_key(preprocessor: Any) -> str:
    """Everything `encode` depends on: `read_key` plus the fitted values and arrays."""
    values, arrays = preprocessor._fitted_state()
    array_parts = [part for name in sorted(arrays) for part in (name, np.ascontiguousarray(arrays[name]).tobytes())]
    return digest("fitted", read_key(preprocessor), values, *array_parts)


@dataclass
class ReadResult:
    """One input after `read`: its item, or the reason it was skipped; notes either way."""

    item: Any = None
    reason: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class CacheStats:
    """Counts of this process' lookups: the tests and `--verbose` runs read these, not timings."""

    hits: int = 0
    misses: int = 0  # inputs that had to be read (decoded) again
    corrupt: int = 0  # entries that existed but could not be read (then recomputed)
    shard_hits: int = 0
    shard_misses: int = 0
    fit_hits: int = 0  # fits restored instead of recomputed


def entry_paths(root: Path, key: str) -> tuple[Path, Path]:
    folder = root / "entries" / key[:2]
    return folder / f"{key}.npy", folder / f"{key}.json"


def _entry_exists(root: str, key: str) -> tuple[bool, bool]:
    """(.npy exists with a plausible size, .json exists): two `stat` calls, no pathlib."""
    base = os.path.join(root, "entries", key[:2], key)
    try:
        array = os.stat(base + ".npy").st_size >= NPY_HEADER_BYTES
    except OSError:
        array = None
    return array, os.path.exists(base + ".json")


def store_entry(root: Path, key: str, result: ReadResult) -> None:
    """Write one entry; arrays as .npy (never pickle), everything else as JSON."""
    array_path, json_path = entry_paths(root, key)
    if result.reason is None and isinstance(result.item, np.ndarray):
        if result.notes:  # sidecar first: an .npy without its notes would drop them
            atomic.write_json(json_path, {"format": CACHE_FORMAT, "array": True, "notes": result.notes}, sync=False)
        with atomic.atomic_path(array_path, sync=False) as tmp:
            np.save(tmp, result.item, allow_pickle=False)
        return
    document = {"format": CACHE_FORMAT, "notes": result.notes}
    if result.reason is not None:
        document["skip"] = result.reason
    else:
        document["item"] = result.item
    atomic.write_json(json_path, document, sync=False)


def load_entry(root: Path, key: str, header_only: bool = False) -> ReadResult | None:
    """The stored entry, or None when it is missing; a corrupt one is removed and raises
    `CorruptEntry`. With `header_only`, an array entry is only checked for a plausible size (an
    empty file is what a power cut leaves) and its item is None: a lookup must cost far less than
    decoding, and an entry that fails to load later is recomputed then (`PreprocessCache.item`)."""
    array_path, json_path = entry_paths(root, key)
    try:
        document = json.loads(json_path.read_text(encoding="utf-8")) if json_path.exists() else None
        if document is not None and (not isinstance(document, dict) or document.get("format") != CACHE_FORMAT):
            raise ValueError("unexpected entry document")
        if document is None or document.get("array"):
            if not array_path.exists():
                if document is not None:
                    raise ValueError("notes without their array")
                return None
            if header_only:
                if array_path.stat().st_size < NPY_HEADER_BYTES:
                    raise ValueError("shorter than an .npy header")
                item = None
            else:
                item = np.load(array_path, allow_pickle=False)
            return ReadResult(item=item, notes=list(document["notes"]) if document else [])
        if "skip" in document:
            return ReadResult(reason=str(document["skip"]), notes=list(document["notes"]))
        return ReadResult(item=document["item"], notes=list(document["notes"]))
    except (OSError, ValueError, KeyError, TypeError, EOFError) as error:
        logger.warning("cache entry %s is corrupt (%s); recomputing it", key, error)
        array_path.unlink(missing_ok=True)
        json_path.unlink(missing_ok=True)
        raise CorruptEntry(key) from None


class CorruptEntry(Exception):
    """Raised by `load_entry` for an entry that exists but cannot be read; callers recompute."""


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

    @classmethod
    def open(cls, cache_dir: str | os.PathLike | None, enabled: bool = True, verify: bool = False) -> "PreprocessCache":
        """The cache at `cache_dir` (default: the XDG cache folder), or a temporary one."""
        if not enabled:
            import tempfile

            # Removed by `cleanup`, or when the object is garbage collected (an error, Ctrl-C).
            folder = tempfile.TemporaryDirectory(prefix="convpipe-shards-", ignore_cleanup_errors=True)
            cache = cls(Path(folder.name), verify=verify, temporary=True)
            cache._folder = folder
            return cache
        return cls(Path(cache_dir).expanduser() if cache_dir else default_cache_dir(), verify=verify)

    def cleanup(self) -> None:
        if self.temporary:
            self._folder.cleanup()

    def __enter__(self) -> "PreprocessCache":
        return self

    def __exit__(self, *exc_info) -> None:
        self.cleanup()

    def lookup(self, key: str) -> ReadResult | None:
        """The entry's reason and notes (not its item), or None when it must be computed."""
        array, has_json = _entry_exists(str(self.root), key)
        if array and not has_json:  # the common case for images and audio: two stats, done
            self.stats.hits += 1
            return ReadResult()
        if array is None and not has_json:
            self.stats.misses += 1
            return None
        try:
            result = load_entry(self.root, key, header_only=True)
        except CorruptEntry:
            self.stats.corrupt += 1
            result = None
        if result is None:
            self.stats.misses += 1
        else:
            self.stats.hits += 1
        return result

    def item(self, key: str, recompute: Callable[[], ReadResult]) -> Any:
        """The item of an entry found moments ago; if it cannot be loaded now (damaged, removed),
        `recompute()` reads the input again and the entry is rewritten."""
        try:
            result = load_entry(self.root, key)
        except CorruptEntry:
            result = None
        if result is None or result.reason is not None:
            self.stats.corrupt += 1
            result = recompute()
            if result.reason is not None:
                from preprocess import ConvpipeError

                raise ConvpipeError(f"An input changed while in use and can no longer be read: {result.reason}")
            store_entry(self.root, key, result)
        return result.item

    def shard_folder(self, key: str) -> Path:
        return self.root / "shards" / key


def cache_info(root: Path) -> dict[str, Any]:
    """Entries, shard sets, fits and bytes in a cache folder."""
    def files(folder: str):
        base = root / folder
        return [path for path in base.rglob("*") if path.is_file()] if base.is_dir() else []

    entries = {path.stem for path in files("entries") if not path.name.startswith(".")}
    shard_sets = {path.parent for path in files("shards")}
    return {
        "path": str(root),
        "exists": root.is_dir(),
        "entries": len(entries),
        "shard_sets": len(shard_sets),
        "fits": len([path for path in files("fits") if path.suffix == ".json"]),
        "bytes": sum(path.stat().st_size for folder in ("entries", "shards", "fits") for path in files(folder)),
    }


def clear_cache(root: Path) -> dict[str, Any]:
    """Remove convpipe's entries and shards from `root`; returns what was there."""
    info = cache_info(root)
    for folder in ("entries", "shards", "fits"):
        shutil.rmtree(root / folder, ignore_errors=True)
    return info
