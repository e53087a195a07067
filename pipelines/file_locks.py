"""POSIX record locks (`fcntl.lockf`): how convpipe's commands keep out of each other's way.

Record locks, not flock: a process never conflicts with itself, and the kernel drops them when
the process dies, so a killed command leaves no stale lock behind.
"""

from __future__ import annotations

from typing import IO


def lock(handle: IO, exclusive: bool) -> bool:
    """Lock the open file `handle`: exclusively without waiting (OSError when another process
    holds it), or shared, waiting for an exclusive holder. False where there are no POSIX locks
    (Windows): the locks guard against mistakes and are not needed to work."""
    try:
        import fcntl
    except ImportError:
        return False
    fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB if exclusive else fcntl.LOCK_SH)
    return True
