"""One SQLite file that holds what `read` made of each input: `entries.sqlite` in the cache folder.

One file, not one file per input. On the 2-core development machine (ext4) creating a small file
costs about 1 ms, more than decoding a 64x64 PNG (0.3 ms) and about as much as a log-mel
spectrogram, while a row written in a batched SQLite transaction costs about 0.2 ms. SQLite
also gives what the cache needs for free: writes from several worker processes at once (WAL),
transactions that a crash leaves whole or absent, and thousands of keys looked up in one query.

Rows are checked when read (byte count and CRC-32 of an array), so a damaged row is a miss that
is recomputed, never a wrong array. A database file that SQLite cannot open at all is moved
aside and started afresh.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import sqlite3
import time
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

FILENAME = "entries.sqlite"
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS entries ("
    " key TEXT PRIMARY KEY,"
    " dtype TEXT, shape TEXT, data BLOB, crc INTEGER,"  # an array item; all NULL otherwise
    " doc TEXT NOT NULL)"  # JSON: notes, and the skip reason or a JSON item
)
#: One row per list of inputs read together (a split): the reasons and notes of all of them, so
#: that a warm run answers every lookup with one query. Also one per probe of sampled training
#: files (`PreprocessCache.probe`), under keys of their own.
BATCH_SCHEMA = "CREATE TABLE IF NOT EXISTS batches (key TEXT PRIMARY KEY, doc TEXT NOT NULL)"
#: The document of an entry with no notes: most of them, so lookups skip parsing it.
PLAIN_DOC = json.dumps({"notes": []})
PLAIN_DOCUMENT: dict = {"notes": []}
#: How long a worker waits for another one's write before giving up.
BUSY_SECONDS = 120
#: Keys per SELECT ... IN (...): well under SQLite's limit of 32,766 parameters.
LOOKUP_BATCH = 900


def encode_row(key: str, item: Any, reason: str | None, notes: list[str]) -> tuple:
    """The row of one `read` result: arrays as raw bytes (never pickle), the rest as JSON."""
    doc: dict[str, Any] = {"notes": list(notes)}
    if reason is not None:
        doc["skip"] = reason
        return key, None, None, None, None, json.dumps(doc)
    if isinstance(item, np.ndarray):
        array = np.ascontiguousarray(item)
        data = array.tobytes()
        return key, array.dtype.str, json.dumps(list(array.shape)), data, zlib.crc32(data), json.dumps(doc)
    doc["item"] = item
    return key, None, None, None, None, json.dumps(doc, ensure_ascii=False)


def damaged_database(error: sqlite3.DatabaseError) -> bool:
    """Whether SQLite says the file itself is damaged (not locked, unwritable or misused)."""
    return getattr(error, "sqlite_errorcode", None) in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def _recovering(method: Callable) -> Callable:
    """Run `method` again on a fresh database when SQLite finds the file damaged, on opening it
    ("file is not a database") or mid-query ("database disk image is malformed")."""

    @functools.wraps(method)
    def wrapper(self: "EntryStore", *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as error:
            if not self.repair or not damaged_database(error):
                raise
            self._start_afresh(error)
            return method(self, *args, **kwargs)

    return wrapper


class EntryStore:
    """The entries of one cache folder. Opened lazily; each process opens its own connection."""

    def __init__(self, root: Path, repair: bool = True):
        self.path = Path(root) / FILENAME
        self.repair = repair  # False: report damage (`cache info`), never replace the database
        self._db: sqlite3.Connection | None = None
        self._inode: int | None = None  # of the file this connection opened

    def _connect(self, create: bool) -> sqlite3.Connection | None:
        if self._db is not None:
            return self._db
        if not create and not self.path.exists():
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = self._open()  # a damaged file: the calling method's `_recovering` starts afresh
        return self._db

    def _start_afresh(self, error: sqlite3.DatabaseError) -> None:
        """Drop a damaged database: its entries are decoded again, as a damaged entry is. Another
        process may have replaced it already (another inode): then this one only reconnects."""
        inode = self._inode
        self.close()
        try:
            replaced = inode is not None and self.path.stat().st_ino != inode
        except FileNotFoundError:
            replaced = True
        if replaced:
            return
        logger.warning("preprocessing cache %s is unreadable (%s); starting it afresh", self.path, error)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def _open(self) -> sqlite3.Connection:
        # Autocommit mode; writes use explicit transactions. A busy database (another process
        # writing a chunk) is waited for, not an error.
        db = sqlite3.connect(self.path, timeout=BUSY_SECONDS, isolation_level=None, check_same_thread=False)
        self._inode = self.path.stat().st_ino
        try:
            # Two workers creating the database at once: switching it to WAL and creating the
            # tables can fail at once with "locked" (SQLite's deadlock avoidance skips the busy
            # wait), measured in 123 of 300 such races; so retry.
            _when_unlocked(lambda: _set_up(db))
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @_recovering
    def put_many(self, rows: Iterable[tuple]) -> None:
        """Write rows made by `encode_row`, all or none."""
        rows = list(rows)
        if not rows:
            return
        db = self._connect(create=True)
        self._begin_write(db)
        try:
            db.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?)", rows)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @staticmethod
    def _begin_write(db: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE, retried every 0.5 ms while another worker holds the write lock.

        SQLite's own busy handler sleeps 1, 2, 5, 10, ... ms between tries; with two workers
        committing a chunk of images every few milliseconds, they mostly slept (two workers
        read 5,000 PNGs no faster than one).
        """
        db.execute("PRAGMA busy_timeout = 0")
        try:
            _when_unlocked(lambda: db.execute("BEGIN IMMEDIATE"))
        finally:
            db.execute(f"PRAGMA busy_timeout = {BUSY_SECONDS * 1000}")

    @_recovering
    def put_batch(self, key: str, document: dict) -> None:
        self._connect(create=True).execute("INSERT OR REPLACE INTO batches VALUES (?, ?)", (key, json.dumps(document)))

    @_recovering
    def get_batch(self, key: str) -> dict | None:
        db = self._connect(create=False)
        row = None if db is None else db.execute("SELECT doc FROM batches WHERE key = ?", (key,)).fetchone()
        try:
            return None if row is None else json.loads(row[0])
        except ValueError:
            return None

    def _select(self, columns: str, keys: list[str]):
        """Rows `key, <columns>` of the entries among `keys` that exist, a few hundred per query."""
        db = self._connect(create=False)
        if db is None:
            return
        for start in range(0, len(keys), LOOKUP_BATCH):
            batch = keys[start : start + LOOKUP_BATCH]
            yield from db.execute(f"SELECT key, {columns} FROM entries WHERE key IN ({','.join('?' * len(batch))})", batch)

    @_recovering
    def status_many(self, keys: list[str]) -> dict[str, tuple[bool, dict] | None]:
        """For each key found: (holds an array, its JSON document). Array bytes are not read;
        only their count is checked, so a lookup costs microseconds; a row whose count is wrong
        is reported as None (corrupt) and removed."""
        columns = "dtype, shape, length(data), doc"
        return self._decoded({key: (_status, row) for key, *row in self._select(columns, keys)})

    @_recovering
    def get_many(self, keys: list[str]) -> dict[str, tuple[Any, dict] | None]:
        """(item, document) of each entry found; None for a damaged one, which is removed."""
        columns = "dtype, shape, data, crc, doc"
        return self._decoded({key: (_item, row) for key, *row in self._select(columns, keys)})

    def _decoded(self, rows: dict[str, tuple]) -> dict[str, Any]:
        """Each row through its decoder; a damaged one (logged) becomes None and is removed."""
        found = {}
        for key, (decode, row) in rows.items():
            try:
                found[key] = decode(*row)
            except (ValueError, TypeError) as error:
                logger.warning("cache entry %s is corrupt (%s); recomputing it", key, error)
                found[key] = None
        self.delete([key for key, value in found.items() if value is None])
        return found

    def delete(self, keys: list[str]) -> None:
        if keys:
            db = self._connect(create=False)
            if db is not None:
                db.executemany("DELETE FROM entries WHERE key = ?", [(key,) for key in keys])

    @_recovering
    def count(self) -> int:
        db = self._connect(create=False)
        return 0 if db is None else db.execute("SELECT count(*) FROM entries").fetchone()[0]

    def files(self) -> list[Path]:
        return [path for suffix in ("", "-wal", "-shm") if (path := Path(f"{self.path}{suffix}")).exists()]

    def remove(self) -> None:
        """Delete the database (and its WAL files)."""
        self.close()
        for path in self.files():
            path.unlink(missing_ok=True)


def _set_up(db: sqlite3.Connection) -> None:
    # 64 KiB pages (the largest; only a new database takes it): measured on 5,000 image rows of
    # 12 KB, writing took 0.06 s instead of 0.10 s and loading 0.014 s instead of 0.064 s.
    db.execute("PRAGMA page_size=65536")
    db.execute("PRAGMA journal_mode=WAL")
    # In WAL mode NORMAL never corrupts the file; a power cut may drop the last transactions,
    # which are then recomputed (cheaper than an fsync per chunk).
    db.execute("PRAGMA synchronous=NORMAL")
    # Checkpoint (copy the WAL into the database, with an fsync) every 64 MiB (1,024 pages of
    # 64 KiB) rather than every 1,000 pages: 0.29 -> 0.06 s of writing for 2,000 spectrograms
    # with 4 KiB pages.
    db.execute("PRAGMA wal_autocheckpoint=1024")
    db.execute(SCHEMA)
    db.execute(BATCH_SCHEMA)


def _when_unlocked(action: Callable[[], Any]) -> Any:
    """`action()`, retried every 0.5 ms while it fails because another process holds a lock,
    for up to `BUSY_SECONDS`."""
    deadline = time.monotonic() + BUSY_SECONDS
    while True:
        try:
            return action()
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.0005)


def _document(doc: str) -> dict:
    document = PLAIN_DOCUMENT if doc == PLAIN_DOC else json.loads(doc)
    if not isinstance(document, dict) or not isinstance(document.get("notes"), list):
        raise ValueError("unexpected document")
    return document  # shared for plain rows: callers copy what they change


def _status(dtype, shape, length, doc) -> tuple[bool, dict]:
    if dtype is not None and length != _nbytes(dtype, shape):
        raise ValueError("array of the wrong size")
    return dtype is not None, _document(doc)


def _item(dtype, shape, data, crc, doc) -> tuple[Any, dict]:
    document = _document(doc)
    if dtype is None:
        return document.get("item"), document
    if len(data) != _nbytes(dtype, shape) or zlib.crc32(data) != crc:
        raise ValueError("array bytes do not match their size or checksum")
    return np.frombuffer(data, dtype=np.dtype(dtype)).reshape(json.loads(shape)).copy(), document


@functools.lru_cache(maxsize=256)
def _nbytes(dtype: str, shape: str) -> int:
    return math.prod(json.loads(shape)) * np.dtype(dtype).itemsize

