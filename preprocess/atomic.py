"""Write files so that an interrupted process never leaves a half-written one behind.

Every artifact is written to a temporary name in the same folder, flushed to disk, and renamed
over the target; a rename within one file system is atomic, so readers see the old file or the new
one, never a mix. The temporary name carries its writer's host and process id, so that the next
write can remove what a killed writer left (`remove_abandoned`).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import glob
import json
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, sync: bool = True, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is fsynced and renamed to `path`.

    `sync=False` skips the fsync (the rename stays atomic) for files that are cheap to recompute
    when a power cut leaves them empty, such as cache entries. `replace=False` never replaces an
    existing `path`: of two processes that write it at once, one gets `FileExistsError`.

    The temporary name keeps the target's suffixes, because some writers choose the format
    from them (Keras: `.keras`, `.weights.h5`). On an exception the temporary file is removed and the target is
    left untouched.
    """
    target = Path(path)
    stem = target.name.split(".")[0]
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_abandoned(target.parent, stem)
        fd, tmp_name = tempfile.mkstemp(prefix=owned_prefix(stem), suffix=f".tmp{''.join(target.suffixes)}", dir=target.parent)
    except OSError as error:
        raise _naming(target, error) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            yield tmp
            if sync:
                with open(tmp, "rb+") as handle:
                    os.fsync(handle.fileno())
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.EDQUOT) or error.filename not in (None, tmp_name):
                raise  # another error, or one about another file the block wrote
            raise _naming(target, error) from None  # a full disk while writing: name the file, not its temporary
        # mkstemp creates 0600 files; give the result the mode a plain open() would have.
        os.chmod(tmp, 0o666 & ~_umask())
        try:
            if replace:
                os.replace(tmp, target)
            else:
                _link(tmp, target)
        except OSError as error:
            raise _naming(target, error) from None
    finally:
        tmp.unlink(missing_ok=True)


def owned_prefix(stem: str) -> str:
    """The name prefix of a temporary file that names its writer, `.{stem}.{host}-{pid}-`, so
    that one a killed process left can be told from one still being written."""
    return f".{stem}.{_host()}-{os.getpid()}-"


def remove_abandoned(folder: Path, stem: str | None = None) -> None:
    """Remove the temporary files named by `owned_prefix(stem)` (any stem when None) in `folder`
    whose writer, a process of this machine, no longer runs: a SIGKILL or a power cut skips the
    cleanup of `atomic_path`. Another machine's (a shared folder) and a running process's are
    left alone."""
    pattern = f".{'*' if stem is None else glob.escape(stem)}.*-*-*.tmp*"
    for path in Path(folder).glob(pattern):
        owner = path.name[1:].split(".")[1].split("-")  # stems have no dots: `atomic_path` cuts at the first
        if len(owner) != 3 or owner[0] != _host() or not owner[1].isdigit() or _running(int(owner[1])):
            continue
        path.unlink(missing_ok=True)


@functools.cache
def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:40] or "host"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process, or not a process id
        return True
    return True  # or a process that reused the id: its file is left for a later sweep


def _link(tmp: Path, target: Path) -> None:
    """`tmp` as `target` unless `target` exists, atomically (a hard link) where the file system
    has links."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise
    except OSError:  # no hard links here (FAT, some network file systems): check, then rename
        if target.exists():
            raise FileExistsError(errno.EEXIST, "File exists", os.fspath(target)) from None
        os.replace(tmp, target)


def _naming(target: Path, error: OSError) -> OSError:
    """The same error about `target`, not the temporary file the user never named (e.g. a
    read-only folder, or a folder where the file should go)."""
    if error.errno is None:
        return error
    return OSError(error.errno, error.strerror, os.fspath(target))  # OSError picks the subclass


@functools.cache
def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes, sync: bool = True, replace: bool = True) -> None:
    with atomic_path(path, sync=sync, replace=replace) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str, sync: bool = True, replace: bool = True) -> None:
    # a path's bytes that are not UTF-8 (lone surrogates) are written as \udcNN, not an error
    write_bytes(path, text.encode("utf-8", "backslashreplace"), sync=sync, replace=replace)


def json_text(obj: Any) -> str:
    """`obj` as the JSON text `write_json` writes; serialize first to fail before writing.

    Readable UTF-8; where `obj` holds a path with bytes that are not UTF-8 (read as lone
    surrogates, which UTF-8 cannot hold), every non-ASCII character is escaped instead, which
    reads back to the same string."""
    text = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(obj, indent=2) + "\n"
    return text


def write_json(path: str | os.PathLike, obj: Any, sync: bool = True, replace: bool = True) -> None:
    write_text(path, json_text(obj), sync=sync, replace=replace)


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
