"""Files written all or nothing: each file is written under a temporary name in its own
folder and renamed onto its final name only once it is complete.

A run killed mid-save (or a full disk) then leaves either the previous file or nothing
under the final name, never a truncated Parquet or a PNG that does not decode, which
Kedro would otherwise load as the newest version of a table in every later run. The
temporary names are hidden (``.<stem>.partial-<pid><suffix>``): Kedro's version lookup
(``<path>/*/<name>``) and the project's partitioned datasets do not see them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

#: Marks a file that is still being written.
PARTIAL_MARK = ".partial-"


def partial_path(final: Path | PurePosixPath) -> Path:
    """The hidden temporary name beside ``final`` that a save writes first. It keeps the
    suffix (writers that pick the format from it, such as Pillow, still work) and holds
    the process id, so two processes never write the same temporary file."""
    final = PurePosixPath(final)
    return Path(final.parent / f".{final.stem}{PARTIAL_MARK}{os.getpid()}{final.suffix}")


def is_partial(path: str | Path) -> bool:
    """Whether ``path`` (or a folder above it) is a save still in progress or abandoned."""
    return any(part.startswith(".") and PARTIAL_MARK in part for part in PurePosixPath(path).parts)


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yields the temporary path to write ``final``'s content to; when the block ends
    without an error, renames it onto ``final`` (one atomic step on one file system),
    else removes it. The folder is created if needed."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(final)
    try:
        yield partial
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)
