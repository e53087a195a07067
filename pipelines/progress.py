"""Progress of long work, reported through callbacks: library code counts, cli.py draws."""

from __future__ import annotations

from collections.abc import Callable

#: (done, total) for one stage of work.
ProgressCallback = Callable[[int, int], None]
#: (stage, done, total), e.g. ("reading train", 120, 2000).
ProgressReporter = Callable[[str, int, int], None]


def stage(reporter: ProgressReporter | None, name: str) -> ProgressCallback | None:
    """A (done, total) callback that reports to `reporter` under the stage `name`."""
    if reporter is None:
        return None
    return lambda done, total: reporter(name, done, total)
