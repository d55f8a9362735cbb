"""One run at a time in a project: a lock file that the operating system releases when the
process that holds it ends (``flock``), however it ends — so a killed run never leaves a
stale lock behind, and a second run started while one is going is refused at once
instead of reading the first run's tables half-way through."""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from histocluster.errors import UserInputError

#: The lock file, in the project's ``data/`` folder.
LOCK_NAME = ".kedro-run.lock"


class RunLockedError(UserInputError):
    """Another run holds the project's lock."""


@dataclass
class RunLock:
    """A held lock; :meth:`release` (or the end of the process) lets the next run in."""

    path: Path
    handle: IO[str] | None

    def release(self) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


def acquire(path: str | Path, holder: dict[str, object]) -> RunLock:
    """Takes the lock at ``path`` without waiting and writes ``holder`` (what this run is)
    into it; raises :class:`RunLockedError` naming the run that holds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        text = handle.read()
        handle.close()
        raise RunLockedError(_refusal(path, text)) from None
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), **holder}) + "\n")
    handle.flush()
    return RunLock(path, handle)


def _refusal(path: Path, text: str) -> str:
    try:
        holder = json.loads(text)
        who = (
            f"run {holder.get('run', '?')} (process {holder.get('pid', '?')}, "
            f"pipelines: {holder.get('pipelines', '?')})"
        )
    except ValueError:
        who = "a run"
    return (
        f"Another kedro run is going on in this project: {who}. Two runs at once would read "
        f"and write the same tables and mix their results, so this one was not started. "
        f"Wait until it ends (or stop it), then run again. (Lock: {path}; it is released "
        "when that process ends.)"
    )
