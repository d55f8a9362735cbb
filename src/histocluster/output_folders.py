"""Where a run writes, checked before it starts, and what a failed write means to a person.

* :func:`unwritable_folders` tries each output folder (or the nearest part of it that
  exists) with a small probe file, so a read-only, full or mistyped ``data/`` stops a run
  before any work instead of after an hour of it.
* :func:`disk_error` finds the operating-system error behind a failed save (Kedro wraps it
  in a ``DatasetError``) when it is one a person fixes outside the project: a full disk,
  a read-only file system, a permission.

Plain functions over paths and exceptions; :mod:`histocluster.hooks` wires them to Kedro.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from histocluster.errors import UserInputError

#: errno values a person fixes on the machine, not in the project.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG})

#: Bytes written (and synced) by the probe: enough to need a free block on the disk.
PROBE_BYTES = 4096


class OutputFolderError(UserInputError):
    """An output folder cannot be written; the message names each folder and why."""


def shown(path: str | Path) -> str:
    """``path`` relative to the working directory (the project root) when inside it."""
    absolute = Path(os.path.abspath(path))  # not resolved: a link is shown as the link
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and not path.is_symlink() and path != path.parent:
        path = path.parent
    return path


def folder_problem(folder: str | Path) -> str | None:
    """Why files cannot be written in ``folder`` (created as needed), or None when they can.

    The folder itself when it exists, otherwise the nearest part of its path that does,
    gets a probe file of :data:`PROBE_BYTES` bytes, synced to the disk and removed again.
    """
    folder = Path(folder)
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        return f"{shown(existing)} is a file, not a folder" if existing.exists() else "no such place"
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".histocluster-write-check-") as probe:
            probe.write(b"\0" * PROBE_BYTES)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        where = "" if existing == folder else f" (creating it inside {shown(existing)})"
        return f"cannot write there{where}: {exc.strerror or exc}"
    return None


def unwritable_folders(folders: Mapping[str, Iterable[str]]) -> list[str]:
    """One line per folder that cannot be written, naming the datasets that write there.

    Args:
        folders: folder → names of the datasets the run saves in it.
    """
    problems = []
    for folder, names in sorted(folders.items()):
        problem = folder_problem(folder)
        if problem:
            problems.append(f"  {shown(folder)}: {problem} (for {', '.join(sorted(names))})")
    return problems


def disk_error(error: BaseException) -> OSError | None:
    """The :class:`OSError` in ``error``'s chain (``__cause__``/``__context__``) whose errno
    is one of :data:`DISK_ERRNOS`, or None."""
    return next((e for e in _chain(error) if isinstance(e, OSError) and e.errno in DISK_ERRNOS), None)


def failed_output(error: BaseException, outputs: Mapping[str, str]) -> str | None:
    """The dataset of ``outputs`` (name → the file or folder it writes) whose path the
    error's messages, or the file name it gives, point at; None when none does."""
    text = "\n".join(str(e) for e in _chain(error))
    cause = disk_error(error)
    filename = str(cause.filename) if cause is not None and cause.filename else None
    named = [
        (name, path)
        for name, path in outputs.items()
        if path and (path in text or (filename and filename.startswith(path)))
    ]
    return max(named, key=lambda item: len(item[1]))[0] if named else None


def describe_disk_error(error: BaseException, outputs: Mapping[str, str]) -> str | None:
    """One line for a person: which output could not be written, where, why and what to
    do; None when ``error`` is not a disk error (:func:`disk_error`).

    Args:
        error: what the run raised.
        outputs: dataset name → the file or folder it writes (see :func:`failed_output`).
    """
    cause = disk_error(error)
    if cause is None:
        return None
    reason = os.strerror(cause.errno) if cause.errno else str(cause)
    name = failed_output(error, outputs)
    if name is not None:
        where = f"{shown(outputs[name])} (dataset '{name}')"
    elif cause.filename:
        where = shown(cause.filename)
    else:
        where = "the run's output folders"
    hint = {
        errno.ENOSPC: "free space on that disk, or point the catalog's data folders at a larger one",
        errno.EDQUOT: "your disk quota is used up: free some, or point the catalog elsewhere",
        errno.EROFS: "that disk is mounted read-only: point the catalog's data folders elsewhere",
        errno.EFBIG: "the file exceeds the size this disk or account allows",
    }.get(cause.errno, "give your account write access there, or point the catalog elsewhere")
    return f"Could not write {where}: {reason}; {hint}. Outputs of the nodes that finished are kept."


def _chain(error: BaseException) -> list[BaseException]:
    out, current = [], error
    while current is not None and current not in out:
        out.append(current)
        current = current.__cause__ or current.__context__
    return out
